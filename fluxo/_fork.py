"""Forking a run: a new run that replays the first positions of another's history.

``engine.fork(run_id, from_position=n)`` creates a run of the same workflow with the
same input whose history is the source's positions ``0 .. n-1``; a worker then
replays them (nothing recorded there runs again) and executes the rest with the
code deployed now. The signals that prefix consumed are sent to the new run first,
oldest first, so the counts replay relies on hold and a later wait sees only new
signals. The new run's headers name its source and the cut (:data:`FORKED_FROM`,
:data:`FORK_POSITION`).

The copy is crash safe. The new run is created leased to the forking engine, its
copied signals are sent under keys of their own (idempotent), and the prefix is
appended in one write fenced at position 1, which also makes the run ready and
clears the lease. If the process dies in between, the worker that claims the run
once the lease expires finds a forked run holding only its ``workflow_started``
and completes the copy itself (:func:`complete`), or fails the run saying why.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fluxo import _errors, _names, _observers, _payloads, _queue_config, history, stores
from fluxo import codec as _codec

log = logging.getLogger(__name__)

FORKED_FROM = "fluxo-forked-from"
"""The header naming the run a forked run was forked from."""
FORK_POSITION = "fluxo-fork-position"
"""The header holding the position of the cut: the forked run copied the positions before it."""
_SIGNAL_KEY = f"{history.SIGNAL_PREFIX}fork:"
"""The key of the ``i``-th signal copied to a forked run is this plus ``i``."""

_ENDS = (
    history.WorkflowCompleted,
    history.WorkflowFailed,
    history.WorkflowCancelled,
    history.ContinuedAsNew,
    history.RunDied,
)
_CONSUMING = (history.SignalReceived, history.SignalRejected)


@dataclass(frozen=True, slots=True)
class Prefix:
    """What a forked run takes from its source: its first events and the signals they consumed.

    ``signals`` are in the order the source received them.
    """

    source: str
    events: tuple[history.Event, ...]
    signals: tuple[history.Signal, ...]


def cut(state: history.RunState, position: object, codec: _codec.Codec) -> Prefix:
    """The prefix of ``state``'s history before ``position``, if a new run can replay it.

    Raises:
        DefinitionError: ``position`` is not a whole number from 1 to the history's length.
        RunStateError: the prefix cannot be replayed by a new run; the message says
            why, and which positions can.
    """
    source, events = state.run.id, state.events
    if not isinstance(position, int) or isinstance(position, bool) or position < 1:
        raise _errors.DefinitionError(
            f"from_position must be a whole number of at least 1 (position 0 is the run's "
            f"start, which every fork keeps), not {_errors.quoted(position)}"
        )
    if position > len(events):
        raise _errors.DefinitionError(
            f"from_position={position} is past the end of run {source!r}, whose history holds "
            f"{len(events)} events (positions 0 to {len(events) - 1}); give at most {len(events)}"
        )
    open_children: dict[str, int] = {}
    for seq in range(1, position):
        event = events[seq]
        refusal = None
        if isinstance(event, history.CancelRequested) and not _retried(events, seq + 1, position):
            refusal = (
                f"run {source!r} took a cancellation at position {seq}, which would cancel "
                f"the new run as soon as it replayed it"
            )
        elif isinstance(event, _ENDS) and not _retried(events, seq, position):
            refusal = f"run {source!r} ended at position {seq} ({event.kind})"
        if refusal is not None:
            raise _errors.RunStateError(
                f"{refusal}; fork it from position {seq} or earlier (from_position={position} "
                "was asked)"
            )
        if isinstance(event, history.ChildStarted) and not _refused_child(event, codec):
            open_children[event.name] = seq
        elif isinstance(event, history.CHILD_OUTCOMES):
            open_children.pop(event.name, None)
    if open_children:
        child, seq = next(iter(open_children.items()))
        raise _errors.RunStateError(
            f"run {source!r} started child run {child!r} at position {seq} and the cut at "
            f"{position} comes before its outcome: the child reports to {source!r}, so the new "
            f"run would wait for it in vain; fork from position {seq} or earlier, or from after "
            "the child's child_completed/child_failed/child_cancelled event"
        )
    return Prefix(source, events[:position], _consumed(state, position))


def _retried(events: Sequence[history.Event], seq: int, position: int) -> bool:
    """Tell whether the end at ``seq`` was retried or resumed within the prefix.

    A failure or death retried (``engine.retry``), or a cancellation resumed
    (``engine.resume``): ``RunRetried`` follows it.
    """
    return (
        seq < len(events)
        and isinstance(events[seq], (*history.FAILURE_ENDS, history.WorkflowCancelled))
        and seq + 1 < position
        and isinstance(events[seq + 1], history.RunRetried)
    )


def _refused_child(event: history.Event, codec: _codec.Codec) -> bool:
    """Tell whether a ``ChildStarted`` records a start the store refused (no child exists)."""
    try:
        start: _payloads.ChildStart = codec.decode(event.data or b"null", _payloads.ChildStart)
    except Exception:
        return False
    return start.error is not None


def _consumed(state: history.RunState, position: int) -> tuple[history.Signal, ...]:
    """The signals the events before ``position`` consumed, in the order they were received.

    Each ``SignalReceived`` or ``SignalRejected`` consumed the oldest remaining signal of
    its name.
    """
    pending: dict[str, collections.deque[history.Signal]] = {}
    for signal in sorted(state.signals, key=lambda s: s.id):
        pending.setdefault(signal.name, collections.deque()).append(signal)
    taken: list[history.Signal] = []
    for seq in range(1, position):
        event = state.events[seq]
        if not isinstance(event, _CONSUMING):
            continue
        queue = pending.get(event.name)
        if not queue:
            raise _errors.RunStateError(
                f"run {state.run.id!r} consumed signal {event.name!r} at position {seq}, but "
                "the store holds no such signal for it (its record is damaged), so its "
                f"signals cannot be copied; fork it from position {seq} or earlier"
            )
        taken.append(queue.popleft())
    return tuple(sorted(taken, key=lambda s: s.id))


class Parts(Protocol):
    """What forking needs of an engine: its runner has all of it."""

    store: stores.Store
    codec: _codec.Codec
    clock: Callable[[], float]
    observers: _observers.Dispatch
    instance_id: str


def fork(
    engine: Parts,
    lookup: Callable[[str], object],
    run_id: str,
    position: object,
    new_id: str | None,
    *,
    lease: float,
) -> str:
    """``Engine.fork``: create the forked run and copy its prefix into it; return its id.

    ``lookup`` raises ``UnknownWorkflowError`` for a workflow the engine does not know.
    The run is leased to this engine for ``lease`` seconds until its copy is made.
    """
    _names.check_run_id(run_id)
    if new_id is not None:
        _names.check_start_id(new_id)
    store = engine.store
    try:
        state = store.load(run_id)
    except _errors.RunNotFoundError:
        if new_id is not None and _is_fork_of(store, new_id, run_id, position):
            return new_id  # forked before the source went
        raise
    if state.run.workflow.startswith(_names.SCHEDULE_WORKFLOW_PREFIX):
        raise _errors.RunStateError(
            f"run {run_id!r} is Fluxo's own ({state.run.workflow}): a fork would run a second "
            "copy of it; pause, resume or trigger a schedule with engine.schedules instead"
        )
    try:
        lookup(state.run.workflow)
    except _errors.UnknownWorkflowError as exc:
        raise _errors.UnknownWorkflowError(
            f"{exc}; the workers of the engine that forks run the fork (from the command "
            "line, name your app with --app)"
        ) from None
    prefix = cut(state, position, engine.codec)
    fork_id = new_id or uuid.uuid4().hex
    headers = _headers(engine.observers, state.run, fork_id, len(prefix.events))
    now = engine.clock()
    copying = len(prefix.events) > 1
    source = state.run
    queued = _queue_config.inherit(source)  # the fork goes in the source's queue
    # A fork awaiting admission needs no lease while it is copied: no claim takes it, and
    # one admitted early completes the copy itself (``complete``), fenced at position 1.
    leased = copying and "queue" not in queued
    owner = f"{engine.instance_id}:fork:{uuid.uuid4().hex[:8]}" if leased else None
    run, created = store.create_run(
        fork_id,
        source.workflow,
        prefix.events[0].data or b"",
        now=now,
        owner=owner,
        lease_until=now + lease if leased else None,
        deadline=None if source.deadline is None else now + source.deadline - source.created_at,
        headers=headers,
        **queued,
    )
    if not created:
        asked = {FORKED_FROM: run_id, FORK_POSITION: str(len(prefix.events))}
        found = {key: run.headers.get(key) for key in asked}
        if found != asked:
            raise _errors.RunIdConflictError(
                fork_id,
                run.workflow,
                f"{source.workflow} (a fork of run {run_id!r} from position {len(prefix.events)})",
            )
        return fork_id
    observers = engine.observers
    if observers.run_started:
        observers.emit(observers.run_started, _observers.told(run, "run_started", now, 0))
    if copying:
        try:
            copy(
                store,
                fork_id,
                prefix,
                engine.clock,
                status=history.RunStatus.PENDING if leased else None,
            )
        except Exception:
            if leased:
                _give_back(store, owner, fork_id, engine.clock)
            raise
    log.info(
        "run %s forked from run %s at position %d",
        fork_id,
        run_id,
        len(prefix.events),
        extra={"fluxo_run_id": fork_id},
    )
    return fork_id


def _give_back(
    store: stores.Store, owner: str | None, fork_id: str, clock: Callable[[], float]
) -> None:
    """Release a fork whose copy failed, for a worker to complete (:func:`complete`).

    At once, rather than when the lease expires; and as a release, so the worker's
    claim is no takeover of an execution: the forking engine was not executing the
    run, and the fork's ``recoveries`` stay 0 (``max_recoveries=0`` holds).
    """
    if owner is None:
        return
    try:
        store.release(owner, fork_id, now=clock())
    except _errors.StoreError as exc:
        log.warning(
            "run %s: could not give it back after its copy failed (%s); a worker "
            "completes the copy when the lease expires",
            fork_id,
            exc,
            extra={"fluxo_run_id": fork_id},
        )


def _is_fork_of(store: stores.Store, fork_id: str, run_id: str, position: object) -> bool:
    try:
        headers = store.get_run(fork_id).headers
    except _errors.RunNotFoundError:
        return False
    return headers.get(FORKED_FROM) == run_id and headers.get(FORK_POSITION) == str(position)


def _headers(
    observers: _observers.Dispatch, source: history.RunInfo, fork_id: str, position: int
) -> dict[str, str]:
    made = observers.headers(source.workflow, fork_id, None) if observers.active else None
    return {**(made or {}), FORKED_FROM: source.id, FORK_POSITION: str(position)}


def copy(
    store: stores.Store,
    fork_id: str,
    prefix: Prefix,
    clock: Callable[[], float],
    *,
    status: history.RunStatus | None,
) -> bool:
    """Send the prefix's signals to the forked run, then append its events at position 1.

    Each signal goes under a key of its own, so a copy done again sends none twice.
    The append is fenced at position 1: False when another writer recorded there
    first (it completed the copy, or the run was failed). With ``status`` (``PENDING``)
    the append makes the run ready and clears the lease; without, the lease is kept
    for the caller's execution.
    """
    for index, signal in enumerate(prefix.signals):
        store.send_signal(
            fork_id, signal.name, signal.payload, now=clock(), key=f"{_SIGNAL_KEY}{index}"
        )
    now = clock()
    try:
        store.append(
            fork_id,
            1,
            prefix.events[1:],
            now=now,
            status=status,
            ready_at=now if status is not None else None,
        )
    except _errors.SequenceConflictError:
        return False
    return True


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a run gives the next run of its chain (``continue_as_new``): the trace.

    Not the fork's: the next run of a forked run's chain is no fork (it copies nothing,
    and a worker would take it for a fork whose copy was never made).
    """
    return {k: v for k, v in headers.items() if k not in (FORKED_FROM, FORK_POSITION)}


def unfinished(state: history.RunState) -> int | None:
    """The cut of a forked run whose copy has not been made yet; ``None`` for any other run."""
    raw = state.run.headers.get(FORK_POSITION)
    if raw is None or FORKED_FROM not in state.run.headers or len(state.events) != 1:
        return None
    position = int(raw) if raw.isascii() and raw.isdigit() else 0
    return position if position > 1 else None


def complete(
    store: stores.Store, codec: _codec.Codec, clock: Callable[[], float], state: history.RunState
) -> Exception | None:
    """Complete the copy of a forked run whose forking process died: ``None`` once done.

    The caller holds the run's lease and keeps it. The source is read again and cut
    as the fork was; the signals already copied must be the first of those to copy
    (anything else was sent by someone else in between, which would take their
    places). Returns the error to fail the run with when the copy cannot be made:
    the source is gone or damaged, or no longer fits.
    """
    run = state.run
    source_id = run.headers[FORKED_FROM]
    position = unfinished(state)
    assert position is not None
    try:
        source = store.load(source_id)
    except (_errors.RunNotFoundError, _errors.HistoryCorruptError) as exc:
        return _errors.RunStateError(
            f"run {run.id!r} is a fork of run {source_id!r} from position {position}, whose "
            f"forking stopped before the copy was made, and the source cannot be read now "
            f"({exc}); fork the source again, or start a new run"
        )
    try:
        prefix = cut(source, position, codec)
        if source.events[0] != state.events[0]:
            raise _errors.RunStateError(
                f"run {source_id!r} is no longer the run it was forked from (its workflow or "
                "input differ)"
            )
        sent = [(s.name, s.payload) for s in sorted(state.signals, key=lambda s: s.id)]
        wanted = [(s.name, s.payload) for s in prefix.signals]
        if sent != wanted[: len(sent)]:
            raise _errors.RunStateError(
                f"signals were sent to run {run.id!r} before the copy of its source's "
                "signals completed, and would be consumed in their place"
            )
    except _errors.FluxoError as exc:
        return _errors.RunStateError(
            f"run {run.id!r}, a fork of run {source_id!r} from position {position}, cannot "
            f"complete its copy: {exc}"
        )
    copy(store, run.id, prefix, clock, status=None)
    return None


def source(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """``{"run": source id, "position": cut}`` for a forked run's headers; ``None`` for others."""
    run = headers.get(FORKED_FROM)
    if run is None:
        return None
    raw = headers.get(FORK_POSITION, "")
    return {"run": run, "position": int(raw) if raw.isascii() and raw.isdigit() else raw}
