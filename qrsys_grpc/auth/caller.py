"""Who is calling: set by the interceptor, read by handlers."""

from __future__ import annotations

import uuid
from contextvars import ContextVar
from dataclasses import dataclass

from qrsys_grpc import errors


@dataclass(frozen=True)
class Caller:
    """The authenticated user of the current call and their session."""

    user_id: uuid.UUID
    session_id: uuid.UUID


current_caller: ContextVar[Caller | None] = ContextVar("current_caller", default=None)


def require_caller() -> Caller:
    """Return the current call's caller.

    Raises:
        errors.Unauthenticated: the call was not authenticated.
    """
    caller = current_caller.get()
    if caller is None:
        raise errors.Unauthenticated(
            "this call needs an access token", reason="TOKEN_MISSING"
        )
    return caller
