"""The engine: the user-facing facade over a store, a codec and a set of workflows.

It starts, signals, cancels, lists, retries and purges runs, and waits for their
results. Executing them is the runner's (:mod:`fluxo._runner`): for
:meth:`Engine.run`, in the caller's thread, and for the engine's workers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from typing_extensions import ParamSpec

from fluxo import (
    _cancelling,
    _definitions,
    _errors,
    _executor,
    _filters,
    _fork,
    _handle,
    _history_file,
    _leases,
    _names,
    _observers,
    _payloads,
    _queue_config,
    _redact,
    _resuming,
    _run_events,
    _runner,
    _schedule_control,
    _transactions,
    _worker,
    stores,
)
from fluxo import codec as _codec
from fluxo import history as _history

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_LEASE = _runner.DEFAULT_LEASE

RunHandle = _handle.RunHandle


class Engine:
    """Starts, runs and inspects durable workflows on one store.

    Args:
        store: a store URL (``"sqlite:///fluxo.db"``, ``"postgresql+psycopg://..."``,
            ``"memory://"``) or a :class:`~fluxo.stores.Store` object.
        workflows: every workflow this engine (and its workers) may run.
        codec: how values are encoded; defaults to :class:`~fluxo.codec.JSONCodec`.
        clock: seconds since the epoch; a test may pass a fake one.
        parallel_threads: the threads that run the branches of ``fluxo.parallel``
            and ``fluxo.map``, shared by every run this engine (and its workers)
            executes; branches beyond it wait for a free thread.
        transaction: called by every :meth:`start` with the engine; when it
            returns a starter (``engine.in_transaction(connection)`` or
            ``engine.on_commit(connection)``), the start goes through it. The
            Django integration passes one that joins the open ``atomic()`` block.
        step_context: returns a context manager entered around each live attempt
            of a step, in the thread that runs it (not on replay): the Django
            integration closes stale database connections there, the Flask one
            pushes the app context.
        observers: told of what happens to the runs this engine (and its workers)
            starts and executes (see :mod:`fluxo.observe`).
        queues: the :class:`fluxo.Queue` limits its workers admit runs under.

    Example:
        >>> engine = fluxo.Engine("sqlite:///fluxo.db", workflows=[checkout])
        >>> handle = engine.start(checkout.options(id="order-17"), "o-17", 4200)
        >>> handle.result(timeout=30)
    """

    def __init__(
        self,
        store: str | stores.Store,
        *,
        workflows: Iterable[_definitions.Workflow[Any, Any]],
        codec: _codec.Codec | None = None,
        clock: Callable[[], float] = time.time,
        parallel_threads: int = _executor.DEFAULT_PARALLEL_THREADS,
        transaction: Callable[[Engine], _transactions.InTransaction | _transactions.OnCommit | None]
        | None = None,
        step_context: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
        observers: Iterable[object] = (),
        queues: Iterable[_queue_config.Queue] = (),
    ) -> None:
        self.queues = _queue_config.engine_queues(queues)
        """The named queues and their limits, by name (docs/queues.md)."""
        self.observers = _observers.Dispatch(observers)
        """The handlers of this engine's observers, by kind of event."""
        for value, name in ((transaction, "transaction"), (step_context, "step_context")):
            if value is not None and not callable(value):
                raise _errors.DefinitionError(
                    f"Engine({name}=...) takes a function, not {type(value).__name__}"
                )
        self._transaction = transaction
        self.step_context = step_context
        """Entered around each live attempt of a step (see ``step_context=``)."""
        self.step_threads = _executor.StepThreads(parallel_threads)
        """The threads this engine's runs (and its workers') run parallel branches on."""
        if isinstance(store, str):
            self.store: stores.Store = stores.open_store(store)
            self._owns_store = True
        elif isinstance(store, stores.Store):
            self.store = store
            self._owns_store = False
        else:
            raise _errors.DefinitionError(
                f"Engine() takes a store URL such as 'sqlite:///fluxo.db' or a Store object, "
                f"not {_redact.redact(repr(store))}"
            )
        self.codec: _codec.Codec = codec if codec is not None else _codec.JSONCodec()
        self.clock = clock
        self._workflows: dict[str, _definitions.Workflow[Any, Any]] = {}
        self._register(workflows)
        self.schedules = _schedule_control.Schedules(self)
        """This engine's schedules: list, pause, resume, trigger (docs/schedules.md)."""
        self._closed = False
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runner = _runner.Runner(
            store=self.store,
            codec=self.codec,
            clock=self.clock,
            find_workflow=self._workflows.get,
            threads=self.step_threads,
            instance_id=self.instance_id,
            step_context=step_context,
            observers=self.observers,
        )
        """Executes this engine's runs: inline ones (:meth:`run`), and its workers'."""

    def _register(self, workflows: Iterable[_definitions.Workflow[Any, Any]]) -> None:
        if isinstance(workflows, (str, bytes)) or not isinstance(workflows, Iterable):
            raise _errors.DefinitionError(
                f"workflows= takes a list of @fluxo.workflow functions, not {workflows!r}"
            )
        problems = []
        for wf in _schedule_control.with_schedulers(workflows):
            if not isinstance(wf, _definitions.Workflow):
                problems.append(
                    f"{wf!r} is not a workflow; decorate it with @fluxo.workflow"
                    if callable(wf)
                    else f"{wf!r} is not a workflow"
                )
                continue
            for name in (wf.name, *wf.aliases):
                other = self._workflows.get(name)
                if other is not None and other.fn is not wf.fn:
                    problems.append(
                        f"two workflows are named {name!r} ({other.fn.__module__}."
                        f"{other.fn.__qualname__} and {wf.fn.__module__}.{wf.fn.__qualname__}); "
                        "give one of them another name= so their histories stay apart"
                    )
                self._workflows[name] = wf
            problems += wf.codec_problems(self.codec)
        if problems:
            raise _errors.DefinitionError("\n".join(problems))

    def __repr__(self) -> str:
        store = _redact.redact(repr(self.store))
        return f"Engine({store}, workflows={sorted({w.name for w in self.workflows})})"

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store if this engine opened it (from a URL). Idempotent.

        Observers called from threads of their own are given up to 5 seconds to
        take the events still queued for them.
        """
        if not self._closed:
            self._closed = True
            self.runner.close()  # inline runs give their runs back to workers
            self.observers.close(5.0)
            if self._owns_store:
                self.store.close()

    def add_observer(self, observer: object) -> None:
        """Tell ``observer`` too of what happens to runs, as ``Engine(observers=[...])`` does."""
        self.observers.add([observer])

    def flush_observers(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds for threaded observers to take their queued events.

        False if one has not; ``close()`` waits too.
        """
        return self.observers.flush(timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise _errors.RunStateError(
                "this Engine is closed; create a new Engine, or keep it open while you use it "
                "(for example with 'with fluxo.Engine(...) as engine:')"
            )

    @property
    def workflows(self) -> list[_definitions.Workflow[Any, Any]]:
        """The workflows this engine knows, once each."""
        return list({id(w): w for w in self._workflows.values()}.values())

    @property
    def workflow_names(self) -> frozenset[str]:
        """Every name (and alias) of every known workflow."""
        return frozenset(self._workflows)

    def lookup(self, name: str) -> _definitions.Workflow[Any, Any]:
        """Return the workflow with this name or alias, or raise ``UnknownWorkflowError``."""
        try:
            return self._workflows[name]
        except KeyError:
            raise _errors.UnknownWorkflowError(
                f"this engine has no workflow named {name!r}; known: "
                f"{sorted(self._workflows) or 'none'}. Add it to Engine(workflows=[...])"
            ) from None

    def _known(self, wf: _definitions.Workflow[Any, Any]) -> _definitions.Workflow[Any, Any]:
        if not isinstance(wf, _definitions.Workflow):
            raise _errors.DefinitionError(
                f"{wf!r} is not a workflow; decorate it with @fluxo.workflow and pass it in "
                "Engine(workflows=[...])"
            )
        registered = self._workflows.get(wf.name)
        if registered is None or registered.fn is not wf.fn:
            raise _errors.UnknownWorkflowError(
                f"workflow {wf.name!r} is not registered with this engine; add it to "
                "Engine(workflows=[...]) so workers can run it"
            )
        return wf

    # -- starting ------------------------------------------------------------------------

    def _create(
        self,
        wf: _definitions.Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        owner: str | None = None,
        lease_until: float | None = None,
        writer: _transactions.RunWriter | None = None,
        run_id: str | None = None,
    ) -> tuple[_history.RunInfo, bool]:
        data = self._check_start(wf, args, kwargs)
        run_id = run_id or wf.start_id or uuid.uuid4().hex
        now = self.clock()
        deadline = None if wf.start_timeout is None else now + wf.start_timeout
        queued = _queue_config.create_args(wf)
        if owner is not None:
            _queue_config.check_inline(wf, queued)
        observers = self.observers
        run, created = (writer or self.store).create_run(
            run_id,
            wf.name,
            data,
            now=now,
            owner=owner,
            lease_until=lease_until,
            deadline=deadline,
            headers=observers.headers(wf.name, run_id, None) if observers.active else None,
            **queued,
        )
        if created and observers.run_started:
            observers.emit(observers.run_started, _observers.told(run, "run_started", now, 0))
        if not created and wf.start_if_exists == "check":
            conflict = wf.input_conflict(writer or self.store, self.codec, run, data)
            if conflict is not None:
                raise conflict
        return run, created

    def _check_start(
        self, wf: _definitions.Workflow[Any, Any], args: Sequence[Any], kwargs: dict[str, Any]
    ) -> bytes:
        """Refuse what a start must refuse; return the encoded arguments."""
        self._check_open()
        wf = self._known(wf)
        if wf.start_detached:
            raise _errors.DefinitionError(
                f"{wf.name}.options(detached=True) is for child workflows started with "
                "fluxo.start_child() inside a workflow; a run started by the engine has no "
                "parent to detach from"
            )
        return wf.encode_input(self.codec, args, kwargs)

    def _start(
        self,
        workflow: _definitions.Workflow[P, R],
        args: Sequence[Any],
        kwargs: dict[str, Any],
        *,
        writer: _transactions.RunWriter | None = None,
        run_id: str | None = None,
        hint: str = "",
    ) -> RunHandle[R]:
        run, created = self._create(workflow, args, kwargs, writer=writer, run_id=run_id)
        log.debug("run %s of %s %s", run.id, run.workflow, "started" if created else "exists")
        return RunHandle(self, run.id, workflow.return_type, hint=hint)

    def in_transaction(self, connection: object) -> _transactions.InTransaction:
        """Start runs in your database transaction: they exist once it commits.

        ``connection`` is the transaction: a SQLAlchemy ``Connection`` or ``Session``
        (Flask-SQLAlchemy's ``db.session`` too), a Django connection, or a DB-API
        connection (sqlite3, psycopg, pymysql). The engine's store must be the SQL
        store in that same database. A run started so is written with your rows:
        workers see it once the transaction commits, and never if it rolls back.
        Outside a transaction, it is a plain start (docs/transactions.md has examples).

        Raises:
            DefinitionError: the store is not a SQL store, or not in that database.
        """
        return _transactions.InTransaction(self, connection)

    def on_commit(self, connection: object) -> _transactions.OnCommit:
        """Start runs once your transaction commits, on any store.

        ``connection``: a Django connection, a SQLAlchemy ``Session``, or a function
        that registers a callback to run after commit (``transaction.on_commit``).
        The workflow and arguments are checked at once and the handle names the
        run to come; nothing starts if the transaction rolls back. Use it when
        the store is not your app's database (``in_transaction`` is then not
        possible); a start that fails after the commit is logged as an error.
        """
        return _transactions.OnCommit(self, connection)

    def start(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> RunHandle[R]:
        """Start a run for a worker to execute, and return its handle at once.

        Idempotent on the run id (set with ``workflow.options(id=...)``): starting
        again with a taken id and the same arguments returns a handle to the
        existing run; other arguments raise ``RunIdConflictError`` naming them,
        unless the workflow was given ``.options(id=..., if_exists="return")``.
        The arguments are checked against the workflow's signature by type
        checkers and at run time. With ``Engine(transaction=...)``, a start made
        inside the transaction it finds joins it.
        """
        if self._transaction is not None:
            starter = self._transaction(self)
            if starter is not None:
                return starter.start(workflow, *args, **kwargs)
        return self._start(workflow, args, kwargs)

    def run(self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Start a run and execute it in this thread, returning its result.

        Like :meth:`start` it is idempotent on the run id (and refuses other
        arguments for a taken id the same way); if the run already exists it is
        not executed again here, its result is awaited. Timers and
        signal waits are recorded durably and waited out in this thread. Child
        workflows it starts (``fluxo.start_child``) are executed in threads of
        this process the same way, unless a worker takes them first. If this
        process dies mid-run, a worker takes it over when its lease expires (or,
        while it waits, when the wait is over).
        """
        owner = self.runner.inline_owner()
        now = self.clock()
        run, created = self._create(
            workflow, args, kwargs, owner=owner, lease_until=now + DEFAULT_LEASE
        )
        handle: RunHandle[R] = RunHandle(self, run.id, workflow.return_type)
        if not created:
            return handle.result()
        contexts: list[_executor.RunContext] = []
        outcome = self.runner.execute_inline(run.id, owner, contexts.append)
        if not contexts:
            return handle.result()  # its history did not load (HistoryCorruptError)
        context = contexts[-1]
        run_id = context.run_id
        if outcome is _executor.Outcome.COMPLETED:
            value: R = self.codec.decode(context.result or b"null", workflow.return_type)
            return value
        if outcome is _executor.Outcome.FAILED and context.error is not None:
            raise _payloads.workflow_error(run_id, context.error)
        if outcome is _executor.Outcome.CANCELLED:
            raise _payloads.cancelled_error(run_id, context.cancel_reason)
        if outcome is _executor.Outcome.BROKEN:
            raise _errors.StoreUnavailableError(
                f"run {run_id!r} stopped because the store failed ({context.store_error}); "
                "it is intact, and a worker resumes it from its history when its lease expires"
            ) from context.store_error
        return handle.result()  # another worker took it over: wait for that worker

    def handle(self, run_id: str) -> RunHandle[Any]:
        """Return a handle to an existing run (its result decodes by its workflow's type)."""
        run = self.get_run(run_id)
        wf = self._workflows.get(run.workflow)
        return RunHandle(self, run_id, wf.return_type if wf is not None else Any)

    # -- executing -----------------------------------------------------------------------

    def execute_claimed(
        self,
        run_id: str,
        owner: str,
        *,
        heartbeat: _leases.Heartbeat,
        hold_window: float = 0.0,
        context_hook: _runner.ContextHook | None = None,
        slots: _leases.HoldSlots | None = None,
    ) -> _executor.Outcome:
        """Execute, in this thread, a run whose lease ``owner`` holds, until it ends or stops.

        For tools and tests that drive one run by hand; workers and :meth:`run` use
        the engine's :attr:`runner`, whose ``execute_claimed`` this is.
        """
        return self.runner.execute_claimed(
            run_id,
            owner,
            heartbeat=heartbeat,
            hold_window=hold_window,
            context_hook=context_hook,
            slots=slots,
        )

    def worker(
        self,
        *,
        concurrency: int = 4,
        lease: float = DEFAULT_LEASE,
        idle_timeout: float = 1.0,
        shutdown_timeout: float = 30.0,
        worker_id: str | None = None,
        sticky: float = 5.0,
        dead_after: float = 2.0,
        queues: Iterable[str | _queue_config.Queue] | None = None,
    ) -> _worker.Worker:
        """Create a worker that claims and executes this engine's runs: a :class:`fluxo.Worker`.

        Run it with ``worker.run()`` (blocking, stops on SIGTERM/SIGINT), or in a
        background thread with ``worker.start()`` / ``worker.stop()`` or ``with``.
        Any number of workers in any number of processes can share one store. A
        wait of at most ``sticky`` seconds is held in a worker thread, so the run
        resumes without replay. When a worker stops beating for ``dead_after``
        seconds (its process died), the others resume its runs at once, without
        waiting for their ``lease``. It claims runs of ``queues`` (names; default:
        every queue this engine declares and ``"default"``), admitting them first.
        """
        return _worker.Worker(
            self,
            concurrency=concurrency,
            lease=lease,
            idle_timeout=idle_timeout,
            shutdown_timeout=shutdown_timeout,
            worker_id=worker_id,
            sticky=sticky,
            dead_after=dead_after,
            queues=queues,
        )

    # -- inspecting and steering ---------------------------------------------------------

    def get_run(self, run_id: str, *, follow: bool = True) -> _history.RunInfo:
        """The run's current record. Raises ``RunNotFoundError``.

        A run that went on with ``fluxo.continue_as_new`` is followed to the
        latest run of its chain, so ``get_run("poll")`` may return the record of
        run ``"poll~12"``; its ``id`` tells which. With ``follow=False`` the
        record of exactly ``run_id`` is returned (it is ``completed``, and its
        history ends with ``continued_as_new`` naming the next run).
        """
        self._check_open()
        _names.check_run_id(run_id)
        if not follow:
            return self.store.get_run(run_id)
        return self._latest(run_id)

    def _latest(self, run_id: str) -> _history.RunInfo:
        """The latest run of the chain ``run_id`` belongs to (see ``stores.latest_run``)."""
        return stores.latest_run(self.store, run_id)

    def list_runs(
        self,
        *,
        status: _history.RunStatus | str | Iterable[_history.RunStatus | str] | None = None,
        workflow: str
        | _definitions.Workflow[Any, Any]
        | Iterable[str | _definitions.Workflow[Any, Any]]
        | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
    ) -> list[_history.RunInfo]:
        """Up to ``limit`` runs matching every given filter, newest first.

        Args:
            status: one status or several (a run matches any of them).
            workflow: one workflow (a ``@workflow`` or a name) or several; a workflow
                matches under its name and its aliases.
            created_after: keep runs created at or after this time (an aware
                datetime, or seconds since the epoch).
            created_before: keep runs created before this time (excluded), so
                consecutive ranges list each run once.
            limit: the most runs returned.
            id_prefix: keep runs whose id starts with this text, case and all
                (``%``, ``_`` and ``*`` are plain characters); ``""`` keeps every run.
        """
        self._check_open()
        window = (created_after, created_before)
        return self.store.list_runs(**_filters.listing(status, workflow, window, limit, id_prefix))

    def count_runs(self) -> dict[tuple[str, _history.RunStatus], int]:
        """How many runs each workflow has in each status; one read (see ``Store.count_runs``)."""
        self._check_open()
        return self.store.count_runs()

    def purge(
        self,
        *,
        older_than: timedelta | datetime | float,
        status: _history.RunStatus | str | Iterable[_history.RunStatus | str] | None = None,
        workflow: str
        | _definitions.Workflow[Any, Any]
        | Iterable[str | _definitions.Workflow[Any, Any]]
        | None = None,
        batch: int = 1000,
        dry_run: bool = False,
    ) -> int:
        """Delete the runs that finished before a cutoff, with their histories and signals.

        Finished runs are otherwise kept for ever. ``older_than`` is required, so
        that nothing is purged by accident. The runs go in batches of ``batch``,
        each a short transaction of its own (a script per run on Redis), until
        none is left; returns how many went. Never deleted:

        * a run that has not finished;
        * a child run whose parent is active or failed (a failed run can be
          retried, and then reads its children): it goes once the parent ends
          otherwise, or is purged itself;
        * a run that continued as new, while the run it continued in exists: a
          chain goes from its latest run backwards, once that one has finished
          before the cutoff, so ``get_run(first_id)`` never follows a broken chain.
          With ``status``, a chain whose latest run goes keeps its earlier
          (completed) runs; its handle then raises ``RunNotFoundError``.

        Example:
            >>> engine.purge(older_than=timedelta(days=30))  # every finished run
            >>> engine.purge(older_than=timedelta(days=7), status="completed", workflow=poll)

        Args:
            older_than: how long ago a run must have finished: a ``timedelta`` or a
                number of seconds, counted back from now, or an aware ``datetime``
                before which it finished.
            status: only runs that ended with this status, or one of these
                (``completed``, ``failed``, ``cancelled``); by default any of them.
            workflow: only runs of this workflow (a ``@workflow``, with its aliases,
                or a name), or of one of these.
            batch: the most runs deleted in one transaction, 1 to 10,000.
            dry_run: delete nothing; return how many runs a first pass would delete
                (a finished chain counts its latest run only, since its earlier runs
                go after it).

        Raises:
            DefinitionError: an argument is unusable, or names a status that is not
                finished.
        """
        self._check_open()
        cutoff = _filters.purge_cutoff(older_than, self.clock())
        statuses = _filters.purge_statuses(status)
        workflows = None if workflow is None else _filters.workflow_names(workflow)
        _filters.check_batch(batch, MAX_BATCH)
        return _filters.purge(self.store, cutoff, statuses, workflows, batch, dry_run=dry_run)

    def get_event(
        self, run_id: str, key: str, *, timeout: timedelta | float | None = None, type: Any = Any
    ) -> Any:
        """The latest value the run's workflow set under ``key`` (``fluxo.set_event``).

        Waits until the workflow sets a first value, for up to ``timeout`` seconds
        (``None``: as long as it takes), woken by the store. A chain of runs
        (``fluxo.continue_as_new``) is one run here. The value is decoded as
        ``type`` (give the set value's class for a typed value; by default, plain JSON).

        Raises:
            EventTimeout: no value was set within ``timeout``.
            RunStateError: the run ended without setting ``key``.
            RunNotFoundError: no such run.
        """
        wait = _run_events.seconds(timeout, "get_event()")
        return self._events(run_id, key, type, "get_event").latest(wait)

    def watch_event(
        self, run_id: str, key: str, *, timeout: timedelta | float | None = None, type: Any = Any
    ) -> Iterator[Any]:
        """Every value the run's workflow sets under ``key``, oldest first, as it sets them.

        The values set before the call come first; the iteration ends once the run
        has ended and its last value was yielded. None is ever skipped: the values
        are read from the history. ``timeout`` bounds each wait for a next value
        (``EventTimeout``); see :meth:`get_event`.
        """
        wait = _run_events.seconds(timeout, "watch_event()")
        reader = self._events(run_id, key, type, "watch_event")
        self.store.get_run(run_id)  # RunNotFoundError now, not at the first value
        return reader.each(wait)

    def _events(self, run_id: str, key: str, type: Any, what: str) -> _run_events.EventReader:
        self._check_open()
        _names.check_run_id(run_id)
        _run_events.check_key(key, f"engine.{what}()")
        return _run_events.EventReader(self.store, self.codec, run_id, key, type)

    def history(self, run_id: str) -> list[_history.Event]:
        """The run's full history, oldest event first. Raises ``RunNotFoundError``."""
        self._check_open()
        _names.check_run_id(run_id)
        return list(self.store.load(run_id).events)

    def export_history(self, run_id: str, *, readable: bool = False) -> dict[str, Any]:
        """The run's history as a versioned JSON-ready document (docs/history-format.md).

        Every payload is kept exactly as stored, so the document replays byte for
        byte (``fluxo.testing.replay``, ``fluxo replay``). With ``readable=True``
        each payload that this engine's codec decodes is also given, decoded,
        under ``value``, for people to read; loading ignores ``value``.

        Example:
            >>> doc = engine.export_history("order-17")
            >>> Path("order-17.json").write_text(json.dumps(doc, indent=2))

        Raises:
            RunNotFoundError: no such run.
        """
        self._check_open()
        _names.check_run_id(run_id)
        state = self.store.load(run_id)
        return _history_file.to_document(state, readable_with=self.codec if readable else None)

    def cancel(self, run_id: str) -> _history.RunInfo:
        """Ask a run to stop.

        A run that has not begun ends ``cancelled`` at once, without running and
        without needing a worker. A running or waiting run stops at its next
        durable call with ``fluxo.Cancelled`` (its ``finally:`` blocks run, and may
        record cleanup steps) and ends ``cancelled``. For a chain of runs
        (``fluxo.continue_as_new``), the latest run of the chain is cancelled.

        Raises:
            RunStateError: the run already completed or failed (cancelling a
                cancelled run again is harmless).
            RunNotFoundError: no such run.
        """
        self._check_open()
        _names.check_run_id(run_id)
        return _cancelling.cancel(
            self.store, run_id, clock=self.clock, damage_error=self._damage_error
        )

    def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` with ``payload`` to a run.

        The signal is stored before the run is woken, and kept until the workflow
        consumes it with ``fluxo.wait_for_signal(name)``, even if it was sent
        before the workflow started waiting. Signals with one name are consumed
        in the order they were sent, each exactly once. For a chain of runs
        (``fluxo.continue_as_new``), the signal goes to the latest run of the
        chain; signals a run had not consumed when it continued stay with it.
        With ``Engine(transaction=...)``, a signal sent inside the transaction it
        finds is sent in it (or after its commit), as a start would be.

        Raises:
            RunNotFoundError: no such run.
            RunStateError: the run has finished; nothing would ever read the signal.
            EncodeError: the payload cannot be encoded.
        """
        if self._transaction is not None:
            starter = self._transaction(self)
            if starter is not None:
                return starter.signal(run_id, name, payload)
        return self._signal(run_id, name, payload)

    def _encode_signal(self, run_id: str, name: str, payload: Any) -> bytes:
        self._check_open()
        _names.check_run_id(run_id)
        _names.check_signal_name(name)
        try:
            return self.codec.encode(payload)
        except TypeError as exc:
            raise _errors.EncodeError(
                f"the payload of signal {name!r} cannot be encoded: {exc}; send JSON-friendly "
                "values (dataclasses, dicts, lists, str, numbers, datetimes...)"
            ) from exc

    def _signal(
        self,
        run_id: str,
        name: str,
        payload: Any,
        *,
        writer: _transactions.RunWriter | None = None,
    ) -> None:
        data = self._encode_signal(run_id, name, payload)
        sender = self.store if writer is None else writer
        latest = stores.latest_run(sender, run_id)
        while True:
            try:
                sender.send_signal(latest.id, name, data, now=self.clock())
                if self.observers.signal_sent:
                    event = _observers.told(latest, "signal_sent", self.clock(), name=name)
                    self.observers.emit(self.observers.signal_sent, event)
                return
            except _errors.RunStateError as exc:
                target, latest = latest.id, stores.latest_run(sender, latest.id)
                if latest.id != target:  # it continued as new meanwhile
                    continue
                if latest.damage is None:
                    raise
                raise _errors.damaged_run(latest.id, latest.damage, "signalled") from exc

    def retry(self, run_id: str) -> RunHandle[Any]:
        """Resume a failed or dead run from its history, for a worker to execute.

        For example after fixing code that no longer matched the history
        (``NondeterminismError``), or the cause of a step's final failure (attempted
        again with a fresh retry budget) or of a dead run's deaths. Raises
        ``RunStateError`` when it is neither (a cancelled run: ``resume``).
        """
        self._check_open()
        _names.check_run_id(run_id)
        _resuming.retry(self.store, run_id, now=self.clock)
        return self.handle(run_id)

    def resume(self, run_id: str) -> RunHandle[Any]:
        """Resume a cancelled run where its cancellation took it, if that is safe.

        Safe when the cancellation recorded nothing but itself and no deadline
        cancelled it; the rule is in docs/cancellation.md. A chain's latest run is
        resumed. Raises ``RunStateError`` saying why otherwise (and which
        ``fork`` re-runs it), or when the run is not cancelled.
        """
        self._check_open()
        _names.check_run_id(run_id)
        return self.handle(_resuming.resume(self.store, run_id, now=self.clock))

    def fork(self, run_id: str, *, from_position: int, id: str | None = None) -> RunHandle[Any]:
        """Start a new run that replays ``run_id``'s history before ``from_position``.

        The rest runs with today's code: an operator's reset. Idempotent on ``id``.
        What each position allows is in docs/changing-code.md, "Forking a run".
        """
        self._check_open()
        fork_id = _fork.fork(
            self.runner, self.lookup, run_id, from_position, id, lease=DEFAULT_LEASE
        )
        return self.handle(fork_id)

    def _damage_error(self, run_id: str, verb: str) -> _errors.RunStateError | None:
        return _resuming.damage_error(self.store, run_id, verb)

    def _wait_result(self, run_id: str, timeout: float | None, return_type: Any) -> Any:
        self._check_open()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            run_id = self._latest(run_id).id  # follow a chain of continue_as_new
            token = self.store.change_token(run_id)
            run = self._latest(run_id)
            if run.id != run_id:
                continue
            if run.status.is_terminal:
                return self._outcome(run, return_type)
            remaining = 30.0 if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise _errors.RunNotFinishedError(
                    f"run {run_id!r} is still {run.status.value} after {timeout}s; wait longer, "
                    "or check that a worker is running (engine.worker() or 'fluxo worker')"
                )
            self.store.wait_for_change(run_id, min(remaining, 30.0), since=token)

    def _outcome(self, run: _history.RunInfo, return_type: Any) -> Any:
        return _payloads.run_outcome(run, self.store.load(run.id).events, self.codec, return_type)


MAX_BATCH = _filters.MAX_BATCH
