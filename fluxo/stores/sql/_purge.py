"""The SQL store's ``purge``: finished runs deleted in batches, with their events and signals.

One transaction per call: on PostgreSQL a single statement chooses the runs
(``FOR UPDATE SKIP LOCKED``: a run a writer holds is left for the next call) and
deletes them with their events and signals; elsewhere the runs are chosen (locked
on MySQL; SQLite writers take turns) and deleted, with theirs, by lists of ids.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from fluxo import history
from fluxo.stores.sql import _database, _statements
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

RunStatus = history.RunStatus

_R = schema.runs
_E = schema.events
_S = schema.signals
_CHUNK: Final = 256
"""How many runs one ``DELETE`` of a purge names (a batch takes several)."""
_FINISHED: Final = frozenset(status.value for status in RunStatus if status.is_terminal)


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _keys(prefix: str, count: int) -> list[sa.BindParameter[Any]]:
    return [_p(f"{prefix}{i}", _R.c.id) for i in range(count)]


def _word(value: str) -> sa.ColumnElement[str]:
    """One of our own words (a status, an event kind), rendered into the SQL."""
    assert value.isidentifier()
    return sa.literal_column(f"'{value}'", sa.String())


class Purges:
    """``purge`` on one database, with its statements.

    Args:
        db: the store's database.
    """

    def __init__(self, db: _database.Database) -> None:
        self._db = db
        self._sql = db.sql
        self._kind = db.driver.name

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """See :meth:`fluxo.stores.Store.purge`: one transaction per call."""
        words = sorted({RunStatus(s).value for s in statuses} & _FINISHED)
        if limit <= 0 or not words or (workflows is not None and not workflows):
            return 0
        status_words = _statements.bucket(words)
        values: dict[str, Any] = {f"p_status{i}": word for i, word in enumerate(status_words)}
        values.update(p_before=finished_before, p_limit=limit)
        names = None
        if workflows is not None:
            names = _statements.bucket(workflows)
            values.update({f"p_wf{i}": name for i, name in enumerate(names)})
        count = None if names is None else len(names)

        if self._db.driver.name == "postgresql" and not dry_run:
            sql = self._pg_purge(len(status_words), count)

            def purge_pg(cur: DBAPICursor) -> int:
                return len(_database.execute(cur, sql, values).fetchall())

            return self._db.call("purging runs", purge_pg, writes=True)

        choose = self._choose(len(status_words), count, lock=not dry_run)

        def purge(cur: DBAPICursor) -> int:
            ids = [row[0] for row in _database.execute(cur, choose, values).fetchall()]
            if dry_run:
                return len(ids)
            for start in range(0, len(ids), _CHUNK):
                chunk = _statements.bucket(ids[start : start + _CHUNK])
                keys = {f"p_id{i}": run_id for i, run_id in enumerate(chunk)}
                for delete in self._delete(len(chunk)):
                    _database.execute(cur, delete, keys)
            return len(ids)

        return self._db.call(
            "purging runs", purge, begin=None if dry_run else self._db.driver.begin_write
        )

    def _choose(self, statuses: int, workflows: int | None, *, lock: bool) -> _statements.Sql:
        """The ids of up to ``p_limit`` runs :meth:`fluxo.stores.Store.purge` may delete.

        Finished with one of the statuses (an ``IN`` list of ``statuses`` values),
        created and updated before ``p_before``, of one of the workflows (when
        ``workflows`` is not ``None``), not kept by their parent, and not continued
        in a run that still exists (their ``continued_as_new`` event names it). The
        ``(status, created_at)`` index finds them. ``lock`` locks the rows chosen,
        skipping those another transaction holds (not on SQLite, whose writers take
        turns anyway).
        """

        def build() -> sa.ClauseElement:
            query = self._purgeable(statuses, workflows)
            if lock and self._kind == "mysql":
                query = query.with_for_update(skip_locked=True)
            return query

        return self._sql.shaped(("purge", statuses, workflows, lock), build)

    def _pg_purge(self, statuses: int, workflows: int | None) -> _statements.Sql:
        """PostgreSQL: choose, lock and delete a batch of runs with their events and signals.

        One statement, so one round trip and one implicit transaction; it returns
        the ids of the runs deleted.
        """

        def build() -> sa.ClauseElement:
            chosen = (
                self._purgeable(statuses, workflows)
                .with_for_update(skip_locked=True, of=_R)
                .cte("fluxo_purged")
            )
            events = (
                _E.delete()
                .where(_E.c.run_id == chosen.c.id)
                .returning(_E.c.run_id)
                .cte("fluxo_purged_events")
            )
            signals = (
                _S.delete()
                .where(_S.c.run_id == chosen.c.id)
                .returning(_S.c.run_id)
                .cte("fluxo_purged_signals")
            )
            statement: sa.ClauseElement = (
                _R.delete()
                .where(_R.c.id == chosen.c.id)
                .returning(_R.c.id)
                .add_cte(events, signals)
            )
            return statement

        return self._sql.shaped(("pg_purge", statuses, workflows), build)

    def _delete(self, runs: int) -> tuple[_statements.Sql, _statements.Sql, _statements.Sql]:
        """Delete the signals, the events and the records of runs (an ``IN`` list of ids)."""

        def build(table: sa.Table, column: sa.Column[Any]) -> Callable[[], sa.ClauseElement]:
            def statement() -> sa.ClauseElement:
                deleted: sa.ClauseElement = table.delete().where(column.in_(_keys("p_id", runs)))
                return deleted

            return statement

        return (
            self._sql.shaped(("purge_signals", runs), build(_S, _S.c.run_id)),
            self._sql.shaped(("purge_events", runs), build(_E, _E.c.run_id)),
            self._sql.shaped(("purge_runs", runs), build(_R, _R.c.id)),
        )

    @staticmethod
    def _purgeable(statuses: int, workflows: int | None) -> sa.Select[Any]:
        before = _p("p_before", _R.c.updated_at)
        parent = _R.alias("fluxo_parent")
        successor = _R.alias("fluxo_successor")
        kept_by_parent = sa.exists(
            sa.select(sa.literal_column("1"))
            .select_from(parent)
            .where(
                parent.c.id == _R.c.parent,
                parent.c.status.in_([_word(s.value) for s in sorted(history.KEEPING_PARENTS)]),
            )
        )
        continued = sa.exists(
            sa.select(sa.literal_column("1"))
            .select_from(_E.join(successor, successor.c.id == _E.c.name))
            .where(_E.c.run_id == _R.c.id, _E.c.kind == _word(history.ContinuedAsNew.kind))
        )
        query = sa.select(_R.c.id).where(
            _R.c.status.in_(_keys("p_status", statuses)),
            _R.c.created_at < before,
            _R.c.updated_at < before,
            ~kept_by_parent,
            ~continued,
        )
        if workflows is not None:
            query = query.where(_R.c.workflow.in_(_keys("p_wf", workflows)))
        return query.limit(sa.bindparam("p_limit", type_=sa.Integer()))
