"""The check every user-supplied string passes: no control characters.

Control characters (Unicode category Cc: C0, DEL and C1, such as NUL, ESC or
CSI) have no place in names, titles or QR text; multi-line fields may still
hold tab, line feed and carriage return.
"""

from __future__ import annotations

import unicodedata

from qrsys_grpc import errors

LINE_BREAKS = frozenset("\t\n\r")


def check_no_controls(value: str, field: str, *, multiline: bool = False) -> None:
    """Reject ``value`` if it holds a control character.

    Raises:
        errors.InvalidArgument: on ``field``, naming the character and where.
    """
    for position, char in enumerate(value):
        if unicodedata.category(char) != "Cc":
            continue
        if multiline and char in LINE_BREAKS:
            continue
        allowed = " other than tab, line feed and carriage return" if multiline else ""
        raise errors.InvalidArgument.field(
            field,
            f"must not contain control characters{allowed}: found "
            f"U+{ord(char):04X} at position {position}",
        )
