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
        events: live events, by kind (``"step_completed": 12``); step attempts are
            counted by how they ended (``step_completed``, ``step_retried``,
            ``step_failed``), not as they start.
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

    def add_many(self, durations: list[float]) -> None:
        self.count += len(durations)
        self.total += math.fsum(durations)
        self.min = min(self.min, *durations)
        self.max = max(self.max, *durations)
        self.recent.extend(durations[-SAMPLES:])

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

    It counts what this process sees; each process has its own. Telling it an
    event costs one append to a queue (atomic, so no lock is taken in the run's
    thread); the queue is folded into the counts by :meth:`snapshot`, or by the
    thread that fills it past ``FOLD_EVERY`` (4,096) events.
    """

    inline: ClassVar[bool] = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[RunEvent] = collections.deque()
        """Events other than live attempt ends, folded in later."""
        self._samples: dict[tuple[str, str], list[float]] = {}
        """Durations of live attempt ends by (kind, step), not yet folded in."""
        self._events: dict[str, int] = {}
        self._replayed: dict[str, int] = {}
        self._steps: dict[str, _Latency] = {}
        self._running: dict[str, int] = {}
        self._ended: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<BasicMetrics {sum(self.snapshot().events.values())} events>"

    def snapshot(self) -> MetricsSnapshot:
        """What was counted so far (a copy: later events do not change it)."""
        with self._lock:
            self._fold()
            for key, samples in list(self._samples.items()):
                self._fold_samples(key, samples)
            return MetricsSnapshot(
                events=dict(self._events),
                replayed=dict(self._replayed),
                steps={name: latency.summary() for name, latency in self._steps.items()},
                runs={"running": len(self._running), **self._ended},
            )

    def reset(self) -> None:
        """Forget everything counted so far."""
        with self._lock:
            self._queue.clear()
            self._samples.clear()
            self._events.clear()
            self._replayed.clear()
            self._steps.clear()
            self._running.clear()
            self._ended.clear()

    def _tell(self, event: RunEvent) -> None:
        queue = self._queue
        queue.append(event)  # atomic: no lock in the run's thread
        if len(queue) >= FOLD_EVERY:
            with self._lock:
                self._fold()

    def _attempt_ended(self, event: RunEvent) -> None:
        # Every live step's way out: one list append, the counting done in bulk later.
        if event.replayed or event.duration is None:
            self._tell(event)
            return
        key = (event.kind, event.step)
        samples = self._samples.get(key)
        if samples is None:
            with self._lock:
                samples = self._samples.setdefault(key, [])
        samples.append(event.duration)  # atomic
        if len(samples) >= FOLD_EVERY:
            with self._lock:
                self._fold_samples(key, samples)

    run_started = run_resumed = run_suspended = _tell
    run_completed = run_failed = run_cancelled = run_continued = _tell
    step_completed = step_failed = step_retried = _attempt_ended
    timer_set = timer_fired = signal_sent = signal_received = _tell
    child_started = nondeterminism = lease_lost = _tell

    def _fold_samples(self, key: tuple[str, str], samples: list[float]) -> None:
        """Fold queued durations into the counts (under the lock)."""
        count = len(samples)
        if not count:
            return
        taken = samples[:count]
        del samples[:count]  # one operation: appends made meanwhile stay
        kind, step = key
        self._events[kind] = self._events.get(kind, 0) + count
        latency = self._steps.get(step)
        if latency is None:
            latency = self._steps[step] = _Latency()
        latency.add_many(taken)

    def _fold(self) -> None:
        """Fold the queued events into the counts (under the lock)."""
        queue = self._queue
        while queue:
            try:
                event = queue.popleft()
            except IndexError:  # (emptied by reset() meanwhile)
                return
            kind = event.kind
            if event.replayed:
                self._replayed[kind] = self._replayed.get(kind, 0) + 1
                continue
            self._events[kind] = self._events.get(kind, 0) + 1
            if kind == "run_resumed":
                self._running[event.run_id] = self._running.get(event.run_id, 0) + 1
            elif kind in _STOPS:
                ended = _ENDED.get(kind)
                if ended is not None:
                    self._ended[ended] = self._ended.get(ended, 0) + 1
                executions = self._running.pop(event.run_id, 0) - 1
                if executions > 0:
                    self._running[event.run_id] = executions


FOLD_EVERY = 4096
"""Events or durations queued before the thread adding one folds them into the counts."""

_STOPS = frozenset({"run_suspended", *_ENDED, "lease_lost"})
