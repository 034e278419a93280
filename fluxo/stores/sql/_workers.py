"""The SQL store's worker liveness: ``beat_worker`` and ``forget_worker``.

Each running worker has a row in ``fluxo_workers`` with the time it is alive
until, which its beats push forward. A beat also looks for the other workers
whose time has passed: their rows are deleted, and the live leases of their
active runs end at once (the owner stays, as after any expired lease), so that
any worker may claim those runs without waiting for the leases to run out. The
table holds a row per worker process, so the look costs next to nothing, and a
beat that finds no dead worker is one upsert and one small select.

The runs of a dead worker are found through the ``(status, created_at)`` index
(active statuses only), not through an index on ``lease_owner``, which every
claim would have to keep up to date. On PostgreSQL a beat is one statement, so
one round trip; the runs it frees are announced with ``NOTIFY`` like every other
change of a run. Elsewhere it is one transaction of a few statements.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from fluxo import history
from fluxo.stores.sql import _database, _statements
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

    from fluxo.stores.sql import _watch

_W = schema.workers
_R = schema.runs
_ACTIVE: Final = tuple(sorted(status.value for status in history.ACTIVE_STATUSES))
_CHUNK: Final = 256
"""How many runs one ``UPDATE`` names when they are freed by id (MySQL)."""


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _keys(prefix: str, count: int) -> list[sa.BindParameter[Any]]:
    return [_p(f"{prefix}{i}", _W.c.id) for i in range(count)]


def _active() -> sa.ColumnElement[bool]:
    """The run is active: its status is one of the constant words of ``_ACTIVE``."""
    assert all(word.isidentifier() for word in _ACTIVE)
    return _R.c.status.in_([sa.literal_column(f"'{word}'", sa.String()) for word in _ACTIVE])


class Liveness:
    """``beat_worker`` and ``forget_worker`` on one database, with their statements.

    Args:
        db: the store's database.
        watcher: the store's change feed, told of every run a beat frees.
    """

    def __init__(self, db: _database.Database, watcher: _watch.Watcher) -> None:
        self._db = db
        self._watcher = watcher
        self._sql = db.sql
        self._kind = db.driver.name
        worker = _p("p_worker", _W.c.id)
        now = _p("p_now", _W.c.alive_until)
        self._upsert_statement = self._upsert()
        self._upsert_sql = self._sql.compile(self._upsert_statement)
        self._dead = sa.select(_W.c.id).where(_W.c.alive_until < now, _W.c.id != worker)
        self._dead_sql = self._sql.compile(self._dead)
        self._forget_sql = self._sql.compile(_W.delete().where(_W.c.id == worker))

    def _upsert(self) -> Any:
        """Insert the worker's row, or move its ``alive_until`` to the new one."""
        values = {
            "id": _p("p_worker", _W.c.id),
            "alive_until": _p("p_alive_until", _W.c.alive_until),
        }
        if self._kind == "mysql":
            # The parameter again, not VALUES(alive_until), which MySQL 8 deprecates.
            mine = mysql.insert(_W).values(values)
            return mine.on_duplicate_key_update(alive_until=values["alive_until"])
        insert = postgresql.insert if self._kind == "postgresql" else sqlite.insert
        theirs = insert(_W).values(values)
        return theirs.on_conflict_do_update(
            index_elements=[_W.c.id], set_={"alive_until": theirs.excluded.alive_until}
        )

    # -- the operations ---------------------------------------------------------

    def beat(
        self, worker_id: str, *, now: float, alive_until: float, reap: bool, restarted: bool
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`; waiters hear of the runs freed."""
        values: dict[str, Any] = {
            "p_worker": worker_id,
            "p_now": now,
            "p_alive_until": alive_until,
        }
        if self._kind == "postgresql":
            sql = self._pg_beat(reap=reap, restarted=restarted)

            def beat_pg(cur: DBAPICursor) -> list[str]:
                cur = _database.execute(cur, sql, values)
                if not (reap or restarted):
                    return []
                return [self._db.key(row[0]) for row in cur.fetchall()]

            freed = self._db.call("recording a worker's beat", beat_pg, writes=True)
        else:

            def beat(cur: DBAPICursor) -> list[str]:
                _database.execute(cur, self._upsert_sql, values)
                dead = []
                if reap:
                    rows = _database.execute(cur, self._dead_sql, values).fetchall()
                    dead = [self._db.key(row[0]) for row in rows]
                owners = [*dead, worker_id] if restarted else dead
                if not owners:
                    return []
                freed = self._free(cur, owners, now)
                if dead:
                    ids = _statements.bucket(dead)
                    keys = {f"p_id{i}": key for i, key in enumerate(ids)}
                    _database.execute(cur, self._delete_dead(len(ids)), {**keys, "p_now": now})
                return freed

            freed = self._db.call(
                "recording a worker's beat", beat, begin=self._db.driver.begin_write
            )
        for run_id in freed:
            self._watcher.changed(run_id)
        return freed

    def forget(self, worker_id: str) -> None:
        """See :meth:`fluxo.stores.Store.forget_worker`."""

        def forget(cur: DBAPICursor) -> None:
            _database.execute(cur, self._forget_sql, {"p_worker": worker_id})

        self._db.call("forgetting a worker", forget, writes=True)

    def _free(self, cur: DBAPICursor, owners: Sequence[str], now: float) -> list[str]:
        """End the live leases the owners hold on active runs; return those runs' ids."""
        ids = _statements.bucket(owners)
        values: dict[str, Any] = {f"p_owner{i}": owner for i, owner in enumerate(ids)}
        values["p_now"] = now
        if self._sql.returning:
            rows = _database.execute(cur, self._free_returning(len(ids)), values).fetchall()
            return [self._db.key(row[0]) for row in rows]
        # MySQL: the runs are chosen and locked, then freed by id, so exactly those
        # whose lease was live are reported (a later read could not tell them apart).
        rows = _database.execute(cur, self._held_by(len(ids)), values).fetchall()
        freed = [self._db.key(row[0]) for row in rows]
        for start in range(0, len(freed), _CHUNK):
            chunk = _statements.bucket(freed[start : start + _CHUNK])
            keys = {f"p_id{i}": run_id for i, run_id in enumerate(chunk)}
            _database.execute(cur, self._free_by_id(len(chunk)), {**keys, "p_now": now})
        return freed

    # -- statements whose shape depends on a list's length, compiled on first use ----

    @staticmethod
    def _held(owners: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        """An active run whose live lease one of the ``owners`` holds."""
        return sa.and_(owners, _active(), _R.c.lease_until > _p("p_now", _R.c.lease_until))

    def _free_returning(self, owners: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            held = self._held(_R.c.lease_owner.in_(_keys("p_owner", owners)))
            update: sa.ClauseElement = (
                _R.update()
                .where(held)
                .values(lease_until=_p("p_now", _R.c.lease_until))
                .returning(_R.c.id)
            )
            return update

        return self._sql.shaped(("workers_free", owners), build)

    def _held_by(self, owners: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            held = self._held(_R.c.lease_owner.in_(_keys("p_owner", owners)))
            return sa.select(_R.c.id).where(held).with_for_update()

        return self._sql.shaped(("workers_held", owners), build)

    def _free_by_id(self, runs: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            update: sa.ClauseElement = (
                _R.update()
                .where(_R.c.id.in_(_keys("p_id", runs)))
                .values(lease_until=_p("p_now", _R.c.lease_until))
            )
            return update

        return self._sql.shaped(("workers_free_by_id", runs), build)

    def _delete_dead(self, workers: int) -> _statements.Sql:
        def build() -> sa.ClauseElement:
            # Still dead: a worker that beat again meanwhile keeps its row.
            delete: sa.ClauseElement = _W.delete().where(
                _W.c.id.in_(_keys("p_id", workers)),
                _W.c.alive_until < _p("p_now", _W.c.alive_until),
            )
            return delete

        return self._sql.shaped(("workers_delete", workers), build)

    def _pg_beat(self, *, reap: bool, restarted: bool) -> _statements.Sql:
        """PostgreSQL: the whole beat in one statement, returning the ids of the runs freed.

        The upsert, the look for dead workers, the end of their leases (each run
        announced with ``NOTIFY``) and the deletion of their rows are parts of one
        ``WITH``. When no worker is dead the update of runs is never run: its
        ``EXISTS`` on the dead workers is a one-time filter, checked before any run
        is read. Without ``reap`` or ``restarted``, the upsert alone.
        """
        if not (reap or restarted):
            return self._upsert_sql

        def build() -> sa.ClauseElement:
            now = _p("p_now", _R.c.lease_until)
            beat = self._upsert_statement.returning(_W.c.id).cte("fluxo_beat")
            parts: list[Any] = [beat]
            owned: sa.ColumnElement[bool]
            if reap:
                dead = self._dead.cte("fluxo_dead")
                parts.append(
                    _W.delete()
                    .where(_W.c.id.in_(sa.select(dead.c.id)), _W.c.alive_until < now)
                    .cte("fluxo_gone")
                )
                if restarted:
                    mine = sa.select(_p("p_worker", _W.c.id))
                    owned = _R.c.lease_owner.in_(sa.union_all(sa.select(dead.c.id), mine))
                else:
                    owned = sa.and_(
                        _R.c.lease_owner.in_(sa.select(dead.c.id)),
                        sa.exists(sa.select(dead.c.id)),
                    )
            else:
                owned = _R.c.lease_owner == _p("p_worker", _R.c.lease_owner)
            notify = sa.func.pg_notify(
                sa.literal_column(f"'{_statements.NOTIFY_CHANNEL}'"), _R.c.id
            )
            freed = (
                _R.update()
                .where(self._held(owned))
                .values(lease_until=now)
                .returning(_R.c.id, notify)
                .cte("fluxo_freed")
            )
            return sa.select(freed.c.id).add_cte(*parts)

        return self._sql.shaped(("workers_pg_beat", reap, restarted), build)
