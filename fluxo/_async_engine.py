"""AsyncEngine: the engine's operations for asyncio code, awaited without blocking the loop.

Found as ``fluxo.AsyncEngine``. It stands beside :class:`fluxo.Engine` the way
httpx's ``AsyncClient`` stands beside its ``Client``: the same operations under
the same names, each awaited. A web app written with FastAPI, Starlette or async
Django views starts, signals, cancels, lists and awaits runs with it::

    engine = fluxo.AsyncEngine("postgresql+psycopg://app@db/app", workflows=[checkout])
    handle = await engine.start(checkout.options(id="order-17"), "o-17", 4200)
    receipt = await handle.result(timeout=30)

Store calls run on a bounded pool of threads (``max_threads``), each in a copy of
the awaiting task's context (so what an OpenTelemetry observer records with a new
run is the request's trace). Waiting for results takes no thread per waiter: one
thread of the engine watches the store's changes for every pending
``result()`` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import functools
import logging
import threading
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Generic, ParamSpec, TypeVar

from fluxo import _definitions, _engine, _errors, _run_events, stores
from fluxo import history as _history

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

DEFAULT_MAX_THREADS = 8
"""The store calls an :class:`AsyncEngine` has in flight at once, by default."""

WATCH_SLICE = 0.25
"""Seconds the result watcher waits for a store change before it looks again."""

RETRY_AFTER = 1.0
"""Seconds the result watcher waits after the store failed before it reads again."""


class AsyncEngine:
    """Fluxo's engine for asyncio code: :class:`fluxo.Engine`'s operations, awaited.

    Give it what ``fluxo.Engine`` takes (a store URL or ``Store``, and the keyword
    arguments), or an ``Engine`` that sync code of the same process uses too.
    Its operations never block the event loop: each store call runs on one of
    ``max_threads`` threads of its own, in a copy of the calling task's context.

    It starts and steers runs; a worker executes them (``fluxo worker``, or
    ``engine.engine.worker()`` in a thread). ``await engine.run(...)`` executes a
    run in one of its threads, for as long as the run takes.

    Args:
        engine: a store URL, a ``Store``, or an ``Engine`` to share.
        max_threads: how many store calls may be in flight at once; more wait
            for a free thread.
        **options: ``fluxo.Engine``'s keyword arguments (``workflows=``,
            ``codec=``, ``observers=``...), when ``engine`` is not an Engine.

    Example:
        >>> async with fluxo.AsyncEngine("sqlite:///fluxo.db", workflows=[checkout]) as engine:
        ...     handle = await engine.start(checkout, "o-17", 4200)
        ...     await engine.signal(handle.id, "approved", True)
    """

    def __init__(
        self,
        engine: _engine.Engine | str | stores.Store,
        /,
        *,
        max_threads: int = DEFAULT_MAX_THREADS,
        **options: Any,
    ) -> None:
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise _errors.DefinitionError(
                f"AsyncEngine(max_threads=...) is a number of threads of 1 or more, not "
                f"{max_threads!r}"
            )
        if isinstance(engine, _engine.Engine):
            if options:
                raise _errors.DefinitionError(
                    f"AsyncEngine(engine, ...) shares an Engine as it is; the options "
                    f"{sorted(options)} belong to fluxo.Engine(...) when it is made"
                )
            self.engine = engine
            self._owns_engine = False
        else:
            if "workflows" not in options:
                raise _errors.DefinitionError(
                    "AsyncEngine(url) needs workflows=[...]: the workflows it starts and "
                    "whose results it decodes, as for fluxo.Engine"
                )
            self.engine = _engine.Engine(engine, **options)
            self._owns_engine = True
        self.max_threads = max_threads
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_threads, thread_name_prefix="fluxo-async"
        )
        self._results = _ResultWatch(self.engine)
        self._closed = False

    def __repr__(self) -> str:
        return f"<fluxo AsyncEngine of {self.engine!r}>"

    async def __aenter__(self) -> AsyncEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop watching for results, and close the engine if this AsyncEngine made it.

        Pending ``result()`` calls raise ``RunStateError``. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._results.close()
        if self._owns_engine:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)
        self._threads.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on one of the engine's threads, in a copy of this context."""
        if self._closed:
            raise _errors.RunStateError(
                "this AsyncEngine is closed; make a new one (or use it inside "
                "'async with fluxo.AsyncEngine(...)')"
            )
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    # -- starting and executing ------------------------------------------------------------

    async def start(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncRunHandle[R]:
        """Start a run for a worker to execute; see :meth:`fluxo.Engine.start`.

        If the awaiting task is cancelled while the store call is in flight, the
        start may still happen: starts are idempotent on the run id, so start
        again with the same id to find out.
        """
        handle = await self._call(self.engine.start, workflow, *args, **kwargs)
        return AsyncRunHandle(self, handle.id, workflow.return_type)

    async def run(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Start a run and execute it in one of this engine's threads; its result.

        See :meth:`fluxo.Engine.run`. The thread is taken for as long as the run
        executes, timers and signal waits included: for long runs, ``start`` them
        for a worker and await ``result()`` instead.
        """
        return await self._call(self.engine.run, workflow, *args, **kwargs)

    def handle(self, run_id: str, return_type: Any = Any) -> AsyncRunHandle[Any]:
        """A handle to an existing run, without reading the store.

        Its ``result()`` decodes the run's result as ``return_type`` (give the
        workflow's return annotation for a typed value; without it, plain JSON).
        """
        return AsyncRunHandle(self, run_id, return_type)

    async def retry(self, run_id: str) -> AsyncRunHandle[Any]:
        """Resume a failed or dead run from its history; see :meth:`fluxo.Engine.retry`."""
        handle = await self._call(self.engine.retry, run_id)
        return AsyncRunHandle(self, handle.id, handle._return_type)

    async def resume(self, run_id: str) -> AsyncRunHandle[Any]:
        """Resume a cancelled run where it is safe; see :meth:`fluxo.Engine.resume`."""
        handle = await self._call(self.engine.resume, run_id)
        return AsyncRunHandle(self, handle.id, handle._return_type)

    async def fork(
        self, run_id: str, *, from_position: int, id: str | None = None
    ) -> AsyncRunHandle[Any]:
        """Start a run replaying part of another's history; see :meth:`fluxo.Engine.fork`."""
        handle = await self._call(self.engine.fork, run_id, from_position=from_position, id=id)
        return AsyncRunHandle(self, handle.id, handle._return_type)

    # -- steering ------------------------------------------------------------------------

    async def signal(self, run_id: str, name: str, payload: Any = None) -> None:
        """Send a signal to a run; see :meth:`fluxo.Engine.signal`."""
        await self._call(self.engine.signal, run_id, name, payload)

    async def cancel(self, run_id: str) -> _history.RunInfo:
        """Ask a run to stop; see :meth:`fluxo.Engine.cancel`."""
        return await self._call(self.engine.cancel, run_id)

    # -- inspecting ----------------------------------------------------------------------

    async def get_run(self, run_id: str, *, follow: bool = True) -> _history.RunInfo:
        """The run's current record; see :meth:`fluxo.Engine.get_run`."""
        return await self._call(self.engine.get_run, run_id, follow=follow)

    async def list_runs(
        self,
        *,
        status: Any = None,
        workflow: Any = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
    ) -> list[_history.RunInfo]:
        """Up to ``limit`` runs matching every filter, newest first (see ``Engine.list_runs``)."""
        return await self._call(
            self.engine.list_runs,
            status=status,
            workflow=workflow,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            id_prefix=id_prefix,
        )

    async def count_runs(self) -> dict[tuple[str, _history.RunStatus], int]:
        """The runs in the store by workflow and status; see :meth:`fluxo.Engine.count_runs`."""
        return await self._call(self.engine.count_runs)

    async def history(self, run_id: str) -> list[_history.Event]:
        """The run's recorded history, oldest first; see :meth:`fluxo.Engine.history`."""
        return await self._call(self.engine.history, run_id)

    async def export_history(self, run_id: str, *, readable: bool = False) -> dict[str, Any]:
        """The run's history as a JSON-ready document; see :meth:`fluxo.Engine.export_history`."""
        return await self._call(self.engine.export_history, run_id, readable=readable)

    async def get_event(
        self, run_id: str, key: str, *, timeout: timedelta | float | None = None, type: Any = Any
    ) -> Any:
        """The latest value the run set under ``key``, waiting for the first.

        See :meth:`fluxo.Engine.get_event`. The wait takes one of this engine's
        threads a second at a time, so a cancelled wait gives it back within one.
        """
        wait = _run_events.seconds(timeout, "get_event()")
        reader = await self._events(run_id, key, type, "get_event")
        return await reader.latest(wait)

    async def watch_event(
        self, run_id: str, key: str, *, timeout: timedelta | float | None = None, type: Any = Any
    ) -> AsyncIterator[Any]:
        """Every value the run sets under ``key``, oldest first, as it sets them.

        See :meth:`fluxo.Engine.watch_event`; each wait is as :meth:`get_event`'s.
        """
        wait = _run_events.seconds(timeout, "watch_event()")
        reader = await self._events(run_id, key, type, "watch_event")
        await self._call(self.engine.store.get_run, run_id)  # RunNotFoundError before any value
        async for value in reader.each(wait):
            yield value

    async def _events(
        self, run_id: str, key: str, type: Any, what: str
    ) -> _run_events.AsyncEventReader:
        reader = await self._call(self.engine._events, run_id, key, type, what)
        return _run_events.AsyncEventReader(reader, self.engine.store, self._call)

    # -- results -------------------------------------------------------------------------

    async def _result(self, run_id: str, timeout: float | None, return_type: Any) -> Any:
        if timeout is not None and (isinstance(timeout, bool) or timeout < 0):
            raise ValueError(
                f"result(timeout=...) is None or seconds of 0 or more, not {timeout!r}"
            )
        run = await self._call(self.engine._latest, run_id)
        if not run.status.is_terminal:
            waiting = self._results.watch(run.id, asyncio.get_running_loop())
            try:
                run = await asyncio.wait_for(asyncio.shield(waiting), timeout)
            except asyncio.TimeoutError:  # (the builtin TimeoutError from Python 3.11 on)
                raise _errors.RunNotFinishedError(
                    f"run {run_id!r} is still running after {timeout}s; wait longer, or "
                    "check that a worker is running (engine.worker() or 'fluxo worker')"
                ) from None
            finally:
                if not waiting.done():  # (a settled wait was taken off by the watcher)
                    self._results.forget(waiting)
        return await self._call(self.engine._outcome, run, return_type)


class AsyncRunHandle(Generic[R]):
    """A reference to one run, for asyncio code: its id, and its result awaited.

    Made by :meth:`AsyncEngine.start`; like :class:`fluxo.RunHandle`, it follows
    a chain of ``continue_as_new`` to its latest run.
    """

    def __init__(self, engine: AsyncEngine, run_id: str, return_type: Any = Any) -> None:
        self.engine = engine
        self.id = run_id
        self._return_type = return_type

    def __repr__(self) -> str:
        return f"AsyncRunHandle({self.id!r})"

    async def status(self) -> _history.RunStatus:
        """The current status of the run (of the latest run of its chain)."""
        run = await self.engine.get_run(self.id)
        return run.status

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the run to end and return its result, without blocking the loop.

        Woken by the store when the run changes. Cancelling the awaiting task
        stops the wait, not the run.

        Raises:
            WorkflowFailedError: the run failed.
            NondeterminismError: the run failed because its code no longer matched
                its history.
            WorkflowCancelledError: the run was cancelled.
            RunNotFinishedError: ``timeout`` seconds passed first.
            RunNotFoundError: there is no such run.
        """
        value: R = await self.engine._result(self.id, timeout, self._return_type)
        return value

    async def cancel(self) -> _history.RunInfo:
        """Ask the run to stop; see :meth:`fluxo.Engine.cancel`."""
        return await self.engine.cancel(self.id)


class _ResultWatch:
    """One thread that waits on the store for every pending ``result()`` of an AsyncEngine.

    Each wait is a future of the awaiting loop, resolved (thread-safely) with the
    run's record once the latest run of its chain has ended. The thread reads all
    the pending runs in one ``get_runs`` call, then sleeps until the store says a
    run changed (or :data:`WATCH_SLICE` passes, for waits registered meanwhile).
    """

    def __init__(self, engine: _engine.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._waits: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]]] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._added = threading.Event()

    def watch(self, run_id: str, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A future of ``loop`` that gets the record of ``run_id``'s chain once it ended."""
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            if self._closed:
                future.set_exception(_closed())
                return future
            self._waits.setdefault(run_id, []).append((loop, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fluxo-async-results", daemon=True
                )
                self._thread.start()
        self._added.set()
        return future

    def forget(self, future: asyncio.Future[Any]) -> None:
        """Stop watching for ``future`` (its waiter left: done, timed out or cancelled)."""
        with self._lock:
            for key, waits in list(self._waits.items()):
                kept = [(loop, f) for loop, f in waits if f is not future]
                if kept:
                    self._waits[key] = kept
                else:
                    del self._waits[key]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            waits = [w for found in self._waits.values() for w in found]
            self._waits.clear()
        self._added.set()
        for loop, future in waits:
            _settle(loop, future, None, _closed())

    def _run(self) -> None:
        store = self._engine.store
        failing = False
        while True:
            with self._lock:
                if self._closed:
                    return
                pending = list(self._waits)
            if not pending:
                self._added.wait(WATCH_SLICE)
                self._added.clear()
                continue
            self._added.clear()
            token = store.change_token(None)
            try:
                self._look(store, pending)
                failing = False
            except _errors.StoreError as exc:
                if not failing:
                    log.warning("waiting for run results: the store failed (%s); trying again", exc)
                failing = True
                self._added.wait(RETRY_AFTER)
                continue
            store.wait_for_change(None, WATCH_SLICE, since=token)

    def _look(self, store: stores.Store, pending: list[str]) -> None:
        """Read the pending runs, and settle the waits of those that ended."""
        found = store.get_runs(pending)
        for run_id in pending:
            run = found.get(run_id)
            error: BaseException | None = None
            if run is None:
                error = _errors.RunNotFoundError(run_id)
            elif not run.status.is_terminal:
                continue
            elif run.status is _history.RunStatus.COMPLETED:
                run = stores.latest_run(store, run_id)  # it may have continued as new
                if not run.status.is_terminal:
                    self._move(run_id, run.id)
                    continue
            with self._lock:
                waits = self._waits.pop(run_id, [])
            for loop, future in waits:
                _settle(loop, future, run, error)

    def _move(self, old: str, new: str) -> None:
        """Watch the next run of a chain in place of the one that continued as new."""
        with self._lock:
            moved = self._waits.pop(old, [])
            self._waits.setdefault(new, []).extend(moved)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    run: _history.RunInfo | None,
    error: BaseException | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(run)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle)


def _closed() -> _errors.RunStateError:
    return _errors.RunStateError(
        "the AsyncEngine was closed while a result was awaited; await results before "
        "leaving 'async with fluxo.AsyncEngine(...)'"
    )
