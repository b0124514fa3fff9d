"""Accounts: create, find by email or id, change the password, delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from qrsys_grpc import errors
from qrsys_grpc.repository.tables import users


@dataclass(frozen=True)
class UserRecord:
    """A stored account."""

    id: uuid.UUID
    email: str
    display_name: str
    password_hash: str
    create_time: datetime
    update_time: datetime


def _record(row: sa.Row[tuple[object, ...]]) -> UserRecord:
    return UserRecord(**row._mapping)


class UserRepository:
    """Reads and writes the ``users`` table on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create(
        self, *, email: str, display_name: str, password_hash: str
    ) -> UserRecord:
        """Store a new account.

        Raises:
            errors.AlreadyExists: the email (ignoring case) is registered.
        """
        statement = (
            sa.insert(users)
            .values(
                id=uuid.uuid4(),
                email=email,
                display_name=display_name,
                password_hash=password_hash,
            )
            .returning(*users.c)
        )
        try:
            row = (await self._conn.execute(statement)).one()
        except sa.exc.IntegrityError as exc:
            raise errors.AlreadyExists(
                "an account with this email exists", reason="EMAIL_TAKEN"
            ) from exc
        return _record(row)

    async def find_by_email(self, email: str) -> UserRecord | None:
        """Return the account whose email equals ``email`` ignoring case."""
        statement = sa.select(users).where(
            sa.func.lower(users.c.email) == email.lower()
        )
        row = (await self._conn.execute(statement)).one_or_none()
        return None if row is None else _record(row)

    async def get(self, user_id: uuid.UUID) -> UserRecord | None:
        """Return the account with this id, if any."""
        row = (
            await self._conn.execute(sa.select(users).where(users.c.id == user_id))
        ).one_or_none()
        return None if row is None else _record(row)

    async def set_password_hash(
        self, user_id: uuid.UUID, password_hash: str, *, replacing: str
    ) -> bool:
        """Replace the stored hash if it is still ``replacing``.

        Returns ``False`` when another call changed the password meanwhile.
        """
        result = await self._conn.execute(
            sa.update(users)
            .where(users.c.id == user_id, users.c.password_hash == replacing)
            .values(password_hash=password_hash, update_time=sa.func.now())
            .returning(users.c.id)
        )
        return result.first() is not None

    async def delete(self, user_id: uuid.UUID) -> None:
        """Remove the account; its sessions and codes go with it."""
        await self._conn.execute(sa.delete(users).where(users.c.id == user_id))
