"""How the MongoDB store notices changes, for ``change_token`` and ``wait_for_change``.

The stores of one process on one database share a change feed, so a write
through any of them wakes the waiters of all at once. Other processes' writes
arrive through the ``runs`` collection's change stream, followed by a thread
started on the first wait; a server without change streams (a standalone
``mongod``) refuses it, and waiters then find changes by comparing a fingerprint
of the data every :data:`POLL_INTERVAL`, which they do in any case.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Container
from contextlib import AbstractContextManager
from typing import Final

from fluxo.stores import _changes
from fluxo.stores.mongo import _documents, _driver

Doc = _documents.Doc

POLL_INTERVAL: Final = 1.0
"""How often ``wait_for_change`` looks for changes made by other processes."""

_feeds_lock = threading.Lock()
_feeds: weakref.WeakValueDictionary[tuple[str, str], _changes.ChangeFeed] = (
    weakref.WeakValueDictionary()
)


def feed_for(key: tuple[str, str]) -> _changes.ChangeFeed:
    """The change feed of one database (``(host part of the URL, name)``) in this process."""
    with _feeds_lock:
        found = _feeds.get(key)
        if found is None:
            found = _feeds[key] = _changes.ChangeFeed()
        return found


class Watcher:
    """The waiting of one MongoDB store: its database's feed, a change stream, a poll.

    Args:
        runs: the ``runs`` collection.
        feed: the database's feed (:func:`feed_for`).
        name: the name of the change stream's thread.
        closed: tells whether the store is closed.
        op: the store's guard around driver calls (closed check, error translation).
    """

    def __init__(
        self,
        runs: _driver.Collection[Doc],
        feed: _changes.ChangeFeed,
        name: str,
        closed: Callable[[], bool],
        op: Callable[[], AbstractContextManager[None]],
    ) -> None:
        self._runs = runs
        self._feed = feed
        self._name = name
        self._closed = closed
        self._op = op
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def changed(self, run_id: str | None = None) -> None:
        """Wake the waiters of every store of this process on the database (of ``run_id``)."""
        self._feed.changed(run_id)

    def token(self, run_id: str | None) -> _changes.Token:
        """See :meth:`fluxo.stores.Store.change_token`."""
        self._start()
        version = self._feed.version
        if self._closed():
            return _changes.Token(version, None)
        with self._op():
            return _changes.Token(version, self._fingerprint(run_id))

    def wait(
        self, run_id: str | None, timeout: float, since: object, *, ignoring: Container[str] = ()
    ) -> bool:
        """See :meth:`fluxo.stores.Store.wait_for_change`."""
        self._start()
        deadline = time.monotonic() + max(timeout, 0.0)
        version = self._feed.since(since)
        if self._closed():
            return True
        with self._op():
            fingerprint = self._fingerprint(run_id)
        if isinstance(since, _changes.Token):
            if fingerprint != since.mark:
                return True
            fingerprint = since.mark
        if deadline <= time.monotonic():
            return False

        def poll() -> bool:
            with self._op():
                return self._fingerprint(run_id) != fingerprint

        return self._feed.wait_polling(
            version, deadline, poll, POLL_INTERVAL, run_id, ignoring=ignoring
        )

    def _fingerprint(self, run_id: str | None) -> object:
        """A cheap summary of the data that changes whenever a run does."""
        if run_id is not None:
            doc = self._runs.find_one({"_id": run_id}, _documents.INFO_PROJECTION)
            return None if doc is None else tuple(sorted(doc.items()))
        latest = self._runs.find_one({}, {"updated_at": 1}, sort=[("updated_at", -1)])
        count = self._runs.estimated_document_count()
        return (count, None if latest is None else (latest["_id"], latest["updated_at"]))

    def _start(self) -> None:
        """Start following the ``runs`` change stream, if not yet (see :meth:`_follow`)."""
        if self._thread is not None or self._closed():
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._follow, name=self._name, daemon=True)
                self._thread.start()

    def _follow(self) -> None:
        """Turn the changes other processes make into wake-ups of this process's waiters.

        Every write to a run's document is a change the contract may wake a waiter
        for, so following the ``runs`` collection's change stream is enough. A
        server without change streams (a standalone ``mongod``) refuses the watch:
        waiters then rely on the poll alone.
        """
        try:
            with self._runs.watch(max_await_time_ms=500) as stream:
                while not self._closed() and stream.alive:
                    change = stream.try_next()
                    if change is not None:
                        key = change.get("documentKey") or {}
                        run_id = key.get("_id")
                        self._feed.changed(run_id if isinstance(run_id, str) else None)
        except Exception:  # closed underneath us, or no change streams: the poll remains
            return
