"""The stored form of a run's headers (``fluxo.stores._headers``): JSON text, read back checked.

What each store does with it is in ``tests/stores/conformance``; here, the edges
no backend reaches easily: what decoding accepts, and that it never raises.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluxo.stores import _headers


def test_no_headers_are_not_stored() -> None:
    assert _headers.encode(None) is None
    assert _headers.encode({}) is None
    assert _headers.decode(None) == ({}, None)


def test_headers_are_compact_json_that_keeps_non_ascii_text() -> None:
    stored = _headers.encode({"traceparent": "00-a", "baggage": "city=東京"})

    assert stored == '{"traceparent":"00-a","baggage":"city=東京"}'
    assert _headers.decode(stored) == ({"traceparent": "00-a", "baggage": "city=東京"}, None)
    assert _headers.decode(stored.encode()) == _headers.decode(stored)  # as Redis returns it


@given(st.dictionaries(st.text(), st.text(), max_size=5))
def test_any_mapping_of_text_round_trips(headers: dict[str, str]) -> None:
    assert _headers.decode(_headers.encode(headers)) == (headers, None)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "null",
        "[]",
        '"text"',
        '{"a": 1}',
        '{"a": null}',
        '{"a": {"b": "c"}}',
        "{not json",
        "[" * 100_000,  # deeper than the parser goes
        b'{"a": "\xff"}',
        7,
        {"a": "b"},
    ],
    ids=[
        "empty",
        "null",
        "array",
        "string",
        "number-value",
        "null-value",
        "nested",
        "not-json",
        "too-deep",
        "not-utf8",
        "a-number",
        "a-document",
    ],
)
def test_anything_but_a_json_object_of_text_is_damage_never_an_exception(raw: Any) -> None:
    headers, damage = _headers.decode(raw)

    assert headers == {}
    assert damage is not None
    assert damage.startswith("its stored headers ")
    assert damage.endswith(" are not a JSON object of text")
    assert len(damage) < 200  # a long value is shown cut short
