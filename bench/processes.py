"""The processes and the database a benchmark run starts, and their ends.

- ``provision_database``: a fresh, migrated database, either on the
  PostgreSQL server that ``QRSYS_BENCH_DATABASE_URL`` names (dropped at the
  end) or on an embedded PostgreSQL in a temporary directory (stopped and
  removed at the end).
- ``ServerProcess``: a qrsys server or the ceiling server as a child process
  in its own session (a Ctrl-C at the terminal reaches only the harness,
  which then stops it), with its output in a log file.
- ``RssSampler``: a thread that samples a process's resident memory every
  half second, tagged with the phase the run is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psutil
import sqlalchemy as sa
from grpc_health.v1 import health_pb2
from sqlalchemy.ext.asyncio import create_async_engine

import qrsys_grpc
from qrsys_grpc import migrate
from qrsys_grpc.embedded import EmbeddedPostgres
from qrsys_grpc.repository.database import async_url

SOURCE_ROOT = Path(__file__).resolve().parent.parent
"""The folder holding ``bench`` (where ``python -m bench.ceiling`` runs)."""
MIGRATIONS = Path(qrsys_grpc.__file__).resolve().parent.parent / "migrations"
DATABASE_URL_VARIABLE = "QRSYS_BENCH_DATABASE_URL"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _admin(url: str, *statements: str) -> None:
    engine = create_async_engine(async_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            for statement in statements:
                await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@dataclass(frozen=True)
class ProvisionedDatabase:
    """A migrated database for one run, and where it came from."""

    url: str
    origin: str
    """``"QRSYS_BENCH_DATABASE_URL"`` or ``"embedded"``."""
    server_version: str


async def server_version(url: str) -> str:
    """PostgreSQL's ``server_version`` at ``url``."""
    engine = create_async_engine(async_url(url))
    try:
        async with engine.connect() as conn:
            return str(await conn.scalar(sa.text("SHOW server_version")))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def provision_database(work_dir: Path) -> Iterator[ProvisionedDatabase]:
    """A fresh migrated database, removed again when the block ends."""
    configured = os.environ.get(DATABASE_URL_VARIABLE)
    if configured:
        name = f"qrsys_bench_{secrets.token_hex(6)}"
        url = sa.make_url(configured).set(database=name)
        database_url = url.render_as_string(hide_password=False)
        asyncio.run(_admin(configured, f'CREATE DATABASE "{name}"'))
        try:
            migrate.upgrade(database_url, MIGRATIONS)
            version = asyncio.run(server_version(database_url))
            yield ProvisionedDatabase(database_url, DATABASE_URL_VARIABLE, version)
        finally:
            asyncio.run(
                _admin(configured, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            )
        return

    embedded = EmbeddedPostgres(work_dir / "embedded")
    try:
        database_url = embedded.start()
        migrate.upgrade(database_url, MIGRATIONS)
        version = asyncio.run(server_version(database_url))
        yield ProvisionedDatabase(database_url, "embedded", version)
    finally:
        with contextlib.suppress(Exception):
            embedded.stop()


class ServerProcess:
    """A server child process answering the gRPC health check on ``port``."""

    def __init__(
        self,
        name: str,
        command: list[str],
        env: Mapping[str, str],
        port: int,
        log_path: Path,
    ) -> None:
        self.name = name
        self.command = command
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self.process is not None
        return self.process.pid

    def start(self) -> ServerProcess:
        """Start the process and wait until its health check says SERVING.

        Raises:
            RuntimeError: the process exited or did not serve in time; the
                message ends with its log.
        """
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter)
                self.command,
                env=self.env,
                cwd=SOURCE_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        with grpc.insecure_channel(self.address) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
                try:
                    answer = check(health_pb2.HealthCheckRequest(), timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"{self.name} did not serve within {START_TIMEOUT_SECONDS:.0f}"
                        f" s:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a while; return the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                return process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def qrsys_server(
    database_url: str, work_dir: Path, extra_env: Mapping[str, str]
) -> ServerProcess:
    """A qrsys server (not started yet) on a free port with one worker."""
    port = free_port()
    env = {
        key: value for key, value in os.environ.items() if not key.startswith("QRSYS_")
    }
    env.update(
        {
            "QRSYS_DATABASE_URL": database_url,
            "QRSYS_LISTEN_ADDRESS": f"127.0.0.1:{port}",
            "QRSYS_DATA_DIR": str(work_dir / "qrsys-data"),
            "QRSYS_MIGRATIONS_DIR": str(MIGRATIONS),
            "QRSYS_JWT_SECRET": secrets.token_urlsafe(48),
            "QRSYS_LOG_LEVEL": "WARNING",
            "QRSYS_LOGIN_FREE_FAILURES_PER_ADDRESS": "1000000",
            "QRSYS_WORKERS": "1",
            "QRSYS_GRACE_PERIOD_SECONDS": "1",
            **extra_env,
        }
    )
    return ServerProcess(
        "qrsys",
        [sys.executable, "-m", "qrsys_grpc.server"],
        env,
        port,
        work_dir / "qrsys.log",
    )


def ceiling_server(work_dir: Path) -> ServerProcess:
    """The ceiling server (not started yet) on a free port."""
    port = free_port()
    return ServerProcess(
        "ceiling",
        [sys.executable, "-m", "bench.ceiling", "--address", f"127.0.0.1:{port}"],
        os.environ,
        port,
        work_dir / "ceiling.log",
    )


def _tree(pid: int) -> list[psutil.Process]:
    """``pid`` and its descendants (qrsys's render worker processes)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def rss(pid: int) -> tuple[int, int]:
    """Resident bytes of ``pid`` with its descendants, and of ``pid`` alone
    (zeros if it is gone)."""
    total = own = 0
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error):
            resident = int(process.memory_info().rss)
            total += resident
            if process.pid == pid:
                own = resident
    return total, own


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU seconds that the processes ``pids`` and their
    descendants used so far (descendants that exited are not counted)."""
    total = 0.0
    for pid in pids:
        for process in _tree(pid):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
    return total


class RssSampler(threading.Thread):
    """Samples the resident memory of one process tree every ``interval``.

    ``watch`` switches to another process (after a restart); ``phase`` tags
    the samples that follow. ``samples`` holds ``(seconds since start, RSS
    bytes of the process and its descendants, phase)``; ``own`` the RSS of
    the process alone at the same instants.
    """

    def __init__(self, interval: float = 0.5) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.samples: list[tuple[float, int, str]] = []
        self.own: list[int] = []
        self.phase = "start"
        self._pid: int | None = None
        self._origin = time.monotonic()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def watch(self, pid: int | None) -> None:
        """Sample ``pid`` from now on (None: pause)."""
        with self._lock:
            self._pid = pid

    def sample(self) -> int:
        """Take a sample now, record it and return the tree's RSS in bytes."""
        with self._lock:
            pid = self._pid
            if pid is None:
                return 0
            total, own = rss(pid)
            if total:
                elapsed = time.monotonic() - self._origin
                self.samples.append((elapsed, total, self.phase))
                self.own.append(own)
        return total

    def last_own(self) -> int:
        """The RSS of the process alone at the last sample."""
        with self._lock:
            return self.own[-1] if self.own else 0

    def run(self) -> None:
        """Sample until ``stop``."""
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=5)

    def as_json(self) -> list[dict[str, Any]]:
        """The samples, for JSON."""
        return [
            {"t": round(t, 2), "rss_bytes": total, "own_rss_bytes": own, "phase": phase}
            for (t, total, phase), own in zip(self.samples, self.own, strict=True)
        ]
