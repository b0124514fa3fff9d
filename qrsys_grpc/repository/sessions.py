"""Sign-in sessions and their rotating refresh tokens.

A refresh token is stored only as its SHA-256 digest. Each use replaces it;
the digest it replaced is kept so that a replayed token can be recognised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from qrsys_grpc.repository.tables import sessions


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
        self, *, old_hash: bytes, new_hash: bytes, expire_time: datetime
    ) -> SessionRecord | None:
        """Swap a live session's refresh token for a new one.

        Returns the session, or ``None`` when no live session holds
        ``old_hash`` as its current refresh token.
        """
        statement = (
            sa.update(sessions)
            .where(
                sessions.c.refresh_token_hash == old_hash,
                sessions.c.revoke_time.is_(None),
                sessions.c.expire_time > sa.func.now(),
            )
            .values(
                refresh_token_hash=new_hash,
                previous_refresh_token_hash=old_hash,
                rotate_time=sa.func.now(),
                expire_time=expire_time,
            )
            .returning(sessions.c.id, sessions.c.user_id, sessions.c.expire_time)
        )
        row = (await self._conn.execute(statement)).one_or_none()
        return None if row is None else SessionRecord(*row)

    async def revoke_by_previous_hash(self, old_hash: bytes) -> bool:
        """End the live session whose refresh token ``old_hash`` was before.

        This is how a replayed refresh token is answered: whoever holds the
        session's tokens now may be an attacker, so the session ends.
        """
        statement = (
            sa.update(sessions)
            .where(
                sessions.c.previous_refresh_token_hash == old_hash,
                sessions.c.revoke_time.is_(None),
            )
            .values(revoke_time=sa.func.now())
            .returning(sessions.c.id)
        )
        return (await self._conn.execute(statement)).first() is not None

    async def is_active(self, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        """Whether the session exists for this user and has not ended."""
        statement = sa.select(sa.literal(1)).where(
            sessions.c.id == session_id,
            sessions.c.user_id == user_id,
            sessions.c.revoke_time.is_(None),
            sessions.c.expire_time > sa.func.now(),
        )
        return (await self._conn.execute(statement)).first() is not None

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
    ) -> int:
        """End every live session of a user except ``keep``; return how many."""
        condition = sa.and_(
            sessions.c.user_id == user_id, sessions.c.revoke_time.is_(None)
        )
        if keep is not None:
            condition = sa.and_(condition, sessions.c.id != keep)
        statement = (
            sa.update(sessions)
            .where(condition)
            .values(revoke_time=sa.func.now())
            .returning(sessions.c.id)
        )
        return len((await self._conn.execute(statement)).all())

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
