"""``fluxo.set_event`` / ``engine.get_event`` / ``engine.watch_event``, and ``fluxo.info()``."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fluxo
from fluxo import history

from .conftest import MakeEngine
from .helpers import T0, WAIT, FakeClock, execute, named

Status = fluxo.RunStatus
BODY: list[str] = []


@pytest.fixture(autouse=True)
def _reset_body() -> None:
    BODY.clear()


@dataclass
class Progress:
    done: int
    of: int


@fluxo.step(name="ev.work")
def work(i: int) -> int:
    BODY.append(f"work {i}")
    return i


@fluxo.workflow(name="ev.batch")
def batch(n: int) -> str:
    for i in range(n):
        work(i)
        fluxo.set_event("progress", Progress(i + 1, n))
        fluxo.wait_for_signal("next")
    fluxo.set_event("state", "done")
    return "ok"


@fluxo.workflow(name="ev.quiet")
def quiet() -> str:
    fluxo.wait_for_signal("go")
    return "quiet"


@fluxo.workflow(name="ev.who")
def who() -> dict[str, Any]:
    first = fluxo.info()
    work(1)
    fail = fluxo.wait_for_signal("fail", type=bool)
    again = fluxo.info()
    if fail and again.attempt == 1:
        raise RuntimeError("asked to fail")
    return {
        "id": first.run_id,
        "workflow": first.workflow,
        "parent": first.parent,
        "started": first.started_at.isoformat(),
        "attempts": [first.attempt, again.attempt],
        "headers": dict(first.headers),
    }


@fluxo.workflow(name="ev.parent")
def parent() -> dict[str, Any]:
    return who()


@fluxo.workflow(name="ev.chain")
def chain(round: int) -> int:
    fluxo.set_event("round", round)
    if round < 3:
        fluxo.continue_as_new(round + 1)
    return round


@fluxo.workflow(name="ev.bad_value")
def bad_value() -> str:
    try:
        fluxo.set_event("x", object())
    except fluxo.EncodeError as exc:
        return f"refused: {type(exc).__name__}"
    return "kept"


@fluxo.workflow(name="ev.async")
async def async_events(n: int) -> int:
    for i in range(n):
        await work.call_async(i)
        fluxo.set_event("step", i)
    return n


@fluxo.step(name="ev.in_step")
def step_setting_an_event() -> None:
    fluxo.set_event("x", 1)


@fluxo.workflow(name="ev.from_step")
def from_step() -> None:
    step_setting_an_event()


def test_set_event_is_recorded_once_and_replayed(make_engine: MakeEngine) -> None:
    engine = make_engine(batch)
    run = engine.start(batch.options(id="b1"), 2).id
    execute(engine, run)
    assert engine.get_event(run, "progress", type=Progress) == Progress(1, 2)
    engine.signal(run, "next")
    execute(engine, run)  # replays the first set_event: recorded once
    engine.signal(run, "next")
    execute(engine, run)
    kinds = [k for k, name in named(engine.history(run)) if k == "event_set"]
    assert len(kinds) == 3
    assert engine.get_event(run, "progress", type=Progress) == Progress(2, 2)
    assert engine.get_event(run, "state") == "done"
    assert list(engine.watch_event(run, "progress", type=Progress)) == [
        Progress(1, 2),
        Progress(2, 2),
    ]
    assert BODY == ["work 0", "work 1"]  # replays ran no step again


def test_the_value_goes_through_the_codec(make_engine: MakeEngine) -> None:
    engine = make_engine(batch)
    run = engine.start(batch.options(id="b2"), 1).id
    execute(engine, run)
    assert engine.get_event(run, "progress") == {"done": 1, "of": 1}  # plain JSON by default
    event = next(e for e in engine.history(run) if isinstance(e, history.EventSet))
    assert event.name == "progress"
    assert event.data == b'{"done":1,"of":1}'


def test_get_event_waits_for_the_first_value(make_engine: MakeEngine) -> None:
    engine = make_engine(batch, clock=__import__("time").time)
    run = engine.start(batch.options(id="b3"), 1).id
    found: list[Any] = []
    reader = threading.Thread(target=lambda: found.append(engine.get_event(run, "progress")))
    reader.start()
    reader.join(0.2)
    assert reader.is_alive()  # nothing set yet: it waits
    execute(engine, run)
    reader.join(WAIT)
    assert found == [{"done": 1, "of": 1}]


def test_get_event_times_out_with_a_clear_error(make_engine: MakeEngine) -> None:
    engine = make_engine(quiet)
    run = engine.start(quiet.options(id="q1")).id
    with pytest.raises(fluxo.EventTimeout, match=r"'q1' set no new value of event 'k'.*pending"):
        engine.get_event(run, "k", timeout=0.05)
    with pytest.raises(TimeoutError):
        engine.get_event(run, "k", timeout=timedelta(0))


def test_a_run_that_ended_without_the_key_fails_at_once(make_engine: MakeEngine) -> None:
    engine = make_engine(batch)
    run = engine.start(batch.options(id="b4"), 0).id
    execute(engine, run)
    with pytest.raises(fluxo.RunStateError, match="ended without setting event 'progress'"):
        engine.get_event(run, "progress", timeout=30)
    assert list(engine.watch_event(run, "progress")) == []


def test_watch_event_yields_every_value_in_order_as_it_is_set(make_engine: MakeEngine) -> None:
    engine = make_engine(batch, clock=__import__("time").time)
    run = engine.start(batch.options(id="b5"), 4).id
    seen: list[int] = []

    def watch() -> None:
        for value in engine.watch_event(run, "progress", timeout=WAIT, type=Progress):
            seen.append(value.done)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with engine.worker(concurrency=1):
        for _ in range(4):
            engine.signal(run, "next")
        assert engine.handle(run).result(timeout=WAIT) == "ok"
    watcher.join(WAIT)
    assert not watcher.is_alive()
    assert seen == [1, 2, 3, 4]


def test_watch_event_times_out_between_values(make_engine: MakeEngine) -> None:
    engine = make_engine(batch)
    run = engine.start(batch.options(id="b6"), 2).id
    execute(engine, run)
    values = engine.watch_event(run, "progress", timeout=0.05)
    assert next(values) == {"done": 1, "of": 2}
    with pytest.raises(fluxo.EventTimeout):
        next(values)


def test_events_follow_a_chain_of_continue_as_new(make_engine: MakeEngine) -> None:
    engine = make_engine(chain)
    run = engine.start(chain.options(id="c1"), 1).id
    for run_id in ("c1", "c1~1", "c1~2"):
        execute(engine, run_id)
    assert engine.get_event(run, "round") == 3
    assert list(engine.watch_event(run, "round")) == [1, 2, 3]


def test_a_value_that_cannot_be_encoded_raises_in_the_workflow(make_engine: MakeEngine) -> None:
    engine = make_engine(bad_value)
    run = engine.start(bad_value.options(id="v1")).id
    execute(engine, run)
    assert engine.handle(run).result(timeout=0) == "refused: EncodeError"
    assert not any(isinstance(e, history.EventSet) for e in engine.history(run))


def test_async_workflows_set_events(make_engine: MakeEngine) -> None:
    engine = make_engine(async_events)
    run = engine.start(async_events.options(id="a1"), 3).id
    execute(engine, run)
    assert list(engine.watch_event(run, "step")) == [0, 1, 2]


def test_async_engine_reads_events(make_engine: MakeEngine) -> None:
    engine = make_engine(batch)
    run = engine.start(batch.options(id="b7"), 1).id
    execute(engine, run)
    engine.signal(run, "next")
    execute(engine, run)

    async def read() -> tuple[Any, list[Any]]:
        async with fluxo.AsyncEngine(engine) as aengine:
            latest = await aengine.get_event(run, "state")
            every = [v async for v in aengine.watch_event(run, "progress", type=Progress)]
            return latest, every

    assert asyncio.run(read()) == ("done", [Progress(1, 1)])


def test_a_cancelled_async_wait_for_an_event_gives_its_thread_back(
    make_engine: MakeEngine,
) -> None:
    """A progress page whose client left must not hold the AsyncEngine's threads."""
    engine = make_engine(quiet)
    run = engine.start(quiet.options(id="q1")).id
    execute(engine, run)  # waits for its signal, and sets no event before it

    async def abandon_then_list() -> list[str]:
        async with fluxo.AsyncEngine(engine, max_threads=2) as aengine:

            async def watch() -> None:
                async for _ in aengine.watch_event(run, "never"):
                    pass

            waits = [asyncio.create_task(aengine.get_event(run, "never")) for _ in range(2)]
            waits += [asyncio.create_task(watch()) for _ in range(2)]
            while engine.store.get_run(run).status is not Status.WAITING:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # each wait is in a thread of the engine, or queued
            for wait in waits:
                wait.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
            listed = await asyncio.wait_for(aengine.list_runs(), WAIT)
            return [r.id for r in listed]

    assert asyncio.run(abandon_then_list()) == [run]


def test_set_event_outside_a_workflow_is_refused(make_engine: MakeEngine) -> None:
    with pytest.raises(fluxo.DefinitionError, match="not in a step or outside a run"):
        fluxo.set_event("k", 1)
    engine = make_engine(from_step)
    run = engine.start(from_step.options(id="s1")).id
    execute(engine, run)
    with pytest.raises(fluxo.WorkflowFailedError, match="not in a step"):
        engine.handle(run).result(timeout=0)


@pytest.mark.parametrize(
    ("key", "problem"),
    [(3, "as text"), ("", "1 to 255"), ("k" * 256, "1 to 255"), ("a\nb", "control")],
)
def test_bad_keys_are_refused(make_engine: MakeEngine, key: Any, problem: str) -> None:
    engine = make_engine(quiet)
    run = engine.start(quiet.options(id="q2")).id
    with pytest.raises(fluxo.DefinitionError, match=problem):
        engine.get_event(run, key)
    with pytest.raises(fluxo.DefinitionError, match=problem):
        list(engine.watch_event(run, key))


@pytest.mark.parametrize("timeout", [-1, float("nan"), "5", True])
def test_bad_timeouts_are_refused(make_engine: MakeEngine, timeout: Any) -> None:
    engine = make_engine(quiet)
    run = engine.start(quiet.options(id="q3")).id
    with pytest.raises(fluxo.DefinitionError, match="timeout is a number of seconds"):
        engine.get_event(run, "k", timeout=timeout)


def test_an_unknown_run_is_reported_at_once(make_engine: MakeEngine) -> None:
    engine = make_engine(quiet)
    with pytest.raises(fluxo.RunNotFoundError):
        engine.get_event("nobody", "k")
    with pytest.raises(fluxo.RunNotFoundError):
        engine.watch_event("nobody", "k")


def test_info_tells_the_run(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(parent, who)
    run = engine.start(parent.options(id="p1")).id
    execute(engine, run)
    child = history.child_id(run, 1)
    execute(engine, child)
    engine.signal(child, "fail", False)
    execute(engine, child)
    execute(engine, run)
    result = engine.handle(run).result(timeout=0)
    assert result == {
        "id": child,
        "workflow": "ev.who",
        "parent": "p1",
        "started": datetime.fromtimestamp(T0, timezone.utc).isoformat(),
        "attempts": [1, 1],
        "headers": result["headers"],
    }


def test_info_attempt_counts_the_retries_before_its_point(make_engine: MakeEngine) -> None:
    engine = make_engine(who)
    run = engine.start(who.options(id="w1")).id
    execute(engine, run)
    engine.signal(run, "fail", True)
    execute(engine, run)
    assert engine.get_run(run).status is Status.FAILED
    engine.retry(run)
    execute(engine, run)
    # The first info() stood before the retry: still attempt 1 on replay, so the
    # workflow takes the same branch; the second one stands after it.
    assert engine.handle(run).result(timeout=0)["attempts"] == [1, 2]


FRAGILE = {"fails": True}


@fluxo.step(name="ev.fragile")
def fragile() -> int:
    if FRAGILE["fails"]:
        raise ValueError("fragile failed")
    return 2


@fluxo.workflow(name="ev.attempts")
def attempts() -> list[int]:
    before = fluxo.info().attempt
    work(1)
    kept = fluxo.info().attempt  # no record between it and the failure of fragile
    fragile()
    return [before, kept, fluxo.info().attempt]


def test_info_attempt_after_the_last_kept_record_reads_the_new_attempt(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(attempts)
    run = engine.start(attempts.options(id="a1")).id
    execute(engine, run)
    assert engine.get_run(run).status is Status.FAILED
    FRAGILE["fails"] = False
    engine.retry(run)
    execute(engine, run)
    # The retry keeps work(1) and attempts fragile again: the info() before work(1)
    # reads attempt 1 as it did; the one between them is where the retried run goes on.
    assert engine.handle(run).result(timeout=0) == [1, 2, 2]


def test_info_outside_a_workflow_is_refused() -> None:
    with pytest.raises(fluxo.DefinitionError, match="call it in a workflow"):
        fluxo.info()
