"""``buf curl`` against the server through server reflection, as the README's
first session does: no .proto files at hand.

``buf curl`` lists services and methods but has no "describe" of its own, so
a method's schema is fetched the way any reflection client does it: by
calling the reflection service itself with ``buf curl``, then pruning the
returned descriptors to the one method with ``buf build --type``.

The server runs in this test's event loop, so buf runs as an asyncio
subprocess, never as a blocking one.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
import zxingcpp
from google.protobuf import descriptor_pb2
from google.rpc import error_details_pb2
from PIL import Image

from qrsys_grpc.server import RunningServer
from qrsys_grpc.v1 import qr_code_pb2
from tests.service.conftest import PASSWORD, Account

BUF = Path(sys.executable).parent / "buf"
BUF_TIMEOUT = 60.0
GRPC = ("--protocol", "grpc", "--http2-prior-knowledge")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RENDER = "qrsys.v1.QrCodeService.RenderQrCode"
# Newest first, as buf curl itself tries them.
REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


async def buf(*args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    """Run buf without blocking the event loop the server runs in."""
    if not BUF.exists():
        pytest.fail(
            f"buf is not installed next to {sys.executable}: `make install` "
            "installs it (the buf-bin package of the dev extra)",
            pytrace=False,
        )
    process = await asyncio.create_subprocess_exec(
        str(BUF),
        *args,
        stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(stdin), BUF_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"buf {' '.join(args)} did not finish in {BUF_TIMEOUT:.0f}s")
    assert process.returncode is not None
    return process.returncode, stdout, stderr.decode()


async def curl(
    url: str, *, data: dict[str, Any] | None = None, token: str | None = None
) -> tuple[int, bytes, str]:
    """``buf curl`` over gRPC, with a JSON request and a bearer token."""
    args = [*GRPC]
    if token is not None:
        args += ["-H", f"authorization: Bearer {token}"]
    if data is not None:
        args += ["--data", json.dumps(data)]
    return await buf("curl", *args, url)


async def call(
    url: str, *, data: dict[str, Any] | None = None, token: str | None = None
) -> dict[str, Any]:
    """A ``buf curl`` call that must succeed; its JSON answer."""
    code, stdout, stderr = await curl(url, data=data, token=token)
    assert code == 0, f"buf curl {url} exited {code}: {stderr}"
    answer: dict[str, Any] = json.loads(stdout)
    return answer


def unpadded_b64decode(text: str) -> bytes:
    """Base64 as buf prints it: standard or URL-safe, padding optional."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


@pytest.fixture
def base_url(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.port}"


async def listing(flag: str, base_url: str) -> list[str]:
    code, stdout, stderr = await buf("curl", *GRPC, flag, base_url)
    assert code == 0, f"buf curl {flag} exited {code}: {stderr}"
    return stdout.decode().split()


async def test_list_services(base_url: str) -> None:
    services = await listing("--list-services", base_url)
    assert {
        "qrsys.v1.AuthService",
        "qrsys.v1.QrCodeService",
        "grpc.health.v1.Health",
    } <= set(services)
    assert any(name.startswith("grpc.reflection.") for name in services)


async def test_list_methods(base_url: str) -> None:
    methods = set(await listing("--list-methods", base_url))
    expected = {
        f"{service.full_name}/{method.name}"
        for service in qr_code_pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert "qrsys.v1.QrCodeService/RenderQrCode" in methods
    assert expected <= methods
    assert {"qrsys.v1.AuthService/Register", "grpc.health.v1.Health/Check"} <= methods


async def test_describe_a_method_through_reflection(base_url: str) -> None:
    services = await listing("--list-services", base_url)
    reflection = next(name for name in REFLECTION_SERVICES if name in services)
    answer = await call(
        f"{base_url}/{reflection}/ServerReflectionInfo",
        data={"fileContainingSymbol": "qrsys.v1.QrCodeService"},
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(base64.b64decode(raw))
        for raw in answer["fileDescriptorResponse"]["fileDescriptorProto"]
    ]
    assert "qrsys/v1/qr_code.proto" in {file.name for file in files}

    # Prune the reflected descriptors to the one method and what it uses.
    descriptors = descriptor_pb2.FileDescriptorSet(file=files).SerializeToString()
    code, stdout, stderr = await buf(
        "build",
        "-#format=binpb",
        "--type",
        RENDER,
        "--output",
        "-#format=json",
        stdin=descriptors,
    )
    assert code == 0, f"buf build exited {code}: {stderr}"
    (described,) = json.loads(stdout)["file"]
    assert described["name"] == "qrsys/v1/qr_code.proto"
    (service,) = described["service"]
    assert service["name"] == "QrCodeService"
    assert service["method"] == [
        {
            "name": "RenderQrCode",
            "inputType": ".qrsys.v1.RenderQrCodeRequest",
            "outputType": ".qrsys.v1.RenderQrCodeResponse",
        }
    ]
    messages = {
        message["name"]: [field["name"] for field in message["field"]]
        for message in described["messageType"]
    }
    compiled = qr_code_pb2.DESCRIPTOR.message_types_by_name
    assert messages == {
        name: [field.name for field in compiled[name].fields]
        for name in ("RenderQrCodeRequest", "RenderQrCodeResponse")
    }
    (image_format,) = described["enumType"]
    assert image_format["name"] == "ImageFormat"
    assert "IMAGE_FORMAT_PNG" in {value["name"] for value in image_format["value"]}


async def test_register_create_and_render_a_png(base_url: str) -> None:
    email = f"buf-curl-{uuid.uuid4().hex[:10]}@example.com"
    registered = await call(
        f"{base_url}/qrsys.v1.AuthService/Register",
        data={"email": email, "password": PASSWORD, "displayName": "buf curl"},
    )
    assert registered["user"]["email"] == email
    token = registered["tokens"]["accessToken"]
    assert registered["tokens"]["tokenType"] == "Bearer"

    url = f"https://menu.example/r/buf?table={uuid.uuid4().hex[:6]}"
    created = await call(
        f"{base_url}/qrsys.v1.QrCodeService/CreateQrCode",
        data={
            "qrCode": {
                "title": "Table 7",
                "content": {"url": url},
                "style": {"darkColor": "#8b0000"},
            }
        },
        token=token,
    )
    stored = created["qrCode"]
    assert stored["content"] == {"url": url}
    assert stored["encodedText"] == url

    rendered = await call(
        f"{base_url}/qrsys.v1.QrCodeService/RenderQrCode",
        data={"id": stored["id"], "format": "IMAGE_FORMAT_PNG", "scale": 8},
        token=token,
    )
    assert rendered["contentType"] == "image/png"
    png = base64.b64decode(rendered["data"])
    assert png.startswith(PNG_MAGIC)
    image = Image.open(io.BytesIO(png))
    assert [barcode.text for barcode in zxingcpp.read_barcodes(image)] == [url]


async def test_render_without_a_token_is_unauthenticated(base_url: str) -> None:
    code, stdout, stderr = await curl(
        f"{base_url}/qrsys.v1.QrCodeService/RenderQrCode",
        data={"id": str(uuid.uuid4())},
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED.value[0] << 3, stderr
    assert stdout == b""
    assert json.loads(stderr)["code"] == "unauthenticated"


async def test_bad_colour_is_invalid_argument(base_url: str, account: Account) -> None:
    code, stdout, stderr = await curl(
        f"{base_url}/qrsys.v1.QrCodeService/CreateQrCode",
        data={
            "qrCode": {
                "title": "Table 8",
                "content": {"url": "https://menu.example/r/1?table=8"},
                "style": {"darkColor": "chartreuse-ish"},
            }
        },
        token=account.tokens.access_token,
    )
    # buf curl exits with the gRPC status code shifted three bits left, and
    # prints the error as Connect JSON on stderr.
    assert code == grpc.StatusCode.INVALID_ARGUMENT.value[0] << 3, stderr
    assert stdout == b""
    error = json.loads(stderr)
    assert error["code"] == "invalid_argument"
    assert "dark_color" in error["message"]

    details = {detail["type"]: detail["value"] for detail in error["details"]}
    info = error_details_pb2.ErrorInfo.FromString(
        unpadded_b64decode(details["google.rpc.ErrorInfo"])
    )
    assert (info.domain, info.reason) == ("qrsys", "INVALID_ARGUMENT")
    bad_request = error_details_pb2.BadRequest.FromString(
        unpadded_b64decode(details["google.rpc.BadRequest"])
    )
    assert [violation.field for violation in bad_request.field_violations] == [
        "qr_code.style.dark_color"
    ]
