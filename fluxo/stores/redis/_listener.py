"""The Redis store's wake source: a thread subscribed to the change channel.

Every script that changes a run's status publishes the run id on
``P:changes`` (on a cluster, a publish reaches every node). One listener thread
per store, started by the first ``change_token`` or ``wait_for_change``,
subscribes to it and reports every message to the store's change feed, so writes
from any process and machine wake this process's waiters.
"""

from __future__ import annotations

import threading
import uuid
from contextlib import suppress
from typing import Any, Final

from fluxo.stores import _changes
from fluxo.stores.redis import _connection

SUBSCRIBE_WAIT: Final = 5.0
"""How long the first waiter waits for the subscription to hold."""


class Listener:
    """The thread that turns the change channel's messages into wake-ups.

    It runs until the feed closes. While the server cannot be reached it retries
    every second, and it wakes every waiter once after an outage: messages may
    have been missed meanwhile (a spurious wake-up is allowed).

    Args:
        conn: the store's connection.
        channel: the change channel.
        feed: the store's change feed.
        name: the thread's name.
    """

    def __init__(
        self, conn: _connection.Connection, channel: str, feed: _changes.ChangeFeed, name: str
    ) -> None:
        self._conn = conn
        self._channel = channel
        self._feed = feed
        self._name = name
        self._stop_message = f"stop:{uuid.uuid4().hex}".encode()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._subscribed = threading.Event()

    def start(self) -> None:
        """Subscribe (once) and wait until the subscription holds (or it failed)."""
        with self._lock:
            if self._thread is None and not self._feed.closed:
                self._thread = threading.Thread(target=self._listen, name=self._name, daemon=True)
                self._thread.start()
        self._subscribed.wait(SUBSCRIBE_WAIT)

    def stop(self) -> None:
        """Make the thread leave at once, once the feed is closed, and wait for it."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            with suppress(*_connection.DRIVER_ERRORS):
                self._conn.publish(self._channel, self._stop_message)
            thread.join(3.0)

    def _listen(self) -> None:
        outage = False
        while not self._feed.closed:
            pubsub: Any = None
            try:
                pubsub = self._conn.pubsub(outage)
                pubsub.subscribe(self._channel)
                while not self._feed.closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        outage = False
                        # The server confirmed: from now on no change is missed. Changes
                        # made before (after a reconnection) may have been: wake everyone.
                        self._feed.changed()
                        self._subscribed.set()
                    elif message["type"] == "message":
                        data = message["data"]
                        if data == self._stop_message:
                            break
                        self._feed.changed(_run_id(data))
            except _connection.DRIVER_ERRORS:
                # Messages may have been missed while disconnected: wake every waiter
                # once (a spurious wake-up is allowed), then retry after a pause.
                if not outage:
                    self._feed.changed()
                outage = True
                self._subscribed.set()
                self._feed.pause(1.0)
            finally:
                if pubsub is not None:
                    with suppress(*_connection.DRIVER_ERRORS):
                        pubsub.close()


def _run_id(data: object) -> str | None:
    """The run id a script published (its scripts publish nothing else), or None."""
    if isinstance(data, bytes):
        try:
            return data.decode()
        except UnicodeDecodeError:
            return None
    return data if isinstance(data, str) else None
