"""The control-character check every user-supplied string passes."""

from __future__ import annotations

import pytest

from qrsys_grpc import errors
from qrsys_grpc.text import check_no_controls, is_blank


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


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"], ids=["line", "paragraph"])
def test_a_single_line_field_refuses_line_and_paragraph_separators(
    separator: str,
) -> None:
    with pytest.raises(errors.InvalidArgument, match="must be one line"):
        check_no_controls(f"Trattoria{separator}Roma", "display_name")
    check_no_controls(f"first{separator}second", "text", multiline=True)


@pytest.mark.parametrize(
    ("value", "blank"),
    [
        ("", True),
        ("   ", True),
        ("\u200b", True),
        ("\u200b\u00a0\u2060", True),
        ("\ufeff", True),
        ("\u3164", True),
        ("\u115f\u1160", True),
        ("\u034f\ufe0f", True),
        ("\u17b4\u17b5", True),
        ("\u2800", True),
        ("\u1cbb", True),
        ("Table 7", False),
        ("\u200bx", False),
        ("👨\u200d🍳", False),
    ],
    ids=[
        "empty",
        "spaces",
        "zwsp",
        "zwsp-nbsp-wj",
        "bom",
        "hangul-filler",
        "hangul-jamo-fillers",
        "grapheme-joiner-and-selector",
        "khmer-inherent-vowels",
        "braille-blank",
        "unassigned",
        "words",
        "zwsp-x",
        "emoji",
    ],
)
def test_blank_means_nothing_to_see(value: str, blank: bool) -> None:
    assert is_blank(value) is blank
