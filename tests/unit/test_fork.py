"""``engine.fork``: a new run replays the first positions of another run, then today's code.

The runs here are on the memory store; ``tests/integration/test_fork_stores.py`` runs
the copy, and a fork whose forking process died before the copy, on every store.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import pytest

import fluxo
from fluxo import _fork, history
from fluxo._cli_format import describe_run, render_run
from fluxo.stores.memory import MemoryStore

from .conftest import MakeEngine
from .helpers import FakeClock, SimulatedCrash, kinds

CALLS: collections.Counter[str] = collections.Counter()
FLAKY = {"fails": True}
"""Whether ``flaky`` raises: the code deployed before and after a fix."""


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FLAKY["fails"] = True


def _step(version: str, number: int) -> fluxo.Step[[int], str]:
    def body(x: int) -> str:
        CALLS[f"{version}-s{number}"] += 1
        return f"{version}-s{number}-{x}"

    body.__qualname__ = body.__name__ = f"{version}_s{number}"
    return fluxo.step(name=f"fork.s{number}")(body)


V1 = [_step("v1", n) for n in range(1, 6)]
V2 = [_step("v2", n) for n in range(1, 6)]


@fluxo.workflow(name="fork.five")
def five_v1(x: int) -> list[str]:
    return [step(x) for step in V1]


@fluxo.workflow(name="fork.five")
def five_v2(x: int) -> list[str]:
    return [step(x) for step in V2]


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def finished(make_engine: MakeEngine, store: MemoryStore) -> fluxo.Engine:
    """Version 1 of ``fork.five`` on ``store``, with run ``r`` finished; then version 2."""
    v1 = make_engine(five_v1, store=store)
    assert v1.run(five_v1.options(id="r"), 7) == [f"v1-s{n}-7" for n in range(1, 6)]
    CALLS.clear()
    return make_engine(five_v2, store=store)


def test_a_fork_from_position_3_runs_steps_3_to_5_again_with_the_new_code(
    finished: fluxo.Engine,
) -> None:
    handle = finished.fork("r", from_position=3)
    assert handle.id != "r"
    assert finished.worker().process_one() == 1
    assert handle.result() == ["v1-s1-7", "v1-s2-7", "v2-s3-7", "v2-s4-7", "v2-s5-7"]
    assert CALLS == {"v2-s3": 1, "v2-s4": 1, "v2-s5": 1}  # steps 1 and 2 replayed
    source = finished.history("r")
    forked = finished.history(handle.id)
    assert forked[:3] == source[:3]
    assert kinds(forked[3:]) == ["step_completed"] * 3 + ["workflow_completed"]
    assert finished.history("r") == source  # the source is left as it was


def test_a_fork_records_where_it_came_from_and_runs_show_says_so(finished: fluxo.Engine) -> None:
    handle = finished.fork("r", from_position=3, id="r-again")
    run = finished.get_run("r-again")
    assert run.headers[_fork.FORKED_FROM] == "r"
    assert run.headers[_fork.FORK_POSITION] == "3"
    assert run.status is history.RunStatus.PENDING
    assert run.lease_owner is None
    assert run.parent is None
    doc = describe_run(finished.store.load(handle.id), finished.codec)
    assert doc["forked_from"] == {"run": "r", "position": 3}
    assert "forked    from r at position 3" in render_run(doc).splitlines()
    assert describe_run(finished.store.load("r"), finished.codec)["forked_from"] is None


def test_a_fork_from_position_1_runs_every_step_again(finished: fluxo.Engine) -> None:
    handle = finished.fork("r", from_position=1)
    assert kinds(finished.history(handle.id)) == ["workflow_started"]
    finished.worker().process_one()
    assert handle.result() == [f"v2-s{n}-7" for n in range(1, 6)]
    assert dict(CALLS) == {f"v2-s{n}": 1 for n in range(1, 6)}


def test_a_fork_may_keep_every_step_before_the_end(finished: fluxo.Engine) -> None:
    handle = finished.fork("r", from_position=6)
    finished.worker().process_one()
    assert handle.result() == [f"v1-s{n}-7" for n in range(1, 6)]
    assert CALLS == {}


def test_fork_is_idempotent_on_its_id(finished: fluxo.Engine) -> None:
    first = finished.fork("r", from_position=3, id="again")
    second = finished.fork("r", from_position=3, id="again")
    assert first.id == second.id == "again"
    assert len(finished.history("again")) == 3
    assert len(finished.list_runs()) == 2
    with pytest.raises(fluxo.RunIdConflictError, match="fork of run 'r' from position 2"):
        finished.fork("r", from_position=2, id="again")
    with pytest.raises(fluxo.RunIdConflictError, match="fork of run 'r' from position 3"):
        finished.fork("r", from_position=3, id="r")  # a run that is no fork


def test_fork_returns_its_run_for_its_id_after_the_source_went(
    finished: fluxo.Engine, clock: FakeClock
) -> None:
    finished.fork("r", from_position=3, id="kept")
    clock.advance(10)
    assert finished.purge(older_than=5, status="completed") == 1
    assert finished.fork("r", from_position=3, id="kept").id == "kept"
    with pytest.raises(fluxo.RunNotFoundError):
        finished.fork("r", from_position=2, id="kept")
    with pytest.raises(fluxo.RunNotFoundError):
        finished.fork("r", from_position=3)


def test_fork_generates_a_new_id_each_time(finished: fluxo.Engine) -> None:
    ids = {finished.fork("r", from_position=2).id for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("position", [0, -1, True, 2.0, "3", None])
def test_fork_refuses_a_position_that_is_no_whole_number_from_1(
    finished: fluxo.Engine, position: Any
) -> None:
    with pytest.raises(fluxo.DefinitionError, match="from_position must be a whole number"):
        finished.fork("r", from_position=position)
    assert len(finished.list_runs()) == 1


def test_fork_refuses_a_position_past_the_end_of_the_history(finished: fluxo.Engine) -> None:
    with pytest.raises(fluxo.DefinitionError, match=r"holds 7 events .*give at most 7"):
        finished.fork("r", from_position=8)


def test_fork_refuses_a_cut_after_the_end_of_the_run(finished: fluxo.Engine) -> None:
    with pytest.raises(fluxo.RunStateError, match=r"ended at position 6 \(workflow_completed\)"):
        finished.fork("r", from_position=7)


def test_fork_refuses_an_unknown_run_and_a_bad_id(finished: fluxo.Engine) -> None:
    with pytest.raises(fluxo.RunNotFoundError):
        finished.fork("nope", from_position=1)
    with pytest.raises(fluxo.DefinitionError, match="may not contain"):
        finished.fork("r", from_position=1, id="a~b")


def test_fork_refuses_a_workflow_this_engine_does_not_know(
    make_engine: MakeEngine, finished: fluxo.Engine, store: MemoryStore
) -> None:
    other = make_engine(waits, store=store)
    with pytest.raises(fluxo.UnknownWorkflowError, match=r"fork\.five"):
        other.fork("r", from_position=3)
    assert len(other.list_runs()) == 1


def test_a_closed_engine_refuses_to_fork(finished: fluxo.Engine) -> None:
    finished.close()
    with pytest.raises(fluxo.RunStateError, match="closed"):
        finished.fork("r", from_position=3)


# -- sources in any status -----------------------------------------------------------------


@fluxo.step(name="fork.flaky")
def flaky(x: int) -> int:
    CALLS["flaky"] += 1
    if FLAKY["fails"]:
        raise ValueError("flaky failed")
    return x


@fluxo.workflow(name="fork.failing")
def failing(x: int) -> int:
    return flaky(x) + flaky(x + 1)


def test_a_failed_run_can_be_forked_before_its_failure(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(failing)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(failing.options(id="f"), 1)
    end = len(engine.history("f")) - 1
    assert kinds(engine.history("f"))[end - 1 :] == ["step_failed", "workflow_failed"]
    with pytest.raises(fluxo.RunStateError, match=f"ended at position {end}"):
        engine.fork("f", from_position=end + 1)
    FLAKY["fails"] = False
    handle = engine.fork("f", from_position=1)
    engine.worker().process_one()
    assert handle.result() == 3


@fluxo.step(name="fork.flaky_twice", retry=fluxo.Retry(max_attempts=2, initial=0))
def flaky_twice(x: int) -> int:
    return flaky(x)


@fluxo.workflow(name="fork.retrying")
def retrying(x: int) -> int:
    return flaky_twice(x)


def test_a_fork_may_keep_an_attempt_failure_and_attempts_the_step_again(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(retrying)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(retrying.options(id="f"), 5)
    assert kinds(engine.history("f"))[1:] == [
        "step_attempt_failed",
        "step_failed",
        "workflow_failed",
    ]
    FLAKY["fails"] = False
    CALLS.clear()
    handle = engine.fork("f", from_position=2)  # keeps the first attempt's failure
    engine.worker().process_one()
    assert handle.result() == 5
    assert CALLS == {"flaky": 1}
    assert kinds(engine.history(handle.id))[1:] == [
        "step_attempt_failed",
        "step_completed",
        "workflow_completed",
    ]


def test_a_retried_run_can_be_forked_after_its_retry_not_between(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(failing)
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.run(failing.options(id="f"), 1)
    FLAKY["fails"] = False
    engine.retry("f")
    engine.worker().process_one()
    assert engine.handle("f").result() == 3
    events = kinds(engine.history("f"))
    retried = events.index("run_retried")
    assert events[retried - 1] == "workflow_failed"
    with pytest.raises(fluxo.RunStateError, match=f"ended at position {retried - 1}"):
        engine.fork("f", from_position=retried)  # it would end with the failure
    CALLS.clear()
    handle = engine.fork("f", from_position=retried + 1)  # the retry is kept
    engine.worker().process_one()
    assert handle.result() == 3
    assert CALLS == {"flaky": 2}


@fluxo.step(name="fork.fragile")
def fragile(x: int) -> int:
    CALLS["fragile"] += 1
    if FLAKY["fails"]:
        raise SimulatedCrash("the worker dies in the step")
    return x


@fluxo.workflow(name="fork.dying", max_recoveries=0)
def dying(x: int) -> int:
    y = fragile(x)
    fluxo.sleep(60)
    return y + 1


def test_a_dead_run_can_be_forked_before_its_death_only(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(dying)
    engine.start(dying.options(id="d"), 1)
    with pytest.raises(SimulatedCrash):
        engine.worker().process_one()
    clock.advance(31)  # the lease runs out: the next claim is a recovery, one too many
    engine.worker().process_one()
    assert engine.get_run("d").status is history.RunStatus.DEAD
    events = kinds(engine.history("d"))
    assert events == ["workflow_started", "run_died"]
    with pytest.raises(fluxo.RunStateError, match=r"ended at position 1 \(run_died\)"):
        engine.fork("d", from_position=2)  # its replays would meet run_died as a call
    FLAKY["fails"] = False
    handle = engine.fork("d", from_position=1)
    engine.worker().process_one()  # runs the step, then waits on the timer
    clock.advance(60)
    engine.worker().process_one()  # replays the step and the timer
    assert handle.result() == 2


def test_a_dead_run_retried_can_be_forked_after_its_retry(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(dying)
    engine.start(dying.options(id="d"), 1)
    with pytest.raises(SimulatedCrash):
        engine.worker().process_one()
    clock.advance(31)
    engine.worker().process_one()
    FLAKY["fails"] = False
    engine.retry("d")
    engine.worker().process_one()  # waits on its timer
    events = kinds(engine.history("d"))
    assert events[1:3] == ["run_died", "run_retried"]
    handle = engine.fork("d", from_position=len(events))
    engine.worker().process_one()
    clock.advance(60)
    engine.worker().process_one()
    assert handle.result() == 2


@fluxo.step(name="fork.mark")
def mark(label: str) -> str:
    CALLS[label] += 1
    return label


@fluxo.workflow(name="fork.guarded")
def guarded() -> str:
    mark("before")
    try:
        fluxo.sleep(60)
    finally:
        mark("cleanup")
    return mark("after")


def test_a_cancelled_run_can_be_forked_before_its_cancellation_only(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(guarded)
    engine.start(guarded.options(id="c"))
    engine.worker().process_one()  # waits on its timer
    engine.cancel("c")
    engine.worker().process_one()
    assert engine.get_run("c").status is history.RunStatus.CANCELLED
    events = kinds(engine.history("c"))
    cancel = events.index("cancel_requested")
    with pytest.raises(fluxo.RunStateError, match=f"cancellation at position {cancel}"):
        engine.fork("c", from_position=cancel + 1)
    CALLS.clear()
    handle = engine.fork("c", from_position=cancel)  # keeps the timer it had started
    engine.worker().process_one()
    assert engine.get_run(handle.id).status is history.RunStatus.WAITING
    clock.advance(60)  # the timer fires at the time the source recorded
    engine.worker().process_one()
    assert handle.result() == "after"
    assert CALLS == {"cleanup": 1, "after": 1}


def test_an_active_run_can_be_forked_and_both_go_on(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(guarded)
    engine.start(guarded.options(id="a"))
    engine.worker().process_one()
    assert engine.get_run("a").status is history.RunStatus.WAITING
    handle = engine.fork("a", from_position=2)  # before the timer: it sets one of its own
    clock.advance(30)
    engine.worker().process_one()  # the fork records its timer, 60 s from now
    clock.advance(30)
    engine.worker().process_one()
    assert engine.handle("a").result() == "after"
    assert engine.get_run(handle.id).status is history.RunStatus.WAITING
    clock.advance(30)
    engine.worker().process_one()
    assert handle.result() == "after"


# -- signals -------------------------------------------------------------------------------


@fluxo.workflow(name="fork.signals")
def two_signals() -> list[int]:
    first: int = fluxo.wait_for_signal("n", type=int)
    mark(f"got {first}")
    second: int = fluxo.wait_for_signal("n", type=int)
    return [first, second]


def test_a_fork_takes_the_signals_its_prefix_consumed_and_waits_for_new_ones(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(two_signals)
    engine.start(two_signals.options(id="s"))
    engine.signal("s", "n", "not a number")  # skipped: signal_rejected consumes it
    engine.signal("s", "n", 1)
    engine.signal("s", "other", 9)  # never consumed: not copied
    engine.worker().process_one()
    events = kinds(engine.history("s"))
    assert events[-2:] == ["step_completed", "signal_wait_started"]
    engine.signal("s", "n", 2)  # pending in the source when it is forked
    handle = engine.fork("s", from_position=len(events))
    copied = engine.store.load(handle.id).signals
    assert [(s.name, engine.codec.decode(s.payload)) for s in copied] == [
        ("n", "not a number"),
        ("n", 1),
    ]
    engine.worker().process_one()
    assert engine.get_run(handle.id).status is history.RunStatus.WAITING
    engine.signal(handle.id, "n", 3)
    engine.worker().process_one()
    assert handle.result() == [1, 3]
    assert engine.handle("s").result() == [1, 2]
    assert CALLS == {"got 1": 1}  # the fork replayed the step


def test_a_fork_with_a_source_whose_signals_are_missing_is_refused(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(two_signals)
    engine.start(two_signals.options(id="s"))
    engine.signal("s", "n", 1)
    engine.worker().process_one()
    state = engine.store.load("s")
    damaged = history.RunState(state.run, state.events, (), state.recorded_at)
    position = kinds(state.events).index("signal_received")
    with pytest.raises(fluxo.RunStateError, match=f"consumed signal 'n' at position {position}"):
        _fork.cut(damaged, position + 1, engine.codec)
    assert _fork.cut(damaged, position, engine.codec).signals == ()


@fluxo.workflow(name="fork.rounds")
def rounds(n: int) -> int:
    total = int(V2[0](n).rsplit("-", 1)[1])
    if n < 2:
        fluxo.continue_as_new(n + 1)
    return total


def test_a_fork_that_continues_as_new_goes_on_in_a_run_that_is_no_fork(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(rounds)
    engine.start(rounds.options(id="c"), 0)
    worker = engine.worker()
    while worker.process_one():
        pass
    assert engine.handle("c").result() == 2
    handle = engine.fork("c", from_position=2, id="cf")  # keeps the step, then continues
    while worker.process_one():
        pass
    assert handle.result() == 2
    following = engine.store.get_run("cf~1")
    assert _fork.source(following.headers) is None
    assert _fork.source(engine.store.get_run("cf").headers) == {"run": "c", "position": 2}
    assert kinds(engine.history("cf~1"))[:2] == ["workflow_started", "step_completed"]


# -- children and parallel blocks ----------------------------------------------------------


@fluxo.workflow(name="fork.waits")
def waits() -> str:
    word: str = fluxo.wait_for_signal("go", type=str)
    return word


@fluxo.workflow(name="fork.parent")
def parent() -> str:
    child = fluxo.start_child(waits)
    got = child.result()
    return mark(f"parent got {got}")


def test_a_cut_between_a_childs_start_and_its_outcome_is_refused(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(parent, waits)
    engine.start(parent.options(id="p"))
    engine.worker().process_one()
    child = history.child_id("p", 1)
    engine.signal(child, "go", "yes")
    engine.worker().process_one()
    engine.worker().process_one()
    assert engine.handle("p").result() == "parent got yes"
    events = kinds(engine.history("p"))
    assert events[1:3] == ["child_started", "child_completed"]
    with pytest.raises(fluxo.RunStateError, match=f"started child run '{child}' at position 1"):
        engine.fork("p", from_position=2)
    CALLS.clear()
    kept = engine.fork("p", from_position=3)  # the child's outcome is kept: no child runs
    engine.worker().process_one()
    assert kept.result() == "parent got yes"
    assert CALLS == {"parent got yes": 1}
    anew = engine.fork("p", from_position=1, id="p2")  # a child of its own
    engine.worker().process_one()
    engine.signal(history.child_id("p2", 1), "go", "again")
    engine.worker().process_one()
    engine.worker().process_one()
    assert anew.result() == "parent got again"


@fluxo.step(name="fork.double")
def double(x: int) -> int:
    CALLS[f"double {x}"] += 1
    return 2 * x


@fluxo.workflow(name="fork.parallel")
def fan_out() -> list[int]:
    return list(fluxo.map(double, [1, 2, 3]))


def test_a_cut_inside_a_parallel_block_runs_the_missing_branches_again(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(fan_out)
    assert engine.run(fan_out.options(id="m")) == [2, 4, 6]
    events = engine.history("m")
    assert kinds(events)[1] == "parallel_started"
    assert kinds(events)[2:5] == ["branch_completed"] * 3
    first = events[2].name
    CALLS.clear()
    handle = engine.fork("m", from_position=3)  # one branch kept
    engine.worker().process_one()
    assert handle.result() == [2, 4, 6]
    kept = int(first.rpartition("#")[2]) + 1
    assert dict(CALLS) == {f"double {x}": 1 for x in (1, 2, 3) if x != kept}


# -- a forking process that dies -------------------------------------------------------------


class CrashOnCopy(MemoryStore):
    """A memory store whose process dies at the fork's ``when``: "signal", "append"."""

    def __init__(self, when: str, after: int = 0) -> None:
        super().__init__()
        self.when = when
        self.after = after
        self.armed = False

    def send_signal(self, run_id: str, name: str, payload: bytes, **kw: Any) -> bool:
        if self.armed and self.when == "signal":
            if self.after == 0:
                raise SimulatedCrash
            self.after -= 1
        return super().send_signal(run_id, name, payload, **kw)

    def append(self, run_id: str, expected_seq: int, events: Any, **kw: Any) -> None:
        if self.armed and self.when == "append" and expected_seq == 1:
            raise SimulatedCrash
        super().append(run_id, expected_seq, events, **kw)


@pytest.mark.parametrize(("when", "after"), [("append", 0), ("signal", 0), ("signal", 1)])
def test_a_worker_completes_the_copy_of_a_fork_whose_process_died(
    make_engine: MakeEngine, clock: FakeClock, when: str, after: int
) -> None:
    store = CrashOnCopy(when, after)
    engine = make_engine(two_signals, store=store)
    engine.start(two_signals.options(id="s"))
    engine.signal("s", "n", "skipped")
    engine.signal("s", "n", 1)
    engine.signal("s", "n", 2)
    engine.worker().process_one()
    assert engine.handle("s").result() == [1, 2]
    events = kinds(engine.history("s"))
    cut = len(events) - 2  # before the second signal_received
    assert events[cut:] == ["signal_received", "workflow_completed"]
    store.armed = True
    with pytest.raises(SimulatedCrash):
        engine.fork("s", from_position=cut, id="f")
    store.armed = False
    run = engine.get_run("f")
    assert kinds(engine.history("f")) == ["workflow_started"]
    assert run.status is history.RunStatus.RUNNING
    assert engine.worker().process_one() == 0  # leased to the engine that forked
    assert engine.fork("s", from_position=cut, id="f").id == "f"  # no copy: it is leased
    clock.advance(31)
    engine.worker().process_one()
    forked = engine.store.load("f")
    assert forked.events[:cut] == engine.store.load("s").events[:cut]
    sent = [engine.codec.decode(s.payload) for s in forked.signals]
    assert sent == ["skipped", 1]  # each sent once, whatever happened
    assert forked.run.status is history.RunStatus.WAITING
    engine.signal("f", "n", 5)
    engine.worker().process_one()
    assert engine.handle("f").result() == [1, 5]


@fluxo.workflow(name="fork.touchy", max_recoveries=0)
def touchy(x: int) -> list[str]:
    return [step(x) for step in V2[:2]]


class FailingCopy(MemoryStore):
    """A memory store that fails, once armed, the append of a fork's copy."""

    armed = False

    def append(self, run_id: str, expected_seq: int, events: Any, **kw: Any) -> None:
        if self.armed and expected_seq == 1:
            self.armed = False
            raise fluxo.StoreUnavailableError("the database went away")
        super().append(run_id, expected_seq, events, **kw)


def test_a_fork_whose_copy_failed_is_given_back_for_a_worker_to_copy_without_a_recovery(
    make_engine: MakeEngine,
) -> None:
    """The forking process was not executing the run: max_recoveries=0 still holds."""
    store = FailingCopy()
    engine = make_engine(touchy, store=store)
    assert engine.run(touchy.options(id="t"), 3) == ["v2-s1-3", "v2-s2-3"]
    store.armed = True
    with pytest.raises(fluxo.StoreUnavailableError):
        engine.fork("t", from_position=2, id="f")
    run = engine.get_run("f")
    assert (run.status, run.lease_owner) == (history.RunStatus.PENDING, None)
    CALLS.clear()
    engine.worker().process_one()  # completes the copy at once, no lease to wait for
    run = engine.get_run("f")
    assert (run.status, run.recoveries) == (history.RunStatus.COMPLETED, 0)
    assert engine.handle("f").result() == ["v2-s1-3", "v2-s2-3"]
    assert CALLS == {"v2-s2": 1}
    assert engine.fork("t", from_position=2, id="f").id == "f"


def test_a_fork_whose_forking_process_was_killed_counts_a_recovery(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    """The claim takes a running run over: with max_recoveries=0 the fork ends dead."""
    store = CrashOnCopy("append")
    engine = make_engine(touchy, store=store)
    engine.run(touchy.options(id="t"), 3)
    store.armed = True
    with pytest.raises(SimulatedCrash):
        engine.fork("t", from_position=2, id="f")
    store.armed = False
    clock.advance(31)
    CALLS.clear()
    engine.worker().process_one()
    run = engine.get_run("f")
    assert (run.status, run.recoveries) == (history.RunStatus.DEAD, 1)
    assert kinds(engine.history("f"))[:2] == ["workflow_started", "step_completed"]
    engine.retry("f")
    engine.worker().process_one()
    assert engine.handle("f").result() == ["v2-s1-3", "v2-s2-3"]
    assert CALLS == {"v2-s2": 1}


def test_a_fork_whose_source_went_before_the_copy_fails_saying_so(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = CrashOnCopy("append")
    engine = make_engine(five_v1, store=store)
    engine.run(five_v1.options(id="r"), 1)
    store.armed = True
    with pytest.raises(SimulatedCrash):
        engine.fork("r", from_position=3, id="f")
    store.armed = False
    clock.advance(1)
    assert engine.purge(older_than=0.5, status="completed") == 1  # the source goes
    clock.advance(31)
    engine.worker().process_one()
    assert engine.get_run("f").status is history.RunStatus.FAILED
    with pytest.raises(fluxo.WorkflowFailedError, match="the source cannot be read now"):
        engine.handle("f").result()
    assert engine.worker().process_one() == 0  # it failed once


def test_a_fork_that_got_other_signals_before_its_copy_fails_saying_so(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = CrashOnCopy("signal")
    engine = make_engine(two_signals, store=store)
    engine.start(two_signals.options(id="s"))
    engine.signal("s", "n", 1)
    engine.worker().process_one()
    store.armed = True
    with pytest.raises(SimulatedCrash):
        engine.fork("s", from_position=len(engine.history("s")), id="f")
    store.armed = False
    engine.signal("f", "n", 7)  # it would take the place of the copied signal
    clock.advance(31)
    engine.worker().process_one()
    with pytest.raises(fluxo.WorkflowFailedError, match="would be consumed in their place"):
        engine.handle("f").result()


def test_the_fork_of_a_run_with_a_deadline_gets_as_long_as_the_source_had(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(five_v1)
    engine.run(five_v1.options(id="d", timeout=600), 1)
    clock.advance(1000)
    handle = engine.fork("d", from_position=2)
    assert engine.get_run(handle.id).deadline == clock.now + 600


def test_the_async_engine_forks_too(finished: fluxo.Engine) -> None:
    async def main() -> list[str]:
        engine = fluxo.AsyncEngine(finished)
        handle = await engine.fork("r", from_position=3, id="a")
        assert handle.id == "a"
        await asyncio.to_thread(finished.worker().process_one)
        result: list[str] = await handle.result()
        return result

    assert asyncio.run(main()) == ["v1-s1-7", "v1-s2-7", "v2-s3-7", "v2-s4-7", "v2-s5-7"]


@fluxo.workflow(name="fork.progress")
def progress() -> str:
    fluxo.set_event("stage", "charged")
    fluxo.wait_for_signal("go")
    fluxo.set_event("stage", "shipped")
    return "done"


def test_a_fork_keeps_the_events_its_prefix_set(make_engine: MakeEngine) -> None:
    engine = make_engine(progress)
    engine.start(progress.options(id="e"))
    engine.signal("e", "go")
    engine.worker().process_one()
    assert engine.get_event("e", "stage", timeout=0) == "shipped"
    assert kinds(engine.history("e"))[1] == "event_set"
    handle = engine.fork("e", from_position=2)
    engine.worker().process_one()
    assert engine.get_event(handle.id, "stage", timeout=0) == "charged"
    engine.signal(handle.id, "go")
    engine.worker().process_one()
    assert engine.get_event(handle.id, "stage", timeout=0) == "shipped"
