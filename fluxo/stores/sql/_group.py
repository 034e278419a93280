"""The SQL store's group commit: steps' records of concurrent executions in one commit.

See :mod:`fluxo.stores._group` for what a group is. On PostgreSQL a group is one
statement, whose rows are each fenced as a lone append is (inserted only if the
position before exists and its own does not, ``ON CONFLICT DO NOTHING``) and
which returns the rows it wrote; on SQLite it is one transaction of the usual
statements (a statement that breaks the key undoes itself only). The commit, not
the row, is most of what an append costs on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from fluxo import history
from fluxo.stores import _group
from fluxo.stores.sql import _database

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

_PG_GROUP: Final = """
INSERT INTO fluxo_events (run_id, seq, kind, name, data, created_at)
SELECT g.run_id, g.seq, g.kind, g.name, g.data, g.created_at
FROM unnest(%s::text[], %s::int[], %s::text[], %s::text[], %s::bytea[], %s::float8[])
    AS g(run_id, seq, kind, name, data, created_at)
WHERE EXISTS (
    SELECT 1 FROM fluxo_events p WHERE p.run_id = g.run_id AND p.seq = g.seq - 1
)
ON CONFLICT DO NOTHING
RETURNING run_id, seq
"""


class Record(NamedTuple):
    """One event to append at ``seq`` (> 0), without a status."""

    run_id: str
    seq: int
    event: history.Event
    now: float


def group_commit(db: _database.Database) -> _group.GroupCommit[Record, bool] | None:
    """A group commit of ``db``'s one-event appends (PostgreSQL and SQLite; else None)."""
    if db.driver.name not in ("postgresql", "sqlite"):
        return None

    def write(records: Sequence[Record]) -> list[bool]:
        if db.driver.name == "postgresql" and len(records) > 1:
            return _together(db, records)
        return _each(db, records)

    return _group.GroupCommit(write, key=lambda r: (r.run_id, r.seq))


def _together(db: _database.Database, records: Sequence[Record]) -> list[bool]:
    params = (
        [r.run_id for r in records],
        [r.seq for r in records],
        [r.event.kind for r in records],
        [r.event.name for r in records],
        [r.event.data for r in records],
        [r.now for r in records],
    )

    def insert(cur: DBAPICursor) -> Sequence[Any]:
        cur.execute(_PG_GROUP, params)
        return cur.fetchall()

    written = {(row[0], row[1]) for row in db.call("recording history", insert, writes=True)}
    return [(r.run_id, r.seq) in written for r in records]


def _each(db: _database.Database, records: Sequence[Record]) -> list[bool]:
    def insert(cur: DBAPICursor) -> list[bool]:
        results = []
        for r in records:
            values = {
                "p_run_id": r.run_id,
                "p_seq": r.seq,
                "p_prev": r.seq - 1,
                "p_kind": r.event.kind,
                "p_name": r.event.name,
                "p_data": r.event.data,
                "p_now": r.now,
            }
            try:
                count = _database.execute(cur, db.sql.insert_event_after, values).rowcount
            except db.driver.dbapi.IntegrityError:
                count = 0  # its position is taken
            results.append(count == 1)
        return results

    begin = db.driver.begin_write if len(records) > 1 else None
    return db.call("recording history", insert, begin=begin, writes=True)
