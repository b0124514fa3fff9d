"""Access tokens (signed JWTs) and refresh tokens (random, stored as digests).

An access token names its user (``sub``), its session (``sid``) and its type
(``typ`` = ``access``). It is accepted only when signed by a known key with
that key's pinned algorithm, for our issuer and audience, unexpired. Whether
its session is still live is the caller's question: see ``Accounts``.

Keys are HS256 secrets or Ed25519 key pairs, each with an id (``kid``) that
every token names in its header. One key signs; every key verifies, so a new
key can take over signing while tokens signed by the old one run out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cachetools import LRUCache
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from qrsys_grpc import errors

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPE = "access"  # noqa: S105 - a claim value, not a secret
REFRESH_TOKEN_BYTES = 32
KEY_FILE_NAME = "jwt-signing-key"
VERIFIED_TOKEN_CACHE_SIZE = 10_000


HS256_SUFFIX = ".hs256"
ED25519_PRIVATE_SUFFIX = ".ed25519.pem"
ED25519_PUBLIC_SUFFIX = ".ed25519.pub.pem"
MIN_SECRET_BYTES = 32


class UnusableKey(ValueError):
    """A configured key is unusable; the message says which and why."""


@dataclass(frozen=True)
class SigningKey:
    """A key with its id and the one algorithm it may be used with.

    ``sign_with`` is ``None`` for a key that only verifies (a public key).
    """

    kid: str
    algorithm: str
    verify_with: Any
    sign_with: Any = None

    @classmethod
    def hs256(cls, secret: bytes, kid: str | None = None) -> SigningKey:
        """An HMAC-SHA256 key; without a ``kid``, one is derived from it.

        Raises:
            UnusableKey: the secret is shorter than 32 bytes.
        """
        if len(secret) < MIN_SECRET_BYTES:
            raise UnusableKey(
                f"an HS256 key needs at least {MIN_SECRET_BYTES} bytes, "
                f"got {len(secret)}"
            )
        kid = kid or hashlib.sha256(b"qrsys-kid:" + secret).hexdigest()[:16]
        return cls(kid=kid, algorithm="HS256", verify_with=secret, sign_with=secret)

    @classmethod
    def ed25519_private(cls, kid: str, pem: bytes) -> SigningKey:
        """An Ed25519 key pair from a PKCS #8 PEM private key.

        Raises:
            UnusableKey: the PEM is not an Ed25519 private key.
        """
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"key {kid}: not a PEM private key") from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise UnusableKey(f"key {kid}: not an Ed25519 private key")
        return cls(
            kid=kid,
            algorithm="EdDSA",
            verify_with=private.public_key(),
            sign_with=private,
        )

    @classmethod
    def ed25519_public(cls, kid: str, pem: bytes) -> SigningKey:
        """A verify-only Ed25519 key from a PEM public key.

        Raises:
            UnusableKey: the PEM is not an Ed25519 public key.
        """
        try:
            public = serialization.load_pem_public_key(pem)
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"key {kid}: not a PEM public key") from exc
        if not isinstance(public, Ed25519PublicKey):
            raise UnusableKey(f"key {kid}: not an Ed25519 public key")
        return cls(kid=kid, algorithm="EdDSA", verify_with=public)


def load_key_directory(directory: Path) -> list[SigningKey]:
    """Every key in ``directory``, named ``<kid>.hs256``, ``<kid>.ed25519.pem``
    (private) or ``<kid>.ed25519.pub.pem`` (public, verify only).

    Raises:
        UnusableKey: a file is unusable, or the directory holds no key.
    """
    keys: dict[str, SigningKey] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        if name.endswith(ED25519_PUBLIC_SUFFIX):
            kid = name.removesuffix(ED25519_PUBLIC_SUFFIX)
            key = SigningKey.ed25519_public(kid, path.read_bytes())
        elif name.endswith(ED25519_PRIVATE_SUFFIX):
            kid = name.removesuffix(ED25519_PRIVATE_SUFFIX)
            key = SigningKey.ed25519_private(kid, path.read_bytes())
        elif name.endswith(HS256_SUFFIX):
            kid = name.removesuffix(HS256_SUFFIX)
            key = SigningKey.hs256(path.read_bytes().strip(), kid=kid)
        else:
            continue
        if kid in keys and keys[kid].sign_with is not None:
            continue
        keys[kid] = key
    if not keys:
        raise UnusableKey(f"no key files in {directory}")
    return list(keys.values())


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says."""

    user_id: uuid.UUID
    session_id: uuid.UUID
    expire_time: datetime


def load_or_create_key_file(path: Path) -> bytes:
    """Read the key in ``path``, creating it (mode 0600) with 64 random bytes
    if it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(64))
        logger.info("generated a new token signing key in %s", path)
    return path.read_text().strip().encode()


def refresh_token_digest(token: str) -> bytes:
    """The SHA-256 digest under which a refresh token is stored."""
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> tuple[str, bytes]:
    """A fresh random refresh token and its digest."""
    token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    return token, refresh_token_digest(token)


class TokenIssuer:
    """Signs and verifies access tokens with a ring of keys."""

    def __init__(
        self,
        signing_key: SigningKey,
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        verify_keys: tuple[SigningKey, ...] = (),
    ) -> None:
        if signing_key.sign_with is None:
            raise UnusableKey(f"key {signing_key.kid} can only verify, not sign")
        self._signing_key = signing_key
        self._keys = {key.kid: key for key in (*verify_keys, signing_key)}
        self._verified: LRUCache[str, AccessClaims] = LRUCache(
            maxsize=VERIFIED_TOKEN_CACHE_SIZE
        )
        self._issuer = issuer
        self._audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue_access(
        self, user_id: uuid.UUID, session_id: uuid.UUID, *, now: datetime | None = None
    ) -> tuple[str, datetime]:
        """Sign an access token; return it with its expiry time."""
        issued = (now or datetime.now(UTC)).replace(microsecond=0)
        expires = issued + self.access_ttl
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "jti": uuid.uuid4().hex,
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "iss": self._issuer,
            "aud": self._audience,
            "typ": ACCESS_TOKEN_TYPE,
        }
        key = self._signing_key
        token = jwt.encode(
            claims, key.sign_with, algorithm=key.algorithm, headers={"kid": key.kid}
        )
        return token, expires

    def refresh_expire_time(self, now: datetime | None = None) -> datetime:
        """When a refresh token issued now expires."""
        return (now or datetime.now(UTC)) + self.refresh_ttl

    def verify_access(self, token: str) -> AccessClaims:
        """Check an access token's signature, type and claims.

        A token verified before is not verified again until it expires: its
        signature and claims cannot change. (Whether its session is still
        live is checked on every call elsewhere.)

        Raises:
            errors.Unauthenticated: anything about the token is wrong.
        """
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token)
            self._verified[token] = claims
        if claims.expire_time <= datetime.now(UTC):
            self._verified.pop(token, None)
            raise errors.Unauthenticated(
                "the access token has expired", reason="TOKEN_EXPIRED"
            )
        return claims

    def _verify(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise errors.Unauthenticated(
                "the access token is malformed", reason="TOKEN_INVALID"
            ) from exc
        key = self._keys.get(str(header.get("kid", "")))
        if key is None:
            raise errors.Unauthenticated(
                "the access token was signed by an unknown key", reason="TOKEN_INVALID"
            )
        try:
            claims = jwt.decode(
                token,
                key.verify_with,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "require": ["sub", "sid", "jti", "iat", "exp", "iss", "aud", "typ"]
                },
            )
        except jwt.ExpiredSignatureError as exc:
            raise errors.Unauthenticated(
                "the access token has expired", reason="TOKEN_EXPIRED"
            ) from exc
        except jwt.PyJWTError as exc:
            raise errors.Unauthenticated(
                "the access token is invalid", reason="TOKEN_INVALID"
            ) from exc
        if claims.get("typ") != ACCESS_TOKEN_TYPE:
            raise errors.Unauthenticated(
                "the token is not an access token", reason="TOKEN_INVALID"
            )
        try:
            return AccessClaims(
                user_id=uuid.UUID(claims["sub"]),
                session_id=uuid.UUID(claims["sid"]),
                expire_time=datetime.fromtimestamp(claims["exp"], UTC),
            )
        except (ValueError, TypeError) as exc:
            raise errors.Unauthenticated(
                "the access token is invalid", reason="TOKEN_INVALID"
            ) from exc
