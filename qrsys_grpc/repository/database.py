"""The connection pool, the one place a transaction is opened, and the
translation of driver errors into domain errors."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from qrsys_grpc import errors
from qrsys_grpc.metrics import PoolStats

logger = logging.getLogger(__name__)

call_deadline: ContextVar[float | None] = ContextVar("call_deadline", default=None)
"""When the current call must be done, on ``time.monotonic()``'s clock."""

UNIQUE_VIOLATION = "23505"
FOREIGN_KEY_VIOLATION = "23503"
DATA_EXCEPTION_CLASS = "22"
CONNECTION_EXCEPTION_CLASS = "08"
SHUTDOWN_CLASS = "57"
QUERY_CANCELED = "57014"


def async_url(url: str) -> sa.URL:
    """Return ``url`` with the asyncpg driver, whichever PostgreSQL form it had.

    Raises:
        ValueError: the URL is not a PostgreSQL URL.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.drivername}")
    return parsed.set(drivername="postgresql+asyncpg")


def _sqlstate(exc: sa_exc.DBAPIError) -> str:
    """The five-character SQLSTATE of a driver error, or the empty string."""
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None)
        if isinstance(state, str):
            return state
    return ""


def _constraint(exc: sa_exc.DBAPIError) -> str:
    for candidate in (exc.orig, getattr(exc.orig, "__cause__", None)):
        name = getattr(candidate, "constraint_name", None)
        if isinstance(name, str):
            return name
    return ""


def translate(exc: Exception) -> errors.QrsysError | None:
    """Map a driver or connection error to a domain error, or ``None``."""
    if isinstance(exc, sa_exc.DBAPIError):
        state = _sqlstate(exc)
        if state == UNIQUE_VIOLATION:
            # The constraint's name is for operators, not for clients.
            logger.info("unique violation on %s", _constraint(exc) or "?")
            return errors.AlreadyExists(
                "the value is taken already, perhaps by a concurrent call"
            )
        if state == FOREIGN_KEY_VIOLATION:
            return errors.ReferenceGone("a record this call refers to no longer exists")
        if state.startswith(DATA_EXCEPTION_CLASS):
            return errors.InvalidArgument.field(
                "", "a value could not be stored as sent", reason="INVALID_VALUE"
            )
        if state == QUERY_CANCELED:
            return errors.DeadlineExceeded("the call ran out of time in the database")
        if (
            state.startswith((CONNECTION_EXCEPTION_CLASS, SHUTDOWN_CLASS))
            or exc.connection_invalidated
            or isinstance(exc, sa_exc.InterfaceError)
        ):
            return errors.Unavailable("the database cannot be reached")
        return None
    if isinstance(exc, sa_exc.TimeoutError):
        # The pool stayed full for the whole wait: the database is too busy.
        return errors.Unavailable("no database connection came free in time")
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return errors.Unavailable("the database cannot be reached")
    return None


class Database:
    """The pool of connections to PostgreSQL shared by every repository."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        statement_timeout_seconds: float = 10.0,
        connect_timeout_seconds: float = 5.0,
    ) -> None:
        self._statement_timeout = statement_timeout_seconds
        self._connect_args: dict[str, Any] = {
            "timeout": connect_timeout_seconds,
            "command_timeout": statement_timeout_seconds + 1,
            "server_settings": {
                "statement_timeout": str(int(statement_timeout_seconds * 1000)),
                "application_name": "qrsys",
            },
        }
        self.engine: AsyncEngine = create_async_engine(
            async_url(url),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=connect_timeout_seconds,
            # No ping per checkout: a connection found dead raises once, and
            # SQLAlchemy then discards every connection of the pool made
            # before it, so one failed call follows a database restart.
            connect_args=self._connect_args,
        )
        # Health asks on a connection of its own, so that a pool busy with
        # calls is not taken for a database that is down.
        self._health_engine: AsyncEngine = create_async_engine(
            async_url(url),
            pool_size=1,
            max_overflow=0,
            pool_timeout=connect_timeout_seconds,
            connect_args=self._connect_args,
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """Open a connection in a transaction that commits on success.

        Raises:
            errors.Unavailable: the database cannot be reached.
            errors.AlreadyExists: a unique constraint was violated.
            errors.InvalidArgument: PostgreSQL rejected a value.
            errors.DeadlineExceeded: the call's deadline passed, before or
                during the transaction; it then rolls back.
        """
        limit_ms = self._statement_limit_ms()
        async with self._translated_errors(), self.engine.begin() as conn:
            if limit_ms is not None:
                await conn.execute(sa.text(f"SET LOCAL statement_timeout = {limit_ms}"))
            yield conn
            # A call whose client has given up must not commit behind its back.
            self._statement_limit_ms()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Open a connection for reads that need no transaction of their own.

        Each statement runs on its own (autocommit), which spares the BEGIN
        and COMMIT round trips of ``transaction``. A call whose deadline is
        nearer than the statement timeout gets a transaction instead, so
        that the deadline can bound its statements.

        Raises:
            errors.Unavailable: the database cannot be reached.
            errors.DeadlineExceeded: the call's deadline passed.
        """
        if self._statement_limit_ms() is not None:
            async with self.transaction() as conn:
                yield conn
            return
        async with self._translated_errors(), self.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @asynccontextmanager
    async def dedicated_connection(
        self, application_name: str
    ) -> AsyncIterator[asyncpg.Connection]:
        """A driver connection of its own, outside the pool, for LISTEN.

        ``application_name`` tells it apart in ``pg_stat_activity``. It is
        closed on leaving the block. Errors are the driver's own.
        """
        connect_args = {
            **self._connect_args,
            "server_settings": {
                **self._connect_args["server_settings"],
                "application_name": application_name,
            },
        }
        engine = create_async_engine(
            self.engine.url, poolclass=NullPool, connect_args=connect_args
        )
        try:
            async with engine.connect() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                if not isinstance(driver, asyncpg.Connection):
                    raise TypeError("the driver is not asyncpg")
                yield driver
        finally:
            await engine.dispose()

    async def notify(self, channel: str, payload: str) -> None:
        """Send a notice on ``channel`` through the pool.

        Raises:
            errors.Unavailable: the database cannot be reached.
        """
        async with self.transaction() as conn:
            await conn.execute(sa.select(sa.func.pg_notify(channel, payload)))

    @asynccontextmanager
    async def _translated_errors(self) -> AsyncIterator[None]:
        try:
            yield
        except errors.QrsysError:
            raise
        except Exception as exc:
            domain = translate(exc)
            if domain is None:
                raise
            raise domain from exc

    def _statement_limit_ms(self) -> int | None:
        """The statement timeout the call's deadline calls for, if shorter
        than the configured one.

        Raises:
            errors.DeadlineExceeded: the deadline has passed.
        """
        deadline = call_deadline.get()
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise errors.DeadlineExceeded("the call's deadline has passed")
        if remaining >= self._statement_timeout:
            return None
        return max(1, int(remaining * 1000))

    def pool_stats(self) -> PoolStats:
        """How many connections the pool holds and lends out now."""
        pool = self.engine.sync_engine.pool
        return PoolStats(
            size=int(getattr(pool, "size", lambda: 0)()),
            checked_out=int(getattr(pool, "checkedout", lambda: 0)()),
            overflow=int(getattr(pool, "overflow", lambda: 0)()),
        )

    async def ping(self) -> None:
        """Run a trivial query on the health connection, outside the pool.

        Raises:
            errors.Unavailable: the database cannot be reached.
        """
        async with self._translated_errors(), self._health_engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        await self._health_engine.dispose()
