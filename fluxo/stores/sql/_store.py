"""The SQL store's class: every operation of the contract on one SQL database."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fluxo import _errors, _redact, history
from fluxo.stores.sql import _engine, _statements
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

logger = logging.getLogger(__name__)

RunStatus = history.RunStatus
T = TypeVar("T")

_LISTENER_START: Final = 2.0
"""How long a first waiter waits for the PostgreSQL listener to connect before polling."""
_MIN_POLL_INTERVAL: Final = 1.0
"""The shortest ``poll_interval``: polling is the fallback, never the way waiters wake."""
_LARGE: Final = 1 << 20
"""Bytes past which a MySQL write is checked against the server's ``max_allowed_packet``."""
_PACKET_SLACK: Final = 64 << 10
"""Room in a MySQL packet for a statement's SQL and its other values."""
_PURGE_CHUNK: Final = 256
"""How many runs one ``DELETE`` of a purge names (a batch takes several)."""
_FINISHED: Final = frozenset(status.value for status in RunStatus if status.is_terminal)
_RETRIES: Final = 6
"""How often a transaction that lost a deadlock is run again before giving up."""


# -- the store ------------------------------------------------------------------


class _Missing(Exception):
    """Raised inside a transaction to roll it back: a guarded write found nothing to do."""


class _Duplicate(Exception):
    """Raised inside a transaction to roll it back: the run (or the signal) already exists."""


class _CancelPending(Exception):
    """Raised inside a transaction to roll it back: the run's cancellation is pending."""


class _Finished(Exception):
    """Raised inside a transaction to roll it back: the run has finished."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _finished(run_id: str, status: str) -> _errors.RunStateError:
    return _errors.RunStateError(
        f"run {run_id!r} has finished ({status}); a signal sent to it would never be read"
    )


class SQLStore:
    """The :class:`~fluxo.stores.Store` on SQLite, PostgreSQL or MySQL/MariaDB.

    Thread-safe, and any number of processes and machines may share one database.

    Example::

        store = SQLStore("postgresql://app@db/app")         # psycopg 3
        store = SQLStore("sqlite:///fluxo.db")              # WAL, one file
        store = SQLStore("sqlite:///fluxo.db?synchronous=normal")
        engine = fluxo.Engine(store, workflows=[checkout])

    Args:
        url: a database URL (see :func:`normalize_url`), or an existing
            :class:`sqlalchemy.Engine` on psycopg, pymysql or sqlite3. The store
            disposes an engine it created, never one it was given. A given engine
            works best built by :func:`make_engine`: others get their connections
            switched to autocommit for each operation.
        auto_migrate: let the store migrate its tables, under a lock so that
            processes starting together do not race: an older Fluxo schema is
            upgraded now, and the tables of an empty database (or the file of a
            new SQLite database, made ``0600``) are created by the first
            :meth:`create_run` or :meth:`claim`, never by anything else, so a
            mistyped URL gets no tables from a read. With ``False`` the store
            only checks the schema and asks for ``fluxo db upgrade``.
        engine_options: keyword arguments for :func:`sqlalchemy.create_engine`
            (only with a URL).
        poll_interval: how often, in seconds, :meth:`wait_for_change` looks for
            changes made by other processes (at least 1 s; on PostgreSQL only
            while ``LISTEN`` is down). Changes made through this store wake
            waiters at once.

    Raises:
        DefinitionError: the URL is unusable or the driver is not installed.
        StoreUnavailableError: the database cannot be reached.
        StoreError: the schema is missing or outdated and ``auto_migrate`` is off.
            With it on, an operation other than ``create_run`` and ``claim`` on a
            database without the Fluxo tables raises it: "no Fluxo tables at ...".
    """

    def __init__(
        self,
        url: str | sa.URL | sa.Engine,
        *,
        auto_migrate: bool = True,
        engine_options: Mapping[str, Any] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        if isinstance(url, sa.Engine):
            if engine_options:
                raise _errors.DefinitionError(
                    "engine_options apply only when SQLStore creates the engine from a URL; "
                    "configure the engine you pass instead"
                )
            self._engine = url
            self._owns_engine = False
        else:
            self._engine = _engine.make_engine(url, **dict(engine_options or {}))
            self._owns_engine = True
        self._closed = False
        try:
            dialect = self._engine.dialect
            self._driver = _engine.Driver(dialect)
            self._sql = _statements.Statements(dialect, self._driver.name)
            self._secrets = _engine.url_secrets(self._engine.url)
            self._url = _engine.redacted(self._engine.url)
            self._poll_interval = max(_MIN_POLL_INTERVAL, poll_interval)
            self._max_packet: int | None = None  # MySQL's max_allowed_packet, read when needed
            memory = self._driver.name == "sqlite" and _engine.is_memory_sqlite(self._engine.url)
            # One in-memory SQLite connection is shared: operations take turns on it.
            self._serial: threading.Lock | None = threading.Lock() if memory else None
            self._changed = threading.Condition()
            self._version = 0
            self._watch: Any = None  # SQLite: a connection reading PRAGMA data_version
            self._watch_lock = threading.Lock()
            self._listener: _engine.PgListener | None = None
            if self._driver.name == "postgresql":
                self._listener = _engine.PgListener(
                    self._engine, _statements.NOTIFY_CHANNEL, self._notified
                )
            self._file = _engine.sqlite_file(self._engine.url)
            self._auto_migrate = auto_migrate
            self._schema_lock = threading.Lock()
            self._ready = False  # the tables are known to be at HEAD_REVISION
            self._prepare_schema()
        except BaseException:
            if self._owns_engine:
                self._engine.dispose()
            raise
        if self._owns_engine:
            _dispose_in_forked_children(self)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<SQLStore {self._url}{state}>"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the store runs on."""
        return self._engine

    # -- plumbing ---------------------------------------------------------------

    def _prepare_schema(self) -> None:
        """Check the schema as the store opens; upgrade an older Fluxo schema (auto_migrate).

        A database without the Fluxo tables (or a SQLite file that does not exist,
        which is not created here) is left as it is: see :meth:`_require_schema`.
        """
        if self._file is not None and not os.path.exists(self._file):
            folder = os.path.dirname(self._file)
            if not os.path.isdir(folder):
                raise _errors.StoreUnavailableError(
                    f"the sqlite database at {self._url} is unavailable: the folder {folder} "
                    "does not exist"
                ) from FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), folder)
            revision = None
        else:
            revision = self._revision()
        if revision == schema.HEAD_REVISION:
            self._ready = True
        elif not self._auto_migrate:
            raise _errors.StoreError(self._schema_problem(revision))
        elif revision is not None or self._serial is not None:
            self._migrate()  # Fluxo's own tables, or a database in memory: nobody's typo

    def _require_schema(self, *, create: bool) -> None:
        """Make sure the tables are at head before an operation; cheap once they are.

        Callers check ``self._ready`` first, so an operation on a ready store costs
        no round trip. Otherwise the revision is read again (another process may
        have migrated meanwhile). Only ``create`` operations (``create_run`` and
        ``claim``, with ``auto_migrate``) create or upgrade the tables; the others,
        which read or change runs that cannot exist yet, raise instead.
        """
        with self._schema_lock:
            if self._ready:
                return
            if self._closed:
                raise _errors.StoreError(f"this SQLStore ({self._url}) is closed; create a new one")
            missing = self._file is not None and not os.path.exists(self._file)
            revision = None if missing else self._revision()
            if revision == schema.HEAD_REVISION:
                self._ready = True
            elif create and self._auto_migrate:
                self._migrate()
            else:
                raise _errors.StoreError(self._schema_problem(revision))

    def _migrate(self) -> None:
        """Create (a SQLite file ``0600``, then) the tables, or upgrade them, under a lock."""
        from fluxo.stores.sql import _migrate

        if self._file is not None:
            _engine.create_sqlite_file(self._file)
        _migrate.upgrade(self._engine)
        self._ready = True

    def _schema_problem(self, revision: str | None) -> str:
        """What is wrong with the schema at ``revision`` (``None``: no Fluxo tables)."""
        if revision is not None:
            return (
                f"the database at {self._url} has Fluxo schema revision {revision!r}, and this "
                f"Fluxo needs {schema.HEAD_REVISION!r}; run `fluxo db upgrade`"
            )
        problem = f"no Fluxo tables at {self._url}; run `fluxo db upgrade`"
        if self._auto_migrate:
            problem += " (or start a run or a worker on this store, which creates them)"
        return problem

    def _revision(self) -> str | None:
        def read(cur: DBAPICursor) -> str | None:
            try:
                self._execute(cur, self._sql.version, {})
            except self._driver.dbapi.Error as exc:
                if self._driver.is_missing_table(exc):
                    return None
                raise
            rows = cur.fetchall()
            return str(rows[0][0]) if rows else None

        return self._call("reading the schema version", read)

    @staticmethod
    def _execute(cur: DBAPICursor, sql: _statements.Sql, values: Mapping[str, Any]) -> DBAPICursor:
        cur.execute(sql.text, sql.args(values))
        return cur

    def _call(
        self, action: str, operation: Callable[[DBAPICursor], T], *, begin: str | None = None
    ) -> T:
        """Run ``operation`` on a pooled cursor, in a transaction if ``begin`` is given.

        Driver errors are translated into Fluxo errors here, with the cause chained;
        an operation that lost a deadlock is run again.
        """
        attempt = 0
        while True:
            if self._closed:
                raise _errors.StoreError(f"this SQLStore ({self._url}) is closed; create a new one")
            try:
                with self._serial or nullcontext():
                    return self._call_once(operation, begin)
            except UnicodeEncodeError as exc:  # a lone surrogate: no database stores it
                raise _errors.StoreRejectedError(
                    f"{action} failed: the {self._driver.name} database at {self._url} cannot "
                    f"store this text: {exc}"
                ) from exc
            except (sa_exc.DBAPIError, self._driver.dbapi.Error) as exc:
                orig = _cause(exc)
                attempt += 1
                if attempt < _RETRIES and self._driver.is_retryable(orig):
                    logger.debug("%s lost a deadlock; running it again", action)
                    time.sleep(0.01 * 2**attempt)
                    continue
                error = _redact.scrubbed(self._translate(exc, action), self._secrets)
                raise error from _redact.cause(exc, self._secrets)

    def _call_once(self, operation: Callable[[DBAPICursor], T], begin: str | None) -> T:
        conn = self._engine.raw_connection()
        restore = None
        cur: DBAPICursor | None = None
        try:
            if not self._owns_engine:  # ours are in autocommit from the start
                restore = self._driver.autocommit(conn.dbapi_connection)  # type: ignore[arg-type]
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
        except self._driver.dbapi.Error as exc:
            if conn.dbapi_connection is not None and self._engine.dialect.is_disconnect(
                exc, conn.dbapi_connection, cur
            ):
                conn.invalidate(exc)
            raise
        finally:
            if restore is not None and conn.dbapi_connection is not None:
                restore()
            conn.close()

    def _translate(self, exc: BaseException, action: str) -> _errors.StoreError:
        orig = _cause(exc)
        if self._driver.is_missing_table(orig):
            return _errors.StoreError(
                f"{action} failed: the Fluxo tables are missing from the database at "
                f"{self._url}; run `fluxo db upgrade --url <url>` ({orig})"
            )
        invalidated = isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated
        if not invalidated and self._driver.is_rejected(orig):
            return _errors.StoreRejectedError(
                f"{action} failed: the {self._driver.name} database at {self._url} refused the "
                f"data: {type(orig).__name__}: {str(orig).strip()}"
            )
        if invalidated or self._driver.is_unavailable(orig):
            return _errors.StoreUnavailableError(
                f"{action} failed: the {self._driver.name} database at {self._url} is "
                f"unavailable: {str(orig).strip()}"
            )
        return _errors.StoreError(f"{action} failed on {self._url}: {type(orig).__name__}: {orig}")

    def _check_size(self, action: str, size: int) -> None:
        """Refuse, for good, a MySQL write larger than the server takes in one statement.

        MySQL answers one by dropping the connection, which would look like an outage
        (``StoreUnavailableError``) and be tried again for ever.
        """
        if size < _LARGE or self._driver.name != "mysql":
            return  # (append asks only on MySQL: the sum of its sizes is not free)
        if self._max_packet is None:

            def read(cur: DBAPICursor) -> int:
                cur.execute("SELECT @@max_allowed_packet")
                return int(cur.fetchall()[0][0])

            self._max_packet = self._call("reading max_allowed_packet", read)
        if size + _PACKET_SLACK > self._max_packet:
            raise _errors.StoreRejectedError(
                f"{action} failed: {size} bytes are more than the MySQL server at {self._url} "
                f"takes in one statement (max_allowed_packet = {self._max_packet})"
            )

    def _notify(self) -> None:
        with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _run_from_row(self, row: Sequence[Any]) -> history.RunInfo:
        run_id, workflow, lease_owner, parent = row[0], row[1], row[6], row[11]
        if self._driver.decode_keys:
            run_id = run_id.decode()
            workflow = workflow.decode()
            if lease_owner is not None:
                lease_owner = lease_owner.decode()
            if parent is not None:
                parent = parent.decode()
        status, damage = history.parse_status(row[2])
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
            damage=damage,
        )

    def _key(self, value: Any) -> str:
        return value.decode() if self._driver.decode_keys else str(value)

    # -- runs -------------------------------------------------------------------

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
    ) -> tuple[history.RunInfo, bool]:
        """See :meth:`fluxo.stores.Store.create_run`."""
        if not self._ready:
            self._require_schema(create=True)
        self._check_size("starting a run", len(input))
        run = history.RunInfo(
            id=run_id,
            workflow=workflow,
            status=RunStatus.PENDING if owner is None else RunStatus.RUNNING,
            created_at=now,
            updated_at=now,
            ready_at=now,
            lease_owner=owner,
            lease_until=lease_until if owner is not None else None,
            deadline=deadline,
            parent=parent,
        )
        values = {
            "p_run_id": run_id,
            "p_workflow": workflow,
            "p_status": run.status.value,
            "p_owner": run.lease_owner,
            "p_lease_until": run.lease_until,
            "p_deadline": deadline,
            "p_parent": parent,
            "p_now": now,
            "p_seq": 0,
            "p_kind": history.WorkflowStarted.kind,
            "p_name": workflow,
            "p_data": input,
        }
        if self._driver.name == "postgresql":

            def create_pg(cur: DBAPICursor) -> bool:
                return bool(self._execute(cur, self._sql.pg_create_run, values).fetchall())

            created = self._call("starting a run", create_pg)
        else:

            def create(cur: DBAPICursor) -> bool:
                try:
                    self._execute(cur, self._sql.insert_run, values)
                except self._driver.dbapi.IntegrityError as exc:
                    if self._driver.is_unique_violation(exc):
                        raise _Duplicate from exc
                    raise
                self._execute(cur, self._sql.insert_event, values)
                return True

            try:
                created = self._call("starting a run", create, begin=self._driver.begin_write)
            except _Duplicate:
                created = False
        if not created:
            existing = self.get_run(run_id)
            if existing.workflow != workflow:
                raise _errors.RunIdConflictError(run_id, existing.workflow, workflow)
            return existing, False
        self._notify()
        return run, True

    def get_run(self, run_id: str) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.get_run`."""
        if not self._ready:
            self._require_schema(create=False)

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, self._sql.get_run, {"p_run_id": run_id}).fetchall()

        rows = self._call("reading a run", read)
        if not rows:
            raise _errors.RunNotFoundError(run_id)
        return self._run_from_row(rows[0])

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        """See :meth:`fluxo.stores.Store.get_runs`."""
        if not run_ids:
            return {}
        if not self._ready:
            self._require_schema(create=False)
        ids = _statements.bucket(run_ids)
        values = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
        sql = self._sql.get_runs(len(ids))

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, sql, values).fetchall()

        runs = (self._run_from_row(row) for row in self._call("reading runs", read))
        return {run.id: run for run in runs}

    def load(self, run_id: str) -> history.RunState:
        """See :meth:`fluxo.stores.Store.load`."""
        if not self._ready:
            self._require_schema(create=False)

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, self._sql.load, {"p_run_id": run_id}).fetchall()

        # One statement: the run and its events (part 0), then its signals (part 1).
        rows = self._call("loading a run", read)
        if not rows or rows[0][0] != 0:
            raise _errors.RunNotFoundError(run_id)
        run = self._run_from_row(rows[0][_statements.LOAD_RUN :])
        records: list[tuple[int, str, str, bytes | None]] = []
        recorded_at: list[float] = []
        signals: list[history.Signal] = []
        for part, position, kind, name, data, at, *_ in rows:
            if part == 0:
                if kind is not None:  # None: a run without events (a damaged database)
                    records.append((position, kind, name, None if data is None else bytes(data)))
                    recorded_at.append(at)
            else:
                signals.append(history.Signal(int(position), name, bytes(data), at))
        events = history.read_events(run_id, records)
        if run.damage is not None:
            raise _errors.HistoryCorruptError(run_id, None, run.damage, len(events))
        return history.RunState(run, events, tuple(signals), tuple(recorded_at))

    # -- append -----------------------------------------------------------------

    def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        unless_cancel_requested: bool = False,
    ) -> None:
        """See :meth:`fluxo.stores.Store.append`."""
        if not self._ready:
            self._require_schema(create=False)
        if expected_seq < 0:
            self._append_refused(run_id, expected_seq)
        if self._driver.name == "mysql":
            self._check_size("recording history", sum(len(e.data or b"") for e in events))
        if unless_cancel_requested:
            self._append_unless_cancelled(
                run_id, expected_seq, events, now=now, status=status, ready_at=ready_at
            )
            return
        if not events:
            if status is not None:
                self._append_status_only(run_id, expected_seq, now, status, ready_at)
            else:
                self._append_nothing(run_id, expected_seq)
            return
        first = events[0]
        values: dict[str, Any] = {
            "p_run_id": run_id,
            "p_seq": expected_seq,
            "p_prev": expected_seq - 1,
            "p_kind": first.kind,
            "p_name": first.name,
            "p_data": first.data,
            "p_now": now,
        }
        guarded = self._sql.insert_event_after if expected_seq else self._sql.insert_event_first
        waiting = status is RunStatus.WAITING
        if status is not None:
            values["p_status"] = status.value
            values["p_ready_at"] = ready_at

        def conflict(exc: BaseException) -> None:
            if self._driver.is_unique_violation(exc):
                raise _errors.SequenceConflictError(run_id, expected_seq) from exc

        if len(events) == 1 and (status is None or self._driver.name == "postgresql"):
            # The hot path: a single statement in autocommit, one round trip.
            sql: _statements.Sql | None = guarded
            if status is not None and expected_seq:
                sql = self._sql.pg_append_with_status[waiting]
            elif status is not None:
                sql = None  # position 0 with a status: a conflict, found the long way

            if sql is not None:

                def single(cur: DBAPICursor) -> int:
                    try:
                        return int(self._execute(cur, sql, values).rowcount)
                    except self._driver.dbapi.IntegrityError as exc:
                        conflict(exc)
                        raise

                if self._call("recording history", single) != 1:
                    self._append_refused(run_id, expected_seq)
                if status is not None:
                    self._notify()
                return

        def batch(cur: DBAPICursor) -> None:
            try:
                if self._execute(cur, guarded, values).rowcount != 1:
                    raise _Missing
                if len(events) > 1:
                    rest = [
                        self._sql.insert_event.args(
                            {
                                "p_run_id": run_id,
                                "p_seq": expected_seq + i,
                                "p_kind": event.kind,
                                "p_name": event.name,
                                "p_data": event.data,
                                "p_now": now,
                            }
                        )
                        for i, event in enumerate(events[1:], start=1)
                    ]
                    cur.executemany(self._sql.insert_event.text, rest)  # type: ignore[arg-type]
            except self._driver.dbapi.IntegrityError as exc:
                conflict(exc)
                raise
            if status is not None:
                self._execute(cur, self._sql.set_status[waiting], values)

        try:
            self._call("recording history", batch, begin=self._driver.begin_write)
        except _Missing:
            self._append_refused(run_id, expected_seq)
        if status is not None:
            self._notify()

    def _append_unless_cancelled(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None,
        ready_at: float | None,
    ) -> None:
        """``append(unless_cancel_requested=True)``: refused while a cancellation is pending.

        On PostgreSQL one event with a status (a run's end) is one statement that
        locks the run's row first. Otherwise a transaction locks the row, writes
        under the fence, and rolls back if the run's ``cancel_requested`` is set.
        """
        waiting = status is RunStatus.WAITING
        values: dict[str, Any] = {
            "p_run_id": run_id,
            "p_seq": expected_seq,
            "p_prev": expected_seq - 1,
            "p_now": now,
            "p_status": None if status is None else status.value,
            "p_ready_at": ready_at,
        }
        if events:
            values.update(p_kind=events[0].kind, p_name=events[0].name, p_data=events[0].data)

        def conflict(exc: BaseException) -> None:
            if self._driver.is_unique_violation(exc):
                raise _errors.SequenceConflictError(run_id, expected_seq) from exc

        if (
            self._driver.name == "postgresql"
            and len(events) == 1
            and status is not None
            and expected_seq > 0
        ):
            sql = self._sql.pg_append_unless_cancelled[waiting]

            def single(cur: DBAPICursor) -> int:
                try:
                    return int(self._execute(cur, sql, values).rowcount)
                except self._driver.dbapi.IntegrityError as exc:
                    conflict(exc)
                    raise

            if self._call("recording history", single) != 1:
                if self.get_run(run_id).cancel_requested and (
                    self._history_length(run_id) == expected_seq
                ):
                    raise _errors.CancelPendingError(run_id)
                self._append_refused(run_id, expected_seq)
            self._notify()
            return

        def checked(cur: DBAPICursor) -> None:
            row = self._execute(cur, self._sql.lock_run, values).fetchall()
            if not row:
                raise _Missing
            try:
                if events:
                    sql = self._sql.insert_event_after if expected_seq else None
                    first = sql or self._sql.insert_event_first
                    if self._execute(cur, first, values).rowcount != 1:
                        raise _Missing
                    rest = [
                        self._sql.insert_event.args(
                            {
                                "p_run_id": run_id,
                                "p_seq": expected_seq + i,
                                "p_kind": event.kind,
                                "p_name": event.name,
                                "p_data": event.data,
                                "p_now": now,
                            }
                        )
                        for i, event in enumerate(events[1:], start=1)
                    ]
                    if rest:
                        cur.executemany(self._sql.insert_event.text, rest)  # type: ignore[arg-type]
                else:
                    last = self._execute(cur, self._sql.append_state, values).fetchall()[0][1]
                    if (0 if last is None else int(last) + 1) != expected_seq:
                        raise _Missing
            except self._driver.dbapi.IntegrityError as exc:
                conflict(exc)
                raise
            if row[0][0]:
                raise _CancelPending
            if status is not None:
                self._execute(cur, self._sql.set_status[waiting], values)

        try:
            self._call("recording history", checked, begin=self._driver.begin_write)
        except _Missing:
            self._append_refused(run_id, expected_seq)
        except _CancelPending:
            raise _errors.CancelPendingError(run_id) from None
        if status is not None:
            self._notify()

    def _append_status_only(
        self,
        run_id: str,
        expected_seq: int,
        now: float,
        status: history.RunStatus,
        ready_at: float | None,
    ) -> None:
        values = {
            "p_run_id": run_id,
            "p_prev": expected_seq - 1,
            "p_status": status.value,
            "p_ready_at": ready_at,
            "p_now": now,
        }

        sql = self._sql.set_status_fenced[status is RunStatus.WAITING]

        def update(cur: DBAPICursor) -> int:
            return int(self._execute(cur, sql, values).rowcount)

        if self._call("changing a run's status", update) != 1:
            self._append_refused(run_id, expected_seq)
        self._notify()

    def _append_nothing(self, run_id: str, expected_seq: int) -> None:
        if self._history_length(run_id) != expected_seq:
            self._append_refused(run_id, expected_seq)

    def _history_length(self, run_id: str) -> int:
        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, self._sql.append_state, {"p_run_id": run_id}).fetchall()

        found, last = self._call("reading a run", read)[0]
        if found is None:
            raise _errors.RunNotFoundError(run_id)
        return 0 if last is None else int(last) + 1

    def _append_refused(self, run_id: str, expected_seq: int) -> None:
        """Raise what an append at ``expected_seq`` that wrote nothing ran into."""
        length = self._history_length(run_id)
        raise _errors.SequenceConflictError(run_id, min(expected_seq, length))

    # -- claims and leases ------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
    ) -> list[history.RunInfo]:
        """See :meth:`fluxo.stores.Store.claim`."""
        if not self._ready:
            self._require_schema(create=True)
        if limit <= 0 or not workflows:
            return []
        names = _statements.bucket(workflows)
        values: dict[str, Any] = {f"p_wf{i}": name for i, name in enumerate(names)}
        values.update(p_worker=worker_id, p_now=now, p_lease_until=lease_until, p_limit=limit)

        if self._driver.name == "postgresql":
            sql = self._sql.claim_pg(len(names))

            def claim_pg(cur: DBAPICursor) -> Sequence[Any]:
                return self._execute(cur, sql, values).fetchall()

            rows = self._call("claiming runs", claim_pg)
            claimed = [self._run_from_row(row) for row in rows]
        else:
            select = self._sql.claim_select(len(names))

            def claim(cur: DBAPICursor) -> list[history.RunInfo]:
                found = [
                    self._run_from_row(r) for r in self._execute(cur, select, values).fetchall()
                ]
                if not found:
                    return []
                ids = _statements.bucket([run.id for run in found])
                update = self._sql.claim_update(len(ids))
                keys = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
                self._execute(cur, update, {**values, **keys})
                return [
                    history.RunInfo(
                        id=run.id,
                        workflow=run.workflow,
                        status=RunStatus.RUNNING,
                        created_at=run.created_at,
                        updated_at=now,
                        ready_at=run.ready_at,
                        lease_owner=worker_id,
                        lease_until=lease_until,
                        cancel_requested=run.cancel_requested,
                        wake_requested=False,
                        deadline=run.deadline,
                        parent=run.parent,
                    )
                    for run in found
                ]

            claimed = self._call("claiming runs", claim, begin=self._driver.begin_write)
        claimed.sort(key=lambda run: (run.ready_at or 0.0, run.created_at, run.id))
        return claimed

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        """See :meth:`fluxo.stores.Store.claim_run`."""
        if not self._ready:
            self._require_schema(create=False)
        values = {
            "p_run_id": run_id,
            "p_worker": worker_id,
            "p_now": now,
            "p_lease_until": lease_until,
        }

        if self._sql.returning:

            def claim(cur: DBAPICursor) -> Sequence[Any]:
                return self._execute(cur, self._sql.claim_run, values).fetchall()

            rows = self._call("claiming a run", claim)
        else:

            def claim_then_read(cur: DBAPICursor) -> Sequence[Any]:
                if self._execute(cur, self._sql.claim_run, values).rowcount != 1:
                    return ()
                return self._execute(cur, self._sql.get_run, values).fetchall()

            rows = self._call("claiming a run", claim_then_read, begin=self._driver.begin_write)
        return self._run_from_row(rows[0]) if rows else None

    def next_wake(self, workflows: Collection[str], *, now: float) -> float | None:
        """See :meth:`fluxo.stores.Store.next_wake`."""
        if not self._ready:
            self._require_schema(create=False)
        if not workflows:
            return None
        names = _statements.bucket(workflows)
        values: dict[str, Any] = {f"p_wf{i}": name for i, name in enumerate(names)}
        values["p_now"] = now
        sql = self._sql.next_wake(len(names))

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, sql, values).fetchall()

        found = self._call("looking for the next wake-up", read)[0][0]
        return None if found is None else float(found)

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        """See :meth:`fluxo.stores.Store.send_signal`."""
        if not self._ready:
            self._require_schema(create=False)
        self._check_size("sending a signal", len(payload))
        values = {
            "p_run_id": run_id,
            "p_name": name,
            "p_payload": payload,
            "p_now": now,
            "p_key": key,
        }
        if self._driver.name == "postgresql":

            def send_pg(cur: DBAPICursor) -> Sequence[Any]:
                return self._execute(cur, self._sql.pg_send_signal, values).fetchall()

            rows = self._call("sending a signal", send_pg)
            if not rows:
                raise _errors.RunNotFoundError(run_id)
            status, signal_id, _woken = rows[0]
            if signal_id is None and history.parse_status(status)[0].is_terminal:
                raise _finished(run_id, status)
            sent = signal_id is not None
        else:

            def send(cur: DBAPICursor) -> bool:
                rows = self._execute(cur, self._sql.signal_run_status, values).fetchall()
                if not rows:
                    raise _Missing
                if history.parse_status(rows[0][0])[0].is_terminal:
                    raise _Finished(rows[0][0])
                try:
                    self._execute(cur, self._sql.insert_signal, values)
                except self._driver.dbapi.IntegrityError as exc:
                    if self._driver.is_unique_violation(exc):
                        raise _Duplicate from exc
                    raise
                self._execute(cur, self._sql.wake_for_signal, values)
                return True

            try:
                sent = self._call("sending a signal", send, begin=self._driver.begin_write)
            except _Missing:
                raise _errors.RunNotFoundError(run_id) from None
            except _Finished as finished:
                raise _finished(run_id, finished.status) from None
            except _Duplicate:
                sent = False
        if sent:
            self._notify()
        return sent

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        """See :meth:`fluxo.stores.Store.renew`."""
        if not self._ready:
            self._require_schema(create=False)
        if not run_ids:
            return {}
        ids = _statements.bucket(run_ids)
        values: dict[str, Any] = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
        values.update(p_worker=worker_id, p_lease_until=lease_until)
        update = self._sql.renew(len(ids))

        if self._sql.returning:

            def renew(cur: DBAPICursor) -> Sequence[Any]:
                return self._execute(cur, update, values).fetchall()

            rows = self._call("renewing leases", renew)
        else:
            held = self._sql.held(len(ids))

            def renew_then_read(cur: DBAPICursor) -> Sequence[Any]:
                self._execute(cur, update, values)
                return self._execute(cur, held, values).fetchall()

            rows = self._call("renewing leases", renew_then_read, begin="BEGIN")
        return {self._key(row[0]): bool(row[1]) for row in rows}

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        """See :meth:`fluxo.stores.Store.release`."""
        if not self._ready:
            self._require_schema(create=False)
        values = {"p_run_id": run_id, "p_worker": worker_id, "p_now": now}

        def release(cur: DBAPICursor) -> int:
            return int(self._execute(cur, self._sql.release, values).rowcount)

        if self._call("releasing a lease", release):
            self._notify()

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.request_cancel`."""
        if not self._ready:
            self._require_schema(create=False)
        values = {"p_run_id": run_id, "p_now": now}

        def cancel(cur: DBAPICursor) -> tuple[int, Sequence[Any]]:
            cur = self._execute(cur, self._sql.request_cancel, values)
            if self._sql.returning:
                rows = cur.fetchall()
                return len(rows), rows
            return int(cur.rowcount), ()

        changed, rows = self._call("requesting cancellation", cancel)
        if changed:
            self._notify()
        if rows:
            return self._run_from_row(rows[0])
        return self.get_run(run_id)

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.reopen`."""
        if not self._ready:
            self._require_schema(create=False)
        values = {
            "p_run_id": run_id,
            "p_now": now,
            "p_kind": history.RunRetried.kind,
            "p_name": history.RunRetried().name,
            "p_data": history.RunRetried().data,
        }

        def reopen(cur: DBAPICursor) -> Sequence[Any]:
            cur = self._execute(cur, self._sql.reopen, values)
            if self._sql.returning:
                rows = cur.fetchall()
                reopened = bool(rows)
            else:
                rows, reopened = (), cur.rowcount == 1
            if not reopened:
                raise _Missing
            self._execute(cur, self._sql.append_retried, values)
            if not rows:
                rows = self._execute(cur, self._sql.get_run, values).fetchall()
            return rows

        try:
            rows = self._call("retrying a run", reopen, begin=self._driver.begin_write)
        except _Missing:
            run = self.get_run(run_id)
            raise _errors.RunStateError(
                f"run {run_id!r} is {run.status.value}, not failed; only a failed run "
                "can be retried"
            ) from None
        self._notify()
        return self._run_from_row(rows[0])

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
    ) -> list[history.RunInfo]:
        """See :meth:`fluxo.stores.Store.list_runs`."""
        if not self._ready:
            self._require_schema(create=False)
        if limit <= 0 or (statuses is not None and not statuses):
            return []
        if workflows is not None and not workflows:
            return []
        values: dict[str, Any] = {"p_limit": limit}
        status_words = None
        if statuses is not None:
            status_words = _statements.bucket([RunStatus(s).value for s in statuses])
            values.update({f"p_status{i}": s for i, s in enumerate(status_words)})
        names = None
        if workflows is not None:
            names = _statements.bucket(workflows)
            values.update({f"p_wf{i}": name for i, name in enumerate(names)})
        if created_after is not None:
            values["p_after"] = created_after
        if created_before is not None:
            values["p_before"] = created_before
        sql = self._sql.list_runs(
            None if status_words is None else len(status_words),
            None if names is None else len(names),
            after=created_after is not None,
            before=created_before is not None,
        )

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return self._execute(cur, sql, values).fetchall()

        return [self._run_from_row(row) for row in self._call("listing runs", read)]

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """See :meth:`fluxo.stores.Store.purge`.

        One transaction per call: on PostgreSQL a single statement chooses the
        runs (``FOR UPDATE SKIP LOCKED``: a run a writer holds is left for the next
        call) and deletes them with their events and signals; elsewhere the runs
        are chosen (locked on MySQL; SQLite writers take turns) and deleted, with
        theirs, by lists of ids.
        """
        if not self._ready:
            self._require_schema(create=False)
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

        if self._driver.name == "postgresql" and not dry_run:
            sql = self._sql.pg_purge(len(status_words), count)

            def purge_pg(cur: DBAPICursor) -> int:
                return len(self._execute(cur, sql, values).fetchall())

            return self._call("purging runs", purge_pg)

        choose = self._sql.purge(len(status_words), count, lock=not dry_run)

        def purge(cur: DBAPICursor) -> int:
            ids = [row[0] for row in self._execute(cur, choose, values).fetchall()]
            if dry_run:
                return len(ids)
            for start in range(0, len(ids), _PURGE_CHUNK):
                chunk = _statements.bucket(ids[start : start + _PURGE_CHUNK])
                keys = {f"p_id{i}": run_id for i, run_id in enumerate(chunk)}
                for delete in self._sql.purge_delete(len(chunk)):
                    self._execute(cur, delete, keys)
            return len(ids)

        return self._call(
            "purging runs", purge, begin=None if dry_run else self._driver.begin_write
        )

    # -- waiting ----------------------------------------------------------------

    def change_token(self, run_id: str | None) -> object:
        """See :meth:`fluxo.stores.Store.change_token`."""
        with self._changed:
            version = self._version
        listener = self._listener
        if listener is not None and listener.start(wait=_LISTENER_START):
            return (version, _UNKNOWN)  # notifications from now on bump the version
        return (version, self._fingerprint(run_id))

    def wait_for_change(self, run_id: str | None, timeout: float, since: object = None) -> bool:
        """See :meth:`fluxo.stores.Store.wait_for_change`.

        Writes made through this store wake waiters at once. On PostgreSQL, writes
        made by other processes wake them through ``LISTEN``/``NOTIFY`` (a thread
        with its own connection, started by the first wait). Elsewhere, or while
        that connection is down, a cheap query every ``poll_interval`` notices them.
        """
        if isinstance(since, tuple) and len(since) == 2:
            version, baseline = since
        else:
            with self._changed:
                version = self._version
            baseline = None
        if self._version != version:
            return True
        if timeout <= 0:
            return False
        deadline = time.monotonic() + timeout
        listener = self._listener
        if listener is not None and listener.start(wait=min(timeout, _LISTENER_START)):
            if baseline is None:
                baseline = _UNKNOWN  # taken if the listener fails and polling takes over
        elif baseline is None or baseline is _UNKNOWN:
            baseline = self._fingerprint(run_id)
        elif self._fingerprint(run_id) != baseline:
            return True

        def woken() -> bool:
            return self._version != version or self._closed

        while True:
            remaining = deadline - time.monotonic()
            with self._changed:
                if self._changed.wait_for(woken, min(max(remaining, 0.0), self._poll_interval)):
                    return True
            if remaining <= self._poll_interval:
                return False
            if listener is not None and listener.listening:
                continue
            current = self._fingerprint(run_id)
            if baseline is _UNKNOWN:
                baseline = current
            elif current is not _UNKNOWN and current != baseline:
                return True

    def _notified(self, run_id: str | None) -> None:
        """Called by the PostgreSQL listener for each change announced by any process."""
        self._notify()

    def _fingerprint(self, run_id: str | None) -> object:
        """Something that differs once the run (or, for ``None``, any run) has changed.

        A run's own row tells exactly. For any run, a counter of the database's:
        ``PRAGMA data_version`` on SQLite (commits by other connections, so it is
        read on a connection of its own), the WAL insert position on PostgreSQL
        (when ``LISTEN`` is down) and the handler counters on MySQL. The last two
        are server-wide: other databases' work wakes waiters spuriously, at most
        once per ``poll_interval``.
        """
        if run_id is not None:

            def read_run(cur: DBAPICursor) -> object:
                values = {"p_run_id": run_id}
                return tuple(self._execute(cur, self._sql.run_fingerprint, values).fetchall())

            read = read_run
        elif self._driver.name == "sqlite":
            if self._serial is not None:
                return None  # in memory: no other process can write
            return self._sqlite_data_version()
        else:

            def read_any(cur: DBAPICursor) -> object:
                cur.execute(self._sql.any_change)
                return tuple(tuple(row) for row in cur.fetchall())

            read = read_any
        try:
            return self._call("watching for changes", read)
        except _errors.StoreError as exc:
            logger.debug("cannot look for changes: %s", exc)
            return _UNKNOWN

    def _sqlite_data_version(self) -> object:
        with self._watch_lock:
            try:
                if self._closed:
                    return _UNKNOWN
                if self._watch is None:
                    pooled = self._engine.raw_connection()
                    pooled.detach()  # kept apart: only its own reads, so it sees all commits
                    self._watch = pooled.dbapi_connection
                cursor = self._watch.cursor()
                try:
                    cursor.execute(self._sql.any_change)
                    return tuple(cursor.fetchall())
                finally:
                    cursor.close()
            except (sa_exc.DBAPIError, self._driver.dbapi.Error) as exc:
                logger.debug("cannot look for changes: %s", exc)
                self._close_watch()
                return _UNKNOWN

    def _close_watch(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            with contextlib.suppress(Exception):
                watch.close()

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the connection pool (of an engine this store created). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._notify()
        if self._listener is not None:
            self._listener.stop()
        with self._watch_lock:
            self._close_watch()
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _cause(exc: BaseException) -> BaseException:
    """The driver's exception behind one SQLAlchemy may have wrapped it in."""
    if isinstance(exc, sa_exc.DBAPIError) and isinstance(exc.orig, BaseException):
        return exc.orig
    return exc


_UNKNOWN: Final = object()
_CURSOR: Final = "fluxo.cursor"
"""Where a pooled connection keeps its cursor (``info`` is cleared on invalidation)."""


_FORK_SAFE: weakref.WeakSet[SQLStore] = weakref.WeakSet()
"""Stores whose pools a forked child must not share with its parent."""


def _after_fork_in_child() -> None:
    for store in list(_FORK_SAFE):
        if not store._closed:
            store.engine.dispose(close=False)
            store._watch = None  # the parent's; never closed here
            if store._listener is not None:
                store._listener.forget_after_fork()


def _dispose_in_forked_children(store: SQLStore) -> None:
    """Make a forked child open its own connections instead of sharing the parent's."""
    _FORK_SAFE.add(store)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
