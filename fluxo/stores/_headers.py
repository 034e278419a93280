"""How the SQL, Redis and MongoDB stores keep a run's headers: the text of one JSON object.

A run's headers (``RunInfo.headers``) are written once, when the run is created,
as compact JSON (UTF-8 text, not escaped to ASCII), or not at all when there are
none. Text keeps every name as it is, dots and dollar signs included, on every
backend. Read back, only a JSON object whose values are all text is headers;
anything else is damage, reported in ``RunInfo.damage`` like any other field of
the run's record that does not parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping


def encode(headers: Mapping[str, str] | None) -> str | None:
    """The stored form of ``headers``: JSON text, or ``None`` when there are none."""
    if not headers:
        return None
    return json.dumps(dict(headers), ensure_ascii=False, separators=(",", ":"))


def decode(raw: object) -> tuple[dict[str, str], str | None]:
    """Read stored headers: the mapping and ``None``, or ``{}`` and what is damaged.

    ``raw`` is what the backend holds: text, UTF-8 bytes, or ``None`` for none.
    Never raises: what does not parse is described in the second item, for
    ``RunInfo.damage``.
    """
    if raw is None:
        return {}, None
    value: object = None
    try:
        text = bytes(raw).decode("utf-8") if isinstance(raw, (bytes, memoryview)) else raw
        if isinstance(text, str):
            value = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        value = None
    if isinstance(value, dict) and all(isinstance(item, str) for item in value.values()):
        return value, None
    shown = raw[:60] if isinstance(raw, (str, bytes)) else raw
    return {}, f"its stored headers {shown!r} are not a JSON object of text"
