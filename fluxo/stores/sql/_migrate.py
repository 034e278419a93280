"""Fluxo's alembic migrations: find them, read a database's revision, upgrade it safely.

The scripts live in the top-level ``migrations/`` folder of the repository, which
the wheel installs as ``fluxo/_migrations``. No ``alembic.ini`` is involved: the
alembic configuration is built here. The version table is
:data:`~fluxo.stores.sql._schema.VERSION_TABLE`, so Fluxo's revisions never mix
with those of the application sharing the database.

An upgrade holds a lock while it reads the revision and migrates, so processes
starting together on a new database do not race: ``pg_advisory_xact_lock`` on
PostgreSQL, ``GET_LOCK`` on MySQL and the write lock of ``BEGIN IMMEDIATE`` on
SQLite. Whoever comes second finds the database at head and does nothing.

``fluxo db upgrade`` calls :func:`upgrade`; :func:`current` and :func:`check`
serve ``fluxo db current`` and ``fluxo db check``.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from fluxo import _errors
from fluxo.stores import _translate
from fluxo.stores.sql import _engine
from fluxo.stores.sql import _schema as schema

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from alembic.config import Config

_LOCK_KEY = zlib.crc32(b"fluxo.migrate")
"""The PostgreSQL advisory lock key (advisory locks are per database)."""
_MYSQL_LOCK_TIMEOUT = 600


def migrations_dir() -> Path:
    """Locate the alembic scripts: ``fluxo/_migrations`` in a wheel, else ``<repo>/migrations``.

    Raises:
        StoreError: neither folder exists (a broken installation).
    """
    package = Path(__file__).resolve().parents[2]  # the fluxo package
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise _errors.StoreError(
        f"Fluxo's migration scripts are missing (looked in {package / '_migrations'} and "
        f"{package.parent / 'migrations'}); reinstall Fluxo"
    )


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Limit alembic's comparisons to Fluxo's tables, leaving the application's alone."""
    return type_ != "table" or (name or "").startswith("fluxo_")


def include_object(dialect: str) -> Any:
    """Leave out of alembic's comparisons the indexes this database does not get.

    An index of :data:`~fluxo.stores.sql._schema.PARTIAL_ONLY` is made only on a
    database with partial indexes; elsewhere its absence is no difference.
    """

    def include(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        return not (
            type_ == "index"
            and name in schema.PARTIAL_ONLY
            and dialect not in schema.PARTIAL_INDEX_DIALECTS
        )

    return include


def alembic_config(connection: sa.Connection | None = None, url: str | None = None) -> Config:
    """Build the alembic configuration, optionally bound to a connection or a URL."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision of the migration scripts."""
    from alembic.script import ScriptDirectory

    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert found is not None
    return found


@contextmanager
def _engine_for(target: str | sa.URL | sa.Engine, *, create: bool = False) -> Iterator[sa.Engine]:
    """An engine on ``target``; for a SQLite file that does not exist, ``create`` makes it.

    Without ``create`` such a file is not made: the engine reads an empty database.
    """
    url = target.url if isinstance(target, sa.Engine) else _engine.normalize_url(target)
    path = _engine.sqlite_file(url)
    if path is not None and not os.path.exists(path):
        if create:
            _engine.create_sqlite_file(path)
        elif not isinstance(target, sa.Engine):
            target = "sqlite://"
    if isinstance(target, sa.Engine):
        yield target
        return
    engine = _engine.make_engine(target, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _translated(
    action: str, engine: sa.Engine, target: str | sa.URL | sa.Engine
) -> _translate.Guard:
    """Fluxo's errors for the driver's, naming ``target`` as the user gave it (masked)."""
    url = _engine.shown(engine.url if isinstance(target, sa.Engine) else target)

    def classify(exc: BaseException, action: str) -> _translate.Verdict | None:
        if isinstance(exc, sa_exc.OperationalError):
            return _errors.StoreUnavailableError, (
                f"{action} failed: the database at {url} is unavailable: {str(exc.orig).strip()}"
            )
        if isinstance(exc, sa_exc.DBAPIError):
            return _errors.StoreError, f"{action} failed on {url}: {exc.orig}"
        return None

    return _translate.Translator(classify, _engine.url_secrets(engine.url)).guard(action)


def _revision(conn: sa.Connection) -> str | None:
    with _quiet_alembic():
        from alembic.runtime.migration import MigrationContext

        context = MigrationContext.configure(conn, opts={"version_table": schema.VERSION_TABLE})
        return context.get_current_revision()


def current(target: str | sa.URL | sa.Engine) -> str | None:
    """Return the database's Fluxo schema revision (``None``: no Fluxo tables yet).

    A SQLite file that does not exist has none, and is not created.

    Raises:
        StoreUnavailableError: the database cannot be reached.
    """
    with (
        _engine_for(target) as engine,
        _translated("reading the schema revision", engine, target),
        engine.connect() as conn,
    ):
        return _revision(conn)


def upgrade(target: str | sa.URL | sa.Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` under a lock; a no-op when it is there already.

    A SQLite file that does not exist is created first, readable by its owner
    only (``0600``).

    Args:
        target: a database URL or an engine on it.
        revision: the alembic revision to reach.

    Raises:
        StoreUnavailableError: the database cannot be reached.
        StoreError: the database has a revision this Fluxo does not know (a newer
            Fluxo migrated it), or a migration failed.
    """
    _move(target, revision, "upgrade")


def downgrade(target: str | sa.URL | sa.Engine, revision: str) -> None:
    """Take the database back to ``revision`` under a lock (``"base"``: no Fluxo table at all).

    The runs, histories and signals the dropped tables or columns held are lost;
    a no-op when the database is at ``revision`` already.

    Raises:
        StoreUnavailableError: the database cannot be reached.
        StoreError: the revision is unknown, or the migration failed.
    """
    _move(target, revision, "downgrade")


def reached(found: str | None, revision: str) -> bool:
    """Whether a database at revision ``found`` (``None``: no schema) is at ``revision`` or past it.

    A revision this Fluxo does not know is a newer Fluxo's, and so past every one it knows.
    """
    if found is None:
        return revision == "base"
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory.from_config(alembic_config())
    try:
        script.get_revision(found)
    except CommandError:
        return True
    return revision == "base" or any(
        step.revision == revision for step in script.iterate_revisions(found, "base")
    )


def _move(target: str | sa.URL | sa.Engine, revision: str, direction: str) -> None:
    with _quiet_alembic():  # importing it sets up its plugins, and says so
        from alembic import command
        from alembic.util import CommandError

    with (
        _engine_for(target, create=True) as engine,
        _translated("migrating the Fluxo schema", engine, target),
    ):
        kind = engine.dialect.name
        with _engine.autocommit(engine) as conn:
            mysql_lock = None
            if kind == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif kind == "postgresql":
                conn.exec_driver_sql("BEGIN")
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_KEY})")
            else:
                database = conn.exec_driver_sql("SELECT DATABASE()").scalar()
                mysql_lock = f"fluxo.migrate.{zlib.crc32(str(database).encode())}"
                got = conn.exec_driver_sql(
                    "SELECT GET_LOCK(%s, %s)", (mysql_lock, _MYSQL_LOCK_TIMEOUT)
                ).scalar()
                if got != 1:
                    raise _errors.StoreError(
                        f"another process held the Fluxo migration lock {mysql_lock!r} for "
                        f"{_MYSQL_LOCK_TIMEOUT} s; is a migration stuck?"
                    )
            try:
                try:
                    before = _revision(conn)
                    with _quiet_alembic():
                        getattr(command, direction)(alembic_config(conn), revision)
                    after = _revision(conn)
                    if after is None and direction == "downgrade":  # no Fluxo table is left
                        sa.Table(schema.VERSION_TABLE, sa.MetaData()).drop(conn, checkfirst=True)
                except CommandError as exc:
                    raise _errors.StoreError(
                        f"cannot migrate the Fluxo schema to {revision!r}: {exc}; if a newer "
                        "Fluxo migrated this database, upgrade Fluxo here too"
                    ) from exc
                if mysql_lock is None:
                    conn.exec_driver_sql("COMMIT")
            except BaseException:
                if mysql_lock is None and not conn.invalidated:
                    conn.exec_driver_sql("ROLLBACK")
                raise
            finally:
                if mysql_lock is not None and not conn.invalidated:
                    conn.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (mysql_lock,))
            conn.commit()  # ends SQLAlchemy's own bookkeeping; the driver is in autocommit
        if after != before:
            log.info("migrated the Fluxo schema from %s to %s", before or "nothing", after)


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Keep alembic's set-up lines ("Context impl SQLiteImpl."...) out of the app's log.

    Fluxo says in one line of its own what a migration did. A program that set a
    level on the ``alembic`` logger configured alembic's logging: it is left as is.
    """
    logger = logging.getLogger("alembic")
    if logger.level != logging.NOTSET:
        yield
        return
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(logging.NOTSET)


NO_SCHEMA: Final = "the database has no Fluxo schema (no Fluxo tables, no revision)"
"""What :func:`check` reports, alone, for a database Fluxo never migrated."""


def check(target: str | sa.URL | sa.Engine) -> list[str]:
    """List how the database differs from this Fluxo's schema; empty when it matches.

    Reports a revision other than head, then every difference alembic's
    autogenerate finds between the Fluxo tables and :data:`schema.metadata`, one
    line each (what differs, and the table, column, index or constraint). A
    database without any of it is reported as one problem, :data:`NO_SCHEMA`.

    Raises:
        StoreUnavailableError: the database cannot be reached.
    """
    with _quiet_alembic():
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

    expected = head()
    with (
        _engine_for(target) as engine,
        _translated("checking the Fluxo schema", engine, target),
        engine.connect() as conn,
    ):
        found = _revision(conn)
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": schema.VERSION_TABLE,
                "compare_type": True,
                "include_name": include_name,
                "include_object": include_object(conn.dialect.name),
            },
        )
        diffs = compare_metadata(context, schema.metadata)
        tables = [
            name for name in sa.inspect(conn).get_table_names() if include_name(name, "table", None)
        ]
    if found is None and not tables:
        return [NO_SCHEMA]
    problems = [] if found == expected else [f"the schema revision is {found!r}, not {expected!r}"]
    return problems + [describe(diff) for diff in diffs]


def _kind(diff: Any) -> str:
    first = diff[0] if isinstance(diff, (tuple, list)) and diff else None
    if isinstance(first, (tuple, list)):  # a list of changes to one column
        first = first[0] if first else None
    return first if isinstance(first, str) else type(diff).__name__


_KINDS: Final = {
    "add_table": "table {table} is missing",
    "remove_table": "table {table} is not in this Fluxo's schema",
    "add_column": "column {table}.{column} is missing",
    "remove_column": "column {table}.{column} is not in this Fluxo's schema",
    "add_index": "index {name} on {table} is missing",
    "remove_index": "index {name} on {table} is not in this Fluxo's schema",
    "add_constraint": "constraint {name} on {table} is missing",
    "remove_constraint": "constraint {name} on {table} is not in this Fluxo's schema",
    "add_fk": "foreign key {name} on {table} is missing",
    "remove_fk": "foreign key {name} on {table} is not in this Fluxo's schema",
    "modify_type": "column {table}.{column} has type {found}, not {wanted}",
    "modify_nullable": "column {table}.{column} is {found}, not {wanted}",
    "modify_default": "column {table}.{column} has default {found}, not {wanted}",
    "modify_comment": "column {table}.{column} has comment {found}, not {wanted}",
}


def describe(diff: Any) -> str:
    """One readable line for one difference alembic's ``compare_metadata`` found.

    Differences are tuples such as ``("add_table", Table)``, ``("add_column",
    schema, table name, Column)`` or, for a column, a list of ``("modify_type",
    schema, table, column, existing, found, wanted)``; only names and values are
    shown, never the objects' reprs.
    """
    if isinstance(diff, list):
        return "; ".join(describe(change) for change in diff)
    kind = _kind(diff)
    parts = list(diff) if isinstance(diff, tuple) else []
    table = column = name = found = wanted = "?"
    if kind in ("add_table", "remove_table") and len(parts) > 1:
        table = getattr(parts[1], "name", "?")
    elif kind in ("add_column", "remove_column") and len(parts) > 3:
        table, column = str(parts[2]), getattr(parts[3], "name", "?")
    elif kind.startswith(("add_", "remove_")) and len(parts) > 1:
        item = parts[1]
        name = str(getattr(item, "name", None) or "(unnamed)")
        owner = getattr(item, "table", None)
        if owner is None:
            owner = getattr(item, "parent", None)
        table = str(getattr(owner, "name", "?"))
    elif kind.startswith("modify_") and len(parts) > 6:
        table, column = str(parts[2]), str(parts[3])
        found, wanted = _value(parts[5]), _value(parts[6])
        if kind == "modify_nullable":
            found, wanted = ("nullable" if v else "NOT NULL" for v in parts[5:7])
    template = _KINDS.get(kind)
    if template is None or table == "?":  # a kind this Fluxo does not know: name it
        return kind.replace("_", " ") + ("" if table == "?" else f" on table {table}")
    return template.format(table=table, column=column, name=name, found=found, wanted=wanted)


def _value(value: Any) -> str:
    """A type, default or flag of a column, as short text (a type as its SQL name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    text = getattr(value, "arg", None)  # a server default
    if text is not None:
        return repr(str(getattr(text, "text", text)))
    try:
        return str(value)  # a type renders as its SQL: VARCHAR(255), INTEGER...
    except Exception:
        return type(value).__name__
