"""Starting runs with the application's own database transaction.

Two ways, both reached from the engine:

- :meth:`fluxo.Engine.in_transaction` writes the run in the caller's transaction
  (a SQL store in the application's database): the run exists once that
  transaction commits, and never if it rolls back.
- :meth:`fluxo.Engine.on_commit` starts the run once the caller's transaction has
  committed (any store): nothing is started if it rolls back, but a start that
  fails after the commit (the store is down) is only logged, because the
  caller's transaction is over by then.

The caller's transaction may be a SQLAlchemy ``Connection`` or ``Session`` (a
``scoped_session`` such as Flask-SQLAlchemy's ``db.session`` too), a Django
connection, or a DB-API connection. This module finds the DB-API connection
under each, and how to hear of its commit, without importing SQLAlchemy's ORM or
Django unless the caller's object is one of theirs.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from typing_extensions import ParamSpec

from fluxo import _definitions, _errors, _handle, history

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

Register = Callable[[Callable[[], None]], None]
"""Registers a function to run once the caller's transaction has committed."""


JOINED_HINT = (
    "it was started in a database transaction, and exists once that transaction commits "
    "(never if it rolled back)"
)
ON_COMMIT_HINT = (
    "it is started once the database transaction it was made in commits (never if it rolled back)"
)


class RunWriter(Protocol):
    """The store operations a start makes: the engine's store, or a joined transaction's."""

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
        """Create the run, or return the one with its id; see ``Store.create_run``."""

    def load(self, run_id: str) -> history.RunState:
        """The run and its history; see ``Store.load``."""

    def get_run(self, run_id: str) -> history.RunInfo:
        """The run's record; see ``Store.get_run``."""

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        """Store a signal and wake its run; see ``Store.send_signal``."""


class Starting(_handle.Client, Protocol):
    """What the starters ask of the engine."""

    @property
    def store(self) -> Any:
        """The engine's store."""

    def _start(
        self,
        workflow: _definitions.Workflow[P, R],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        writer: RunWriter | None = None,
        run_id: str | None = None,
        hint: str = "",
    ) -> _handle.RunHandle[R]:
        """Start a run through ``writer`` (default: the store), under ``run_id`` if given."""

    def _check_start(
        self, wf: _definitions.Workflow[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> bytes:
        """Refuse now what the start would refuse: an unknown workflow, bad arguments."""

    def _signal(
        self, run_id: str, name: str, payload: Any, *, writer: RunWriter | None = None
    ) -> None:
        """Send a signal through ``writer`` (default: the store)."""

    def _encode_signal(self, run_id: str, name: str, payload: Any) -> bytes:
        """Refuse now what a signal would refuse: a bad id, name or payload."""


class Joined:
    """The caller's transaction, as a start needs it.

    Attributes:
        dbapi_connection: the DB-API connection its statements run on; ``None``
            when the caller is not in a transaction (a plain start then).
        after_commit: registers a function to run after it commits; ``None`` when
            the caller's object cannot tell.
    """

    __slots__ = ("after_commit", "dbapi_connection")

    def __init__(self, dbapi_connection: Any, after_commit: Register | None) -> None:
        self.dbapi_connection = dbapi_connection
        self.after_commit = after_commit


def _module(obj: object) -> str:
    return type(obj).__module__.split(".", 1)[0]


def _is_django(connection: object) -> bool:
    return hasattr(connection, "in_atomic_block") and hasattr(connection, "ensure_connection")


def join(connection: object) -> Joined:
    """Find the DB-API connection and the commit hook of the caller's transaction.

    Raises:
        DefinitionError: ``connection`` is none of the kinds this understands.
        FluxoError: a Django atomic block that an error has broken.
    """
    if _is_django(connection):
        return _join_django(connection)
    if _module(connection) == "sqlalchemy":
        return _join_sqlalchemy(connection)
    if hasattr(connection, "cursor") and hasattr(connection, "commit"):
        return Joined(connection, None)  # a DB-API connection: its owner commits
    raise _errors.DefinitionError(
        f"cannot start a run in the transaction of {type(connection).__name__!r}: pass a "
        "SQLAlchemy Connection or Session, a Django connection (django.db.connection), or "
        "a DB-API connection"
    )


def _join_django(connection: Any) -> Joined:
    from django.db import transaction  # the caller's object is Django's: Django is there

    if not connection.in_atomic_block:
        return Joined(None, None)
    try:
        connection.validate_no_broken_transaction()
    except Exception as exc:
        raise _errors.FluxoError(
            f"cannot start a run in this transaction: {exc} (an error inside the atomic "
            "block broke it; start the run outside it, or in a new atomic block)"
        ) from exc
    connection.ensure_connection()
    alias = connection.alias

    def after_commit(fn: Callable[[], None]) -> None:
        transaction.on_commit(fn, using=alias)

    return Joined(connection.connection, after_commit)


def _join_sqlalchemy(connection: Any) -> Joined:
    import sqlalchemy as sa
    from sqlalchemy import orm

    if isinstance(connection, orm.scoped_session):
        connection = connection()
    if isinstance(connection, orm.Session):
        session = connection
        bound = session.connection()  # begins the session's transaction if none is open
        return Joined(bound.connection.dbapi_connection, _session_hook(session))
    if isinstance(connection, sa.Connection):
        if not connection.in_transaction():
            connection.begin()  # as SQLAlchemy's own first statement would; the caller commits
        return Joined(connection.connection.dbapi_connection, _connection_hook(connection))
    raise _errors.DefinitionError(
        f"cannot start a run in the transaction of a SQLAlchemy {type(connection).__name__}: "
        "pass a Connection or a Session"
    )


def _session_hook(session: Any) -> Register:
    from sqlalchemy import event

    def after_commit(fn: Callable[[], None]) -> None:
        ended = False

        def committed(_session: Any) -> None:
            nonlocal ended
            if not ended:
                ended = True
                fn()

        def rolled_back(_session: Any) -> None:
            nonlocal ended
            ended = True

        event.listen(session, "after_commit", committed, once=True)
        event.listen(session, "after_rollback", rolled_back, once=True)

    return after_commit


def _connection_hook(connection: Any) -> Register:
    from sqlalchemy import event

    # A Connection tells of its commit just before it is sent: a waiter woken then
    # that finds nothing yet looks again at its next poll, as for another process's start.
    def at_commit(fn: Callable[[], None]) -> None:
        event.listen(connection, "commit", lambda _conn: fn(), once=True)

    return at_commit


def commit_hook(connection: object) -> Register | None:
    """How to run a function after the caller's transaction commits; ``None``: not in one.

    Raises:
        DefinitionError: ``connection`` cannot report its commit.
    """
    if _is_django(connection):
        from django.db import transaction

        if not connection.in_atomic_block:  # type: ignore[attr-defined]
            return None
        alias = connection.alias  # type: ignore[attr-defined]

        def django_after_commit(fn: Callable[[], None]) -> None:
            transaction.on_commit(fn, using=alias)

        return django_after_commit
    if _module(connection) == "sqlalchemy":
        from sqlalchemy import orm

        session: Any = connection
        if isinstance(session, orm.scoped_session):
            session = session()
        if isinstance(session, orm.Session):
            return _session_hook(session) if session.in_transaction() else None
    elif callable(connection):
        register: Register = connection
        return register
    raise _errors.DefinitionError(
        f"engine.on_commit() cannot hear when {type(connection).__name__!r} commits: pass a "
        "Django connection, a SQLAlchemy Session, or a function that registers a callback "
        "to run after commit (such as django.db.transaction.on_commit)"
    )


class InTransaction:
    """Starts runs in the caller's database transaction: see :meth:`fluxo.Engine.in_transaction`."""

    __slots__ = ("_connection", "_engine")

    def __init__(self, engine: Starting, connection: object) -> None:
        if not callable(getattr(engine.store, "join", None)):
            raise _errors.DefinitionError(
                f"{type(engine.store).__name__} cannot start runs in your transaction: "
                "transactional starts need the SQL store in your app's database; with another "
                "store, start after commit with engine.on_commit(connection).start(...)"
            )
        self._engine = engine
        self._connection = connection

    def __repr__(self) -> str:
        return f"<InTransaction of {type(self._connection).__name__}>"

    def start(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> _handle.RunHandle[R]:
        """Start a run in the transaction; as :meth:`fluxo.Engine.start` otherwise.

        The run exists for workers once the transaction commits, and never if it
        rolls back. Outside a transaction (a Django connection in autocommit,
        say) this is a plain start.
        """
        engine = self._engine
        joined = join(self._connection)
        if joined.dbapi_connection is None:
            return engine._start(workflow, args, kwargs)
        writer: RunWriter = engine.store.join(
            joined.dbapi_connection, after_commit=joined.after_commit
        )
        return engine._start(workflow, args, kwargs, writer=writer, hint=JOINED_HINT)

    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send a signal in the transaction; as :meth:`fluxo.Engine.signal` otherwise.

        The signal is stored for the run once the transaction commits, and never if
        it rolls back; a run started earlier in the same transaction can be
        signalled. Outside a transaction, it is a plain signal.
        """
        engine = self._engine
        joined = join(self._connection)
        if joined.dbapi_connection is None:
            return engine._signal(run_id, name, payload)
        writer: RunWriter = engine.store.join(
            joined.dbapi_connection, after_commit=joined.after_commit
        )
        return engine._signal(run_id, name, payload, writer=writer)


class OnCommit:
    """Starts runs once the caller's transaction commits: see :meth:`fluxo.Engine.on_commit`."""

    __slots__ = ("_connection", "_engine")

    def __init__(self, engine: Starting, connection: object) -> None:
        self._engine = engine
        self._connection = connection

    def __repr__(self) -> str:
        return f"<OnCommit of {type(self._connection).__name__}>"

    def start(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> _handle.RunHandle[R]:
        """Start a run once the transaction commits; at once outside a transaction.

        The workflow and its arguments are checked now, and the run id is chosen
        now (``workflow.options(id=...)``, or a new one), so the handle returned
        names the run the commit will start.
        """
        engine = self._engine
        register = commit_hook(self._connection)
        if register is None:
            return engine._start(workflow, args, kwargs)
        engine._check_start(workflow, args, kwargs)
        run_id = workflow.start_id or uuid.uuid4().hex

        def start_now() -> None:
            try:
                engine._start(workflow, args, kwargs, run_id=run_id)
            except Exception:
                log.exception(
                    "the transaction committed, but starting run %s of %s failed; start it "
                    "again (it is idempotent on its id)",
                    run_id,
                    workflow.name,
                    extra={"fluxo_run_id": run_id},
                )

        register(start_now)
        return _handle.RunHandle(engine, run_id, workflow.return_type, hint=ON_COMMIT_HINT)

    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send a signal once the transaction commits; at once outside a transaction.

        The id, name and payload are checked now; a send that fails after the
        commit (the run finished meanwhile, the store is down) is logged.
        """
        engine = self._engine
        register = commit_hook(self._connection)
        if register is None:
            return engine._signal(run_id, name, payload)
        engine._encode_signal(run_id, name, payload)

        def send_now() -> None:
            try:
                engine._signal(run_id, name, payload)
            except Exception:
                log.exception(
                    "the transaction committed, but sending signal %r to run %s failed",
                    name,
                    run_id,
                    extra={"fluxo_run_id": run_id},
                )

        register(send_now)
        return None
