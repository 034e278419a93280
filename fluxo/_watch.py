"""Named, watched background threads: one that dies is logged, and its owner stops.

Fluxo's side threads (the heartbeat that renews leases, and a worker's claim loop
when it runs in the background) are expected to run until they are asked to
stop. One that raises instead is dead. :func:`start` runs a side thread under
watch: its death is logged at ERROR with its traceback, then handed to its
owner's ``on_death``, which stops what needed the thread. A heartbeat that died
stops every execution whose lease it renewed, since nobody renews those leases
any more, and its worker stops: ``worker.run()`` raises, so that a supervisor
restarts the process, instead of running on without leases.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from fluxo import _errors

log = logging.getLogger(__name__)

OnDeath = Callable[[str, BaseException], None]
"""Told ``(thread name, exception)`` when a watched thread dies."""


def start(name: str, target: Callable[[], object], on_death: OnDeath) -> threading.Thread:
    """Run ``target`` in a daemon thread named ``name``; if it raises, report its death.

    Returns the thread, started.
    """
    thread = threading.Thread(
        target=_watched, args=(name, target, on_death), name=name, daemon=True
    )
    thread.start()
    return thread


def _watched(name: str, target: Callable[[], object], on_death: OnDeath) -> None:
    try:
        target()
    except BaseException as exc:  # any end by an exception is a death, SystemExit too
        died(name, exc, on_death)


def died(name: str, exc: BaseException, on_death: OnDeath) -> None:
    """Log the death of thread ``name`` at ERROR, with its traceback, and tell ``on_death``."""
    log.error(
        "thread %s died: %s: %s",
        name,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    try:
        on_death(name, exc)
    except Exception:
        log.exception("thread %s died, and stopping what needed it failed too", name)


def death_error(owner: str, name: str, exc: BaseException) -> _errors.FluxoError:
    """The error an owner raises once it stopped because its thread ``name`` died."""
    return _errors.FluxoError(
        f"{owner} stopped because its thread {name} died ({type(exc).__name__}: {exc}); "
        "the runs it executed stopped at their next durable call, and their leases were "
        "given back (or expire); see the log for the traceback, and restart it"
    )
