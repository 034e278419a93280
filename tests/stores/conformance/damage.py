"""Damage a store's data behind its back, through each backend's raw client.

What a disk error, a careless ``DELETE`` or a hand edit does to a run: the
conformance suite uses it to prove that every store reports such damage as
``HistoryCorruptError`` (or a run record's ``damage``), and keeps working.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from fluxo import history
from fluxo.stores import Store
from fluxo.stores.memory import MemoryStore


class Damage:
    """Breaks one store's data; built by :func:`damage_for`."""

    positional = True
    """Whether events are stored with their positions, so deleting one leaves a gap."""
    keeps_status_text = True
    """Whether a run's status is stored as text that can be overwritten with anything."""
    keeps_headers_text = True
    """Whether a run's headers are stored as text that can be overwritten with anything."""

    def drop_event(self, run_id: str, seq: int) -> None:
        """Delete the event at ``seq``."""
        raise NotImplementedError

    def set_kind(self, run_id: str, seq: int, kind: str) -> None:
        """Overwrite the kind of the event at ``seq``."""
        raise NotImplementedError

    def set_status(self, run_id: str, status: str) -> None:
        """Overwrite the run's stored status."""
        raise NotImplementedError

    def set_headers(self, run_id: str, raw: Any) -> None:
        """Overwrite the run's stored headers with ``raw`` (text, or what the backend holds)."""
        raise NotImplementedError


class _MemoryDamage(Damage):
    positional = False  # a list: deleting an item shortens it
    keeps_status_text = False  # RunStatus objects
    keeps_headers_text = False  # the mapping given, kept in the RunInfo

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def drop_event(self, run_id: str, seq: int) -> None:
        del self.store._events[run_id][seq]
        del self.store._recorded_at[run_id][seq]

    def set_kind(self, run_id: str, seq: int, kind: str) -> None:
        event = self.store._events[run_id][seq]
        # An Event class no Fluxo registers: what an unknown kind looks like here.
        foreign: Any = type("Foreign", (history.Event,), {"kind": kind, "__slots__": ()})
        self.store._events[run_id][seq] = foreign(event.name, event.data)


class _SQLDamage(Damage):
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def _run(self, statement: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(statement), values)

    def drop_event(self, run_id: str, seq: int) -> None:
        self._run("DELETE FROM fluxo_events WHERE run_id = :r AND seq = :s", r=run_id, s=seq)

    def set_kind(self, run_id: str, seq: int, kind: str) -> None:
        self._run(
            "UPDATE fluxo_events SET kind = :k WHERE run_id = :r AND seq = :s",
            k=kind,
            r=run_id,
            s=seq,
        )

    def set_status(self, run_id: str, status: str) -> None:
        self._run("UPDATE fluxo_runs SET status = :st WHERE id = :r", st=status, r=run_id)

    def set_headers(self, run_id: str, raw: Any) -> None:
        self._run("UPDATE fluxo_runs SET headers = :h WHERE id = :r", h=raw, r=run_id)


class _RedisDamage(Damage):
    positional = False  # a list: deleting an item shortens it

    def __init__(self, store: Any) -> None:
        self.store = store
        self.client = store._conn.connected()

    def _events(self, run_id: str) -> str:
        key: str = self.store._keys.of_run(run_id, "events")
        return key

    def drop_event(self, run_id: str, seq: int) -> None:
        self.client.lset(self._events(run_id), seq, b"\xff-dropped")
        self.client.lrem(self._events(run_id), 1, b"\xff-dropped")

    def set_kind(self, run_id: str, seq: int, kind: str) -> None:
        raw: bytes = self.client.lindex(self._events(run_id), seq)
        at, _, rest = raw.partition(b"\x00")
        _, _, tail = rest.partition(b"\x00")
        self.client.lset(self._events(run_id), seq, b"%s\x00%s\x00%s" % (at, kind.encode(), tail))

    def set_item(self, run_id: str, seq: int, raw: bytes) -> None:
        """Overwrite the stored bytes of the item at ``seq``."""
        self.client.lset(self._events(run_id), seq, raw)

    def set_status(self, run_id: str, status: str) -> None:
        self.client.hset(self.store._keys.of_run(run_id, "run"), "status", status)

    def set_headers(self, run_id: str, raw: Any) -> None:
        self.client.hset(self.store._keys.of_run(run_id, "run"), "headers", raw)


class _MongoDamage(Damage):
    positional = True  # next_seq counts the events: a deleted one leaves a gap

    def __init__(self, store: Any) -> None:
        self.runs = store._runs

    def drop_event(self, run_id: str, seq: int) -> None:
        base = self.runs.find_one({"_id": run_id})["ev_base"]
        assert seq >= base, "the event was flushed out of the run's document"
        self.runs.update_one({"_id": run_id}, {"$unset": {f"ev_tail.{seq - base}": 1}})
        self.runs.update_one({"_id": run_id}, {"$pull": {"ev_tail": None}})

    def set_kind(self, run_id: str, seq: int, kind: str) -> None:
        base = self.runs.find_one({"_id": run_id})["ev_base"]
        self.runs.update_one({"_id": run_id}, {"$set": {f"ev_tail.{seq - base}.k": kind}})

    def set_status(self, run_id: str, status: str) -> None:
        self.runs.update_one({"_id": run_id}, {"$set": {"status": status}})

    def set_headers(self, run_id: str, raw: Any) -> None:
        self.runs.update_one({"_id": run_id}, {"$set": {"headers": raw}})


def damage_for(store: Store) -> Damage:
    """The damaging helper for ``store``'s backend."""
    if isinstance(store, MemoryStore):
        return _MemoryDamage(store)
    module = type(store).__module__
    if module == "fluxo.stores.sql":
        return _SQLDamage(store.engine)  # type: ignore[attr-defined]
    if module == "fluxo.stores.redis":
        return _RedisDamage(store)
    if module == "fluxo.stores.mongo":
        return _MongoDamage(store)
    raise AssertionError(f"no damage helper for {store!r}")
