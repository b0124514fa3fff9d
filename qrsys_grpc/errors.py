"""The domain errors of qrsys.

Every layer raises these; none of them knows about gRPC. The table in
``qrsys_grpc.status`` turns each class into a status code and its details.
Each class carries a stable UPPER_SNAKE ``reason`` that clients may match on.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path and what is wrong with it."""

    field: str
    description: str


class QrsysError(Exception):
    """The root of every error that qrsys raises on purpose."""

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class InvalidArgument(QrsysError):
    """A request field is malformed or out of range."""

    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        violations: list[FieldViolation],
        *,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        text = message or "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(text, reason=reason)
        self.violations = violations

    @classmethod
    def field(
        cls, field: str, description: str, *, reason: str | None = None
    ) -> InvalidArgument:
        """Build the error for a single bad field."""
        return cls([FieldViolation(field, description)], reason=reason)

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its violations when it crosses a process boundary.
        return (type(self), (self.violations,), self.__dict__.copy())

    def prefixed(self, prefix: str) -> InvalidArgument:
        """Return the same error with every field path under ``prefix``."""
        moved = [
            FieldViolation(f"{prefix}.{v.field}" if v.field else prefix, v.description)
            for v in self.violations
        ]
        return InvalidArgument(moved, reason=self.reason)


class ContentTooLong(InvalidArgument):
    """The content does not fit in any QR symbol of the chosen style."""

    reason = "CONTENT_TOO_LONG"


class Unauthenticated(QrsysError):
    """The caller is not who they claim, or did not say who they are."""

    reason = "UNAUTHENTICATED"


class InvalidCredentials(Unauthenticated):
    """Wrong email or wrong password; one message for both."""

    reason = "INVALID_CREDENTIALS"

    def __init__(self) -> None:
        super().__init__("the email or password is wrong")


class NotFound(QrsysError):
    """The thing asked for does not exist, or belongs to someone else."""

    reason = "NOT_FOUND"


class ReferenceGone(NotFound):
    """A row the write refers to was deleted meanwhile (a foreign key)."""


class AlreadyExists(QrsysError):
    """Creating the thing would duplicate one that exists."""

    reason = "ALREADY_EXISTS"


class EtagMismatch(QrsysError):
    """The caller's etag is not the stored one: the thing changed meanwhile."""

    reason = "ETAG_MISMATCH"


class TooManyAttempts(QrsysError):
    """The caller must wait before trying again."""

    reason = "TOO_MANY_ATTEMPTS"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class DeadlineExceeded(QrsysError):
    """The call ran out of the time its client gave it."""

    reason = "DEADLINE_EXCEEDED"


class Unavailable(QrsysError):
    """A dependency (the database) cannot be reached right now."""

    reason = "DATABASE_UNAVAILABLE"
