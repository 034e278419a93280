"""Child workflows: a workflow called in a workflow is a run of its own, awaited durably."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.testing import WorkflowEnvironment, replay

from .conftest import MakeEngine
from .helpers import CountingStore, FakeClock, SimulatedCrash, execute, kinds, named

ran: list[str] = []


@fluxo.step
def double(x: int) -> int:
    ran.append(f"double {x}")
    return 2 * x


@fluxo.step
def boom(message: str) -> int:
    raise ValueError(message)


@fluxo.workflow
def child(x: int) -> int:
    return double(x) + 1


@fluxo.workflow
def failing_child(message: str) -> int:
    return boom(message)


@fluxo.workflow
def waiting_child(name: str) -> str:
    return str(fluxo.wait_for_signal(name, type=str))


@fluxo.workflow
def sleepy_child(seconds: float) -> str:
    fluxo.sleep(seconds)
    return "slept"


@fluxo.workflow
def counting_child(n: int, total: int = 0) -> int:
    """Continues as new n times, then returns the total."""
    if n == 0:
        return total
    fluxo.continue_as_new(n - 1, total + n)


@fluxo.workflow
def parent(n: int) -> list[int]:
    """Calls a child, then starts one and awaits it later, twice."""
    first = child(n)
    later = fluxo.start_child(child, n + 1)
    return [first, later.result(), later.result()]


@fluxo.workflow
def fan_out(n: int) -> list[int]:
    """Starts n children, then awaits them newest first."""
    handles = [fluxo.start_child(child, i) for i in range(n)]
    return [h.result() for h in reversed(handles)]


@fluxo.workflow
def named_parent(child_id: str) -> int:
    return child.options(id=child_id)(5)


@fluxo.workflow
def tolerant_parent(message: str) -> str:
    """Reports how its failing child ended, and goes on."""
    try:
        failing_child(message)
    except fluxo.WorkflowFailedError as exc:
        return f"{exc.type_name}: {exc.error_message}"
    return "no error"


@fluxo.workflow
def awaiting_parent(signal: str) -> str:
    """Starts a child that waits for a signal, and waits for it."""
    try:
        return waiting_child(signal)
    except fluxo.WorkflowCancelledError as exc:
        return f"child cancelled: {type(exc).__name__}"


@fluxo.workflow
def guarded_parent(signal: str) -> str:
    """One attached and one detached child, both waiting for a signal; waits for both."""
    attached = fluxo.start_child(waiting_child, signal)
    fluxo.start_child(waiting_child.options(id="free-child", detached=True), signal)
    return attached.result()


@fluxo.workflow
def careless_parent(signal: str) -> str:
    """Starts an attached and a detached child and returns without waiting for either."""
    fluxo.start_child(waiting_child, signal)
    fluxo.start_child(waiting_child.options(id="careless-free", detached=True), signal)
    return "done"


@fluxo.workflow
def impatient_parent(seconds: float) -> str:
    try:
        return sleepy_child.options(timeout=seconds / 2)(seconds)
    except fluxo.WorkflowTimeoutError:
        return "timed out"


@fluxo.workflow
def cancelling_parent(signal: str) -> str:
    handle = fluxo.start_child(waiting_child, signal)
    handle.cancel()
    try:
        return handle.result()
    except fluxo.WorkflowCancelledError:
        return "cancelled it"


@fluxo.workflow
def chain_parent(n: int) -> int:
    return counting_child(n)


@fluxo.workflow
def grandparent(signal: str) -> str:
    return awaiting_parent(signal)


@fluxo.workflow
def catching_parent(child_id: str) -> str:
    try:
        return str(child.options(id=child_id)(1))
    except fluxo.RunStateError as exc:
        return f"refused: {exc}"


leaked: list[fluxo.ChildHandle[int]] = []


@fluxo.workflow
def repeating_parent(child_id: str) -> list[str]:
    """Starts two children under one given id: the second start is refused."""
    outcomes = [str(child.options(id=child_id)(1))]
    try:
        outcomes.append(str(child.options(id=child_id)(2)))
    except fluxo.RunStateError as exc:
        outcomes.append(f"refused: {exc}")
    return outcomes


@fluxo.workflow
def leaky_parent(n: int) -> str:
    handle = fluxo.start_child(child, n)
    leaked.append(handle)  # a handle must not leave its workflow; a test shows why
    return repr(handle)


OFFSET = {"child": 0}
"""What ``offset_parent`` adds to its child's argument: a test changes it as code would."""


@fluxo.workflow
def offset_parent(n: int) -> int:
    return child.options(id="kid")(n + OFFSET["child"])


BOOM = (
    "fluxo.StepError: step 'tests.unit.test_child_workflows.boom' failed after "
    "1 attempt: builtins.ValueError: %s"
)
"""How ``tolerant_parent`` reports its child's failure."""

WORKFLOWS = [
    parent,
    child,
    fan_out,
    named_parent,
    tolerant_parent,
    failing_child,
    awaiting_parent,
    waiting_child,
    guarded_parent,
    careless_parent,
    impatient_parent,
    sleepy_child,
    cancelling_parent,
    chain_parent,
    counting_child,
    grandparent,
    catching_parent,
    leaky_parent,
    repeating_parent,
    offset_parent,
]


@pytest.fixture(autouse=True)
def _reset_ran() -> None:
    ran.clear()


def work(engine: fluxo.Engine) -> int:
    """Execute, in this thread, everything runnable now (parents, children...)."""
    return engine.worker(worker_id="w").process_one()


# -- running children ------------------------------------------------------------------


def test_a_workflow_called_in_a_workflow_is_a_child_run(
    make_engine: MakeEngine, store_url: str
) -> None:
    engine = make_engine(*WORKFLOWS, store=store_url)
    handle = engine.start(parent.options(id="p"), 3)
    work(engine)
    assert handle.result(timeout=0) == [7, 9, 9]
    assert named(engine.history("p")) == [
        ("workflow_started", parent.name),
        ("child_started", "p~child-1"),
        ("child_completed", "p~child-1"),
        ("child_started", "p~child-3"),
        ("child_completed", "p~child-3"),
        ("workflow_completed", ""),
    ]
    for child_id, x in (("p~child-1", 3), ("p~child-3", 4)):
        run = engine.get_run(child_id)
        assert run.parent == "p"
        assert run.workflow == child.name
        assert run.status is fluxo.RunStatus.COMPLETED
        assert kinds(engine.history(child_id)) == [
            "workflow_started",
            "step_completed",
            "workflow_completed",
        ]
        assert engine.handle(child_id).result(timeout=0) == 2 * x + 1
    assert engine.get_run("p").parent is None
    assert ran == ["double 3", "double 4"]


def test_children_are_awaited_in_any_order(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(fan_out.options(id="fan"), 4)
    work(engine)
    assert handle.result(timeout=0) == [7, 5, 3, 1]
    events = engine.history("fan")
    started = [e.name for e in events if isinstance(e, history.ChildStarted)]
    awaited = [e.name for e in events if isinstance(e, history.ChildCompleted)]
    assert started == [f"fan~child-{i}" for i in range(1, 5)]
    assert awaited == started[::-1]


def test_engine_run_executes_children_in_this_process(
    make_engine: MakeEngine, store_url: str
) -> None:
    engine = make_engine(*WORKFLOWS, store=store_url, clock=time.time)
    assert engine.run(parent.options(id="inline"), 10) == [21, 23, 23]
    assert engine.run(fan_out, 3) == [5, 3, 1]
    assert engine.run(tolerant_parent.options(id="tp"), "oops") == BOOM % "oops"
    # The child tells its parent how it ended just before it records that end: wait for it.
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.handle("tp~child-1").result(timeout=30)
    assert engine.get_run("tp~child-1").status is fluxo.RunStatus.FAILED


def test_the_test_environment_runs_children(store_url: str) -> None:
    with WorkflowEnvironment(store=store_url) as env:
        assert env.run(parent, 1) == [3, 5, 5]
        assert env.run(impatient_parent, 60.0) == "timed out"


@fluxo.workflow
def mistyping_parent(x: str) -> str:
    try:
        fluxo.start_child(child, x)  # type: ignore[arg-type]
    except fluxo.EncodeError as exc:
        return str(exc)
    return "started"


def test_a_child_argument_of_another_type_is_refused_before_the_child_exists(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(mistyping_parent, child)
    handle = engine.start(mistyping_parent.options(id="mp"), "7")

    work(engine)

    message = handle.result(timeout=0)
    assert message.startswith(f"fluxo.start_child(): workflow {child.name!r} got x='7' (str)")
    assert "x: int" in message
    assert [run.id for run in engine.list_runs()] == ["mp"]


def test_a_given_child_id_is_used(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(named_parent.options(id="np"), "my-child")
    work(engine)
    assert handle.result(timeout=0) == 11
    assert engine.get_run("my-child").parent == "np"
    assert engine.history("np")[1] == history.ChildStarted("my-child", engine.history("np")[1].data)


def test_a_taken_id_is_refused_and_the_refusal_replays(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.start(waiting_child.options(id="taken"), "x")  # another workflow's run
    engine.start(child.options(id="stranger"), 1)  # same workflow, not a child of ours
    first = engine.start(catching_parent.options(id="cp1"), "taken")
    second = engine.start(catching_parent.options(id="cp2"), "stranger")
    work(engine)
    assert "a run of workflow" in first.result(timeout=0)
    assert "was not started by this run" in second.result(timeout=0)
    assert kinds(engine.history("cp1")) == [
        "workflow_started",
        "child_started",
        "workflow_completed",
    ]
    replay(engine.export_history("cp1"), workflows=[catching_parent])  # raises on a mismatch


def test_one_id_for_two_children_of_one_run_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(repeating_parent.options(id="rp"), "twice")
    work(engine)
    assert handle.result(timeout=0) == [
        "3",
        "refused: this run already started a child run 'twice'; give each child its own id",
    ]
    assert ran == ["double 1"]
    replay(engine.export_history("rp"), workflows=[repeating_parent])  # raises on a mismatch


def test_a_failed_child_raises_workflow_failed_error_in_its_parent(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(tolerant_parent.options(id="tp"), "bad input")
    work(engine)
    assert handle.result(timeout=0) == BOOM % "bad input"
    assert kinds(engine.history("tp"))[-2] == "child_failed"


def test_a_child_past_its_timeout_raises_workflow_timeout_error(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(impatient_parent.options(id="ip"), 100.0)
    work(engine)
    clock.advance(51)
    work(engine)
    assert handle.result(timeout=0) == "timed out"
    child_run = engine.get_run("ip~child-1")
    assert child_run.status is fluxo.RunStatus.CANCELLED


def test_a_child_that_continues_as_new_hands_its_last_result_to_its_parent(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(chain_parent.options(id="cp"), 4)
    work(engine)
    assert handle.result(timeout=0) == 10
    assert engine.get_run("cp~child-1").id == "cp~child-1~4"
    assert engine.get_run("cp~child-1~4").parent == "cp"


# -- cancellation ------------------------------------------------------------------------


def test_cancelling_a_parent_cancels_its_running_child_but_not_a_detached_one(
    make_engine: MakeEngine, store_url: str
) -> None:
    engine = make_engine(*WORKFLOWS, store=store_url)
    handle = engine.start(guarded_parent.options(id="gp"), "go")
    work(engine)
    assert engine.get_run("gp~child-1").status is fluxo.RunStatus.WAITING
    assert engine.get_run("free-child").status is fluxo.RunStatus.WAITING
    engine.cancel("gp")
    work(engine)
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert engine.get_run("gp~child-1").status is fluxo.RunStatus.CANCELLED
    assert engine.get_run("free-child").status is fluxo.RunStatus.WAITING
    engine.signal("free-child", "go", "still here")
    work(engine)
    assert engine.handle("free-child").result(timeout=0) == "still here"


def test_cancelling_a_grandparent_cancels_down_the_tree(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(grandparent.options(id="g"), "go")
    work(engine)
    assert engine.get_run("g~child-1~child-1").status is fluxo.RunStatus.WAITING
    engine.cancel("g")
    work(engine)
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert engine.get_run("g~child-1").status is fluxo.RunStatus.CANCELLED
    assert engine.get_run("g~child-1~child-1").status is fluxo.RunStatus.CANCELLED


def test_cancelling_a_child_tells_its_waiting_parent(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(awaiting_parent.options(id="ap"), "go")
    work(engine)
    engine.cancel("ap~child-1")
    work(engine)
    assert handle.result(timeout=0) == "child cancelled: WorkflowCancelledError"


def test_a_pending_child_cancelled_before_it_ran_still_tells_its_parent(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(awaiting_parent.options(id="ap"), "go")
    execute(engine, "ap")  # the parent only: its child is created, not yet run
    assert engine.get_run("ap~child-1").status is fluxo.RunStatus.PENDING
    engine.cancel("ap~child-1")
    work(engine)
    assert handle.result(timeout=0) == "child cancelled: WorkflowCancelledError"


def test_a_parent_can_cancel_its_child(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(cancelling_parent.options(id="cp"), "go")
    work(engine)
    assert handle.result(timeout=0) == "cancelled it"
    assert engine.get_run("cp~child-1").status is fluxo.RunStatus.CANCELLED


def test_a_parent_that_ends_first_cancels_its_attached_children(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(careless_parent.options(id="cp"), "go")
    with caplog.at_level(logging.WARNING, logger="fluxo._executor"):
        work(engine)
    assert handle.result(timeout=0) == "done"
    assert engine.get_run("cp~child-1").status is fluxo.RunStatus.CANCELLED
    assert "ends without waiting for its child runs cp~child-1" in caplog.text
    # The detached one outlives it; its outcome, sent to a finished parent, is dropped.
    engine.signal("careless-free", "go", "alone")
    work(engine)
    assert engine.handle("careless-free").result(timeout=0) == "alone"
    assert kinds(engine.history("cp"))[-1] == "workflow_completed"


# -- crashes and replay ----------------------------------------------------------------


class CrashOnce:
    """Forwards to a store; dies (SimulatedCrash) once, at the first call ``when`` picks."""

    def __init__(self, inner: fluxo.Store, when: Any) -> None:
        self.inner = inner
        self.when = when
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _maybe_crash(self, *call: Any) -> None:
        if not self.crashed and self.when(*call):
            self.crashed = True
            raise SimulatedCrash(call[0])

    def append(self, run_id: str, seq: int, events: Any, **kwargs: Any) -> None:
        self._maybe_crash("append", run_id, events)
        self.inner.append(run_id, seq, events, **kwargs)

    def send_signal(self, run_id: str, name: str, payload: bytes, **kwargs: Any) -> bool:
        sent = self.inner.send_signal(run_id, name, payload, **kwargs)
        self._maybe_crash("signalled", run_id, name)
        return sent


def test_a_crash_between_creating_and_recording_the_child_starts_it_once(
    make_engine: MakeEngine, shared_store: fluxo.Store
) -> None:
    def before_child_started(what: str, run_id: str, events: Any = ()) -> bool:
        return what == "append" and any(isinstance(e, history.ChildStarted) for e in events)

    crashing = CrashOnce(shared_store, before_child_started)
    engine = make_engine(*WORKFLOWS, store=crashing)  # type: ignore[arg-type]
    handle = engine.start(parent.options(id="p"), 2)
    with pytest.raises(SimulatedCrash):
        execute(engine, "p", "first", lease=5)
    assert engine.get_run("p~child-1").parent == "p"  # created, not yet recorded
    engine.clock.advance(6)  # type: ignore[attr-defined]
    work(engine)
    assert handle.result(timeout=0) == [5, 7, 7]
    assert sorted(r.id for r in engine.list_runs()) == ["p", "p~child-1", "p~child-3"]
    assert ran == ["double 2", "double 3"]


def test_a_child_a_crashed_execution_created_with_other_arguments_is_a_mismatch(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(*WORKFLOWS)
    # As if an execution of the code of yesterday (offset 97) created the child, then crashed.
    engine.store.create_run("kid", child.name, b'{"x":99}', now=0.0, parent="p")
    handle = engine.start(offset_parent.options(id="p"), 2)
    assert execute(engine, "p") is _executor.Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        handle.result(timeout=0)
    assert "run 'kid' with other arguments" in str(info.value)
    assert "x: 99 (the existing run) != 2 (given)" in str(info.value)
    assert kinds(engine.history("p")) == ["workflow_started", "workflow_failed"]
    monkeypatch.setitem(OFFSET, "child", 97)  # the fix: yesterday's code back
    engine.retry("p")
    while work(engine):
        pass
    assert handle.result(timeout=0) == 199
    assert ran == ["double 99"]  # the child that existed, run once
    assert sorted(run.id for run in engine.list_runs()) == ["kid", "p"]


def test_a_child_a_crashed_execution_created_with_the_same_arguments_is_used(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.store.create_run("kid", child.name, b'{"x":2}', now=0.0, parent="p")
    handle = engine.start(offset_parent.options(id="p"), 2)
    while work(engine):
        pass
    assert handle.result(timeout=0) == 5
    assert sorted(run.id for run in engine.list_runs()) == ["kid", "p"]


def test_a_child_that_crashes_after_telling_its_parent_tells_it_once(
    make_engine: MakeEngine, clock: FakeClock, shared_store: fluxo.Store
) -> None:
    def after_telling(what: str, run_id: str, name: str = "") -> bool:
        return what == "signalled" and name.startswith("fluxo:child:")

    crashing = CrashOnce(shared_store, after_telling)
    engine = make_engine(*WORKFLOWS, store=crashing)  # type: ignore[arg-type]
    handle = engine.start(awaiting_parent.options(id="ap"), "go")
    execute(engine, "ap")
    engine.signal("ap~child-1", "go", "payload")
    with pytest.raises(SimulatedCrash):
        execute(engine, "ap~child-1", "doomed", lease=5)
    assert engine.get_run("ap~child-1").status is fluxo.RunStatus.RUNNING  # end not recorded
    clock.advance(6)
    work(engine)
    assert handle.result(timeout=0) == "payload"
    state = engine.store.load("ap")
    assert [s.name for s in state.signals] == ["fluxo:child:ap~child-1"]
    assert kinds(engine.history("ap~child-1"))[-1] == "workflow_completed"


def test_a_store_failure_while_telling_the_parent_leaves_the_child_to_resume(
    make_engine: MakeEngine, clock: FakeClock, shared_store: fluxo.Store
) -> None:
    class Failing:
        def __init__(self, inner: fluxo.Store) -> None:
            self.inner = inner
            self.fail = True

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def send_signal(self, run_id: str, name: str, *args: Any, **kwargs: Any) -> bool:
            if self.fail and name.startswith("fluxo:child:"):
                self.fail = False
                raise fluxo.StoreUnavailableError("the store is down")
            return self.inner.send_signal(run_id, name, *args, **kwargs)

    engine = make_engine(*WORKFLOWS, store=Failing(shared_store))  # type: ignore[arg-type]
    handle = engine.start(parent.options(id="p"), 1)
    execute(engine, "p")
    assert execute(engine, "p~child-1", lease=5) is _executor.Outcome.BROKEN
    assert engine.get_run("p~child-1").status is fluxo.RunStatus.RUNNING
    clock.advance(6)
    work(engine)
    assert handle.result(timeout=0) == [3, 5, 5]


def test_a_parent_history_replays_without_its_children(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.start(parent.options(id="p"), 3)
    engine.start(tolerant_parent.options(id="tp"), "no")
    engine.start(guarded_parent.options(id="gp"), "go")
    work(engine)
    engine.cancel("gp")
    work(engine)
    for run_id, wf in (("p", parent), ("tp", tolerant_parent), ("gp", guarded_parent)):
        replay(engine.export_history(run_id), workflows=[wf])  # raises on a mismatch


def test_starting_another_child_workflow_is_a_mismatch(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.start(named_parent.options(id="np"), "c1")
    work(engine)
    document = engine.export_history("np")

    @fluxo.workflow(name=named_parent.name)
    def changed(child_id: str) -> int:
        return sleepy_child.options(id=child_id)(1.0)  # type: ignore[return-value]

    with pytest.raises(fluxo.NondeterminismError, match="sleepy_child"):
        replay(document, workflows=[changed])

    @fluxo.workflow(name=named_parent.name)
    def renamed(child_id: str) -> int:
        return child.options(id=child_id + "-new")(5)

    with pytest.raises(fluxo.NondeterminismError, match="another id"):
        replay(document, workflows=[renamed])


def test_always_replay_environment_replays_children_from_the_top() -> None:
    with WorkflowEnvironment(always_replay=True) as env:
        assert env.run(fan_out, 3) == [5, 3, 1]
        handle = env.start(guarded_parent.options(id="gp"), "x")
        env.signal("gp~child-1", "x", "hi")
        assert handle.result() == "hi"
        assert env.engine.get_run("free-child").status is fluxo.RunStatus.WAITING


# -- bad input ---------------------------------------------------------------------------


def test_start_child_outside_a_workflow_is_refused() -> None:
    with pytest.raises(fluxo.DefinitionError, match="inside a workflow"):
        fluxo.start_child(child, 1)
    with pytest.raises(fluxo.DefinitionError, match=r"@fluxo\.workflow"):
        fluxo.start_child(double, 1)  # type: ignore[arg-type]


def test_a_child_handle_is_used_only_by_its_workflow(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(leaky_parent.options(id="lp"), 1)
    work(engine)
    assert handle.result(timeout=0) == f"ChildHandle('lp~child-1', workflow='{child.name}')"
    with pytest.raises(fluxo.DefinitionError, match=r"engine.handle\('lp~child-1'\)"):
        leaked[-1].result()


def test_detached_is_for_children_only(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    with pytest.raises(fluxo.DefinitionError, match="child workflows"):
        engine.start(child.options(detached=True), 1)
    with pytest.raises(fluxo.DefinitionError, match="True or False"):
        child.options(detached="yes")  # type: ignore[arg-type]


def test_fluxo_signal_names_are_reserved(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.start(waiting_child.options(id="w"), "go")
    with pytest.raises(fluxo.DefinitionError, match="Fluxo's own"):
        engine.signal("w", "fluxo:child:w", 1)
    with pytest.raises(fluxo.DefinitionError, match="Fluxo's own"):
        fluxo.wait_for_signal("fluxo:anything")


def test_a_child_id_that_would_be_too_long_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(parent.options(id="p" * 250), 1)
    work(engine)
    with pytest.raises(fluxo.WorkflowFailedError, match="shorter one"):
        handle.result(timeout=0)


# -- retries, orphans and cleanup ------------------------------------------------------

broken = {"on": True}


@fluxo.step
def flaky_step() -> str:
    if broken["on"]:
        raise RuntimeError("not yet")
    return "fixed"


@fluxo.workflow
def outliving_parent(signal: str) -> str:
    """Starts a detached child, then fails until fixed; awaits the child after."""
    handle = fluxo.start_child(waiting_child.options(id="outliver", detached=True), signal)
    fixed = flaky_step()
    return f"{fixed} {handle.result()}"


@fluxo.workflow
def retried_child(x: int) -> str:
    return flaky_step()


@fluxo.workflow
def patient_parent(x: int) -> str:
    """Starts its child, and awaits it only once told to."""
    handle = fluxo.start_child(retried_child, x)
    fluxo.wait_for_signal("later")
    return handle.result()


@fluxo.workflow
def tidy_child(signal: str) -> str:
    """Waits for ``signal``; cancelled, it waits for ``tidied`` before it ends."""
    try:
        return str(fluxo.wait_for_signal(signal, type=str))
    finally:
        fluxo.wait_for_signal("tidied")


@fluxo.workflow
def cleaning_parent(signal: str) -> str:
    """Cancelled, it waits in its finally: block for its child to end."""
    handle = fluxo.start_child(tidy_child, signal)
    try:
        return handle.result()
    finally:
        with contextlib.suppress(fluxo.WorkflowCancelledError):
            handle.result()


@fluxo.workflow
def late_starter(x: int) -> str:
    double(x)
    return waiting_child("go")


WORKFLOWS.extend(
    [outliving_parent, retried_child, patient_parent, tidy_child, cleaning_parent, late_starter]
)


@pytest.fixture
def fixable() -> Any:
    broken["on"] = True
    yield broken
    broken["on"] = True


def test_a_retried_parent_gets_the_outcome_its_child_sent_while_it_had_failed(
    make_engine: MakeEngine, fixable: dict[str, bool]
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(outliving_parent.options(id="op"), "go")
    work(engine)
    assert engine.get_run("op").status is fluxo.RunStatus.FAILED
    engine.signal("outliver", "go", "child done")  # its outcome reaches a failed parent
    work(engine)
    assert engine.get_run("outliver").status is fluxo.RunStatus.COMPLETED
    fixable["on"] = False
    engine.retry("op")
    work(engine)
    assert handle.result(timeout=0) == "fixed child done"


def test_a_parent_gets_the_outcome_of_its_child_retried_by_an_operator(
    make_engine: MakeEngine, fixable: dict[str, bool]
) -> None:
    engine = make_engine(*WORKFLOWS)
    handle = engine.start(patient_parent.options(id="pp"), 1)
    work(engine)
    assert engine.get_run("pp~child-1").status is fluxo.RunStatus.FAILED  # not yet awaited
    fixable["on"] = False
    engine.retry("pp~child-1")
    work(engine)
    engine.signal("pp", "later")
    work(engine)
    assert handle.result(timeout=0) == "fixed"
    signals = engine.store.load("pp").signals
    assert [s.name for s in signals] == ["fluxo:child:pp~child-1"] * 2 + ["later"]


def test_a_cancelled_parent_waits_for_its_child_without_spinning(
    make_engine: MakeEngine, shared_store: fluxo.Store
) -> None:
    store = CountingStore(shared_store)
    engine = make_engine(*WORKFLOWS, store=store)  # type: ignore[arg-type]
    handle = engine.start(cleaning_parent.options(id="cp"), "go")
    work(engine)
    engine.cancel("cp")
    work(engine)  # returns: both wait, the child for "tidied", the parent for the child
    assert engine.get_run("cp").status is fluxo.RunStatus.WAITING
    assert engine.get_run("cp~child-1").status is fluxo.RunStatus.WAITING
    assert store.loads_of["cp"] <= 3
    engine.signal("cp~child-1", "tidied")
    work(engine)
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert kinds(engine.history("cp"))[-3:] == [
        "cancel_requested",
        "child_cancelled",
        "workflow_cancelled",
    ]


def test_a_parent_failed_by_a_mismatch_keeps_its_children_for_the_retry(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(*WORKFLOWS)
    engine.start(awaiting_parent.options(id="ap"), "go")
    work(engine)

    @fluxo.workflow(name=awaiting_parent.name)
    def changed(signal: str) -> str:
        double(1)  # not in the history
        return "changed"

    other = make_engine(changed, waiting_child, store=engine.store)
    engine.store.request_cancel("ap", now=engine.clock())  # wake it up under the new code
    other.worker().process_one()
    assert engine.get_run("ap").status is fluxo.RunStatus.FAILED
    assert engine.get_run("ap~child-1").status is fluxo.RunStatus.WAITING


def test_a_child_created_by_a_crashed_execution_is_cancelled_with_its_parent(
    make_engine: MakeEngine, clock: FakeClock, shared_store: fluxo.Store
) -> None:
    def before_child_started(what: str, run_id: str, events: Any = ()) -> bool:
        return what == "append" and any(isinstance(e, history.ChildStarted) for e in events)

    for workflow, run_id, child_id in (
        (awaiting_parent, "first", "first~child-1"),  # nothing recorded before the crash
        (late_starter, "later", "later~child-2"),  # a step recorded before it
    ):
        crashing = CrashOnce(shared_store, before_child_started)
        engine = make_engine(*WORKFLOWS, store=crashing)  # type: ignore[arg-type]
        handle = engine.start(workflow.options(id=run_id), "go" if run_id == "first" else 1)
        with pytest.raises(SimulatedCrash):
            execute(engine, run_id, "doomed", lease=5)
        assert engine.get_run(child_id).parent == run_id
        engine.cancel(run_id)
        clock.advance(6)
        work(engine)
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result(timeout=0)
        assert engine.get_run(child_id).status is fluxo.RunStatus.CANCELLED


def test_a_worker_of_one_slot_runs_a_parent_and_its_children(make_engine: MakeEngine) -> None:
    engine = make_engine(*WORKFLOWS, clock=time.time)
    with engine.worker(concurrency=1, sticky=600):  # the parent's holds must let go
        assert engine.start(fan_out, 3).result(timeout=30) == [5, 3, 1]
        assert engine.start(parent, 1).result(timeout=30) == [3, 5, 5]
