"""Reading the rich error details qrsys puts in a failed call's trailers."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_KEY = "grpc-status-details-bin"


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The ``google.rpc.Status`` a failed call carried."""
    for key, value in error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no {DETAILS_KEY} in the trailers of {error!r}")


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo detail of a failed call."""
    for detail in status_of(error).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo detail")


def bad_fields(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields a BadRequest detail names."""
    for detail in status_of(error).details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            return [violation.field for violation in bad.field_violations]
    raise AssertionError("no BadRequest detail")
