"""Fixtures shared by every test tier: the database servers.

``postgres_url`` and ``mysql_url`` each create one fresh database for the test
session (``fluxo_test_<random>``, dropped at the end), so tests never meet other
data on the server. The server comes from ``FLUXO_TEST_POSTGRES_URL`` /
``FLUXO_TEST_MYSQL_URL`` (any database on the server: it is only used to create
and drop the test databases), else from the local defaults below.

A server that cannot be reached skips the tests that need it, or fails them when
``CI=true``, where a missing server is a broken build, not a choice.

Isolation within the session is cheap: :func:`reset_sql` deletes every row of
the Fluxo tables, and ``clean_postgres_url`` / ``clean_mysql_url`` hand a test the
session database so emptied. Tests that need a pristine database (no tables at
all, as migration tests do) take ``fresh_postgres_url`` / ``fresh_mysql_url``: a
database of their own, created and dropped around the test.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

TEST_TIMEOUT = 120
"""Seconds after which pytest-timeout, a development plugin, stops a stuck test.

Set here rather than as the ``timeout`` ini option, which a plain ``pytest`` (the
one a user installs to run ``examples/``) refuses as unknown.
"""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test :data:`TEST_TIMEOUT` when pytest-timeout is there and not told otherwise."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    if config.getoption("timeout", None) is not None or config.getini("timeout"):
        return  # --timeout or -o timeout=... decides
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TEST_TIMEOUT))


# The Redis and MongoDB servers' fixtures live in modules of their own.
pytest_plugins = [
    name
    for name in ("tests._redis_fixtures", "tests._mongo_fixtures")
    if importlib.util.find_spec(name) is not None
]

POSTGRES_ENV = "FLUXO_TEST_POSTGRES_URL"
MYSQL_ENV = "FLUXO_TEST_MYSQL_URL"
POSTGRES_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MYSQL_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test?ssl_disabled=true"
"""The local MariaDB, which serves no TLS: ``ssl_disabled`` spares PyMySQL (1.2+) building a
TLS context for each new connection (about 50 ms) only to find the server has none."""

# in the order their rows can be deleted
_FLUXO_TABLES = ("fluxo_signals", "fluxo_events", "fluxo_runs", "fluxo_workers", "fluxo_queues")


def _normalized(url: str) -> sa.URL:
    from fluxo.stores import sql

    return sql.normalize_url(url)


def _admin_engine(url: sa.URL) -> sa.Engine:
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )


def _server_url(env: str, default: str, what: str) -> sa.URL:
    """The server's admin URL, checked reachable; skip (or fail under CI) otherwise."""
    url = _normalized(os.environ.get(env) or default)
    engine = _admin_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        shown = url.render_as_string(hide_password=True)
        message = f"{what} unreachable at {shown}: {str(exc).splitlines()[0]}; set {env}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return url


def create_database(server: sa.URL) -> str:
    """Create an empty database named ``fluxo_test_<random>`` and return its URL."""
    name = f"fluxo_test_{secrets.token_hex(6)}"
    engine = _admin_engine(server)
    try:
        with engine.connect() as conn:
            if server.get_backend_name() == "postgresql":
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(
                    f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )
    finally:
        engine.dispose()
    return server.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by :func:`create_database`, closing its stray sessions."""
    kept = _reset_engines.pop(url, None)
    if kept is not None:
        kept.dispose()
    target = sa.make_url(url)
    name = target.database
    assert name, url
    assert name.startswith("fluxo_test_"), name
    if target.get_backend_name() == "postgresql":
        server = target.set(database="postgres")
        statement = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        server = target.set(database="")
        statement = f"DROP DATABASE IF EXISTS `{name}`"
    engine = _admin_engine(server)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


@contextlib.contextmanager
def fresh_database(server: sa.URL) -> Iterator[str]:
    """A new empty database on the server for the ``with`` block; dropped afterwards."""
    url = create_database(server)
    try:
        yield url
    finally:
        drop_database(url)


def reset_sql(url: str, *, migrate: bool = False) -> None:
    """Delete every row of the Fluxo tables at ``url`` (keeps the schema and its revision).

    With ``migrate``, a database whose Fluxo schema is not at head is brought there
    first (as ``fluxo db upgrade`` does); one at head costs no second connection.
    """
    from fluxo.stores.sql import _migrate, _schema

    with _reset_engine(url).connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
        if migrate and _revision(conn, names) != _schema.HEAD_REVISION:
            conn.rollback()  # the migration's lock and DDL must not wait for this reader
            _migrate.upgrade(url)
            names.update(_FLUXO_TABLES)
        for table in _FLUXO_TABLES:
            if table in names:
                conn.execute(sa.delete(sa.table(table)))
        conn.commit()


_reset_engines: dict[str, sa.Engine] = {}
"""The engine :func:`reset_sql` uses for each database, until :func:`drop_database`."""


def _reset_engine(url: str) -> sa.Engine:
    """One engine of one pooled connection per database, kept across the tests that reset it.

    A new engine for each reset would connect, and learn the server, once per test.
    The connection is checked before each use: a test may kill the database's sessions.
    """
    engine = _reset_engines.get(url)
    if engine is None:
        engine = sa.create_engine(_normalized(url), pool_size=1, max_overflow=0, pool_pre_ping=True)
        _reset_engines[url] = engine
    return engine


def _revision(conn: sa.Connection, names: set[str]) -> str | None:
    """The Fluxo schema revision recorded in the database (``None``: no Fluxo schema)."""
    from fluxo.stores.sql import _schema

    if _schema.VERSION_TABLE not in names:
        return None
    version = sa.table(_schema.VERSION_TABLE, sa.column("version_num"))
    found: str | None = conn.execute(sa.select(version.c.version_num)).scalar()
    return found


@pytest.fixture(scope="session")
def postgres_server() -> sa.URL:
    """The PostgreSQL server's admin URL (skips, or fails under CI, if unreachable)."""
    return _server_url(POSTGRES_ENV, POSTGRES_DEFAULT, "PostgreSQL")


@pytest.fixture(scope="session")
def mysql_server() -> sa.URL:
    """The MySQL/MariaDB server's admin URL (skips, or fails under CI, if unreachable)."""
    return _server_url(MYSQL_ENV, MYSQL_DEFAULT, "MySQL")


@pytest.fixture(scope="session")
def postgres_url(postgres_server: sa.URL) -> Iterator[str]:
    """A PostgreSQL database of this test session's own, dropped at the end."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def mysql_url(mysql_server: sa.URL) -> Iterator[str]:
    """A MySQL/MariaDB database of this test session's own, dropped at the end."""
    with fresh_database(mysql_server) as url:
        yield url


@pytest.fixture
def clean_postgres_url(postgres_url: str) -> str:
    """The session's PostgreSQL database, with the Fluxo tables emptied for this test."""
    reset_sql(postgres_url)
    return postgres_url


@pytest.fixture
def clean_mysql_url(mysql_url: str) -> str:
    """The session's MySQL/MariaDB database, with the Fluxo tables emptied for this test."""
    reset_sql(mysql_url)
    return mysql_url


@pytest.fixture
def fresh_postgres_url(postgres_server: sa.URL) -> Iterator[str]:
    """A PostgreSQL database of this test's own (slower: for tests that need it empty)."""
    with fresh_database(postgres_server) as url:
        yield url


@pytest.fixture
def fresh_mysql_url(mysql_server: sa.URL) -> Iterator[str]:
    """A MySQL/MariaDB database of this test's own (slower: for tests that need it empty)."""
    with fresh_database(mysql_server) as url:
        yield url
