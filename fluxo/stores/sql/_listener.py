"""The PostgreSQL listener: how the SQL store hears of changes other processes make.

Every statement of the store that changes a run's status also sends
``NOTIFY fluxo_changes`` with the run's id (at commit, so a waiter woken by it
sees the change). A :class:`PgListener` thread, started by the first wait,
``LISTEN``s on that channel with a connection of its own and reports each
notification to the store's change feed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import sqlalchemy as sa

_LISTEN_TICK: Final = 5.0  # only to notice stop(); stop() also wakes it with a NOTIFY
"""How often, in seconds, the listener thread looks up from its connection."""
_LISTEN_RETRY: Final = 2.0
"""How long the listener waits before reconnecting after a failure."""

logger = logging.getLogger(__name__)


class PgListener:
    """A thread that LISTENs on a PostgreSQL channel and reports every notification.

    It holds one connection of its own, taken from the engine and detached from
    its pool, and reconnects after a failure. While it is not listening,
    :attr:`listening` is false and waiters must fall back to polling.

    Args:
        engine: a psycopg engine.
        channel: the channel to LISTEN on.
        on_notify: called in the thread with each payload, and with ``None``
            after a reconnection (notifications may have been missed).
    """

    def __init__(
        self, engine: sa.Engine, channel: str, on_notify: Callable[[str | None], None]
    ) -> None:
        self._engine = engine
        self._channel = channel
        self._on_notify = on_notify
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()

    @property
    def listening(self) -> bool:
        """Tell whether notifications are being received right now."""
        return self._ready.is_set()

    def start(self, wait: float) -> bool:
        """Start the thread unless it runs; wait up to ``wait`` s until it listens."""
        with self._lock:
            if self._stopping.is_set():
                return False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="fluxo-pg-listener", daemon=True
                )
                self._thread.start()
        return self._ready.wait(wait)

    def stop(self) -> None:
        """Stop listening and close the connection. Idempotent."""
        with self._lock:
            self._stopping.set()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if thread.is_alive():
                self._wake_listener()
            thread.join(_LISTEN_TICK + 1)

    def _wake_listener(self) -> None:
        """Send one notification on our channel, so the listener sees stop() at once."""
        try:
            pooled = self._engine.raw_connection()
            try:
                cursor = pooled.cursor()
                cursor.execute("SELECT pg_notify(%s, '')", (self._channel,))
                cursor.close()
                pooled.commit()
            finally:
                pooled.close()
        except Exception as exc:  # the listener then notices within one tick
            logger.debug("could not wake the PostgreSQL listener: %s", exc)

    def forget_after_fork(self) -> None:
        """In a forked child: the thread and its connection stayed in the parent."""
        self._lock = threading.Lock()
        self._thread = None
        self._ready = threading.Event()

    def _run(self) -> None:
        reconnected = False
        while not self._stopping.is_set():
            conn: Any = None
            try:
                pooled = self._engine.raw_connection()
                pooled.detach()  # ours for good: the pool neither reuses nor resets it
                conn = pooled.dbapi_connection
                conn.autocommit = True
                conn.execute(f'LISTEN "{self._channel}"')
                self._ready.set()
                if reconnected:
                    self._on_notify(None)
                while not self._stopping.is_set():
                    for notification in conn.notifies(timeout=_LISTEN_TICK):
                        if self._stopping.is_set():
                            break
                        self._on_notify(notification.payload)
            except Exception as exc:
                if not self._stopping.is_set():
                    logger.warning(
                        "listening for run changes on PostgreSQL failed (%s); waiters poll "
                        "until it reconnects",
                        exc,
                    )
            finally:
                self._ready.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            reconnected = True
            self._stopping.wait(_LISTEN_RETRY)
