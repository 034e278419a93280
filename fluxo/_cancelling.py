"""Cancelling a run: ``Engine.cancel``, taken out of the engine's module.

A run that has not begun is finished here, without a worker; any other active
run is flagged, and its executor delivers the cancellation at its next durable
call. A chain of runs is cancelled at its latest run.
"""

from __future__ import annotations

from collections.abc import Callable

from fluxo import _errors, _queues, stores
from fluxo import history as _history


def cancel(
    store: stores.Store,
    run_id: str,
    *,
    clock: Callable[[], float],
    damage_error: Callable[[str, str], _errors.RunStateError | None],
) -> _history.RunInfo:
    """``Engine.cancel`` for a checked ``run_id`` (see its docstring).

    ``damage_error(run_id, verb)`` is the error for a run whose record is damaged.
    """
    run = store.request_cancel(stores.latest_run(store, run_id).id, now=clock())
    while run.status is _history.RunStatus.COMPLETED:
        # It continued as new in the meantime: cancel the run it continued in.
        latest = stores.latest_run(store, run.id)
        if latest.id == run.id:
            break
        run = store.request_cancel(latest.id, now=clock())
    run_id = run.id
    if run.status is _history.RunStatus.CANCELLED:
        return run  # cancelling twice is harmless
    if run.status.is_terminal:
        raise damage_error(run_id, "cancelled") or _errors.RunStateError(
            f"run {run_id!r} already finished ({run.status.value}); there is nothing to cancel"
        )
    if run.status is _history.RunStatus.PENDING and run.lease_owner is None and not run.parent:
        # Not begun: finish it here, fenced at position 1, so it needs no worker.
        # If a worker got there first, the fence refuses and the flag delivers it.
        # (A child run is left to the executor, which tells its parent how it ended.)
        try:
            store.append(
                run_id,
                1,
                (_history.CancelRequested(), _history.WorkflowCancelled()),
                now=clock(),
                status=_history.RunStatus.CANCELLED,
            )
        except _errors.SequenceConflictError:
            pass  # begun, or retried or resumed since: it may await admission to its queue
        else:
            return store.get_run(run_id)
    _queues.admit_cancelled(store, run, now=clock())  # a child or a retried run: ends at once
    return run
