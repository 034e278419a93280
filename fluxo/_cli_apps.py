"""How the command line finds its engine and store: ``module:attribute``, a URL, or a given one."""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from fluxo import _async_engine, _definitions, _engine, _errors, _redact, stores
from fluxo import _cli_format as fmt

STORE_ENV = "FLUXO_STORE_URL"
APP_ENV = "FLUXO_APP"


class CLIError(click.ClickException):
    """A one-line error for the user; the traceback only with --verbose."""


def load_engine(spec: str) -> _engine.Engine:
    """Import ``module:attribute`` and return the :class:`fluxo.Engine` it names.

    The attribute may also be a function that takes no arguments and returns an engine,
    or a :class:`fluxo.AsyncEngine`, whose ``Engine`` is returned.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CLIError(
            f"APP must look like 'module:attribute' (for example 'shop.tasks:engine'), not {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name
        if missing is not None and not (module_name + ".").startswith(missing + "."):
            # The app was found; something it imports is not installed.
            raise CLIError(f"cannot import {module_name!r}: {exc}") from exc
        raise CLIError(
            f"cannot import {module_name!r}: {exc}; run fluxo from your project's directory "
            "or add it to PYTHONPATH"
        ) from exc
    except _errors.FluxoError:
        raise
    except Exception as exc:
        raise CLIError(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc}; "
            "fix it, or run `fluxo --verbose ...` for the traceback"
        ) from exc
    try:
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, (_definitions.Workflow, _definitions.Step)):
        kind = "workflow" if isinstance(target, _definitions.Workflow) else "step"
        raise CLIError(
            f"{spec!r} is a {kind}, not a fluxo.Engine; point APP at the engine that "
            f"registers it ('{module_name}:engine', say) or at a function that returns one"
        )
    if callable(target) and not isinstance(target, (_engine.Engine, _async_engine.AsyncEngine)):
        try:
            target = target()
        except _errors.FluxoError:
            raise
        except Exception as exc:
            raise CLIError(
                f"calling {spec!r} raised {type(exc).__name__}: {exc}; "
                "fix it, or run `fluxo --verbose ...` for the traceback"
            ) from exc
    if isinstance(target, _async_engine.AsyncEngine):
        target = target.engine  # an async app's engine: its workers are the sync engine's
    if not isinstance(target, _engine.Engine):
        raise CLIError(
            f"{spec!r} is {type(target).__name__}, not a fluxo.Engine (or fluxo.AsyncEngine)"
        )
    return target


def given() -> Callable[[], _engine.Engine] | None:
    """The engine factory that ``main(engine=...)`` was given (a framework's), if any."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    factory = obj.get("engine") if isinstance(obj, dict) else None
    return factory if callable(factory) else None


def app_engine(app: str | None, *, option: str = "APP") -> tuple[_engine.Engine, bool]:
    """The engine APP names, or the given one; and whether the command should close it."""
    if app is not None:
        return load_engine(app), True
    factory = given()
    if factory is None:
        raise click.UsageError(f"Missing {option} ('module:attribute'): pass it or set {APP_ENV}")
    engine = factory()
    if not isinstance(engine, _engine.Engine):
        raise CLIError(f"the engine factory returned {type(engine).__name__}, not a fluxo.Engine")
    return engine, False  # the framework's engine: its owner closes it


def _make_engine(store: str | None, app: str | None) -> tuple[_engine.Engine, bool]:
    if store is None and app is None and given() is None:
        raise click.UsageError(
            f"no store given: set {STORE_ENV} or pass --store URL "
            f"(or {APP_ENV} / --app APP to use your app's engine)"
        )
    if app is None and given() is None:
        assert store is not None
        return _engine.Engine(_open(store), workflows=[]), True
    engine, owned = app_engine(app)
    if store is None:
        return engine, owned
    # --store picks the store; the app brings its workflows and codec.
    workflows, codec, clock = engine.workflows, engine.codec, engine.clock
    if owned:
        engine.close()
    opened = _engine.Engine(_open(store), workflows=workflows, codec=codec, clock=clock)
    return opened, True


def _open(url: str) -> stores.Store:
    """The store at ``url``, as the ``runs`` commands use it: they never migrate a schema.

    So a mistyped URL gets no tables (nor a new SQLite file): the command says
    "no Fluxo tables at ...; run `fluxo db upgrade`" instead.
    """
    return stores.open_store(url, auto_migrate=False)


def prog() -> str:
    """The command line's name as the user typed it: ``fluxo``, ``manage.py fluxo``..."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().info_name if ctx is not None else None) or "fluxo"


@contextlib.contextmanager
def connect(store: str | None, app: str | None) -> Iterator[_engine.Engine]:
    """Open the engine for a ``runs`` command, turning store errors into one-line advice."""
    if store is not None:
        where = _redact.redact_value(store)
        check = "check --store" if given() is not None else f"check {STORE_ENV} or --store"
        reach = f"the store at {where}"
    elif app is None:  # the framework's own engine
        where = reach = "the app's store"
        check = "check the store your settings name, or pass --store URL"
    else:
        where = reach = f"the store of app {app!r}"
        check = f"check the store URL that app uses, or pass --store / set {STORE_ENV}"
    try:
        engine, owned = _make_engine(store, app)
        try:
            yield engine
        finally:
            if owned:
                engine.close()
            if store is not None:
                engine.store.close()  # opened here, so not the engine's to close
    except _errors.RunNotFoundError as exc:
        raise CLIError(
            f"no run {_errors.quoted(exc.run_id)} in {where}; list runs with `{prog()} runs list`"
        ) from exc
    except (_errors.StoreUnavailableError, ConnectionError) as exc:
        raise CLIError(f"cannot reach {reach}: {fmt.root_reason(exc)}; {check}") from exc


def given_url() -> str | None:
    """The store URL that ``main(store_url=...)`` was given a way to tell, if any.

    Read without opening the store, so ``db upgrade`` works on a database that a
    store would refuse to open (no tables, an older schema, ``auto_migrate`` off).
    Else the SQL store URL of the engine ``main(engine=...)`` was given.
    """
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    tell = obj.get("store_url") if isinstance(obj, dict) else None
    if callable(tell):
        url: str | None = tell()
        return url
    factory = given()  # else the given engine's, which opens its store
    if factory is None:
        return None
    sql_engine = getattr(factory().store, "engine", None)
    found = getattr(sql_engine, "url", None)
    return None if found is None else str(found.render_as_string(hide_password=False))
