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
in live.

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
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")


class Overdue(Exception):
    """An attempt outlived its ``timeout=`` (see :func:`run_on_step_loop`)."""


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

    Raises :class:`Overdue` (after cancelling it) when ``timeout`` seconds pass first.
    """
    loop = step_loop()
    context = contextvars.copy_context()
    done: concurrent.futures.Future[T] = concurrent.futures.Future()
    tasks: list[asyncio.Future[T]] = []

    async def wrapped() -> T:
        return await awaitable

    def start() -> None:
        task = context.run(loop.create_task, wrapped())  # the task takes this context
        tasks.append(task)

        def settle(finished: asyncio.Future[T]) -> None:
            if finished.cancelled():
                done.set_exception(Overdue())
                return
            error = finished.exception()
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(finished.result())

        task.add_done_callback(settle)

    loop.call_soon_threadsafe(start)
    try:
        return done.result(timeout)
    except concurrent.futures.TimeoutError:
        loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])
        raise Overdue() from None


def run_on_thread(fn: Callable[[], T], timeout: float | None) -> T:
    """``fn()`` on the step threads, in a copy of this thread's context; its result."""
    context = contextvars.copy_context()
    future = step_threads().submit(context.run, fn)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        raise Overdue() from None


def run_workflow(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an async workflow's coroutine to its end on a new event loop of this thread.

    What it raises comes out as raised, Fluxo's control flow (a ``BaseException``)
    included. Tasks it leaves behind are cancelled, as ``asyncio.run`` does.
    """
    loop = asyncio.new_event_loop()
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
        """Make the waiting calls now and settle their awaitables, in call order."""
        waiting, self.waiting = self.waiting, []
        if not waiting:
            return
        try:
            outcomes = self._make([call for call, _ in waiting])
        except BaseException as exc:  # control flow: raised where each call is awaited
            outcomes = [(None, exc)] * len(waiting)
        for (_, future), (value, error) in zip(waiting, outcomes, strict=True):
            if future.cancelled():
                continue  # made and recorded all the same: a replay makes it too
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
                if not isinstance(error, Exception):
                    future.exception()  # control flow: no "never retrieved" if unawaited


class CallAwaitable(Coroutine[Any, Any, T]):
    """What a durable call of an async workflow returns: a coroutine of its outcome.

    A coroutine, so ``asyncio.create_task`` and ``TaskGroup`` take it; but one that
    says nothing if it is never awaited (the call is made all the same, and a run
    that unwinds leaves such awaitables behind on every replay).
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
        return self._started()

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
