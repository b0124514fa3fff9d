"""Every line of cases/inputs.jsonl, the inputs real users send, as a test.

Each case names an RPC, a request in protobuf JSON, the state that must
exist first, and what must come back.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import zxingcpp
from google.protobuf import json_format
from google.protobuf.message import Message
from PIL import Image

from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import Account, create_code, register
from tests.service.richstatus import bad_fields

CASES_FILE = Path(__file__).parent / "cases" / "inputs.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text().splitlines() if line]
BY_ID = {case["id"]: case for case in CASES}

SERVICES = {
    "AuthService": (auth_pb2_grpc.AuthServiceStub, auth_pb2.DESCRIPTOR),
    "QrCodeService": (qr_code_pb2_grpc.QrCodeServiceStub, qr_code_pb2.DESCRIPTOR),
}
MESSAGE_MODULES = {"AuthService": auth_pb2, "QrCodeService": qr_code_pb2}
PATH_PART = re.compile(r"(\w+)(?:\[(\d+)\])?")


def _unique_emails(request: dict[str, Any], expect_code: str) -> dict[str, Any]:
    """Give valid addresses a per-test suffix so cases do not collide."""
    email = request.get("email")
    if not isinstance(email, str) or expect_code == "INVALID_ARGUMENT":
        return request
    local, _, domain = email.partition("@")
    return {**request, "email": f"{local}+{uuid.uuid4().hex[:8]}@{domain}"}


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _substitute(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_substitute(item, names) for item in value]
    if isinstance(value, str) and value in names:
        return names[value]
    return value


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        match = PATH_PART.fullmatch(part)
        assert match, path
        data = data[match.group(1)]
        if match.group(2) is not None:
            data = data[int(match.group(2))]
    return data


class CaseRun:
    """One case executed against the test server."""

    def __init__(self, channel: grpc.aio.Channel, case: dict[str, Any]) -> None:
        self.channel = channel
        self.case = case
        service, method = case["rpc"].split(".")
        stub_class, file_descriptor = SERVICES[service]
        self.stub = stub_class(channel)
        self.method = method
        descriptor = file_descriptor.services_by_name[service].methods_by_name[method]
        self.request_class = getattr(
            MESSAGE_MODULES[service], descriptor.input_type.name
        )
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.names: dict[str, str] = {}
        self.account: Account | None = None

    async def prepare(
        self, auth: auth_pb2_grpc.AuthServiceStub, request: dict[str, Any]
    ) -> None:
        setup = self.case["setup"]
        qr = qr_code_pb2_grpc.QrCodeServiceStub(self.channel)
        if setup is None:
            return
        if setup.startswith("authorization: "):
            self.metadata = (("authorization", setup.removeprefix("authorization: ")),)
            return
        if setup == "same email registered before":
            await register(auth, request["email"])
            return
        self.account = await register(auth, request.get("email"))
        self.metadata = self.account.metadata
        if setup in ("code", "code deleted once before"):
            code = await create_code(qr, self.account)
            self.names["$code"] = code.id
            if setup == "code deleted once before":
                await qr.DeleteQrCode(
                    qr_code_pb2.DeleteQrCodeRequest(id=code.id), metadata=self.metadata
                )
        elif setup == "other":
            other = await register(auth)
            self.names["$other_code"] = (await create_code(qr, other)).id
        else:
            assert setup == "user", f"unknown setup {setup!r}"

    async def call(
        self, request: dict[str, Any]
    ) -> tuple[Message | None, grpc.aio.AioRpcError | None]:
        request = _substitute(request, self.names)
        # A FieldMask's JSON form is camelCase and rejects snake_case paths
        # before they are sent; the case is about what the server does with a
        # path it does not know, so the paths go in as given.
        mask = request.pop("updateMask", None)
        message = json_format.ParseDict(request, self.request_class())
        if mask is not None:
            message.update_mask.paths.extend(mask.split(","))
        try:
            response = await getattr(self.stub, self.method)(
                message, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as error:
            return None, error
        return response, None


async def run_case(
    channel: grpc.aio.Channel, auth: auth_pb2_grpc.AuthServiceStub, case_id: str
) -> tuple[Message | None, grpc.aio.AioRpcError | None, CaseRun]:
    case = BY_ID[case_id]
    run = CaseRun(channel, case)
    request = _unique_emails(case["request"], case["expect"]["code"])
    await run.prepare(auth, request)
    response, error = await run.call(request)
    return response, error, run


@pytest.mark.parametrize("case_id", list(BY_ID), ids=list(BY_ID))
async def test_case(
    channel: grpc.aio.Channel,
    auth: auth_pb2_grpc.AuthServiceStub,
    qr: qr_code_pb2_grpc.QrCodeServiceStub,
    case_id: str,
) -> None:
    case = BY_ID[case_id]
    expect = case["expect"]
    response, error, run = await run_case(channel, auth, case_id)

    code = error.code().name if error else "OK"
    assert code == expect["code"], error.details() if error else response
    if "field" in expect:
        assert error is not None
        assert expect["field"] in bad_fields(error)
    if "same_message_as" in expect:
        assert error is not None
        _, other_error, _ = await run_case(channel, auth, expect["same_message_as"])
        assert other_error is not None
        assert other_error.code() == error.code()
        assert other_error.details() == error.details()
    if response is None:
        return

    data = json_format.MessageToDict(response)
    for key, wanted in expect.items():
        if key in ("code", "field", "same_message_as"):
            continue
        if key == "decoded_png_equals":
            code_message = response.qr_code  # type: ignore[attr-defined]
            assert code_message.encoded_text == wanted
            rendered = await qr.RenderQrCode(
                qr_code_pb2.RenderQrCodeRequest(
                    id=code_message.id, format=qr_code_pb2.IMAGE_FORMAT_PNG
                ),
                metadata=run.metadata,
            )
            assert rendered.content_type == "image/png"
            decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(rendered.data)))
            assert [barcode.text for barcode in decoded] == [wanted]
        elif key == "count":
            assert len(_lookup(data, "qrCodes")) == wanted
        else:
            assert _lookup(data, key) == wanted


def test_every_case_is_known() -> None:
    """The setups and expectations the runner understands cover the file."""
    setups = {case["setup"] for case in CASES}
    assert setups <= {
        None,
        "user",
        "code",
        "other",
        "code deleted once before",
        "same email registered before",
        "authorization: Bearer not.a.jwt",
    }
