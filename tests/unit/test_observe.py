"""fluxo.observe: the events observers are told, their isolation, and the observers Fluxo ships."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import observe
from fluxo.testing import WorkflowEnvironment
from tests._observer_doubles import Raising, Recorder


@fluxo.step(name="obs.add")
def add(a: int, b: int) -> int:
    return a + b


_flaky_calls: dict[str, int] = {}


@fluxo.step(name="obs.flaky", retry=fluxo.Retry(max_attempts=3, initial=timedelta(0)))
def flaky(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] < 2:
        raise ValueError("not yet")
    return key


@fluxo.step(name="obs.broken", retry=fluxo.Retry(max_attempts=1))
def broken() -> None:
    raise KeyError("gone")


@fluxo.workflow(name="obs.adds")
def adds(n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return total


@fluxo.workflow(name="obs.retries")
def retries(key: str) -> str:
    return flaky(key)


@fluxo.workflow(name="obs.fails")
def fails() -> None:
    broken()


@fluxo.workflow(name="obs.waits")
def waits() -> str:
    fluxo.sleep(timedelta(hours=1))
    answer: str = fluxo.wait_for_signal("answer", type=str)
    return answer


@fluxo.step(name="obs.twice")
def twice(n: int) -> int:
    return 2 * n


@fluxo.workflow(name="obs.fans")
def fans() -> list[int]:
    return fluxo.map(twice, [1, 2, 3])


@fluxo.workflow(name="obs.parent")
def parent() -> int:
    return adds(2)


def engine_with(*observers: Any, workflows: list[Any]) -> fluxo.Engine:
    return fluxo.Engine("memory://", workflows=workflows, observers=list(observers))


def test_a_run_tells_its_start_execution_steps_and_end_in_order() -> None:
    rec = Recorder()
    with engine_with(rec, workflows=[adds]) as engine:
        assert engine.run(adds.options(id="r1"), 3) == 3
    assert rec.kinds() == [
        "run_started",
        "run_resumed",
        *["step_started", "step_completed"] * 3,
        "run_completed",
    ]
    started, resumed, *steps, completed = rec.events
    assert {e.run_id for e in rec.events} == {"r1"}
    assert {e.workflow for e in rec.events} == {"obs.adds"}
    assert not any(e.replayed for e in rec.events)
    assert started.position == 0
    assert resumed.position == 1
    assert [e.position for e in steps] == [1, 1, 2, 2, 3, 3]
    assert [e.step for e in steps] == ["obs.add"] * 6
    assert all(e.attempt == 1 for e in steps)
    assert all(e.duration is not None and e.duration >= 0 for e in steps[1::2])
    assert completed.position == 4
    assert completed.duration is not None
    assert resumed.worker
    assert resumed.worker == completed.worker


def test_retries_tell_each_attempt_with_its_delay() -> None:
    rec = Recorder()
    with engine_with(rec, workflows=[retries]) as engine:
        assert engine.run(retries, "k-retry") == "k-retry"
    steps = [e for e in rec.events if e.kind.startswith("step_")]
    assert [(e.kind, e.attempt) for e in steps] == [
        ("step_started", 1),
        ("step_retried", 1),
        ("step_started", 2),
        ("step_completed", 2),
    ]
    retried = steps[1]
    assert retried.error_type == "builtins.ValueError"
    assert retried.error_message == "not yet"
    assert retried.delay == 0.0
    assert steps[1].position == 1
    assert steps[3].position == 2


def test_a_failed_step_and_run_say_why() -> None:
    rec = Recorder()
    with engine_with(rec, workflows=[fails]) as engine, pytest.raises(fluxo.WorkflowFailedError):
        engine.run(fails)
    failed_step = next(e for e in rec.events if e.kind == "step_failed")
    assert failed_step.error_type == "builtins.KeyError"
    assert failed_step.attempt == 1
    failed_run = rec.events[-1]
    assert failed_run.kind == "run_failed"
    assert failed_run.error_type == "fluxo.StepError"


def test_replays_are_told_as_replayed_and_waits_as_suspensions() -> None:
    rec = Recorder()
    with WorkflowEnvironment(observers=[rec]) as env:
        handle = env.start(waits)
        env.advance(timedelta(hours=2))  # the timer fires; the run waits for the signal
        env.signal(handle, "answer", "yes")
        assert handle.result() == "yes"
    live = [e for e in rec.events if not e.replayed]
    assert [e.kind for e in live if e.kind.startswith(("timer", "signal"))] == [
        "timer_set",
        "timer_fired",
        "signal_sent",
        "signal_received",
    ]
    suspended = [e.name for e in live if e.kind == "run_suspended"]
    assert "timer" in suspended
    assert "signal" in suspended
    timer_set = next(e for e in live if e.kind == "timer_set")
    assert timer_set.name == "sleep"
    assert timer_set.delay == pytest.approx(3600, abs=1)
    # always_replay executes the run again after each record: its past is told again,
    # as replayed, and never as live twice.
    replayed = rec.kinds(replayed=True)
    assert "timer_set" in replayed
    assert "timer_fired" in replayed
    assert [e.kind for e in live].count("timer_fired") == 1
    assert [e.kind for e in live].count("run_completed") == 1


def test_parallel_branches_tell_their_attempts_with_the_block_position() -> None:
    rec = Recorder()
    with engine_with(rec, workflows=[fans]) as engine:
        assert engine.run(fans) == [2, 4, 6]
    completed = [e for e in rec.events if e.kind == "step_completed"]
    assert sorted(e.branch for e in completed if e.branch is not None) == [0, 1, 2]
    assert {e.position for e in completed} == {1}
    started = [e for e in rec.events if e.kind == "step_started"]
    assert len(started) == 3
    assert all(e.step == "obs.twice" for e in started)


def test_a_child_run_is_told_with_its_parent() -> None:
    rec = Recorder()
    with engine_with(rec, workflows=[parent, adds]) as engine:
        assert engine.run(parent) == 1
    child_started = next(e for e in rec.events if e.kind == "child_started")
    child_run = next(e for e in rec.events if e.kind == "run_started" and e.parent)
    assert child_run.run_id == child_started.other_run
    assert child_run.workflow == "obs.adds"


def test_an_observer_that_raises_changes_no_result_and_no_history(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = Raising()
    rec = Recorder()
    with engine_with(bad, rec, workflows=[adds]) as engine:
        with caplog.at_level(logging.ERROR, logger="fluxo._observers"):
            assert engine.run(adds.options(id="a"), 3) == 3
            assert engine.run(adds.options(id="b"), 3) == 3
        history = [e.kind for e in engine.history("a")]
    with engine_with(workflows=[adds]) as plain:
        plain.run(adds.options(id="a"), 3)
        assert [e.kind for e in plain.history("a")] == history
    assert bad.calls == len(rec.events) > 0  # still called after failing
    failures = [r for r in caplog.records if "failed on" in r.getMessage()]
    kinds = {r.args[1] for r in failures if isinstance(r.args, tuple)}
    assert len(failures) == len(kinds)  # once per kind, not once per event
    assert "step_completed" in kinds
    assert "headers" in kinds


class Slow(fluxo.Observer):
    """Takes its time over every event, from its own thread."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.release = threading.Event()

    def step_completed(self, event: fluxo.RunEvent) -> None:
        self.release.wait(10)
        self.seen.append(event.kind)


def test_a_slow_observer_delays_no_run_and_gets_every_event_in_the_end() -> None:
    slow = Slow()
    with engine_with(slow, workflows=[adds]) as engine:
        assert engine.run(adds, 5) == 10  # returns while the observer still waits
        assert slow.seen == []
        slow.release.set()
        assert engine.observers.flush(5.0)
    assert slow.seen == ["step_completed"] * 5


def test_an_observer_called_from_its_own_thread_keeps_the_order_of_events() -> None:
    class Ordered(fluxo.Observer):
        def __init__(self) -> None:
            self.kinds: list[str] = []
            self.threads: set[str] = set()

        def _keep(self, event: fluxo.RunEvent) -> None:
            self.kinds.append(event.kind)
            self.threads.add(threading.current_thread().name)

        run_resumed = step_started = step_completed = run_completed = _keep

    ordered = Ordered()
    with engine_with(ordered, workflows=[adds]) as engine:
        engine.run(adds, 2)
    assert ordered.kinds == [
        "run_resumed",
        *["step_started", "step_completed"] * 2,
        "run_completed",
    ]
    assert ordered.threads == {"fluxo-observer-Ordered"}


def test_composite_observers_are_each_told_and_isolated() -> None:
    rec = Recorder()
    composite = observe.CompositeObserver([Raising(), rec])
    with engine_with(composite, workflows=[adds]) as engine:
        engine.run(adds, 1)
    assert "run_completed" in rec.kinds()
    # Called directly, it forwards too, and contains its members' failures.
    direct = observe.CompositeObserver([Raising(), other := Recorder()])
    event = fluxo.RunEvent(kind="run_failed", run_id="r", workflow="w", time=0.0)
    direct.run_failed(event)
    assert other.events == [event]


def test_bad_observers_are_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="pass an instance"):
        fluxo.Engine("memory://", workflows=[adds], observers=[Recorder])
    with pytest.raises(TypeError, match="none of the methods"):
        fluxo.Engine("memory://", workflows=[adds], observers=[object()])
    with pytest.raises(TypeError, match="takes a list of observers"):
        fluxo.Engine("memory://", workflows=[adds], observers=Recorder())  # type: ignore[arg-type]


def test_noop_observer_is_an_observer_that_does_nothing() -> None:
    with engine_with(observe.NoopObserver(), workflows=[adds]) as engine:
        assert engine.run(adds, 2) == 1
        assert not engine.observers.step_completed


def test_headers_are_recorded_with_the_run_and_told_in_every_event() -> None:
    class Tagger(Recorder):
        def headers(self, workflow: str, run_id: str, parent: Any) -> dict[str, str]:
            return {"x-origin": f"test:{workflow}"}

    tagger = Tagger()
    with engine_with(tagger, workflows=[parent, adds]) as engine:
        engine.run(parent.options(id="tagged"))
        assert engine.get_run("tagged").headers == {"x-origin": "test:obs.parent"}
    assert {e.headers["x-origin"] for e in tagger.events} == {"test:obs.parent", "test:obs.adds"}


def test_logging_observer_logs_structured_lines(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.fluxo.events")
    observer = observe.LoggingObserver(logger)
    with caplog.at_level(logging.DEBUG, logger="test.fluxo.events"):
        with engine_with(observer, workflows=[retries]) as engine:
            engine.run(retries.options(id="logged"), "k-log")
        assert engine.observers.flush(5.0)
    records = [r for r in caplog.records if r.name == "test.fluxo.events"]
    assert [r.fluxo_event for r in records] == [  # type: ignore[attr-defined]
        "run_started",
        "run_resumed",
        "step_started",
        "step_retried",
        "step_started",
        "step_completed",
        "run_completed",
    ]
    retried = records[3]
    assert retried.levelno == logging.WARNING
    assert retried.fluxo_run_id == "logged"  # type: ignore[attr-defined]
    assert retried.fluxo_step == "obs.flaky"  # type: ignore[attr-defined]
    assert retried.fluxo_attempt == 1  # type: ignore[attr-defined]
    assert "ValueError: not yet" in retried.getMessage()
    assert records[-1].levelno == logging.INFO


def test_basic_metrics_counts_events_latencies_and_runs() -> None:
    metrics = observe.BasicMetrics()
    with WorkflowEnvironment(observers=[metrics]) as env:
        assert env.run(adds, 4) == 6
        with pytest.raises(fluxo.WorkflowFailedError):
            env.run(fails)
    snap = metrics.snapshot()
    assert snap.events["step_completed"] == 4
    assert snap.events["step_failed"] == 1
    assert snap.events["run_completed"] == 1
    assert snap.events["run_failed"] == 1
    assert snap.replayed["step_completed"] >= 4  # always_replay replays each step
    latency = snap.steps["obs.add"]
    assert latency.count == 4
    assert latency.min <= latency.p50 <= latency.p99 <= latency.max
    assert latency.mean == pytest.approx(latency.total / 4)
    assert snap.runs == {"running": 0, "completed": 1, "failed": 1}
    metrics.reset()
    assert metrics.snapshot().events == {}


def test_basic_metrics_shows_a_run_executing_now() -> None:
    metrics = observe.BasicMetrics()
    inside = threading.Event()
    go_on = threading.Event()

    @fluxo.step(name="obs.blocking")
    def blocking() -> None:
        inside.set()
        go_on.wait(10)

    @fluxo.workflow(name="obs.blocks")
    def blocks() -> None:
        blocking()

    with engine_with(metrics, workflows=[blocks]) as engine:
        thread = threading.Thread(target=engine.run, args=(blocks,))
        thread.start()
        assert inside.wait(10)
        assert metrics.snapshot().runs["running"] == 1
        go_on.set()
        thread.join(10)
    assert metrics.snapshot().runs == {"running": 0, "completed": 1}


def test_observers_off_build_no_events(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[str] = []
    real = observe.RunEvent

    def counting(**fields: Any) -> fluxo.RunEvent:
        built.append(fields["kind"])
        return real(**fields)

    monkeypatch.setattr(observe, "RunEvent", counting)
    with engine_with(workflows=[adds, retries]) as engine:
        engine.run(adds, 3)
        engine.run(retries, "k-off")
    assert built == []


def test_events_take_the_engine_clock() -> None:
    rec = Recorder()
    start = time.time()
    with engine_with(rec, workflows=[adds]) as engine:
        engine.run(adds, 1)
    assert all(start - 1 <= e.time <= time.time() + 1 for e in rec.events)


class BadScope(fluxo.Observer):
    """A step_scope whose exit raises, or swallows the attempt's exception."""

    inline = True

    def __init__(self, how: str) -> None:
        self.how = how

    def step_scope(self, event: fluxo.RunEvent) -> Any:
        how = self.how

        class Scope:
            def __enter__(self) -> None:
                return None

            def __exit__(self, *exc: object) -> bool:
                if how == "raise":
                    raise RuntimeError("scope exit failed")
                return True  # would swallow the step's own exception

        return Scope()


@pytest.mark.parametrize("how", ["raise", "swallow"])
def test_a_step_scope_can_neither_fail_a_step_nor_hide_its_error(how: str) -> None:
    with engine_with(BadScope(how), workflows=[adds, fails]) as engine:
        assert engine.run(adds, 3) == 3
        with pytest.raises(fluxo.WorkflowFailedError, match="KeyError"):
            engine.run(fails.options(id="fails"))
        failed = [e for e in engine.history("fails") if e.kind == "step_failed"]
        assert len(failed) == 1
        assert b"builtins.KeyError" in (failed[0].data or b"")


def test_closing_waits_five_seconds_in_all_for_slow_observers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()

    class Stuck(fluxo.Observer):
        def run_completed(self, event: fluxo.RunEvent) -> None:
            release.wait(30)

    engine = engine_with(Stuck(), Stuck(), Stuck(), workflows=[adds])
    for _ in range(3):
        engine.run(adds, 1)
    with caplog.at_level(logging.WARNING, logger="fluxo._observers"):
        assert not engine.observers.flush(0.2)  # three stuck observers: 0.2 s in all
        engine.observers.close(0.2)
    release.set()
    engine.close()
    left = [r for r in caplog.records if "still queued when the engine closed" in r.getMessage()]
    assert len(left) == 3


def test_a_threaded_observer_hears_a_run_start_before_its_execution() -> None:
    class Order(fluxo.Observer):
        def __init__(self) -> None:
            self.kinds: list[str] = []

        def _keep(self, event: fluxo.RunEvent) -> None:
            self.kinds.append(event.kind)

        run_started = run_resumed = run_completed = _keep

    for _ in range(20):  # the first event of a fresh delivery thread is never overtaken
        order = Order()
        with engine_with(order, workflows=[adds]) as engine:
            engine.run(adds, 1)
            assert engine.flush_observers(5.0)
        assert order.kinds == ["run_started", "run_resumed", "run_completed"]


def test_add_observer_takes_one_observer_not_a_list() -> None:
    with engine_with(workflows=[adds]) as engine, pytest.raises(TypeError, match="not a list"):
        engine.add_observer([Recorder()])


def test_a_run_end_minus_its_duration_is_its_creation_even_as_the_clock_moves() -> None:
    ticks = iter(float(n) for n in range(1_000_000, 2_000_000))

    def ticking() -> float:  # every reading is a second later than the last
        return next(ticks)

    rec = Recorder()
    with fluxo.Engine("memory://", workflows=[adds], clock=ticking, observers=[rec]) as engine:
        engine.run(adds.options(id="ticking"), 2)
        created = engine.get_run("ticking").created_at
    [ended] = [e for e in rec.events if e.kind == "run_completed"]
    assert ended.duration is not None
    assert ended.time - ended.duration == created  # one reading gives both


def test_an_observer_may_not_return_fluxos_own_headers(caplog: pytest.LogCaptureFixture) -> None:
    class Faker(Recorder):
        def headers(self, workflow: str, run_id: str, parent: Any) -> dict[str, str]:
            return {"fluxo-forked-from": "elsewhere"}

    with engine_with(Faker(), workflows=[adds]) as engine:
        with caplog.at_level(logging.ERROR, logger="fluxo._observers"):
            engine.start(adds.options(id="faked"), 1)
        assert engine.get_run("faked").headers == {}  # a failing observer's headers are dropped
    assert "headers starting 'fluxo-' are Fluxo's own" in caplog.text
