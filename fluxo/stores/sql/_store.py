"""The SQL store's class: every operation of the contract on one SQL database.

Statements are built once per database dialect (``_statements``) and run on
pooled DB-API connections (``_database``); ``append``, the hot path, lives in
``_append``, claims in ``_claims``, the queue operations in ``_queues``, worker
liveness in ``_workers``, ``purge`` in ``_purge`` and waiting for changes in ``_watch``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Collection, Container, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from fluxo import _errors, history
from fluxo.stores.sql import (
    _append,
    _claims,
    _database,
    _engine,
    _group,
    _held,
    _joined,
    _prefix,
    _purge,
    _queues,
    _rows,
    _statements,
    _watch,
    _workers,
)

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

RunStatus = history.RunStatus


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
            :meth:`create_run`, :meth:`claim` or :meth:`beat_worker`, never by
            anything else, so a mistyped URL gets no tables from a read. With ``False`` the store
            only checks the schema and asks for ``fluxo db upgrade``.
        engine_options: keyword arguments for :func:`sqlalchemy.create_engine`
            (only with a URL).
        poll_interval: how often, in seconds, :meth:`wait_for_change` looks for
            changes made by other processes (at least 1 s; on PostgreSQL only
            while ``LISTEN`` is down; on a SQLite file, in case a nudge was
            lost). Changes made through this store wake waiters at once.

    Raises:
        DefinitionError: the URL is unusable or the driver is not installed.
        StoreUnavailableError: the database cannot be reached.
        StoreError: the schema is missing or outdated and ``auto_migrate`` is off.
            With it on, an operation other than ``create_run``, ``claim`` and
            ``beat_worker`` on a database without the Fluxo tables raises it: "no
            Fluxo tables at ...".
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
            engine, owns_engine = url, False
        else:
            engine = _engine.make_engine(url, **dict(engine_options or {}))
            owns_engine = True
        try:
            shown = _engine.shown(url.url if isinstance(url, sa.Engine) else url)
            self._db = _database.Database(
                engine, shown, owns_engine=owns_engine, auto_migrate=auto_migrate
            )
            self._sql = self._db.sql
            self._db.group = _group.group_commit(self._db)
            self._held = _held.HeldStatements(engine.dialect, self._db.driver.name)
            self._watcher = _watch.Watcher(self._db, poll_interval)
            self._liveness = _workers.Liveness(self._db, self._watcher)
            self._queues = _queues.Queues(self._db, self._watcher)
            self._purges = _purge.Purges(self._db)
            self._id_ranges = _prefix.IdRanges(self._db)
            self._db.prepare_schema()
        except BaseException:
            if owns_engine:
                engine.dispose()
            raise
        if owns_engine:
            _FORK_SAFE.add(self)

    def migrate(self) -> None:
        """Create the Fluxo tables now, or upgrade them: what ``fluxo db upgrade`` does.

        Under a lock, so processes starting together do not race; a no-op once the
        tables are at the newest revision. Useful before a first transactional
        start (:meth:`fluxo.Engine.in_transaction`) on SQLite, where the tables
        cannot be made from another connection while your transaction writes.
        """
        self._db.migrate()

    def join(
        self, dbapi_connection: Any, *, after_commit: Callable[[Callable[[], None]], None] | None
    ) -> _joined.JoinedStart:
        """Starts of runs written on a caller's DB-API connection, in the caller's transaction.

        Used by :meth:`fluxo.Engine.in_transaction`. ``dbapi_connection`` must be a
        connection to this store's database, inside a transaction its owner
        commits or rolls back; ``after_commit``, when the caller can tell, runs a
        function once that transaction has committed (it wakes this process's
        waiters; other processes learn of the run as of any other start).

        Raises:
            DefinitionError: the connection is to another database, or of a driver
                that cannot reach this store's.
        """
        return _joined.JoinedStart(self._db, dbapi_connection, self._watcher, after_commit)

    def __repr__(self) -> str:
        state = " closed" if self._db.closed else ""
        return f"<SQLStore {self._db.url}{state}>"

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the store runs on."""
        return self._db.engine

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
        headers: Mapping[str, str] | None = None,
        queue: str = history.DEFAULT_QUEUE,
        priority: int = 0,
        partition: str | None = None,
        start_at: float | None = None,
    ) -> tuple[history.RunInfo, bool]:
        """See :meth:`fluxo.stores.Store.create_run`."""
        if not self._db.ready:
            self._db.require_schema(create=True)
        self._db.check_size("starting a run", len(input))
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
        if self._db.driver.name == "postgresql":

            def create_pg(cur: DBAPICursor) -> bool:
                return bool(_database.execute(cur, self._sql.pg_create_run, values).fetchall())

            created = self._db.call("starting a run", create_pg, writes=True)
        else:

            def create(cur: DBAPICursor) -> bool:
                try:
                    _database.execute(cur, self._sql.insert_run, values)
                except self._db.driver.dbapi.IntegrityError as exc:
                    if self._db.driver.is_unique_violation(exc):
                        raise _database.Duplicate from exc
                    raise
                _database.execute(cur, self._sql.insert_event, values)
                return True

            try:
                created = self._db.call("starting a run", create, begin=self._db.driver.begin_write)
            except _database.Duplicate:
                created = False
        if not created:
            existing = self.get_run(run_id)
            if existing.workflow != workflow:
                raise _errors.RunIdConflictError(run_id, existing.workflow, workflow)
            return existing, False
        self._watcher.changed(run_id)
        return run, True

    def get_run(self, run_id: str) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.get_run`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return self._db.read_run(run_id)

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        """See :meth:`fluxo.stores.Store.get_runs`."""
        if not run_ids:
            return {}
        if not self._db.ready:
            self._db.require_schema(create=False)
        ids = _statements.bucket(run_ids)
        values = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
        sql = self._sql.get_runs(len(ids))

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, sql, values).fetchall()

        runs = (self._db.run_from_row(row) for row in self._db.call("reading runs", read))
        return {run.id: run for run in runs}

    def load(self, run_id: str) -> history.RunState:
        """See :meth:`fluxo.stores.Store.load`."""
        if not self._db.ready:
            self._db.require_schema(create=False)

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, self._sql.load, {"p_run_id": run_id}).fetchall()

        # One statement: the run and its events (part 0), then its signals (part 1).
        return _rows.state_from_rows(self._db, run_id, self._db.call("loading a run", read))

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
        if not self._db.ready:
            self._db.require_schema(create=False)
        _append.append(
            self._db,
            run_id,
            expected_seq,
            events,
            now=now,
            status=status,
            ready_at=ready_at,
            unless_cancel_requested=unless_cancel_requested,
        )
        if status is not None:
            self._watcher.changed(run_id)

    # -- claims and leases ------------------------------------------------------

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        """See :meth:`fluxo.stores.Store.claim` (and ``_claims``)."""
        if not self._db.ready:
            self._db.require_schema(create=True)
        return _claims.claim(
            self._db,
            worker_id,
            workflows,
            now=now,
            lease_until=lease_until,
            limit=limit,
            queues=queues,
        )

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        """See :meth:`fluxo.stores.Store.claim_run` (and ``_claims``)."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return _claims.claim_run(self._db, worker_id, run_id, now=now, lease_until=lease_until)

    def take_back(
        self,
        worker_id: str,
        run_id: str,
        *,
        now: float,
        lease_until: float,
        cancels: bool,
        due: bool,
        after: int = -1,
    ) -> _held.TakenBack:
        """Take back a run whose wait a thread of ``worker_id`` held, if it was woken.

        Not part of the store contract: a worker holding a short wait in its thread
        (:class:`fluxo._leases.RunHolder`) uses it where a store offers it, instead of
        ``get_run``, ``claim_run`` and ``load``. The run is leased to ``worker_id`` as
        ``claim_run`` would (``RUNNING``, ``wake_requested`` cleared) when it is
        active, has no lease or ``worker_id``'s, and was woken: ``wake_requested``
        is set, ``worker_id`` holds it already, its ``cancel_requested`` is set
        (counted only with ``cancels``), or ``due``. Then the run is read again,
        with the length of its history and, when ``worker_id`` holds it, its
        signals whose ids are above ``after`` (oldest first; -1: all), in a read
        made after the lease was taken. One round trip on PostgreSQL.

        Raises:
            RunNotFoundError: no such run.
        """
        if not self._db.ready:
            self._db.require_schema(create=False)
        return _held.take_back(
            self._db,
            self._held,
            worker_id,
            run_id,
            now=now,
            lease_until=lease_until,
            cancels=cancels,
            due=due,
            after=after,
        )

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str] | None = None
    ) -> float | None:
        """See :meth:`fluxo.stores.Store.next_wake`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        if not workflows or (queues is not None and not queues):
            return None
        names = _statements.bucket(workflows)
        values: dict[str, Any] = {"p_now": now, **{f"p_wf{i}": n for i, n in enumerate(names)}}
        sql = self._sql.next_wake(len(names), _statements.queue_values(queues, values))

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, sql, values).fetchall()

        found = self._db.call("looking for the next wake-up", read)[0][0]
        return None if found is None else float(found)

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        """See :meth:`fluxo.stores.Store.send_signal`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        self._db.check_size("sending a signal", len(payload))
        values = {
            "p_run_id": run_id,
            "p_name": name,
            "p_payload": payload,
            "p_now": now,
            "p_key": key,
        }
        if self._db.driver.name == "postgresql":

            def send_pg(cur: DBAPICursor) -> Sequence[Any]:
                return _database.execute(cur, self._sql.pg_send_signal, values).fetchall()

            rows = self._db.call("sending a signal", send_pg, writes=True)
            if not rows:
                raise _errors.RunNotFoundError(run_id)
            status, signal_id, _woken = rows[0]
            if signal_id is None and history.parse_status(status)[0].is_terminal:
                raise _rows.finished_error(run_id, status)
            sent = signal_id is not None
        else:

            def send(cur: DBAPICursor) -> bool:
                rows = _database.execute(cur, self._sql.signal_run_status, values).fetchall()
                if not rows:
                    raise _database.Missing
                if history.parse_status(rows[0][0])[0].is_terminal:
                    raise _database.Finished(rows[0][0])
                try:
                    _database.execute(cur, self._sql.insert_signal, values)
                except self._db.driver.dbapi.IntegrityError as exc:
                    if self._db.driver.is_unique_violation(exc):
                        raise _database.Duplicate from exc
                    raise
                _database.execute(cur, self._sql.wake_for_signal, values)
                return True

            try:
                sent = self._db.call("sending a signal", send, begin=self._db.driver.begin_write)
            except _database.Missing:
                raise _errors.RunNotFoundError(run_id) from None
            except _database.Finished as finished:
                raise _rows.finished_error(run_id, finished.status) from None
            except _database.Duplicate:
                sent = False
        if sent:
            self._watcher.changed(run_id)
        return sent

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        """See :meth:`fluxo.stores.Store.renew`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        if not run_ids:
            return {}
        ids = _statements.bucket(run_ids)
        values: dict[str, Any] = {f"p_id{i}": run_id for i, run_id in enumerate(ids)}
        values.update(p_worker=worker_id, p_lease_until=lease_until)
        update = self._sql.renew(len(ids))

        if self._sql.returning:

            def renew(cur: DBAPICursor) -> Sequence[Any]:
                return _database.execute(cur, update, values).fetchall()

            rows = self._db.call("renewing leases", renew, writes=True)
        else:
            held = self._sql.held(len(ids))

            def renew_then_read(cur: DBAPICursor) -> Sequence[Any]:
                _database.execute(cur, update, values)
                return _database.execute(cur, held, values).fetchall()

            rows = self._db.call("renewing leases", renew_then_read, begin="BEGIN", writes=True)
        return {self._db.key(row[0]): bool(row[1]) for row in rows}

    def beat_worker(
        self,
        worker_id: str,
        *,
        now: float,
        alive_until: float,
        reap: bool = True,
        restarted: bool = False,
    ) -> list[str]:
        """See :meth:`fluxo.stores.Store.beat_worker`.

        One statement on PostgreSQL, one transaction elsewhere; a beat that finds
        no dead worker is an upsert of the worker's row and one look at the
        (small) table of workers.
        """
        if not self._db.ready:
            self._db.require_schema(create=True)
        return self._liveness.beat(
            worker_id, now=now, alive_until=alive_until, reap=reap, restarted=restarted
        )

    def forget_worker(self, worker_id: str) -> None:
        """See :meth:`fluxo.stores.Store.forget_worker`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        self._liveness.forget(worker_id)

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        """See :meth:`fluxo.stores.Store.release`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        values = {"p_run_id": run_id, "p_worker": worker_id, "p_now": now}

        def release(cur: DBAPICursor) -> int:
            return int(_database.execute(cur, self._sql.release, values).rowcount)

        if self._db.call("releasing a lease", release, writes=True):
            self._watcher.changed(run_id)

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.request_cancel`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        values = {"p_run_id": run_id, "p_now": now}

        def cancel(cur: DBAPICursor) -> tuple[int, Sequence[Any]]:
            cur = _database.execute(cur, self._sql.request_cancel, values)
            if self._sql.returning:
                rows = cur.fetchall()
                return len(rows), rows
            return int(cur.rowcount), ()

        changed, rows = self._db.call("requesting cancellation", cancel, writes=True)
        if changed:
            self._watcher.changed(run_id)
        if rows:
            return self._db.run_from_row(rows[0])
        return self.get_run(run_id)

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        """See :meth:`fluxo.stores.Store.reopen`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        values = {
            "p_run_id": run_id,
            "p_now": now,
            "p_kind": history.RunRetried.kind,
            "p_name": history.RunRetried().name,
            "p_data": history.RunRetried().data,
        }

        def reopen(cur: DBAPICursor) -> Sequence[Any]:
            cur = _database.execute(cur, self._sql.reopen, values)
            if self._sql.returning:
                rows = cur.fetchall()
                reopened = bool(rows)
            else:
                rows, reopened = (), cur.rowcount == 1
            if not reopened:
                raise _database.Missing
            _database.execute(cur, self._sql.append_retried, values)
            if not rows:
                rows = _database.execute(cur, self._sql.get_run, values).fetchall()
            return rows

        try:
            rows = self._db.call("retrying a run", reopen, begin=self._db.driver.begin_write)
        except _database.Missing:
            run = self.get_run(run_id)
            raise _errors.RunStateError(_errors.not_reopenable(run_id, run.status.value)) from None
        self._watcher.changed(run_id)
        return self._db.run_from_row(rows[0])

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """See :meth:`fluxo.stores.Store.queued_runs` (and ``_queues``)."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return self._queues.queued_runs(queue, now=now, limit=limit)

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """See :meth:`fluxo.stores.Store.admit` (and ``_queues``)."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return self._queues.admit(run_ids, now=now) if run_ids else []

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """See :meth:`fluxo.stores.Store.read_queue`."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return self._queues.read_queue(queue)

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """See :meth:`fluxo.stores.Store.write_queue` (and ``_queues``)."""
        if not self._db.ready:
            self._db.require_schema(create=True)
        return self._queues.write_queue(queue, version, state)

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        """See :meth:`fluxo.stores.Store.list_runs` (``_prefix``: the id-prefix range)."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        if limit <= 0 or (statuses is not None and not statuses):
            return []
        if (workflows is not None and not workflows) or (queues is not None and not queues):
            return []
        values: dict[str, Any] = {"p_limit": limit}
        served = _statements.queue_values(queues, values)
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
            ids=self._id_ranges.bind(id_prefix, values) if id_prefix else None,
            queues=served,
        )

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, sql, values).fetchall()

        return [self._db.run_from_row(row) for row in self._db.call("listing runs", read)]

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        """See :meth:`fluxo.stores.Store.count_runs`: one ``GROUP BY`` over the runs table."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        sql = self._sql.count_runs()

        def read(cur: DBAPICursor) -> Sequence[Any]:
            return _database.execute(cur, sql, {}).fetchall()

        counts: dict[tuple[str, history.RunStatus], int] = {}
        for workflow, stored, count in self._db.call("counting runs", read):
            # Each damaged status word has its group; all of them read as FAILED.
            key = (self._db.key(workflow), history.parse_status(stored)[0])
            counts[key] = counts.get(key, 0) + int(count)
        return counts

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """See :meth:`fluxo.stores.Store.purge` (and ``_purge``)."""
        if not self._db.ready:
            self._db.require_schema(create=False)
        return self._purges.purge(
            finished_before=finished_before,
            statuses=statuses,
            workflows=workflows,
            limit=limit,
            dry_run=dry_run,
        )

    # -- waiting ----------------------------------------------------------------

    def change_token(self, run_id: str | None) -> object:
        """See :meth:`fluxo.stores.Store.change_token`."""
        return self._watcher.token(run_id)

    def wait_for_change(
        self,
        run_id: str | None,
        timeout: float,
        since: object = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        """See :meth:`fluxo.stores.Store.wait_for_change`.

        Writes made through this store wake waiters at once. On PostgreSQL, writes
        made by other processes wake them through ``LISTEN``/``NOTIFY`` (a thread
        with its own connection, started by the first wait); on a SQLite file,
        through nudges the other processes' stores send to a Unix socket of this
        store's (bound, with its thread, by the first wait; see docs/stores/sqlite.md).
        Elsewhere, while that connection is down, and on SQLite in case a nudge was
        lost, a cheap query every ``poll_interval`` notices them.
        """
        return self._watcher.wait(run_id, timeout, since, ignoring=ignoring)

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Dispose of the connection pool (of an engine this store created). Idempotent.

        Also stops listening for other processes' changes: on SQLite, this store's
        socket file is removed.
        """
        if self._db.closed:
            return
        self._db.closed = True
        self._watcher.close()
        self._db.dispose()

    def __enter__(self) -> SQLStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _after_fork(self) -> None:
        """In a forked child: open new connections instead of sharing the parent's."""
        if not self._db.closed:
            self._db.engine.dispose(close=False)
            self._watcher.forget_after_fork()


_FORK_SAFE: weakref.WeakSet[SQLStore] = weakref.WeakSet()
"""Stores whose pools a forked child must not share with its parent."""


def _after_fork_in_child() -> None:
    for store in list(_FORK_SAFE):
        store._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
