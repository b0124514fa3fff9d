"""QR code logic behind QrCodeService, free of gRPC.

Validates definitions, derives the encoded text and symbol version, stores
and lists codes through the repository, and renders them in the server's
blocking pool through the render cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from google.protobuf import json_format

from qrsys_grpc import errors
from qrsys_grpc.blocking import BlockingRunner
from qrsys_grpc.qr import content as content_kinds
from qrsys_grpc.qr import listing, render
from qrsys_grpc.repository.database import Database
from qrsys_grpc.repository.qr_codes import (
    ListQuery,
    NewQrCode,
    QrCodeRecord,
    QrCodeRepository,
    Replay,
)
from qrsys_grpc.text import check_no_controls, is_blank
from qrsys_grpc.v1 import qr_code_pb2

logger = logging.getLogger(__name__)

MAX_TITLE_LENGTH = 200
MAX_REQUEST_ID_LENGTH = 100
MAX_BATCH_COUNT = 1000
MAX_EXPORT_IDS = 1000
MAX_BATCH_NUMBER = 10**15
MAX_BATCH_CONTENT_BYTES = 256 * 1024
BATCH_CHUNK = 50
NUMBER_PLACEHOLDER = "{n}"
# Exactly the form etag() writes: a version without leading zeros.
_ETAG = re.compile(r'W/"(?P<version>[1-9][0-9]{0,9})-(?P<tag>[0-9a-f]{8})"')
MAX_VERSION = 2**31 - 1
"""The largest version the ``version`` column holds."""
# The one spelling of a UUID that qrsys writes, in either case.
_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
EXPORT_PAGE = 10

UPDATABLE_PATHS = frozenset(
    {
        "title",
        "content",
        "style",
        "style.error_correction",
        "style.micro",
        "style.dark_color",
        "style.light_color",
        "style.border",
    }
)


@dataclass(frozen=True)
class Page:
    """One page of a listing."""

    codes: list[QrCodeRecord]
    next_page_token: str
    total_size: int
    token_after: Callable[[QrCodeRecord], str]
    """The page token that continues the listing after one of ``codes``,
    for a caller that serves fewer of them than the page holds."""


@dataclass(frozen=True)
class RenderOptions:
    """How to draw: format, module size and quiet zone (None: the style's)."""

    fmt: render.ImageFormat
    scale: int
    border: int | None


@dataclass(frozen=True)
class Rendered:
    """A drawn code."""

    content_type: str
    data: bytes
    encoded_text: str


def parse_id(value: str, *, field: str = "id") -> uuid.UUID:
    """A code id from a request.

    Raises:
        errors.InvalidArgument: empty or not a UUID.
    """
    if not value:
        raise errors.InvalidArgument.field(field, "is required")
    if _UUID.fullmatch(value) is None:
        raise errors.InvalidArgument.field(
            field, "must be a UUID as qrsys writes it (8-4-4-4-12 hex digits)"
        )
    return uuid.UUID(value)


def _code_tag(code_id: uuid.UUID) -> str:
    """A short digest of a code's id, so that an etag names its code."""
    return hashlib.sha256(code_id.bytes).hexdigest()[:8]


def etag(record: QrCodeRecord) -> str:
    """The etag of a stored version of a code."""
    return f'W/"{record.version}-{_code_tag(record.id)}"'


def parse_etag(value: str, *, field: str, code_id: uuid.UUID) -> int:
    """The version an etag of ``code_id`` names.

    Raises:
        errors.InvalidArgument: not an etag qrsys issued.
        errors.EtagMismatch: an etag of another code.
    """
    match = _ETAG.fullmatch(value)
    if match is None or int(match["version"]) > MAX_VERSION:
        raise errors.InvalidArgument.field(
            field, "is not an etag returned by qrsys; send it back unchanged"
        )
    if match["tag"] != _code_tag(code_id):
        raise errors.EtagMismatch("the etag belongs to another QR code")
    return int(match["version"])


def replayed(replay: Replay) -> list[QrCodeRecord]:
    """The answer to a retried create: exactly what the first call returned.

    Raises:
        errors.NotFound: some of its codes were deleted since, so that
            answer cannot be given again.
    """
    if replay.complete:
        return replay.records
    missing = replay.created - len(replay.records)
    raise errors.NotFound(
        "the QR code created under this request_id was deleted"
        if replay.created == 1
        else f"{missing} of the {replay.created} QR codes created under this "
        "request_id were deleted",
        reason="QR_CODE_NOT_FOUND",
    )


def check_title(title: str, *, field: str) -> str:
    """Return ``title`` if it is 1 to 200 characters without control characters.

    Raises:
        errors.InvalidArgument: otherwise.
    """
    if is_blank(title):
        raise errors.InvalidArgument.field(
            field, "is required: at least one visible character"
        )
    if len(title) > MAX_TITLE_LENGTH:
        raise errors.InvalidArgument.field(
            field, f"must be at most {MAX_TITLE_LENGTH} characters"
        )
    check_no_controls(title, field)
    return title


def check_request_id(request_id: str) -> str:
    """Return ``request_id`` if it is an acceptable idempotency key.

    Raises:
        errors.InvalidArgument: too long or not printable.
    """
    if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        raise errors.InvalidArgument.field(
            "request_id",
            f"must be at most {MAX_REQUEST_ID_LENGTH} printable characters",
        )
    return request_id


def render_options(fmt: int, scale: int, border: int | None) -> RenderOptions:
    """Validate a render request's format, scale and border.

    Raises:
        errors.InvalidArgument: an unknown format, or scale or border out of
            range.
    """
    image_format = render.ImageFormat.from_proto(fmt)
    if scale == 0:
        scale = render.DEFAULT_SCALE
    if not render.MIN_SCALE <= scale <= render.MAX_SCALE:
        raise errors.InvalidArgument.field(
            "scale", f"must be between {render.MIN_SCALE} and {render.MAX_SCALE}"
        )
    if border is not None and not render.MIN_BORDER <= border <= render.MAX_BORDER:
        raise errors.InvalidArgument.field(
            "border",
            f"must be between {render.MIN_BORDER} and {render.MAX_BORDER}",
        )
    return RenderOptions(image_format, scale, border)


@dataclass(frozen=True)
class Definition:
    """A validated code definition with its symbol, ready to store."""

    title: str
    kind: str
    content: qr_code_pb2.QrContent
    style: qr_code_pb2.QrStyle
    symbol: render.Symbol

    def to_new(self) -> NewQrCode:
        """The repository's form of this definition."""
        return NewQrCode(
            title=self.title,
            kind=self.kind,
            content=json_format.MessageToDict(
                self.content, preserving_proto_field_name=True
            ),
            style=json_format.MessageToDict(
                self.style, preserving_proto_field_name=True
            ),
            encoded_text=self.symbol.encoded_text,
            symbol_version=self.symbol.version,
        )


def define(
    title: str,
    content: qr_code_pb2.QrContent,
    style: qr_code_pb2.QrStyle,
    *,
    prefix: str,
) -> Definition:
    """Validate a definition and build its symbol. Blocking (segno).

    Raises:
        errors.InvalidArgument: with field paths under ``prefix``.
    """
    violations: list[errors.FieldViolation] = []
    try:
        check_title(title, field=f"{prefix}title")
    except errors.InvalidArgument as exc:
        violations.extend(exc.violations)
    kind = ""
    text = ""
    try:
        kind = content_kinds.content_kind(content)
        text = content_kinds.encode_content(content)
    except errors.InvalidArgument as exc:
        violations.extend(exc.prefixed(f"{prefix}content").violations)
    parsed_style: render.Style | None = None
    try:
        parsed_style = render.style_from_proto(style, kind=kind)
    except errors.InvalidArgument as exc:
        violations.extend(exc.prefixed(f"{prefix}style").violations)
    if violations:
        raise errors.InvalidArgument(violations)
    assert parsed_style is not None

    try:
        symbol = render.make_symbol(text, parsed_style)
    except errors.InvalidArgument as exc:
        raise exc.prefixed(f"{prefix}content") from None
    return Definition(title, kind, content, style, symbol)


def define_numbered(template: qr_code_pb2.QrCode, numbers: range) -> list[Definition]:
    """The definitions of a batch's numbered codes. Blocking (segno).

    Raises:
        errors.InvalidArgument: with field paths under ``template.``.
    """
    return [
        define(
            template.title.replace(NUMBER_PLACEHOLDER, str(number)),
            numbered(template.content, number),
            template.style,
            prefix="template.",
        )
        for number in numbers
    ]


def stored_content(record: QrCodeRecord) -> qr_code_pb2.QrContent:
    """The protobuf form of a stored code's content.

    The stored dict is ``MessageToDict`` output with proto field names, which
    the message constructor takes directly, at a fraction of ``ParseDict``'s
    cost on this hot path.
    """
    return qr_code_pb2.QrContent(**record.content)


def stored_style(record: QrCodeRecord) -> qr_code_pb2.QrStyle:
    """The protobuf form of a stored code's style (see ``stored_content``)."""
    return qr_code_pb2.QrStyle(**record.style)


def numbered(content: qr_code_pb2.QrContent, number: int) -> qr_code_pb2.QrContent:
    """A copy of ``content`` with ``{n}`` in its text or url replaced."""
    copy = qr_code_pb2.QrContent()
    copy.CopyFrom(content)
    kind = copy.WhichOneof("kind")
    if kind == "text":
        copy.text = copy.text.replace(NUMBER_PLACEHOLDER, str(number))
    elif kind == "url":
        copy.url = copy.url.replace(NUMBER_PLACEHOLDER, str(number))
    return copy


def merge(
    record: QrCodeRecord, patch: qr_code_pb2.QrCode, paths: Sequence[str]
) -> tuple[str, qr_code_pb2.QrContent, qr_code_pb2.QrStyle]:
    """Apply the masked fields of ``patch`` to a stored code.

    Raises:
        errors.InvalidArgument: an empty mask or an unknown path, on field
            ``update_mask``.
    """
    if not paths:
        raise errors.InvalidArgument.field(
            "update_mask",
            "name the fields to change: " + ", ".join(sorted(UPDATABLE_PATHS)),
        )
    unknown = [path for path in paths if path not in UPDATABLE_PATHS]
    if unknown:
        named = ", ".join(repr(path[:100]) for path in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise errors.InvalidArgument.field(
            "update_mask",
            f"cannot update {named}{more}; updatable: "
            + ", ".join(sorted(UPDATABLE_PATHS)),
        )
    title = record.title
    content = stored_content(record)
    style = stored_style(record)
    for path in paths:
        if path == "title":
            title = patch.title
        elif path == "content":
            content = patch.content
        elif path == "style":
            style = patch.style
        else:
            name = path.removeprefix("style.")
            if name == "border" and not patch.style.HasField("border"):
                style.ClearField("border")
            else:
                setattr(style, name, getattr(patch.style, name))
    return title, content, style


class QrCodes:
    """Creates, lists, changes, deletes and renders the caller's QR codes."""

    def __init__(
        self, database: Database, blocking: BlockingRunner, cache: render.RenderCache
    ) -> None:
        self._db = database
        self._blocking = blocking
        self._cache = cache

    async def create(
        self, owner_id: uuid.UUID, code: qr_code_pb2.QrCode, request_id: str
    ) -> QrCodeRecord:
        """Store one code; a repeated ``request_id`` returns the first result.

        Raises:
            errors.InvalidArgument: the definition is malformed.
        """
        check_request_id(request_id)
        definition = await self._blocking.run_cpu(
            define, code.title, code.content, code.style, prefix="qr_code."
        )
        async with self._owner_kept(), self._db.transaction() as conn:
            records, replay = await QrCodeRepository(conn).create_many(
                owner_id,
                [definition.to_new()],
                operation="create",
                request_id=request_id,
            )
        if replay is not None:
            return replayed(replay)[0]
        logger.info("created QR code %s", records[0].id)
        return records[0]

    @staticmethod
    @contextlib.asynccontextmanager
    async def _owner_kept() -> AsyncIterator[None]:
        """A code whose owner was deleted while the call ran is refused as
        the deleted account's session is: the caller must sign in again.

        Raises:
            errors.Unauthenticated: the owner's account is gone.
        """
        try:
            yield
        except errors.ReferenceGone as exc:
            raise errors.Unauthenticated(
                "the account was deleted; sign in again", reason="SESSION_REVOKED"
            ) from exc

    async def batch_create(
        self,
        owner_id: uuid.UUID,
        template: qr_code_pb2.QrCode,
        first_number: int,
        count: int,
        request_id: str,
    ) -> list[QrCodeRecord]:
        """Store ``count`` numbered codes from a template, all or none.

        Raises:
            errors.InvalidArgument: a bad count, number or template.
        """
        check_request_id(request_id)
        if not 1 <= count <= MAX_BATCH_COUNT:
            raise errors.InvalidArgument.field(
                "count", f"must be between 1 and {MAX_BATCH_COUNT}"
            )
        last = first_number + count - 1
        if abs(first_number) > MAX_BATCH_NUMBER or abs(last) > MAX_BATCH_NUMBER:
            raise errors.InvalidArgument.field(
                "first_number", f"numbers must stay within ±{MAX_BATCH_NUMBER}"
            )

        if request_id:
            async with self._db.read() as conn:
                earlier = await QrCodeRepository(conn).replay(
                    owner_id, "batch_create", request_id
                )
            if earlier is not None:
                return replayed(earlier)

        # The first code tells what the batch will cost; the rest are built a
        # chunk at a time, so a cancelled call stops after the current chunk.
        definitions = await self._blocking.run_cpu(
            define_numbered, template, range(first_number, first_number + 1)
        )
        size = len(definitions[0].symbol.encoded_text.encode())
        if size * count > MAX_BATCH_CONTENT_BYTES:
            raise errors.InvalidArgument.field(
                "count",
                f"{count} codes of about {size} bytes each exceed the "
                f"{MAX_BATCH_CONTENT_BYTES} bytes of content one batch may hold; "
                f"send at most {max(1, MAX_BATCH_CONTENT_BYTES // size)} per batch",
            )
        for start in range(first_number + 1, last + 1, BATCH_CHUNK):
            definitions += await self._blocking.run_cpu(
                define_numbered,
                template,
                range(start, min(start + BATCH_CHUNK, last + 1)),
            )
        async with self._owner_kept(), self._db.transaction() as conn:
            records, replay = await QrCodeRepository(conn).create_many(
                owner_id,
                [definition.to_new() for definition in definitions],
                operation="batch_create",
                request_id=request_id,
            )
        if replay is not None:
            return replayed(replay)
        logger.info("created a batch of %d QR codes", len(records))
        return records

    async def get(self, owner_id: uuid.UUID, code_id: str) -> QrCodeRecord:
        """One of the owner's codes.

        Raises:
            errors.InvalidArgument: a malformed id.
            errors.NotFound: no such code of this owner.
        """
        parsed = parse_id(code_id)
        async with self._db.read() as conn:
            return await QrCodeRepository(conn).get(owner_id, parsed)

    async def list(
        self,
        owner_id: uuid.UUID,
        *,
        size: int,
        page_token: str,
        filter_text: str,
        order_by: str,
    ) -> Page:
        """A page of the owner's codes.

        Raises:
            errors.InvalidArgument: a bad size, token, filter or order.
        """
        limit = listing.page_size(size)
        query = listing.parse_filter(filter_text)
        order = listing.parse_order_by(order_by)
        after = (
            listing.decode_page_token(page_token, owner_id, query, order)
            if page_token
            else None
        )
        repo_query = ListQuery(
            kind=query.kind,
            title_contains=query.title_contains,
            order_field=order.field,
            descending=order.descending,
            after=after,
            limit=limit + 1,
        )
        async with self._db.read() as conn:
            repository = QrCodeRepository(conn)
            codes = await repository.list_for_owner(owner_id, repo_query)
            total = await repository.count_for_owner(owner_id, repo_query)

        def token_after(record: QrCodeRecord) -> str:
            return listing.encode_page_token(
                owner_id, query, order, getattr(record, order.field), record.id
            )

        next_token = ""
        if len(codes) > limit:
            codes = codes[:limit]
            next_token = token_after(codes[-1])
        return Page(codes, next_token, total, token_after)

    async def update(
        self, owner_id: uuid.UUID, patch: qr_code_pb2.QrCode, paths: Sequence[str]
    ) -> QrCodeRecord:
        """Change the masked fields of a code, if its etag still matches.

        Raises:
            errors.InvalidArgument: a bad id, mask or value.
            errors.NotFound: no such code of this owner.
            errors.EtagMismatch: the code changed since the etag was read.
        """
        code_id = parse_id(patch.id, field="qr_code.id")
        expected = (
            parse_etag(patch.etag, field="qr_code.etag", code_id=code_id)
            if patch.etag
            else None
        )
        async with self._db.read() as conn:
            record = await QrCodeRepository(conn).get(owner_id, code_id)
        if expected is not None and expected != record.version:
            raise errors.EtagMismatch("the QR code changed; fetch it and try again")
        title, content, style = merge(record, patch, paths)
        definition = await self._blocking.run_cpu(
            define, title, content, style, prefix="qr_code."
        )
        async with self._db.transaction() as conn:
            updated = await QrCodeRepository(conn).update(record, definition.to_new())
        logger.info("updated QR code %s", updated.id)
        return updated

    async def delete(self, owner_id: uuid.UUID, code_id: str, etag_value: str) -> None:
        """Remove a code; with an etag, only if it still matches.

        Raises:
            errors.InvalidArgument: a malformed id or etag.
            errors.NotFound: no such code of this owner.
            errors.EtagMismatch: the etag is stale.
        """
        parsed = parse_id(code_id)
        version = (
            parse_etag(etag_value, field="etag", code_id=parsed) if etag_value else None
        )
        async with self._db.transaction() as conn:
            await QrCodeRepository(conn).delete(owner_id, parsed, version=version)
        logger.info("deleted QR code %s", parsed)

    async def _draw(
        self,
        text: str,
        style: qr_code_pb2.QrStyle,
        kind: str,
        options: RenderOptions,
    ) -> Rendered:
        parsed_style = render.style_from_proto(style, kind=kind)
        key = (text, parsed_style, options.fmt, options.scale, options.border)
        cached = self._cache.lookup(*key)
        if cached is None:
            cached = await self._blocking.run_cpu(render.draw, *key)
            self._cache.store(*key, symbol=cached[0], data=cached[1])
        symbol, data = cached
        return Rendered(options.fmt.content_type, data, symbol.encoded_text)

    async def render(
        self, owner_id: uuid.UUID, code_id: str, options: RenderOptions
    ) -> Rendered:
        """Draw a stored code.

        Raises:
            errors.InvalidArgument: a malformed id.
            errors.NotFound: no such code of this owner.
        """
        record = await self.get(owner_id, code_id)
        return await self._draw(
            record.encoded_text, stored_style(record), record.kind, options
        )

    async def preview(
        self,
        content: qr_code_pb2.QrContent,
        style: qr_code_pb2.QrStyle,
        options: RenderOptions,
    ) -> Rendered:
        """Draw a code from a definition without storing it.

        Raises:
            errors.InvalidArgument: the definition is malformed.
        """
        definition = await self._blocking.run_cpu(
            define, "preview", content, style, prefix=""
        )
        return await self._draw(
            definition.symbol.encoded_text, style, definition.kind, options
        )

    async def export(
        self, owner_id: uuid.UUID, ids: Sequence[str], options: RenderOptions
    ) -> AsyncIterator[tuple[QrCodeRecord, Rendered]]:
        """Draw many codes: those named, or all the owner's codes, newest first.

        Raises:
            errors.InvalidArgument: too many or malformed ids.
            errors.NotFound: a named code does not exist for this owner.
        """
        if len(ids) > MAX_EXPORT_IDS:
            raise errors.InvalidArgument.field(
                "ids", f"must name at most {MAX_EXPORT_IDS} codes"
            )
        wanted = [parse_id(value, field=f"ids[{i}]") for i, value in enumerate(ids)]
        async with self._db.read() as conn:
            repository = QrCodeRepository(conn)
            if not wanted:
                wanted = await repository.iter_ids_for_owner(owner_id)
            else:
                found = await repository.get_many(owner_id, wanted)
                missing = [str(code_id) for code_id in wanted if code_id not in found]
                if missing:
                    raise errors.NotFound(
                        f"QR codes not found: {', '.join(missing[:10])}",
                        reason="QR_CODE_NOT_FOUND",
                    )
        for start in range(0, len(wanted), EXPORT_PAGE):
            chunk = wanted[start : start + EXPORT_PAGE]
            async with self._db.read() as conn:
                records = await QrCodeRepository(conn).get_many(owner_id, chunk)
            for code_id in chunk:
                record = records.get(code_id)
                if record is None:
                    continue
                yield (
                    record,
                    await self._draw(
                        record.encoded_text, stored_style(record), record.kind, options
                    ),
                )
