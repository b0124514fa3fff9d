"""Throttled sign-ins and the refresh grace window, seen through the server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from qrsys_grpc import migrate
from qrsys_grpc.server import RunningServer, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import MIGRATIONS, create_database, drop_database
from tests.service.conftest import PASSWORD, register, unique_email
from tests.service.richstatus import error_info, status_of

WRONG = "not-the-password"


def retry_delay(error: grpc.aio.AioRpcError) -> float:
    """The RetryInfo delay of a failed call, in seconds."""
    for detail in status_of(error).details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    raise AssertionError("no RetryInfo detail")


async def login_code(
    auth: auth_pb2_grpc.AuthServiceStub, email: str, password: str
) -> grpc.StatusCode:
    try:
        await auth.Login(auth_pb2.LoginRequest(email=email, password=password))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def strict_server(
    tmp_path: Path, postgres_server_url: str
) -> AsyncIterator[RunningServer]:
    """A server with tight limits and a grace window, on a database of its own
    so that its address counters start at zero."""
    database_url = await create_database(postgres_server_url)
    await asyncio.to_thread(migrate.upgrade, database_url, MIGRATIONS)
    settings = Settings(
        listen_address="127.0.0.1:0",
        data_dir=tmp_path,
        jwt_secret=secrets.token_urlsafe(48),
        migrations_dir=MIGRATIONS,
        login_free_failures_per_account=2,
        login_free_failures_per_address=3,
        refresh_reuse_grace_seconds=60,
    )
    running = await start_server(settings, database_url)
    try:
        yield running
    finally:
        await running.stop(0)
        await drop_database(postgres_server_url, database_url)


@pytest.fixture
async def strict_auth(
    strict_server: RunningServer,
) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    """An AuthService client of the strict server, over IPv4 loopback."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{strict_server.port}") as chan:
        yield auth_pb2_grpc.AuthServiceStub(chan)


async def _blocked_delay(auth: auth_pb2_grpc.AuthServiceStub, email: str) -> float:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await auth.Login(auth_pb2.LoginRequest(email=email, password=WRONG))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return retry_delay(caught.value)


class TestAccountThrottle:
    """Failed logins for one account slow down further attempts."""

    async def test_failures_past_the_allowance_are_refused_with_a_delay(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(auth)
        codes = [await login_code(auth, account.email, WRONG) for _ in range(5)]
        assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5
        # The fifth failure blocks the account, even for the right password.

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await auth.Login(
                auth_pb2.LoginRequest(email=account.email, password=PASSWORD)
            )
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(caught.value).reason == "TOO_MANY_ATTEMPTS"
        assert 0 < retry_delay(caught.value) <= 1.0

    async def test_the_delay_grows_with_each_failure(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        email = unique_email("grow")
        for _ in range(5):
            assert await login_code(auth, email, WRONG) == (
                grpc.StatusCode.UNAUTHENTICATED
            )
        first = await _blocked_delay(auth, email)
        await asyncio.sleep(first + 0.05)
        assert await login_code(auth, email, WRONG) == grpc.StatusCode.UNAUTHENTICATED
        second = await _blocked_delay(auth, email)
        # A blocked attempt is refused without counting as another failure.
        assert second == pytest.approx(await _blocked_delay(auth, email), abs=0.2)
        assert 1.0 < second <= 2.0

    async def test_the_email_is_throttled_whatever_its_case(
        self, auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(auth)
        for _ in range(5):
            await login_code(auth, account.email.upper(), WRONG)
        assert await login_code(auth, account.email, PASSWORD) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED
        )

    async def test_a_success_resets_the_count(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        # Two failures would block this account; a success in between
        # starts the count again.
        account = await register(strict_auth)
        outcomes = [
            await login_code(strict_auth, account.email, password)
            for password in (WRONG, PASSWORD, WRONG, PASSWORD)
        ]
        assert outcomes == [
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.OK,
            grpc.StatusCode.UNAUTHENTICATED,
            grpc.StatusCode.OK,
        ]


async def test_one_address_failing_on_many_accounts_is_throttled(
    strict_auth: auth_pb2_grpc.AuthServiceStub,
) -> None:
    # Each email fails once, within its own allowance; the address adds up.
    codes = [
        await login_code(strict_auth, unique_email("spray"), WRONG) for _ in range(4)
    ]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 3 + [
        grpc.StatusCode.RESOURCE_EXHAUSTED
    ]


async def whoami(auth: auth_pb2_grpc.AuthServiceStub, token: str) -> grpc.StatusCode:
    try:
        await auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


class TestRefreshGrace:
    """A client that lost RefreshToken's answer may retry, once, briefly."""

    async def test_a_retry_within_the_grace_window_gets_fresh_tokens(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(strict_auth)
        first = account.tokens.refresh_token
        lost = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first)
        )
        retried = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first)
        )
        assert retried.tokens.refresh_token not in (first, lost.tokens.refresh_token)
        assert await whoami(strict_auth, retried.tokens.access_token) == (
            grpc.StatusCode.OK
        )
        newest = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=retried.tokens.refresh_token)
        )
        assert await whoami(strict_auth, newest.tokens.access_token) == (
            grpc.StatusCode.OK
        )

    async def test_the_grace_allows_one_retry_only(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(strict_auth)
        first = account.tokens.refresh_token
        for _ in range(2):
            await strict_auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=first)
            )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await strict_auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=first)
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await whoami(strict_auth, account.tokens.access_token) == (
            grpc.StatusCode.UNAUTHENTICATED
        )

    async def test_the_lost_answer_showing_up_later_ends_the_session(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        # Whoever presents the answer the client said it lost is not the
        # client: the session ends.
        account = await register(strict_auth)
        first = account.tokens.refresh_token
        lost = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first)
        )
        retried = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=first)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await strict_auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=lost.tokens.refresh_token)
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await whoami(strict_auth, retried.tokens.access_token) == (
            grpc.StatusCode.UNAUTHENTICATED
        )

    async def test_concurrent_retries_get_at_most_one_grace(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(strict_auth)
        request = auth_pb2.RefreshTokenRequest(
            refresh_token=account.tokens.refresh_token
        )
        outcomes = await asyncio.gather(
            *(strict_auth.RefreshToken(request) for _ in range(6)),
            return_exceptions=True,
        )
        succeeded = [o for o in outcomes if not isinstance(o, BaseException)]
        assert 1 <= len(succeeded) <= 2
        assert all(
            isinstance(o, grpc.aio.AioRpcError)
            and o.code() == grpc.StatusCode.UNAUTHENTICATED
            for o in outcomes
            if isinstance(o, BaseException)
        )

    async def test_a_token_two_rotations_old_ends_the_session(
        self, strict_auth: auth_pb2_grpc.AuthServiceStub
    ) -> None:
        account = await register(strict_auth)
        oldest = account.tokens.refresh_token
        middle = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=oldest)
        )
        newest = await strict_auth.RefreshToken(
            auth_pb2.RefreshTokenRequest(refresh_token=middle.tokens.refresh_token)
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await strict_auth.RefreshToken(
                auth_pb2.RefreshTokenRequest(refresh_token=oldest)
            )

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await strict_auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", f"Bearer {newest.tokens.access_token}"),),
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error_info(caught.value).reason == "SESSION_REVOKED"


async def test_a_weaker_password_hash_is_upgraded_at_login(
    auth: auth_pb2_grpc.AuthServiceStub, database_url: str
) -> None:
    import sqlalchemy as sa
    from argon2 import PasswordHasher
    from sqlalchemy.ext.asyncio import create_async_engine

    from qrsys_grpc.auth import passwords
    from qrsys_grpc.repository.database import async_url

    account = await register(auth)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text("UPDATE users SET password_hash = :h WHERE email = :e"),
                {"h": weak, "e": account.email},
            )
        await auth.Login(auth_pb2.LoginRequest(email=account.email, password=PASSWORD))
        async with engine.connect() as conn:
            stored = await conn.scalar(
                sa.text("SELECT password_hash FROM users WHERE email = :e"),
                {"e": account.email},
            )
    finally:
        await engine.dispose()
    assert stored != weak
    assert not passwords.needs_rehash(stored)
    assert passwords.verify_password(stored, PASSWORD)
