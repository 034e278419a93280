"""The SQL store's claims: ``claim`` (runnable runs, leased) and ``claim_run`` (one run).

On PostgreSQL a claim is one statement: it chooses the runs in ``ready_at`` order
with ``FOR UPDATE SKIP LOCKED`` and leases them, returning their rows. Elsewhere
a transaction chooses them (skipping locked rows on MySQL; SQLite writers take
turns) and leases them by id. A ``queues`` filter adds ``queue IN (...)`` to the
choice, read along the same ``ready_at`` index; without one the statement is the
same as before queues existed. A run awaiting admission has no ``ready_at``, so no
claim reads it, and ``claim_run`` refuses it by its ``start_at``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from fluxo import history
from fluxo.stores.sql import _database, _statements

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

RunStatus = history.RunStatus


def claim(
    db: _database.Database,
    worker_id: str,
    workflows: Collection[str],
    *,
    now: float,
    lease_until: float,
    limit: int,
    queues: Collection[str] | None,
) -> list[history.RunInfo]:
    """See :meth:`fluxo.stores.Store.claim`."""
    if limit <= 0 or not workflows or (queues is not None and not queues):
        return []
    names = _statements.bucket(workflows)
    values: dict[str, Any] = {f"p_wf{i}": name for i, name in enumerate(names)}
    values.update(p_worker=worker_id, p_now=now, p_lease_until=lease_until, p_limit=limit)
    served = _statements.queue_values(queues, values)

    if db.driver.name == "postgresql":
        sql = db.sql.claim_pg(len(names), served)

        def claim_pg(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, sql, values).fetchall()

        rows = db.call("claiming runs", claim_pg, writes=True)
        claimed = [db.run_from_row(row) for row in rows]
    else:
        select = db.sql.claim_select(len(names), served)

        def choose_then_lease(cur: DBAPICursor) -> list[history.RunInfo]:
            found = [db.run_from_row(r) for r in _database.execute(cur, select, values).fetchall()]
            if not found:
                return []
            ids = _statements.bucket([run.id for run in found])
            update = db.sql.claim_update(len(ids))
            keys = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
            _database.execute(cur, update, {**values, **keys})
            return [
                replace(
                    run,
                    status=RunStatus.RUNNING,
                    updated_at=now,
                    lease_owner=worker_id,
                    lease_until=lease_until,
                    wake_requested=False,
                    # still RUNNING: taken over from an execution that never ended
                    recoveries=run.recoveries + (run.status is RunStatus.RUNNING),
                )
                for run in found
            ]

        claimed = db.call("claiming runs", choose_then_lease, begin=db.driver.begin_write)
    claimed.sort(key=lambda run: (run.ready_at or 0.0, run.created_at, run.id))
    return claimed


def claim_run(
    db: _database.Database, worker_id: str, run_id: str, *, now: float, lease_until: float
) -> history.RunInfo | None:
    """See :meth:`fluxo.stores.Store.claim_run`."""
    values = {
        "p_run_id": run_id,
        "p_worker": worker_id,
        "p_now": now,
        "p_lease_until": lease_until,
    }

    if db.sql.returning:

        def lease(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, db.sql.claim_run, values).fetchall()

        rows = db.call("claiming a run", lease, writes=True)
    else:

        def lease_then_read(cur: DBAPICursor) -> Sequence[Any]:
            if _database.execute(cur, db.sql.claim_run, values).rowcount != 1:
                return ()
            return _database.execute(cur, db.sql.get_run, values).fetchall()

        rows = db.call("claiming a run", lease_then_read, begin=db.driver.begin_write)
    return db.run_from_row(rows[0]) if rows else None
