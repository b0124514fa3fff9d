"""The control-character check every user-supplied string passes."""

from __future__ import annotations

import pytest

from qrsys_grpc import errors
from qrsys_grpc.text import check_no_controls


@pytest.mark.parametrize(
    "value",
    [
        "a\x00b",
        "tab\there",
        "line\nbreak",
        "esc\x1b[31m",
        "del\x7f",
        "nel\x85",
        "csi\x9b",
    ],
    ids=["nul", "tab", "lf", "esc", "del", "c1-nel", "c1-csi"],
)
def test_single_line_text_refuses_every_control_character(value: str) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        check_no_controls(value, "title")
    assert caught.value.violations[0].field == "title"
    assert "U+" in caught.value.violations[0].description


@pytest.mark.parametrize(
    "value",
    [
        "Стіл 7",
        "🍕 menu",
        "👨‍👩‍👧 family",
        "McDonald's",
        "x'); DROP TABLE qr_codes; --",
    ],
    ids=["cyrillic", "emoji", "zwj-sequence", "apostrophe", "sql"],
)
def test_ordinary_text_passes(value: str) -> None:
    check_no_controls(value, "title")


def test_multiline_text_keeps_tab_and_line_breaks_but_not_other_controls() -> None:
    check_no_controls("a\tb\r\nc", "text", multiline=True)
    with pytest.raises(errors.InvalidArgument, match=r"U\+0085"):
        check_no_controls("a\x85b", "text", multiline=True)
