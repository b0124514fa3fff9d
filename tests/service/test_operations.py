"""Operating qrsys: metrics, request ids in logs, deadlines, TLS."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qrsys_grpc import logs
from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import Account, create_code, register, scrape
from tests.service.processes import (
    free_port,
    server_env,
    spawn,
    stop,
    wait_serving,
)


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    found = [
        value
        for key, value in samples.items()
        if key.split("{")[0] == name
        and all(f'{k}="{v}"' in key for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


@pytest.fixture
async def metered(
    tmp_path: Path, database_url: str, server_settings: Settings
) -> AsyncIterator[RunningServer]:
    """A server of its own with metrics on a free port."""
    settings = server_settings.model_copy(
        update={"data_dir": tmp_path, "metrics_address": "127.0.0.1:0"}
    )
    running = await start_server(settings, database_url)
    try:
        yield running
    finally:
        await running.stop(0)


class TestMetrics:
    """/metrics reports calls, codes, latency, the pool and the cache."""

    async def test_calls_are_counted_by_method_and_code(
        self, metered: RunningServer
    ) -> None:
        assert metered.metrics_port is not None
        for _ in range(500):
            if metered.live_sessions.listening:
                break
            await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
            account = await register(auth)
            # The first call looks its session up; the renders find it in memory.
            code = await create_code(qr, account)
            for _ in range(2):
                await qr.RenderQrCode(
                    qr_code_pb2.RenderQrCodeRequest(id=code.id),
                    metadata=account.metadata,
                )
            with pytest.raises(grpc.aio.AioRpcError):
                await qr.GetQrCode(qr_code_pb2.GetQrCodeRequest(id="nope"))

        samples = await asyncio.to_thread(scrape, metered.metrics_port)
        register_labels = {
            "grpc_service": "qrsys.v1.AuthService",
            "grpc_method": "Register",
        }
        assert sample(samples, "grpc_server_started_total", **register_labels) == 1
        assert (
            sample(
                samples, "grpc_server_handled_total", grpc_code="OK", **register_labels
            )
            == 1
        )
        assert (
            sample(
                samples,
                "grpc_server_handled_total",
                grpc_method="GetQrCode",
                grpc_code="UNAUTHENTICATED",
            )
            == 1
        )
        assert (
            sample(
                samples,
                "grpc_server_handling_seconds_count",
                grpc_method="RenderQrCode",
            )
            == 2
        )
        assert sample(samples, "qrsys_rpcs_in_flight", grpc_method="RenderQrCode") == 0
        assert sample(samples, "qrsys_render_cache_hits_total") >= 1
        assert sample(samples, "qrsys_render_cache_misses_total") >= 1
        assert sample(samples, "qrsys_db_pool_size") >= 1
        assert sample(samples, "qrsys_db_pool_checked_out") == 0
        assert sample(samples, "qrsys_session_notices_listening") == 1
        assert sample(samples, "qrsys_session_cache_misses_total") >= 1
        assert sample(samples, "qrsys_session_cache_hits_total") >= 2
        assert sample(samples, "qrsys_session_cache_entries") == 1

    async def test_throttled_logins_are_counted(self, metered: RunningServer) -> None:
        assert metered.metrics_port is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{metered.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            account = await register(auth)
            request = auth_pb2.LoginRequest(
                email=account.email, password="wrong-password"
            )
            codes = []
            for _ in range(6):
                try:
                    await auth.Login(request)
                except grpc.aio.AioRpcError as error:
                    codes.append(error.code())
        assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED
        samples = await asyncio.to_thread(scrape, metered.metrics_port)
        assert sample(samples, "qrsys_logins_throttled_total") == 1


class TestRequestId:
    """A request id follows a call from its metadata into the logs."""

    async def test_every_log_line_of_a_call_carries_its_request_id(
        self, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
    ) -> None:
        records: list[logging.LogRecord] = []

        class Collect(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        handler = Collect()
        handler.addFilter(logs.CallFieldsFilter())
        root = logging.getLogger()
        previous = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        try:
            call = qr.CreateQrCode(
                qr_code_pb2.CreateQrCodeRequest(
                    qr_code=qr_code_pb2.QrCode(
                        title="traced", content=qr_code_pb2.QrContent(text="hi")
                    )
                ),
                metadata=(*account.metadata, ("x-request-id", "trace-me-42")),
            )
            await call
            assert ("x-request-id", "trace-me-42") in tuple(
                await call.initial_metadata()
            )
        finally:
            root.removeHandler(handler)
            root.setLevel(previous)

        ours = [r for r in records if getattr(r, "request_id", "-") == "trace-me-42"]
        messages = [r.getMessage() for r in ours]
        assert any(m.startswith("created QR code") for m in messages), messages
        access = [r for r in ours if r.name == "qrsys_grpc.access"]
        assert len(access) == 1
        assert "/qrsys.v1.QrCodeService/CreateQrCode OK" in access[0].getMessage()
        assert access[0].user_id == account.user_id  # type: ignore[attr-defined]


async def test_json_logs_carry_the_request_id(
    tmp_path: Path, database_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=database_url,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
        QRSYS_LOG_FORMAT="json",
    )
    process = spawn(processes, env)
    await wait_serving(port, process)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(
                email=f"json-{secrets.token_hex(4)}@example.com",
                password="a-long-enough-pass",
            ),
            metadata=(("x-request-id", "json-req-7"),),
        )
    assert stop(process) == 0

    lines = [
        json.loads(line)
        for line in process.stderr.read().decode().splitlines()  # type: ignore[union-attr]
    ]
    ours = [line for line in lines if line.get("request_id") == "json-req-7"]
    assert {line["name"] for line in ours} >= {
        "qrsys_grpc.access",
        "qrsys_grpc.auth.accounts",
    }
    access = next(line for line in ours if line["name"] == "qrsys_grpc.access")
    assert access["method"] == "/qrsys.v1.AuthService/Register"
    assert access["level"] == "INFO"
    assert "a-long-enough-pass" not in json.dumps(lines)


async def test_a_call_past_its_deadline_writes_nothing(
    server: RunningServer, qr: qr_code_pb2_grpc.QrCodeServiceStub, account: Account
) -> None:
    template = qr_code_pb2.QrCode(
        title="Seat {n}",
        content=qr_code_pb2.QrContent(url="https://menu.example/seat/{n}"),
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await qr.BatchCreateQrCodes(
            qr_code_pb2.BatchCreateQrCodesRequest(
                template=template, first_number=1, count=1000
            ),
            metadata=account.metadata,
            timeout=0.05,
        )
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    # Wait for the server to give the call up, then look for its writes.
    labels = {
        "grpc_type": "unary",
        "grpc_service": "qrsys.v1.QrCodeService",
        "grpc_method": "BatchCreateQrCodes",
    }
    for _ in range(600):
        if (
            server.metrics.registry.get_sample_value("qrsys_rpcs_in_flight", labels)
            == 0
        ):
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the server did not give up the call")
    listed = await qr.ListQrCodes(
        qr_code_pb2.ListQrCodesRequest(), metadata=account.metadata
    )
    assert listed.total_size == 0


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    *,
    ca: bool,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A throwaway certificate authority."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = _certificate(name, self.key, None, None, ca=True)

    def issue(self, name: str) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _certificate(name, key, self.cert, self.key, ca=False)
        return _pem(cert), _key_pem(key)


async def _health(port: int, credentials: grpc.ChannelCredentials) -> grpc.StatusCode:
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}",
        credentials,
        options=[("grpc.ssl_target_name_override", "localhost")],
    ) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


class TestTls:
    """TLS and mutual TLS from PEM files, reloaded when they change."""

    async def test_tls_serves_and_reloads_a_replaced_certificate(
        self, tmp_path: Path, database_url: str, server_settings: Settings
    ) -> None:
        first, second = Authority("first CA"), Authority("second CA")
        cert, key = tmp_path / "server.pem", tmp_path / "server.key"
        cert_pem, key_pem = first.issue("localhost")
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        settings = server_settings.model_copy(
            update={"data_dir": tmp_path, "tls_cert_file": cert, "tls_key_file": key}
        )
        running = await start_server(settings, database_url)
        try:
            trust_first = grpc.ssl_channel_credentials(_pem(first.cert))
            trust_second = grpc.ssl_channel_credentials(_pem(second.cert))
            assert await _health(running.port, trust_first) == grpc.StatusCode.OK
            assert await _health(running.port, trust_second) == (
                grpc.StatusCode.UNAVAILABLE
            )

            cert_pem, key_pem = second.issue("localhost")
            key.write_bytes(key_pem)
            cert.write_bytes(cert_pem)
            assert await _health(running.port, trust_second) == grpc.StatusCode.OK
        finally:
            await running.stop(0)

    async def test_mutual_tls_needs_a_client_certificate(
        self, tmp_path: Path, database_url: str, server_settings: Settings
    ) -> None:
        servers, clients = Authority("server CA"), Authority("client CA")
        cert_pem, key_pem = servers.issue("localhost")
        (tmp_path / "server.pem").write_bytes(cert_pem)
        (tmp_path / "server.key").write_bytes(key_pem)
        (tmp_path / "clients.pem").write_bytes(_pem(clients.cert))
        settings = server_settings.model_copy(
            update={
                "data_dir": tmp_path,
                "tls_cert_file": tmp_path / "server.pem",
                "tls_key_file": tmp_path / "server.key",
                "tls_client_ca_file": tmp_path / "clients.pem",
            }
        )
        running = await start_server(settings, database_url)
        try:
            anonymous = grpc.ssl_channel_credentials(_pem(servers.cert))
            assert await _health(running.port, anonymous) == grpc.StatusCode.UNAVAILABLE

            client_cert, client_key = clients.issue("a client")
            known = grpc.ssl_channel_credentials(
                _pem(servers.cert),
                private_key=client_key,
                certificate_chain=client_cert,
            )
            assert await _health(running.port, known) == grpc.StatusCode.OK

            stranger_cert, stranger_key = Authority("other CA").issue("stranger")
            stranger = grpc.ssl_channel_credentials(
                _pem(servers.cert),
                private_key=stranger_key,
                certificate_chain=stranger_cert,
            )
            assert await _health(running.port, stranger) == grpc.StatusCode.UNAVAILABLE
        finally:
            await running.stop(0)


async def test_sigterm_lets_calls_in_flight_finish(
    tmp_path: Path, database_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=database_url,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
        QRSYS_GRACE_PERIOD_SECONDS="30",
    )
    process = spawn(processes, env)
    await wait_serving(port, process)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
        account = await register(auth)
        template = qr_code_pb2.QrCode(
            title="Seat {n}",
            content=qr_code_pb2.QrContent(url="https://menu.example/seat/{n}"),
        )
        slow = asyncio.ensure_future(
            qr.BatchCreateQrCodes(
                qr_code_pb2.BatchCreateQrCodesRequest(
                    template=template, first_number=1, count=1000
                ),
                metadata=account.metadata,
            )
        )
        await asyncio.sleep(0.3)
        assert not slow.done()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        # New calls are refused while the one in flight finishes.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as late:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await health_pb2_grpc.HealthStub(late).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        response = await slow
        assert len(response.qr_codes) == 1000

    assert await asyncio.to_thread(process.wait, 30) == 0


async def test_tracing_records_a_span_per_rpc(
    tmp_path: Path, database_url: str, server_settings: Settings
) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    settings = server_settings.model_copy(update={"data_dir": tmp_path})
    running = await start_server(settings, database_url, span_exporter=exporter)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await register(auth_pb2_grpc.AuthServiceStub(channel))
            with pytest.raises(grpc.aio.AioRpcError):
                await qr_code_pb2_grpc.QrCodeServiceStub(channel).GetQrCode(
                    qr_code_pb2.GetQrCodeRequest(id="x")
                )
    finally:
        await running.stop(0)

    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert "/qrsys.v1.AuthService/Register" in spans
    failed = spans["/qrsys.v1.QrCodeService/GetQrCode"]
    assert failed.attributes is not None
    assert (
        failed.attributes["rpc.grpc.status_code"]
        == grpc.StatusCode.UNAUTHENTICATED.value[0]
    )
