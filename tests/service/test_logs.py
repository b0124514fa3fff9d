"""What the logs hold: never a secret, and a bug once, with its traceback,
while its client learns nothing of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa

from qrsys_grpc import logs, migrate
from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.conftest import MIGRATIONS, _admin, create_database, drop_database
from tests.service.conftest import PASSWORD, create_code, register
from tests.service.richstatus import error_info, status_of

NEW_PASSWORD = "another-long-enough-pass"


class Collect(logging.Handler):
    """Keeps every record, with the call's fields, at every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.CallFieldsFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def text(self) -> str:
        """Everything the records say: messages, fields and tracebacks."""
        formatter = logging.Formatter()
        return "\n".join(
            f"{formatter.format(record)} {record.__dict__}" for record in self.records
        )


@pytest.fixture
def collected() -> Iterator[Collect]:
    """Every record logged during the test, DEBUG included."""
    handler = Collect()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


async def test_no_token_password_or_hash_reaches_the_logs_or_the_errors(
    server: RunningServer,
    auth: auth_pb2_grpc.AuthServiceStub,
    qr: qr_code_pb2_grpc.QrCodeServiceStub,
    collected: Collect,
) -> None:
    account = await register(auth)
    secrets = [PASSWORD, NEW_PASSWORD, account.tokens.refresh_token]
    secrets.append(account.tokens.access_token)
    errors: list[grpc.aio.AioRpcError] = []

    async def refused(call: object) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call  # type: ignore[misc]
        errors.append(caught.value)

    await create_code(qr, account)
    await refused(
        auth.Login(auth_pb2.LoginRequest(email=account.email, password="wrong-" * 3))
    )
    refreshed = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=account.tokens.refresh_token)
    )
    secrets += [refreshed.tokens.access_token, refreshed.tokens.refresh_token]
    # A replayed refresh token, a tampered access token, a token of the
    # wrong kind: each refused, none echoed.
    await refused(
        auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=account.tokens.refresh_token)
        )
    )
    tampered = refreshed.tokens.access_token[:-4] + "AAAA"
    secrets.append(tampered)
    for token in (tampered, refreshed.tokens.refresh_token):
        await refused(
            auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", f"Bearer {token}"),),
            )
        )
    login = await auth.Login(
        auth_pb2.LoginRequest(email=account.email, password=PASSWORD)
    )
    secrets += [login.tokens.access_token, login.tokens.refresh_token]
    changed = await auth.ChangePassword(
        auth_pb2.ChangePasswordRequest(
            current_password=PASSWORD, new_password=NEW_PASSWORD
        ),
        metadata=(("authorization", f"Bearer {login.tokens.access_token}"),),
    )
    secrets += [changed.tokens.access_token, changed.tokens.refresh_token]
    async with server.database.read() as conn:
        stored_hash = await conn.scalar(
            sa.text("SELECT password_hash FROM users WHERE id = :id"),
            {"id": account.user_id},
        )
    secrets.append(stored_hash)

    assert len(errors) == 4
    assert {e.code() for e in errors} == {grpc.StatusCode.UNAUTHENTICATED}
    said_to_clients = "\n".join(f"{e.details()} {status_of(e)}" for e in errors)
    logged = collected.text()
    assert "qrsys_grpc.access" in logged  # the records were collected
    for secret in secrets:
        assert secret not in logged
        assert secret not in said_to_clients
    # The signature part alone, too: a token cut short is still a secret.
    for token in (changed.tokens.access_token, tampered):
        assert token.rsplit(".", 1)[-1] not in logged


@pytest.fixture
async def drifting_server(
    tmp_path: Path, postgres_server_url: str, server_settings: Settings
) -> AsyncIterator[tuple[RunningServer, str]]:
    """A server on a database of its own, whose schema the test may break."""
    url = await create_database(postgres_server_url, prefix="qrsys_drift")
    try:
        await asyncio.to_thread(migrate.upgrade, url, MIGRATIONS)
        running = await start_server(
            server_settings.model_copy(update={"data_dir": tmp_path}), url
        )
        try:
            yield running, url
        finally:
            await running.stop(0)
    finally:
        await drop_database(postgres_server_url, url)


async def test_an_unexpected_failure_is_internal_and_logged_once_with_its_traceback(
    drifting_server: tuple[RunningServer, str], collected: Collect
) -> None:
    running, url = drifting_server
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        qr = qr_code_pb2_grpc.QrCodeServiceStub(channel)
        account = await register(auth)
        code = await create_code(qr, account)
        # An operator renames a column under the running server: its
        # statements now fail in a way no client input could cause.
        await _admin(url, "ALTER TABLE qr_codes RENAME COLUMN title TO drifted_title")

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await qr.GetQrCode(
                qr_code_pb2.GetQrCodeRequest(id=code.id), metadata=account.metadata
            )

    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert caught.value.details() == "internal error"
    assert error_info(caught.value).reason == "INTERNAL"
    told = f"{caught.value.details()} {status_of(caught.value)}"
    for internal in ("title", "column", "sqlalchemy", "asyncpg", "Traceback"):
        assert internal not in told
    failures = [
        record
        for record in collected.records
        if record.levelno >= logging.ERROR and record.exc_info is not None
    ]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert "GetQrCode" in failures[0].getMessage()
    assert "drifted_title" not in failures[0].getMessage()
    assert "title" in logging.Formatter().formatException(failures[0].exc_info)
    outcomes = [
        r.getMessage()
        for r in collected.records
        if r.name == "qrsys_grpc.access"
        and r.getMessage().startswith("/qrsys.v1.QrCodeService/GetQrCode ")
    ]
    assert len(outcomes) == 1
    assert " INTERNAL " in outcomes[0]
    assert outcomes[0].endswith(" reason=INTERNAL")
