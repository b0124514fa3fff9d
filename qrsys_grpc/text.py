"""The checks user-supplied strings pass: no control characters, and
something to see.

Control characters (Unicode category Cc: C0, DEL and C1, such as NUL, ESC or
CSI) have no place in names, titles or QR text; nor have the line and
paragraph separators U+2028 and U+2029 in a single-line field. Multi-line
fields may hold tab, line feed, carriage return and those separators.
"""

from __future__ import annotations

import unicodedata

import regex

from qrsys_grpc import errors

LINE_BREAKS = frozenset("\t\n\r")
SEPARATORS = frozenset(("Zl", "Zp"))
"""The categories of U+2028 LINE SEPARATOR and U+2029 PARAGRAPH SEPARATOR."""
_BLANK = regex.compile(
    r"[\p{Default_Ignorable_Code_Point}\p{White_Space}\p{Cc}\p{Cf}\p{Cn}"
    r"\N{BRAILLE PATTERN BLANK}]*"
)
"""What draws nothing: spaces, controls and formats, the characters Unicode
says to ignore when they cannot be shown (U+200B, U+3164 HANGUL FILLER,
variation selectors, ...), unassigned code points and the blank braille
cell."""


def check_no_controls(value: str, field: str, *, multiline: bool = False) -> None:
    """Reject ``value`` if it holds a control character.

    Raises:
        errors.InvalidArgument: on ``field``, naming the character and where.
    """
    for position, char in enumerate(value):
        category = unicodedata.category(char)
        if category == "Cc" and not (multiline and char in LINE_BREAKS):
            allowed = (
                " other than tab, line feed and carriage return" if multiline else ""
            )
            raise errors.InvalidArgument.field(
                field,
                f"must not contain control characters{allowed}: found "
                f"U+{ord(char):04X} at position {position}",
            )
        if category in SEPARATORS and not multiline:
            raise errors.InvalidArgument.field(
                field,
                f"must be one line: found the separator U+{ord(char):04X} at "
                f"position {position}",
            )


def is_blank(value: str) -> bool:
    """Whether ``value`` draws nothing: empty, or only spaces and
    invisible characters."""
    return _BLANK.fullmatch(value) is not None
