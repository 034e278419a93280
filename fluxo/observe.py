"""Watching runs: the observer protocol, and the observers Fluxo ships.

An observer is told of what happens to runs: a run started, resumed, suspended
or ended; a step attempt started, completed, failed or is retried; a timer set or
fired; a signal sent or received; a child started; code that no longer matches
its history; a lease lost. Pass observers to the engine, and its workers and
inline runs tell them::

    metrics = fluxo.observe.BasicMetrics()
    engine = fluxo.Engine(url, workflows=[checkout],
                          observers=[fluxo.observe.LoggingObserver(), metrics])
    ...
    metrics.snapshot().steps["shop.charge"].p95

Every call gets one :class:`RunEvent`, which says whether the event happened now
(``replayed=False``) or is being met again in the recorded history as a run
resumes (``replayed=True``): a run that resumes three times replays its first
step three times, but completed it once.

Observers never break or stall a run. An observer that raises is logged once
per kind of event and keeps being called. An observer is called from a thread
of its own, in the order of the events, so a slow one delays no run; one whose
``inline`` attribute is true is called in the run's own thread as the event
happens instead: it must be fast (:class:`BasicMetrics`, and the OpenTelemetry
and Prometheus observers of ``fluxo.contrib``, are).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from fluxo._events import KEEP, KINDS, RunEvent, StepTimes
from fluxo._metrics import BasicMetrics, MetricsSnapshot, StepLatency

_log = logging.getLogger(__name__)

__all__ = [
    "KEEP",
    "KINDS",
    "BasicMetrics",
    "CompositeObserver",
    "LoggingObserver",
    "MetricsSnapshot",
    "NoopObserver",
    "Observer",
    "RunEvent",
    "StepLatency",
    "StepTimes",
]


class Observer:
    """What an observer may be told; override the methods you need.

    Each method takes one :class:`RunEvent` and returns nothing. An observer
    need not subclass this class: any object with some of these methods is one;
    the methods it lacks are not called.

    Attributes:
        inline: False (the default): the observer is called from a thread of its
            own, so a slow observer delays no run. True: it is called in the run's
            own thread as the event happens, and it must be fast.
        step_times: None (the default), or a :class:`StepTimes` that the durations
            of live step attempts that complete are appended to, in place of a
            ``step_completed`` call each: the cheap way for an inline observer to
            count and time steps.
    """

    inline: ClassVar[bool] = False
    step_times: StepTimes | None = None

    def run_started(self, event: RunEvent) -> None:
        """A run was created: by ``engine.start``/``engine.run``, or as a child."""

    def run_resumed(self, event: RunEvent) -> None:
        """An execution of the run begins: its recorded history is replayed first."""

    def run_suspended(self, event: RunEvent) -> None:
        """The run waits (``event.name``: for a timer, a signal or a child) with no thread held."""

    def run_completed(self, event: RunEvent) -> None:
        """The run returned; ``event.duration`` is its age."""

    def run_failed(self, event: RunEvent) -> None:
        """The run failed; ``event.error_type`` and ``event.error_message`` say how."""

    def run_cancelled(self, event: RunEvent) -> None:
        """The run was cancelled; ``event.name`` says why: ``"cancelled"`` or ``"deadline"``."""

    def run_continued(self, event: RunEvent) -> None:
        """The run continued as new, in ``event.other_run``."""

    def step_started(self, event: RunEvent) -> None:
        """A step attempt begins, in the thread that runs it (never on replay)."""

    def step_completed(self, event: RunEvent) -> None:
        """A step returned and its result was recorded (or is met again on replay)."""

    def step_failed(self, event: RunEvent) -> None:
        """A step's last attempt raised, and the step failed."""

    def step_retried(self, event: RunEvent) -> None:
        """A step attempt raised and the step is attempted again after ``event.delay``."""

    def timer_set(self, event: RunEvent) -> None:
        """A durable timer was set to fire in ``event.delay`` seconds."""

    def timer_fired(self, event: RunEvent) -> None:
        """A durable timer fired."""

    def signal_sent(self, event: RunEvent) -> None:
        """A signal was stored for ``event.run_id`` (by the engine or by a workflow)."""

    def signal_received(self, event: RunEvent) -> None:
        """The workflow consumed a signal."""

    def child_started(self, event: RunEvent) -> None:
        """The workflow started the child run ``event.other_run``."""

    def nondeterminism(self, event: RunEvent) -> None:
        """The code no longer matches the run's history at ``event.position``."""

    def lease_lost(self, event: RunEvent) -> None:
        """Another worker took the run over; this one stopped executing it."""

    def step_scope(self, event: RunEvent) -> contextlib.AbstractContextManager[object] | None:
        """A context to enter around a live step attempt, in the thread that runs it.

        Called for inline observers only, just after :meth:`step_started`, with the
        same event; ``None``: none. The OpenTelemetry observer makes the attempt's
        span current this way, so the spans a step makes become its children.
        """
        return None

    def headers(self, workflow: str, run_id: str, parent: RunEvent | None) -> Mapping[str, str]:
        """What to record with a run being started, in the thread that starts it.

        Called for inline observers only. ``parent`` is an event of the run that
        starts this one as its child, else ``None``. What is returned comes back
        in every event of the new run as ``RunEvent.headers``; the OpenTelemetry
        observer records the trace context of the code that started the run.
        """
        return {}


class NoopObserver(Observer):
    """An observer that does nothing: a stand-in where one is required."""

    inline: ClassVar[bool] = True


class CompositeObserver(Observer):
    """Several observers told as one, in order; one that raises does not stop the others.

    Each is called as its own ``inline`` attribute asks once the composite is given
    to an engine, so a composite of a slow and a fast observer delays no run.
    """

    inline: ClassVar[bool] = True

    def __init__(self, observers: Iterable[Any]) -> None:
        if isinstance(observers, (str, bytes)) or not isinstance(observers, Iterable):
            raise TypeError(
                f"CompositeObserver takes a list of observers, not {type(observers).__name__}"
            )
        self.observers: Sequence[Any] = tuple(observers)

        self._failed: set[tuple[int, str]] = set()

    def __repr__(self) -> str:
        return f"CompositeObserver({list(self.observers)!r})"

    def _tell(self, event: RunEvent) -> None:
        for observer in self.observers:
            method = getattr(observer, event.kind, None)
            if method is None:
                continue
            try:
                method(event)
            except Exception:
                key = (id(observer), event.kind)
                if key not in self._failed:
                    self._failed.add(key)
                    _log.exception(
                        "observer %r failed on %s; it keeps being called, and further "
                        "failures of it on this kind of event are not logged",
                        observer,
                        event.kind,
                    )

    run_started = run_resumed = run_suspended = _tell
    run_completed = run_failed = run_cancelled = run_continued = _tell
    step_started = step_completed = step_failed = step_retried = _tell
    timer_set = timer_fired = signal_sent = signal_received = _tell
    child_started = nondeterminism = lease_lost = _tell


class LoggingObserver(Observer):
    """Logs every event of every run on a standard logger (``fluxo.observe`` by default).

    Each record carries structured fields in ``extra``: ``fluxo_run_id``,
    ``fluxo_workflow``, ``fluxo_event``, ``fluxo_position``, ``fluxo_step`` and
    ``fluxo_attempt`` (where they apply), and ``fluxo_replayed``. Failures log
    at WARNING, the rest at INFO; replayed events at DEBUG, so a resumed run does
    not log its past twice unless you ask.

    Args:
        logger: the logger, or its name.
        level: the level of live events that are not failures.
        replayed_level: the level of replayed events.
    """

    def __init__(
        self,
        logger: logging.Logger | str = "fluxo.observe",
        *,
        level: int = logging.INFO,
        replayed_level: int = logging.DEBUG,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self.replayed_level = replayed_level

    def __repr__(self) -> str:
        return f"LoggingObserver({self.logger.name!r})"

    def _log(self, event: RunEvent) -> None:
        if event.replayed:
            level = self.replayed_level
        elif event.kind in _WARNINGS:
            level = logging.WARNING
        else:
            level = self.level
        if not self.logger.isEnabledFor(level):
            return
        extra: dict[str, Any] = {
            "fluxo_run_id": event.run_id,
            "fluxo_workflow": event.workflow,
            "fluxo_event": event.kind,
            "fluxo_position": event.position,
            "fluxo_replayed": event.replayed,
        }
        words = [f"run {event.run_id} ({event.workflow or '?'}):", event.kind.replace("_", " ")]
        if event.step:
            extra["fluxo_step"] = event.step
            extra["fluxo_attempt"] = event.attempt
            branch = "" if event.branch is None else f" branch {event.branch}"
            words.append(f"{event.step}{branch} attempt {event.attempt}")
        if event.name:
            words.append(event.name)
        if event.other_run:
            words.append(event.other_run)
        if event.position is not None:
            words.append(f"at {event.position}")
        if event.duration is not None:
            words.append(f"in {event.duration:.3f}s")
        if event.delay is not None:
            if event.kind == "run_resumed":
                words.append(f"(claimed {event.delay:.3g}s after it was ready)")
            else:
                words.append(f"(next in {event.delay:.3g}s)")
        if event.error_type:
            words.append(f"- {event.error_type}: {event.error_message}")
        if event.replayed:
            words.append("(replayed)")
        self.logger.log(level, " ".join(words), extra=extra)

    run_started = run_resumed = run_suspended = _log
    run_completed = run_failed = run_cancelled = run_continued = _log
    step_started = step_completed = step_failed = step_retried = _log
    timer_set = timer_fired = signal_sent = signal_received = _log
    child_started = nondeterminism = lease_lost = _log


_WARNINGS = frozenset({"run_failed", "step_failed", "step_retried", "nondeterminism", "lease_lost"})
