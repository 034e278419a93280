"""How the MongoDB store's documents hold runs, events and signals.

A run's document holds the run's fields (its ``headers`` as the text of a JSON
object, see ``fluxo.stores._headers``), the *tail* of its history (the events
not yet moved to ``events``), the tail of its signals, the dedupe keys of its
signals and the counters ``next_seq`` (the history's length) and ``sig_next``
(the next signal id), and its queue fields (see ``_queues``). An event entry is
``{k: kind, n: name, d: data, t: recorded_at}``, a signal entry ``{i: id, n: name,
p: payload, t: sent_at, k: key}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from fluxo import history
from fluxo.stores import _headers
from fluxo.stores.mongo import _driver

Doc = dict[str, Any]

ACTIVE: Final = [status.value for status in history.ACTIVE_STATUSES]
FINISHED: Final = [status.value for status in history.RunStatus if status.is_terminal]
REOPENABLE: Final = [status.value for status in history.REOPENABLE_STATUSES]

INFO_PROJECTION: Final = {"ev_tail": 0, "sig_tail": 0, "sig_keys": 0}
"""Every field but the tails: what ``RunInfo`` needs."""

LIVE: Final[Doc] = {"purging": {"$exists": False}}
"""A run being purged is gone for readers (see ``_purge``)."""


def info(doc: Mapping[str, Any]) -> history.RunInfo:
    """The run in its document; a damaged field is named in ``damage``, never raised."""
    status, damage = history.parse_status(doc.get("status"))
    problems = [] if damage is None else [damage]
    headers, unreadable = _headers.decode(doc.get("headers"))
    if unreadable is not None:
        problems.append(unreadable)

    def time(key: str, required: bool = False) -> float | None:
        value = doc.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if value is not None or required:
            problems.append(f"its stored {key} {value!r} is not a time")
        return None

    def string(key: str) -> str | None:
        value = doc.get(key)
        if value is None or isinstance(value, str):
            return value
        problems.append(f"its stored {key} {value!r} is not text")
        return str(value)

    recoveries = doc.get("recoveries", 0)
    if not isinstance(recoveries, int) or isinstance(recoveries, bool):
        problems.append(f"its stored recoveries {recoveries!r} is not a count")
        recoveries = 0

    priority = doc.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        problems.append(f"its stored priority {priority!r} is not a whole number")
        priority = 0

    return history.RunInfo(
        id=doc["_id"],
        workflow=string("workflow") or "",
        status=status,
        created_at=time("created_at", True) or 0.0,
        updated_at=time("updated_at", True) or 0.0,
        ready_at=time("ready_at"),
        lease_owner=string("lease_owner"),
        lease_until=time("lease_until"),
        cancel_requested=bool(doc.get("cancel_requested", False)),
        wake_requested=bool(doc.get("wake_requested", False)),
        deadline=time("deadline"),
        parent=string("parent"),
        headers=headers,
        recoveries=recoveries,
        queue=string("queue") or history.DEFAULT_QUEUE,  # none: written before queues
        priority=priority,
        partition=string("partition"),
        start_at=time("start_at"),
        damage="; ".join(problems) or None,
    )


def event_entry(event: history.Event, now: float) -> Doc:
    return {
        "k": event.kind,
        "n": event.name,
        "d": None if event.data is None else _driver.Binary(bytes(event.data)),
        "t": now,
    }


def record(seq: int, entry: Mapping[str, Any]) -> tuple[int, Any, Any, Any]:
    """An event entry as ``(seq, kind, name, data)`` for ``history.read_events`` to check."""
    data = entry.get("d")
    return seq, entry.get("k"), entry.get("n"), bytes(data) if isinstance(data, bytes) else data


def signal(entry: Mapping[str, Any]) -> history.Signal:
    return history.Signal(int(entry["i"]), entry["n"], bytes(entry["p"]), entry["t"])


def size(events: Sequence[history.Event]) -> int:
    return sum(len(e.data or b"") + len(e.name) + 32 for e in events)
