"""BasicMetrics: counts and step latencies of the runs this process executes, in memory.

Found as ``fluxo.observe.BasicMetrics``. It is an inline observer (called in the
run's own thread), so it does as little as it can per event: an append to a
queue, folded into the counts in bulk.
"""

from __future__ import annotations

import collections
import math
import threading
from typing import ClassVar

import msgspec

from fluxo._events import RunEvent, StepTimes

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

    ``count``, ``total`` and ``mean`` are over every attempt measured; ``min``,
    ``max`` and the percentiles over the last ``fluxo._metrics.SAMPLES`` (1,024),
    so that they follow what the step does now. Attempts are timed with the
    engine's clock (in the test environment, its virtual clock).
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
    __slots__ = ("count", "recent", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=SAMPLES)

    def add_many(self, durations: list[float]) -> None:
        self.count += len(durations)
        self.total += sum(durations)
        self.recent.extend(durations[-SAMPLES:] if len(durations) > SAMPLES else durations)

    def summary(self) -> StepLatency:
        ordered = sorted(self.recent)
        return StepLatency(
            count=self.count,
            total=self.total,
            min=ordered[0],
            max=ordered[-1],
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

    It counts what this process sees; each process has its own. It costs a run's
    thread next to nothing: a live step that completes is appended to its
    :attr:`step_times` (no event is built), any other event to a queue; both are
    counted by :meth:`snapshot`, in the thread that reads them (or by a run's
    thread once many wait: ``fluxo.observe.KEEP`` step times, ``FOLD_EVERY``
    events).
    """

    inline: ClassVar[bool] = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[RunEvent] = collections.deque()
        """Events not folded in yet."""
        self.step_times = StepTimes(self._fold_times)
        """The live step attempts that completed, not folded in yet."""
        self._events: dict[str, int] = {}
        self._replayed: dict[str, int] = {}
        self._steps: dict[str, _Latency] = {}
        self._running: dict[str, int] = {}
        self._ended: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"<BasicMetrics {sum(self.snapshot().events.values())} events>"

    def snapshot(self) -> MetricsSnapshot:
        """What was counted so far (a copy: later events do not change it)."""
        self.step_times.flush()
        with self._lock:
            self._fold()
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
            self.step_times.take()
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

    run_started = run_resumed = run_suspended = _tell
    run_completed = run_failed = run_cancelled = run_continued = _tell
    step_completed = step_failed = step_retried = _tell
    timer_set = timer_fired = signal_sent = signal_received = _tell
    child_started = nondeterminism = lease_lost = _tell

    def _fold_times(self, times: dict[tuple[str, str], list[float]]) -> None:
        """Fold live step attempts that completed into the counts."""
        with self._lock:
            count = 0
            for (_, step), durations in times.items():
                count += len(durations)
                self._latency(step).add_many(durations)
            self._events["step_completed"] = self._events.get("step_completed", 0) + count

    def _latency(self, step: str) -> _Latency:
        latency = self._steps.get(step)
        if latency is None:
            latency = self._steps[step] = _Latency()
        return latency

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
            if event.step and event.duration is not None:
                self._latency(event.step).add_many([event.duration])
            elif kind == "run_resumed":
                self._running[event.run_id] = self._running.get(event.run_id, 0) + 1
            elif kind in _STOPS:
                ended = _ENDED.get(kind)
                if ended is not None:
                    self._ended[ended] = self._ended.get(ended, 0) + 1
                executions = self._running.pop(event.run_id, 0) - 1
                if executions > 0:
                    self._running[event.run_id] = executions


FOLD_EVERY = 4096
"""Events or step times queued before the thread adding one folds them into the counts."""

_STOPS = frozenset({"run_suspended", *_ENDED, "lease_lost"})
