"""Async workflows and steps (``async def``): the event loops and threads they run on.

An async workflow's execution runs its coroutine on an event loop of its own, in
the thread that executes the run (a worker's, or ``engine.run``'s), on the replay
core that sync workflows use.

A step call (``charge(x)``) returns an awaitable of its outcome and joins the
execution's :class:`StepBatch`: the step calls made since the loop last ran out
of work. The batch is made when the loop next runs its callbacks, or before any
other durable call: a call alone as a step, two or more (``asyncio.gather``, a
``TaskGroup``) as one parallel block, whose branches run at once. Every other
durable call (a timer, a signal wait, a child) is made when it is called. The
loop runs nothing else of the workflow while a batch or a call is made, and
settles their awaitables in call order, so a replay, which meets the same calls
in the same order, forms the same batches whatever order their steps finished
in live. A call whose awaiter is cancelled before its batch is made (a
``TaskGroup`` that a failing task aborts) is withdrawn, on every replay alike.

An async step's coroutine runs on Fluxo's step loop: one event loop thread per
process, shared by every async step, so a client a step module creates (an
``httpx.AsyncClient``) stays bound to one loop. A sync step called by an async
workflow (``await charge.call_async(x)``) runs on a bounded pool of threads,
never on the workflow's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

from fluxo import _runtime

T = TypeVar("T")
C = TypeVar("C")


class Overdue(Exception):
    """An attempt outlived its ``timeout=`` (see :func:`run_on_step_loop`)."""


class CancelledInside(Exception):
    """An async step's coroutine raised ``asyncio.CancelledError`` of its own accord.

    Not its ``timeout=`` (that is :class:`Overdue`): something it awaited was
    cancelled, and a failed attempt is what the step's retry policy judges.
    """


class _Exiting(Exception):
    """Carries an async step's ``KeyboardInterrupt`` or ``SystemExit`` off the step loop."""

    def __init__(self, exiting: BaseException) -> None:
        super().__init__(exiting)
        self.exiting = exiting


STEP_THREADS = 32
"""Threads that run the sync steps of async workflows, per process."""


class _Shared:
    """The step loop and step threads of this process (made on first use, reset in a fork)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.threads: concurrent.futures.ThreadPoolExecutor | None = None

    def forget(self) -> None:
        """In a forked child: the parent's loop thread and pool threads are not here."""
        self.lock = threading.Lock()
        self.loop = None
        self.threads = None


_shared = _Shared()
os.register_at_fork(after_in_child=_shared.forget)


def step_loop() -> asyncio.AbstractEventLoop:
    """Fluxo's step loop, running in a daemon thread of its own (started on first use)."""
    loop = _shared.loop
    if loop is not None:
        return loop
    with _shared.lock:
        if _shared.loop is None:
            made = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(made)
                made.call_soon(ready.set)
                made.run_forever()

            threading.Thread(target=serve, name="fluxo-async-steps", daemon=True).start()
            ready.wait()
            _shared.loop = made
        return _shared.loop


def step_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The pool that runs the sync steps of async workflows."""
    with _shared.lock:
        if _shared.threads is None:
            _shared.threads = concurrent.futures.ThreadPoolExecutor(
                STEP_THREADS, thread_name_prefix="fluxo-step"
            )
        return _shared.threads


def run_on_step_loop(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable`` on the step loop, in a copy of this thread's context; its result.

    Raises :class:`Overdue` (after cancelling it) when ``timeout`` seconds pass first,
    and :class:`CancelledInside` when it raises ``asyncio.CancelledError`` itself.
    """
    loop = step_loop()
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Future[T]] = []

    overdue = threading.Event()  # set before the task is cancelled for its timeout

    async def wrapped() -> T:
        try:
            return await awaitable
        except asyncio.CancelledError:
            if overdue.is_set():
                raise
            raise CancelledInside() from None
        except (KeyboardInterrupt, SystemExit) as exc:
            # asyncio raises these out of the loop, which would end the step loop of
            # every step in the process: the caller raises them, as for a sync step.
            raise _Exiting(exc) from None

    def start() -> None:
        task = context.run(loop.create_task, wrapped())  # the task takes this context
        tasks.append(task)

        def settle(finished: asyncio.Future[T]) -> None:
            if finished.cancelled():
                if inspect.iscoroutine(awaitable):
                    awaitable.close()  # cancelled before it began: no "never awaited"
                done.set_exception(Overdue())
                return
            error = finished.exception()
            if isinstance(error, _Exiting):
                error = error.exiting
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(finished.result())

        task.add_done_callback(settle)

    loop.call_soon_threadsafe(start)
    try:
        return done.result(timeout)
    except concurrent.futures.TimeoutError:
        overdue.set()
        loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
        raise Overdue() from None


def run_on_thread(fn: Callable[[], T], timeout: float | None) -> T:
    """``fn()`` on the step threads, in a copy of this thread's context; its result."""
    context = contextvars.copy_context()
    future = step_threads().submit(context.run, fn)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()  # still queued (every thread busy): it must never run late
        raise Overdue() from None


def run_workflow(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an async workflow's coroutine to its end on a new event loop of this thread.

    What it raises comes out as raised, Fluxo's control flow (a ``BaseException``)
    included. Tasks it leaves behind are cancelled, as ``asyncio.run`` does.
    """
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(_report)
    try:
        return loop.run_until_complete(coroutine)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def _report(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The workflow loop's exception handler: a run unwinding is no error to report.

    A run that unwinds (a suspension, a restart, a shutdown) raises it to every
    awaiter of a batch, and a task nobody awaits any more (``as_completed``,
    ``asyncio.wait``) would be reported as "exception was never retrieved". A
    ``fluxo.Cancelled`` is still reported: delivered once, to a task nobody awaits,
    it may be lost to the run.
    """
    error = context.get("exception")
    if isinstance(error, _runtime.ControlFlow) and not isinstance(error, _runtime.Cancelled):
        return
    loop.default_exception_handler(context)


Outcome = tuple[Any, "BaseException | None"]
"""A call's value, or the exception its awaiter raises."""


class StepBatch(Generic[C]):
    """The step calls an async workflow made that are not made yet (one per execution).

    Args:
        loop: the workflow's event loop.
        make: makes the calls, in order, and gives each one's outcome; what it raises
            (Fluxo's control flow) is raised to every awaiter of the batch.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, make: Callable[[list[C]], list[Outcome]]
    ) -> None:
        self.loop = loop
        self._make = make
        self.waiting: list[tuple[C, asyncio.Future[Any]]] = []

    def add(self, call: C) -> Coroutine[Any, Any, Any]:
        """Join the batch: made with the others when the loop next runs its callbacks."""
        future = self.loop.create_future()
        self.waiting.append((call, future))
        if len(self.waiting) == 1:
            self.loop.call_soon(self.flush)
        return CallAwaitable(future)

    def flush(self) -> None:
        """Make the waiting calls now and settle their awaitables, in call order.

        A call whose awaiter was cancelled meanwhile is withdrawn, never made: the
        loop cancels it at the same point on every replay.
        """
        waiting = [(call, future) for call, future in self.waiting if not future.cancelled()]
        self.waiting = []
        if not waiting:
            return
        exiting: BaseException | None = None
        try:
            outcomes = self._make([call for call, _ in waiting])
        except BaseException as exc:  # control flow: raised where each call is awaited
            outcomes = [(None, exc)] * len(waiting)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                exiting = exc
        for (_, future), (value, error) in zip(waiting, outcomes, strict=True):
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
                future.exception()  # raised where awaited; no "never retrieved" if not
        if exiting is not None:
            raise exiting  # here too: a call nobody awaits must not swallow it


class CallAwaitable(Coroutine[Any, Any, T]):
    """What a durable call of an async workflow returns: a coroutine of its outcome.

    A coroutine, so ``asyncio.create_task`` and ``TaskGroup`` take it; but one that
    says nothing if it is never awaited (the call is made all the same, and a run
    that unwinds leaves such awaitables behind on every replay), and that gives its
    outcome again when awaited again, as a future does.
    """

    __slots__ = ("_error", "_future", "_steps", "_value")

    def __init__(
        self,
        future: asyncio.Future[T] | None = None,
        value: Any = None,
        error: BaseException | None = None,
    ) -> None:
        self._future = future
        self._value = value
        self._error = error
        self._steps: Generator[Any, None, T] | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._outcome()  # afresh: awaited again, it gives its outcome again

    def _started(self) -> Generator[Any, None, T]:
        if self._steps is None:
            self._steps = self._outcome()
        return self._steps

    def _outcome(self) -> Generator[Any, None, T]:
        if self._future is not None:
            return (yield from self._future.__await__())
        if self._error is not None:
            raise self._error
        made: T = self._value
        return made

    def send(self, value: None) -> Any:
        return self._started().send(value)

    def throw(  # type: ignore[override]
        self, typ: Any, val: BaseException | None = None, tb: Any = None
    ) -> Any:
        return self._started().throw(val if val is not None else typ)

    def close(self) -> None:
        if self._steps is not None:
            self._steps.close()


def outcome_of(call: Callable[[], T]) -> Coroutine[Any, Any, T]:
    """Make a durable call now, and return a coroutine of its outcome to await.

    Awaiting it gives the call's value or raises what the call raised (a step's
    ``StepError``, or Fluxo's control flow): an exception surfaces where the
    workflow awaits, as it would for a task, even though the call was made when
    it was called.
    """
    try:
        value = call()
    except BaseException as exc:  # control flow too: re-raised where it is awaited
        return CallAwaitable(error=exc)
    return CallAwaitable(value=value)
