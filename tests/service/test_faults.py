"""PostgreSQL going away under load: quick UNAVAILABLE, health follows, no
acknowledged write lost, service back without a restart of qrsys."""

from __future__ import annotations

import asyncio
import collections
import tempfile
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qrsys_grpc import migrate
from qrsys_grpc.embedded import EmbeddedPostgres
from qrsys_grpc.server import start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.conftest import MIGRATIONS
from tests.service.conftest import create_code, register
from tests.service.richstatus import error_info

WORKERS = 4
CONNECT_TIMEOUT_SECONDS = 1.0
SETTLE_SECONDS = CONNECT_TIMEOUT_SECONDS + 4.0


async def wait_for_health(
    health: health_pb2_grpc.HealthStub, wanted: int, seconds: float = 30
) -> None:
    for _ in range(int(seconds / 0.1)):
        response = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
        if response.status == wanted:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"health never became {wanted}")


async def test_database_outage_under_load(
    tmp_path: Path, server_settings: Settings
) -> None:
    directory = tempfile.TemporaryDirectory(prefix="qrsys-fault-pg-")
    embedded = EmbeddedPostgres(Path(directory.name))
    url = embedded.start()
    try:
        await asyncio.to_thread(migrate.upgrade, url, MIGRATIONS)
        settings = server_settings.model_copy(
            update={
                "data_dir": tmp_path,
                "health_check_interval_seconds": 0.2,
                "db_connect_timeout_seconds": CONNECT_TIMEOUT_SECONDS,
            }
        )
        running = await start_server(settings, url)
        try:
            await _outage(running.port, embedded)
        finally:
            await running.stop(0)
    finally:
        embedded.stop()
        directory.cleanup()


async def _outage(port: int, embedded: EmbeddedPostgres) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        account = await register(auth)
        outcomes: collections.Counter[str] = collections.Counter()
        acknowledged: list[str] = []
        slowest_refusal = 0.0
        phase = {"name": "before"}
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            nonlocal slowest_refusal
            number = 0
            while not stop.is_set():
                number += 1
                started = time.monotonic()
                try:
                    response = await qr.CreateQrCode(
                        qr_code_pb2.CreateQrCodeRequest(
                            qr_code=qr_code_pb2.QrCode(
                                title=f"w{worker}-{number}",
                                content=qr_code_pb2.QrContent(
                                    text=f"{worker}/{number}"
                                ),
                            )
                        ),
                        metadata=account.metadata,
                        timeout=10,
                    )
                except grpc.aio.AioRpcError as error:
                    outcomes[f"{phase['name']}:{error.code().name}"] += 1
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        took = time.monotonic() - started
                        slowest_refusal = max(slowest_refusal, took)
                    await asyncio.sleep(0.02)
                else:
                    outcomes[f"{phase['name']}:OK"] += 1
                    acknowledged.append(response.qr_code.id)

        workers = [asyncio.create_task(load(i)) for i in range(WORKERS)]
        await asyncio.sleep(1)

        phase["name"] = "outage"
        await asyncio.to_thread(embedded.stop)
        await wait_for_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
        liveness = await health.Check(
            health_pb2.HealthCheckRequest(service="liveness"), timeout=2
        )
        assert liveness.status == health_pb2.HealthCheckResponse.SERVING
        await asyncio.sleep(1)

        await asyncio.to_thread(embedded.start)
        await wait_for_health(health, health_pb2.HealthCheckResponse.SERVING)
        phase["name"] = "after"
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*workers)

        codes = {key.split(":")[1] for key in outcomes}
        assert codes <= {"OK", "UNAVAILABLE"}, outcomes
        assert outcomes["before:OK"] > 0, outcomes
        assert outcomes["outage:UNAVAILABLE"] > 0, outcomes
        assert outcomes["after:OK"] > 0, outcomes
        # Refused quickly, not hung until the client's own 10 s deadline: at
        # most the connect timeout plus a margin for the loaded machine.
        assert slowest_refusal < SETTLE_SECONDS, slowest_refusal

        for code_id in acknowledged:
            await qr.GetQrCode(
                qr_code_pb2.GetQrCodeRequest(id=code_id), metadata=account.metadata
            )
        listed = await qr.ListQrCodes(
            qr_code_pb2.ListQrCodesRequest(page_size=1), metadata=account.metadata
        )
        assert listed.total_size == len(acknowledged)


async def test_a_full_pool_answers_unavailable_while_health_stays_serving(
    tmp_path: Path, database_url: str, server_settings: Settings
) -> None:
    settings = server_settings.model_copy(
        update={
            "data_dir": tmp_path,
            "db_pool_size": 1,
            "db_connect_timeout_seconds": 0.5,
            "health_check_interval_seconds": 0.1,
        }
    )
    running = await start_server(settings, database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            auth = auth_pb2_grpc.AuthServiceStub(channel)
            qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            account = await register(auth)
            code = await create_code(qr, account)
            request = qr_code_pb2.GetQrCodeRequest(id=code.id)

            # The pool's one connection is busy for longer than a call waits.
            async with running.database.engine.connect():
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await qr.GetQrCode(request, metadata=account.metadata, timeout=10)
                await asyncio.sleep(0.5)
                during = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)

            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_info(caught.value).reason == "DATABASE_UNAVAILABLE"
            assert during.status == health_pb2.HealthCheckResponse.SERVING
            got = await qr.GetQrCode(request, metadata=account.metadata, timeout=10)
            assert got.qr_code.id == code.id
    finally:
        await running.stop(0)
