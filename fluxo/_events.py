"""The events observers are told: :class:`RunEvent`, and every kind of it.

Found as ``fluxo.observe.RunEvent`` and ``fluxo.RunEvent``; kept apart so that the
observers Fluxo ships (:mod:`fluxo._metrics`) need not import :mod:`fluxo.observe`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import msgspec

KINDS: tuple[str, ...] = (
    "run_started",
    "run_resumed",
    "run_suspended",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "run_continued",
    "step_started",
    "step_completed",
    "step_failed",
    "step_retried",
    "timer_set",
    "timer_fired",
    "signal_sent",
    "signal_received",
    "child_started",
    "nondeterminism",
    "lease_lost",
)
"""Every kind of event, each the name of the :class:`Observer` method it calls."""


class RunEvent(msgspec.Struct, frozen=True):
    """What happened to a run, as an observer is told.

    Build one with keywords (``RunEvent(kind=..., run_id=..., ...)``, in a test of
    an observer, say): the order of the fields is not part of the API.

    Attributes:
        kind: the kind of event (one of :data:`KINDS`), the name of the method called.
        run_id: the run.
        workflow: the run's workflow name (empty for a signal sent by a workflow to
            a run it does not know the workflow of).
        time: when it happened, in seconds since the epoch, by the engine's clock.
        replayed: True when the event is met again in the recorded history as the
            run resumes, not happening now.
        position: the position of the history the event concerns: the record a step,
            timer, signal or child takes (a parallel block's for its branches); for
            ``run_resumed`` the length of the history being replayed.
        step: the step's name, for step events.
        branch: the branch's index, for the step events of ``fluxo.parallel`` and
            ``fluxo.map`` branches.
        attempt: the attempt's number, from 1, for step events.
        duration: seconds: a step attempt's (live step events); for the end of a run,
            its age (since it was created).
        delay: seconds: until the next attempt (``step_retried``), until the timer
            fires (``timer_set``), from the run being ready to being claimed for
            this execution (``run_resumed``).
        error_type: the exception's type name, for failures (``fluxo.StepError``,
            ``shop.PaymentDeclined``).
        error_message: the exception's message, for failures.
        name: the signal's name (signal events), the timer's (timer events), why a
            run was cancelled (``"cancelled"`` or ``"deadline"``), what a suspended
            run waits for (``"timer"``, ``"signal"``, ``"child"``) or why its
            execution stopped early (``"stopped"``: the worker shut down;
            ``"store_error"``: the store failed; it resumes from its history;
            ``"restart"``: the test environment's ``always_replay`` executes it again).
        other_run: the child's run id (``child_started``), the next run of the chain
            (``run_continued``), the sending run (``signal_sent`` from a workflow).
        worker: the lease owner executing the run, when one is.
        parent: the parent's run id, for a child run.
        headers: what was recorded with the run when it started (for example the
            W3C ``traceparent`` of the request that started it).
    """

    kind: str
    run_id: str
    workflow: str
    time: float
    replayed: bool = False
    position: int | None = None
    step: str = ""
    branch: int | None = None
    attempt: int = 0
    duration: float | None = None
    worker: str = ""
    parent: str | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    delay: float | None = None
    error_type: str = ""
    error_message: str = ""
    name: str = ""
    other_run: str = ""


KEEP = 10_000
"""How many attempts may wait in a :class:`StepTimes` before an execution's end folds them."""


class StepTimes:
    """The live step attempts that complete, timed and collected for an observer in bulk.

    An observer that counts and times steps (a metrics observer) need not be told
    a :class:`RunEvent` per step: give it a ``step_times`` attribute holding one of
    these, and the engine appends the seconds of each live attempt that completes
    to the list of its workflow and step here, in place of calling the observer's
    ``step_completed`` for it (a replayed ``step_completed``, and every other
    event, still comes as an event). That append is all a run's thread does;
    ``fold`` gets the attempts in batches, as ``{(workflow, step): [seconds, ...]}``:

    * when the observer calls :meth:`flush`, for example as its metrics are read
      (so a run's thread does not even fold them);
    * as an execution of a run ends with :data:`KEEP` (10,000) or more attempts
      waiting, in its thread (so a process that never reads its metrics does not
      grow without bound).

    ``fold`` may be called from several threads at once, each with other attempts:
    guard what it updates. One that raises is logged once, like an observer's
    method, and those attempts are lost to it. Only an ``inline`` observer may
    have ``step_times``, as ``fold`` may run in the run's thread.

    Args:
        fold: called with the attempts taken, by workflow and step, oldest first.
    """

    __slots__ = ("_lock", "_waiting", "fold")

    def __init__(self, fold: Callable[[dict[tuple[str, str], list[float]]], None]) -> None:
        if not callable(fold):
            raise TypeError(
                f"StepTimes(fold) takes a function of a dict of lists of seconds, not {fold!r}"
            )
        self.fold = fold
        self._waiting: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()
        """Held to take attempts (appending takes no lock)."""

    def __repr__(self) -> str:
        return f"<StepTimes {self.count()} waiting>"

    def waiting(self, workflow: str, step: str) -> list[float]:
        """The list the attempts of ``step`` in ``workflow`` go to (the same one each time)."""
        found = self._waiting.get((workflow, step))
        if found is None:
            with self._lock:
                found = self._waiting.setdefault((workflow, step), [])
        return found

    def count(self) -> int:
        """How many attempts are waiting."""
        return sum(map(len, list(self._waiting.values())))

    def take(self) -> dict[tuple[str, str], list[float]]:
        """Remove and return the attempts waiting, by workflow and step (from any thread)."""
        taken: dict[tuple[str, str], list[float]] = {}
        with self._lock:
            for key, waiting in list(self._waiting.items()):
                count = len(waiting)
                if count:
                    batch = waiting[:count]
                    del waiting[:count]  # appends made meanwhile stay, after these
                    if min(batch) < 0.0:  # the engine's clock was set back meanwhile
                        batch = [took if took > 0.0 else 0.0 for took in batch]
                    taken[key] = batch
        return taken

    def flush(self) -> None:
        """Fold every attempt waiting now (an exception of ``fold`` reaches the caller)."""
        taken = self.take()
        if taken:
            self.fold(taken)
