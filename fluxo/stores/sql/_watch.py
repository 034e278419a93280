"""How the SQL store notices changes, for ``change_token`` and ``wait_for_change``.

Writes made through the store wake its waiters at once (the store calls
:meth:`Watcher.changed`). Writes made by other processes reach them through the
wake source of the database: on PostgreSQL a ``LISTEN`` thread
(:class:`~fluxo.stores.sql._listener.PgListener`) reports every ``NOTIFY`` that
the store's statements send; on a SQLite file, the stores nudge one another over
Unix sockets (:class:`~fluxo.stores.sql._nudge.Nudges`). Elsewhere, while the
``LISTEN`` connection is down, and on SQLite always (a nudge may be lost), a
cheap query every ``poll_interval`` compares a *fingerprint* of the data with the
one taken when the wait began (or with the token's).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Container, Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import exc as sa_exc

from fluxo import _errors
from fluxo.stores import _changes
from fluxo.stores.sql import _database, _listener, _nudge, _statements

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

logger = logging.getLogger(__name__)

LISTENER_START: Final = 2.0
"""How long a first waiter waits for the PostgreSQL listener to connect before polling."""
MIN_POLL_INTERVAL: Final = 1.0
"""The shortest ``poll_interval``: polling is the fallback, never the way waiters wake."""
_UNKNOWN: Final = object()
"""A fingerprint that could not be read: compared with nothing."""


class Watcher:
    """The change feed of one SQL store and the wake source of its database.

    Args:
        db: the store's database.
        poll_interval: seconds between two looks for other processes' changes
            (at least :data:`MIN_POLL_INTERVAL`).
    """

    def __init__(self, db: _database.Database, poll_interval: float) -> None:
        self._db = db
        self._feed = _changes.ChangeFeed()
        self._poll_interval = max(MIN_POLL_INTERVAL, poll_interval)
        self._data_version: Any = None  # SQLite: a connection reading PRAGMA data_version
        self._data_version_lock = threading.Lock()
        self._listener: _listener.PgListener | None = None
        if db.driver.name == "postgresql":
            self._listener = _listener.PgListener(
                db.engine, _statements.NOTIFY_CHANNEL, self._notified
            )
        self._nudges: _nudge.Nudges | None = None
        if db.driver.name == "sqlite" and db.serial is None and _nudge.supported():
            self._nudges = _nudge.Nudges(self._sqlite_file, self._notified)

    def changed(self, run_id: str | None = None) -> None:
        """Wake waiters: the store committed a change of ``run_id`` (None: of runs unknown).

        This process's at once; on SQLite, other processes' through a nudge.
        """
        self._feed.changed(run_id)
        if self._nudges is not None:
            self._nudges.send(run_id)

    def token(self, run_id: str | None) -> _changes.Token:
        """See :meth:`fluxo.stores.Store.change_token`."""
        version = self._feed.version
        listener = self._listener
        if listener is not None and listener.start(wait=LISTENER_START):
            return _changes.Token(version, _UNKNOWN)  # notifications bump the version
        if self._nudges is not None:
            self._nudges.listen()  # before the look: a later commit nudges this store
        return _changes.Token(version, self._fingerprint(run_id))

    def wait(
        self, run_id: str | None, timeout: float, since: object, *, ignoring: Container[str] = ()
    ) -> bool:
        """See :meth:`fluxo.stores.Store.wait_for_change`."""
        version = self._feed.since(since)
        baseline = since.mark if isinstance(since, _changes.Token) else None
        if self._feed.wait(version, 0, run_id, ignoring=ignoring):
            return True
        if timeout <= 0:
            return False
        deadline = time.monotonic() + timeout
        listener = self._listener
        if self._nudges is not None:
            self._nudges.listen()  # before the look: a later commit nudges this store
        if listener is not None and listener.start(wait=min(timeout, LISTENER_START)):
            if baseline is None:
                baseline = _UNKNOWN  # taken if the listener fails and polling takes over
        elif baseline is None or baseline is _UNKNOWN:
            baseline = self._fingerprint(run_id)
        elif self._fingerprint(run_id) != baseline:
            return True

        def poll() -> bool:
            nonlocal baseline
            if listener is not None and listener.listening:
                return False  # notifications wake the waiters
            current = self._fingerprint(run_id)
            if baseline is _UNKNOWN:
                baseline = current
                return False
            return current is not _UNKNOWN and current != baseline

        return self._feed.wait_polling(
            version, deadline, poll, self._poll_interval, run_id, ignoring=ignoring
        )

    def _notified(self, run_id: str | None) -> None:
        """Called by the PostgreSQL listener or the SQLite nudges for another's change.

        The payload is the run's id; the listener's own wake-ups (``''``), its
        reconnections and nudges of runs unknown (``None``) name no run, so they
        wake every waiter.
        """
        self._feed.changed(run_id or None)

    def _sqlite_file(self) -> str | None:
        """The SQLite database's file, for nudges; ``None`` for one with no file.

        Known from the URL, or asked of SQLite for a URI filename (``?uri=true``).
        """
        db = self._db
        if db.file is not None:
            return db.file

        def read(cur: DBAPICursor) -> Sequence[Any]:
            cur.execute("PRAGMA database_list")
            return cur.fetchall()

        for _seq, name, file in db.call("finding the database file", read):
            if name == "main":
                return str(file) or None
        return None

    def _fingerprint(self, run_id: str | None) -> object:
        """Something that differs once the run (or, for ``None``, any run) has changed.

        A run's own row tells exactly. For any run, a counter of the database's:
        ``PRAGMA data_version`` on SQLite (commits by other connections, so it is
        read on a connection of its own), the WAL insert position on PostgreSQL
        (when ``LISTEN`` is down) and the handler counters on MySQL. The last two
        are server-wide: other databases' work wakes waiters spuriously, at most
        once per ``poll_interval``.
        """
        db = self._db
        if run_id is not None:

            def read_run(cur: DBAPICursor) -> object:
                values = {"p_run_id": run_id}
                return tuple(_database.execute(cur, db.sql.run_fingerprint, values).fetchall())

            read = read_run
        elif db.driver.name == "sqlite":
            if db.serial is not None:
                return None  # in memory: no other process can write
            return self._sqlite_data_version()
        else:

            def read_any(cur: DBAPICursor) -> object:
                cur.execute(db.sql.any_change)
                return tuple(tuple(row) for row in cur.fetchall())

            read = read_any
        try:
            return db.call("watching for changes", read)
        except _errors.StoreError as exc:
            logger.debug("cannot look for changes: %s", exc)
            return _UNKNOWN

    def _sqlite_data_version(self) -> object:
        db = self._db
        with self._data_version_lock:
            try:
                if db.closed:
                    return _UNKNOWN
                if self._data_version is None:
                    pooled = db.engine.raw_connection()
                    pooled.detach()  # kept apart: only its own reads, so it sees all commits
                    self._data_version = pooled.dbapi_connection
                cursor = self._data_version.cursor()
                try:
                    cursor.execute(db.sql.any_change)
                    return tuple(cursor.fetchall())
                finally:
                    cursor.close()
            except (sa_exc.DBAPIError, db.driver.dbapi.Error) as exc:
                logger.debug("cannot look for changes: %s", exc)
                self._close_data_version()
                return _UNKNOWN

    def _close_data_version(self) -> None:
        connection, self._data_version = self._data_version, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def close(self) -> None:
        """Wake every waiter, stop listening and close the watching connection."""
        self._feed.close()
        if self._listener is not None:
            self._listener.stop()
        if self._nudges is not None:
            self._nudges.close()
        with self._data_version_lock:
            self._close_data_version()

    def forget_after_fork(self) -> None:
        """In a forked child: the listener and the watching connection are the parent's."""
        self._data_version = None  # never closed here
        if self._listener is not None:
            self._listener.forget_after_fork()
        if self._nudges is not None:
            self._nudges.forget_after_fork()
