"""BasicMetrics: counts and step latencies of the runs this process executes, in memory.

Found as ``fluxo.observe.BasicMetrics``. It is an inline observer (called in the
run's own thread), so it does as little as it can per event: a counter and, for
a step attempt, a sample of its duration, under one lock.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import ClassVar

import msgspec

from fluxo._events import RunEvent

SAMPLES = 1024
"""How many recent durations of each step the percentiles are taken over."""

_ENDED = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_continued": "continued",
}


class StepLatency(msgspec.Struct, frozen=True):
    """How long a step's live attempts took, in seconds.

    ``count``, ``total``, ``min``, ``max`` and ``mean`` are over every attempt
    measured; the percentiles over the last ``fluxo._metrics.SAMPLES`` (1,024).
    """

    count: int
    total: float
    min: float
    max: float
    mean: float
    p50: float
    p95: float
    p99: float


class MetricsSnapshot(msgspec.Struct, frozen=True):
    """What :class:`BasicMetrics` counted, at one moment.

    Attributes:
        events: live events, by kind (``"step_completed": 12``).
        replayed: events met again in recorded histories, by kind.
        steps: the latency of each step's live attempts, by step name.
        runs: runs by how this process last saw them: ``running`` (executing in
            this process now), and ``completed``, ``failed``, ``cancelled`` and
            ``continued`` (ended by this process). For the runs in each status in
            the whole store, read ``engine.count_runs()``.
    """

    events: dict[str, int]
    replayed: dict[str, int]
    steps: dict[str, StepLatency]
    runs: dict[str, int]


class _Latency:
    __slots__ = ("count", "max", "min", "recent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.min = math.inf
        self.max = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=SAMPLES)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.min = min(self.min, seconds)
        self.max = max(self.max, seconds)
        self.recent.append(seconds)

    def summary(self) -> StepLatency:
        ordered = sorted(self.recent)
        return StepLatency(
            count=self.count,
            total=self.total,
            min=self.min,
            max=self.max,
            mean=self.total / self.count,
            p50=_percentile(ordered, 0.50),
            p95=_percentile(ordered, 0.95),
            p99=_percentile(ordered, 0.99),
        )


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile ``q`` of sorted samples."""
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


class BasicMetrics:
    """Counts every event by kind and times every live step attempt, in memory.

    Pass it to an engine and read :meth:`snapshot` whenever you like (a health
    endpoint, a test, a periodic log line)::

        metrics = fluxo.observe.BasicMetrics()
        engine = fluxo.Engine(url, workflows=[checkout], observers=[metrics])
        ...
        snap = metrics.snapshot()
        snap.events["run_completed"], snap.steps["shop.charge"].p95

    It counts what this process sees; each process has its own.
    """

    inline: ClassVar[bool] = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: collections.Counter[str] = collections.Counter()
        self._replayed: collections.Counter[str] = collections.Counter()
        self._steps: dict[str, _Latency] = {}
        self._running: dict[str, int] = {}
        self._ended: collections.Counter[str] = collections.Counter()

    def __repr__(self) -> str:
        return f"<BasicMetrics {sum(self._events.values())} events>"

    def snapshot(self) -> MetricsSnapshot:
        """What was counted so far (a copy: later events do not change it)."""
        with self._lock:
            return MetricsSnapshot(
                events=dict(self._events),
                replayed=dict(self._replayed),
                steps={name: latency.summary() for name, latency in self._steps.items()},
                runs={"running": len(self._running), **self._ended},
            )

    def reset(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self._events.clear()
            self._replayed.clear()
            self._steps.clear()
            self._running.clear()
            self._ended.clear()

    def _count(self, event: RunEvent) -> None:
        with self._lock:
            if event.replayed:
                self._replayed[event.kind] += 1
            else:
                self._events[event.kind] += 1

    def _attempt_ended(self, event: RunEvent) -> None:
        with self._lock:
            if event.replayed:
                self._replayed[event.kind] += 1
                return
            self._events[event.kind] += 1
            if event.duration is not None:
                latency = self._steps.get(event.step)
                if latency is None:
                    latency = self._steps[event.step] = _Latency()
                latency.add(event.duration)

    def _run_resumed(self, event: RunEvent) -> None:
        with self._lock:
            self._events[event.kind] += 1
            self._running[event.run_id] = self._running.get(event.run_id, 0) + 1

    def _run_stopped(self, event: RunEvent) -> None:
        with self._lock:
            self._events[event.kind] += 1
            ended = _ENDED.get(event.kind)
            if ended is not None:
                self._ended[ended] += 1
            executions = self._running.pop(event.run_id, 0) - 1
            if executions > 0:
                self._running[event.run_id] = executions

    run_started = step_started = timer_set = timer_fired = _count
    signal_sent = signal_received = child_started = nondeterminism = _count
    step_completed = step_failed = step_retried = _attempt_ended
    run_resumed = _run_resumed
    run_suspended = run_completed = run_failed = run_cancelled = _run_stopped
    run_continued = lease_lost = _run_stopped
