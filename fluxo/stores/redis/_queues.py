"""The Redis store's named queues: the index of the runs awaiting admission, admission, records.

Each named queue has keys of its own, tagged ``{P#q:<name>}`` (a name that is empty
or holds ``}`` is tagged by its SHA-1), so each lies in one slot:

* ``P:{P#q:<name>}:queued``: a sorted set of the runs awaiting admission, every
  score 0, read in lexical order. An *entry* is the priority (16 hex digits, the
  highest priority first), ``start_at`` and ``created_at`` (16 hex digits each,
  of the float's bits made to sort as numbers), the run id, NUL, and a number of
  the queue's counter: so the entries sort in admission order, and no entry is
  ever made twice;
* ``P:{P#q:<name>}:seq``: that counter;
* ``P:{P#q:<name>}:state``: the queue's record, a hash of ``v`` (the version) and
  ``s`` (the state), changed by one compare-and-set script.

A run awaiting admission has ``start`` and ``qkey`` (its entry) in its record.
The entry and the record are in different slots, so they are kept in step this
way, whatever crashes between the steps:

1. A change that makes a run await admission (a create, a retry) first adds a
   fresh entry (``enqueue.lua``), then the run script writes it as the record's
   ``qkey``. A script that refuses leaves the entry to its caller, who removes it.
2. A change that ends the wait (``admit``, an ``append`` with a status, a purge)
   clears ``start`` and ``qkey`` in the run script, then removes that entry. Since
   entries are never made twice, an entry the record no longer names is never
   needed again, and removing it is safe.
3. A reader (:meth:`Queues.queued_runs`) checks every entry it meets against the
   run's record. An entry the record does not name was left by a crash, or belongs
   to a change still on its way: ``queue_check.lua`` raises the run's *queue
   fence* to the entry's number and the reader removes the entry; a change on its
   way that carries an entry no newer than the fence is refused and made again
   with a fresh entry. So a run awaiting admission always has its entry, and the
   index holds nothing else for longer than until a reader meets it.

Admission changes the claim index too: it takes the mark, change and settle
steps of ``_index`` (one mark per bucket, one ``admit.lua`` per run, one settle
per bucket, each step batched), then removes the entries.
"""

from __future__ import annotations

import math
import struct
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

from fluxo import _errors, history
from fluxo.stores import _queue_rules
from fluxo.stores.redis import _codec, _connection, _index, _layout

_MIN_PRIORITY: Final = -(2**63)
_MAX_PRIORITY: Final = 2**63 - 1
_WAKE_PAGE: Final = 64
"""How many of a bucket's earliest entries ``next_wake`` with queues reads at first."""


def check_priority(priority: int) -> str:
    """The priority as stored (``''`` for 0); ``StoreRejectedError`` outside 64 bits."""
    if not _MIN_PRIORITY <= priority <= _MAX_PRIORITY:
        raise _errors.StoreRejectedError(
            f"priority {priority} is out of the range the Redis store keeps "
            f"({_MIN_PRIORITY} to {_MAX_PRIORITY}); choose a smaller one"
        )
    return str(priority) if priority else ""


def _sortable(value: float) -> str:
    """16 hex digits that sort as the floats do."""
    bits: int = struct.unpack(">Q", struct.pack(">d", float(value)))[0]
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{bits:016x}"


def entry_head(run_id: str, priority: int, start_at: float, created_at: float) -> str:
    """An entry of a queue's index without its number: it sorts in admission order."""
    return f"{_MAX_PRIORITY - priority:016x}{_sortable(start_at)}{_sortable(created_at)}{run_id}"


def entry_run(entry: bytes) -> tuple[str, str]:
    """The run id and the number in an entry."""
    cut = entry.rindex(b"\x00")
    return _codec.text(entry[48:cut]), _codec.text(entry[cut + 1 :])


def wanted_queues(queues: Collection[str]) -> str:
    """A ``queues`` filter as ``claim_one.lua`` takes it: each name between NULs."""
    return "\x00" + "".join(f"{name}\x00" for name in sorted(set(queues)))


class Queues:
    """The named queues of one store.

    Args:
        conn: the store's connection.
        keys: the store's key layout.
        index: the store's claim index (an admitted run enters it).
    """

    def __init__(
        self, conn: _connection.Connection, keys: _layout.Keys, index: _index.Index
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._index = index

    def enqueue(
        self, queue: str, head: str, *, after: _connection.Call | None = None
    ) -> tuple[int, str, Any]:
        """Add a fresh entry to ``queue``'s index: the server's clock, the entry, and more.

        ``after``: a script call to make in the same pipeline (one round trip on a
        single server), whose reply comes third (``None`` without it).
        """
        calls: list[_connection.Call] = [("enqueue", self._queue_keys(queue, 2), [head])]
        if after is not None:
            calls.append(after)
        replies = self._conn.call_many(calls)
        clock, entries = replies[0]
        return int(clock), _codec.text(entries[0]), replies[1] if after is not None else None

    def forget(self, entries: Mapping[str, Collection[str | bytes]]) -> None:
        """Remove entries no record names any more, by queue, in one pipeline."""
        found = {queue: list(items) for queue, items in entries.items() if items}
        if found:
            self._conn.commands(
                lambda pipe: [
                    pipe.zrem(self._keys.queue(queue)["queued"], *items)
                    for queue, items in sorted(found.items())
                ]
            )

    def _queue_keys(self, queue: str, count: int) -> list[str]:
        keys = self._keys.queue(queue)
        return [keys[what] for what in _layout.QUEUE_PARTS[:count]]

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """See :meth:`fluxo.stores.Store.queued_runs` (and the module's docstring)."""
        if queue == history.DEFAULT_QUEUE:
            return [], None
        limit = max(limit, 0)
        keys = self._queue_keys(queue, 1)
        for _ in range(_index.MAX_TRIES):
            due, later = self._conn.call("queued", keys, [_sortable(now), limit])
            entries: list[bytes] = [*due, *later]
            ids = [entry_run(entry)[0] for entry in entries]
            rows = self._records(ids)
            unused = [
                entry
                for entry, fields in zip(entries, rows, strict=True)
                if fields.get(b"qkey") != entry
            ]
            if unused:
                self._drop_unused(queue, unused)
                continue  # read again: the index holds the runs' own entries now
            runs = [
                _codec.run_info(run_id, fields) for run_id, fields in zip(ids, rows, strict=True)
            ]
            starts = [run.start_at for run in runs[len(due) :] if run.start_at is not None]
            return runs[: len(due)], min(starts, default=None)
        raise _errors.StoreUnavailableError(
            f"the index of queue {queue!r} changed under Fluxo {_index.MAX_TRIES} times "
            "in a row; try again"
        )

    def _records(self, run_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        rows: list[dict[bytes, bytes]] = self._conn.commands(
            lambda pipe: [pipe.hgetall(self._keys.of_run(run_id, "run")) for run_id in run_ids]
        )
        return rows

    def _drop_unused(self, queue: str, entries: Sequence[bytes]) -> None:
        """Fence and remove entries their runs' records do not name (step 3)."""
        calls: list[_connection.Call] = []
        for entry in entries:
            run_id, number = entry_run(entry)
            args = [self._keys.channel, queue, entry, number]
            calls.append(("queue_check", self._keys.run(run_id), args))
        replies = self._conn.call_many(calls)
        self.forget({queue: [e for e, gone in zip(entries, replies, strict=True) if gone == 1]})

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """See :meth:`fluxo.stores.Store.admit` (and the module's docstring)."""
        pending = list(dict.fromkeys(run_ids))
        admitted: list[str] = []
        done: dict[str, list[bytes]] = defaultdict(list)
        at = _codec.num(now)
        for _ in range(_index.MAX_TRIES):
            if not pending:
                break
            gens = self._index.mark_many(pending, at)
            calls = [
                ("admit", self._keys.run(run_id), [self._keys.channel, at, gens[run_id], run_id])
                for run_id in pending
            ]
            settles: list[_index.Settle] = []
            again: list[str] = []
            for run_id, reply in zip(pending, self._conn.call_many(calls), strict=True):
                if reply[0] == 2:  # a settle may remove its hint: mark again
                    again.append(run_id)
                    continue
                need = _index.need(reply[1])
                settles.append(_index.Settle(run_id, gens[run_id], need, not need.workflow))
                if reply[0] == 1:
                    admitted.append(run_id)
                    if reply[2]:
                        done[_codec.text(reply[3])].append(reply[2])
            self._index.settle(settles)
            pending = again
        self.forget(done)
        if pending:
            raise _errors.StoreUnavailableError(
                f"runs {pending[:3]!r} changed under Fluxo {_index.MAX_TRIES} times in a "
                "row; try again (the others were admitted)"
            )
        return admitted

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """See :meth:`fluxo.stores.Store.read_queue`."""
        with self._conn.guard():
            version, state = self._conn.connected().hmget(
                self._keys.queue(queue)["state"], "v", "s"
            )
        return (0, b"") if version is None else (int(version), state or b"")

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """See :meth:`fluxo.stores.Store.write_queue`: one compare-and-set script."""
        _queue_rules.check_state(queue, state)
        key = self._keys.queue(queue)["state"]
        return bool(self._conn.call("write_queue", [key], [int(version), bytes(state)]) == 1)

    def _queue_fields(self, run_ids: Sequence[str]) -> list[Any]:
        """The ``wf`` and ``queue`` fields of these runs' records, in one pipeline."""
        return self._conn.commands(
            lambda pipe: [
                pipe.hmget(self._keys.of_run(run_id, "run"), "wf", "queue") for run_id in run_ids
            ]
        )

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str]
    ) -> float | None:
        """:meth:`fluxo.stores.Store.next_wake` for the runs of ``queues``.

        The claim index does not know queues: each bucket's earliest entries are
        read (:data:`_WAKE_PAGE` of each set at first, more while none is of a
        queue wanted), and the earliest whose run's record is of one of ``queues``
        wins, if no entry left unread can be earlier.
        """
        names = sorted(set(workflows))
        wanted = set(queues)
        if not names or not wanted:
            return None
        count = _WAKE_PAGE
        while True:
            calls: list[_connection.Call] = []
            for bucket in range(_layout.BUCKETS):
                common = self._keys.bucket(bucket)
                keys = [common["hints"], common["lready"]]
                for name in names:
                    keys.extend(self._keys.workflow(bucket, name))
                calls.append(("wake_list", keys, [_codec.num(now), count]))
            found: dict[str, float] = {}
            horizon = math.inf  # no run left unread is due before it
            for last, flat in self._conn.call_many(calls):
                if last:
                    horizon = min(horizon, float(last))
                for i in range(0, len(flat), 2):
                    run_id, at = _codec.text(flat[i]), float(flat[i + 1])
                    found[run_id] = min(at, found.get(run_id, at))
            order = sorted(found, key=lambda run_id: found[run_id])
            order = [run_id for run_id in order if found[run_id] <= horizon]
            start, size = 0, 16
            while start < len(order):  # the earliest first: pages that grow
                page = order[start : start + size]
                start, size = start + size, min(size * 4, 1024)
                rows = self._queue_fields(page)
                for run_id, (workflow, queue) in zip(page, rows, strict=True):
                    if workflow is not None and _codec.text(queue or b"") in wanted:
                        return found[run_id]
            if horizon == math.inf:
                return None
            count *= 4
