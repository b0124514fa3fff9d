"""ListQrCodes' query language: filter, order_by, page sizes and page tokens.

Pure functions; the repository turns the parsed query into SQL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qrsys_grpc import errors
from qrsys_grpc.text import check_no_controls

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_FILTER_LENGTH = 1000
MAX_PAGE_TOKEN_LENGTH = 2000

CONTENT_KINDS = ("text", "url", "wifi", "contact", "email", "sms", "geo", "epc")
ORDER_FIELDS = ("create_time", "update_time", "title")
TIME_FIELDS = ("create_time", "update_time")

_STRING = r'"((?:[^"\\]|\\.)*)"'
_TERM = re.compile(
    rf"\s*(?:(?P<title>title)\s*:\s*{_STRING}|(?P<kind>kind)\s*=\s*{_STRING})\s*",
    re.IGNORECASE,
)
_AND = re.compile(r"(?<=\s)AND\s+")
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True)
class Filter:
    """What ListQrCodes' filter asks for."""

    title_contains: str | None = None
    kind: str | None = None


@dataclass(frozen=True)
class Order:
    """How ListQrCodes sorts: a field and a direction."""

    field: str = "create_time"
    descending: bool = True


def parse_filter(text: str) -> Filter:
    """Parse ``title:"words"`` and ``kind = "url"`` terms joined by AND.

    Raises:
        errors.InvalidArgument: on field ``filter``.
    """
    if len(text) > MAX_FILTER_LENGTH:
        raise errors.InvalidArgument.field(
            "filter", f"must be at most {MAX_FILTER_LENGTH} characters"
        )
    if not text.strip():
        return Filter()

    title: str | None = None
    kind: str | None = None
    position = 0
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise errors.InvalidArgument.field(
                "filter",
                'expected `title:"words"` or `kind = "url"` terms joined by AND, '
                f"at character {position + 1}",
            )
        if match.group("title"):
            if title is not None:
                raise errors.InvalidArgument.field("filter", "title is given twice")
            title = _ESCAPE.sub(r"\1", match.group(2))
            check_no_controls(title, "filter")
        else:
            if kind is not None:
                raise errors.InvalidArgument.field("filter", "kind is given twice")
            kind = _ESCAPE.sub(r"\1", match.group(4))
            if kind not in CONTENT_KINDS:
                raise errors.InvalidArgument.field(
                    "filter", f"kind must be one of {', '.join(CONTENT_KINDS)}"
                )
        position = match.end()
        if position == len(text):
            return Filter(title_contains=title, kind=kind)
        joint = _AND.match(text, position)
        if joint is None:
            raise errors.InvalidArgument.field(
                "filter", f"expected AND at character {position + 1}"
            )
        position = joint.end()


def parse_order_by(text: str) -> Order:
    """Parse ``field`` or ``field desc`` (or ``asc``); empty means the default.

    Raises:
        errors.InvalidArgument: on field ``order_by``.
    """
    words = text.split()
    if not words:
        return Order()
    if (
        len(words) > 2
        or words[0] not in ORDER_FIELDS
        or (len(words) == 2 and words[1].lower() not in ("asc", "desc"))
    ):
        raise errors.InvalidArgument.field(
            "order_by",
            f"must be one of {', '.join(ORDER_FIELDS)}, optionally followed by desc",
        )
    return Order(
        field=words[0], descending=len(words) == 2 and words[1].lower() == "desc"
    )


def page_size(requested: int) -> int:
    """The page size to use: 0 means the default, large values are capped.

    Raises:
        errors.InvalidArgument: a negative size, on field ``page_size``.
    """
    if requested < 0:
        raise errors.InvalidArgument.field("page_size", "must not be negative")
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    return min(requested, MAX_PAGE_SIZE)


def _fingerprint(owner_id: uuid.UUID, query: Filter, order: Order) -> str:
    material = json.dumps(
        [str(owner_id), query.title_contains, query.kind, order.field, order.descending]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def encode_page_token(
    owner_id: uuid.UUID,
    query: Filter,
    order: Order,
    last_value: Any,
    last_id: uuid.UUID,
) -> str:
    """A token that resumes the listing after ``(last_value, last_id)``."""
    value = last_value.isoformat() if isinstance(last_value, datetime) else last_value
    payload = json.dumps(
        {"f": _fingerprint(owner_id, query, order), "v": value, "i": str(last_id)},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_page_token(
    token: str, owner_id: uuid.UUID, query: Filter, order: Order
) -> tuple[Any, uuid.UUID]:
    """The keyset position a token stands for.

    Raises:
        errors.InvalidArgument: on field ``page_token``: malformed, or made
            for another user or another filter or order.
    """
    invalid = errors.InvalidArgument.field(
        "page_token",
        "is not a page token of this listing; pass next_page_token unchanged, "
        "with the same filter and order_by",
    )
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise invalid
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise invalid from exc
    if not isinstance(payload, dict):
        raise invalid
    fingerprint, value, last = payload.get("f"), payload.get("v"), payload.get("i")
    if not (
        isinstance(fingerprint, str)
        and isinstance(value, str)
        and isinstance(last, str)
    ):
        raise invalid
    if fingerprint != _fingerprint(owner_id, query, order) or "\x00" in value:
        raise invalid
    try:
        value.encode("utf-8")  # a lone surrogate is no text PostgreSQL holds
    except UnicodeEncodeError as exc:
        raise invalid from exc
    try:
        last_id = uuid.UUID(last)
        position: Any = (
            datetime.fromisoformat(value) if order.field in TIME_FIELDS else value
        )
    except ValueError as exc:
        raise invalid from exc
    if isinstance(position, datetime) and position.tzinfo is None:
        raise invalid
    return position, last_id
