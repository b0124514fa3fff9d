"""Failed sign-in counters, shared by every replica through PostgreSQL.

A key is ``account:<email>`` or ``address:<ip>``. Each failure bumps its
counter and may block the key until a time the policy computes; a success
clears the account's key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from qrsys_grpc.repository.tables import login_failures


class LoginFailureRepository:
    """Reads and writes the ``login_failures`` table on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def seconds_blocked(self, keys: Sequence[str]) -> float | None:
        """How many seconds the longest block among ``keys`` has left, if any.

        Measured on the database's clock, the one the blocks were set by.
        """
        remaining = sa.func.extract(
            "epoch", sa.func.max(login_failures.c.blocked_until) - sa.func.now()
        )
        statement = sa.select(remaining).where(
            login_failures.c.key.in_(list(keys)),
            login_failures.c.blocked_until > sa.func.now(),
        )
        result = (await self._conn.execute(statement)).scalar()
        return None if result is None else float(result)

    async def record_failure(
        self,
        key: str,
        *,
        window: timedelta,
        delay_for: Callable[[int], timedelta],
    ) -> int:
        """Count one failure for ``key``; return the count in this window.

        A key whose last failure is older than ``window`` starts again at 1.
        ``delay_for(count)`` says how long the key is then blocked.
        """
        now = sa.func.now()
        stale = login_failures.c.last_failure_time < now - window
        insert = pg.insert(login_failures).values(
            key=key, failures=1, last_failure_time=now, blocked_until=now
        )
        upsert = insert.on_conflict_do_update(
            index_elements=[login_failures.c.key],
            set_={
                "failures": sa.case((stale, 1), else_=login_failures.c.failures + 1),
                "last_failure_time": now,
            },
        ).returning(login_failures.c.failures)
        count = int((await self._conn.execute(upsert)).scalar_one())
        delay = delay_for(count)
        if delay > timedelta(0):
            await self._conn.execute(
                sa.update(login_failures)
                .where(login_failures.c.key == key)
                .values(blocked_until=now + delay)
            )
        return count

    async def clear(self, key: str) -> None:
        """Forget the failures of ``key``."""
        await self._conn.execute(
            sa.delete(login_failures).where(login_failures.c.key == key)
        )

    async def purge_older_than(self, age: timedelta) -> int:
        """Delete counters idle for longer than ``age``; return how many."""
        result = await self._conn.execute(
            sa.delete(login_failures)
            .where(
                login_failures.c.last_failure_time < sa.func.now() - age,
                login_failures.c.blocked_until < sa.func.now(),
            )
            .returning(login_failures.c.key)
        )
        return len(result.all())
