"""Admission to named queues, over any store, and a worker's claims by queue.

A run of a named queue is created awaiting admission: no claim takes it until
:meth:`fluxo.stores.Store.admit` makes it ready. Workers serving the queue
decide which runs to admit, under its :class:`fluxo.Queue` limits, in rounds:

1. read the queue's record (``read_queue``): the runs admitted and not known to
   have finished (``active``, with their partitions) and the recent admission
   times (for the rate);
2. read those runs (``get_runs``): drop the finished and the gone; one still
   awaiting admission was chosen by a round that stopped before ``admit`` and is
   admitted again (repair);
3. count the free places: ``concurrency - len(active)``, ``rate - recent``;
4. read that many candidates (``queued_runs``, in admission order), skip those
   whose partition is full, and write the new record if it is still at the version
   read (``write_queue``, compare and set): on a lost race nothing is admitted;
5. ``admit`` the chosen runs (and the repaired ones).

A run becomes claimable only after it is in the record's ``active``, and leaves
it only once finished, so the runs admitted and unfinished never exceed a limit,
whatever workers race (docs/architecture.md has the argument). A queue with no
concurrency and no partition limit keeps no ``active`` set: nothing counts it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

import msgspec

from fluxo import _errors, _queue_config, _watch, history, stores

log = logging.getLogger("fluxo._worker")
"""Admissions are the worker's: its logger says them (at DEBUG)."""

BATCH = 100
"""The most runs one round admits to one queue."""

_LOOK_AT_MOST = 10_000
"""The most runs one round looks at to pass over runs of full partitions."""

_FORMAT = 1


class _State(msgspec.Struct, forbid_unknown_fields=False):
    """A queue's record: runs admitted and unfinished (id -> partition), recent admissions."""

    v: int = _FORMAT
    active: dict[str, str | None] = msgspec.field(default_factory=dict)
    admitted: list[float] = msgspec.field(default_factory=list)


_DECODER = msgspec.json.Decoder(_State)
_ENCODER = msgspec.json.Encoder()


def _decode(queue: str, raw: bytes) -> _State:
    if not raw:
        return _State()
    try:
        state = _DECODER.decode(raw)
    except msgspec.DecodeError as exc:
        raise _errors.StoreRejectedError(
            f"the record of queue {queue!r} does not decode ({exc}); it was written by "
            "another version of Fluxo, or damaged"
        ) from None
    if state.v != _FORMAT:
        raise _errors.StoreRejectedError(
            f"the record of queue {queue!r} has format {state.v}, which this version of "
            f"Fluxo does not know (it writes {_FORMAT}); upgrade every worker of the queue"
        )
    return state


class Round(msgspec.Struct):
    """What one round did for one queue."""

    admitted: list[str]
    """The runs it made ready."""
    wake_at: float | None
    """When a round may admit more without any change of a run (None: only after one)."""


def admit_round(
    store: stores.Store, queue: str, limits: _queue_config.Queue | None, *, now: float
) -> Round:
    """Run one admission round for the named ``queue`` (stored name) under ``limits``."""
    limits = limits or _queue_config.Queue(_queue_config.shown(queue))
    counted = limits.concurrency is not None or limits.partition_concurrency is not None
    if not counted and limits.rate is None:  # no limit: admit what is due, no record
        runs, next_at = store.queued_runs(queue, now=now, limit=BATCH)
        admitted = store.admit([run.id for run in runs], now=now) if runs else []
        return Round(admitted, now if len(runs) == BATCH else next_at)
    version, raw = store.read_queue(queue)
    state = _decode(queue, raw)
    active: dict[str, str | None] = {}
    repairs: list[str] = []
    if state.active:
        found = store.get_runs(list(state.active))
        for run_id, partition in state.active.items():
            run = found.get(run_id)
            if run is None or run.status.is_terminal:
                continue  # finished (or purged): its place is free
            active[run_id] = partition
            if run.start_at is not None:
                repairs.append(run_id)  # chosen by a round that stopped before admitting
    recent = state.admitted
    free = BATCH
    wake_at: float | None = None
    if limits.rate is not None and limits.per is not None:
        recent = [t for t in recent if t > now - limits.per][-limits.rate :]
        free = min(free, limits.rate - len(recent))
        if free <= 0:
            wake_at = min(recent) + limits.per  # a place leaves the window then
    if limits.concurrency is not None:
        free = min(free, limits.concurrency - len(active))
    chosen: list[history.RunInfo] = []
    if free > 0:
        wanted = free + len(repairs)
        if limits.partition_concurrency is not None:
            wanted *= 4  # room to pass over runs of full partitions
        while True:
            candidates, next_at = store.queued_runs(queue, now=now, limit=wanted)
            chosen = _choose(candidates, active, free, limits.partition_concurrency)
            if len(chosen) >= free or len(candidates) < wanted or wanted >= _LOOK_AT_MOST:
                break
            wanted *= 4  # every run looked at was of a full partition: look further
        if len(chosen) == BATCH:
            next_at = now  # more may be due: the next round goes on at once
        wake_at = next_at if wake_at is None or next_at is None else min(wake_at, next_at)
    if chosen:
        active.update((run.id, run.partition) for run in chosen)
        recent = recent + [now] * len(chosen)
    if not counted:
        active = {}
    if active != state.active or recent != state.admitted:
        new = _ENCODER.encode(_State(active=active, admitted=recent))
        if not store.write_queue(queue, version, new):
            return Round([], None)  # another worker wrote first; its admission wakes us
    ids = repairs + [run.id for run in chosen]
    admitted = store.admit(ids, now=now) if ids else []
    if admitted:
        log.debug("queue %s: admitted %s", _queue_config.shown(queue), ", ".join(admitted))
    return Round(admitted, wake_at)


def _choose(
    candidates: list[history.RunInfo],
    active: Mapping[str, str | None],
    free: int,
    per_partition: int | None,
) -> list[history.RunInfo]:
    """Up to ``free`` candidates in order, passing over those whose partition is full."""
    counts = collections.Counter(p for p in active.values() if p is not None)
    chosen: list[history.RunInfo] = []
    for run in candidates:
        if len(chosen) >= free:
            break
        if run.id in active:
            continue  # chosen already: repaired, not counted twice
        if per_partition is not None and run.partition is not None:
            if counts[run.partition] >= per_partition:
                continue
            counts[run.partition] += 1
        chosen.append(run)
    return chosen


def admit_cancelled(store: stores.Store, run: history.RunInfo, *, now: float) -> None:
    """Admit a run that awaits admission and was asked to cancel, outside its queue's limits.

    Its executor then ends it at once, and tells its parent if it has one; so a
    cancelled run never waits for a place in a full queue.
    """
    if run.start_at is not None and run.cancel_requested and not run.status.is_terminal:
        store.admit([run.id], now=now)


class Served:
    """The queues a worker serves: their admission rounds and its claims by queue.

    ``queues`` are stored names (``""``: the default queue); ``limits`` the
    engine's queues by stored name. A worker of the default queue alone makes the
    claims it made before queues existed, and no other store call.
    """

    def __init__(
        self,
        queues: Collection[str],
        limits: Mapping[str, _queue_config.Queue],
        worker_id: str,
    ) -> None:
        self.queues = sorted(queues)
        self.named = [q for q in self.queues if q != history.DEFAULT_QUEUE]
        self.limits = dict(limits)
        self.local: dict[str, int] = {}
        for q in self.queues:
            most = limits[q].worker_concurrency if q in limits else None
            if most is not None:
                self.local[q] = most
        """The queues with a ``worker_concurrency``, and it."""
        self.trouble = _watch.Trouble(
            f"worker {worker_id}: admitting runs", level=logging.WARNING, logger=log
        )

    def admit(self, store: stores.Store, clock: Callable[[], float]) -> float | None:
        """Run a round for each named queue; when the next round is due (None: on a change)."""
        wake: float | None = None
        for queue in self.named:
            try:
                done = admit_round(store, queue, self.limits.get(queue), now=clock())
            except _errors.StoreError as exc:
                retry = self.trouble.failed(exc)
                due = clock() + retry
                wake = due if wake is None else min(wake, due)
                continue
            self.trouble.succeeded()
            if done.wake_at is not None:
                wake = done.wake_at if wake is None else min(wake, done.wake_at)
        return wake

    def claim(
        self,
        store: stores.Store,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        free: int,
        executing: Mapping[str, int],
    ) -> list[history.RunInfo]:
        """Claim up to ``free`` runs of the served queues, each limited queue within its room."""
        if not self.local:
            return store.claim(
                worker_id,
                workflows,
                now=now,
                lease_until=lease_until,
                limit=free,
                queues=self.queues,
            )
        open_queues = [q for q in self.queues if q not in self.local]
        runs: list[history.RunInfo] = []
        if open_queues:
            runs = store.claim(
                worker_id,
                workflows,
                now=now,
                lease_until=lease_until,
                limit=free,
                queues=open_queues,
            )
        for queue, most in self.local.items():
            room = min(most - executing.get(queue, 0), free - len(runs))
            if room <= 0:
                continue
            try:
                runs += store.claim(
                    worker_id,
                    workflows,
                    now=now,
                    lease_until=lease_until,
                    limit=room,
                    queues=[queue],
                )
            except _errors.StoreError:
                if not runs:
                    raise
                break  # execute what was claimed; the next claim meets the failure again
        return runs

    def has_room(self, queue: str, executing: Mapping[str, int]) -> bool:
        """Whether the worker may execute one more run of ``queue``."""
        most = self.local.get(queue)
        return most is None or executing.get(queue, 0) < most


def describe(queues: Collection[str]) -> str:
    """The served queues for a log line, as users name them."""
    return ", ".join(_queue_config.shown(q) for q in sorted(queues))


def served_queues(
    names: Any, limits: Mapping[str, _queue_config.Queue], named: Collection[str], worker_id: str
) -> Served:
    """The :class:`Served` of a worker given ``queues=names`` by an engine with ``limits``.

    ``named``: the queues the engine's workflows name, which a worker given no
    ``queues`` serves too.
    """
    chosen = _queue_config.served(names, [*limits, *named])
    by_stored = {_queue_config.stored(name): queue for name, queue in limits.items()}
    return Served(chosen, by_stored, worker_id)
