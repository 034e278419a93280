"""The ``Fluxo`` extension object, and the per-app state it keeps in ``app.extensions``.

Each app set up with :meth:`Fluxo.init_app` gets a :class:`FluxoState` under
``app.extensions["fluxo"]``: its settings, read from its config, and the engine
of this process. The engine is built on first use, not by ``init_app``, so a
server that imports the app and then forks its workers (gunicorn, with or
without ``--preload``) opens no connection before the fork. A forked child that
finds an engine built by its parent builds its own, and every engine is closed
when its process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import flask
import sqlalchemy as sa

from fluxo import _definitions, _engine, _errors, _redact, _transactions, stores
from fluxo import codec as _codec
from fluxo.contrib.flask import _cli, _config, _databases, _http, _sessions

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

log = logging.getLogger(__name__)

EXTENSION_KEY = "fluxo"
"""The key of a :class:`FluxoState` in ``app.extensions``."""

PREPARE_RETRY: Final = 10.0
"""Seconds between two tries of a request's :meth:`FluxoState.prepare` that failed."""


class Fluxo:
    """Fluxo in a Flask app: its engine, built from the ``FLUXO_*`` keys of ``app.config``.

    One object may serve several apps (``init_app`` each, as with any Flask
    extension); each app gets its own engine, built on first use, once per
    process. ``flask fluxo ...`` runs Fluxo's command line (``flask fluxo
    worker``, ``flask fluxo runs list``...) with the app's engine.

    Args:
        app: the app to set up now; or call :meth:`init_app` later (app factories).
        workflows: the workflows every app's engine knows, besides those named
            by ``FLUXO_WORKFLOWS``.
        codec: how values are encoded; see :class:`fluxo.Engine`.

    Example:
        >>> app.config["FLUXO_STORE"] = "postgresql+psycopg://app@db/shop"  # or none: FSA's
        >>> fluxo = Fluxo(app, workflows=[checkout])
        >>> fluxo.engine.start(checkout.options(id="order-17"), 17, 4200)

    Raises:
        DefinitionError: a workflow is not a ``@fluxo.workflow``, or (from
            ``init_app``) a ``FLUXO_*`` key is unusable.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        workflows: Iterable[_definitions.Workflow[Any, Any]] = (),
        codec: _codec.Codec | None = None,
    ) -> None:
        if isinstance(workflows, (str, bytes)) or not isinstance(workflows, Iterable):
            raise _errors.DefinitionError(
                f"Fluxo(workflows=...) takes a list of @fluxo.workflow functions, not "
                f"{workflows!r}; name workflows by dotted path in app.config['FLUXO_WORKFLOWS']"
            )
        self.workflows: list[_definitions.Workflow[Any, Any]] = list(workflows)
        """The workflows passed in code (each app adds its ``FLUXO_WORKFLOWS``)."""
        wrong = [w for w in self.workflows if not isinstance(w, _definitions.Workflow)]
        if wrong:
            raise _errors.DefinitionError(
                f"Fluxo(workflows=...) holds {', '.join(map(repr, wrong))}, which "
                f"{'is' if len(wrong) == 1 else 'are'} not decorated with @fluxo.workflow"
            )
        self.codec = codec
        self._app = app
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"Fluxo(workflows={sorted(w.name for w in self.workflows)})"

    def init_app(self, app: flask.Flask) -> None:
        """Set Fluxo up on ``app``: read its config, add ``flask fluxo``, maybe error handlers.

        No engine is built here (see :attr:`engine`), so nothing connects to the
        store before a server forks its workers.

        Raises:
            DefinitionError: a ``FLUXO_*`` key is unusable (the message names it),
                or Fluxo is already set up on this app.
        """
        if not isinstance(app, flask.Flask):
            raise _errors.DefinitionError(f"init_app() takes a Flask app, not {app!r}")
        if EXTENSION_KEY in app.extensions:
            raise _errors.DefinitionError(
                f"Fluxo is already set up on app {app.name!r}; call init_app once per app"
            )
        settings = _config.read(app.config, app.instance_path)
        database = _config.database_url(app.config, app.instance_path)
        _config.check_join(settings, database)
        state = FluxoState(self, app, settings)
        app.extensions[EXTENSION_KEY] = state
        app.cli.add_command(_cli.fluxo_command)
        if database is not None or _sqlalchemy(app) is not None:
            _sessions.listen()  # before any session of the app's has written
        if _config.maybe_shared(settings, database):
            app.before_request(state.prepare)  # see prepare
        if settings.error_handlers:
            _http.register_error_handlers(app)

    @property
    def engine(self) -> _engine.Engine:
        """The current app's engine in this process, built on first use.

        The current app is the one whose context is pushed (every request, CLI
        command and, with ``FLUXO_APP_CONTEXT``, step has one), else the app
        given to the constructor. See :meth:`get_engine`.
        """
        return self.get_engine()

    def get_engine(self, app: flask.Flask | None = None) -> _engine.Engine:
        """The engine of ``app`` (by default the current app) in this process.

        Built on first use from the app's settings; a forked process builds its
        own instead of using its parent's. Thread-safe.

        Raises:
            RuntimeError: no app is given, none is current, and the constructor
                was given none.
            DefinitionError: Fluxo is not set up on the app, or its settings
                cannot make an engine (the message names the key).
        """
        return self.state(app).engine()

    def state(self, app: flask.Flask | None = None) -> FluxoState:
        """The :class:`FluxoState` of ``app`` (by default the current app)."""
        if app is None:
            if flask.has_app_context():
                app = flask.current_app
            elif self._app is not None:
                app = self._app
            else:
                raise RuntimeError(
                    "no Flask app to take the Fluxo engine of: use it inside an app context "
                    "(a request, a CLI command, 'with app.app_context():'), or call "
                    "get_engine(app)"
                )
        state = app.extensions.get(EXTENSION_KEY)
        if not isinstance(state, FluxoState) or state.extension is not self:
            raise _errors.DefinitionError(
                f"this Fluxo object is not set up on app {app.name!r}; call init_app(app) "
                "in the app factory"
            )
        return state

    def close(self, app: flask.Flask | None = None) -> None:
        """Close the engine of ``app`` (by default the current app) in this process.

        The next use builds a new one. Engines are also closed when the process
        exits; tests that make many apps close them sooner with this.
        """
        self.state(app).close()


class FluxoState:
    """One app's Fluxo: its settings and this process's engine (``app.extensions["fluxo"]``).

    Attributes:
        extension: the :class:`Fluxo` object that set the app up.
        settings: the app's ``FLUXO_*`` settings, as read by ``init_app``.
    """

    def __init__(self, extension: Fluxo, app: flask.Flask, settings: _config.Settings) -> None:
        self.extension = extension
        self.settings = settings
        self._app = weakref.ref(app)
        self._lock = threading.Lock()
        self._engine: _engine.Engine | None = None
        self._store: stores.Store | None = None
        """The store this state opened (from a URL), closed with the engine."""
        self._pid = 0
        self.join_session: _config.JoinSession = settings.join_session
        """How starts meet ``db.session``: decided with the engine when ``auto``."""
        self._prepare_after = 0.0
        self._prepare_failing = False
        _LIVE.add(self)

    @property
    def app(self) -> flask.Flask:
        """The app this state belongs to."""
        app = self._app()
        if app is None:  # pragma: no cover - the app holds its state
            raise RuntimeError("the Flask app of this Fluxo state was garbage-collected")
        return app

    def engine(self) -> _engine.Engine:
        """This process's engine, built the first time it is asked for."""
        engine, pid = self._engine, os.getpid()
        if engine is not None and self._pid == pid:
            return engine
        with self._lock:
            if self._engine is None or self._pid != pid:
                if self._engine is not None:
                    log.debug("process %d forked from %d: building its own engine", pid, self._pid)
                self._engine = None  # the parent's: its threads and connections stayed there
                self._store = None
                self._engine, self._store = self._build()
                self._pid = pid
            return self._engine

    def built(self) -> _engine.Engine | None:
        """This process's engine if it is built, else ``None`` (nothing is built here)."""
        engine = self._engine
        return engine if engine is not None and self._pid == os.getpid() else None

    def close(self) -> None:
        """Close this process's engine, if it has one (the next use builds another)."""
        with self._lock:
            engine, store, mine = self._engine, self._store, self._pid == os.getpid()
            self._engine = self._store = None
        if engine is not None and mine:
            engine.close()
            if store is not None:
                store.close()

    def reset_after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held would stay held."""
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Build this process's engine before a request's view, if it is not built.

        Registered with ``before_request`` when the store may be Flask-SQLAlchemy's
        database: the engine is built (and Fluxo's tables made) before the view
        opens a transaction, since on SQLite the tables cannot be created from
        another connection while the view's transaction holds the write lock.

        It never fails a request: if the store cannot be reached, it logs a
        warning once and lets the view run (a view that uses the engine then gets
        the error from its own use); it tries again at a request
        :data:`PREPARE_RETRY` seconds later. Once the engine is built, it costs
        a comparison.
        """
        if self.built() is not None or time.monotonic() < self._prepare_after:
            return
        try:
            self.engine()
        except Exception as exc:
            self._prepare_after = time.monotonic() + PREPARE_RETRY
            if not self._prepare_failing:
                self._prepare_failing = True
                config = isinstance(exc, _errors.DefinitionError)
                log.log(
                    logging.ERROR if config else logging.WARNING,
                    "building the Fluxo engine of app %r before a request failed (%s: %s); "
                    "requests go on, and their views' uses of Fluxo fail until it works. "
                    "Tried again every %d seconds; logged once until then",
                    self.app.name,
                    type(exc).__name__,
                    _redact.redact(str(exc)),
                    PREPARE_RETRY,
                )
            return
        if self._prepare_failing:
            self._prepare_failing = False
            log.info("built the Fluxo engine of app %r: its store is reachable", self.app.name)

    # -- the command line --------------------------------------------------------------

    @contextlib.contextmanager
    def command_engine(self, command: str | None) -> Iterator[Callable[[], _engine.Engine]]:
        """The engine factory of ``flask fluxo COMMAND``, and the engine closed after it.

        ``worker`` takes this process's engine, as any use would. The other
        commands never migrate: they take this process's engine if it is built,
        else one of their own, built on first use and closed afterwards, whose
        store does not create nor upgrade tables (``flask fluxo runs list`` on a
        database without them says to run ``flask fluxo db upgrade``).
        ``replay`` needs no store: its engine keeps none.
        """
        if command == "worker":
            yield self.engine
            return
        made: list[tuple[_engine.Engine, stores.Store | None]] = []

        def factory() -> _engine.Engine:
            engine = self.built()
            if engine is not None:
                return engine
            if not made:
                made.append(self._build(command="replay" if command == "replay" else "read"))
            return made[0][0]

        try:
            yield factory
        finally:
            for engine, store in made:
                engine.close()
                if store is not None:
                    store.close()

    def store_url(self) -> str | None:
        """The URL of the store, found without opening it; ``None`` for a store object not SQL.

        For ``flask fluxo db``: a relative SQLite path is resolved as for the
        store, and with ``FLUXO_STORE`` unset it is Flask-SQLAlchemy's database.
        """
        given = self.settings.store
        if isinstance(given, str):
            return given
        if given is None:
            return _default_store_url(self.app)
        url = _config.store_url(given)
        return None if url is None else url.render_as_string(hide_password=False)

    # -- building the engine -----------------------------------------------------------

    def _build(self, command: str | None = None) -> tuple[_engine.Engine, stores.Store | None]:
        """A new engine, and the store it opened from a URL (the caller closes both).

        ``command``: ``"read"`` for a command that must not migrate (its store
        neither creates nor upgrades tables); ``"replay"`` for one that needs no
        store (in memory). ``None``: the app's engine, which decides how starts
        meet ``db.session`` and, on Flask-SQLAlchemy's database, makes Fluxo's tables.
        """
        app, settings = self.app, self.settings
        workflows = [*self.extension.workflows, *_config.resolve_workflows(settings.workflows)]
        if command == "replay":
            return _engine.Engine(
                stores.open_store("memory://"), workflows=workflows, codec=self.extension.codec
            ), None
        migrate = settings.auto_migrate and command is None
        store, opened = self._open_store(app, auto_migrate=migrate)
        environment = settings.environment
        if environment is not None:  # it executes the runs the app starts: it must know them
            for workflow in workflows:
                environment._register(workflow)
        try:
            if command is None:
                self.join_session = self._join_mode(store)
                if self.join_session == "join" and opened is not None and migrate:
                    self._migrate(app, opened)
            return _engine.Engine(
                store,
                workflows=workflows,
                codec=self.extension.codec,
                parallel_threads=settings.parallel_threads,
                step_context=self._step_context if settings.app_context else None,
                transaction=self._ambient_start if command is None else None,
                clock=time.time if environment is None else environment.engine.clock,
            ), opened
        except BaseException:
            if opened is not None:
                opened.close()
            raise

    def _open_store(
        self, app: flask.Flask, *, auto_migrate: bool
    ) -> tuple[stores.Store, stores.Store | None]:
        """The store, and it again if it was opened here from a URL (else ``None``)."""
        given = self.settings.store
        if isinstance(given, stores.Store):
            return given, None
        url = given if given is not None else _default_store_url(app)
        try:
            if _config.is_sql_url(url) and given is not None:
                _make_instance_folder(app, url)
            store = stores.open_store(url, auto_migrate=auto_migrate)
        except _errors.DefinitionError as exc:
            origin = (
                "app.config['FLUXO_STORE']"
                if given is not None
                else "the store taken from Flask-SQLAlchemy's database (set FLUXO_STORE to "
                "choose another)"
            )
            raise _errors.DefinitionError(f"{origin}: {exc}") from exc
        except _errors.StoreError as exc:
            clearer = _locked_by_session(app, sa.make_url(url), exc) if "://" in url else None
            if clearer is None:
                raise
            raise clearer from exc
        return store, store

    def _migrate(self, app: flask.Flask, store: stores.Store) -> None:
        """Make Fluxo's tables in the app's database: joined starts cannot make them on SQLite."""
        from fluxo.stores import sql  # joined: the store is SQL

        assert isinstance(store, sql.SQLStore)
        try:
            store.migrate()  # a no-op at head
        except _errors.StoreError as exc:
            clearer = _locked_by_session(app, store.engine.url, exc)
            if clearer is None:
                raise
            raise clearer from exc

    def _join_mode(self, store: stores.Store) -> _config.JoinSession:
        wanted = self.settings.join_session
        db = _sqlalchemy(self.app)
        if db is not None:
            _sessions.listen()  # Flask-SQLAlchemy set up after init_app, perhaps
        if wanted in ("off", "on_commit"):
            if wanted == "on_commit" and db is None:
                raise _errors.DefinitionError(
                    "app.config['FLUXO_JOIN_SESSION'] is 'on_commit', but Flask-SQLAlchemy is "
                    "not set up on this app (db.init_app(app)), so there is no session to "
                    "wait for; remove the key"
                )
            return wanted
        if db is None:
            if wanted == "auto":
                return "off"
            raise _errors.DefinitionError(
                "app.config['FLUXO_JOIN_SESSION'] is True, but Flask-SQLAlchemy is not set up "
                "on this app (db.init_app(app)), so there is no session to join; remove the key"
            )
        database = _database_url(self.app, db)
        mine = _config.store_url(store)
        if mine is not None and database is not None and _databases.same_database(mine, database):
            return "join"
        given = self.settings.store
        shown = (
            _databases.shown(mine)
            if mine is not None
            else _redact.redact_value(given)
            if isinstance(given, str)
            else repr(store)
        )
        theirs = "none" if database is None else _databases.shown(database)
        if wanted == "join":
            raise _config.cannot_join(shown, theirs)
        if mine is not None:  # a SQL store: meant to be the app's database, perhaps
            log.warning(
                "Fluxo's store (%s) is not Flask-SQLAlchemy's database (%s): starts inside a "
                "db.session transaction will not join it, they are committed at once. Leave "
                "FLUXO_STORE unset to keep Fluxo's tables in that database, or set "
                "FLUXO_JOIN_SESSION to 'on_commit' or False to choose, and silence this",
                _redact.redact(shown),
                _redact.redact(theirs),
            )
        return "off"

    @contextlib.contextmanager
    def _step_context(self) -> Iterator[None]:
        with self.app.app_context():
            yield

    def _ambient_start(
        self, engine: _engine.Engine
    ) -> _transactions.InTransaction | _transactions.OnCommit | None:
        """The starter of a start inside a ``db.session`` transaction that has written, else None.

        A transaction that only read is never committed by a view that only reads:
        a start joined to it would be lost with it (see ``_sessions``).
        """
        if self.join_session == "off":
            return None
        current = flask.current_app if flask.has_app_context() else None
        if current is None or current.extensions.get(EXTENSION_KEY) is not self:
            return None  # outside this app: no session of its to join
        db = _sqlalchemy(current)
        if db is None or not db.session.registry.has():
            return None  # no session in this app context: nothing to join
        session = db.session()
        if not _sessions.has_written(session):
            return None
        if self.join_session == "join":
            return engine.in_transaction(session)
        return engine.on_commit(session)


def _sqlalchemy(app: flask.Flask) -> SQLAlchemy | None:
    """The app's Flask-SQLAlchemy extension, if it is set up (without importing it)."""
    db: SQLAlchemy | None = app.extensions.get("sqlalchemy")
    return db


def _database_url(app: flask.Flask, db: SQLAlchemy) -> sa.URL | None:
    """The URL of Flask-SQLAlchemy's default database (SQLite paths made absolute), or None."""
    if flask.has_app_context() and flask.current_app.extensions is app.extensions:
        engine = db.engines.get(None)
    else:
        with app.app_context():  # Flask-SQLAlchemy keeps its engines by the current app
            engine = db.engines.get(None)
    return None if engine is None else engine.url


def _default_store_url(app: flask.Flask) -> str:
    """The store URL of an app without ``FLUXO_STORE``: Flask-SQLAlchemy's database."""
    db = _sqlalchemy(app)
    if db is None:
        raise _errors.DefinitionError(
            "app.config['FLUXO_STORE'] is not set, and Flask-SQLAlchemy is not set up on this "
            "app (db.init_app(app)) to take the database from; set FLUXO_STORE to the store URL"
        )
    url = _database_url(app, db)
    if url is None:
        raise _errors.DefinitionError(
            "app.config['FLUXO_STORE'] is not set, and Flask-SQLAlchemy has no default "
            "database (SQLALCHEMY_DATABASE_URI) to take; set FLUXO_STORE to the store URL"
        )
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise _errors.DefinitionError(
            "app.config['FLUXO_STORE'] is not set, and Flask-SQLAlchemy's database is SQLite "
            "in memory, which no other connection (nor worker) can see; set FLUXO_STORE, to "
            "'memory://' in tests, say"
        )
    # Fluxo's own driver for the same database (psycopg for postgresql+psycopg2://...).
    return url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False)


def _make_instance_folder(app: flask.Flask, url: str) -> None:
    """Create the instance folder for a SQLite file there, as Flask-SQLAlchemy does."""
    file = _databases.sqlite_file(sa.make_url(url)) if url.startswith("sqlite") else None
    if file is not None and os.path.dirname(file) == os.path.realpath(app.instance_path):
        os.makedirs(app.instance_path, exist_ok=True)


def _locked_by_session(
    app: flask.Flask, url: sa.URL, error: _errors.StoreError
) -> _errors.StoreError | None:
    """A clearer error for a SQLite store that is locked by the app's own session, if it is.

    Opening a new SQLite store switches the file to WAL and may create Fluxo's
    tables: neither can happen while a ``db.session`` transaction of this
    thread holds the database's write lock.
    """
    if _databases.family(url) != "sqlite" or "locked" not in str(error):
        return None
    db = _sqlalchemy(app) if flask.has_app_context() else None
    if db is None or not db.session.registry.has() or not db.session().in_transaction():
        return None
    kind = (
        _errors.StoreUnavailableError
        if isinstance(error, _errors.StoreUnavailableError)
        else _errors.StoreError
    )
    return kind(
        f"{error}: Fluxo could not prepare its SQLite database (its tables, WAL mode) because "
        "db.session has a transaction open here, which holds the database's write lock. Run "
        "`flask fluxo db upgrade` once (a deploy step), or use fluxo.engine before the "
        "session's first write (the first request does so), so that the engine is built first"
    )


# -- every state of this process: closed at exit, unlocked after a fork -------------------

_LIVE: weakref.WeakSet[FluxoState] = weakref.WeakSet()


def _close_all() -> None:
    for state in list(_LIVE):
        try:
            state.close()
        except Exception:  # pragma: no cover - exiting: say so, and close the others
            log.exception("closing the Fluxo engine of app %r at exit failed", state.app.name)


def _after_fork_in_child() -> None:
    for state in list(_LIVE):
        state.reset_after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
