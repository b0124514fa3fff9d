"""Sign-in sessions and their rotating refresh tokens.

A refresh token is stored only as its SHA-256 digest. Each use replaces it,
and the digest it replaced is kept, so that a replayed token is recognised
for as long as its session exists.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from qrsys_grpc.repository.tables import sessions, used_refresh_tokens

# Asked on every authenticated call: built once, not per call.
_LIVE_UNTIL = sa.select(sessions.c.expire_time).where(
    sessions.c.id == sa.bindparam("session_id"),
    sessions.c.user_id == sa.bindparam("user_id"),
    sessions.c.revoke_time.is_(None),
    sessions.c.expire_time > sa.func.now(),
)


@dataclass(frozen=True)
class SessionRecord:
    """A stored session."""

    id: uuid.UUID
    user_id: uuid.UUID
    expire_time: datetime


class SessionRepository:
    """Reads and writes the ``sessions`` table on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(
        self, *, user_id: uuid.UUID, refresh_token_hash: bytes, expire_time: datetime
    ) -> SessionRecord:
        """Start a session for ``user_id``."""
        session_id = uuid.uuid4()
        await self._conn.execute(
            sa.insert(sessions).values(
                id=session_id,
                user_id=user_id,
                refresh_token_hash=refresh_token_hash,
                expire_time=expire_time,
            )
        )
        return SessionRecord(session_id, user_id, expire_time)

    async def rotate(
        self,
        *,
        old_hash: bytes,
        new_hash: bytes,
        expire_time: datetime,
        grace: timedelta = timedelta(0),
    ) -> SessionRecord | None:
        """Swap a live session's refresh token for a new one.

        ``old_hash`` may be the current token or, once and only within
        ``grace`` after a rotation, the token that rotation replaced: a
        client that lost the answer may retry. Every replaced token is
        remembered as used.

        Returns the session, or ``None`` when no live session accepts
        ``old_hash``.
        """
        found = (
            await self._conn.execute(
                sa.select(
                    sessions.c.id,
                    sessions.c.user_id,
                    sessions.c.refresh_token_hash,
                    sessions.c.previous_refresh_token_hash,
                    sessions.c.rotate_time > sa.func.now() - grace,
                )
                .where(
                    sa.or_(
                        sessions.c.refresh_token_hash == old_hash,
                        sessions.c.previous_refresh_token_hash == old_hash,
                    ),
                    sessions.c.revoke_time.is_(None),
                    sessions.c.expire_time > sa.func.now(),
                )
                .with_for_update()
            )
        ).one_or_none()
        if found is None:
            return None
        session_id, user_id, current, _previous, recent = found
        values: dict[str, object]
        if current == old_hash:
            values = {
                "previous_refresh_token_hash": old_hash,
                "rotate_time": sa.func.now(),
            }
        elif grace and recent:
            # The retry of a lost answer: the token that answer carried is
            # now used, and the old one gets no further retry.
            values = {"previous_refresh_token_hash": None}
        else:
            return None
        await self._conn.execute(
            sa.update(sessions)
            .where(sessions.c.id == session_id)
            .values(refresh_token_hash=new_hash, expire_time=expire_time, **values)
        )
        await self._conn.execute(
            pg.insert(used_refresh_tokens)
            .values(
                [
                    {"refresh_token_hash": digest, "session_id": session_id}
                    for digest in {old_hash, current}
                ]
            )
            .on_conflict_do_nothing()
        )
        return SessionRecord(session_id, user_id, expire_time)

    async def revoke_by_used_token(self, old_hash: bytes) -> uuid.UUID | None:
        """End the live session that once used the refresh token ``old_hash``;
        return its id, or ``None`` if there was no such live session.

        This is how a replayed refresh token is answered: whoever holds the
        session's newer tokens may be an attacker, so the session ends.
        """
        used_by = sa.select(used_refresh_tokens.c.session_id).where(
            used_refresh_tokens.c.refresh_token_hash == old_hash
        )
        statement = (
            sa.update(sessions)
            .where(
                sessions.c.id.in_(used_by.scalar_subquery()),
                sessions.c.revoke_time.is_(None),
            )
            .values(revoke_time=sa.func.now())
            .returning(sessions.c.id)
        )
        ended: uuid.UUID | None = (await self._conn.execute(statement)).scalar()
        return ended

    async def live_until(
        self, session_id: uuid.UUID, user_id: uuid.UUID
    ) -> datetime | None:
        """When the user's session expires, or ``None`` if it has ended."""
        result = await self._conn.execute(
            _LIVE_UNTIL, {"session_id": session_id, "user_id": user_id}
        )
        return result.scalar_one_or_none()

    async def revoke(self, session_id: uuid.UUID) -> bool:
        """End one session; ``False`` when it had ended already."""
        statement = (
            sa.update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoke_time.is_(None))
            .values(revoke_time=sa.func.now())
            .returning(sessions.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def revoke_all(
        self, user_id: uuid.UUID, *, keep: uuid.UUID | None = None
    ) -> list[uuid.UUID]:
        """End every live session of a user except ``keep``; return their ids."""
        condition = sa.and_(
            sessions.c.user_id == user_id,
            sessions.c.revoke_time.is_(None),
            sessions.c.expire_time > sa.func.now(),
        )
        if keep is not None:
            condition = sa.and_(condition, sessions.c.id != keep)
        statement = (
            sa.update(sessions)
            .where(condition)
            .values(revoke_time=sa.func.now())
            .returning(sessions.c.id)
        )
        return list((await self._conn.execute(statement)).scalars())

    async def replace_refresh_token(
        self, session_id: uuid.UUID, *, new_hash: bytes, expire_time: datetime
    ) -> None:
        """Give a live session a fresh refresh token (after a password change)."""
        await self._conn.execute(
            sa.update(sessions)
            .where(sessions.c.id == session_id)
            .values(
                refresh_token_hash=new_hash,
                previous_refresh_token_hash=None,
                rotate_time=sa.func.now(),
                expire_time=expire_time,
            )
        )
