"""The one table from domain errors to gRPC status codes and rich details.

Every non-OK answer carries a ``google.rpc.Status`` with an ``ErrorInfo``
(domain ``qrsys``, a stable reason), plus ``BadRequest``, ``RetryInfo`` or
``PreconditionFailure`` where they apply.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qrsys_grpc import errors

DOMAIN = "qrsys"

STATUS_CODES: dict[type[errors.QrsysError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.EtagMismatch: grpc.StatusCode.ABORTED,
    errors.TooManyAttempts: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.QrsysError: grpc.StatusCode.INTERNAL,
}


def status_code(error: errors.QrsysError) -> grpc.StatusCode:
    """The gRPC code of a domain error: the row of its nearest class."""
    for cls in type(error).__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _details(error: errors.QrsysError) -> list[any_pb2.Any]:
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN))]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=v.field, description=v.description
                        )
                        for v in error.violations
                    ]
                )
            )
        )
    elif isinstance(error, errors.TooManyAttempts):
        seconds = max(0.0, error.retry_after_seconds)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(
            seconds=whole, nanos=int((seconds - whole) * 1_000_000_000)
        )
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    elif isinstance(error, errors.EtagMismatch):
        details.append(
            _packed(
                error_details_pb2.PreconditionFailure(
                    violations=[
                        error_details_pb2.PreconditionFailure.Violation(
                            type="ETAG", subject="etag", description=error.message
                        )
                    ]
                )
            )
        )
    return details


def to_status(error: errors.QrsysError) -> grpc.Status:
    """The full gRPC status, with details in the trailing metadata."""
    code = status_code(error)
    return rpc_status.to_status(
        status_pb2.Status(
            code=code.value[0], message=error.message, details=_details(error)
        )
    )


def internal_status() -> grpc.Status:
    """The status for an unexpected failure: nothing of its cause."""
    return to_status(errors.QrsysError("internal error", reason="INTERNAL"))
