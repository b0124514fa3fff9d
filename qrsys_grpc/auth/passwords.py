"""Password rules and argon2id hashing.

Passwords are NFKC-normalised before they are measured or hashed, so the
same password typed on two keyboards gives the same hash. The argon2id
parameters are 3 passes over 64 MiB in one lane, well above the OWASP
minimum of 2 passes over 19 MiB.
"""

from __future__ import annotations

import functools
import unicodedata

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from qrsys_grpc import errors

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256

# RFC 9106's low-memory profile, but one lane: parallel lanes only spread the
# same work over more cores, which a server needs for its other calls.
_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=1)


def normalize(password: str, *, field: str) -> str:
    """Return the NFKC form of ``password`` after checking its length.

    Raises:
        errors.InvalidArgument: too short, too long or containing NUL.
    """
    if len(password) > MAX_PASSWORD_LENGTH * 4:
        raise errors.InvalidArgument.field(
            field, f"must be at most {MAX_PASSWORD_LENGTH} characters"
        )
    normalized = unicodedata.normalize("NFKC", password)
    if len(normalized) < MIN_PASSWORD_LENGTH:
        raise errors.InvalidArgument.field(
            field, f"must be at least {MIN_PASSWORD_LENGTH} characters"
        )
    if len(normalized) > MAX_PASSWORD_LENGTH:
        raise errors.InvalidArgument.field(
            field, f"must be at most {MAX_PASSWORD_LENGTH} characters"
        )
    if "\x00" in normalized:
        raise errors.InvalidArgument.field(field, "must not contain NUL characters")
    return normalized


def hash_password(password: str) -> str:
    """Hash a normalised password with argon2id. Blocking."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``. Blocking."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """Whether the hash was made with parameters weaker than today's."""
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def dummy_hash() -> str:
    """A hash to verify against when the email is unknown, to spend the same
    time as for a known one. Blocking on first call."""
    return _hasher.hash("qrsys dummy password, never a real one")


def verify_unknown_user(password: str) -> bool:
    """Spend the time of one verification and return ``False``. Blocking."""
    verify_password(dummy_hash(), password)
    return False


def normalize_lenient(password: str) -> str:
    """NFKC-normalise a password to check, without judging its length.

    A password that could never have been set simply fails to verify.
    """
    return unicodedata.normalize("NFKC", password[: MAX_PASSWORD_LENGTH * 4])
