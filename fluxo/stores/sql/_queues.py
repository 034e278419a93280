"""The SQL store's queues: ``queued_runs``, ``admit``, ``read_queue`` and ``write_queue``.

A run of a named queue awaits admission while its ``start_at`` is set (its
``ready_at`` is then ``NULL``, so no claim reads it). Only those runs have a
``start_at``. ``queued_runs`` is one statement: on PostgreSQL and SQLite the
partial index ``ix_fluxo_runs_admission`` (``queue, priority DESC, start_at,
created_at, id``, runs awaiting admission only) gives a queue's due runs in
admission order, so the first ``limit`` are read whatever the backlog; on MySQL,
which has no partial indexes, the due runs are one range of ``(queue, start_at)``
(every other run's entry has a ``NULL`` start_at, out of it), sorted: a cost that
grows with the queue's backlog of due runs. The next start is the first entry of
``(queue, start_at)`` after ``now`` everywhere. A queue's finished runs are never read.

``admit`` is one ``UPDATE`` of the batch, guarded by ``start_at IS NOT NULL``, so
concurrent admissions of the same runs admit each once; it returns the ids it
changed (on MySQL, which has no ``UPDATE ... RETURNING``, the rows are chosen and
locked by a ``SELECT ... FOR UPDATE`` first, in one transaction). Waiters hear of
each run admitted: ``NOTIFY`` in the same statement on PostgreSQL, this process's
waiters and (on SQLite) the other processes' nudges after the commit.

``fluxo_queues`` holds a row per queue record. ``write_queue`` is one statement:
for version 0 an ``INSERT`` whose unique violation means another writer was first;
otherwise ``UPDATE ... WHERE name = ? AND version = ?``, which on PostgreSQL and
MySQL waits for a concurrent writer's row lock and then finds the version moved
on, so of writers of one version exactly one succeeds and none deadlocks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fluxo import history
from fluxo.stores import _queue_rules
from fluxo.stores.sql import _database, _statements
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

    from fluxo.stores.sql import _watch

_R = schema.runs
_Q = schema.queues
_ACTIVE: Final = tuple(sorted(status.value for status in history.ACTIVE_STATUSES))
_BATCH: Final = 256
"""How many runs one ``admit`` statement names (a larger batch takes several)."""


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _keys(count: int) -> list[sa.BindParameter[Any]]:
    return [_p(f"p_id{i}", _R.c.id) for i in range(count)]


def _awaiting() -> sa.ColumnElement[bool]:
    """The run awaits admission: active, with a ``start_at``."""
    assert all(word.isidentifier() for word in _ACTIVE)
    words = [sa.literal_column(f"'{word}'", sa.String()) for word in _ACTIVE]
    return sa.and_(_R.c.start_at.is_not(None), _R.c.status.in_(words))


class Queues:
    """The queue operations of one SQL store, with their statements.

    Args:
        db: the store's database.
        watcher: the store's change feed, told of every run admitted.
    """

    def __init__(self, db: _database.Database, watcher: _watch.Watcher) -> None:
        self._db = db
        self._watcher = watcher
        self._sql = db.sql
        self._kind = db.driver.name
        c = self._sql.compile
        queue = _p("p_queue", _R.c.queue)
        now = _p("p_now", _R.c.start_at)
        # Only a run awaiting admission has a start_at (every status write, and
        # admission, clears it): the index range alone finds the queue's runs.
        mine = _R.c.queue == queue
        # The due runs, in admission order (part 0), then the next start (part 1).
        due = (
            sa.select(*_statements.RUN_COLUMNS)
            .where(mine, _R.c.start_at <= now)
            .order_by(_R.c.priority.desc(), _R.c.start_at, _R.c.created_at, _R.c.id)
            .limit(sa.bindparam("p_limit", type_=sa.Integer()))
            .subquery("fluxo_due")
        )
        later = sa.select(sa.func.min(_R.c.start_at)).where(mine, _R.c.start_at > now)
        assert _statements.RUN_COLUMNS[-1] is _R.c.start_at  # part 1 puts the next start there
        self._queued = c(
            sa.union_all(
                sa.select(sa.literal_column("0", sa.Integer()).label("part"), *due.c),
                sa.select(
                    sa.literal_column("1", sa.Integer()),
                    *(sa.null() for _ in _statements.RUN_COLUMNS[:-1]),
                    later.scalar_subquery(),
                ),
            )
        )
        name = _p("p_name", _Q.c.name)
        self._read = c(sa.select(_Q.c.version, _Q.c.state).where(_Q.c.name == name))
        state = _p("p_state", _Q.c.state)
        first = {"name": name, "version": sa.literal_column("1", sa.Integer()), "state": state}
        if self._kind == "postgresql":
            self._create = c(
                postgresql.insert(_Q).values(first).on_conflict_do_nothing().returning(_Q.c.name)
            )
        elif self._kind == "sqlite":
            self._create = c(sqlite.insert(_Q).values(first).on_conflict_do_nothing())
        else:
            self._create = c(_Q.insert().values(first))  # a duplicate key: another was first
        self._replace = c(
            _Q.update()
            .where(_Q.c.name == name, _Q.c.version == _p("p_version", _Q.c.version))
            .values(version=_Q.c.version + 1, state=state)
        )

    # -- the runs awaiting admission ------------------------------------------------

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """See :meth:`fluxo.stores.Store.queued_runs`: one statement."""
        values = {"p_queue": queue, "p_now": now, "p_limit": max(limit, 0)}

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, self._queued, values).fetchall()

        rows = self._db.call("reading a queue's runs", read)
        runs = [self._db.run_from_row(row[1:]) for row in rows if row[0] == 0]
        runs.sort(key=_queue_rules.admission_order)  # a UNION keeps no order
        later = [row[-1] for row in rows if row[0] == 1 and row[-1] is not None]
        return runs, (float(later[0]) if later else None)

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """See :meth:`fluxo.stores.Store.admit`: one statement per batch of runs."""
        ids = sorted(set(run_ids))
        admitted: list[str] = []
        for start in range(0, len(ids), _BATCH):
            admitted += self._admit(ids[start : start + _BATCH], now)
        for run_id in admitted:
            self._watcher.changed(run_id)
        return admitted

    def _admit(self, ids: list[str], now: float) -> list[str]:
        keys = _statements.bucket(ids)
        values: dict[str, Any] = {f"p_id{i}": run_id for i, run_id in enumerate(keys)}
        values["p_now"] = now
        if self._sql.returning:
            update = self._admit_returning(len(keys))

            def admit(cur: DBAPICursor) -> Sequence[Any]:
                return _database.execute(cur, update, values).fetchall()

            rows = self._db.call("admitting runs", admit, writes=True)
            return [self._db.key(row[0]) for row in rows]
        # MySQL: choose and lock the runs, then admit exactly those, in one transaction.
        choose = self._awaiting_locked(len(keys))

        def choose_then_admit(cur: DBAPICursor) -> list[str]:
            found = [self._db.key(r[0]) for r in _database.execute(cur, choose, values).fetchall()]
            if found:
                chosen = _statements.bucket(found)
                keys = {f"p_id{i}": run_id for i, run_id in enumerate(chosen)}
                _database.execute(cur, self._admit_by_id(len(chosen)), {**keys, "p_now": now})
            return found

        return self._db.call("admitting runs", choose_then_admit, begin=self._db.driver.begin_write)

    @staticmethod
    def _admitted() -> dict[str, Any]:
        """What admission sets: ready now, awaiting no more."""
        now = _p("p_now", _R.c.updated_at)
        pending = sa.literal_column(f"'{history.RunStatus.PENDING.value}'", sa.String())
        return {"status": pending, "ready_at": now, "start_at": sa.null(), "updated_at": now}

    def _admit_returning(self, runs: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            update = _R.update().where(_R.c.id.in_(_keys(runs)), _awaiting())
            columns: list[Any] = [_R.c.id]
            if self._kind == "postgresql":
                channel: Any = sa.literal_column(f"'{_statements.NOTIFY_CHANNEL}'")
                columns.append(sa.func.pg_notify(channel, _R.c.id))
            statement: sa.ClauseElement = update.values(self._admitted()).returning(*columns)
            return statement

        return self._sql.shaped(("queues_admit", runs), build)

    def _awaiting_locked(self, runs: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            chosen = sa.select(_R.c.id).where(_R.c.id.in_(_keys(runs)), _awaiting())
            return chosen.with_for_update()

        return self._sql.shaped(("queues_awaiting", runs), build)

    def _admit_by_id(self, runs: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            update: sa.ClauseElement = (
                _R.update().where(_R.c.id.in_(_keys(runs))).values(self._admitted())
            )
            return update

        return self._sql.shaped(("queues_admit_by_id", runs), build)

    # -- the queues' records ----------------------------------------------------------

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """See :meth:`fluxo.stores.Store.read_queue`."""

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, self._read, {"p_name": queue}).fetchall()

        rows = self._db.call("reading a queue's record", read)
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, b"")

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """See :meth:`fluxo.stores.Store.write_queue`: one statement, written or not."""
        _queue_rules.check_state(queue, state)
        self._db.check_size("writing a queue's record", len(state))
        values = {"p_name": queue, "p_version": version, "p_state": bytes(state)}
        if version != 0:

            def replace(cur: DBAPICursor) -> bool:
                return int(_database.execute(cur, self._replace, values).rowcount) == 1

            return self._db.call("writing a queue's record", replace, writes=True)

        def create(cur: DBAPICursor) -> bool:
            try:
                cur = _database.execute(cur, self._create, values)
            except self._db.driver.dbapi.IntegrityError as exc:
                if self._db.driver.is_unique_violation(exc):
                    return False
                raise
            if self._kind == "postgresql":
                return bool(cur.fetchall())
            return int(cur.rowcount) == 1

        return self._db.call("writing a queue's record", create, writes=True)
