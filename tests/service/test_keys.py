"""Signing keys: rotation across servers, EdDSA, pinned algorithms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrsys_grpc.server import StartupError, start_server
from qrsys_grpc.settings import Settings
from qrsys_grpc.v1 import auth_pb2, auth_pb2_grpc
from tests.conftest import MIGRATIONS
from tests.service.conftest import register


def write_hs256(directory: Path, kid: str) -> None:
    (directory / f"{kid}.hs256").write_text(secrets.token_urlsafe(48))


def write_ed25519(directory: Path, kid: str, *, public_only: bool = False) -> bytes:
    private = Ed25519PrivateKey.generate()
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public_only:
        (directory / f"{kid}.ed25519.pub.pem").write_bytes(public_pem)
    else:
        (directory / f"{kid}.ed25519.pem").write_bytes(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return public_pem


@asynccontextmanager
async def auth_client(
    settings: Settings, database_url: str
) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    running = await start_server(settings, database_url)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await running.stop(0)


def settings_for(tmp_path: Path, keys: Path, kid: str | None = None) -> Settings:
    return Settings(
        listen_address="127.0.0.1:0",
        data_dir=tmp_path,
        migrations_dir=MIGRATIONS,
        jwt_keys_dir=keys,
        jwt_signing_kid=kid,
    )


async def whoami(auth: auth_pb2_grpc.AuthServiceStub, token: str) -> grpc.StatusCode:
    try:
        await auth.GetCurrentUser(
            auth_pb2.GetCurrentUserRequest(),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def header_of(token: str) -> dict[str, str]:
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


async def test_a_new_key_signs_while_the_old_one_still_verifies(
    tmp_path: Path, database_url: str
) -> None:
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    write_hs256(old_dir, "2026-01")
    new_dir.mkdir()
    (new_dir / "2026-01.hs256").write_bytes((old_dir / "2026-01.hs256").read_bytes())
    write_ed25519(new_dir, "2026-02")

    async with auth_client(settings_for(tmp_path, old_dir), database_url) as old:
        account = await register(old)
        old_token = account.tokens.access_token
        assert header_of(old_token) == {"alg": "HS256", "kid": "2026-01", "typ": "JWT"}

        async with auth_client(
            settings_for(tmp_path, new_dir, "2026-02"), database_url
        ) as new:
            assert await whoami(new, old_token) == grpc.StatusCode.OK
            login = await new.Login(
                auth_pb2.LoginRequest(
                    email=account.email, password="a-long-enough-pass"
                )
            )
            new_token = login.tokens.access_token
            assert header_of(new_token)["alg"] == "EdDSA"
            assert header_of(new_token)["kid"] == "2026-02"
            assert await whoami(new, new_token) == grpc.StatusCode.OK
            # A server that does not know the new key yet refuses its tokens.
            assert await whoami(old, new_token) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_public_key_only_verifies(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_ed25519(keys, "pub", public_only=True)
    with pytest.raises(StartupError, match="can sign"):
        await start_server(settings_for(tmp_path, keys, "pub"), "postgresql://unused/x")


async def test_two_signing_keys_need_a_chosen_kid(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    write_hs256(keys, "a")
    write_hs256(keys, "b")
    with pytest.raises(StartupError, match="QRSYS_JWT_SIGNING_KID"):
        await start_server(settings_for(tmp_path, keys), "postgresql://unused/x")


async def test_a_short_hs256_key_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "short.hs256").write_text("too-short")
    with pytest.raises(StartupError, match="at least 32 bytes"):
        await start_server(settings_for(tmp_path, keys), "postgresql://unused/x")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _token(header: dict[str, str], claims: dict[str, object], key: bytes | None) -> str:
    """A JWT built by hand: HMAC-SHA256 with ``key``, or unsigned."""
    signing_input = (
        f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    )
    if key is None:
        return f"{signing_input}."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(
            lambda claims, public_pem: _token(
                {"alg": "HS256", "kid": "ed", "typ": "JWT"}, claims, public_pem
            ),
            id="hs256-keyed-with-the-public-key",
        ),
        pytest.param(
            lambda claims, public_pem: _token(
                {"alg": "none", "kid": "ed", "typ": "JWT"}, claims, None
            ),
            id="alg-none-naming-a-known-kid",
        ),
        pytest.param(
            lambda claims, public_pem: _token(
                {"alg": "EdDSA", "kid": "ed", "typ": "JWT"}, claims, public_pem
            ),
            id="eddsa-header-with-an-hmac-signature",
        ),
    ],
)
async def test_algorithm_confusion_is_refused(
    tmp_path: Path,
    database_url: str,
    forge: Callable[[dict[str, object], bytes], str],
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    public_pem = write_ed25519(keys, "ed")
    async with auth_client(settings_for(tmp_path, keys), database_url) as auth:
        account = await register(auth)
        claims = jwt.decode(
            account.tokens.access_token, options={"verify_signature": False}
        )
        assert await whoami(auth, account.tokens.access_token) == grpc.StatusCode.OK
        forged = forge(claims, public_pem)
        assert await whoami(auth, forged) == grpc.StatusCode.UNAUTHENTICATED
