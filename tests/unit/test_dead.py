"""Dead runs: a run whose executions keep dying ends ``dead`` after ``max_recoveries``.

The engine's clock is a fake, and an execution "dies" by raising
:class:`SimulatedCrash` out of a step, which leaves the run as a ``kill -9``
would (still ``RUNNING``, its lease held). Moving the clock past the lease lets
the next claim take the run over: a recovery.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

import fluxo
from fluxo import _executor, cli, history, testing
from fluxo.stores import memory

from .conftest import MakeEngine
from .helpers import T0, FakeClock, SimulatedCrash, execute

Status = fluxo.RunStatus
LEASE = 30.0
CALLS: list[str] = []
CRASHING = {"on": True}


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    CRASHING["on"] = True


@fluxo.step
def first(n: int) -> int:
    CALLS.append("first")
    return n + 1


@fluxo.step
def second(n: int) -> int:
    CALLS.append("second")
    if CRASHING["on"]:
        raise SimulatedCrash("the worker process dies in the second step")
    return n * 10


@fluxo.workflow(name="tests.fragile", max_recoveries=2)
def fragile(n: int) -> int:
    return second(first(n))


@fluxo.workflow(name="tests.brittle", max_recoveries=0)
def brittle(n: int) -> int:
    return second(first(n))


@fluxo.workflow(name="tests.stubborn")
def stubborn(n: int) -> int:
    return second(first(n))


@fluxo.workflow(name="tests.parent")
def parent(n: int) -> str:
    try:
        return str(brittle(n))
    except fluxo.WorkflowFailedError as exc:
        return f"child ended {exc.type_name}"


def die_once(engine: fluxo.Engine, run_id: str, clock: FakeClock, owner: str) -> None:
    """Claim the run for ``owner`` and let its execution die; then let its lease run out."""
    with pytest.raises(SimulatedCrash):
        execute(engine, run_id, owner, lease=LEASE)
    clock.advance(LEASE + 1)


def test_a_run_that_keeps_dying_ends_dead_after_max_recoveries(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(fragile)
    engine.start(fragile.options(id="r1"), 4)
    for number in range(3):  # the first execution, then 2 recoveries
        die_once(engine, "r1", clock, f"w{number}")
    assert engine.get_run("r1").recoveries == 2
    assert CALLS == ["first", "second", "second", "second"]

    outcome = execute(engine, "r1", "w3", lease=LEASE)  # the third recovery

    assert outcome is _executor.Outcome.FAILED
    assert CALLS == ["first", "second", "second", "second"]  # no user code ran
    run = engine.get_run("r1")
    assert (run.status, run.recoveries, run.lease_owner) == (Status.DEAD, 3, None)
    last = engine.store.load("r1").events[-1]
    assert isinstance(last, history.RunDied)
    with pytest.raises(fluxo.RunDiedError) as info:
        engine.handle("r1").result(timeout=1)
    error = info.value
    assert isinstance(error, fluxo.WorkflowFailedError)
    assert error.type_name == "fluxo.RunDiedError"
    assert "its executions died 3 times (max_recoveries=2)" in str(error)
    assert "record is at position 1 (step_completed tests.unit.test_dead.first)" in str(error)
    assert engine.store.claim("w4", ["tests.fragile"], now=clock(), lease_until=T0, limit=1) == []


def test_a_dead_run_is_retried_with_its_count_back_at_zero(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(fragile)
    engine.start(fragile.options(id="r1"), 4)
    for number in range(3):
        die_once(engine, "r1", clock, f"w{number}")
    execute(engine, "r1", "w3", lease=LEASE)
    assert engine.get_run("r1").status is Status.DEAD
    CRASHING["on"] = False  # the cause is fixed

    handle = engine.retry("r1")

    assert engine.get_run("r1").recoveries == 0
    assert execute(engine, "r1", "w4", lease=LEASE) is _executor.Outcome.COMPLETED
    assert handle.result(timeout=1) == 50
    assert CALLS.count("first") == 1  # recorded before the deaths, replayed since
    kinds = [type(e) for e in engine.store.load("r1").events]
    assert kinds[-3:] == [history.RunRetried, history.StepCompleted, history.WorkflowCompleted]


def test_a_dead_run_retried_that_keeps_dying_ends_dead_again(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(brittle)
    engine.start(brittle.options(id="r1"), 4)
    die_once(engine, "r1", clock, "w0")
    execute(engine, "r1", "w1", lease=LEASE)
    assert engine.get_run("r1").status is Status.DEAD

    engine.retry("r1")
    die_once(engine, "r1", clock, "w2")
    execute(engine, "r1", "w3", lease=LEASE)

    assert engine.get_run("r1").status is Status.DEAD
    kinds = [e.kind for e in engine.store.load("r1").events]
    assert kinds == [
        "workflow_started",
        "step_completed",
        "run_died",
        "run_retried",
        "run_died",
    ]
    with pytest.raises(fluxo.RunDiedError, match="died once"):
        engine.handle("r1").result(timeout=1)


def test_without_max_recoveries_a_run_is_taken_over_however_often(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(stubborn)
    engine.start(stubborn.options(id="r1"), 4)
    for number in range(6):
        die_once(engine, "r1", clock, f"w{number}")
    CRASHING["on"] = False

    assert execute(engine, "r1", "w6", lease=LEASE) is _executor.Outcome.COMPLETED
    assert engine.get_run("r1").recoveries == 6


def test_a_clean_handover_is_not_a_recovery(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(brittle)
    engine.start(brittle.options(id="r1"), 4)
    CRASHING["on"] = False
    engine.store.claim("w0", ["tests.brittle"], now=clock(), lease_until=clock() + LEASE, limit=1)
    engine.store.release("w0", "r1", now=clock())  # a worker that stopped gave it back

    assert execute(engine, "r1", "w1", lease=LEASE) is _executor.Outcome.COMPLETED


def test_a_parent_is_told_its_child_died(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(parent, brittle)
    engine.start(parent.options(id="p1"), 4)
    assert execute(engine, "p1", "w0", lease=LEASE) is _executor.Outcome.SUSPENDED
    [child] = [run.id for run in engine.store.list_runs(workflows=["tests.brittle"])]
    die_once(engine, child, clock, "w1")

    assert execute(engine, child, "w2", lease=LEASE) is _executor.Outcome.FAILED

    assert engine.get_run(child).status is Status.DEAD
    assert engine.get_run("p1").status is Status.PENDING  # woken by its child's end
    assert execute(engine, "p1", "w3", lease=LEASE) is _executor.Outcome.COMPLETED
    assert engine.handle("p1").result(timeout=1) == "child ended fluxo.RunDiedError"


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_recoveries_must_be_a_count(bad: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="max_recoveries= takes a whole number"):
        fluxo.workflow(max_recoveries=bad)


def test_max_recoveries_is_kept_on_the_workflow() -> None:
    assert fragile.max_recoveries == 2
    assert brittle.max_recoveries == 0
    assert stubborn.max_recoveries is None
    assert fragile.options(id="x").max_recoveries == 2


# -- the command line ------------------------------------------------------------------

STATE: dict[str, Any] = {}
APP = "tests.unit.test_dead:dead_app"


def dead_app() -> fluxo.Engine:
    """The app the command line loads: a new engine on the test's store, as a process would."""
    return fluxo.Engine(STATE["store"], workflows=[brittle], clock=STATE["clock"])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[fluxo.Engine, FakeClock]]:
    clock = FakeClock()
    store = memory.MemoryStore()
    monkeypatch.setitem(STATE, "store", store)
    monkeypatch.setitem(STATE, "clock", clock)
    engine = dead_app()
    yield engine, clock
    engine.close()
    store.close()


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli,
        list(args),
        catch_exceptions=False,
        env={"FLUXO_STORE_URL": None, "FLUXO_APP": None},
    )
    return result.exit_code, result.output


def test_runs_list_shows_dead_runs_and_runs_retry_resumes_one(
    app: tuple[fluxo.Engine, FakeClock],
) -> None:
    engine, clock = app
    engine.start(brittle.options(id="d1"), 1)
    engine.start(brittle.options(id="ok"), 2)
    die_once(engine, "d1", clock, "w0")
    execute(engine, "d1", "w1", lease=LEASE)

    code, out = invoke("runs", "list", "--status", "dead", "--app", APP, "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert [(r["id"], r["status"], r["recoveries"]) for r in listed] == [("d1", "dead", 1)]

    code, out = invoke("runs", "show", "d1", "--app", APP)
    assert code == 0, out
    assert "fluxo.RunDiedError: its executions died once (max_recoveries=0)" in out
    assert "run_died" in out
    assert "recovered once: taken over from executions that died" in out

    code, out = invoke("runs", "retry", "d1", "--app", APP)
    assert code == 0, out
    assert engine.get_run("d1").status is Status.PENDING

    code, out = invoke("runs", "retry", "ok", "--app", APP)
    assert code == 1
    assert "is pending, not failed or dead; only a failed or dead run can be retried" in out


def test_the_history_of_a_dead_run_replays_on_its_code(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(brittle)
    engine.start(brittle.options(id="r1"), 4)
    die_once(engine, "r1", clock, "w0")
    execute(engine, "r1", "w1", lease=LEASE)
    document = engine.export_history("r1")
    CALLS.clear()

    result = testing.replay(document, workflows=[brittle])

    assert result.ok
    assert CALLS == []  # replay runs no step
    assert [event["kind"] for event in document["events"]][-1] == "run_died"
