"""Worker liveness on Redis: beats in one sorted set, and the runs of dead workers freed.

Every worker's liveness record is a member of ``P:{P#workers}:alive``, a sorted
set of worker ids scored by ``alive_until``: one key in a slot of its own. A beat
is one script on it (``beat.lua``), which records the beat and, when it reaps,
answers the other workers whose ``alive_until`` has passed. Nobody dead is the
common case: then a beat is that one round trip.

Redis keeps no index from a lease's owner to its runs, so freeing the runs of
dead workers (rare: a worker died, or a restarted one frees its own) reads them
out of the claim index: every run with a leased entry or a hint (see
:meth:`_index.Index.leased_or_hinted`) is a candidate, and each candidate's
owner, status and lease are read from its record. Each run still leased to a
dead owner is freed through the index's three steps, batched: one mark per
bucket (the hint is ``now``), one ``free.lua`` per run (which ends the lease at
``now`` only if the owner, the status and a live lease still hold, and
publishes the run id), and one settle per bucket, which moves the run's leased
entry to ``now``, so a claim finds it at once.

The dead workers' records are removed (``bury.lua``) only after their runs are
freed, and only if they did not beat meanwhile: a reaper that crashes half way
leaves them, and the next beat that reaps frees what is left. Concurrent reapers
free each run once: the second finds its lease already ended.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Final

from fluxo import _errors, history
from fluxo.stores import _changes
from fluxo.stores.redis import _codec, _connection, _index, _layout

_ACTIVE: Final = {status.value.encode() for status in history.ACTIVE_STATUSES}
_READ_BATCH: Final = 1000
"""How many candidates' records one pipeline reads."""


class Liveness:
    """The workers' liveness records of one store, and the freeing of dead workers' runs.

    Args:
        conn: the store's connection.
        keys: the store's key layout.
        index: the store's claim index.
        feed: the store's change feed, told of every run freed.
    """

    def __init__(
        self,
        conn: _connection.Connection,
        keys: _layout.Keys,
        index: _index.Index,
        feed: _changes.ChangeFeed,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._index = index
        self._feed = feed

    def beat(
        self, worker_id: str, *, now: float, alive_until: float, reap: bool, restarted: bool
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`."""
        reply = self._conn.call(
            "beat",
            [self._keys.workers],
            [worker_id, _codec.num(now), _codec.num(alive_until), "1" if reap else "0"],
        )
        dead = {_codec.text(reply[i]): _codec.text(reply[i + 1]) for i in range(0, len(reply), 2)}
        owners = (set(dead) | {worker_id}) if restarted else set(dead)
        if not owners:
            return []
        freed = self._free(self._held(self._index.leased_or_hinted(), owners, now), now)
        if dead:
            self._conn.call(
                "bury", [self._keys.workers], [v for pair in dead.items() for v in pair]
            )
        return freed

    def forget(self, worker_id: str) -> None:
        """See :meth:`fluxo.stores.Store.forget_worker`."""
        with self._conn.guard():
            self._conn.connected().zrem(self._keys.workers, worker_id)

    def _held(
        self, candidates: Iterable[str], owners: Collection[str], now: float
    ) -> dict[str, str]:
        """The candidates with a live lease held by one of ``owners``: run id -> owner."""
        ids = sorted(candidates)
        wanted = {_codec.utf8(owner) for owner in owners}
        held: dict[str, str] = {}
        for start in range(0, len(ids), _READ_BATCH):
            batch = ids[start : start + _READ_BATCH]

            def build(pipe: Any, batch: list[str] = batch) -> None:
                for run_id in batch:
                    pipe.hmget(self._keys.of_run(run_id, "run"), "owner", "status", "lease")

            rows = self._conn.commands(build)
            for run_id, (owner, status, lease) in zip(batch, rows, strict=True):
                if owner in wanted and status in _ACTIVE and lease and float(lease) > now:
                    held[run_id] = _codec.text(owner)
        return held

    def _free(self, held: dict[str, str], now: float) -> list[str]:
        """End the leases in ``held`` (run id -> owner) at ``now``: mark, free, settle."""
        at = _codec.num(now)
        freed: list[str] = []
        pending = held
        for _ in range(_index.MAX_TRIES):
            if not pending:
                break
            gens = self._index.mark_many(pending, at)
            order = sorted(pending)
            calls: list[_connection.Call] = [
                (
                    "free",
                    self._keys.run(run_id),
                    [self._keys.channel, at, gens[run_id], pending[run_id], run_id],
                )
                for run_id in order
            ]
            settles: list[_index.Settle] = []
            again: dict[str, str] = {}
            for run_id, reply in zip(order, self._conn.call_many(calls), strict=True):
                outcome = _codec.text(reply[0])
                if outcome == "retry":  # a settle may be about to remove the hint
                    again[run_id] = pending[run_id]
                    continue
                need = _index.need(reply[1])
                settles.append(_index.Settle(run_id, gens[run_id], need, not need.workflow))
                if outcome == "freed":
                    freed.append(run_id)
            self._index.settle(settles)
            pending = again
        for run_id in freed:
            self._feed.changed(run_id)
        if pending:
            raise _errors.StoreUnavailableError(
                f"{len(pending)} runs of dead workers changed under Fluxo {_index.MAX_TRIES} "
                "times in a row; the next beat frees them"
            )
        return freed
