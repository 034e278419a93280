"""Schedules: ``@fluxo.schedule``, the schedule's run, catch-up, pause/resume/trigger, DST."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import fluxo
from fluxo import _schedule_loop, _schedules, history
from fluxo.testing import WorkflowEnvironment

from .conftest import MakeEngine
from .helpers import FakeClock


@fluxo.schedule(every=timedelta(seconds=10))
@fluxo.workflow(name="every10")
def every10(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.schedule(every=timedelta(seconds=10), catch_up="all")
@fluxo.workflow(name="every10-all")
def every10_all(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.schedule(every=10, catch_up="all", catch_up_window=timedelta(seconds=35))
@fluxo.workflow(name="every10-window")
def every10_window(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.schedule(every=10, catch_up="skip")
@fluxo.workflow(name="every10-skip")
def every10_skip(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.schedule(every=timedelta(seconds=20))
@fluxo.workflow(name="every10")
def every10_redeployed(tick: datetime) -> str:
    """``every10`` as a later deploy defines it: every 20 seconds."""
    return tick.isoformat()


@fluxo.schedule("0 2 * * *", tz="Europe/Helsinki")
@fluxo.workflow(name="nightly")
def nightly(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.workflow(name="plain")
def plain(tick: datetime) -> str:
    return tick.isoformat()


T = 1_900_000_000.0
"""A clock start on a multiple of ten seconds: 2030-03-17T17:46:40Z."""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T)


def ticks(engine: fluxo.Engine, wf: fluxo.Workflow[Any, Any]) -> list[str]:
    """The ids of the runs of ``wf`` (its ticks' and triggers'), oldest first."""
    return sorted(run.id for run in engine.list_runs(workflow=wf, limit=1000))


def tick(name: str, offset: float) -> str:
    return _schedules.tick_id(name, T + offset)


# -- decoration ---------------------------------------------------------------------------


def test_the_schedule_is_an_attribute_of_a_copy_of_the_workflow() -> None:
    assert every10.schedule == _schedules.Schedule(every=10)
    assert every10.scheduler is not None
    assert every10.scheduler.name == "fluxo.schedule:every10"
    assert plain.schedule is None
    scheduled = fluxo.schedule(every=60)(plain)
    assert plain.schedule is None  # decorating touched nothing but the copy
    assert scheduled.schedule == _schedules.Schedule(every=60)
    assert scheduled.name == plain.name


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (fluxo.schedule, "give a cron expression"),
        (lambda: fluxo.schedule("* * * * *", every=5), "not both"),
        (lambda: fluxo.schedule("61 * * * *"), "does not parse"),
        (lambda: fluxo.schedule("hello"), "does not parse"),
        (lambda: fluxo.schedule("0 0 31 2 *"), "never fires"),
        (lambda: fluxo.schedule("0 2 * * *", tz="Mars/Olympus"), "not a time zone"),
        (lambda: fluxo.schedule(every=0.5), "whole number of seconds, at least 1"),
        (lambda: fluxo.schedule(every=timedelta(seconds=1.5)), "whole number of seconds"),
        (lambda: fluxo.schedule(every="5m"), "takes a timedelta or seconds"),  # type: ignore[arg-type]
        (lambda: fluxo.schedule(every=10**12), "at most 100 years"),
        (lambda: fluxo.schedule(every=timedelta(days=999_999_999)), "at most 100 years"),
        (lambda: fluxo.schedule(every=5, catch_up="some"), "catch_up= takes 'latest'"),  # type: ignore[arg-type]
        (lambda: fluxo.schedule(every=5, catch_up_window=60), "is for catch_up='all'"),
        (
            lambda: fluxo.schedule(every=5, catch_up="all", catch_up_window=-1),
            "positive duration",
        ),
    ],
)
def test_a_bad_spec_is_refused_at_decoration(call: Any, message: str) -> None:
    with pytest.raises(fluxo.DefinitionError, match="@fluxo.schedule: .*" + message):
        call()


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(fluxo.DefinitionError) as caught:
        fluxo.schedule("nope", tz="Nowhere/Else", catch_up="never")  # type: ignore[arg-type]
    text = str(caught.value)
    assert "does not parse" in text
    assert "not a time zone" in text
    assert "catch_up=" in text


def test_the_schedule_goes_on_a_workflow_not_on_a_function() -> None:
    def job(tick: datetime) -> None: ...

    with pytest.raises(fluxo.DefinitionError, match=r"goes above @fluxo\.workflow"):
        fluxo.schedule(every=5)(job)  # type: ignore[type-var]


def _workflow(fn: Any, name: str) -> fluxo.Workflow[Any, Any]:
    return fluxo.workflow(name=name)(fn)


def test_a_workflow_that_does_not_take_one_argument_is_refused() -> None:
    def none() -> None: ...

    def two(a: datetime, b: int) -> None: ...

    def annotated(when: int) -> None: ...

    def defaults(tick: datetime, retries: int = 3) -> None: ...

    for fn, message in [
        (none, "takes the tick's time as its one argument"),
        (two, "takes the tick's time as its one argument"),
        (annotated, "annotate it 'when: datetime'"),
    ]:
        with pytest.raises(fluxo.DefinitionError, match=message):
            fluxo.schedule(every=5)(_workflow(fn, fn.__name__))
    assert fluxo.schedule(every=5)(_workflow(defaults, "defaults")).schedule is not None


def test_a_name_the_runs_ids_cannot_hold_is_refused() -> None:
    def job(tick: datetime) -> None: ...

    with pytest.raises(fluxo.DefinitionError, match="its name holds '~'"):
        fluxo.schedule(every=5)(_workflow(job, "a~b"))
    with pytest.raises(fluxo.DefinitionError, match="a scheduled workflow's name has at most"):
        fluxo.schedule(every=5)(_workflow(job, "j" * 240))


def test_a_workflow_has_one_schedule() -> None:
    with pytest.raises(fluxo.DefinitionError, match="has a schedule already"):
        fluxo.schedule(every=60)(every10)


# -- ticks --------------------------------------------------------------------------------


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_interval_ticks_fall_on_multiples_of_the_interval() -> None:
    spec = _schedules.Schedule(every=3600)
    assert spec.next_after(utc("2030-01-01T10:15:00")) == utc("2030-01-01T11:00:00")
    assert spec.next_after(utc("2030-01-01T11:00:00")) == utc("2030-01-01T12:00:00")
    due = spec.ticks_back(utc("2030-01-01T10:00:00"), utc("2030-01-01T13:30:00"), 10)
    assert due == [
        utc("2030-01-01T13:00:00"),
        utc("2030-01-01T12:00:00"),
        utc("2030-01-01T11:00:00"),
    ]
    assert spec.ticks_back(utc("2030-01-01T10:00:00"), utc("2030-01-01T13:30:00"), 2) == due[:2]


def test_cron_ticks_read_wall_clock_time_in_the_zone() -> None:
    spec = _schedules.Schedule(cron="0 2 * * *", tz="Europe/Helsinki")
    winter = spec.next_after(utc("2030-01-01T12:00:00"))
    assert winter == utc("2030-01-02T00:00:00")  # 02:00 at UTC+2
    summer = spec.next_after(utc("2030-07-01T12:00:00"))
    assert summer == utc("2030-07-01T23:00:00")  # 02:00 at UTC+3
    assert spec.tick_time(summer) == datetime(2030, 7, 2, 2, 0, tzinfo=ZoneInfo("Europe/Helsinki"))
    due = spec.ticks_back(utc("2030-01-01T12:00:00"), utc("2030-01-04T12:00:00"), 10)
    assert due == [utc("2030-01-04T00:00:00"), utc("2030-01-03T00:00:00"), winter]


def helsinki(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_a_time_the_clocks_skip_runs_when_they_jump() -> None:
    """Spring forward in Helsinki (2027-03-28): 03:00 becomes 04:00, so 03:30 never comes."""
    spec = _schedules.Schedule(cron="30 3 * * *", tz="Europe/Helsinki")
    saturday = helsinki("2027-03-27T03:30:00+02:00")
    sunday = spec.next_after(saturday)
    assert sunday == helsinki("2027-03-28T04:00:00+03:00")  # at the jump, once
    assert spec.next_after(sunday) == helsinki("2027-03-29T03:30:00+03:00")
    assert spec.ticks_back(saturday, helsinki("2027-03-29T12:00:00+03:00"), 10) == [
        helsinki("2027-03-29T03:30:00+03:00"),
        sunday,
    ]


def test_a_time_the_clocks_pass_twice_runs_once_unless_every_hour() -> None:
    """Fall back in Helsinki (2027-10-31): 04:00 becomes 03:00, so 03:30 comes twice."""
    daily = _schedules.Schedule(cron="30 3 * * *", tz="Europe/Helsinki")
    first = helsinki("2027-10-31T03:30:00+03:00")
    assert daily.next_after(helsinki("2027-10-30T12:00:00+03:00")) == first
    assert daily.next_after(first) == helsinki("2027-11-01T03:30:00+02:00")
    assert daily.ticks_back(first - 1, helsinki("2027-10-31T12:00:00+02:00"), 10) == [first]
    hourly = _schedules.Schedule(cron="0 * * * *", tz="Europe/Helsinki")
    after = hourly.ticks_back(
        helsinki("2027-10-31T02:30:00+03:00"), helsinki("2027-10-31T04:30:00+02:00"), 10
    )
    assert after == [  # two real hours apart: both run
        helsinki("2027-10-31T04:00:00+02:00"),
        helsinki("2027-10-31T03:00:00+02:00"),
        helsinki("2027-10-31T03:00:00+03:00"),
    ]


def test_the_ids_of_the_runs_a_schedule_starts() -> None:
    assert _schedules.tick_id("report", utc("2030-01-01T02:00:00")) == "report@2030-01-01T02:00:00Z"
    assert (
        _schedules.trigger_id("report", utc("2030-01-01T02:00:00") + 0.25)
        == "report@trigger-2030-01-01T02:00:00.250000Z"
    )
    assert _schedules.Schedule(every=300).describe() == "every 5m"
    assert _schedules.Schedule(cron="0 2 * * *", tz="UTC").describe() == "cron '0 2 * * *' (UTC)"


# -- running ------------------------------------------------------------------------------


def test_each_tick_starts_one_run_with_its_time_however_many_workers(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(every10)
    workers = [engine.worker(sticky=0) for _ in range(3)]
    for worker in workers:
        worker.process_one()  # each starts the schedule: one run
    assert [r.id for r in engine.list_runs(workflow=every10.scheduler)] == [
        "fluxo.schedule:every10"
    ]
    for step in range(1, 6):
        clock.advance(10)
        for worker in workers[step % 3 :] + workers[: step % 3]:
            worker.process_one()
    assert ticks(engine, every10) == [tick("every10", 10 * k) for k in range(1, 6)]
    first = engine.handle(tick("every10", 10))
    assert first.result(timeout=0) == datetime.fromtimestamp(T + 10, timezone.utc).isoformat()
    assert engine.get_run(tick("every10", 10)).parent == "fluxo.schedule:every10"


def test_a_tick_is_given_its_time_in_the_schedules_zone(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    clock.now = utc("2030-01-01T23:59:00")
    engine = make_engine(nightly)
    worker = engine.worker(sticky=0)
    worker.process_one()
    clock.now = utc("2030-01-02T00:00:01")
    worker.process_one()
    (run_id,) = ticks(engine, nightly)
    assert run_id == "nightly@2030-01-02T00:00:00Z"
    assert engine.handle(run_id).result(timeout=0) == "2030-01-02T02:00:00+02:00"


def test_a_new_schedule_starts_with_its_next_tick(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    clock.advance(5)
    engine = make_engine(every10)
    assert engine.schedules.get(every10).status == "not started"
    worker = engine.worker(sticky=0)
    worker.process_one()
    assert ticks(engine, every10) == []
    info = engine.schedules.get("every10")
    assert info.status == "waiting"
    assert info.next_tick == datetime.fromtimestamp(T + 10, timezone.utc)
    assert (info.last_tick, info.last_run, info.paused) == (None, None, False)


def _down(engine: fluxo.Engine, clock: FakeClock, seconds: float) -> fluxo.Worker:
    """Run the schedule to T+10, stop every worker for ``seconds``, start a new one."""
    engine.worker(sticky=0).process_one()
    clock.advance(10)
    engine.worker(sticky=0).process_one()
    clock.advance(seconds)
    worker = engine.worker(sticky=0)
    worker.process_one()
    return worker


def test_catch_up_latest_starts_only_the_most_recent_missed_tick(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(every10)
    worker = _down(engine, clock, 45)  # T+55: 20, 30, 40, 50 were missed
    assert ticks(engine, every10) == [tick("every10", 10), tick("every10", 50)]
    clock.advance(5)
    worker.process_one()
    assert ticks(engine, every10)[-1] == tick("every10", 60)


def test_catch_up_all_starts_every_missed_tick(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(every10_all)
    _down(engine, clock, 45)
    assert ticks(engine, every10_all) == [tick("every10-all", 10 * k) for k in range(1, 6)]


def test_catch_up_all_goes_back_as_far_as_its_window(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(every10_window)
    _down(engine, clock, 95)  # T+105: 20..100 missed; the window reaches back to T+70
    assert ticks(engine, every10_window) == [
        tick("every10-window", offset) for offset in (10, 70, 80, 90, 100)
    ]


def test_catch_up_all_starts_at_most_a_thousand(
    make_engine: MakeEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_schedules, "MAX_CATCH_UP", 3)
    engine = make_engine(every10_all)
    _down(engine, clock, 95)
    assert ticks(engine, every10_all) == [tick("every10-all", o) for o in (10, 80, 90, 100)]


def test_catch_up_skip_starts_no_missed_tick(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(every10_skip)
    worker = _down(engine, clock, 45)  # T+55: 50 is 5 s late, within a minute: on time
    assert ticks(engine, every10_skip) == [tick("every10-skip", 10), tick("every10-skip", 50)]
    clock.advance(5 + 60 + 1)  # T+121: 120 is on time, 60..110 missed
    worker.process_one()
    assert ticks(engine, every10_skip)[-1] == tick("every10-skip", 120)
    assert len(ticks(engine, every10_skip)) == 3


def test_catch_up_skip_drops_a_tick_more_than_a_minute_late(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    @fluxo.schedule(every=3600, catch_up="skip")
    @fluxo.workflow(name="hourly-skip")
    def hourly(tick: datetime) -> None: ...

    clock.now = utc("2030-01-01T09:30:00")
    engine = make_engine(hourly)
    engine.worker(sticky=0).process_one()
    clock.now = utc("2030-01-01T10:01:30")  # down from 09:30 to 10:01:30: 10:00 is 90 s late
    worker = engine.worker(sticky=0)
    worker.process_one()
    assert ticks(engine, hourly) == []
    assert engine.schedules.get(hourly).next_tick == datetime(
        2030, 1, 1, 11, tzinfo=ZoneInfo("UTC")
    )
    clock.now = utc("2030-01-01T11:00:30")
    worker.process_one()
    assert ticks(engine, hourly) == ["hourly-skip@2030-01-01T11:00:00Z"]


# -- steering -----------------------------------------------------------------------------


def test_pause_resume_and_trigger(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(every10)
    worker = engine.worker(sticky=0)
    worker.process_one()
    clock.advance(10)
    worker.process_one()
    engine.schedules.pause(every10)
    worker.process_one()
    info = engine.schedules.get(every10)
    assert info.paused
    assert info.next_tick is None
    clock.advance(30)
    worker.process_one()
    assert ticks(engine, every10) == [tick("every10", 10)]
    triggered = engine.schedules.trigger(every10)  # paused or not
    assert triggered == _schedules.trigger_id("every10", T + 40)
    worker.process_one()
    assert (
        engine.handle(triggered).result(timeout=0)
        == datetime.fromtimestamp(T + 40, timezone.utc).isoformat()
    )
    clock.advance(5)
    engine.schedules.resume("every10")
    worker.process_one()  # 20, 30, 40 fell in the pause: skipped, not caught up
    info = engine.schedules.get(every10)
    assert not info.paused
    assert info.last_run == triggered
    assert info.next_tick == datetime.fromtimestamp(T + 50, ZoneInfo("UTC"))
    clock.advance(5)
    worker.process_one()
    assert ticks(engine, every10) == [tick("every10", 10), tick("every10", 50), triggered]


def test_a_pause_sent_while_every_worker_is_down_holds_from_when_it_was_sent(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(every10_all)
    engine.worker(sticky=0).process_one()
    clock.advance(25)  # down: 10 and 20 are missed
    engine.schedules.pause(every10_all)
    clock.advance(20)  # 30 and 40 came after the pause
    engine.worker(sticky=0).process_one()
    assert ticks(engine, every10_all) == [tick("every10-all", 10), tick("every10-all", 20)]
    assert engine.schedules.get(every10_all).paused


def test_steering_an_unknown_schedule_names_the_known_ones(make_engine: MakeEngine) -> None:
    engine = make_engine(every10, plain)
    with pytest.raises(
        fluxo.UnknownWorkflowError, match=r"no scheduled workflow named 'plain'.*\['every10'\]"
    ):
        engine.schedules.pause("plain")
    with pytest.raises(fluxo.DefinitionError, match="named by its workflow"):
        engine.schedules.get(42)  # type: ignore[arg-type]
    assert [info.workflow for info in engine.schedules.list()] == ["every10"]


def test_a_bad_control_message_is_dropped_and_logged(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(every10)
    worker = engine.worker(sticky=0)
    worker.process_one()
    engine.signal("fluxo.schedule:every10", "schedule", {"op": "explode"})
    bad = _schedules.Schedule(cron="not cron")
    engine.signal("fluxo.schedule:every10", "schedule", {"op": "update", "spec": bad})
    engine.signal("fluxo.schedule:every10", "schedule", "not even a message")
    with caplog.at_level(logging.WARNING):
        worker.process_one()
    assert "ignored the message" in caplog.text
    assert "ignored a new spec" in caplog.text
    clock.advance(10)
    worker.process_one()
    assert ticks(engine, every10) == [tick("every10", 10)]


@pytest.mark.parametrize("at", [1e300, -1e300, 1e18, None])
def test_a_trigger_at_a_time_no_run_id_can_hold_is_dropped_and_logged(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture, at: Any
) -> None:
    engine = make_engine(every10)
    worker = engine.worker(sticky=0)
    worker.process_one()
    engine.signal("fluxo.schedule:every10", "schedule", {"op": "trigger", "at": at})
    with caplog.at_level(logging.WARNING):
        worker.process_one()
    assert "ignored the message" in caplog.text
    clock.advance(10)
    worker.process_one()
    assert engine.schedules.get(every10).status == "waiting"
    assert ticks(engine, every10) == [tick("every10", 10)]


def test_a_stopped_schedule_says_how_to_start_it_again(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(every10)
    engine.worker(sticky=0).process_one()
    engine.cancel("fluxo.schedule:every10")
    engine.worker(sticky=0).process_one()
    with caplog.at_level(logging.WARNING):
        engine.worker(sticky=0).process_one()
    assert "schedule every10 is stopped: its run fluxo.schedule:every10 is cancelled" in caplog.text
    with pytest.raises(fluxo.RunStateError, match=r"engine\.purge"):
        engine.schedules.pause(every10)
    assert engine.schedules.get(every10).status == "cancelled"
    clock.advance(1)
    assert engine.purge(older_than=0, workflow=every10.scheduler) == 1
    engine.worker(sticky=0).process_one()
    assert engine.schedules.get(every10).status == "waiting"


def test_a_schedule_that_cannot_start_stops_neither_the_others_nor_the_worker(
    make_engine: MakeEngine, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(every10, nightly, plain)
    when = datetime.fromtimestamp(T, timezone.utc)
    engine.start(plain.options(id="fluxo.schedule:every10"), when)  # its id is taken
    engine.start(plain.options(id="other"), when)
    with pytest.raises(fluxo.RunIdConflictError):
        engine.schedules.start()
    assert engine.schedules.get(nightly).status == "pending"  # started all the same

    with caplog.at_level(logging.ERROR):
        engine.worker(sticky=0).process_one()

    assert "a schedule cannot start" in caplog.text
    assert engine.handle("other").result(timeout=0) == when.isoformat()
    assert engine.schedules.get(nightly).status == "waiting"


# -- deploys and long lives ---------------------------------------------------------------


def test_a_changed_spec_takes_effect_when_a_worker_with_it_starts(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = fluxo.open_store("memory://")
    old = make_engine(every10, store=store)
    old.worker(sticky=0).process_one()
    clock.advance(10)
    old.worker(sticky=0).process_one()
    clock.advance(5)  # T+15: the new code says every 20 s
    new = make_engine(every10_redeployed, store=store)
    worker = new.worker(sticky=0)
    worker.process_one()
    assert new.schedules.get("every10").schedule.every == 20
    for _ in range(5):
        clock.advance(10)
        worker.process_one()
    assert ticks(new, every10_redeployed) == [tick("every10", o) for o in (10, 20, 40, 60)]
    worker.process_one()  # a second start with the same spec sends nothing
    assert sum(1 for e in new.history("fluxo.schedule:every10") if e.kind == "signal_received") == 1


def test_the_schedule_continues_as_new_and_keeps_its_state(
    make_engine: MakeEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_schedule_loop, "ITERATIONS", 3)
    engine = make_engine(every10)
    worker = engine.worker(sticky=0)
    worker.process_one()
    for _ in range(4):
        clock.advance(10)
        worker.process_one()
    engine.schedules.pause(every10)
    for _ in range(4):
        clock.advance(10)
        worker.process_one()
    info = engine.schedules.get(every10)
    assert info.run_id.startswith("fluxo.schedule:every10~")
    assert info.paused
    assert info.last_tick == datetime.fromtimestamp(T + 40, ZoneInfo("UTC"))
    engine.schedules.resume(every10)
    worker.process_one()
    clock.advance(10)
    worker.process_one()
    assert ticks(engine, every10) == [tick("every10", 10 * k) for k in (1, 2, 3, 4, 9)]
    runs = engine.list_runs(workflow=every10.scheduler)
    assert sum(not r.status.is_terminal for r in runs) == 1
    for run in runs:
        assert len(engine.history(run.id)) < 40


def test_a_schedule_in_the_time_skipping_environment() -> None:
    start = datetime(2030, 1, 1, 23, 0, tzinfo=timezone.utc)
    with WorkflowEnvironment(workflows=[nightly], start_time=start) as env:
        env.engine.schedules.start()
        env.advance(timedelta(days=3))
        runs = ticks(env.engine, nightly)
    assert runs == [f"nightly@2030-01-0{d}T00:00:00Z" for d in (2, 3, 4)]


def test_the_schedule_run_replays_what_it_recorded_whatever_the_tick_arithmetic_says_now(
    make_engine: MakeEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new croniter or time zone database cannot change the ticks a history started."""
    from fluxo import testing

    engine = make_engine(every10_all)
    _down(engine, clock, 35)
    engine.schedules.trigger(every10_all)
    engine.worker(sticky=0).process_one()
    events = engine.history("fluxo.schedule:every10-all")
    assert [e.kind for e in events].count("child_started") == 5
    assert not any(isinstance(e, history.WorkflowFailed) for e in events)
    document = engine.export_history("fluxo.schedule:every10-all")
    assert every10_all.scheduler is not None
    testing.replay(document, workflows=[every10_all.scheduler])
    monkeypatch.setattr(_schedules.Schedule, "ticks_back", lambda *args: [T + 5.0])
    testing.replay(document, workflows=[every10_all.scheduler])


def test_purge_keeps_the_runs_of_the_ticks_the_current_schedule_run_started(
    make_engine: MakeEngine, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_schedule_loop, "ITERATIONS", 3)
    engine = make_engine(every10)
    worker = engine.worker(sticky=0)
    worker.process_one()
    for _ in range(5):
        clock.advance(10)
        worker.process_one()
    clock.advance(3600)
    by_parent = {run.id: run.parent for run in engine.list_runs(workflow=every10)}
    active = engine.schedules.get(every10).run_id
    assert len(by_parent) == 5
    assert 0 < list(by_parent.values()).count(active) < 5

    purged = engine.purge(older_than=timedelta(minutes=30), workflow=every10)

    # a tick's run is a child of the schedule's run that started it: kept while that
    # run goes on (docs/schedules.md, "Costs and retention")
    kept = {run.id: run.parent for run in engine.list_runs(workflow=every10)}
    assert set(kept.values()) == {active}
    assert purged == 5 - len(kept)


def test_a_schedules_own_run_cannot_be_forked(make_engine: MakeEngine) -> None:
    engine = make_engine(every10)
    engine.worker(sticky=0).process_one()  # the worker starts the schedule's run
    own = f"fluxo.schedule:{every10.name}"
    with pytest.raises(fluxo.RunStateError, match=r"is Fluxo's own.*engine\.schedules"):
        engine.fork(own, from_position=1)
