"""One SQL database as the store runs on it: connections, transactions, errors, schema.

Each operation of the store is a function of a DB-API cursor that
:meth:`Database.call` runs on a pooled connection, in autocommit mode or in a
transaction it opens (``BEGIN``, ``BEGIN IMMEDIATE`` on SQLite) when the
operation writes more than one statement. Driver errors are translated into
Fluxo's there, with the cause chained; a transaction that lost a deadlock is run
again. The schema is checked when the store opens and, until it is known to be
at head, before each operation (see :meth:`Database.require_schema`).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fluxo import _errors, history
from fluxo.stores import _group, _headers, _translate
from fluxo.stores.sql import _engine, _schema, _statements

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LARGE: Final = 1 << 20
"""Bytes past which a MySQL write is checked against the server's ``max_allowed_packet``."""
_PACKET_SLACK: Final = 64 << 10
"""Room in a MySQL packet for a statement's SQL and its other values."""
_RETRIES: Final = 6
"""How often a transaction that lost a deadlock is run again before giving up."""
_CURSOR: Final = "fluxo.cursor"
"""Where a pooled connection keeps its cursor (``info`` is cleared on invalidation)."""


class Missing(Exception):
    """Raised inside a transaction to roll it back: a guarded write found nothing to do."""


class Duplicate(Exception):
    """Raised inside a transaction to roll it back: the run (or the signal) already exists."""


class CancelPending(Exception):
    """Raised inside a transaction to roll it back: the run's cancellation is pending."""


class Finished(Exception):
    """Raised inside a transaction to roll it back: the run has finished."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def execute(cur: DBAPICursor, sql: _statements.Sql, values: Mapping[str, Any]) -> DBAPICursor:
    """Run one compiled statement with ``values`` on ``cur``; return the cursor."""
    cur.execute(sql.text, sql.args(values))
    return cur


def _cause(exc: BaseException) -> BaseException:
    """The driver's exception behind one SQLAlchemy may have wrapped it in."""
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, BaseException):
        return exc.orig
    return exc


class Database:
    """The database of one :class:`~fluxo.stores.sql.SQLStore`, and how to run statements on it.

    Args:
        engine: the SQLAlchemy engine (psycopg, pymysql or sqlite3).
        url: the database's URL as messages show it: as the user gave it, masked.
        owns_engine: whether the store created the engine (its connections are
            in autocommit mode from the start, and :meth:`dispose` disposes it).
        auto_migrate: see :class:`~fluxo.stores.sql.SQLStore`.
    """

    def __init__(
        self, engine: sa.Engine, url: str, *, owns_engine: bool, auto_migrate: bool
    ) -> None:
        self.engine = engine
        self.owns_engine = owns_engine
        self.closed = False
        dialect = engine.dialect
        self.driver = _engine.Driver(dialect)
        self.sql = _statements.Statements(dialect, self.driver.name)
        self.secrets = _engine.url_secrets(engine.url)
        self.url = url
        """The database's URL as messages show it: as the user gave it, passwords masked."""
        self.file = _engine.sqlite_file(engine.url)
        memory = self.driver.name == "sqlite" and _engine.is_memory_sqlite(engine.url)
        # One in-memory SQLite connection is shared: operations take turns on it.
        self.serial: threading.Lock | None = threading.Lock() if memory else None
        # A SQLite file has one writer at a time. The writes of this process take
        # turns on a lock of their own, instead of SQLite's busy handler, which
        # sleeps for milliseconds at a time when a write finds the file locked
        # (writes of other processes still meet it).
        self.writer: threading.Lock | None = None
        if self.driver.name == "sqlite" and not memory:
            self.writer = threading.Lock()
        self.ready = False
        """Whether the tables are known to be at ``HEAD_REVISION``."""
        self._auto_migrate = auto_migrate
        self._schema_lock = threading.Lock()
        self._max_packet: int | None = None  # MySQL's max_allowed_packet, read when needed
        self._errors = _translate.Translator(self._classify, self.secrets)
        self.group: _group.GroupCommit[Any, bool] | None = None
        """Writes concurrent steps' records together (the store sets it: ``sql._group``)."""

    # -- the schema -------------------------------------------------------------

    def prepare_schema(self) -> None:
        """Check the schema as the store opens; upgrade an older Fluxo schema (auto_migrate).

        A database without the Fluxo tables (or a SQLite file that does not exist,
        which is not created here) is left as it is: see :meth:`require_schema`.
        """
        if self.file is not None and not os.path.exists(self.file):
            folder = os.path.dirname(self.file)
            if not os.path.isdir(folder):
                raise _errors.StoreUnavailableError(
                    f"the sqlite database at {self.url} is unavailable: the folder {folder} "
                    "does not exist"
                ) from FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), folder)
            revision = None
        else:
            revision = self._revision()
        if revision == _schema.HEAD_REVISION:
            self.ready = True
        elif not self._auto_migrate:
            raise _errors.StoreError(self._schema_problem(revision))
        elif revision is not None or self.serial is not None:
            self._migrate()  # Fluxo's own tables, or a database in memory: nobody's typo

    def require_schema(self, *, create: bool) -> None:
        """Make sure the tables are at head before an operation; cheap once they are.

        Callers check :attr:`ready` first, so an operation on a ready store costs
        no round trip. Otherwise the revision is read again (another process may
        have migrated meanwhile). Only ``create`` operations (``create_run``,
        ``claim`` and ``beat_worker``, with ``auto_migrate``) create or upgrade the
        tables; the others, which read or change runs that cannot exist yet, raise
        instead.
        """
        with self._schema_lock:
            if self.ready:
                return
            if self.closed:
                raise self.closed_error()
            missing = self.file is not None and not os.path.exists(self.file)
            revision = None if missing else self._revision()
            if revision == _schema.HEAD_REVISION:
                self.ready = True
            elif create and self._auto_migrate:
                self._migrate()
            else:
                raise _errors.StoreError(self._schema_problem(revision))

    def migrate(self) -> None:
        """Bring the tables to head now, whatever ``auto_migrate`` says (``SQLStore.migrate``)."""
        with self._schema_lock:
            if self.closed:
                raise self.closed_error()
            if not self.ready:
                self._migrate()

    def _migrate(self) -> None:
        """Create (a SQLite file ``0600``, then) the tables, or upgrade them, under a lock."""
        from fluxo.stores.sql import _migrate

        if self.file is not None:
            _engine.create_sqlite_file(self.file)
        _migrate.upgrade(self.engine)
        self.ready = True

    def _schema_problem(self, revision: str | None) -> str:
        """What is wrong with the schema at ``revision`` (``None``: no Fluxo tables)."""
        if revision is not None:
            return (
                f"the database at {self.url} has Fluxo schema revision {revision!r}, and this "
                f"Fluxo needs {_schema.HEAD_REVISION!r}; run `fluxo db upgrade`"
            )
        problem = f"no Fluxo tables at {self.url}; run `fluxo db upgrade`"
        if self._auto_migrate:
            problem += " (or start a run or a worker on this store, which creates them)"
        return problem

    def _revision(self) -> str | None:
        def read(cur: DBAPICursor) -> str | None:
            try:
                execute(cur, self.sql.version, {})
            except self.driver.dbapi.Error as exc:
                if self.driver.is_missing_table(exc):
                    return None
                raise
            rows = cur.fetchall()
            return str(rows[0][0]) if rows else None

        return self.call("reading the schema version", read)

    # -- running statements -----------------------------------------------------

    def closed_error(self) -> _errors.StoreError:
        """What an operation on the closed store raises."""
        return _errors.StoreError(f"this SQLStore ({self.url}) is closed; create a new one")

    def call(
        self,
        action: str,
        operation: Callable[[DBAPICursor], T],
        *,
        begin: str | None = None,
        writes: bool = False,
    ) -> T:
        """Run ``operation`` on a pooled cursor, in a transaction if ``begin`` is given.

        ``writes``: the operation writes outside a ``begin_write`` transaction (one
        statement in autocommit mode): on SQLite it takes the process's write turn.
        Driver errors are translated into Fluxo errors here, with the cause chained;
        an operation that lost a deadlock is run again.
        """
        turn = self.serial
        if turn is None and (writes or begin == self.driver.begin_write):
            turn = self.writer
        attempt = 0
        while True:
            if self.closed:
                raise self.closed_error()
            try:
                with turn or nullcontext():
                    return self._call_once(operation, begin)
            except Exception as exc:
                attempt += 1
                if (
                    attempt < _RETRIES
                    and isinstance(exc, (sa_exc.DBAPIError, self.driver.dbapi.Error))
                    and self.driver.is_retryable(_cause(exc))
                ):
                    logger.debug("%s lost a deadlock; running it again", action)
                    time.sleep(0.01 * 2**attempt)
                    continue
                error = self._errors.error(exc, action)
                if error is None:
                    raise
                raise error from error.__cause__  # the driver error, unless it shows a password

    def translate(self, exc: BaseException, action: str) -> _errors.StoreError | None:
        """The Fluxo error a driver's ``exc`` during ``action`` is; ``None`` if not a driver's."""
        return self._errors.error(exc, action)

    def _call_once(self, operation: Callable[[DBAPICursor], T], begin: str | None) -> T:
        conn = self.engine.raw_connection()
        restore = None
        cur: DBAPICursor | None = None
        try:
            if not self.owns_engine:  # ours are in autocommit from the start
                restore = self.driver.autocommit(conn.dbapi_connection)  # type: ignore[arg-type]
            # One cursor per connection, kept: a new one per call costs more than the
            # statement on psycopg (its per-cursor adapter caches start empty).
            cur = conn.info.get(_CURSOR)
            if cur is None:
                cur = conn.info[_CURSOR] = conn.cursor()
            if begin is None:
                return operation(cur)
            cur.execute(begin)
            try:
                result = operation(cur)
            except BaseException:
                try:
                    cur.execute("ROLLBACK")
                except Exception:
                    conn.invalidate()
                raise
            cur.execute("COMMIT")
            return result
        except self.driver.dbapi.Error as exc:
            if conn.dbapi_connection is not None and self.engine.dialect.is_disconnect(
                exc, conn.dbapi_connection, cur
            ):
                conn.invalidate(exc)
            raise
        finally:
            if restore is not None and conn.dbapi_connection is not None:
                restore()
            conn.close()

    def _classify(self, exc: BaseException, action: str) -> _translate.Verdict | None:
        """Which Fluxo error a driver's ``exc`` during ``action`` is (see ``_translate``)."""
        if isinstance(exc, UnicodeEncodeError):  # a lone surrogate: no database stores it
            return _errors.StoreRejectedError, (
                f"{action} failed: the {self.driver.name} database at {self.url} cannot "
                f"store this text: {exc}"
            )
        if not isinstance(exc, (sa_exc.DBAPIError, self.driver.dbapi.Error)):
            return None
        orig = _cause(exc)
        if self.driver.is_missing_table(orig):
            return _errors.StoreError, (
                f"{action} failed: the Fluxo tables are missing from the database at "
                f"{self.url}; run `fluxo db upgrade --url <url>` ({orig})"
            )
        invalidated = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        if not invalidated and self.driver.is_rejected(orig):
            return _errors.StoreRejectedError, (
                f"{action} failed: the {self.driver.name} database at {self.url} refused the "
                f"data: {type(orig).__name__}: {str(orig).strip()}"
            )
        if invalidated or self.driver.is_unavailable(orig):
            return _errors.StoreUnavailableError, (
                f"{action} failed: the {self.driver.name} database at {self.url} is "
                f"unavailable: {str(orig).strip()}"
            )
        return _errors.StoreError, f"{action} failed on {self.url}: {type(orig).__name__}: {orig}"

    def check_size(self, action: str, size: int) -> None:
        """Refuse, for good, a MySQL write larger than the server takes in one statement.

        MySQL answers one by dropping the connection, which would look like an outage
        (``StoreUnavailableError``) and be tried again for ever.
        """
        if size < _LARGE or self.driver.name != "mysql":
            return  # (append asks only on MySQL: the sum of its sizes is not free)
        if self._max_packet is None:

            def read(cur: DBAPICursor) -> int:
                cur.execute("SELECT @@max_allowed_packet")
                return int(cur.fetchall()[0][0])

            self._max_packet = self.call("reading max_allowed_packet", read)
        if size + _PACKET_SLACK > self._max_packet:
            raise _errors.StoreRejectedError(
                f"{action} failed: {size} bytes are more than the MySQL server at {self.url} "
                f"takes in one statement (max_allowed_packet = {self._max_packet})"
            )

    # -- rows -------------------------------------------------------------------

    def read_run(self, run_id: str) -> history.RunInfo:
        """The run, without its history. Raises ``RunNotFoundError``."""

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return execute(cur, self.sql.get_run, {"p_run_id": run_id}).fetchall()

        rows = self.call("reading a run", read)
        if not rows:
            raise _errors.RunNotFoundError(run_id)
        return self.run_from_row(rows[0])

    def run_from_row(self, row: Sequence[Any]) -> history.RunInfo:
        """The run in a row of :data:`~fluxo.stores.sql._statements.RUN_COLUMNS`."""
        run_id, workflow, lease_owner, parent = row[0], row[1], row[6], row[11]
        queue, partition = row[14], row[16]
        if self.driver.decode_keys:
            run_id, workflow, queue = run_id.decode(), workflow.decode(), queue.decode()
            if lease_owner is not None:
                lease_owner = lease_owner.decode()
            if parent is not None:
                parent = parent.decode()
            if partition is not None:
                partition = partition.decode()
        status, damage = history.parse_status(row[2])
        headers, unreadable = _headers.decode(row[12])
        if unreadable is not None:
            damage = unreadable if damage is None else f"{damage}; {unreadable}"
        return history.RunInfo(
            id=run_id,
            workflow=workflow,
            status=status,
            created_at=row[3],
            updated_at=row[4],
            ready_at=row[5],
            lease_owner=lease_owner,
            lease_until=row[7],
            cancel_requested=bool(row[8]),
            wake_requested=bool(row[9]),
            deadline=row[10],
            parent=parent,
            headers=headers,
            damage=damage,
            recoveries=int(row[13] or 0),
            queue=queue,
            priority=int(row[15]),
            partition=partition,
            start_at=row[17],
        )

    def key(self, value: Any) -> str:
        """An identifier as read from the database (``VARBINARY`` bytes on MySQL)."""
        return value.decode() if self.driver.decode_keys else str(value)

    # -- lifecycle --------------------------------------------------------------

    def dispose(self) -> None:
        """Dispose of the connection pool, if the store created the engine."""
        if self.owns_engine:
            self.engine.dispose()
