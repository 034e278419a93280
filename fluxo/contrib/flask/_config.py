"""The ``FLUXO_*`` keys of a Flask app's config, each read and checked once by ``init_app``.

A key that is missing takes its default; a value of the wrong kind, and a
``FLUXO_*`` key Fluxo does not know (a typo, say ``FLUXO_STORE_URL``), raise
:class:`~fluxo.DefinitionError` naming the key and what to set instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import sys
from collections.abc import Mapping
from typing import Any, Final, Literal

import sqlalchemy as sa

from fluxo import _definitions, _errors, _executor, _redact, stores
from fluxo.contrib.flask import _databases

PREFIX: Final = "FLUXO_"

KEYS: Final[dict[str, str]] = {
    "FLUXO_STORE": "the store: a URL, or a Store object; by default Flask-SQLAlchemy's database",
    "FLUXO_WORKFLOWS": "dotted paths of workflows, or of modules whose workflows to take",
    "FLUXO_APP_CONTEXT": "run every step inside app.app_context() (default True)",
    "FLUXO_JOIN_SESSION": "starts in a db.session transaction that wrote: True, 'on_commit', False",
    "FLUXO_AUTO_MIGRATE": "let a SQL store create and upgrade its tables (default True)",
    "FLUXO_PARALLEL_THREADS": "threads for the branches of fluxo.parallel and fluxo.map",
    "FLUXO_ERROR_HANDLERS": "answer Fluxo's errors with HTTP statuses (default False)",
}
"""Every key Fluxo reads, with what it sets (docs/flask.md has the full reference)."""

JoinSession = Literal["join", "on_commit", "off", "auto"]
"""How a start inside a ``db.session`` transaction goes (``auto``: decided when the
engine is built, ``join`` if the store is Flask-SQLAlchemy's database, else ``off``)."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """A Flask app's Fluxo settings, read from its config."""

    store: str | stores.Store | None
    """``None``: Flask-SQLAlchemy's database, found when the engine is built."""
    workflows: tuple[str | _definitions.Workflow[Any, Any], ...]
    app_context: bool
    join_session: JoinSession
    join_session_given: bool
    """Whether ``FLUXO_JOIN_SESSION`` was set (then a store it cannot join is an error)."""
    auto_migrate: bool
    parallel_threads: int
    error_handlers: bool
    environment: Any = None
    """A ``fluxo.testing.WorkflowEnvironment`` given as ``FLUXO_STORE``: the engine takes
    its store and its virtual clock, and the environment learns the app's workflows."""


def _key(name: str) -> str:
    return f"app.config[{name!r}]"


def _flag(config: Mapping[str, Any], name: str, default: bool) -> bool:
    value = config.get(name, default)
    if not isinstance(value, bool):
        raise _errors.DefinitionError(f"{_key(name)} must be True or False, not {value!r}")
    return value


def _store(config: Mapping[str, Any], instance_path: str) -> str | stores.Store | None:
    value = config.get("FLUXO_STORE")
    if value is None:
        if "SQLALCHEMY_DATABASE_URI" not in config:
            raise _errors.DefinitionError(
                f"{_key('FLUXO_STORE')} is not set: set it to the store URL (for example "
                "'postgresql+psycopg://app@db/shop' or 'sqlite:///fluxo.db'), or configure "
                "Flask-SQLAlchemy (SQLALCHEMY_DATABASE_URI) to keep Fluxo's tables in its database"
            )
        return None
    if isinstance(value, stores.Store):
        return value
    environment = _environment(value)
    if environment is not None:
        store: stores.Store = environment.store
        return store
    if not isinstance(value, str) or "://" not in value:
        shown = _redact.redact_value(value) if isinstance(value, str) else value
        raise _errors.DefinitionError(
            f"{_key('FLUXO_STORE')} must be a store URL such as 'sqlite:///fluxo.db', "
            f"'postgresql+psycopg://app@db/shop' or 'memory://', a Store object, or in tests a "
            f"fluxo.testing.WorkflowEnvironment; not {shown!r}"
        )
    if not is_sql_url(value):
        return value
    try:
        url = sa.make_url(value)
    except sa.exc.ArgumentError as exc:
        raise _errors.DefinitionError(
            f"{_key('FLUXO_STORE')} is not a valid URL ({_redact.redact_value(value)!r}): {exc}"
        ) from None
    resolved = _databases.in_instance_folder(url, instance_path)
    return value if resolved is url else resolved.render_as_string(hide_password=False)


def _environment(value: object) -> Any:
    """``value`` if it is a ``fluxo.testing.WorkflowEnvironment``, else ``None``.

    Only a test that made one has imported ``fluxo.testing``: nothing is imported here.
    """
    testing = sys.modules.get("fluxo.testing")
    kind = getattr(testing, "WorkflowEnvironment", None)
    return value if isinstance(kind, type) and isinstance(value, kind) else None


def is_sql_url(store: str | stores.Store) -> bool:
    """Whether ``store`` is the URL of a SQL database (which may be the app's own)."""
    scheme = store.partition("://")[0].partition("+")[0].lower() if isinstance(store, str) else ""
    return scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


def store_url(store: str | stores.Store) -> sa.URL | None:
    """The URL of a SQL store, given as a URL or as a store object; ``None`` for another store."""
    if isinstance(store, str):
        return sa.make_url(store) if is_sql_url(store) else None
    url = getattr(getattr(store, "engine", None), "url", None)  # a SQLStore's
    return url if isinstance(url, sa.URL) else None


def database_url(config: Mapping[str, Any], instance_path: str) -> sa.URL | None:
    """Flask-SQLAlchemy's default database as the config names it (SQLite paths resolved).

    ``None`` when the config names none (or nothing that parses): Flask-SQLAlchemy
    then has the final word, once its engines are made.
    """
    value = config.get("SQLALCHEMY_DATABASE_URI")
    if value is None:
        binds = config.get("SQLALCHEMY_BINDS")
        value = binds.get(None) if isinstance(binds, Mapping) else None
        if isinstance(value, Mapping):
            value = value.get("url")
    if not isinstance(value, (str, sa.URL)):
        return None
    try:
        url = sa.make_url(value)
    except sa.exc.ArgumentError:
        return None
    return _databases.in_instance_folder(url, instance_path)


def cannot_join(store: str, database: str) -> _errors.DefinitionError:
    """The error for ``FLUXO_JOIN_SESSION = True`` with the store on another database."""
    return _errors.DefinitionError(
        f"{_key('FLUXO_JOIN_SESSION')} is True, but the store ({_redact.redact(store)}) is not "
        f"Flask-SQLAlchemy's database ({_redact.redact(database)}), and a run can join a "
        "transaction only on its store's database; set it to 'on_commit' to start runs once "
        "db.session commits, or leave FLUXO_STORE unset to keep Fluxo's tables in that database"
    )


def check_join(settings: Settings, database: sa.URL | None) -> None:
    """Refuse now, from the URLs alone, a ``FLUXO_JOIN_SESSION = True`` that cannot work.

    That is, a store that is not SQL, or a SQL store on another database than
    ``database`` (Flask-SQLAlchemy's, from the config). What the URLs cannot
    tell is checked when the engine is built.

    Raises:
        DefinitionError: the store cannot be Flask-SQLAlchemy's database.
    """
    if settings.join_session != "join" or settings.store is None or database is None:
        return
    mine = store_url(settings.store)
    if mine is not None and _databases.same_database(mine, database):
        return
    store = _databases.shown(mine) if mine is not None else _shown_store(settings.store)
    raise cannot_join(store, _databases.shown(database))


def maybe_shared(settings: Settings, database: sa.URL | None) -> bool:
    """Whether the store may be Flask-SQLAlchemy's database, judging from the URLs alone."""
    if settings.store is None:
        return True  # it is: the store is taken from Flask-SQLAlchemy
    mine = store_url(settings.store)
    if mine is None:
        return False
    return database is None or _databases.same_database(mine, database)


def _shown_store(store: str | stores.Store) -> str:
    return _redact.redact_value(store) if isinstance(store, str) else repr(store)


def _workflows(config: Mapping[str, Any]) -> tuple[str | _definitions.Workflow[Any, Any], ...]:
    value = config.get("FLUXO_WORKFLOWS", ())
    example = "for example ['shop.workflows'] or ['shop.workflows:checkout']"
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        hint = f"[{value!r}]" if isinstance(value, str) else example
        raise _errors.DefinitionError(
            f"{_key('FLUXO_WORKFLOWS')} must be a list of dotted paths, not {value!r}; write {hint}"
        )
    for entry in value:
        if isinstance(entry, _definitions.Workflow):
            continue
        if not isinstance(entry, str) or not entry.strip():
            raise _errors.DefinitionError(
                f"{_key('FLUXO_WORKFLOWS')} holds {entry!r}, which is not a dotted path to a "
                f"workflow or to a module of workflows ({example})"
            )
    return tuple(value)


def _join_session(config: Mapping[str, Any]) -> JoinSession:
    value = config.get("FLUXO_JOIN_SESSION")
    if value is None:
        return "auto"
    if value is True:
        return "join"
    if value is False:
        return "off"
    if value == "on_commit":
        return "on_commit"
    raise _errors.DefinitionError(
        f"{_key('FLUXO_JOIN_SESSION')} must be True (a start joins the transaction of "
        "db.session), 'on_commit' (it happens once db.session commits) or False (starts "
        f"ignore db.session); not {value!r}"
    )


def _parallel_threads(config: Mapping[str, Any]) -> int:
    value = config.get("FLUXO_PARALLEL_THREADS", _executor.DEFAULT_PARALLEL_THREADS)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _errors.DefinitionError(
            f"{_key('FLUXO_PARALLEL_THREADS')} must be a whole number of at least 1, not {value!r}"
        )
    return value


def _check_known(config: Mapping[str, Any]) -> None:
    unknown = sorted(k for k in config if isinstance(k, str) and k.startswith(PREFIX))
    unknown = [k for k in unknown if k not in KEYS]
    if not unknown:
        return
    problems = []
    for name in unknown:
        close = difflib.get_close_matches(name, KEYS, n=1, cutoff=0.8)
        problems.append(f"{name} (did you mean {close[0]}?)" if close else name)
    raise _errors.DefinitionError(
        f"app.config has {', '.join(problems)}, which Fluxo does not read; "
        f"its keys are {', '.join(KEYS)}"
    )


def read(config: Mapping[str, Any], instance_path: str) -> Settings:
    """Read and check every ``FLUXO_*`` key of ``config``.

    A relative SQLite path in ``FLUXO_STORE`` is made absolute under
    ``instance_path``, as Flask-SQLAlchemy does for ``SQLALCHEMY_DATABASE_URI``.

    Raises:
        DefinitionError: a key has an unusable value, or is not one of :data:`KEYS`.
    """
    _check_known(config)
    join = _join_session(config)
    return Settings(
        store=_store(config, instance_path),
        workflows=_workflows(config),
        app_context=_flag(config, "FLUXO_APP_CONTEXT", True),
        join_session=join,
        join_session_given=join != "auto",
        auto_migrate=_flag(config, "FLUXO_AUTO_MIGRATE", True),
        parallel_threads=_parallel_threads(config),
        error_handlers=_flag(config, "FLUXO_ERROR_HANDLERS", False),
        environment=_environment(config.get("FLUXO_STORE")),
    )


def resolve_workflows(
    entries: tuple[str | _definitions.Workflow[Any, Any], ...],
) -> list[_definitions.Workflow[Any, Any]]:
    """Import the workflows ``FLUXO_WORKFLOWS`` names, in order.

    An entry is ``"package.module:attribute"``, ``"package.module.attribute"``
    (a workflow), or ``"package.module"`` (every workflow defined or imported at
    the top of that module).

    Raises:
        DefinitionError: an entry does not import, or names no workflow.
    """
    found: list[_definitions.Workflow[Any, Any]] = []
    for entry in entries:
        if isinstance(entry, _definitions.Workflow):
            found.append(entry)
        else:
            found += _import_entry(entry.strip())
    return found


def _import_entry(path: str) -> list[_definitions.Workflow[Any, Any]]:
    module_name, colon, attribute = path.partition(":")
    if not colon:
        module = _import(path, missing_ok=True)
        if module is not None:
            workflows = [v for v in vars(module).values() if isinstance(v, _definitions.Workflow)]
            if not workflows:
                raise _errors.DefinitionError(
                    f"{_key('FLUXO_WORKFLOWS')}: module {path!r} defines no @fluxo.workflow; "
                    "name the module that does, or the workflow as 'module:name'"
                )
            return list({id(w): w for w in workflows}.values())
        module_name, _, attribute = path.rpartition(".")
        if not module_name:
            raise _errors.DefinitionError(
                f"{_key('FLUXO_WORKFLOWS')}: no module named {path!r}; check the entry, and "
                "that your project's folder is on the import path"
            )
    module = _import(module_name, missing_ok=False)
    assert module is not None
    target: Any = module
    try:
        for part in attribute.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise _errors.DefinitionError(
            f"{_key('FLUXO_WORKFLOWS')}: module {module_name!r} has no attribute {attribute!r}"
        ) from None
    if not isinstance(target, _definitions.Workflow):
        raise _errors.DefinitionError(
            f"{_key('FLUXO_WORKFLOWS')}: {path!r} is {type(target).__name__}, not a @fluxo.workflow"
        )
    return [target]


def _import(name: str, *, missing_ok: bool) -> Any:
    """The module ``name``; ``None`` if it does not exist and ``missing_ok``."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if missing_ok and exc.name is not None and (name + ".").startswith(exc.name + "."):
            return None  # the module itself (or its package) is missing, not one it imports
        raise _errors.DefinitionError(
            f"{_key('FLUXO_WORKFLOWS')}: importing {name!r} failed: {exc}"
        ) from exc
    except Exception as exc:
        raise _errors.DefinitionError(
            f"{_key('FLUXO_WORKFLOWS')}: importing {name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
