"""``qrsys-server`` as a user runs it: a real process, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psutil
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import MIGRATIONS, _admin

SERVER = [sys.executable, "-m", "qrsys_grpc.server"]
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a server process under test."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("QRSYS_")
    }
    env.update(
        QRSYS_LISTEN_ADDRESS=f"127.0.0.1:{port}",
        QRSYS_DATA_DIR=str(tmp_path / "data"),
        QRSYS_MIGRATIONS_DIR=str(MIGRATIONS),
        QRSYS_GRACE_PERIOD_SECONDS="2",
        **extra,
    )
    return env


async def wait_serving(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until the server at ``port`` reports SERVING."""
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "server did not start"
            await asyncio.sleep(0.2)


def stop(process: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    """Send ``signum`` and return the exit code."""
    process.send_signal(signum)
    return process.wait(timeout=30)


@pytest.fixture
async def empty_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A new database with no schema, dropped afterwards."""
    name = f"qrsys_proc_{uuid.uuid4().hex[:10]}"
    await _admin(postgres_server_url, f'CREATE DATABASE "{name}"')
    url = sa.make_url(postgres_server_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        await _admin(
            postgres_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Server processes started by a test, killed if the test left them."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def spawn(
    processes: list[subprocess.Popen[bytes]], env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*SERVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    processes.append(process)
    return process


def test_help_describes_the_configuration() -> None:
    result = subprocess.run(
        [*SERVER, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "QRSYS_DATABASE_URL" in result.stdout
    assert "--migrate" in result.stdout


def test_invalid_configuration_exits_2_naming_the_variable(tmp_path: Path) -> None:
    env = server_env(tmp_path, free_port(), QRSYS_JWT_SECRET="too-short")
    result = subprocess.run(
        SERVER, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "jwt_secret" in result.stderr


def test_refuses_a_schema_behind_head(
    tmp_path: Path, empty_database: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = server_env(
        tmp_path,
        free_port(),
        QRSYS_DATABASE_URL=empty_database,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
    )
    process = spawn(processes, env)
    assert process.wait(timeout=60) == 2
    assert b"make migrate" in process.stderr.read()  # type: ignore[union-attr]


async def test_migrates_serves_and_exits_0_on_sigterm(
    tmp_path: Path, empty_database: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=empty_database,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
    )
    process = spawn(processes, env, "--migrate")
    await wait_serving(port, process)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(
                email="proc@example.com", password="a-long-enough-pass"
            )
        )
    assert response.user.email == "proc@example.com"
    assert stop(process) == 0


async def test_embedded_postgres_serves_and_stops_with_the_server(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    process = spawn(processes, server_env(tmp_path, port), "--migrate")
    await wait_serving(port, process)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await auth_pb2_grpc.AuthServiceStub(channel).Register(
            auth_pb2.RegisterRequest(
                email="embedded@example.com", password="a-long-enough-pass"
            )
        )
    assert response.tokens.token_type == "Bearer"
    key_file = tmp_path / "data" / "jwt-signing-key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert stop(process, signal.SIGINT) == 0

    pgdata = str(tmp_path / "data" / "postgres")
    leftovers = [
        proc
        for proc in psutil.process_iter(["name", "cmdline"])
        if proc.info["name"] == "postgres"
        and pgdata in " ".join(proc.info["cmdline"] or ())
    ]
    assert leftovers == []


async def test_two_workers_share_one_address(
    tmp_path: Path, empty_database: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=empty_database,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
        QRSYS_WORKERS="2",
    )
    process = spawn(processes, env, "--migrate")
    await wait_serving(port, process)

    # The spawn start method adds a resource tracker beside the workers.
    children = psutil.Process(process.pid).children()
    listening = {
        child.pid
        for child in children
        for conn in child.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }
    assert len(listening) == 2
    assert stop(process) == 0
