"""How the Redis store writes runs, events and signals as bytes, and reads them back.

Times are written as ``repr`` of the float, so they read back exactly. A history
item is ``recorded_at NUL kind NUL name-length NUL name flag data``, where the
flag is ``N`` for no data and ``D`` before the data bytes: binary-safe and
byte-exact. A signal is ``id NUL sent_at NUL name-length NUL name payload``.
A run's record is a hash of short field names (``wf``, ``status``, ``ready``...);
its ``headers``, when it has any, are the text of a JSON object (``_headers``).
The queue fields are there only when they differ from the default: ``queue``,
``prio``, ``part`` and, while the run awaits admission, ``start`` and ``qkey`` (its
entry in the queue's index, see ``_queues``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fluxo import _errors, history
from fluxo.stores import _headers


def num(value: float) -> str:
    """A time as text that parses back to exactly the same float."""
    return repr(float(value))


def opt(value: float | None) -> str:
    return "" if value is None else num(value)


def utf8(text: str) -> bytes:
    """``text`` as UTF-8; ``StoreRejectedError`` for text no store can hold (a lone surrogate)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _errors.StoreRejectedError(f"Redis cannot store this text: {exc}") from exc


def encode_event(event: history.Event) -> bytes:
    """``kind NUL len(name) NUL name`` then ``N`` (no data) or ``D`` and the data.

    A history item is these bytes after ``recorded_at NUL`` (see :func:`_split_item`).
    """
    name = utf8(event.name)
    head = b"%s\x00%d\x00%s" % (event.kind.encode("ascii"), len(name), name)
    return head + (b"N" if event.data is None else b"D" + event.data)


def _split_event(raw: bytes, start: int) -> tuple[str, str, bytes | None]:
    """The kind, name and data in :func:`encode_event`'s bytes; ``ValueError`` if damaged."""
    try:
        kind_end = raw.index(b"\x00", start)
        len_end = raw.index(b"\x00", kind_end + 1)
        length = int(raw[kind_end + 1 : len_end])
        end = len_end + 1 + length
        flag = raw[end : end + 1]
        if length < 0 or flag not in (b"N", b"D") or (flag == b"N" and len(raw) > end + 1):
            raise ValueError
        return (
            raw[start:kind_end].decode("ascii"),
            raw[len_end + 1 : end].decode("utf-8"),
            None if flag == b"N" else raw[end + 1 :],
        )
    except ValueError:  # UnicodeDecodeError is one
        raise ValueError(f"its stored bytes do not parse as an event: {raw[:60]!r}") from None


def stamp(now: float) -> bytes:
    """What precedes :func:`encode_event`'s bytes in a history item: ``recorded_at NUL``."""
    return num(now).encode("ascii") + b"\x00"


def _split_item(raw: bytes) -> tuple[float, str, str, bytes | None]:
    """A history item's time, kind, name and data; ``ValueError`` if it is damaged."""
    at_end = raw.find(b"\x00")
    try:
        recorded_at = float(raw[: max(at_end, 0)])
    except ValueError:
        raise ValueError(
            "the item has no recorded time: it is damaged, or was written by an older "
            "layout of the Redis store, which this version does not read"
        ) from None
    return (recorded_at, *_split_event(raw, at_end + 1))


def read_history(
    run_id: str, items: Sequence[bytes]
) -> tuple[tuple[history.Event, ...], list[float]]:
    """A run's history and recording times from its list's items, checked."""
    rows: list[tuple[int, str, str, bytes | None]] = []
    times: list[float] = []
    for seq, raw in enumerate(items):
        try:
            at, kind, name, data = _split_item(raw)
        except ValueError as exc:
            raise _errors.HistoryCorruptError(run_id, seq, str(exc), len(items)) from None
        rows.append((seq, kind, name, data))
        times.append(at)
    return history.read_events(run_id, rows), times


def signal_suffix(name: str, payload: bytes, now: float) -> bytes:
    """What follows ``id NUL`` in a stored signal: ``sent_at NUL len NUL name payload``."""
    encoded = utf8(name)
    return b"%s\x00%d\x00%s%s" % (num(now).encode("ascii"), len(encoded), encoded, payload)


def decode_signal(raw: bytes) -> history.Signal:
    """Rebuild a signal stored as ``id NUL sent_at NUL len NUL name payload``."""
    id_end = raw.index(b"\x00")
    at_end = raw.index(b"\x00", id_end + 1)
    len_end = raw.index(b"\x00", at_end + 1)
    start = len_end + 1
    end = start + int(raw[at_end + 1 : len_end])
    return history.Signal(
        id=int(raw[:id_end]),
        name=raw[start:end].decode("utf-8"),
        payload=raw[end:],
        sent_at=float(raw[id_end + 1 : at_end]),
    )


def fields(flat: Any) -> dict[bytes, bytes]:
    """A hash as HGETALL returns it (a dict, or a flat list from a script)."""
    if isinstance(flat, dict):
        return flat
    items: list[bytes] = list(flat)
    return dict(zip(items[::2], items[1::2], strict=True))


def run_info(run_id: str, record: dict[bytes, bytes]) -> history.RunInfo:
    """The run in its record; a damaged field is named in ``damage``, never raised."""
    status, damage = history.parse_status(record.get(b"status"))
    problems = [] if damage is None else [damage]
    headers, unreadable = _headers.decode(record.get(b"headers"))
    if unreadable is not None:
        problems.append(unreadable)

    def time(key: bytes, required: bool = False) -> float | None:
        value = record.get(key)
        try:
            return None if value is None and not required else float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            problems.append(f"its stored {key.decode()} {value!r} is not a time")
            return None

    def string(key: bytes) -> str | None:
        value = record.get(key)
        return None if value is None else value.decode("utf-8", "replace")

    def count(key: bytes) -> int:
        value = record.get(key)
        try:
            return 0 if value is None else int(value)
        except ValueError:
            problems.append(f"its stored {key.decode()} {value!r} is not a count")
            return 0

    return history.RunInfo(
        id=run_id,
        workflow=string(b"wf") or "",
        status=status,
        created_at=time(b"created", True) or 0.0,
        updated_at=time(b"updated", True) or 0.0,
        ready_at=time(b"ready"),
        lease_owner=string(b"owner"),
        lease_until=time(b"lease"),
        cancel_requested=record.get(b"cancel") == b"1",
        wake_requested=record.get(b"wake") == b"1",
        deadline=time(b"deadline"),
        parent=string(b"parent"),
        headers=headers,
        recoveries=count(b"rec"),
        queue=string(b"queue") or "",
        priority=count(b"prio"),
        partition=string(b"part"),
        start_at=time(b"start"),
        damage="; ".join(problems) or None,
    )


def text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
