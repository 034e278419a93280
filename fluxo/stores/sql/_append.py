"""The SQL store's ``append``: the hot path, and its fenced and guarded forms.

Fencing: ``fluxo_events`` has the primary key ``(run_id, seq)``. An append
inserts its first event only if the position before it exists (in the same
statement), so a history has neither duplicates nor gaps; a unique violation
becomes :class:`~fluxo._errors.SequenceConflictError`. One event without a status
(and on PostgreSQL, with one; or two events with a status, a step's record and
the run's end) is a single statement in autocommit mode: one round trip, with no
read before it. An ``append`` that suspends a run (``WAITING``)
yields to a wake-up that arrived meanwhile within its own ``UPDATE`` (a ``CASE``
on ``wake_requested``): still no read before the write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from fluxo import _errors, history
from fluxo.stores.sql import _database, _group, _statements

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

RunStatus = history.RunStatus


def append(
    db: _database.Database,
    run_id: str,
    expected_seq: int,
    events: Sequence[history.Event],
    *,
    now: float,
    status: history.RunStatus | None = None,
    ready_at: float | None = None,
    unless_cancel_requested: bool = False,
) -> None:
    """See :meth:`fluxo.stores.Store.append`: the caller wakes waiters when a status was written."""
    if expected_seq < 0:
        _refused(db, run_id, expected_seq)
    if db.driver.name == "mysql":
        db.check_size("recording history", sum(len(e.data or b"") for e in events))
    if unless_cancel_requested:
        _unless_cancelled(
            db, run_id, expected_seq, events, now=now, status=status, ready_at=ready_at
        )
        return
    if not events:
        if status is not None:
            _status_only(db, run_id, expected_seq, now=now, status=status, ready_at=ready_at)
        else:
            _nothing(db, run_id, expected_seq)
        return
    first = events[0]
    if status is None and len(events) == 1 and expected_seq > 0 and db.group is not None:
        # A step's record: written with those of the worker's other executions.
        written = db.group.submit(_group.Record(run_id, expected_seq, first, now))
        if written:
            return
        if written is False:
            _refused(db, run_id, expected_seq)
        # None: the group's write failed; this one is written alone, below.
    values: dict[str, Any] = {
        "p_run_id": run_id,
        "p_seq": expected_seq,
        "p_prev": expected_seq - 1,
        "p_kind": first.kind,
        "p_name": first.name,
        "p_data": first.data,
        "p_now": now,
    }
    guarded = db.sql.insert_event_after if expected_seq else db.sql.insert_event_first
    waiting = status is RunStatus.WAITING
    if status is not None:
        values["p_status"] = status.value
        values["p_ready_at"] = ready_at

    def conflict(exc: BaseException) -> None:
        if db.driver.is_unique_violation(exc):
            raise _errors.SequenceConflictError(run_id, expected_seq) from exc

    pg_two = len(events) == 2 and status is not None and db.driver.name == "postgresql"
    if (len(events) == 1 and (status is None or db.driver.name == "postgresql")) or pg_two:
        # The hot path: a single statement in autocommit, one round trip (on
        # PostgreSQL also a step's record and the run's end, with its status).
        sql: _statements.Sql | None = guarded
        if status is not None and expected_seq:
            sql = db.sql.pg_append_with_status[len(events), waiting]
            values.update(_second(events, expected_seq))
        elif status is not None:
            sql = None  # position 0 with a status: a conflict, found the long way

        if sql is not None:

            def single(cur: DBAPICursor) -> int:
                try:
                    return int(_database.execute(cur, sql, values).rowcount)
                except db.driver.dbapi.IntegrityError as exc:
                    conflict(exc)
                    raise

            if db.call("recording history", single, writes=True) != 1:
                _refused(db, run_id, expected_seq)
            return

    def batch(cur: DBAPICursor) -> None:
        try:
            if _database.execute(cur, guarded, values).rowcount != 1:
                raise _database.Missing
            if len(events) > 1:
                rest = [
                    db.sql.insert_event.args(
                        {
                            "p_run_id": run_id,
                            "p_seq": expected_seq + i,
                            "p_kind": event.kind,
                            "p_name": event.name,
                            "p_data": event.data,
                            "p_now": now,
                        }
                    )
                    for i, event in enumerate(events[1:], start=1)
                ]
                cur.executemany(db.sql.insert_event.text, rest)  # type: ignore[arg-type]
        except db.driver.dbapi.IntegrityError as exc:
            conflict(exc)
            raise
        if status is not None:
            _database.execute(cur, db.sql.set_status[waiting], values)

    try:
        db.call("recording history", batch, begin=db.driver.begin_write)
    except _database.Missing:
        _refused(db, run_id, expected_seq)


def _unless_cancelled(
    db: _database.Database,
    run_id: str,
    expected_seq: int,
    events: Sequence[history.Event],
    *,
    now: float,
    status: history.RunStatus | None,
    ready_at: float | None,
) -> None:
    """``append(unless_cancel_requested=True)``: refused while a cancellation is pending.

    On PostgreSQL one event with a status (a run's end) is one statement that
    locks the run's row first. Otherwise a transaction locks the row, writes
    under the fence, and rolls back if the run's ``cancel_requested`` is set.
    """
    waiting = status is RunStatus.WAITING
    values: dict[str, Any] = {
        "p_run_id": run_id,
        "p_seq": expected_seq,
        "p_prev": expected_seq - 1,
        "p_now": now,
        "p_status": None if status is None else status.value,
        "p_ready_at": ready_at,
    }
    if events:
        values.update(p_kind=events[0].kind, p_name=events[0].name, p_data=events[0].data)

    def conflict(exc: BaseException) -> None:
        if db.driver.is_unique_violation(exc):
            raise _errors.SequenceConflictError(run_id, expected_seq) from exc

    if (
        db.driver.name == "postgresql"
        and len(events) in (1, 2)
        and status is not None
        and expected_seq > 0
    ):
        sql = db.sql.pg_append_unless_cancelled[len(events), waiting]
        values.update(_second(events, expected_seq))

        def single(cur: DBAPICursor) -> int:
            try:
                return int(_database.execute(cur, sql, values).rowcount)
            except db.driver.dbapi.IntegrityError as exc:
                conflict(exc)
                raise

        if db.call("recording history", single, writes=True) != 1:
            if db.read_run(run_id).cancel_requested and (
                history_length(db, run_id) == expected_seq
            ):
                raise _errors.CancelPendingError(run_id)
            _refused(db, run_id, expected_seq)
        return

    def checked(cur: DBAPICursor) -> None:
        row = _database.execute(cur, db.sql.lock_run, values).fetchall()
        if not row:
            raise _database.Missing
        try:
            if events:
                sql = db.sql.insert_event_after if expected_seq else None
                first = sql or db.sql.insert_event_first
                if _database.execute(cur, first, values).rowcount != 1:
                    raise _database.Missing
                rest = [
                    db.sql.insert_event.args(
                        {
                            "p_run_id": run_id,
                            "p_seq": expected_seq + i,
                            "p_kind": event.kind,
                            "p_name": event.name,
                            "p_data": event.data,
                            "p_now": now,
                        }
                    )
                    for i, event in enumerate(events[1:], start=1)
                ]
                if rest:
                    cur.executemany(db.sql.insert_event.text, rest)  # type: ignore[arg-type]
            else:
                last = _database.execute(cur, db.sql.append_state, values).fetchall()[0][1]
                if (0 if last is None else int(last) + 1) != expected_seq:
                    raise _database.Missing
        except db.driver.dbapi.IntegrityError as exc:
            conflict(exc)
            raise
        if row[0][0]:
            raise _database.CancelPending
        if status is not None:
            _database.execute(cur, db.sql.set_status[waiting], values)

    try:
        db.call("recording history", checked, begin=db.driver.begin_write)
    except _database.Missing:
        _refused(db, run_id, expected_seq)
    except _database.CancelPending:
        raise _errors.CancelPendingError(run_id) from None


def _second(events: Sequence[history.Event], expected_seq: int) -> dict[str, Any]:
    """The parameters of a second event, for PostgreSQL's two-event statements."""
    if len(events) < 2:
        return {}
    second = events[1]
    return {
        "p_seq1": expected_seq + 1,
        "p_kind1": second.kind,
        "p_name1": second.name,
        "p_data1": second.data,
    }


def _status_only(
    db: _database.Database,
    run_id: str,
    expected_seq: int,
    *,
    now: float,
    status: history.RunStatus,
    ready_at: float | None,
) -> None:
    values = {
        "p_run_id": run_id,
        "p_prev": expected_seq - 1,
        "p_status": status.value,
        "p_ready_at": ready_at,
        "p_now": now,
    }

    sql = db.sql.set_status_fenced[status is RunStatus.WAITING]

    def update(cur: DBAPICursor) -> int:
        return int(_database.execute(cur, sql, values).rowcount)

    if db.call("changing a run's status", update, writes=True) != 1:
        _refused(db, run_id, expected_seq)


def _nothing(db: _database.Database, run_id: str, expected_seq: int) -> None:
    if history_length(db, run_id) != expected_seq:
        _refused(db, run_id, expected_seq)


def history_length(db: _database.Database, run_id: str) -> int:
    """The length of the run's history. Raises ``RunNotFoundError``."""

    def read(cur: DBAPICursor) -> Sequence[Any]:
        return _database.execute(cur, db.sql.append_state, {"p_run_id": run_id}).fetchall()

    found, last = db.call("reading a run", read)[0]
    if found is None:
        raise _errors.RunNotFoundError(run_id)
    return 0 if last is None else int(last) + 1


def _refused(db: _database.Database, run_id: str, expected_seq: int) -> NoReturn:
    """Raise what an append at ``expected_seq`` that wrote nothing ran into."""
    length = history_length(db, run_id)
    raise _errors.SequenceConflictError(run_id, min(expected_seq, length))
