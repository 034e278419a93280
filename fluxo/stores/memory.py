"""An in-process store: the reference implementation of the contract, and the fastest.

Everything lives in dictionaries behind one lock, so the store shows the
engine's own overhead and serves tests. Nothing survives the process.
"""

from __future__ import annotations

import collections
import heapq
import threading
from collections.abc import Collection, Container, Mapping, Sequence
from dataclasses import replace

from fluxo import _errors, history
from fluxo.stores import _changes, _queue_rules

RunStatus = history.RunStatus
_EVENT_CLASSES = frozenset(history.EVENT_TYPES.values())
_FINISHED = frozenset(status for status in RunStatus if status.is_terminal)


class MemoryStore:
    """The in-memory :class:`~fluxo.stores.Store`. Thread-safe; one process only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._feed = _changes.ChangeFeed()
        self._runs: dict[str, history.RunInfo] = {}
        self._events: dict[str, list[history.Event]] = {}
        self._recorded_at: dict[str, list[float]] = {}
        self._signals: dict[str, list[history.Signal]] = {}
        self._signal_keys: dict[str, set[str]] = {}
        self._signal_id = 0
        self._workers: dict[str, float] = {}
        self._awaiting: dict[str, dict[str, None]] = {}  # queue -> runs awaiting admission
        self._queues: dict[str, tuple[int, bytes]] = {}  # queue -> (version, state)
        self._closed = False

    def __repr__(self) -> str:
        return f"MemoryStore(runs={len(self._runs)})"

    def _check_open(self) -> None:
        if self._closed:
            raise _errors.StoreError("this MemoryStore is closed; create a new one")

    def _notify(self, run_id: str) -> None:
        self._feed.changed(run_id)

    def _set_awaiting(self, run: history.RunInfo, awaiting: bool) -> None:
        """Keep the index of the runs awaiting admission of ``run``'s queue up to date."""
        if awaiting:
            self._awaiting.setdefault(run.queue, {})[run.id] = None
        elif run.start_at is not None:
            ids = self._awaiting.get(run.queue, {})
            ids.pop(run.id, None)
            if not ids:
                self._awaiting.pop(run.queue, None)

    def _get(self, run_id: str) -> history.RunInfo:
        try:
            return self._runs[run_id]
        except KeyError:
            raise _errors.RunNotFoundError(run_id) from None

    def create_run(
        self,
        run_id: str,
        workflow: str,
        input: bytes,
        *,
        now: float,
        owner: str | None = None,
        lease_until: float | None = None,
        deadline: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str] | None = None,
        queue: str = history.DEFAULT_QUEUE,
        priority: int = 0,
        partition: str | None = None,
        start_at: float | None = None,
    ) -> tuple[history.RunInfo, bool]:
        _queue_rules.check_create(run_id, owner, queue, start_at)
        start = now if start_at is None else start_at
        queued = queue != history.DEFAULT_QUEUE  # awaits admission
        with self._lock:
            self._check_open()
            existing = self._runs.get(run_id)
            if existing is not None:
                if existing.workflow != workflow:
                    raise _errors.RunIdConflictError(run_id, existing.workflow, workflow)
                return existing, False
            run = history.RunInfo(
                id=run_id,
                workflow=workflow,
                status=RunStatus.PENDING if owner is None else RunStatus.RUNNING,
                created_at=now,
                updated_at=now,
                ready_at=None if queued else start,
                lease_owner=owner,
                lease_until=lease_until if owner is not None else None,
                deadline=deadline,
                parent=parent,
                headers=dict(headers) if headers else {},  # a copy: the caller's may change
                queue=queue,
                priority=priority,
                partition=partition,
                start_at=start if queued else None,
            )
            self._runs[run_id] = run
            if queued:
                self._set_awaiting(run, True)
            self._events[run_id] = [history.WorkflowStarted(workflow, input)]
            self._recorded_at[run_id] = [now]
            self._notify(run_id)
            return run, True

    def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        unless_cancel_requested: bool = False,
    ) -> None:
        with self._lock:
            self._check_open()
            run = self._get(run_id)
            log = self._events[run_id]
            if expected_seq != len(log):
                raise _errors.SequenceConflictError(run_id, min(expected_seq, len(log)))
            if unless_cancel_requested and run.cancel_requested:
                raise _errors.CancelPendingError(run_id)
            log.extend(events)
            self._recorded_at[run_id].extend([now] * len(events))
            if status is not None:
                if status is RunStatus.WAITING and run.wake_requested:
                    status, ready_at = RunStatus.PENDING, now  # something arrived meanwhile
                self._set_awaiting(run, False)
                self._runs[run_id] = replace(
                    run,
                    status=status,
                    ready_at=ready_at,
                    updated_at=now,
                    lease_owner=None,
                    lease_until=None,
                    start_at=None,
                )
                self._notify(run_id)

    def load(self, run_id: str) -> history.RunState:
        with self._lock:
            self._check_open()
            run = self._get(run_id)
            events = tuple(self._events[run_id])
            signals = tuple(self._signals.get(run_id, ()))
            recorded_at = tuple(self._recorded_at[run_id])
        # A list has no gaps; what a damaged one can still hold is checked as elsewhere.
        if (
            not events
            or type(events[0]) is not history.WorkflowStarted
            or not _EVENT_CLASSES.issuperset(map(type, events))  # C speed: no loop in Python
        ):
            events = history.read_events(
                run_id, ((seq, e.kind, e.name, e.data) for seq, e in enumerate(events))
            )
        return history.RunState(run, events, signals, recorded_at)

    def get_run(self, run_id: str) -> history.RunInfo:
        with self._lock:
            self._check_open()
            return self._get(run_id)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        with self._lock:
            self._check_open()
            return {i: self._runs[i] for i in run_ids if i in self._runs}

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        with self._lock:
            self._check_open()
            ready = [
                run
                for run in self._runs.values()
                if not run.status.is_terminal
                and run.ready_at is not None
                and run.ready_at <= now
                and (run.lease_until is None or run.lease_until < now)
                and run.workflow in workflows
                and _queue_rules.in_queues(run.queue, queues)
            ]
            ready.sort(key=lambda r: (r.ready_at or 0.0, r.created_at))
            claimed = []
            for run in ready[:limit]:
                recovered = run.status is RunStatus.RUNNING  # its execution never ended
                claimed.append(self._lease(run, worker_id, now, lease_until, recovered))
            return claimed

    def _lease(
        self,
        run: history.RunInfo,
        worker_id: str,
        now: float,
        lease_until: float,
        recovered: bool,
    ) -> history.RunInfo:
        leased = replace(
            run,
            status=RunStatus.RUNNING,
            lease_owner=worker_id,
            lease_until=lease_until,
            updated_at=now,
            wake_requested=False,
            recoveries=run.recoveries + 1 if recovered else run.recoveries,
        )
        self._runs[run.id] = leased
        return leased

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None or run.status.is_terminal or run.start_at is not None:
                return None  # gone, finished, or awaiting admission
            held = run.lease_until is not None and run.lease_until >= now
            if held and run.lease_owner != worker_id:
                return None
            recovered = run.status is RunStatus.RUNNING and run.lease_owner != worker_id
            return self._lease(run, worker_id, now, lease_until, recovered)

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str] | None = None
    ) -> float | None:
        with self._lock:
            self._check_open()
            times = [
                max(run.ready_at, run.lease_until)
                if run.lease_until is not None and run.lease_until >= now  # a live lease
                else run.ready_at
                for run in self._runs.values()
                if not run.status.is_terminal
                and run.ready_at is not None
                and run.workflow in workflows
                and _queue_rules.in_queues(run.queue, queues)
            ]
        return min(times, default=None)

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        with self._lock:
            self._check_open()
            run = self._get(run_id)
            if run.status.is_terminal:
                raise _errors.RunStateError(
                    f"run {run_id!r} has finished ({run.status.value}); a signal sent to it "
                    "would never be read"
                )
            if key is not None:
                keys = self._signal_keys.setdefault(run_id, set())
                if key in keys:
                    return False
                keys.add(key)
            self._signal_id += 1
            self._signals.setdefault(run_id, []).append(
                history.Signal(self._signal_id, name, payload, now)
            )
            if run.status is RunStatus.WAITING:
                run = replace(run, status=RunStatus.PENDING, ready_at=now)
            self._runs[run_id] = replace(run, wake_requested=True, updated_at=now)
            self._notify(run_id)
            return True

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        held = {}
        with self._lock:
            self._check_open()
            for run_id in run_ids:
                run = self._runs.get(run_id)
                if run is not None and run.lease_owner == worker_id:
                    self._runs[run_id] = replace(run, lease_until=lease_until)
                    held[run_id] = run.cancel_requested
        return held

    def beat_worker(
        self,
        worker_id: str,
        *,
        now: float,
        alive_until: float,
        reap: bool = True,
        restarted: bool = False,
    ) -> list[str]:
        with self._lock:
            self._check_open()
            self._workers[worker_id] = alive_until
            dead = set()
            if reap:
                dead = {w for w, until in self._workers.items() if until < now and w != worker_id}
            owners = dead | {worker_id} if restarted else dead
            freed = [
                run.id
                for run in self._runs.values()
                if run.lease_owner in owners
                and not run.status.is_terminal
                and run.lease_until is not None
                and run.lease_until > now
            ]
            for run_id in freed:
                self._runs[run_id] = replace(self._runs[run_id], lease_until=now)
                self._notify(run_id)
            for gone in dead:
                del self._workers[gone]
            return freed

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._check_open()
            self._workers.pop(worker_id, None)

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        with self._lock:
            self._check_open()
            run = self._runs.get(run_id)
            if run is None or run.lease_owner != worker_id:
                return
            status = RunStatus.PENDING if run.status is RunStatus.RUNNING else run.status
            self._runs[run_id] = replace(
                run, status=status, lease_owner=None, lease_until=None, updated_at=now
            )
            self._notify(run_id)

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        with self._lock:
            self._check_open()
            run = self._get(run_id)
            if run.status.is_terminal:
                return run
            if run.status is RunStatus.WAITING:
                run = replace(run, status=RunStatus.PENDING, ready_at=now)
            run = replace(run, cancel_requested=True, wake_requested=True, updated_at=now)
            self._runs[run_id] = run
            self._notify(run_id)
            return run

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        with self._lock:
            self._check_open()
            run = self._get(run_id)
            if run.status not in history.REOPENABLE_STATUSES:
                raise _errors.RunStateError(_errors.not_reopenable(run_id, run.status.value))
            self._events[run_id].append(history.RunRetried())
            self._recorded_at[run_id].append(now)
            queued = run.queue != history.DEFAULT_QUEUE  # awaits admission again
            run = replace(
                run,
                status=RunStatus.PENDING,
                ready_at=None if queued else now,
                updated_at=now,
                lease_owner=None,
                lease_until=None,
                cancel_requested=False,
                recoveries=0,
                start_at=now if queued else None,
            )
            self._runs[run_id] = run
            if queued:
                self._set_awaiting(run, True)
            self._notify(run_id)
            return run

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        with self._lock:
            self._check_open()
            waiting = [self._runs[run_id] for run_id in self._awaiting.get(queue, ())]
        due = [run for run in waiting if run.start_at is not None and run.start_at <= now]
        later = [run.start_at for run in waiting if run.start_at is not None and run.start_at > now]
        chosen = heapq.nsmallest(max(limit, 0), due, key=_queue_rules.admission_order)
        return chosen, min(later, default=None)

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        admitted = []
        with self._lock:
            self._check_open()
            for run_id in dict.fromkeys(run_ids):  # each once
                run = self._runs.get(run_id)
                if run is None or run.start_at is None or run.status.is_terminal:
                    continue
                self._set_awaiting(run, False)
                self._runs[run_id] = replace(
                    run, status=RunStatus.PENDING, ready_at=now, start_at=None, updated_at=now
                )
                admitted.append(run_id)
                self._notify(run_id)
        return admitted

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        with self._lock:
            self._check_open()
            return self._queues.get(queue, (0, b""))

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        _queue_rules.check_state(queue, state)
        with self._lock:
            self._check_open()
            if self._queues.get(queue, (0, b""))[0] != version:
                return False
            self._queues[queue] = (version + 1, bytes(state))  # a copy: bytearray may change
            return True

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        with self._lock:
            self._check_open()
            runs = [
                run
                for run in self._runs.values()
                if (statuses is None or run.status in statuses)
                and (workflows is None or run.workflow in workflows)
                and (created_after is None or run.created_at >= created_after)
                and (created_before is None or run.created_at < created_before)
                and (not id_prefix or run.id.startswith(id_prefix))
                and _queue_rules.in_queues(run.queue, queues)
            ]
        runs.sort(key=lambda r: r.created_at, reverse=True)
        return runs[:limit]

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        with self._lock:
            self._check_open()
            return dict(collections.Counter((r.workflow, r.status) for r in self._runs.values()))

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        wanted = {RunStatus(s) for s in statuses} & _FINISHED
        with self._lock:
            self._check_open()
            chosen: list[str] = []
            for run in self._runs.values():
                if len(chosen) >= limit:
                    break
                parent = None if run.parent is None else self._runs.get(run.parent)
                if (
                    run.status in wanted
                    and max(run.created_at, run.updated_at) < finished_before
                    and (workflows is None or run.workflow in workflows)
                    and (parent is None or parent.status not in history.KEEPING_PARENTS)
                    and not (
                        run.status is RunStatus.COMPLETED
                        and history.chain_next(run.id) in self._runs
                    )
                ):
                    chosen.append(run.id)
            if not dry_run:
                for run_id in chosen:
                    del self._runs[run_id], self._events[run_id], self._recorded_at[run_id]
                    self._signals.pop(run_id, None)
                    self._signal_keys.pop(run_id, None)
            return len(chosen)

    def change_token(self, run_id: str | None) -> object:
        return self._feed.token()

    def wait_for_change(
        self,
        run_id: str | None,
        timeout: float,
        since: object = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        return self._feed.wait(self._feed.since(since), timeout, run_id, ignoring=ignoring)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._feed.close()
