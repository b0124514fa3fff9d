"""``qrsys-server`` as a user runs it: a real process, signals, exit codes."""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import psutil
import pytest
import sqlalchemy as sa

from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import _admin
from tests.service.conftest import PASSWORD, Account, register, scrape
from tests.service.processes import (
    SERVER,
    free_port,
    free_port_pair,
    server_env,
    spawn,
    stop,
    wait_serving,
)


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


def test_help_describes_the_configuration() -> None:
    result = subprocess.run(
        [*SERVER, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert "QRSYS_DATABASE_URL" in result.stdout
    assert "--migrate" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("QRSYS_JWT_SECRET", "too-short"),
        ("QRSYS_LISTEN_ADDRESS", "127.0.0.1:99999"),
        ("QRSYS_LISTEN_ADDRESS", "127.0.0.1:"),
        ("QRSYS_METRICS_ADDRESS", "9100"),
        ("QRSYS_DATABASE_URL", "mysql://db/qrsys"),
        ("QRSYS_DATA_DIR", "/proc/no-such-directory"),
        ("QRSYS_MAX_MESSAGE_BYTES", "1000"),
        ("QRSYS_MIGRATIONS_DIR", "/proc/no-such-directory"),
    ],
    ids=[
        "short-secret",
        "port-past-65535",
        "no-port",
        "metrics-no-host",
        "not-postgresql",
        "data-dir-unmakeable",
        "tiny-messages",
        "no-migrations",
    ],
)
def test_invalid_configuration_exits_2_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    env = server_env(tmp_path, free_port(), **{variable: value})
    result = subprocess.run(
        SERVER, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2, result.stderr
    assert f"{variable}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_an_out_of_range_workers_flag_is_named(tmp_path: Path) -> None:
    env = server_env(tmp_path, free_port())
    result = subprocess.run(
        [*SERVER, "--workers", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--workers" in result.stderr
    assert "QRSYS_WORKERS" not in result.stderr


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


async def test_embedded_postgres_migrates_serves_and_stops_with_the_server(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    # No --migrate: the embedded database is qrsys's own and kept current.
    process = spawn(processes, server_env(tmp_path, port))
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


async def test_two_workers_share_one_address_and_both_serve(
    tmp_path: Path, empty_database: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    port = free_port()
    metrics_port = free_port_pair()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=empty_database,
        QRSYS_JWT_SECRET=secrets.token_urlsafe(40),
        QRSYS_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
    )
    process = spawn(processes, env, "--migrate", "--workers", "2")
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

    # The kernel spreads connections between the workers: over 24 of them,
    # each worker answers some (all on one has odds of 2 in 16 million).
    for _ in range(24):
        # A subchannel pool of its own: a new TCP connection for each.
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=(("grpc.use_local_subchannel_pool", 1),)
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await auth_pb2_grpc.AuthServiceStub(channel).RefreshToken(
                    auth_pb2.RefreshTokenRequest(refresh_token="not-a-token"),
                    timeout=10,
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    handled = [
        sum(
            value
            for key, value in (
                await asyncio.to_thread(scrape, metrics_port + n)
            ).items()
            if key.startswith("grpc_server_handled_total{")
            and 'grpc_method="RefreshToken"' in key
        )
        for n in range(2)
    ]
    assert sum(handled) == 24
    assert min(handled) >= 1, handled
    assert stop(process) == 0


async def end_session(
    auth: auth_pb2_grpc.AuthServiceStub, account: Account, how: str
) -> None:
    """End ``account``'s session on the in-process server, in one of the
    ways a session ends."""
    meta = account.metadata
    if how == "logout":
        await auth.Logout(auth_pb2.LogoutRequest(), metadata=meta)
    elif how == "logout everywhere":
        await auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=meta)
    elif how == "password changed in another session":
        other = await auth.Login(
            auth_pb2.LoginRequest(email=account.email, password=PASSWORD)
        )
        await auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password=PASSWORD + "-2"
            ),
            metadata=(("authorization", f"Bearer {other.tokens.access_token}"),),
        )
    elif how == "refresh token replayed":
        request = auth_pb2.RefreshTokenRequest(
            refresh_token=account.tokens.refresh_token
        )
        await auth.RefreshToken(request)
        with pytest.raises(grpc.aio.AioRpcError):
            await auth.RefreshToken(request)
    else:
        await auth.DeleteAccount(
            auth_pb2.DeleteAccountRequest(password=PASSWORD), metadata=meta
        )


async def test_a_session_ended_on_one_server_is_refused_at_once_by_another(
    tmp_path: Path,
    database_url: str,
    server_settings: Settings,
    auth: auth_pb2_grpc.AuthServiceStub,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    assert server_settings.jwt_secret is not None
    port = free_port()
    env = server_env(
        tmp_path,
        port,
        QRSYS_DATABASE_URL=database_url,
        QRSYS_JWT_SECRET=server_settings.jwt_secret.get_secret_value(),
    )
    process = spawn(processes, env)
    await wait_serving(port, process)

    ways = (
        "logout",
        "logout everywhere",
        "password changed in another session",
        "refresh token replayed",
        "account deleted",
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        other = auth_pb2_grpc.AuthServiceStub(channel)
        # Several rounds: the other server has just seen each session live
        # (and remembers it), so only the notice of its end can stop it.
        for _ in range(4):
            for how in ways:
                account = await register(auth)
                me = await other.GetCurrentUser(
                    auth_pb2.GetCurrentUserRequest(), metadata=account.metadata
                )
                assert me.user.email == account.email

                await end_session(auth, account, how)
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await other.GetCurrentUser(
                        auth_pb2.GetCurrentUserRequest(), metadata=account.metadata
                    )
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED, how
    assert stop(process) == 0
