"""Which database a URL names: SQLite paths as Flask-SQLAlchemy resolves them, and equality.

A start can join a ``db.session`` transaction only when Fluxo's store is
Flask-SQLAlchemy's database. Both are known by URL, and two URLs for the same
database often differ: another driver (``postgresql+psycopg2://`` and
``postgresql+psycopg://``), another user or password, the default port written
or not, the local machine named ``localhost``, ``127.0.0.1`` or ``::1``, a
relative SQLite path (Flask-SQLAlchemy puts it in the app's instance folder).
:func:`same_database` compares what is left once those are set aside, from the
URLs alone: it connects to nothing.
"""

from __future__ import annotations

import os
from typing import Final

import sqlalchemy as sa

_FAMILIES: Final = {"postgres": "postgresql", "mariadb": "mysql"}
_DEFAULT_PORTS: Final = {"postgresql": 5432, "mysql": 3306}
_LOCAL_HOSTS: Final = frozenset(
    {"", "localhost", "localhost.localdomain", "127.0.0.1", "::1", "[::1]", "0:0:0:0:0:0:0:1"}
)
"""Names of this machine: a server reached by any of them (or by its socket) is one server."""


def family(url: sa.URL) -> str:
    """The database family of ``url``: ``sqlite``, ``postgresql``, ``mysql``..."""
    backend = url.get_backend_name().lower()
    return _FAMILIES.get(backend, backend)


def is_sqlite_memory(url: sa.URL) -> bool:
    """Whether ``url`` is a SQLite database in memory (which no other connection sees)."""
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def in_instance_folder(url: sa.URL, instance_path: str) -> sa.URL:
    """``url`` with a relative SQLite path made absolute under ``instance_path``.

    As Flask-SQLAlchemy resolves ``SQLALCHEMY_DATABASE_URI``, so that the same
    ``sqlite:///shop.db`` in ``FLUXO_STORE`` is the same file. Other URLs are
    returned as they are.
    """
    if family(url) != "sqlite" or is_sqlite_memory(url):
        return url
    database = str(url.database)
    is_uri = url.query.get("uri") == "true" and database.startswith("file:")
    path = database[len("file:") :] if is_uri else database
    if os.path.isabs(path):
        return url
    path = os.path.join(instance_path, path)
    return url.set(database=f"file:{path}" if is_uri else path)


def sqlite_file(url: sa.URL) -> str | None:
    """The real path of a SQLite database file; ``None`` in memory."""
    if is_sqlite_memory(url):
        return None
    database = str(url.database)
    if url.query.get("uri") == "true" and database.startswith("file:"):
        database = database[len("file:") :].partition("?")[0]
    return os.path.realpath(database)


def _server(url: sa.URL) -> tuple[str, int | None]:
    host = url.host
    if host is None:
        given = url.query.get("host")  # psycopg: ?host=/run/postgresql, a local socket
        host = given if isinstance(given, str) else ""
    host = host.lower()
    if host in _LOCAL_HOSTS or host.startswith("/"):
        host = "localhost"
    return host, url.port or _DEFAULT_PORTS.get(family(url))


def _database_name(url: sa.URL) -> str | None:
    if url.database:
        return url.database
    if family(url) == "postgresql":
        return url.username  # PostgreSQL's default database is the user's name
    return None


def same_database(mine: sa.URL, theirs: sa.URL) -> bool:
    """Whether two URLs name the same database (from the URLs alone: nothing connects).

    SQLite: the same file (its real path; in memory, never). Else the same family
    of database on the same server and port, with the default port assumed where
    none is written and every name of the local machine taken as one, and the same
    database name. Drivers, users, passwords and options do not matter.
    """
    if family(mine) != family(theirs):
        return False
    if family(mine) == "sqlite":
        path = sqlite_file(mine)
        return path is not None and path == sqlite_file(theirs)
    return _server(mine) == _server(theirs) and _database_name(mine) == _database_name(theirs)


def shown(url: sa.URL) -> str:
    """``url`` as messages show it: its password masked."""
    return url.render_as_string(hide_password=True)
