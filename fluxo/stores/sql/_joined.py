"""A run started in the caller's own transaction, on the caller's DB-API connection.

When the store lives in the application's database, the application can write
its rows and start a run in one transaction: the run exists for workers once
that transaction commits, and never if it rolls back. The statements are the
store's own (compiled once for the dialect); they run on a cursor of the
caller's connection, with no ``BEGIN`` or ``COMMIT`` of ours.

Workers hear of the run as of any start: on PostgreSQL the ``NOTIFY`` in the
statement is delivered at commit, elsewhere other processes poll. This process's
waiters are woken by ``after_commit``, when the caller's transaction can report
its commit.

The connection is checked once to be on the store's database (same driver
family, and the same SQLite file or database name): a run written elsewhere
would never be seen by a worker.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from fluxo import _errors, history
from fluxo.stores.sql import _database, _rows, _statements

if TYPE_CHECKING:
    from fluxo.stores.sql import _watch

_FAMILIES: Final = {
    "sqlite3": "sqlite",
    "psycopg": "postgresql",
    "psycopg2": "postgresql",
    "pymysql": "mysql",
    "MySQLdb": "mysql",
}
"""The DB-API modules whose connections can join a store's start, by database family."""

_UNIQUE_CODES: Final = {"postgresql": ("23505",), "mysql": (1062,), "sqlite": (1555, 2067)}

_checked: weakref.WeakKeyDictionary[Any, frozenset[int]] = weakref.WeakKeyDictionary()
"""Connections already found to be on a store's database: the ids of those databases."""
_checked_lock = threading.Lock()


def family(dbapi_connection: Any) -> str | None:
    """The database family of a DB-API connection, by its driver; ``None`` if unknown."""
    return _FAMILIES.get(type(dbapi_connection).__module__.split(".", 1)[0])


class JoinedStart:
    """Creates runs on a caller's DB-API connection, within the caller's transaction.

    Built by :meth:`fluxo.stores.sql.SQLStore.join`; it offers the two store
    operations a start needs (``create_run``, and ``load`` for the arguments of a
    run whose id is taken), both on the caller's connection, so they see the
    caller's uncommitted rows.
    """

    def __init__(
        self,
        db: _database.Database,
        dbapi_connection: Any,
        watcher: _watch.Watcher,
        after_commit: Callable[[Callable[[], None]], None] | None,
    ) -> None:
        self._db = db
        self._conn = dbapi_connection
        self._watcher = watcher
        self._after_commit = after_commit
        self._check_database()

    def _check_database(self) -> None:
        db, conn = self._db, self._conn
        if db.closed:
            raise db.closed_error()
        theirs = family(conn)
        if theirs is None:
            raise _errors.DefinitionError(
                f"cannot start a run in the transaction of a {type(conn).__module__}."
                f"{type(conn).__qualname__}: pass a SQLAlchemy Connection or Session, a Django "
                "connection, or a sqlite3, psycopg or pymysql connection"
            )
        if theirs != db.driver.name:
            raise _errors.DefinitionError(
                f"cannot start a run in a {theirs} transaction: the store is the "
                f"{db.driver.name} database at {db.url}; a transactional start needs the "
                "store in the same database as your data (else use engine.on_commit(...))"
            )
        if db.serial is not None:
            raise _errors.DefinitionError(
                f"the store at {db.url} is an in-memory SQLite database, which no other "
                "connection shares; use a SQLite file for transactional starts"
            )
        with _checked_lock, contextlib.suppress(TypeError):  # no weak reference: check each time
            if id(db) in _checked.get(conn, frozenset()):
                return
        where = self._database_of_connection()
        expected = db.engine.url.database
        if db.file is not None:
            expected = os.path.realpath(db.file)
        if where != expected:
            raise _errors.DefinitionError(
                f"the connection given for a transactional start is to {where!r}, but the "
                f"store is the database at {db.url}; a run written there would never be "
                "seen by a worker. Point the store at your app's database, or start with "
                "engine.on_commit(...) instead"
            )
        with _checked_lock, contextlib.suppress(TypeError):  # no weak reference: not kept
            _checked[conn] = _checked.get(conn, frozenset()) | {id(db)}

    def _database_of_connection(self) -> str | None:
        name = self._db.driver.name
        query = {
            "sqlite": "PRAGMA database_list",
            "postgresql": "SELECT current_database()",
            "mysql": "SELECT DATABASE()",
        }[name]
        rows = self._run(lambda cur: _fetch(cur, query))
        if name != "sqlite":
            value = rows[0][0] if rows else None
            return value.decode() if isinstance(value, bytes) else value
        for _seq, schema, path in rows:
            if schema == "main":
                return os.path.realpath(path) if path else None
        return None

    def _run(self, operation: Callable[[Any], Any]) -> Any:
        """Run ``operation`` on a cursor of the caller's connection, translating errors."""
        cursor = self._conn.cursor()
        try:
            return operation(cursor)
        except Exception as exc:
            error = self._db.translate(exc, "starting a run in your transaction")
            if error is None:
                raise
            raise error from error.__cause__
        finally:
            cursor.close()

    def create_run(
        self,
        run_id: str,
        workflow: str,
        input: bytes,
        *,
        now: float,
        owner: str | None = None,
        lease_until: float | None = None,
        deadline: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str] | None = None,
        queue: str = history.DEFAULT_QUEUE,
        priority: int = 0,
        partition: str | None = None,
        start_at: float | None = None,
    ) -> tuple[history.RunInfo, bool]:
        """Create the run in the caller's transaction; see ``Store.create_run``."""
        db = self._db
        if not db.ready:
            # Not on SQLite, where the caller's transaction may hold the write lock
            # that creating the tables from another connection would wait for: there
            # the error asks for `fluxo db upgrade` (or ``store.migrate()``) first.
            db.require_schema(create=db.driver.name != "sqlite")
        db.check_size("starting a run", len(input))
        run, values = _rows.new_run(
            run_id,
            workflow,
            input,
            now=now,
            owner=owner,
            lease_until=lease_until,
            deadline=deadline,
            parent=parent,
            headers=headers,
            queue=queue,
            priority=priority,
            partition=partition,
            start_at=start_at,
        )
        sql = db.sql
        if db.driver.name == "postgresql":  # one statement; its NOTIFY is sent at commit

            def create_pg(cur: Any) -> bool:
                return bool(_database.execute(cur, sql.pg_create_run, values).fetchall())

            created = self._run(create_pg)
        else:

            def create(cur: Any) -> bool:
                self._begin(cur)
                return self._both(cur, sql.insert_run, sql.insert_event, values)

            created = self._run(create)
        if not created:
            existing = self.load(run_id).run
            if existing.workflow != workflow:
                raise _errors.RunIdConflictError(run_id, existing.workflow, workflow)
            return existing, False
        if self._after_commit is not None:
            self._after_commit(functools.partial(self._watcher.changed, run_id))
        return run, True

    def get_run(self, run_id: str) -> history.RunInfo:
        """The run's record as the caller's transaction sees it; see ``Store.get_run``."""
        sql = self._db.sql

        def read(cur: Any) -> Sequence[Any]:
            rows: Sequence[Any] = _database.execute(
                cur, sql.get_run, {"p_run_id": run_id}
            ).fetchall()
            return rows

        rows = self._run(read)
        if not rows:
            raise _errors.RunNotFoundError(run_id)
        return self._db.run_from_row(rows[0])

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        """Store a signal and wake its run in the caller's transaction; see ``Store.send_signal``.

        The signal is there for the run once the transaction commits. On SQLite this
        is also the only way to signal inside a transaction that has written: the
        store's own connection would wait for the write lock that transaction holds.
        """
        db = self._db
        if not db.ready:
            db.require_schema(create=False)
        db.check_size("sending a signal", len(payload))
        values = {
            "p_run_id": run_id,
            "p_name": name,
            "p_payload": payload,
            "p_now": now,
            "p_key": key,
        }
        sql = db.sql
        if db.driver.name == "postgresql":

            def send_pg(cur: Any) -> Sequence[Any]:
                rows: Sequence[Any] = _database.execute(cur, sql.pg_send_signal, values).fetchall()
                return rows

            rows = self._run(send_pg)
            if not rows:
                raise _errors.RunNotFoundError(run_id)
            status, signal_id, _woken = rows[0]
            if signal_id is None and history.parse_status(status)[0].is_terminal:
                raise _rows.finished_error(run_id, status)
            sent = signal_id is not None
        else:

            def send(cur: Any) -> bool | str:
                self._begin(cur)
                rows = _database.execute(cur, sql.signal_run_status, values).fetchall()
                if not rows:
                    raise _errors.RunNotFoundError(run_id)
                if history.parse_status(rows[0][0])[0].is_terminal:
                    return str(rows[0][0])
                return self._both(cur, sql.insert_signal, sql.wake_for_signal, values)

            outcome = self._run(send)
            if isinstance(outcome, str):
                raise _rows.finished_error(run_id, outcome)
            sent = outcome
        if sent and self._after_commit is not None:
            self._after_commit(functools.partial(self._watcher.changed, run_id))
        return sent

    def load(self, run_id: str) -> history.RunState:
        """The run as the caller's transaction sees it; see ``Store.load``."""
        sql = self._db.sql

        def read(cur: Any) -> Sequence[Any]:
            rows: Sequence[Any] = _database.execute(cur, sql.load, {"p_run_id": run_id}).fetchall()
            return rows

        return _rows.state_from_rows(self._db, run_id, self._run(read))

    def _begin(self, cur: Any) -> None:
        if _sqlite_between_transactions(self._conn):
            cur.execute("BEGIN")  # as sqlite3 would before the caller's first write

    def _both(
        self, cur: Any, first: _statements.Sql, second: _statements.Sql, values: dict[str, Any]
    ) -> bool:
        """Run two writes under a savepoint; ``False`` if the first hit a unique key.

        Should the second fail, the caller's transaction keeps neither, whatever
        the caller does next (no run without its history, no signal without its wake).
        """
        cur.execute("SAVEPOINT fluxo_write")
        try:
            _database.execute(cur, first, values)
            _database.execute(cur, second, values)
        except Exception as exc:
            cur.execute("ROLLBACK TO SAVEPOINT fluxo_write")
            cur.execute("RELEASE SAVEPOINT fluxo_write")
            if self._is_unique_violation(exc):
                return False
            raise
        cur.execute("RELEASE SAVEPOINT fluxo_write")
        return True

    def _is_unique_violation(self, exc: BaseException) -> bool:
        if type(exc).__name__ != "IntegrityError" and not any(
            cls.__name__ == "IntegrityError" for cls in type(exc).__mro__
        ):
            return False
        name = self._db.driver.name
        code: Any
        if name == "postgresql":
            code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        elif name == "mysql":
            code = exc.args[0] if exc.args else None
        else:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None and "UNIQUE constraint failed" in str(exc):
                return True
        return code in _UNIQUE_CODES[name]


def _sqlite_between_transactions(conn: Any) -> bool:
    """A sqlite3 connection that opens its transactions at the first write, before it.

    The standard library's sqlite3 (``isolation_level`` not ``None``) begins a
    transaction implicitly before an ``INSERT``, but not before a ``SAVEPOINT``,
    which would then open and, at ``RELEASE``, commit a transaction of its own.
    """
    return (
        type(conn).__module__.startswith("sqlite3")
        and not conn.in_transaction
        and conn.isolation_level is not None
    )


def _fetch(cursor: Any, query: str) -> list[Any]:
    cursor.execute(query)
    return list(cursor.fetchall())
