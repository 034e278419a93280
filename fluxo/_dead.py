"""Dead runs: a run whose executions keep dying is ended ``dead`` instead of run again.

A claim that takes a run over from an execution that never ended (its lease ran
out, or its worker was found dead) counts a recovery on the run
(``RunInfo.recoveries``, kept by the store in the claim itself). A workflow's
``max_recoveries`` bounds them: the execution that finds the run recovered more
often than that runs no user code. It records ``run_died`` with the status
``DEAD``, fenced like any record, and tells the run's parent as a failure.
``engine.retry`` resumes a dead run, with its count back at 0.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fluxo import _errors, _executor, _observers, _payloads, codec, history, observe, stores

if TYPE_CHECKING:
    from collections.abc import Callable

    from fluxo import _definitions

log = logging.getLogger(__name__)


def is_due(workflow: _definitions.Workflow[Any, Any], run: history.RunInfo) -> bool:
    """True when ``run`` was taken over more often than its workflow's ``max_recoveries``."""
    limit = workflow.max_recoveries
    return limit is not None and run.recoveries > limit


def describe(state: history.RunState, limit: int) -> str:
    """Why the run is dead: how often it was taken over, and how far it had got."""
    run = state.run
    last = state.events[-1]
    times = "once" if run.recoveries == 1 else f"{run.recoveries} times"
    return (
        f"its executions died {times} (max_recoveries={limit}): each was taken over after "
        "its worker died or its lease ran out, without the execution ending. The last "
        f"record is at position {len(state.events) - 1} ({last.describe()}), so they died "
        "after it; fix the cause, then retry the run (engine.retry, fluxo runs retry)"
    )


def end_dead(
    store: stores.Store,
    *,
    codec: codec.Codec,
    clock: Callable[[], float],
    observers: _observers.Dispatch,
    owner: str,
    state: history.RunState,
    workflow: _definitions.Workflow[Any, Any],
) -> _executor.Outcome:
    """End ``state``'s run ``dead``, which ``owner`` claimed, without running its workflow.

    Records ``RunDied`` carrying a :class:`fluxo.RunDiedError` where the history
    ends, with the status ``DEAD``, so no worker claims the run again. Its parent,
    if it has one, is told first, as of a failure. Returns ``FAILED`` (the
    observers hear ``run_failed`` with the error type ``fluxo.RunDiedError``);
    ``LOST`` when another writer got there first; ``BROKEN`` when the store could
    not take the write: the lease is kept, and its expiry spaces out the next try.
    """
    run = state.run
    limit = workflow.max_recoveries
    assert limit is not None
    error = _errors.RunDiedError(
        run.id, type_name="fluxo.RunDiedError", error_message=describe(state, limit)
    )
    info = _payloads.error_info(error)
    data = codec.encode(info)
    log.error(
        "run %s of %s is dead: %s",
        run.id,
        workflow.name,
        info.message,
        extra={"fluxo_run_id": run.id, "fluxo_workflow": workflow.name},
    )
    try:
        if run.parent is not None:
            retries = sum(isinstance(e, history.RunRetried) for e in state.events)
            outcome = _payloads.ChildOutcome("failed", data, run.id, retries)
            key = f"{history.SIGNAL_PREFIX}{run.id}:{retries}"  # as any end of this run
            _executor.tell_parent(store, run.parent, outcome, now=clock(), key=key)
        store.append(
            run.id,
            state.next_seq,
            [history.RunDied(data=data)],
            now=clock(),
            status=history.RunStatus.DEAD,
        )
    except (_errors.SequenceConflictError, _errors.RunNotFoundError):
        return _executor.Outcome.LOST
    except _errors.StoreError as exc:
        log.warning(
            "run %s: could not record that it is dead (%s); trying again when its lease expires",
            run.id,
            exc,
            extra={"fluxo_run_id": run.id},
        )
        return _executor.Outcome.BROKEN
    if observers.run_failed:
        now = clock()
        event = observe.RunEvent(
            kind="run_failed",
            run_id=run.id,
            workflow=run.workflow,
            time=now,
            position=state.next_seq,
            duration=now - run.created_at,
            error_type=info.type,
            error_message=info.message,
            worker=owner,
            parent=run.parent,
            headers=run.headers,
        )
        observers.emit(observers.run_failed, event)
    return _executor.Outcome.FAILED
