"""Stored QR code definitions, always scoped to their owner.

Every query takes the owner's id: a code of another user is as invisible as
one that never existed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncConnection

from qrsys_grpc import errors
from qrsys_grpc.repository.tables import idempotency_keys, qr_codes


@dataclass(frozen=True)
class QrCodeRecord:
    """A stored QR code."""

    id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    kind: str
    content: dict[str, Any]
    style: dict[str, Any]
    encoded_text: str
    symbol_version: str
    version: int
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class Replay:
    """What an earlier call with the same request id created."""

    records: list[QrCodeRecord]
    """Those of its codes that still exist, in their first order."""
    created: int
    """How many codes it created."""

    @property
    def complete(self) -> bool:
        """Whether every code it created still exists."""
        return len(self.records) == self.created


@dataclass(frozen=True)
class NewQrCode:
    """What a caller supplies to store a code."""

    title: str
    kind: str
    content: dict[str, Any]
    style: dict[str, Any]
    encoded_text: str
    symbol_version: str


@dataclass(frozen=True)
class ListQuery:
    """Which of an owner's codes to list, in what order, from where."""

    kind: str | None = None
    title_contains: str | None = None
    order_field: str = "create_time"
    descending: bool = True
    after: tuple[Any, uuid.UUID] | None = None
    limit: int = 50


ORDER_FIELDS = ("create_time", "update_time", "title")

# The hottest read (GetQrCode, RenderQrCode): built once, not per call.
_GET_ONE = sa.select(qr_codes).where(
    qr_codes.c.id == sa.bindparam("code_id"),
    qr_codes.c.owner_id == sa.bindparam("owner_id"),
)


def _record(row: sa.Row[Any]) -> QrCodeRecord:
    return QrCodeRecord(**row._mapping)


class QrCodeRepository:
    """Reads and writes the ``qr_codes`` table on one connection."""

    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def create_many(
        self,
        owner_id: uuid.UUID,
        codes: Sequence[NewQrCode],
        *,
        operation: str,
        request_id: str = "",
    ) -> tuple[list[QrCodeRecord], Replay | None]:
        """Store ``codes`` in order; return them, and no replay.

        With a ``request_id``, a second call with the same operation and id
        stores nothing and returns the replay of the first call instead.
        """
        if request_id:
            claimed = await self._conn.execute(
                pg.insert(idempotency_keys)
                .values(
                    owner_id=owner_id,
                    operation=operation,
                    request_id=request_id,
                    qr_code_ids=[],
                )
                .on_conflict_do_nothing()
                .returning(idempotency_keys.c.owner_id)
            )
            if claimed.first() is None:
                replay = await self._replay(owner_id, operation, request_id)
                return replay.records, replay

        ids = [uuid.uuid4() for _ in codes]
        rows = [
            {
                "id": code_id,
                "owner_id": owner_id,
                "title": code.title,
                "kind": code.kind,
                "content": code.content,
                "style": code.style,
                "encoded_text": code.encoded_text,
                "symbol_version": code.symbol_version,
            }
            for code_id, code in zip(ids, codes, strict=True)
        ]
        result = await self._conn.execute(
            sa.insert(qr_codes).returning(*qr_codes.c, sort_by_parameter_order=True),
            rows,
        )
        records = [_record(row) for row in result.all()]
        if request_id:
            await self._conn.execute(
                sa.update(idempotency_keys)
                .where(
                    idempotency_keys.c.owner_id == owner_id,
                    idempotency_keys.c.operation == operation,
                    idempotency_keys.c.request_id == request_id,
                )
                .values(qr_code_ids=ids)
            )
        return records, None

    async def _replay(
        self, owner_id: uuid.UUID, operation: str, request_id: str
    ) -> Replay:
        records = await self.replay(owner_id, operation, request_id)
        if records is None:
            raise RuntimeError("the idempotency key vanished inside its transaction")
        return records

    async def replay(
        self, owner_id: uuid.UUID, operation: str, request_id: str
    ) -> Replay | None:
        """What an earlier call with this key created, or ``None`` when no
        call used the key."""
        ids = (
            await self._conn.execute(
                sa.select(idempotency_keys.c.qr_code_ids).where(
                    idempotency_keys.c.owner_id == owner_id,
                    idempotency_keys.c.operation == operation,
                    idempotency_keys.c.request_id == request_id,
                )
            )
        ).scalar_one_or_none()
        if ids is None:
            return None
        found = await self.get_many(owner_id, ids)
        return Replay([found[code_id] for code_id in ids if code_id in found], len(ids))

    async def get(self, owner_id: uuid.UUID, code_id: uuid.UUID) -> QrCodeRecord:
        """Return one code of the owner.

        Raises:
            errors.NotFound: no such code for this owner.
        """
        result = await self._conn.execute(
            _GET_ONE, {"code_id": code_id, "owner_id": owner_id}
        )
        row = result.one_or_none()
        if row is None:
            raise errors.NotFound("QR code not found", reason="QR_CODE_NOT_FOUND")
        return _record(row)

    async def get_many(
        self, owner_id: uuid.UUID, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, QrCodeRecord]:
        """Return the owner's codes among ``ids``, keyed by id."""
        if not ids:
            return {}
        result = await self._conn.execute(
            sa.select(qr_codes).where(
                qr_codes.c.owner_id == owner_id, qr_codes.c.id.in_(list(ids))
            )
        )
        return {row.id: _record(row) for row in result}

    def _filtered(
        self, statement: sa.Select[Any], owner_id: uuid.UUID, query: ListQuery
    ) -> sa.Select[Any]:
        statement = statement.where(qr_codes.c.owner_id == owner_id)
        if query.kind is not None:
            statement = statement.where(qr_codes.c.kind == query.kind)
        if query.title_contains is not None:
            statement = statement.where(
                qr_codes.c.title.icontains(query.title_contains, autoescape=True)
            )
        return statement

    async def list_for_owner(
        self, owner_id: uuid.UUID, query: ListQuery
    ) -> list[QrCodeRecord]:
        """Return up to ``query.limit`` codes after the keyset ``query.after``."""
        if query.order_field not in ORDER_FIELDS:
            raise ValueError(f"cannot order by {query.order_field}")
        column = qr_codes.c[query.order_field]
        statement = self._filtered(sa.select(qr_codes), owner_id, query)
        if query.after is not None:
            key = sa.tuple_(column, qr_codes.c.id)
            bound = sa.tuple_(sa.literal(query.after[0]), sa.literal(query.after[1]))
            statement = statement.where(
                key < bound if query.descending else key > bound
            )
        if query.descending:
            statement = statement.order_by(column.desc(), qr_codes.c.id.desc())
        else:
            statement = statement.order_by(column.asc(), qr_codes.c.id.asc())
        result = await self._conn.execute(statement.limit(query.limit))
        return [_record(row) for row in result]

    async def count_for_owner(self, owner_id: uuid.UUID, query: ListQuery) -> int:
        """Count the owner's codes that match the query's filter."""
        statement = self._filtered(
            sa.select(sa.func.count()).select_from(qr_codes), owner_id, query
        )
        return int((await self._conn.execute(statement)).scalar_one())

    async def iter_ids_for_owner(self, owner_id: uuid.UUID) -> list[uuid.UUID]:
        """Every code id of the owner, newest first."""
        result = await self._conn.execute(
            sa.select(qr_codes.c.id)
            .where(qr_codes.c.owner_id == owner_id)
            .order_by(qr_codes.c.create_time.desc(), qr_codes.c.id.desc())
        )
        return list(result.scalars())

    async def update(self, record: QrCodeRecord, changes: NewQrCode) -> QrCodeRecord:
        """Store ``changes`` over ``record`` if nobody changed it meanwhile.

        Raises:
            errors.EtagMismatch: the stored version moved on.
            errors.NotFound: the code was deleted meanwhile.
        """
        statement = (
            sa.update(qr_codes)
            .where(
                qr_codes.c.id == record.id,
                qr_codes.c.owner_id == record.owner_id,
                qr_codes.c.version == record.version,
            )
            .values(
                title=changes.title,
                kind=changes.kind,
                content=changes.content,
                style=changes.style,
                encoded_text=changes.encoded_text,
                symbol_version=changes.symbol_version,
                version=qr_codes.c.version + 1,
                update_time=sa.func.now(),
            )
            .returning(*qr_codes.c)
        )
        row = (await self._conn.execute(statement)).one_or_none()
        if row is None:
            await self.get(record.owner_id, record.id)
            raise errors.EtagMismatch("the QR code changed; fetch it and try again")
        return _record(row)

    async def delete(
        self, owner_id: uuid.UUID, code_id: uuid.UUID, *, version: int | None
    ) -> None:
        """Remove one code; with ``version``, only if it is still that version.

        Raises:
            errors.NotFound: no such code for this owner.
            errors.EtagMismatch: the code is at another version.
        """
        condition = sa.and_(qr_codes.c.id == code_id, qr_codes.c.owner_id == owner_id)
        if version is not None:
            condition = sa.and_(condition, qr_codes.c.version == version)
        deleted = await self._conn.execute(
            sa.delete(qr_codes).where(condition).returning(qr_codes.c.id)
        )
        if deleted.first() is not None:
            return
        await self.get(owner_id, code_id)
        raise errors.EtagMismatch("the QR code changed; fetch it and try again")
