"""The project's engine: one per process, made on first use, remade in a forked child.

:func:`get_engine` builds a :class:`fluxo.Engine` from the settings the first time
it is called in a process: the store (the Django database, or ``FLUXO["STORE"]``),
the workflows (autodiscovered and listed), how starts follow Django's transactions,
and Django's connection hygiene around each step. A process forked after that
(gunicorn's workers under ``--preload``, multiprocessing) gets an engine of its
own on its first call: the parent's connections and threads are not the child's
to use. The engine is closed when the process exits, or by :func:`close_engine`
(Django's ``setting_changed`` signal calls it when a test overrides ``FLUXO`` or
``DATABASES``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, reset_queries
from django.utils.connection import ConnectionDoesNotExist

from fluxo import _engine, _errors, _transactions, stores
from fluxo.contrib.django import _databases, _discovery, _settings, debug

log = logging.getLogger(__name__)


def current_settings() -> _settings.FluxoSettings:
    """``settings.FLUXO``, checked (see :class:`FluxoSettings`).

    Raises:
        ImproperlyConfigured: the setting is unusable; the message names the key.
    """
    return _settings.read(getattr(settings, "FLUXO", None))


def check_alias(alias: str) -> None:
    """Raise ``ImproperlyConfigured`` unless ``alias`` is in ``DATABASES``."""
    try:
        connections[alias]
    except ConnectionDoesNotExist:
        known = ", ".join(repr(name) for name in settings.DATABASES) or "none"
        raise ImproperlyConfigured(
            f"settings.FLUXO['DATABASE'] is {alias!r}, which is not in DATABASES (its aliases: "
            f"{known}); name one of them"
        ) from None


def migrate_command(alias: str) -> str:
    """The ``migrate`` command line that makes Fluxo's tables in the Django database ``alias``."""
    if alias == DEFAULT_DB_ALIAS:
        return "python manage.py migrate"
    return f"python manage.py migrate --database {alias}"


@debug.sensitive
def database_url(alias: str) -> sa.URL:
    """The SQLAlchemy URL of the Fluxo store on the Django database ``alias``."""
    check_alias(alias)
    connection = connections[alias]
    return _databases.store_url(connection.vendor, connection.settings_dict, alias)


@debug.sensitive
def open_store(config: _settings.FluxoSettings) -> stores.Store:
    """The store the settings name (not migrated: ``manage.py migrate`` makes the tables).

    Raises:
        ImproperlyConfigured: the settings name no usable store.
        StoreError: the Django database has no Fluxo tables, or old ones; the
            message says to run ``manage.py migrate``.
    """
    if config.store is not None:
        try:
            return stores.open_store(config.store)
        except _errors.DefinitionError as exc:
            raise ImproperlyConfigured(f"settings.FLUXO['STORE']: {exc}") from exc
    url = database_url(config.database)
    from fluxo.stores import sql

    try:
        return sql.SQLStore(url, auto_migrate=False)
    except _errors.DefinitionError as exc:
        raise ImproperlyConfigured(f"DATABASES[{config.database!r}]: {exc}") from exc
    except _errors.StoreUnavailableError:
        raise
    except _errors.StoreError as exc:
        raise _errors.StoreError(
            f"{exc} (in a Django project: `{migrate_command(config.database)}`, which makes "
            "Fluxo's tables)"
        ) from exc


Starter = _transactions.InTransaction | _transactions.OnCommit
"""What ``Engine(transaction=...)``'s function returns while a transaction is open."""


def transaction_starter(
    config: _settings.FluxoSettings,
) -> Callable[[_engine.Engine], Starter | None]:
    """The ``Engine(transaction=...)`` function: how a start follows Django's transaction.

    Inside ``transaction.atomic()`` on the Fluxo database (``FLUXO["DATABASE"]``) a
    start is written in that transaction (``"transaction"``) or made after it
    commits (``"on_commit"``); outside one it is a plain start.
    """
    alias, mode = config.database, config.start_mode

    def starter(engine: _engine.Engine) -> Starter | None:
        connection = connections[alias]
        if not connection.in_atomic_block:
            return None
        if mode == "on_commit":
            return engine.on_commit(connection)
        return engine.in_transaction(connection)

    return starter


@contextlib.contextmanager
def step_hygiene() -> Iterator[None]:
    """Around each step, what Django does around each request.

    Connections that are broken, or older than ``CONN_MAX_AGE``, are closed before
    and after the step, and the ``DEBUG`` query log is emptied, so a worker that
    runs for weeks keeps no dead connection and no growing log.
    """
    reset_queries()
    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


@debug.sensitive
def build_engine(config: _settings.FluxoSettings | None = None) -> _engine.Engine:
    """A new engine from the settings (:func:`get_engine` keeps one per process).

    Raises:
        ImproperlyConfigured: the settings are unusable.
    """
    config = current_settings() if config is None else config
    check_alias(config.database)  # its transactions are followed, whatever the store
    workflows = _discovery.workflows(config)
    store = open_store(config)
    try:
        return _engine.Engine(
            store,
            workflows=workflows,
            transaction=transaction_starter(config),
            step_context=step_hygiene,
        )
    except BaseException:
        store.close()
        raise


@dataclass
class _Held:
    engine: _engine.Engine
    pid: int


class _Slot:
    """The process's engine, and the lock that builds it once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.held: _Held | None = None


_slot = _Slot()


def get_engine() -> _engine.Engine:
    """This process's engine, built from the settings on first use.

    Every call in a process returns the same engine, from any thread; a forked
    child gets one of its own.

    Example:
        >>> from fluxo.contrib.django import get_engine
        >>> get_engine().start(checkout, order.id)

    Raises:
        ImproperlyConfigured: ``settings.FLUXO`` (or the database it names) is unusable.
        StoreError: the database has no Fluxo tables: run ``python manage.py migrate``.
    """
    held = _slot.held
    if held is not None and held.pid == os.getpid():
        return held.engine
    with _slot.lock:
        held = _slot.held
        if held is None or held.pid != os.getpid():
            # A parent's engine is left alone: its connections and threads are the parent's.
            held = _slot.held = _Held(build_engine(), os.getpid())
            log.debug("Fluxo engine ready: %r", held.engine)
    return held.engine


def close_engine() -> None:
    """Close this process's engine, if it has one; the next :func:`get_engine` builds another.

    Called when the process exits, and when a test changes ``FLUXO`` or
    ``DATABASES`` with ``override_settings``.
    """
    with _slot.lock:
        held, _slot.held = _slot.held, None
    if held is not None and held.pid == os.getpid():
        held.engine.close()
        held.engine.store.close()


atexit.register(close_engine)
