"""fluxo.observe.StepTimes: live step attempts timed in bulk, without an event each."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _metrics, _observers, observe
from fluxo.testing import WorkflowEnvironment

WAIT = 10.0


@fluxo.step(name="times.add")
def add(a: int, b: int) -> int:
    return a + b


@fluxo.workflow(name="times.adds")
def adds(n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return total


@fluxo.step(name="times.double")
def double(n: int) -> int:
    return 2 * n


@fluxo.workflow(name="times.fans")
def fans() -> list[int]:
    return fluxo.map(double, [1, 2, 3])


_calls: dict[str, int] = {}


@fluxo.step(name="times.flaky", retry=fluxo.Retry(max_attempts=2, initial=timedelta(0)))
def flaky(key: str) -> str:
    _calls[key] = _calls.get(key, 0) + 1
    if _calls[key] == 1:
        raise ValueError("first attempt fails")
    return key


@fluxo.workflow(name="times.retries")
def retries(key: str) -> str:
    return flaky(key)


@fluxo.workflow(name="times.sleeps")
def sleeps() -> int:
    first = add(1, 1)
    fluxo.sleep(timedelta(hours=1))
    return add(first, 1)


class Timed(fluxo.Observer):
    """Keeps what its ``step_times`` folds, and the step events it is still told."""

    inline = True

    def __init__(self) -> None:
        self.folded: dict[tuple[str, str], list[float]] = {}
        self.folds = 0
        self.events: list[fluxo.RunEvent] = []
        self._lock = threading.Lock()
        self.step_times = observe.StepTimes(self._fold)

    def _fold(self, times: dict[tuple[str, str], list[float]]) -> None:
        with self._lock:
            self.folds += 1
            for key, durations in times.items():
                self.folded.setdefault(key, []).extend(durations)

    def _keep(self, event: fluxo.RunEvent) -> None:
        self.events.append(event)

    step_completed = step_retried = step_failed = _keep

    def times(self, workflow: str, step: str) -> list[float]:
        """The seconds of the live attempts of ``step`` that completed, all folded now."""
        self.step_times.flush()
        return self.folded.get((workflow, step), [])

    def kinds(self, *, replayed: bool) -> list[str]:
        return [e.kind for e in self.events if e.replayed is replayed]


def test_live_steps_that_complete_are_folded_in_place_of_step_completed() -> None:
    timed = Timed()
    with fluxo.Engine("memory://", workflows=[adds], observers=[timed]) as engine:
        assert engine.run(adds, 3) == 3
    assert timed.folds == 0  # folded only as they are read: not by the run's thread
    assert timed.step_times.count() == 3
    timed.step_times.flush()
    assert timed.step_times.count() == 0
    durations = timed.folded[("times.adds", "times.add")]
    assert len(durations) == 3
    assert all(0.0 <= d < WAIT for d in durations)
    assert timed.events == []  # no live step_completed event was built for it


def test_replayed_steps_still_come_as_events() -> None:
    timed = Timed()
    with WorkflowEnvironment(observers=[timed]) as env:
        handle = env.start(sleeps)
        env.advance(timedelta(hours=2))
        assert handle.result() == 3
    # each live attempt timed once, whatever replayed it (always_replay, the sleep)
    assert len(timed.times("times.sleeps", "times.add")) == 2
    assert timed.kinds(replayed=False) == []
    assert timed.kinds(replayed=True).count("step_completed") >= 2


def test_retried_and_failed_attempts_stay_events_with_their_duration() -> None:
    _calls.clear()
    timed = Timed()
    with fluxo.Engine("memory://", workflows=[retries], observers=[timed]) as engine:
        assert engine.run(retries, "k") == "k"
    [retried] = [e for e in timed.events if not e.replayed]
    assert retried.kind == "step_retried"
    assert retried.duration is not None
    assert retried.duration >= 0
    assert len(timed.times("times.retries", "times.flaky")) == 1


def test_parallel_branches_are_timed() -> None:
    timed = Timed()
    with fluxo.Engine("memory://", workflows=[fans], observers=[timed]) as engine:
        assert engine.run(fans) == [2, 4, 6]
    assert len(timed.times("times.fans", "times.double")) == 3
    assert timed.kinds(replayed=False) == []


def test_two_observers_with_step_times_each_get_every_attempt() -> None:
    first, second = Timed(), Timed()
    metrics = observe.BasicMetrics()
    observers = [first, second, metrics]
    with fluxo.Engine("memory://", workflows=[adds], observers=observers) as engine:
        engine.run(adds, 4)
        engine.run(adds, 2)
    assert len(first.times("times.adds", "times.add")) == 6
    second.step_times.flush()
    assert first.folded == second.folded
    assert metrics.snapshot().steps["times.add"].count == 6


def test_an_observer_told_step_completed_is_still_told_beside_step_times() -> None:
    timed = Timed()
    seen: list[fluxo.RunEvent] = []

    class Plain(fluxo.Observer):
        inline = True

        def step_completed(self, event: fluxo.RunEvent) -> None:
            seen.append(event)

    with fluxo.Engine("memory://", workflows=[adds], observers=[timed, Plain()]) as engine:
        engine.run(adds, 2)
    assert [e.step for e in seen] == ["times.add", "times.add"]
    assert all(e.duration is not None for e in seen)
    assert len(timed.times("times.adds", "times.add")) == 2
    assert timed.events == []


def test_flush_reads_the_steps_of_a_run_still_executing() -> None:
    timed = Timed()
    inside, go_on = threading.Event(), threading.Event()

    @fluxo.step(name="times.blocking")
    def blocking() -> None:
        inside.set()
        go_on.wait(WAIT)

    @fluxo.workflow(name="times.blocks")
    def blocks() -> None:
        add(1, 2)
        add(3, 4)
        blocking()

    with fluxo.Engine("memory://", workflows=[blocks], observers=[timed]) as engine:
        thread = threading.Thread(target=engine.run, args=(blocks,))
        thread.start()
        assert inside.wait(WAIT)
        timed.step_times.flush()
        assert len(timed.times("times.blocks", "times.add")) == 2
        go_on.set()
        thread.join(WAIT)
    assert len(timed.times("times.blocks", "times.blocking")) == 1


def test_an_execution_folds_what_nobody_reads_once_enough_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_observers, "KEEP", 5)
    timed = Timed()
    with fluxo.Engine("memory://", workflows=[adds], observers=[timed]) as engine:
        engine.run(adds, 3)
        assert timed.folds == 0  # 3 waiting: fewer than KEEP
        engine.run(adds, 3)
        assert timed.folds == 1  # 6 waiting as the execution ended: folded
        assert timed.step_times.count() == 0
    assert len(timed.folded[("times.adds", "times.add")]) == 6


def test_negative_seconds_from_a_clock_set_back_are_taken_as_zero() -> None:
    times = observe.StepTimes(lambda batch: None)
    times.waiting("w", "s").extend([0.5, -2.0, 1.5])
    assert times.take() == {("w", "s"): [0.5, 0.0, 1.5]}


def test_concurrent_appends_and_takes_lose_and_repeat_nothing() -> None:
    taken: list[float] = []
    times = observe.StepTimes(lambda batch: taken.extend(batch[("w", "s")]))
    done = threading.Event()

    def append(start: int) -> None:
        waiting = times.waiting("w", "s")
        for i in range(20_000):
            waiting.append(float(start + i))

    def take() -> None:
        while not done.is_set():
            times.flush()

    takers = [threading.Thread(target=take) for _ in range(2)]
    appenders = [threading.Thread(target=append, args=(n * 100_000,)) for n in range(3)]
    for thread in takers + appenders:
        thread.start()
    for thread in appenders:
        thread.join()
    done.set()
    for thread in takers:
        thread.join()
    times.flush()
    assert sorted(taken) == sorted(float(n * 100_000 + i) for n in range(3) for i in range(20_000))


def test_a_fold_that_raises_is_logged_once_and_called_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_observers, "KEEP", 1)  # every execution's end folds

    class Broken(fluxo.Observer):
        inline = True

        def __init__(self) -> None:
            self.folds = 0
            self.step_times = observe.StepTimes(self._fold)

        def _fold(self, times: Any) -> None:
            self.folds += 1
            raise RuntimeError("fold is broken")

    broken = Broken()
    with (
        caplog.at_level(logging.ERROR, logger="fluxo"),
        fluxo.Engine("memory://", workflows=[adds], observers=[broken]) as engine,
    ):
        assert engine.run(adds, 3) == 3
        assert engine.run(adds, 4) == 6
    assert broken.folds == 2
    failures = [r for r in caplog.records if "fold is broken" in (r.exc_text or "")]
    assert len(failures) == 1
    assert "step_times" in failures[0].getMessage()


def test_step_times_is_checked_when_the_observer_is_given() -> None:
    class Wrong(fluxo.Observer):
        inline = True
        step_times = object()  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"fluxo\.observe\.StepTimes"):
        fluxo.Engine("memory://", workflows=[adds], observers=[Wrong()])

    class Threaded(fluxo.Observer):
        def __init__(self) -> None:
            self.step_times = observe.StepTimes(lambda times: None)

    with pytest.raises(TypeError, match="inline = True"):
        fluxo.Engine("memory://", workflows=[adds], observers=[Threaded()])

    with pytest.raises(TypeError, match="function"):
        observe.StepTimes(42)  # type: ignore[arg-type]


def test_basic_metrics_counts_every_attempt_and_takes_min_and_max_over_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_metrics, "SAMPLES", 4)
    metrics = observe.BasicMetrics()
    metrics.step_times.waiting("wf", "s").extend([9.0, 1.0, 2.0, 3.0, 4.0])
    latency = metrics.snapshot().steps["s"]
    assert (latency.count, latency.total, latency.mean) == (5, 19.0, 3.8)
    assert (latency.min, latency.max) == (1.0, 4.0)  # 9.0 has left the window
    assert metrics.snapshot().events["step_completed"] == 5


def test_basic_metrics_builds_no_event_for_a_live_step(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[tuple[str, bool]] = []
    real = observe.RunEvent

    def counting(*args: Any, **fields: Any) -> fluxo.RunEvent:
        event = real(*args, **fields)
        built.append((event.kind, event.replayed))
        return event

    monkeypatch.setattr(observe, "RunEvent", counting)
    metrics = observe.BasicMetrics()
    with fluxo.Engine("memory://", workflows=[adds], observers=[metrics]) as engine:
        engine.run(adds, 5)
    assert ("step_completed", False) not in built
    assert metrics.snapshot().events["step_completed"] == 5
