"""Async workflows and steps (``async def``): the event loops and threads they run on.

An async workflow's execution runs its coroutine on an event loop of its own, in
the thread that executes the run (a worker's, or ``engine.run``'s). Its durable
calls are made when they are called, in that order, one at a time, on the replay
core that sync workflows use: ``charge(x)`` records (or replays) the step at once
and returns an awaitable of its outcome. So any interleaving of tasks that the
workflow's code makes replays the same, and a forced replay agrees with the live
run.

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
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


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
        return _settled(None, exc)
    return _settled(value, None)


async def _settled(value: Any, error: BaseException | None) -> Any:
    if error is not None:
        raise error
    return value
