"""How the SQL store connects: URLs, engines, and what differs between the drivers.

The store runs on three DB-API drivers: ``psycopg`` 3 for PostgreSQL, ``pymysql``
for MySQL and MariaDB, and the standard library's ``sqlite3``. Their connections
are kept in autocommit mode; the store emits ``BEGIN`` (``BEGIN IMMEDIATE`` on
SQLite) and ``COMMIT`` itself when an operation needs a transaction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy import pool as sa_pool

from fluxo import _errors, _redact

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPIConnection, Dialect

DEFAULT_DRIVERS: Final = {
    "postgresql": "psycopg",
    "mysql": "pymysql",
    "mariadb": "pymysql",
    "sqlite": "pysqlite",
}
_EXTRAS: Final = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_SQLITE_SYNCHRONOUS: Final = ("off", "normal", "full", "extra")
_SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
_CONNECT_TIMEOUT: Final = 10
"""Seconds to wait for a server database to accept a connection."""


def normalize_url(url: str | sa.URL) -> sa.URL:
    """Parse a store URL and pick Fluxo's driver where the URL names none.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``;
    ``mysql://`` becomes ``mysql+pymysql://`` (and gets ``charset=utf8mb4``);
    ``mariadb://`` becomes ``mariadb+pymysql://``.

    Raises:
        DefinitionError: the URL is malformed or names a database or driver the
            SQL store does not support.
    """
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        text = url if isinstance(url, str) else repr(url)
        secrets = _redact.secrets_of(text)
        raise _errors.DefinitionError(
            f"{_redact.redact_value(text)!r} is not a database URL "
            f"({_redact.redact(str(exc), secrets)}); pass something like "
            f"'sqlite:///fluxo.db' or 'postgresql://user@host/app'{_redact.escape_hint(text)}"
        ) from _redact.cause(exc, secrets)
    backend, _, driver = parsed.drivername.partition("+")
    backend = backend.lower()
    if backend == "postgres":
        backend = "postgresql"
    if backend not in DEFAULT_DRIVERS:
        raise _errors.DefinitionError(
            f"the SQL store does not handle {backend!r} URLs; use sqlite, postgresql or mysql"
        )
    driver = driver.lower() or DEFAULT_DRIVERS[backend]
    if driver != DEFAULT_DRIVERS[backend]:
        raise _errors.DefinitionError(
            f"the SQL store runs {backend} through the {DEFAULT_DRIVERS[backend]!r} driver, "
            f"not {driver!r}; write the URL as '{backend}+{DEFAULT_DRIVERS[backend]}://...' "
            f"or '{backend}://...'"
        )
    parsed = parsed.set(drivername=f"{backend}+{driver}")
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def url_secrets(url: sa.URL) -> tuple[str, ...]:
    """The passwords a parsed URL holds (its password, and any ``password=`` in its query)."""
    found = _redact.secrets_of(url.render_as_string(hide_password=False))
    return found if url.password is None else (str(url.password), *found)


def redacted(url: sa.URL) -> str:
    """The URL as messages show it: every password masked."""
    return _redact.redact(url.render_as_string(hide_password=True), url_secrets(url))


def shown(url: str | sa.URL) -> str:
    """A URL as the user wrote it (not as :func:`normalize_url` rewrote it), passwords masked."""
    if isinstance(url, sa.URL):
        return redacted(url)
    return _redact.redact(_redact.redact_value(url), _redact.secrets_of(url))


def is_memory_sqlite(url: sa.URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def sqlite_file(url: sa.URL) -> str | None:
    """The database file a SQLite URL names; ``None`` for another database or in memory.

    Also ``None`` for a URL that is an SQLite URI (``?uri=true``): its file is the
    user's to manage.
    """
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url) or "uri" in url.query:
        return None
    return os.path.abspath(str(url.database))


def create_sqlite_file(path: str) -> bool:
    """Create an empty SQLite database file readable by its owner only, unless it exists.

    It holds every input and result of every run, so it is made ``0600`` (the
    ``-wal`` and ``-shm`` files SQLite adds take the same mode); a file that
    exists keeps its mode. Returns whether the file was created.

    Raises:
        StoreUnavailableError: the file cannot be created (no such folder, no permission).
    """
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise _errors.StoreUnavailableError(
            f"the SQLite database {path} is unavailable: it cannot be created ({exc.strerror})"
        ) from exc
    os.close(descriptor)
    return True


POOL_SIZE: Final = 20
"""Connections the pool keeps open once they were needed at once (it opens none before).

SQLAlchemy's default of 5 is fewer than a worker of concurrency 8 uses at once
(its executions, its claims, its heartbeat), so every connection given back
beyond five was closed and a new one opened for the next call: 512 new
PostgreSQL connections for 2,000 runs resumed, against 11 with this pool.
"""


def make_engine(url: str | sa.URL, **engine_options: Any) -> sa.Engine:
    """Create the SQLAlchemy engine the SQL store runs on.

    Connections are put in the driver's autocommit mode (the store opens its
    transactions itself) and are not pinged or reset on checkout and return.
    SQLite files get WAL, a 30 s busy timeout and ``synchronous=FULL``; add
    ``?synchronous=normal`` to the URL to trade the last transactions on power
    loss for speed. ``sqlite://`` is one in-memory database shared by the threads
    of this process. MySQL sessions use ``READ COMMITTED``. The pool keeps up to
    :data:`POOL_SIZE` connections open (plus SQLAlchemy's overflow of 10).

    Args:
        url: the database URL, normalized with :func:`normalize_url`.
        **engine_options: passed to :func:`sqlalchemy.create_engine`, overriding
            Fluxo's defaults (e.g. ``pool_size``); ``connect_args`` are merged
            into Fluxo's.

    Raises:
        DefinitionError: the URL is unusable or its driver is not installed.
    """
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"pool_reset_on_return": None}
    connect_args: dict[str, Any] = {}
    synchronous = "full"
    memory = False
    if backend == "sqlite":
        synchronous = str(parsed.query.get("synchronous", "full")).lower()
        if synchronous not in _SQLITE_SYNCHRONOUS:
            raise _errors.DefinitionError(
                f"synchronous={synchronous!r} in the SQLite URL is not one of "
                f"{', '.join(_SQLITE_SYNCHRONOUS)}"
            )
        parsed = parsed.difference_update_query(["synchronous"])
        memory = is_memory_sqlite(parsed)
        connect_args["check_same_thread"] = False  # pooled connections move between threads
        if memory:
            options["poolclass"] = sa_pool.StaticPool
    elif "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT
    if not memory and "poolclass" not in engine_options:
        options["pool_size"] = POOL_SIZE
    options.update(engine_options)
    options["connect_args"] = {**connect_args, **dict(engine_options.get("connect_args") or {})}
    try:
        engine = sa.create_engine(parsed, **options)
    except ImportError as exc:
        extra = _EXTRAS.get(backend, backend)
        raise _errors.DefinitionError(
            f"the {parsed.get_driver_name()!r} driver for {backend} is not installed; "
            f"run: pip install 'fluxo[{extra}]'"
        ) from exc
    except (sa_exc.ArgumentError, ValueError) as exc:
        secrets = url_secrets(parsed)
        raise _errors.DefinitionError(
            f"the database URL {redacted(parsed)} is unusable: {_redact.redact(str(exc), secrets)}"
        ) from _redact.cause(exc, secrets)
    if backend in ("mysql", "mariadb"):
        from pymysql import charset  # loaded with the driver by create_engine

        if charset.charset_by_name(str(parsed.query["charset"])) is None:
            engine.dispose()
            raise _errors.DefinitionError(
                f"charset={parsed.query['charset']!r} in the {backend} URL is not a character "
                "set PyMySQL knows; leave it out (Fluxo uses utf8mb4) or name another"
            )

    if backend == "sqlite" and sqlite_file(parsed) is not None:
        # Never create the file on connecting: create_sqlite_file does, with its mode,
        # when the store first writes. Reading a database that is not there fails.
        def read_write(_dialect: Any, _record: Any, cargs: list[Any], cparams: Any) -> None:
            if "uri" not in cparams:
                cargs[0] = f"{Path(cargs[0]).as_uri()}?mode=rw"
                cparams["uri"] = True

        sa_event.listen(engine, "do_connect", read_write)

    if backend == "sqlite":

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN IMMEDIATE ourselves
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
                if not memory:
                    cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute(f"PRAGMA synchronous = {synchronous.upper()}")
            finally:
                cursor.close()

    elif backend == "postgresql":

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.autocommit = True

    else:

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            finally:
                cursor.close()
            dbapi_connection.autocommit(True)

    sa_event.listen(engine, "connect", on_connect)
    return engine


class Driver:
    """What differs between the three DB-API drivers the store runs on."""

    def __init__(self, dialect: Dialect) -> None:
        name = "mysql" if dialect.name == "mariadb" else dialect.name
        if (
            name not in ("sqlite", "postgresql", "mysql")
            or dialect.driver != (DEFAULT_DRIVERS[name])
        ):
            raise _errors.DefinitionError(
                f"the SQL store runs on sqlite3, psycopg (PostgreSQL) or pymysql (MySQL), "
                f"not on {dialect.name}+{dialect.driver}"
            )
        self.name = name
        self.dbapi: Any = dialect.loaded_dbapi
        self.begin_write = "BEGIN IMMEDIATE" if name == "sqlite" else "BEGIN"
        self.decode_keys = name == "mysql"  # VARBINARY identifiers come back as bytes

    def autocommit(self, dbapi_connection: DBAPIConnection) -> Callable[[], None] | None:
        """Put a connection in autocommit mode; return how to undo that, if it changed."""
        conn: Any = dbapi_connection
        if self.name == "sqlite":
            previous = conn.isolation_level
            if previous is None:
                return None
            conn.isolation_level = None

            def restore_sqlite() -> None:
                conn.isolation_level = previous

            return restore_sqlite
        if self.name == "postgresql":
            if conn.autocommit:
                return None
            conn.rollback()
            conn.autocommit = True

            def restore_pg() -> None:
                conn.autocommit = False

            return restore_pg
        if conn.get_autocommit():
            return None
        conn.rollback()
        conn.autocommit(True)

        def restore_mysql() -> None:
            conn.autocommit(False)

        return restore_mysql

    def _code(self, exc: BaseException) -> Any:
        if self.name == "postgresql":
            return getattr(exc, "sqlstate", None)
        if self.name == "mysql":
            args = getattr(exc, "args", ())
            return args[0] if args else None
        return getattr(exc, "sqlite_errorcode", None)

    def is_unique_violation(self, exc: BaseException) -> bool:
        """Tell whether a driver error is a primary key or unique violation."""
        if not isinstance(exc, self.dbapi.IntegrityError):
            return False
        code = self._code(exc)
        if self.name == "postgresql":
            return bool(code == "23505")
        if self.name == "mysql":
            return bool(code == 1062)
        return code in (1555, 2067) or "UNIQUE constraint failed" in str(exc)

    def is_retryable(self, exc: BaseException) -> bool:
        """Tell whether a driver error rolled back a transaction that may simply be rerun."""
        code = self._code(exc)
        if self.name == "postgresql":
            return code in ("40P01", "40001")
        if self.name == "mysql":
            return code in (1213, 1205)
        # SQLITE_BUSY (5) past the busy timeout's reach: SQLite returns it at once when
        # waiting could deadlock, e.g. while another process turns a new file to WAL.
        return code is not None and code & 0xFF == 5

    def is_missing_table(self, exc: BaseException) -> bool:
        """Tell whether a driver error says a table does not exist."""
        code = self._code(exc)
        if self.name == "postgresql":
            return bool(code == "42P01")
        if self.name == "mysql":
            return bool(code == 1146)
        return "no such table" in str(exc)

    def is_rejected(self, exc: BaseException) -> bool:
        """Tell whether a driver error refuses the data itself: writing it again fails again.

        A value too long or out of range, text the database cannot store (NUL on
        PostgreSQL), or a value past the database's limits.
        """
        if isinstance(exc, self.dbapi.DataError):
            return True
        code = self._code(exc)
        if self.name == "postgresql":
            return isinstance(code, str) and code[:2] in ("22", "54")
        if self.name == "mysql":
            return code in (1153, 1301)  # a packet, or a value, over the server's limit
        return code is not None and code & 0xFF == 18  # SQLITE_TOOBIG

    def is_unavailable(self, exc: BaseException) -> bool:
        """Tell whether a driver error means the database cannot be reached or used now."""
        return isinstance(exc, (self.dbapi.OperationalError, self.dbapi.InterfaceError))


@contextmanager
def autocommit(engine: sa.Engine) -> Iterator[sa.Connection]:
    """Check out a connection whose driver is in autocommit mode, restored afterwards.

    Used by the migration helpers, which emit their own ``BEGIN`` and ``COMMIT``.
    """
    driver = Driver(engine.dialect)
    with engine.connect() as conn:
        dbapi_connection = conn.connection.dbapi_connection
        assert dbapi_connection is not None
        restore = driver.autocommit(dbapi_connection)
        try:
            yield conn
        finally:
            if restore is not None and not conn.invalidated:
                restore()
