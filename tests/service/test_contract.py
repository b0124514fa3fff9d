"""The qrsys.v1 descriptors against the server: every RPC implemented, every
RPC deliberately public or authenticated, reflection and health on."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from qrsys_grpc.auth.handlers import AuthServicer
from qrsys_grpc.interceptors import AUTHENTICATED_METHODS, PUBLIC_METHODS
from qrsys_grpc.qr.handlers import QrCodeServicer
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc

SERVICES = [
    (
        auth_pb2.DESCRIPTOR.services_by_name["AuthService"],
        AuthServicer,
        auth_pb2_grpc.AuthServiceServicer,
    ),
    (
        qr_code_pb2.DESCRIPTOR.services_by_name["QrCodeService"],
        QrCodeServicer,
        qr_code_pb2_grpc.QrCodeServiceServicer,
    ),
]
METHODS = [
    (service, method, servicer, base)
    for service, servicer, base in SERVICES
    for method in service.methods
]
METHOD_IDS = [f"{service.name}.{method.name}" for service, method, _, _ in METHODS]


@pytest.mark.parametrize(
    ("service", "method", "servicer", "base"), METHODS, ids=METHOD_IDS
)
def test_rpc_is_implemented_and_classified(service, method, servicer, base) -> None:
    path = f"/{service.full_name}/{method.name}"
    assert getattr(servicer, method.name) is not getattr(base, method.name), (
        f"{path} is not implemented"
    )
    assert (path in PUBLIC_METHODS) != (path in AUTHENTICATED_METHODS), (
        f"{path} must be either public or authenticated, on purpose"
    )


def test_classification_names_only_real_rpcs() -> None:
    real = {f"/{service.full_name}/{method.name}" for service, method, _, _ in METHODS}
    assert real == PUBLIC_METHODS | AUTHENTICATED_METHODS


def test_public_rpcs_are_the_contracts() -> None:
    assert {path.rsplit("/", 1)[1] for path in PUBLIC_METHODS} == {
        "Register",
        "Login",
        "RefreshToken",
    }


@pytest.mark.parametrize(
    ("service", "method", "servicer", "base"),
    [m for m in METHODS if f"/{m[0].full_name}/{m[1].name}" in AUTHENTICATED_METHODS],
    ids=[
        i
        for i, m in zip(METHOD_IDS, METHODS, strict=True)
        if f"/{m[0].full_name}/{m[1].name}" in AUTHENTICATED_METHODS
    ],
)
async def test_authenticated_rpc_refuses_a_call_without_token(
    channel: grpc.aio.Channel, service, method, servicer, base
) -> None:
    path = f"/{service.full_name}/{method.name}"
    if method.server_streaming:
        call = channel.unary_stream(path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call(b""):
                pass
    else:
        call = channel.unary_unary(path)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"")
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {
        "qrsys.v1.AuthService",
        "qrsys.v1.QrCodeService",
        "grpc.health.v1.Health",
    } <= names


async def test_reflection_describes_a_method(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="qrsys.v1.QrCodeService"
    )
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in responses[0].file_descriptor_response.file_descriptor_proto
    ]
    qr_file = next(f for f in files if f.name == "qrsys/v1/qr_code.proto")
    methods = {m.name for m in qr_file.service[0].method}
    assert "RenderQrCode" in methods


async def test_health_reports_serving(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", "qrsys.v1.AuthService", "qrsys.v1.QrCodeService"):
        response = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
