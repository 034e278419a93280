"""Taking a held run back: what :meth:`SQLStore.take_back` runs.

A worker may hold a short recorded wait in the execution's thread
(:class:`fluxo._leases.RunHolder`). When the run is woken, that thread leases the
run again and goes on without replaying, once it knows that the history is still
the one it holds and which signals were sent. ``take_back`` does all of that in
two statements:

* an ``UPDATE`` that leases the run only if it is active, unleased (or leased to
  the worker already) and woken: a signal or a cancellation arrived, or the wait
  is over;
* a read of the run, of its history's length (not its events: the execution
  holds them) and, when the worker holds the run, of the signals sent after the
  newest one the execution knows (a run's signals take ids in the order they
  commit, see :mod:`fluxo.stores.sql`).

The read takes its snapshot after the lease is taken, so a signal that committed
while the ``UPDATE`` waited for the run's row lock is read: the wake-up the lease
takes is never one whose signal is missed. (One statement with both parts would
read with the snapshot taken before that wait.)

On PostgreSQL both statements go in one pipeline: one round trip, one implicit
transaction. When the ``UPDATE`` leases the run, it also turns
``synchronous_commit`` off for that transaction alone, which then commits without
waiting for its WAL to be flushed. It writes a lease and nothing else, and a
lease is not worth a disk flush on the path from a signal to the run's next
step: the write that follows it, the history's next event, is committed
synchronously, and flushing the WAL up to that event flushes the lease too. A
server crash can lose only a lease after which nothing was durably recorded: the
run is then as it was before it was taken back, woken and claimable, as if the
worker had died first. Elsewhere the two statements run in autocommit mode, one
after the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import sqlalchemy as sa

from fluxo import _errors, history
from fluxo.stores.sql import _database, _statements
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor, Dialect

_R = schema.runs
_E = schema.events
_S = schema.signals
_RUN = 5
"""Where the run's columns start in a row of the read."""


class TakenBack(NamedTuple):
    """What :meth:`SQLStore.take_back` found.

    Attributes:
        run: the run as it stands, leased to the worker when ``taken``.
        taken: the worker holds the run's lease now.
        length: the length of the run's history (read only when ``taken``, else 0).
        signals: the signals sent to the run after the one ``after`` names, oldest
            first (only when ``taken``).
    """

    run: history.RunInfo
    taken: bool
    length: int
    signals: tuple[history.Signal, ...]


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _word(value: str) -> sa.ColumnElement[str]:
    """One of our own status words, rendered into the SQL."""
    assert value.isidentifier()
    return sa.literal_column(f"'{value}'", sa.String())


class HeldStatements:
    """The two statements of ``take_back``, compiled for one dialect."""

    def __init__(self, dialect: Dialect, kind: str) -> None:
        run_id = _p("p_run_id", _R.c.id)
        worker = _p("p_worker", _R.c.lease_owner)
        active = [_word(status.value) for status in history.ACTIVE_STATUSES]
        woken = sa.or_(
            _R.c.wake_requested,
            _R.c.lease_owner == worker,
            sa.and_(_R.c.cancel_requested, sa.bindparam("p_cancels", type_=sa.Boolean())),
            sa.bindparam("p_due", type_=sa.Boolean()),
        )
        lease = (
            _R.update()
            .where(
                _R.c.id == run_id,
                _R.c.status.in_(active),
                _R.c.start_at.is_(None),  # never a run awaiting admission
                sa.or_(_R.c.lease_owner.is_(None), _R.c.lease_owner == worker),
                woken,
            )
            .values(
                status=_word(history.RunStatus.RUNNING.value),
                lease_owner=worker,
                lease_until=_p("p_lease_until", _R.c.lease_until),
                updated_at=_p("p_now", _R.c.updated_at),
                wake_requested=sa.false(),
            )
        )
        if kind == "postgresql":
            # Set for the lease's own transaction, and only when it leased the run (a
            # transaction that wrote nothing commits without a flush anyway).
            no_flush = sa.func.set_config(
                sa.literal_column("'synchronous_commit'"), sa.literal_column("'off'"), sa.true()
            )
            lease = lease.returning(no_flush)
        self.lease = _statements.Sql(lease, dialect)
        # The run with its history's last position (part 0), then its signals (part 1),
        # those only while the worker holds the run.
        last_seq = sa.select(sa.func.max(_E.c.seq)).where(_E.c.run_id == run_id)
        run_row = sa.select(
            sa.literal_column("0", sa.Integer()).label("part"),
            last_seq.scalar_subquery().label("ord"),
            sa.null().label("name"),
            sa.null().label("payload"),
            sa.null().label("at"),
            *_statements.RUN_COLUMNS,
        ).where(_R.c.id == run_id)
        held = sa.exists(sa.select(_R.c.id).where(_R.c.id == run_id, _R.c.lease_owner == worker))
        signal_rows = sa.select(
            sa.literal_column("1", sa.Integer()),
            _S.c.id,
            _S.c.name,
            _S.c.payload,
            _S.c.sent_at,
            *(sa.null() for _ in _statements.RUN_COLUMNS),
        ).where(_S.c.run_id == run_id, _S.c.id > _p("p_after", _S.c.id), held)
        read = sa.union_all(run_row, signal_rows)
        self.read = _statements.Sql(
            read.order_by(read.selected_columns.part, read.selected_columns.ord), dialect
        )


def take_back(
    db: _database.Database,
    held: HeldStatements,
    worker_id: str,
    run_id: str,
    *,
    now: float,
    lease_until: float,
    cancels: bool,
    due: bool,
    after: int,
) -> TakenBack:
    """See :meth:`SQLStore.take_back`."""
    values = {
        "p_after": after,
        "p_run_id": run_id,
        "p_worker": worker_id,
        "p_now": now,
        "p_lease_until": lease_until,
        "p_cancels": cancels,
        "p_due": due,
    }
    if db.driver.name == "postgresql":

        def piped(cur: DBAPICursor) -> Sequence[Any]:
            # One round trip: both statements are sent, then synced once, as one
            # implicit transaction (the read still takes its own snapshot, after the
            # UPDATE).
            with cast(Any, cur).connection.pipeline():
                _database.execute(cur, held.lease, values)
                _database.execute(cur, held.read, values)
            return cur.fetchall()

        rows = db.call("taking a held run back", piped, writes=True)
    else:

        def one_then_other(cur: DBAPICursor) -> Sequence[Any]:
            _database.execute(cur, held.lease, values)
            return _database.execute(cur, held.read, values).fetchall()

        rows = db.call("taking a held run back", one_then_other, writes=True)
    if not rows or rows[0][0] != 0:
        raise _errors.RunNotFoundError(run_id)
    run = db.run_from_row(rows[0][_RUN:])
    taken = run.lease_owner == worker_id and run.status is history.RunStatus.RUNNING
    if not taken:
        return TakenBack(run, False, 0, ())
    last = rows[0][1]
    signals = tuple(
        history.Signal(int(ord_), name, bytes(payload), at)
        for _, ord_, name, payload, at, *_ in rows[1:]
    )
    return TakenBack(run, True, 0 if last is None else int(last) + 1, signals)
