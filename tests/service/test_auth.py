"""AuthService through the real server: accounts, passwords, tokens, sessions.

Every failed call is checked for its exact status code and for the ErrorInfo
(domain ``qrsys``) that qrsys promises on every error; reasons and BadRequest
fields are checked where the contract names them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import statistics
import time
import unicodedata
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from qrsys_grpc.auth.tokens import SigningKey
from qrsys_grpc.repository.database import async_url
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc, qr_code_pb2, qr_code_pb2_grpc
from tests.service.conftest import (
    PASSWORD,
    Account,
    create_code,
    register,
    unique_email,
)
from tests.service.richstatus import bad_fields, error_info, status_of

Code = grpc.StatusCode
AuthStub = auth_pb2_grpc.AuthServiceStub
Metadata = tuple[tuple[str, str], ...]

ACCESS_TTL = timedelta(minutes=15)
REFRESH_TTL = timedelta(days=30)
CLOCK_SLACK = timedelta(seconds=60)
DROP = object()


# Helpers ---------------------------------------------------------------------


def bearer(token: str, scheme: str = "Bearer") -> Metadata:
    """Call metadata carrying ``token`` under ``scheme``."""
    return (("authorization", f"{scheme} {token}"),)


async def rpc_error(
    call: Awaitable[Any], code: grpc.StatusCode
) -> grpc.aio.AioRpcError:
    """Await ``call``, require it to fail with ``code`` and a qrsys ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    error = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    assert error_info(error).domain == "qrsys"
    return error


async def refused(
    call: Awaitable[Any],
    code: grpc.StatusCode,
    *,
    reason: str,
    field: str | None = None,
) -> grpc.aio.AioRpcError:
    """Like ``rpc_error``, also checking the reason and the bad field."""
    error = await rpc_error(call, code)
    assert error_info(error).reason == reason, error.details()
    if field is not None:
        assert bad_fields(error) == [field]
    return error


async def current_user(auth: AuthStub, access_token: str) -> auth_pb2.User:
    """The user an access token stands for, failing the test if refused."""
    response = await auth.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(access_token)
    )
    return response.user


async def access_refused(
    auth: AuthStub, access_token: str, reason: str = "SESSION_REVOKED"
) -> None:
    """An access token must no longer be accepted."""
    await refused(
        auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=bearer(access_token)
        ),
        Code.UNAUTHENTICATED,
        reason=reason,
    )


async def refresh_refused(auth: AuthStub, refresh_token: str) -> None:
    """A refresh token must no longer be accepted."""
    await refused(
        auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=refresh_token)),
        Code.UNAUTHENTICATED,
        reason="TOKEN_INVALID",
    )


async def refresh(auth: AuthStub, refresh_token: str) -> auth_pb2.TokenPair:
    """Exchange a refresh token for a new pair."""
    response = await auth.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=refresh_token)
    )
    return response.tokens


async def login(auth: AuthStub, email: str, password: str = PASSWORD) -> Account:
    """Start a new session of an existing account."""
    response = await auth.Login(auth_pb2.LoginRequest(email=email, password=password))
    return Account(email, response.user.id, response.tokens)


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, without checking it."""
    return jwt.decode(token, options={"verify_signature": False})


def session_of(account: Account) -> str:
    """The session id in an account's access token."""
    return str(unverified_claims(account.tokens.access_token)["sid"])


def as_datetime(stamp: Any) -> datetime:
    """An aware datetime for a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def b64url(data: bytes) -> str:
    """Unpadded base64url, as in JWTs."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Forger:
    """Builds access tokens the way the test server would, or almost."""

    settings: Settings
    secret: bytes
    kid: str

    def claims(self, account: Account, **changes: Any) -> dict[str, Any]:
        """Valid access claims for ``account``'s session, with ``changes``
        applied (``DROP`` removes a claim)."""
        now = datetime.now(UTC).replace(microsecond=0)
        claims: dict[str, Any] = {
            "sub": account.user_id,
            "sid": session_of(account),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + timedelta(minutes=5),
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "typ": "access",
        }
        for name, value in changes.items():
            if value is DROP:
                claims.pop(name)
            else:
                claims[name] = value
        return claims

    def sign(
        self,
        claims: dict[str, Any],
        *,
        secret: bytes | None = None,
        algorithm: str = "HS256",
        kid: Any = None,
    ) -> str:
        """A JWT of ``claims`` signed with ``secret`` (default: the server's),
        naming ``kid`` in its header (default: the server key's; ``DROP``
        leaves it out)."""
        header = {} if kid is DROP else {"kid": self.kid if kid is None else kid}
        return jwt.encode(
            claims, secret or self.secret, algorithm=algorithm, headers=header
        )

    def token(self, account: Account, **changes: Any) -> str:
        """A token for ``account`` signed with the server's key."""
        return self.sign(self.claims(account, **changes))


def expired_token(forge: Forger, account: Account) -> str:
    """A token for ``account``'s live session that expired five minutes ago."""
    issued = (
        datetime.now(UTC).replace(microsecond=0) - ACCESS_TTL - timedelta(minutes=5)
    )
    return forge.token(account, iat=issued, nbf=issued, exp=issued + ACCESS_TTL)


def numeric(claims: dict[str, Any]) -> dict[str, Any]:
    """Claims with datetimes as the NumericDate JSON needs."""
    return {
        name: int(value.timestamp()) if isinstance(value, datetime) else value
        for name, value in claims.items()
    }


async def run_sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    """Run one statement on the test database and return its rows."""
    engine = create_async_engine(async_url(database_url))
    try:
        async with engine.begin() as conn:
            result = await conn.execute(sa.text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def request_ids(metadata: Any) -> list[str]:
    """The x-request-id values of initial metadata."""
    return [value for key, value in metadata or () if key == "x-request-id"]


@pytest.fixture(scope="session")
def forge(server_settings: Settings) -> Forger:
    """Forges tokens with the test server's secret and key id."""
    assert server_settings.jwt_secret is not None
    secret = server_settings.jwt_secret.get_secret_value().encode()
    return Forger(server_settings, secret, SigningKey.hs256(secret).kid)


# Register --------------------------------------------------------------------


class TestRegister:
    """Register validates every field and signs the new account in."""

    async def test_register_returns_user_and_tokens(self, auth: AuthStub) -> None:
        email = unique_email("new")
        before = datetime.now(UTC)
        response = await auth.Register(
            auth_pb2.RegisterRequest(
                email=email, password=PASSWORD, display_name="Ada Lovelace"
            )
        )
        after = datetime.now(UTC)

        user = response.user
        assert str(uuid.UUID(user.id)) == user.id
        assert user.email == email
        assert user.display_name == "Ada Lovelace"
        created = as_datetime(user.create_time)
        assert before - CLOCK_SLACK <= created <= after + CLOCK_SLACK
        assert as_datetime(user.update_time) >= as_datetime(user.create_time)

        tokens = response.tokens
        assert tokens.token_type == "Bearer"
        assert tokens.access_token
        assert tokens.refresh_token
        assert tokens.access_token != tokens.refresh_token
        access_expiry = as_datetime(tokens.access_token_expire_time)
        refresh_expiry = as_datetime(tokens.refresh_token_expire_time)
        assert access_expiry > after
        assert abs(access_expiry - (before + ACCESS_TTL)) <= CLOCK_SLACK
        assert refresh_expiry > access_expiry
        assert abs(refresh_expiry - (before + REFRESH_TTL)) <= CLOCK_SLACK

        assert await current_user(auth, tokens.access_token) == user

    @pytest.mark.parametrize(
        "display_name",
        [
            "McDonald's",
            "O'Brien's \"Café\"",
            "Zoë Ångström — 日本語 🎉",
            "Robert'); DROP TABLE users;--",
            "  spaced  out  ",
            "",
            "🎉" * 100,
            "x" * 100,
        ],
        ids=[
            "apostrophe",
            "quotes",
            "unicode",
            "sql",
            "spaces",
            "empty",
            "100-emoji",
            "100-ascii",
        ],
    )
    async def test_register_keeps_display_name_verbatim(
        self, auth: AuthStub, display_name: str
    ) -> None:
        email = unique_email()
        response = await auth.Register(
            auth_pb2.RegisterRequest(
                email=email, password=PASSWORD, display_name=display_name
            )
        )
        assert response.user.display_name == display_name
        fetched = await current_user(auth, response.tokens.access_token)
        assert fetched.display_name == display_name
        signed_in = await auth.Login(
            auth_pb2.LoginRequest(email=email, password=PASSWORD)
        )
        assert signed_in.user.display_name == display_name

    async def test_register_compares_email_case_insensitively(
        self, auth: AuthStub
    ) -> None:
        local = f"case-{uuid.uuid4().hex[:10]}"
        await register(auth, f"{local}@example.com")
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=f"{local.upper()}@Example.com", password=PASSWORD
                )
            ),
            Code.ALREADY_EXISTS,
            reason="EMAIL_TAKEN",
        )

    async def test_register_compares_email_case_insensitively_upper_first(
        self, auth: AuthStub
    ) -> None:
        local = f"Case-{uuid.uuid4().hex[:10]}"
        await register(auth, f"{local}@EXAMPLE.COM")
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=f"{local.lower()}@example.com", password=PASSWORD
                )
            ),
            Code.ALREADY_EXISTS,
            reason="EMAIL_TAKEN",
        )

    async def test_a_fullwidth_spelling_is_the_same_address(
        self, auth: AuthStub
    ) -> None:
        local = f"wide-{uuid.uuid4().hex[:10]}"
        await register(auth, f"{local}@example.com")
        fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in local)
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=f"{fullwidth}@example.com", password=PASSWORD
                )
            ),
            Code.ALREADY_EXISTS,
            reason="EMAIL_TAKEN",
        )

    async def test_login_compares_email_case_insensitively(
        self, auth: AuthStub
    ) -> None:
        account = await register(auth)
        for variant in (account.email.upper(), account.email.title()):
            signed_in = await login(auth, variant)
            assert signed_in.user_id == account.user_id

    @pytest.mark.parametrize(
        "email",
        [
            "not-an-email",
            "a@b",
            "@example.com",
            "user@",
            "user@@example.com",
            "user name@example.com",
            "user@example..com",
            ".user@example.com",
            "Someone <someone@example.com>",
            "user@localhost",
            "user@example.com\n",
            "z' OR email='victim@example.com' --@example.com",
            "a" * 64 + "@" + ".".join(["b" * 63, "c" * 63, "d" * 63, "com"]),
            "a" * 65 + "@example.com",
        ],
        ids=[
            "no-at",
            "no-dot",
            "no-local",
            "no-domain",
            "two-ats",
            "space",
            "double-dot",
            "leading-dot",
            "display-name",
            "localhost",
            "newline",
            "sql",
            "too-long",
            "local-part-of-65",
        ],
    )
    async def test_register_rejects_invalid_email(
        self, auth: AuthStub, email: str
    ) -> None:
        await refused(
            auth.Register(auth_pb2.RegisterRequest(email=email, password=PASSWORD)),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="email",
        )

    async def test_register_rejects_empty_email(self, auth: AuthStub) -> None:
        await refused(
            auth.Register(auth_pb2.RegisterRequest(email="", password=PASSWORD)),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="email",
        )

    @pytest.mark.parametrize(
        "password",
        ["", "abc", "123456789", "abcdefgh" + "e\u0301"],
        ids=["empty", "3-chars", "9-chars", "10-raw-9-after-nfkc"],
    )
    async def test_register_rejects_short_password(
        self, auth: AuthStub, password: str
    ) -> None:
        assert len(unicodedata.normalize("NFKC", password)) < 10
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(email=unique_email(), password=password)
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )

    @pytest.mark.parametrize(
        "password",
        ["0123456789", "abcdefg\ufb03", "p" * 256, "\ufb03" * 85 + "x"],
        ids=["10-chars", "8-raw-10-after-nfkc", "256-chars", "86-raw-256-after-nfkc"],
    )
    async def test_register_accepts_password_at_the_limits(
        self, auth: AuthStub, password: str
    ) -> None:
        assert len(unicodedata.normalize("NFKC", password)) in (10, 256)
        email = unique_email()
        response = await auth.Register(
            auth_pb2.RegisterRequest(email=email, password=password)
        )
        signed_in = await login(auth, email, password)
        assert signed_in.user_id == response.user.id

    @pytest.mark.parametrize(
        "password",
        ["p" * 257, "\ufb03" * 86, "p" * 5000],
        ids=["257-chars", "86-raw-258-after-nfkc", "5000-chars"],
    )
    async def test_register_rejects_too_long_password(
        self, auth: AuthStub, password: str
    ) -> None:
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(email=unique_email(), password=password)
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )

    async def test_register_rejects_password_with_nul(self, auth: AuthStub) -> None:
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=unique_email(), password="long-enough\x00password"
                )
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )

    @pytest.mark.parametrize(
        "display_name", ["x" * 101, "🎉" * 101], ids=["101-ascii", "101-emoji"]
    )
    async def test_register_rejects_long_display_name(
        self, auth: AuthStub, display_name: str
    ) -> None:
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=unique_email(), password=PASSWORD, display_name=display_name
                )
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="display_name",
        )

    @pytest.mark.parametrize(
        "control",
        ["\x00", "\t", "\n", "\r", "\x1b[2J", "\x7f", "\x85", "\x9b"],
        ids=["nul", "tab", "newline", "return", "escape", "delete", "c1-nel", "c1-csi"],
    )
    async def test_register_rejects_control_characters_in_display_name(
        self, auth: AuthStub, control: str
    ) -> None:
        assert unicodedata.category(control[0]) == "Cc"
        await refused(
            auth.Register(
                auth_pb2.RegisterRequest(
                    email=unique_email(),
                    password=PASSWORD,
                    display_name=f"Mallory{control}Admin",
                )
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="display_name",
        )

    async def test_register_rejects_invalid_request_before_taking_the_email(
        self, auth: AuthStub
    ) -> None:
        email = unique_email()
        await refused(
            auth.Register(auth_pb2.RegisterRequest(email=email, password="short")),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )
        account = await register(auth, email)
        assert account.email == email

    async def test_concurrent_registrations_of_one_email(self, auth: AuthStub) -> None:
        email = unique_email("race")
        request = auth_pb2.RegisterRequest(email=email, password=PASSWORD)
        results = await asyncio.gather(
            auth.Register(request), auth.Register(request), return_exceptions=True
        )
        successes = [r for r in results if isinstance(r, auth_pb2.RegisterResponse)]
        failures = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(successes) == 1, results
        assert len(failures) == 1, results
        assert failures[0].code() == Code.ALREADY_EXISTS, failures[0].details()
        assert error_info(failures[0]).reason == "EMAIL_TAKEN"
        assert error_info(failures[0]).domain == "qrsys"
        signed_in = await login(auth, email)
        assert signed_in.user_id == successes[0].user.id


# NFKC ------------------------------------------------------------------------


class TestPasswordNormalisation:
    """Passwords are compared in their NFKC form."""

    async def test_full_width_password_logs_in_with_ascii_form(
        self, auth: AuthStub
    ) -> None:
        full_width = "ｐａｓｓｗｏｒｄ１２３４"
        ascii_form = "password1234"
        assert unicodedata.normalize("NFKC", full_width) == ascii_form
        email = unique_email("nfkc")
        response = await auth.Register(
            auth_pb2.RegisterRequest(email=email, password=full_width)
        )
        signed_in = await login(auth, email, ascii_form)
        assert signed_in.user_id == response.user.id
        again = await login(auth, email, full_width)
        assert again.user_id == response.user.id

    async def test_ascii_password_logs_in_with_full_width_form(
        self, auth: AuthStub
    ) -> None:
        email = unique_email("nfkc")
        response = await auth.Register(
            auth_pb2.RegisterRequest(email=email, password="password1234")
        )
        signed_in = await login(auth, email, "ｐａｓｓｗｏｒｄ１２３４")
        assert signed_in.user_id == response.user.id

    async def test_composed_and_decomposed_passwords_match(
        self, auth: AuthStub
    ) -> None:
        email = unique_email("nfkc")
        response = await auth.Register(
            auth_pb2.RegisterRequest(email=email, password="caf\u00e9-password")
        )
        signed_in = await login(auth, email, "cafe\u0301-password")
        assert signed_in.user_id == response.user.id


# Login -----------------------------------------------------------------------


class TestLogin:
    """Login starts a new session and never says which credential was wrong."""

    async def test_login_starts_a_new_session(
        self, auth: AuthStub, account: Account
    ) -> None:
        response = await auth.Login(
            auth_pb2.LoginRequest(email=account.email, password=PASSWORD)
        )
        assert response.user.id == account.user_id
        assert response.user.email == account.email
        assert response.user.display_name == "Test"
        assert response.tokens.token_type == "Bearer"
        assert response.tokens.refresh_token != account.tokens.refresh_token
        new_sid = unverified_claims(response.tokens.access_token)["sid"]
        assert new_sid != session_of(account)
        assert as_datetime(response.tokens.access_token_expire_time) > datetime.now(UTC)
        assert (await current_user(auth, response.tokens.access_token)).id == (
            account.user_id
        )
        assert (await current_user(auth, account.tokens.access_token)).id == (
            account.user_id
        )

    async def test_login_failures_are_indistinguishable(
        self, auth: AuthStub, account: Account
    ) -> None:
        wrong_password = await refused(
            auth.Login(
                auth_pb2.LoginRequest(email=account.email, password="not-the-password")
            ),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        unknown_email = await refused(
            auth.Login(
                auth_pb2.LoginRequest(email=unique_email("nobody"), password=PASSWORD)
            ),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        malformed_email = await refused(
            auth.Login(auth_pb2.LoginRequest(email="not-an-email", password=PASSWORD)),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        assert wrong_password.details() == unknown_email.details()
        assert wrong_password.details() == malformed_email.details()
        assert status_of(wrong_password) == status_of(unknown_email)
        assert status_of(wrong_password) == status_of(malformed_email)

    async def test_login_failures_take_about_the_same_time(
        self, auth: AuthStub, account: Account
    ) -> None:
        """An unknown email is checked against a dummy hash, so it costs a
        password hash like a wrong password does: an argon2 hash takes tens
        of milliseconds, an answer without one well under a millisecond of
        server time, so the bounds below hold on any machine."""
        kinds = {
            "wrong password": lambda: (account.email, "not-the-password"),
            "unknown email": lambda: (unique_email("nobody"), PASSWORD),
            "malformed email": lambda: ("not-an-email", PASSWORD),
        }
        took: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(3):  # three wrong passwords stay under the throttle
            for kind, credentials in kinds.items():
                email, password = credentials()
                started = time.perf_counter()
                with pytest.raises(grpc.aio.AioRpcError):
                    await auth.Login(
                        auth_pb2.LoginRequest(email=email, password=password)
                    )
                took[kind].append(time.perf_counter() - started)

        median = {kind: statistics.median(times) for kind, times in took.items()}
        for kind in ("unknown email", "malformed email"):
            ratio = median[kind] / median["wrong password"]
            assert 0.5 < ratio < 2.0, median

    async def test_login_rejects_empty_email(self, auth: AuthStub) -> None:
        await refused(
            auth.Login(auth_pb2.LoginRequest(email="", password=PASSWORD)),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="email",
        )

    async def test_login_rejects_empty_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.Login(auth_pb2.LoginRequest(email=account.email, password="")),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )


# Access tokens ---------------------------------------------------------------


class TestAccessTokens:
    """Only a well-formed, correctly signed access token of a live session is
    accepted."""

    async def test_access_token_identifies_the_user(
        self, auth: AuthStub, account: Account
    ) -> None:
        user = await current_user(auth, account.tokens.access_token)
        assert user.id == account.user_id
        assert user.email == account.email
        assert user.display_name == "Test"

    @pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
    async def test_bearer_scheme_is_case_insensitive(
        self, auth: AuthStub, account: Account, scheme: str
    ) -> None:
        response = await auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=bearer(account.tokens.access_token, scheme),
        )
        assert response.user.id == account.user_id

    async def test_token_signed_with_the_server_key_is_accepted(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        assert (await current_user(auth, forge.token(account))).id == account.user_id

    async def test_missing_authorization_is_unauthenticated(
        self, auth: AuthStub
    ) -> None:
        await refused(
            auth.GetCurrentUser(auth_pb2.GetCurrentUserRequest()),
            Code.UNAUTHENTICATED,
            reason="TOKEN_MISSING",
        )

    @pytest.mark.parametrize(
        "value",
        ["Basic xyz", "Bearer", "Bearer ", "Bearer not.a.jwt", "garbage", "Token x"],
        ids=["basic", "bearer-only", "bearer-space", "garbage-jwt", "word", "token"],
    )
    async def test_malformed_authorization_is_unauthenticated(
        self, auth: AuthStub, value: str
    ) -> None:
        await refused(
            auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=(("authorization", value),)
            ),
            Code.UNAUTHENTICATED,
            reason="TOKEN_INVALID",
        )

    async def test_two_authorization_entries_are_refused_even_if_both_are_good(
        self, auth: AuthStub, account: Account
    ) -> None:
        good = f"Bearer {account.tokens.access_token}"
        await refused(
            auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", good), ("authorization", good)),
            ),
            Code.UNAUTHENTICATED,
            reason="TOKEN_INVALID",
        )

    async def test_access_token_without_scheme_is_unauthenticated(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(),
                metadata=(("authorization", account.tokens.access_token),),
            ),
            Code.UNAUTHENTICATED,
            reason="TOKEN_INVALID",
        )

    async def test_tampered_signature_is_unauthenticated(
        self, auth: AuthStub, account: Account
    ) -> None:
        header, payload, signature = account.tokens.access_token.split(".")
        middle = len(signature) // 2
        flipped = "A" if signature[middle] != "A" else "B"
        signature = signature[:middle] + flipped + signature[middle + 1 :]
        await access_refused(
            auth, f"{header}.{payload}.{signature}", reason="TOKEN_INVALID"
        )

    async def test_tampered_payload_is_unauthenticated(
        self, auth: AuthStub, account: Account, other_account: Account
    ) -> None:
        header, _payload, signature = account.tokens.access_token.split(".")
        claims = unverified_claims(account.tokens.access_token)
        claims["sub"] = other_account.user_id
        claims["sid"] = session_of(other_account)
        forged = b64url(json.dumps(claims).encode())
        await access_refused(
            auth, f"{header}.{forged}.{signature}", reason="TOKEN_INVALID"
        )

    async def test_token_signed_with_another_secret_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        token = forge.sign(forge.claims(account), secret=secrets.token_bytes(48))
        await access_refused(auth, token, reason="TOKEN_INVALID")

    @pytest.mark.parametrize("alg", ["none", "None", "NONE"])
    async def test_alg_none_token_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger, alg: str
    ) -> None:
        header = b64url(
            json.dumps({"alg": alg, "typ": "JWT", "kid": forge.kid}).encode()
        )
        payload = b64url(json.dumps(numeric(forge.claims(account))).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            await access_refused(auth, token, reason="TOKEN_INVALID")

    async def test_alg_none_token_from_pyjwt_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        token = jwt.encode(
            forge.claims(account), None, algorithm="none", headers={"kid": forge.kid}
        )
        await access_refused(auth, token, reason="TOKEN_INVALID")

    @pytest.mark.parametrize("algorithm", ["HS384", "HS512"])
    async def test_token_with_another_algorithm_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger, algorithm: str
    ) -> None:
        token = forge.sign(forge.claims(account), algorithm=algorithm)
        await access_refused(auth, token, reason="TOKEN_INVALID")

    @pytest.mark.parametrize(
        "changes",
        [
            {"aud": "another-service"},
            {"aud": DROP},
            {"iss": "someone-else"},
            {"iss": DROP},
            {"typ": "refresh"},
            {"typ": DROP},
            {"sid": DROP},
            {"sub": DROP},
            {"jti": DROP},
            {"iat": DROP},
            {"exp": DROP},
            {"sub": "not-a-uuid"},
            {"sid": "not-a-uuid"},
        ],
        ids=[
            "wrong-aud",
            "no-aud",
            "wrong-iss",
            "no-iss",
            "typ-refresh",
            "no-typ",
            "no-sid",
            "no-sub",
            "no-jti",
            "no-iat",
            "no-exp",
            "sub-not-uuid",
            "sid-not-uuid",
        ],
    )
    async def test_token_with_wrong_claims_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger, changes: dict[str, Any]
    ) -> None:
        await access_refused(
            auth, forge.token(account, **changes), reason="TOKEN_INVALID"
        )

    async def test_token_not_yet_valid_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        later = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=10)
        token = forge.token(account, nbf=later, exp=later + timedelta(minutes=5))
        await access_refused(auth, token, reason="TOKEN_INVALID")

    async def test_expired_token_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        await access_refused(
            auth, expired_token(forge, account), reason="TOKEN_EXPIRED"
        )

    @pytest.mark.parametrize(
        "kid", ["0123456789abcdef", "", DROP], ids=["unknown", "empty", "absent"]
    )
    async def test_token_with_unknown_kid_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger, kid: Any
    ) -> None:
        token = forge.sign(forge.claims(account), kid=kid)
        await access_refused(auth, token, reason="TOKEN_INVALID")

    async def test_token_mixing_user_and_session_is_unauthenticated(
        self, auth: AuthStub, account: Account, other_account: Account, forge: Forger
    ) -> None:
        token = forge.token(account, sub=other_account.user_id)
        await access_refused(auth, token, reason="SESSION_REVOKED")

    async def test_token_of_unknown_session_is_unauthenticated(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        token = forge.token(account, sid=str(uuid.uuid4()))
        await access_refused(auth, token, reason="SESSION_REVOKED")

    async def test_oversized_token_is_unauthenticated(self, auth: AuthStub) -> None:
        await access_refused(auth, "a" * 5000, reason="TOKEN_INVALID")

    async def test_refresh_token_is_not_an_access_token(
        self, auth: AuthStub, account: Account
    ) -> None:
        await access_refused(auth, account.tokens.refresh_token, reason="TOKEN_INVALID")

    async def test_access_token_is_not_a_refresh_token(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refresh_refused(auth, account.tokens.access_token)
        assert (await current_user(auth, account.tokens.access_token)).id == (
            account.user_id
        )


# RefreshToken ----------------------------------------------------------------


class TestRefreshToken:
    """Refresh tokens rotate on every use; a replayed one ends its session."""

    async def test_refresh_returns_a_working_pair(
        self, auth: AuthStub, account: Account
    ) -> None:
        before = datetime.now(UTC)
        tokens = await refresh(auth, account.tokens.refresh_token)
        assert tokens.token_type == "Bearer"
        assert tokens.refresh_token != account.tokens.refresh_token
        assert tokens.access_token != account.tokens.access_token
        access_expiry = as_datetime(tokens.access_token_expire_time)
        assert access_expiry > before
        assert abs(access_expiry - (before + ACCESS_TTL)) <= CLOCK_SLACK
        assert as_datetime(tokens.refresh_token_expire_time) > access_expiry
        assert unverified_claims(tokens.access_token)["sid"] == session_of(account)
        assert (await current_user(auth, tokens.access_token)).id == account.user_id
        newer = await refresh(auth, tokens.refresh_token)
        assert (await current_user(auth, newer.access_token)).id == account.user_id

    async def test_used_refresh_token_is_refused(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refresh(auth, account.tokens.refresh_token)
        await refresh_refused(auth, account.tokens.refresh_token)

    async def test_replayed_refresh_token_ends_the_session(
        self, auth: AuthStub, account: Account
    ) -> None:
        rotated = await refresh(auth, account.tokens.refresh_token)
        assert (await current_user(auth, rotated.access_token)).id == account.user_id

        await refresh_refused(auth, account.tokens.refresh_token)

        await refresh_refused(auth, rotated.refresh_token)
        await access_refused(auth, rotated.access_token)
        await access_refused(auth, account.tokens.access_token)

    async def test_replayed_refresh_token_spares_other_sessions(
        self, auth: AuthStub, account: Account
    ) -> None:
        second = await login(auth, account.email)
        await refresh(auth, account.tokens.refresh_token)
        await refresh_refused(auth, account.tokens.refresh_token)
        assert (await current_user(auth, second.tokens.access_token)).id == (
            account.user_id
        )
        assert await refresh(auth, second.tokens.refresh_token)

    async def test_replay_of_an_older_refresh_token_ends_the_session(
        self, auth: AuthStub, account: Account
    ) -> None:
        first = await refresh(auth, account.tokens.refresh_token)
        second = await refresh(auth, first.refresh_token)

        await refresh_refused(auth, account.tokens.refresh_token)

        await refresh_refused(auth, second.refresh_token)
        await access_refused(auth, second.access_token)

    async def test_refresh_rejects_empty_token(self, auth: AuthStub) -> None:
        await refused(
            auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token="")),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="refresh_token",
        )

    @pytest.mark.parametrize(
        "token",
        ["garbage", secrets.token_urlsafe(32), "x" * 5000],
        ids=["word", "random", "oversized"],
    )
    async def test_refresh_rejects_unknown_token(
        self, auth: AuthStub, token: str
    ) -> None:
        await refresh_refused(auth, token)

    async def test_expired_session_refuses_its_tokens(
        self, auth: AuthStub, account: Account, database_url: str
    ) -> None:
        await run_sql(
            database_url,
            "UPDATE sessions SET expire_time = now() - interval '1 minute' "
            "WHERE id = :sid",
            sid=uuid.UUID(session_of(account)),
        )
        await refresh_refused(auth, account.tokens.refresh_token)
        await access_refused(auth, account.tokens.access_token)


# Logout and LogoutAll --------------------------------------------------------


class TestLogout:
    """Logout ends one session at once; LogoutAll ends all of them."""

    async def test_logout_ends_only_that_session(
        self, auth: AuthStub, account: Account
    ) -> None:
        other_session = await login(auth, account.email)

        await auth.Logout(auth_pb2.LogoutRequest(), metadata=account.metadata)

        await access_refused(auth, account.tokens.access_token)
        await refresh_refused(auth, account.tokens.refresh_token)
        await refused(
            auth.Logout(auth_pb2.LogoutRequest(), metadata=account.metadata),
            Code.UNAUTHENTICATED,
            reason="SESSION_REVOKED",
        )

        user = await current_user(auth, other_session.tokens.access_token)
        assert user.id == account.user_id
        tokens = await refresh(auth, other_session.tokens.refresh_token)
        assert (await current_user(auth, tokens.access_token)).id == account.user_id

    async def test_logout_after_refresh_ends_the_refreshed_tokens(
        self, auth: AuthStub, account: Account
    ) -> None:
        tokens = await refresh(auth, account.tokens.refresh_token)
        await auth.Logout(
            auth_pb2.LogoutRequest(), metadata=bearer(tokens.access_token)
        )
        await access_refused(auth, tokens.access_token)
        await access_refused(auth, account.tokens.access_token)
        await refresh_refused(auth, tokens.refresh_token)

    async def test_logout_all_revokes_every_live_session(
        self, auth: AuthStub, account: Account, other_account: Account
    ) -> None:
        second = await login(auth, account.email)
        third = await login(auth, account.email)
        ended = await login(auth, account.email)
        await auth.Logout(auth_pb2.LogoutRequest(), metadata=ended.metadata)

        response = await auth.LogoutAll(
            auth_pb2.LogoutAllRequest(), metadata=second.metadata
        )
        assert response.revoked_sessions == 3

        for session in (account, second, third, ended):
            await access_refused(auth, session.tokens.access_token)
            await refresh_refused(auth, session.tokens.refresh_token)
        await refused(
            auth.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=account.metadata),
            Code.UNAUTHENTICATED,
            reason="SESSION_REVOKED",
        )

        user = await current_user(auth, other_account.tokens.access_token)
        assert user.id == other_account.user_id
        fresh = await login(auth, account.email)
        assert (await current_user(auth, fresh.tokens.access_token)).id == (
            account.user_id
        )

    async def test_logout_all_with_one_session_counts_one(
        self, auth: AuthStub, account: Account
    ) -> None:
        response = await auth.LogoutAll(
            auth_pb2.LogoutAllRequest(), metadata=account.metadata
        )
        assert response.revoked_sessions == 1
        await access_refused(auth, account.tokens.access_token)

    async def test_logout_all_does_not_count_expired_sessions(
        self, auth: AuthStub, account: Account, database_url: str
    ) -> None:
        expired = await login(auth, account.email)
        await run_sql(
            database_url,
            "UPDATE sessions SET expire_time = now() - interval '1 minute' "
            "WHERE id = :sid",
            sid=uuid.UUID(session_of(expired)),
        )
        response = await auth.LogoutAll(
            auth_pb2.LogoutAllRequest(), metadata=account.metadata
        )
        assert response.revoked_sessions == 1


# ChangePassword --------------------------------------------------------------


class TestChangePassword:
    """ChangePassword needs the current password, and ends every other
    session."""

    async def test_change_password_rejects_wrong_current_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password="not-the-password",
                    new_password="a-brand-new-password",
                ),
                metadata=account.metadata,
            ),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        assert (await login(auth, account.email)).user_id == account.user_id
        assert (await current_user(auth, account.tokens.access_token)).id == (
            account.user_id
        )

    async def test_change_password_rejects_short_new_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password=PASSWORD, new_password="123456789"
                ),
                metadata=account.metadata,
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="new_password",
        )
        assert (await login(auth, account.email)).user_id == account.user_id

    async def test_change_password_rejects_empty_current_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password="", new_password="a-brand-new-password"
                ),
                metadata=account.metadata,
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="current_password",
        )

    async def test_change_password_needs_an_access_token(self, auth: AuthStub) -> None:
        await refused(
            auth.ChangePassword(
                auth_pb2.ChangePasswordRequest(
                    current_password=PASSWORD, new_password="a-brand-new-password"
                )
            ),
            Code.UNAUTHENTICATED,
            reason="TOKEN_MISSING",
        )

    async def test_change_password_rotates_credentials(
        self, auth: AuthStub, account: Account, other_account: Account
    ) -> None:
        new_password = "a-brand-new-password"
        other_session = await login(auth, account.email)

        before = datetime.now(UTC)
        response = await auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password=new_password
            ),
            metadata=account.metadata,
        )
        tokens = response.tokens
        assert tokens.token_type == "Bearer"
        assert tokens.refresh_token != account.tokens.refresh_token
        assert as_datetime(tokens.access_token_expire_time) > before
        assert unverified_claims(tokens.access_token)["sid"] == session_of(account)
        assert (await current_user(auth, tokens.access_token)).id == account.user_id

        await refused(
            auth.Login(auth_pb2.LoginRequest(email=account.email, password=PASSWORD)),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        assert (await login(auth, account.email, new_password)).user_id == (
            account.user_id
        )

        await access_refused(auth, other_session.tokens.access_token)
        await refresh_refused(auth, other_session.tokens.refresh_token)
        await refresh_refused(auth, account.tokens.refresh_token)

        assert (await current_user(auth, tokens.access_token)).id == account.user_id
        refreshed = await refresh(auth, tokens.refresh_token)
        assert (await current_user(auth, refreshed.access_token)).id == (
            account.user_id
        )
        user = await current_user(auth, other_account.tokens.access_token)
        assert user.id == other_account.user_id

    async def test_change_password_updates_update_time(
        self, auth: AuthStub, account: Account
    ) -> None:
        before = await current_user(auth, account.tokens.access_token)
        await auth.ChangePassword(
            auth_pb2.ChangePasswordRequest(
                current_password=PASSWORD, new_password="a-brand-new-password"
            ),
            metadata=account.metadata,
        )
        after = await current_user(auth, account.tokens.access_token)
        assert after.create_time == before.create_time
        assert as_datetime(after.update_time) > as_datetime(before.update_time)


# DeleteAccount ---------------------------------------------------------------


class TestDeleteAccount:
    """DeleteAccount needs the password and removes everything of the user."""

    async def test_delete_account_rejects_wrong_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.DeleteAccount(
                auth_pb2.DeleteAccountRequest(password="not-the-password"),
                metadata=account.metadata,
            ),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )
        assert (await current_user(auth, account.tokens.access_token)).id == (
            account.user_id
        )

    async def test_delete_account_rejects_empty_password(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.DeleteAccount(
                auth_pb2.DeleteAccountRequest(password=""), metadata=account.metadata
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="password",
        )

    async def test_delete_account_removes_everything(
        self,
        auth: AuthStub,
        qr: qr_code_pb2_grpc.QrCodeServiceStub,
        account: Account,
        other_account: Account,
        database_url: str,
    ) -> None:
        code = await create_code(qr, account)
        kept = await create_code(qr, other_account)
        second = await login(auth, account.email)

        await auth.DeleteAccount(
            auth_pb2.DeleteAccountRequest(password=PASSWORD),
            metadata=account.metadata,
        )

        for session in (account, second):
            await access_refused(auth, session.tokens.access_token)
            await refresh_refused(auth, session.tokens.refresh_token)
        await refused(
            auth.Login(auth_pb2.LoginRequest(email=account.email, password=PASSWORD)),
            Code.UNAUTHENTICATED,
            reason="INVALID_CREDENTIALS",
        )

        user_id = uuid.UUID(account.user_id)
        assert (
            await run_sql(
                database_url, "SELECT id FROM qr_codes WHERE owner_id = :u", u=user_id
            )
            == []
        )
        assert (
            await run_sql(
                database_url,
                "SELECT id FROM qr_codes WHERE id = :c",
                c=uuid.UUID(code.id),
            )
            == []
        )
        assert (
            await run_sql(
                database_url, "SELECT id FROM sessions WHERE user_id = :u", u=user_id
            )
            == []
        )
        assert (
            await run_sql(database_url, "SELECT id FROM users WHERE id = :u", u=user_id)
            == []
        )

        again = await register(auth, account.email)
        assert again.user_id != account.user_id
        listed = await qr.ListQrCodes(
            qr_code_pb2.ListQrCodesRequest(), metadata=again.metadata
        )
        assert list(listed.qr_codes) == []
        assert listed.total_size == 0
        await rpc_error(
            qr.GetQrCode(
                qr_code_pb2.GetQrCodeRequest(id=code.id), metadata=again.metadata
            ),
            Code.NOT_FOUND,
        )

        fetched = await qr.GetQrCode(
            qr_code_pb2.GetQrCodeRequest(id=kept.id), metadata=other_account.metadata
        )
        assert fetched.qr_code.id == kept.id


# IntrospectToken -------------------------------------------------------------


class TestIntrospectToken:
    """IntrospectToken answers about any access token; inactive is not an
    error."""

    async def test_introspect_live_token(
        self, auth: AuthStub, account: Account, other_account: Account
    ) -> None:
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=account.tokens.access_token),
            metadata=other_account.metadata,
        )
        assert response.active is True
        assert response.user_id == account.user_id
        assert response.session_id == session_of(account)
        assert response.expire_time == account.tokens.access_token_expire_time

    async def test_introspect_own_token(self, auth: AuthStub, account: Account) -> None:
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=account.tokens.access_token),
            metadata=account.metadata,
        )
        assert response.active is True
        assert response.user_id == account.user_id
        assert response.session_id == session_of(account)

    @pytest.mark.parametrize(
        "token",
        ["garbage", "not.a.jwt", "x" * 5000],
        ids=["word", "dotted", "oversized"],
    )
    async def test_introspect_garbage_token_is_inactive(
        self, auth: AuthStub, account: Account, token: str
    ) -> None:
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=token), metadata=account.metadata
        )
        assert response == auth_pb2.IntrospectTokenResponse(active=False)

    async def test_introspect_refresh_token_is_inactive(
        self, auth: AuthStub, account: Account
    ) -> None:
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=account.tokens.refresh_token),
            metadata=account.metadata,
        )
        assert response == auth_pb2.IntrospectTokenResponse(active=False)

    async def test_introspect_logged_out_token_is_inactive(
        self, auth: AuthStub, account: Account
    ) -> None:
        ended = await login(auth, account.email)
        await auth.Logout(auth_pb2.LogoutRequest(), metadata=ended.metadata)
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=ended.tokens.access_token),
            metadata=account.metadata,
        )
        assert response == auth_pb2.IntrospectTokenResponse(active=False)

    async def test_introspect_expired_token_is_inactive(
        self, auth: AuthStub, account: Account, forge: Forger
    ) -> None:
        response = await auth.IntrospectToken(
            auth_pb2.IntrospectTokenRequest(token=expired_token(forge, account)),
            metadata=account.metadata,
        )
        assert response == auth_pb2.IntrospectTokenResponse(active=False)

    async def test_introspect_rejects_empty_token(
        self, auth: AuthStub, account: Account
    ) -> None:
        await refused(
            auth.IntrospectToken(
                auth_pb2.IntrospectTokenRequest(token=""), metadata=account.metadata
            ),
            Code.INVALID_ARGUMENT,
            reason="INVALID_ARGUMENT",
            field="token",
        )


# Request ids -----------------------------------------------------------------


class TestRequestId:
    """Every call gets an x-request-id back in its initial metadata."""

    async def test_request_id_is_echoed(self, auth: AuthStub, account: Account) -> None:
        call = auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=(*account.metadata, ("x-request-id", "abc-123")),
        )
        assert request_ids(await call.initial_metadata()) == ["abc-123"]
        assert (await call).user.id == account.user_id

    async def test_request_id_is_generated_when_absent(
        self, auth: AuthStub, account: Account
    ) -> None:
        seen = []
        for _ in range(2):
            call = auth.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=account.metadata
            )
            ids = request_ids(await call.initial_metadata())
            assert len(ids) == 1
            assert ids[0].strip()
            seen.append(ids[0])
            await call
        assert seen[0] != seen[1]

    async def test_request_id_is_echoed_on_errors(self, auth: AuthStub) -> None:
        call = auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(), metadata=(("x-request-id", "abc-123"),)
        )
        assert request_ids(await call.initial_metadata()) == ["abc-123"]
        await refused(call, Code.UNAUTHENTICATED, reason="TOKEN_MISSING")


# Error details ---------------------------------------------------------------


class TestErrorDetails:
    """Every AuthService error carries a google.rpc.Status with an ErrorInfo
    of domain qrsys."""

    async def test_every_error_carries_qrsys_error_info(
        self, auth: AuthStub, account: Account
    ) -> None:
        failing: list[tuple[Awaitable[Any], grpc.StatusCode]] = [
            (
                auth.Register(auth_pb2.RegisterRequest(email="x", password=PASSWORD)),
                Code.INVALID_ARGUMENT,
            ),
            (
                auth.Register(
                    auth_pb2.RegisterRequest(email=account.email, password=PASSWORD)
                ),
                Code.ALREADY_EXISTS,
            ),
            (
                auth.Login(
                    auth_pb2.LoginRequest(email=account.email, password="wrong-pass")
                ),
                Code.UNAUTHENTICATED,
            ),
            (
                auth.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token="x")),
                Code.UNAUTHENTICATED,
            ),
            (auth.Logout(auth_pb2.LogoutRequest()), Code.UNAUTHENTICATED),
            (
                auth.LogoutAll(
                    auth_pb2.LogoutAllRequest(), metadata=bearer("not.a.jwt")
                ),
                Code.UNAUTHENTICATED,
            ),
            (
                auth.ChangePassword(
                    auth_pb2.ChangePasswordRequest(
                        current_password=PASSWORD, new_password="short"
                    ),
                    metadata=account.metadata,
                ),
                Code.INVALID_ARGUMENT,
            ),
            (
                auth.DeleteAccount(
                    auth_pb2.DeleteAccountRequest(password="wrong-password"),
                    metadata=account.metadata,
                ),
                Code.UNAUTHENTICATED,
            ),
            (
                auth.IntrospectToken(
                    auth_pb2.IntrospectTokenRequest(), metadata=account.metadata
                ),
                Code.INVALID_ARGUMENT,
            ),
        ]
        for call, code in failing:
            error = await rpc_error(call, code)
            status = status_of(error)
            assert status.code == code.value[0]
            assert status.message == error.details()
            info = error_info(error)
            assert info.domain == "qrsys"
            assert info.reason
            assert info.reason == info.reason.upper()
