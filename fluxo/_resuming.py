"""Resuming a cancelled run, and retrying a failed one: ``Engine.resume`` and ``Engine.retry``.

A cancelled run may be resumed where it is safe: when its cancellation recorded
nothing but itself (the history ends with ``cancel_requested`` right before
``workflow_cancelled``: no cleanup step, no compensation, no child's outcome), and
its deadline, if it has one, has not come. The store reopens it as it reopens a
failed run (``Store.reopen`` appends ``run_retried``), and replay skips the
cancellation (``_executor._cursor.replay_script``), so the run goes on from the
durable call that took delivery of it. Anywhere else, ``engine.fork`` re-runs it
from before the cancellation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fluxo import _errors, stores
from fluxo import history as _history

_SHOWN = 3
"""How many of the events a cancellation recorded a refusal names."""


def resume(store: stores.Store, run_id: str, *, now: Callable[[], float]) -> str:
    """``Engine.resume`` for a checked ``run_id``; the id of the run resumed (a chain's latest).

    Raises:
        RunStateError: the run is not cancelled, or resuming it is not safe (the
            message says why, and how to re-run it instead).
        RunNotFoundError: no such run.
    """
    run = stores.latest_run(store, run_id)
    if run.damage is not None:
        raise _errors.damaged_run(run.id, run.damage, "resumed")
    refusal = resume_refusal(run, store.load(run.id).events, now=now())
    if refusal is not None:
        raise _errors.RunStateError(refusal)
    try:
        store.reopen(run.id, now=now())
    except _errors.RunStateError as exc:  # resumed or purged meanwhile
        raise damage_error(store, run.id, "resumed") or _errors.RunStateError(
            f"run {run.id!r} could not be resumed: {exc}"
        ) from exc
    return run.id


def resume_refusal(
    run: _history.RunInfo, events: Sequence[_history.Event], *, now: float
) -> str | None:
    """Why ``run`` (with its history ``events``) may not be resumed now; ``None``: it may."""
    rid = _errors.quoted(run.id)
    if run.status in _history.RETRYABLE_STATUSES:
        return (
            f"run {rid} is {run.status.value}, not cancelled; only a cancelled run can be "
            f"resumed: retry a failed or dead run with engine.retry({rid}) (fluxo runs retry)"
        )
    if run.status is not _history.RunStatus.CANCELLED:
        return (
            f"run {rid} is {run.status.value}, not cancelled; only a cancelled run can be resumed"
        )
    request = _last_request(events)
    if request is None:
        return (
            f"run {rid} cannot be resumed: its history does not record where it took delivery "
            "of its cancellation (it holds no cancel_requested event after its last resumption)"
        )
    fork = f"engine.fork({rid}, from_position={request})"
    recorded = events[request + 1 : -1]
    if recorded or not isinstance(events[-1], _history.WorkflowCancelled):
        shown = ", ".join(event.describe() for event in recorded[:_SHOWN])
        more = len(recorded) - _SHOWN
        if more > 0:
            shown += f" and {more} more"
        return (
            f"run {rid} cannot be resumed: after its cancellation at position {request} it "
            f"recorded {shown or 'another end'} before it ended cancelled, and resuming would "
            "carry on past work done to unwind it; re-run it from before the cancellation in "
            f"a new run instead: {fork}"
        )
    if events[request].name == "deadline":
        return (
            f"run {rid} was cancelled by its deadline, and resumed it would be cancelled again "
            f"at once; re-run it from before the cancellation in a new run instead: {fork}"
        )
    if run.deadline is not None and now >= run.deadline:
        return (
            f"run {rid} is past its deadline, and resumed it would be cancelled again at "
            f"once; re-run it from before the cancellation in a new run instead: {fork}"
        )
    return None


def _last_request(events: Sequence[_history.Event]) -> int | None:
    """The position of the run's last cancellation, after its last resumption, if any."""
    for seq in range(len(events) - 1, 0, -1):
        if isinstance(events[seq], _history.RunRetried):
            return None
        if isinstance(events[seq], _history.CancelRequested):
            return seq
    return None


def retry(store: stores.Store, run_id: str, *, now: Callable[[], float]) -> None:
    """``Engine.retry`` for a checked ``run_id`` (see its docstring)."""
    run = store.get_run(run_id)
    if run.status not in _history.RETRYABLE_STATUSES:
        raise damage_error(store, run_id, "retried") or _errors.RunStateError(
            _errors.not_retryable(run_id, run.status.value)
        )
    try:
        store.reopen(run_id, now=now())
    except _errors.RunStateError as exc:
        status = store.get_run(run_id).status.value  # it changed meanwhile
        raise damage_error(store, run_id, "retried") or _errors.RunStateError(
            _errors.not_retryable(run_id, status)
        ) from exc


def damage_error(store: stores.Store, run_id: str, verb: str) -> _errors.RunStateError | None:
    """The error for a run whose record is damaged, ``None`` if it is not.

    Read once a store refused an operation on the run: a damaged status reads as
    ``failed``, so the store's own refusal would name the wrong state.
    """
    try:
        run = store.get_run(run_id)
    except _errors.FluxoError:
        return None
    return None if run.damage is None else _errors.damaged_run(run.id, run.damage, verb)
