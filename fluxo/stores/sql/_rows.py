"""Rows of the SQL store: a new run's record and values, and a loaded run read back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fluxo import _errors, history
from fluxo.stores import _headers, _queue_rules
from fluxo.stores.sql import _database, _statements

RunStatus = history.RunStatus


def new_run(
    run_id: str,
    workflow: str,
    input: bytes,
    *,
    now: float,
    owner: str | None,
    lease_until: float | None,
    deadline: float | None,
    parent: str | None,
    headers: Mapping[str, str] | None,
    queue: str,
    priority: int,
    partition: str | None,
    start_at: float | None,
) -> tuple[history.RunInfo, dict[str, Any]]:
    """A new run's record, and the values of the statements that create it.

    A run of a named queue awaits admission from ``start_at`` (or ``now``); one of
    the default queue is ready then.

    Raises:
        ValueError: ``owner`` with a named queue or a ``start_at``.
    """
    _queue_rules.check_create(run_id, owner, queue, start_at)
    start = now if start_at is None else start_at
    queued = queue != history.DEFAULT_QUEUE
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
        headers=dict(headers) if headers else {},
        queue=queue,
        priority=priority,
        partition=partition,
        start_at=start if queued else None,
    )
    values = {
        "p_run_id": run_id,
        "p_workflow": workflow,
        "p_status": run.status.value,
        "p_owner": run.lease_owner,
        "p_lease_until": run.lease_until,
        "p_deadline": deadline,
        "p_parent": parent,
        "p_headers": _headers.encode(headers),
        "p_ready_at": run.ready_at,
        "p_queue": queue,
        "p_priority": priority,
        "p_partition": partition,
        "p_start_at": run.start_at,
        "p_now": now,
        "p_seq": 0,
        "p_kind": history.WorkflowStarted.kind,
        "p_name": workflow,
        "p_data": input,
    }
    return run, values


def state_from_rows(db: _database.Database, run_id: str, rows: Sequence[Any]) -> history.RunState:
    """The run, history and signals in the rows of the ``load`` statement."""
    if not rows or rows[0][0] != 0:
        raise _errors.RunNotFoundError(run_id)
    run = db.run_from_row(rows[0][_statements.LOAD_RUN :])
    records: list[tuple[int, str, str, bytes | None]] = []
    recorded_at: list[float] = []
    signals: list[history.Signal] = []
    for part, position, kind, name, data, at, *_ in rows:
        if part == 0:
            if kind is not None:  # None: a run without events (a damaged database)
                records.append((position, kind, name, None if data is None else bytes(data)))
                recorded_at.append(at)
        else:
            signals.append(history.Signal(int(position), name, bytes(data), at))
    events = history.read_events(run_id, records)
    if run.damage is not None:
        raise _errors.HistoryCorruptError(run_id, None, run.damage, len(events))
    return history.RunState(run, events, tuple(signals), tuple(recorded_at))


def finished_error(run_id: str, status: str) -> _errors.RunStateError:
    """What a signal to a run that has finished raises."""
    return _errors.RunStateError(
        f"run {run_id!r} has finished ({status}); a signal sent to it would never be read"
    )
