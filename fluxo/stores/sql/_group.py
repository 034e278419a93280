"""Group commit: the step records of concurrent executions written in one commit.

A worker executes several runs at once, and most of what they write is a step's
record: one event, no status. Each such append used to be its own statement and
its own commit; on PostgreSQL and SQLite the commit, not the row, is most of the
cost. :class:`GroupCommit` coalesces them: an append that finds no write in
flight writes at once, alone (so a lone execution pays nothing extra), and the
appends that arrive while a write is in flight wait for it to end and are then
written together by the first of them, in one statement (PostgreSQL) or one
transaction (SQLite), and one commit.

Nothing about an append changes but its company:

* each is still acknowledged only after the commit that holds it;
* each is still fenced by its own position: its row is inserted only if the
  position before it exists and its own does not, and an append that wrote
  nothing is told so, and finds out why as a lone append would;
* a group whose write fails (the server went away) tells each of its appends,
  which is then written alone, in its own thread, so each caller gets its own
  error, or its own success.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from fluxo import history
from fluxo.stores.sql import _database

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

MOST: Final = 64
"""The most appends written together."""

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
"""All the group's rows in one statement, each fenced as a lone append is."""


class _Append:
    """One append waiting in a group: what to write, and how it went."""

    __slots__ = ("done", "event", "lead", "now", "run_id", "seq", "written")

    def __init__(self, run_id: str, seq: int, event: history.Event, now: float) -> None:
        self.run_id = run_id
        self.seq = seq
        self.event = event
        self.now = now
        self.written: bool | None = None
        """True: committed; False: refused by its fence; None: the group's write failed."""
        self.lead = False
        self.done = threading.Event()


class GroupCommit:
    """Writes single-event appends of concurrent executions together (see the module).

    Args:
        db: the database (PostgreSQL or SQLite; others write alone).
    """

    def __init__(self, db: _database.Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        self._waiting: list[_Append] = []
        self._writing = False

    def append(self, run_id: str, seq: int, event: history.Event, now: float) -> bool | None:
        """Write one event at ``seq`` (> 0), with whichever appends come with it.

        Returns True once it is committed, False when its fence refused it (the
        position before it is missing, or its own is taken), and None when the
        group's write failed: the caller writes it alone.
        """
        mine = _Append(run_id, seq, event, now)
        with self._lock:
            if self._writing:
                self._waiting.append(mine)
            else:
                self._writing = True
                mine.lead = True
        if not mine.lead:
            mine.done.wait()
        if mine.lead:
            self._write_as_leader(mine)
        return mine.written

    def _write_as_leader(self, mine: _Append) -> None:
        """Write ``mine`` with what waits, then hand the lead to the next one waiting."""
        with self._lock:
            # One append a position: the statement tells the written ones by position.
            group, later, taken = [mine], [], {(mine.run_id, mine.seq)}
            for other in self._waiting:
                key = (other.run_id, other.seq)
                if len(group) < MOST and key not in taken:
                    group.append(other)
                    taken.add(key)
                else:
                    later.append(other)
            self._waiting = later
        try:
            self._write(group)
        finally:
            with self._lock:
                following = self._waiting.pop(0) if self._waiting else None
                if following is None:
                    self._writing = False
                else:
                    following.lead = True  # it writes the next group, itself first
                    following.done.set()
            for other in group:
                if other is not mine:
                    other.done.set()

    def _write(self, group: list[_Append]) -> None:
        """Write the group in one commit; mark each append written or refused."""
        db = self._db
        if db.driver.name == "postgresql" and len(group) > 1:
            params = (
                [a.run_id for a in group],
                [a.seq for a in group],
                [a.event.kind for a in group],
                [a.event.name for a in group],
                [a.event.data for a in group],
                [a.now for a in group],
            )

            def together(cur: DBAPICursor) -> Sequence[Any]:
                cur.execute(_PG_GROUP, params)
                return cur.fetchall()

            try:
                rows = db.call("recording history", together)
            except Exception:
                return  # each is written alone, by its own thread
            written = {(row[0], row[1]) for row in rows}
            for a in group:
                a.written = (a.run_id, a.seq) in written
            return

        def each(cur: DBAPICursor) -> list[bool]:
            results = []
            for a in group:
                values = {
                    "p_run_id": a.run_id,
                    "p_seq": a.seq,
                    "p_prev": a.seq - 1,
                    "p_kind": a.event.kind,
                    "p_name": a.event.name,
                    "p_data": a.event.data,
                    "p_now": a.now,
                }
                try:
                    count = _database.execute(cur, db.sql.insert_event_after, values).rowcount
                except db.driver.dbapi.IntegrityError:
                    count = 0  # its position is taken: SQLite undoes this statement only
                results.append(count == 1)
            return results

        begin = db.driver.begin_write if len(group) > 1 else None
        try:
            results = db.call("recording history", each, begin=begin)
        except Exception:
            return
        for a, ok in zip(group, results, strict=True):
            a.written = ok
