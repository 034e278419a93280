"""Live refresh: one thread watches the store, and every open page hears of changes.

The thread blocks in ``Store.wait_for_change``, which the stores answer by push where
they can (PostgreSQL ``LISTEN``, Redis pub/sub, MongoDB change streams, SQLite
nudges) and by a cheap poll elsewhere. Each change bumps a generation number; the
pages' streams (:class:`PageStream`) wait for the number to move, then tell the
browser, which fetches the part of the page that shows data again.

A busy store changes all the time, so the streams tell a browser at most once per
``min_interval``, and a run page only when that run's record changed. A run page names
the version of the record it shows (``shown``): a change made between the page and its
stream, a run completing just after the page was read, is told as soon as the stream opens.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fluxo import _errors, stores

log = logging.getLogger(__name__)

PING_EVERY = 15.0
"""Seconds between keep-alive comments on a quiet stream."""
STREAM_LIFETIME = 300.0
"""A stream ends after this long; the browser reconnects (frees a stuck WSGI thread)."""
CHANGE = b"event: change\ndata: {}\n\n"
"""What a stream sends when the page's data may have moved."""


class Changes:
    """The generation counter of the store's changes, and the thread that moves it."""

    def __init__(self, store: stores.Store, *, ended: Callable[[], bool] = lambda: False) -> None:
        self._store = store
        self._ended = ended
        self._cond = threading.Condition()
        self._generation = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether watching stopped: :meth:`close`, or the engine was closed."""
        return self._closed

    @property
    def generation(self) -> int:
        """The number of changes seen (starts the watching thread)."""
        self._start()
        return self._generation

    def _start(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(
                    target=self._watch, name="fluxo-ui-changes", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        failing = False
        delay = 1.0
        token: object = None
        while not self._closed:
            if self._ended():  # the engine was closed: its store answers every wait at once
                self.close()
                return
            try:
                if token is None:
                    token = self._store.change_token(None)
                changed = self._store.wait_for_change(None, PING_EVERY, since=token)
                if changed:
                    # The next wait starts from here, before the pages are told: a change
                    # made while they read is one that next wait sees. A quiet wait keeps
                    # its mark: a change made as it ended is one the next wait sees too.
                    token = self._store.change_token(None)
            except Exception as exc:  # a store's own error or a driver's: live refresh waits
                if not failing:
                    log.warning(
                        "the dashboard cannot watch the store for changes (open pages stop "
                        "refreshing until it can): %s",
                        exc,
                        exc_info=not isinstance(exc, _errors.FluxoError),
                    )
                failing, token = True, None
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if failing:
                log.info("the dashboard watches the store for changes again")
                failing, delay = False, 1.0
            if changed:
                self._bump()

    def _bump(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, set()
        for loop, future in waiters:
            loop.call_soon_threadsafe(_settle, future)

    def wait(self, generation: int, timeout: float) -> int:
        """Block until the generation passes ``generation`` or ``timeout``; return it."""
        self._start()
        with self._cond:
            self._cond.wait_for(lambda: self._generation != generation or self._closed, timeout)
            return self._generation

    async def wait_async(self, generation: int, timeout: float) -> int:
        """:meth:`wait` for an event loop: awaits instead of blocking a thread."""
        self._start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._cond:
            if self._generation != generation or self._closed:
                return self._generation
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiters.discard(entry)
        return self._generation

    def close(self) -> None:
        """Stop watching (the thread ends at its next wake-up) and release every wait."""
        self._closed = True
        self._bump()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PageStream:
    """The Server-Sent Events of one open page: ``change`` when its data may have moved.

    ``version`` reads what the page shows cheaply (a run's record), or is ``None`` for
    the runs list, which any change may touch; it runs in the calling thread (WSGI)
    or in ``executor`` (ASGI). ``shown`` is the version the page was made from, when the
    page tells it: a stream that opens on another version tells the page at once.
    """

    status = 200

    def __init__(
        self,
        changes: Changes,
        version: Callable[[], object] | None,
        *,
        shown: object = None,
        min_interval: float = 1.0,
        lifetime: float = STREAM_LIFETIME,
        run_blocking: Callable[[Callable[[], object]], Any] | None = None,
    ) -> None:
        self.headers = [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-store"),
            ("x-accel-buffering", "no"),
        ]
        self._changes = changes
        self._version = version
        self._shown = shown
        self._min_interval = min_interval
        self._lifetime = lifetime
        self._run_blocking = run_blocking

    def chunks(self) -> Iterator[bytes]:
        """The stream for a WSGI server: each wait blocks this thread."""
        yield b"retry: 3000\n\n"
        started = time.monotonic()
        generation = self._changes.generation
        seen = self._read()
        if self._moved_since_shown(seen):
            yield CHANGE
            time.sleep(self._min_interval)
        while time.monotonic() - started < self._lifetime:
            now = self._changes.wait(generation, PING_EVERY)
            if self._changes.closed:  # the dashboard was closed: the page reconnects
                return
            if now == generation:
                yield b": ping\n\n"
                continue
            generation = now
            current = self._read()
            if self._version is None or current != seen:
                seen = current
                yield CHANGE
            # At most one reading per interval, however busy the store (its changes
            # meanwhile move the generation, so the next wait returns at once).
            time.sleep(self._min_interval)

    async def achunks(self) -> AsyncIterator[bytes]:
        """The stream for an ASGI server: waits are awaited; reads run in the executor."""
        yield b"retry: 3000\n\n"
        started = time.monotonic()
        generation = self._changes.generation
        seen = await self._aread()
        if self._moved_since_shown(seen):
            yield CHANGE
            await asyncio.sleep(self._min_interval)
        while time.monotonic() - started < self._lifetime:
            now = await self._changes.wait_async(generation, PING_EVERY)
            if self._changes.closed:  # the dashboard was closed: the page reconnects
                return
            if now == generation:
                yield b": ping\n\n"
                continue
            generation = now
            current = await self._aread()
            if self._version is None or current != seen:
                seen = current
                yield CHANGE
            # At most one reading per interval, however busy the store (its changes
            # meanwhile move the generation, so the next wait returns at once).
            await asyncio.sleep(self._min_interval)

    def _moved_since_shown(self, current: object) -> bool:
        """Whether the page's data changed between the page and this stream."""
        return self._version is not None and self._shown is not None and current != self._shown

    def _read(self) -> object:
        if self._version is None:
            return None
        try:
            return self._version()
        except _errors.FluxoError as exc:  # the page says so when it reloads
            return repr(exc)

    async def _aread(self) -> object:
        if self._version is None or self._run_blocking is None:
            return self._read()
        result: object = await self._run_blocking(self._read)
        return result
