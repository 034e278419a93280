"""A run's history and signals: the tails in its document, the rest in ``events`` and ``signals``.

So that a run's document stays small, a full tail is *flushed*: its events are
inserted into ``events`` (duplicates ignored: the unique ``(run_id, seq)`` index
makes the flush idempotent and guards against two versions of one position),
and only then does a second conditional update drop them from the tail and
advance ``ev_base``. A reader takes the run document first and then the events
below its ``ev_base``, which are immutable once there, so it always sees one
consistent history. A crash between the two writes of a flush leaves events in
both places, which readers never look at twice and the next flush finishes.
Signals are flushed the same way into ``signals``.
"""

from __future__ import annotations

from typing import Final

from fluxo import _errors, history
from fluxo.stores.mongo import _documents, _driver

Doc = _documents.Doc

TAIL_EVENTS: Final = 64
"""Flush a run's history tail into ``events`` once it holds this many events..."""
TAIL_BYTES: Final = 1 << 20
"""...or this many bytes of event data."""
TAIL_SIGNALS: Final = 64
"""Flush a run's signal tail into ``signals`` once it holds this many signals."""

_DUPLICATE_KEY: Final = 11000


def _insert_ignoring_duplicates(collection: _driver.Collection[Doc], rows: list[Doc]) -> None:
    try:
        collection.insert_many(rows, ordered=False)
    except _driver.BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(error.get("code") != _DUPLICATE_KEY for error in errors) or not errors:
            raise


class Tails:
    """Flushes and reads the histories and signals of one database's runs.

    Args:
        runs: the ``runs`` collection.
        events: the ``events`` collection.
        signals: the ``signals`` collection.
    """

    def __init__(
        self,
        runs: _driver.Collection[Doc],
        events: _driver.Collection[Doc],
        signals: _driver.Collection[Doc],
    ) -> None:
        self._runs = runs
        self._events = events
        self._signals = signals

    def flush_events(self, run_id: str) -> None:
        """Move the run's history tail into ``events``; the caller made the indexes."""
        doc = self._runs.find_one({"_id": run_id}, {"ev_tail": 1, "ev_base": 1, "next_seq": 1})
        if doc is None or not doc["ev_tail"]:
            return
        base: int = doc["ev_base"]
        rows = [
            {"run_id": run_id, "seq": base + i, **entry} for i, entry in enumerate(doc["ev_tail"])
        ]
        _insert_ignoring_duplicates(self._events, rows)
        self._runs.update_one(
            {"_id": run_id, "ev_base": base, "next_seq": doc["next_seq"]},
            {"$set": {"ev_base": doc["next_seq"], "ev_tail": [], "tail_bytes": 0}},
        )

    def flush_signals(self, run_id: str) -> None:
        """Move the run's signal tail into ``signals``; the caller made the indexes."""
        doc = self._runs.find_one({"_id": run_id}, {"sig_tail": 1, "sig_base": 1, "sig_next": 1})
        if doc is None or not doc["sig_tail"]:
            return
        rows = []
        for entry in doc["sig_tail"]:
            row = {
                "run_id": run_id,
                "id": entry["i"],
                "name": entry["n"],
                "payload": entry["p"],
                "sent_at": entry["t"],
            }
            if entry.get("k") is not None:
                row["key"] = entry["k"]
            rows.append(row)
        _insert_ignoring_duplicates(self._signals, rows)
        self._runs.update_one(
            {"_id": run_id, "sig_base": doc["sig_base"], "sig_next": doc["sig_next"]},
            {"$set": {"sig_base": doc["sig_next"], "sig_tail": []}},
        )

    def state(self, run_id: str, doc: Doc) -> history.RunState:
        """The run, history and signals of ``load``, from the run's document and the rest."""
        base: int = doc["ev_base"]
        flushed = list(
            self._events.find({"run_id": run_id, "seq": {"$lt": base}}, sort=[("seq", 1)])
            if base > 0
            else ()
        )
        records = [_documents.record(row["seq"], row) for row in flushed]
        records += [_documents.record(base + i, entry) for i, entry in enumerate(doc["ev_tail"])]
        events = history.read_events(run_id, records, next_seq=doc["next_seq"])
        run = _documents.info(doc)
        if run.damage is not None:
            raise _errors.HistoryCorruptError(run_id, None, run.damage, len(events))
        # An event kept without its time reports the run's creation, a lower bound.
        recorded_at = [entry.get("t", run.created_at) for entry in (*flushed, *doc["ev_tail"])]
        signals: list[history.Signal] = []
        if doc["sig_base"] > 1:
            rows = self._signals.find(
                {"run_id": run_id, "id": {"$lt": doc["sig_base"]}}, sort=[("id", 1)]
            )
            signals.extend(
                history.Signal(int(r["id"]), r["name"], bytes(r["payload"]), r["sent_at"])
                for r in rows
            )
        signals.extend(_documents.signal(entry) for entry in doc["sig_tail"])
        return history.RunState(run, events, tuple(signals), tuple(recorded_at))
