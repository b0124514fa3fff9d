"""Running ``qrsys-server`` as a child process in tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import MIGRATIONS

SERVER = [sys.executable, "-m", "qrsys_grpc.server"]
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_port_pair() -> int:
    """A port ``p`` on 127.0.0.1 such that nobody listens on ``p`` or ``p + 1``."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports side by side")


def server_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of a server process under test."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("QRSYS_")
    }
    env.update(
        {
            "QRSYS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "QRSYS_DATA_DIR": str(tmp_path / "data"),
            "QRSYS_MIGRATIONS_DIR": str(MIGRATIONS),
            "QRSYS_GRACE_PERIOD_SECONDS": "2",
            **extra,
        }
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


def spawn(
    processes: list[subprocess.Popen[bytes]], env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*SERVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    processes.append(process)
    return process
