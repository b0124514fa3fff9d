"""Which x-request-id values a call keeps, and which it replaces."""

from __future__ import annotations

import re

import pytest

from qrsys_grpc.interceptors import _request_id

GENERATED = re.compile("[0-9a-f]{32}")


@pytest.mark.parametrize(
    "sent",
    ["abc-123", "trace:7/2@svc", "A" * 128, "b64+padding=="],
    ids=["simple", "punctuation", "longest", "base64"],
)
def test_a_safe_id_is_kept(sent: str) -> None:
    assert _request_id((("x-request-id", sent),)) == sent


@pytest.mark.parametrize(
    "sent",
    ["é", "a b", "A" * 129, "", "line\nbreak", "[x] INFO"],
    ids=["non-ascii", "space", "too-long", "empty", "newline", "brackets"],
)
def test_an_unsafe_id_is_replaced(sent: str) -> None:
    assert GENERATED.fullmatch(_request_id((("x-request-id", sent),)))


def test_no_id_gets_a_new_one_each_time() -> None:
    first, second = _request_id(()), _request_id(())
    assert GENERATED.fullmatch(first)
    assert first != second
