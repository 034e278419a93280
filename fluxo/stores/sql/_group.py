"""The SQL store's group commit: steps' records of concurrent executions in one commit.

See :mod:`fluxo.stores._group` for what a group is. On SQLite a group is one
transaction of the usual fenced statements (a statement that breaks the key
undoes itself only, and is told so), so the writes of a worker's executions go
through the file's single writer in fewer turns.

PostgreSQL writes each record alone: there a group, measured as one statement
whose rows were each fenced (``benchmarks/throughput.py``, 1,000 five-step runs,
one worker), drained about 10% fewer workflows a second than lone appends. Its
commits are cheap next to the wait a record behind a write in flight pays, and
the server already flushes concurrent commits together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from fluxo import history
from fluxo.stores import _group
from fluxo.stores.sql import _database

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor


class Record(NamedTuple):
    """One event to append at ``seq`` (> 0), without a status."""

    run_id: str
    seq: int
    event: history.Event
    now: float


def group_commit(db: _database.Database) -> _group.GroupCommit[Record, bool] | None:
    """A group commit of ``db``'s one-event appends on SQLite; None elsewhere."""
    if db.driver.name != "sqlite":
        return None
    return _group.GroupCommit(lambda records: _each(db, records), key=lambda r: (r.run_id, r.seq))


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
