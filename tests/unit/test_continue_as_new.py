"""``fluxo.continue_as_new``: a chain of runs under one logical id, each with a short history."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.testing import WorkflowEnvironment, replay

from .conftest import MakeEngine
from .helpers import FakeClock, SimulatedCrash, execute, kinds

ROUNDS = 50
BOUND = 5
"""The most events any run of a chain may hold: a handful, whatever the rounds."""


@fluxo.step
def add(total: int, n: int) -> int:
    return total + n


@fluxo.workflow
def tally(n: int, total: int = 0) -> int:
    """Adds n + (n-1) + ... + 1, one round per run."""
    if n == 0:
        return total
    fluxo.continue_as_new(n - 1, total=add(total, n))


@fluxo.workflow
def poller(n: int, total: int = 0) -> int:
    """Sleeps an hour per round, then adds, then goes on in a new run."""
    if n == 0:
        return total
    fluxo.sleep(3600)
    fluxo.continue_as_new(n - 1, add(total, n))


@fluxo.workflow
def waiter(rounds: int, seen: list[str]) -> list[str]:
    """Waits for one signal per round."""
    if rounds == 0:
        return seen
    item = fluxo.wait_for_signal("item", type=str)
    fluxo.continue_as_new(rounds - 1, [*seen, item])


@fluxo.workflow
def misfit(n: int) -> int:
    fluxo.continue_as_new("one", "two", "three")
    return n


@fluxo.workflow
def swallower(n: int) -> int:
    if n == 0:
        return 0
    try:
        fluxo.continue_as_new(n - 1)
    except Exception:
        return -1
    return -2


@fluxo.workflow
def stubborn(n: int) -> int:
    if n == 0:
        return 0
    with contextlib.suppress(BaseException):  # even this cannot keep the run going
        fluxo.continue_as_new(n - 1)
    return -1


EXPECTED = ROUNDS * (ROUNDS + 1) // 2


def drive(engine: fluxo.Engine, clock: FakeClock, root: str) -> list[str]:
    """Execute the chain of ``root`` run by run; return the ids of the runs executed."""
    executed = []
    while not (run := engine.get_run(root)).status.is_terminal:
        if run.ready_at is not None and run.ready_at > clock():
            clock.advance(run.ready_at - clock())
        execute(engine, run.id)
        executed.append(run.id)
    return executed


def chain(engine: fluxo.Engine, root: str) -> list[str]:
    """The ids of the runs of ``root``'s chain, following recorded ends only."""
    ids = [root]
    while True:
        events = engine.history(ids[-1])
        if not isinstance(events[-1], history.ContinuedAsNew):
            return ids
        ids.append(events[-1].name)


# -- the chain -------------------------------------------------------------------------


def test_fifty_rounds_keep_every_history_bounded(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    engine = make_engine(tally, store=store_url)
    handle = engine.start(tally.options(id="sum"), ROUNDS)
    executed = drive(engine, clock, "sum")
    ids = chain(engine, "sum")
    assert executed == ids == ["sum", *(f"sum~{i}" for i in range(1, ROUNDS + 1))]
    assert handle.result(timeout=0) == EXPECTED
    assert handle.status() is fluxo.RunStatus.COMPLETED
    for run_id in ids[:-1]:
        events = engine.history(run_id)
        assert len(events) <= BOUND
        assert kinds(events) == ["workflow_started", "step_completed", "continued_as_new"]
        assert engine.get_run(run_id, follow=False).status is fluxo.RunStatus.COMPLETED
    assert kinds(engine.history(ids[-1])) == ["workflow_started", "workflow_completed"]
    assert len(engine.list_runs(limit=1000)) == ROUNDS + 1


def test_get_run_follows_the_chain_and_follow_false_does_not(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    engine.start(tally.options(id="short"), 2)
    execute(engine, "short")
    assert engine.get_run("short").id == "short~1"
    assert engine.get_run("short", follow=False).id == "short"
    assert engine.history("short")[-1] == history.ContinuedAsNew("short~1")
    execute(engine, "short~1")
    assert engine.get_run("short").id == "short~2"
    assert engine.get_run("short~1").id == "short~2"
    execute(engine, "short~2")
    assert engine.handle("short").result(timeout=0) == 3


def test_the_next_run_gets_the_arguments_and_the_deadline(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    engine.start(tally.options(id="late", timeout=600), 1, total=7)
    execute(engine, "late")
    first = engine.get_run("late", follow=False)
    second = engine.get_run("late")
    assert second.deadline == first.deadline is not None
    started = engine.history("late~1")[0]
    assert started.name == tally.name
    assert engine.codec.decode(started.data or b"", dict[str, Any]) == {"n": 0, "total": 8}


def test_engine_run_executes_the_whole_chain_inline(
    make_engine: MakeEngine, store_url: str
) -> None:
    engine = make_engine(tally, store=store_url)
    assert engine.run(tally.options(id="inline"), ROUNDS) == EXPECTED
    assert engine.get_run("inline").id == f"inline~{ROUNDS}"


def test_a_worker_drives_the_chain(make_engine: MakeEngine, store_url: str) -> None:
    engine = make_engine(tally, store=store_url)
    handle = engine.start(tally.options(id="worked"), 10)
    worker = engine.worker(worker_id="w1")
    assert worker.process_one() == 11
    assert handle.result(timeout=0) == 55
    assert len(chain(engine, "worked")) == 11


def test_signals_go_to_the_latest_run(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(waiter)
    handle = engine.start(waiter.options(id="inbox"), 3, [])
    execute(engine, "inbox")  # waits for its first signal
    for item in ["a", "b", "c"]:
        engine.signal("inbox", "item", item)
        execute(engine, engine.get_run("inbox").id)
    execute(engine, "inbox~3")
    assert handle.result(timeout=0) == ["a", "b", "c"]


# -- crash safety ----------------------------------------------------------------------


class CrashingStore:
    """Forwards to a store; dies (SimulatedCrash) right before recording ContinuedAsNew."""

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.crashes = 1
        self.on_create: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_run(self, run_id: str, *args: Any, **kwargs: Any) -> Any:
        created = self.inner.create_run(run_id, *args, **kwargs)
        if self.on_create is not None:
            self.on_create(run_id)
        return created

    def append(self, run_id: str, seq: int, events: Any, **kwargs: Any) -> None:
        if self.crashes and any(isinstance(e, history.ContinuedAsNew) for e in events):
            self.crashes -= 1
            raise SimulatedCrash
        self.inner.append(run_id, seq, events, **kwargs)


@pytest.mark.parametrize("next_runs_first", [False, True])
def test_a_crash_between_creating_the_next_run_and_recording_the_end(
    make_engine: MakeEngine, clock: FakeClock, store_url: str, next_runs_first: bool
) -> None:
    store = CrashingStore(fluxo.open_store(store_url))
    engine = make_engine(tally, store=store)
    handle = engine.start(tally.options(id="crashy"), 3)
    with pytest.raises(SimulatedCrash):
        execute(engine, "crashy", "doomed", lease=30)
    assert engine.get_run("crashy").id == "crashy"  # not continued yet: no end recorded
    assert engine.get_run("crashy~1", follow=False).status is fluxo.RunStatus.PENDING
    if next_runs_first:
        drive(engine, clock, "crashy~1")  # a worker finds the next run and runs it at once
    clock.advance(31)  # the crashed execution's lease expires
    execute(engine, "crashy", "rescuer")
    assert engine.history("crashy")[-1] == history.ContinuedAsNew("crashy~1")
    drive(engine, clock, "crashy")
    assert handle.result(timeout=0) == 6
    assert chain(engine, "crashy") == ["crashy", "crashy~1", "crashy~2", "crashy~3"]
    assert sorted(run.id for run in engine.list_runs()) == [
        "crashy",
        "crashy~1",
        "crashy~2",
        "crashy~3",
    ]
    assert len(engine.history("crashy~1")) == 3  # its step ran once: no second next run


def test_a_next_run_a_crashed_execution_created_with_other_arguments_is_a_mismatch(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(tally)
    # As if an execution whose step answered otherwise created the next run, then crashed.
    engine.store.create_run("c~1", tally.name, b'{"n":2,"total":4}', now=clock() + 1)
    handle = engine.start(tally.options(id="c"), 3)
    assert execute(engine, "c") is _executor.Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as info:
        handle.result(timeout=0)
    assert "continue_as_new c~1" in str(info.value)
    assert "total: 4 (the existing run) != 3 (given)" in str(info.value)
    assert kinds(engine.history("c")) == [
        "workflow_started",
        "step_completed",
        "workflow_failed",
    ]
    assert engine.get_run("c~1", follow=False).status is fluxo.RunStatus.PENDING


def test_a_cancel_that_lands_while_the_run_continues_reaches_the_next_run(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = CrashingStore(fluxo.open_store("memory://"))
    store.crashes = 0

    def cancel_current(run_id: str) -> None:
        if run_id == "racy~1":
            store.inner.request_cancel("racy", now=clock())

    store.on_create = cancel_current
    engine = make_engine(tally, store=store)
    handle = engine.start(tally.options(id="racy"), 3)
    execute(engine, "racy")
    assert engine.get_run("racy", follow=False).status is fluxo.RunStatus.COMPLETED
    assert engine.get_run("racy~1", follow=False).cancel_requested
    drive(engine, clock, "racy")
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert engine.get_run("racy").id == "racy~1"


def test_cancelling_the_logical_id_cancels_the_latest_run(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(poller)
    handle = engine.start(poller.options(id="loop"), 5)
    execute(engine, "loop")
    clock.advance(3600)
    execute(engine, "loop")
    execute(engine, "loop~1")  # now waits in its timer
    run = engine.cancel("loop")
    assert run.id == "loop~1"
    assert run.cancel_requested
    execute(engine, "loop~1")
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=0)
    assert handle.status() is fluxo.RunStatus.CANCELLED
    assert engine.get_run("loop", follow=False).status is fluxo.RunStatus.COMPLETED


# -- misuse ----------------------------------------------------------------------------


def test_arguments_that_do_not_fit_fail_the_run_clearly(make_engine: MakeEngine) -> None:
    engine = make_engine(misfit)
    handle = engine.start(misfit.options(id="bad"), 1)
    execute(engine, "bad")
    with pytest.raises(fluxo.WorkflowFailedError, match="do not fit its signature"):
        handle.result(timeout=0)
    assert [run.id for run in engine.list_runs()] == ["bad"]


@fluxo.workflow
def mistyped(n: int) -> int:
    if n == 0:
        return 0
    try:
        fluxo.continue_as_new(str(n - 1))  # type: ignore[arg-type]
    except fluxo.EncodeError as exc:
        return len(str(exc))
    return -1


def test_arguments_of_another_type_are_refused_before_the_next_run_exists(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(mistyped)
    handle = engine.start(mistyped.options(id="typed"), 2)

    execute(engine, "typed")

    assert handle.result(timeout=0) > 0
    assert [run.id for run in engine.list_runs()] == ["typed"]


def test_outside_a_workflow_it_is_an_error() -> None:
    with pytest.raises(fluxo.DefinitionError, match="outside one there is no run"):
        fluxo.continue_as_new(1)


def test_run_ids_may_not_contain_the_chain_separator() -> None:
    with pytest.raises(fluxo.DefinitionError, match="may not contain '~'"):
        tally.options(id="a~1")


def test_a_chain_whose_next_id_would_be_too_long_fails_clearly(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    handle = engine.start(tally.options(id="x" * 255), 1)
    execute(engine, "x" * 255)
    with pytest.raises(fluxo.WorkflowFailedError, match="longer than 255 characters"):
        handle.result(timeout=0)


@pytest.mark.parametrize("workflow", [swallower, stubborn], ids=["Exception", "BaseException"])
def test_except_cannot_swallow_it(make_engine: MakeEngine, workflow: Any) -> None:
    engine = make_engine(workflow)
    handle = engine.start(workflow.options(id="sw"), 2)
    assert engine.worker().process_one() == 3
    assert handle.result(timeout=0) == 0
    assert engine.get_run("sw").id == "sw~2"


# -- replay and the test environment ---------------------------------------------------


def test_an_exported_continued_history_replays(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    engine.start(tally.options(id="rep"), 2)
    execute(engine, "rep")
    document = engine.export_history("rep")
    assert document["events"][-1]["kind"] == "continued_as_new"
    assert replay(document, workflows=[tally]).ok
    execute(engine, "rep~1")
    execute(engine, "rep~2")
    assert replay(engine.export_history("rep~2"), workflows=[tally]).ok


def test_replay_notices_code_that_no_longer_continues(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    engine.start(tally.options(id="old"), 1)
    execute(engine, "old")
    document = engine.export_history("old")
    document["events"][-1]["name"] = "old~7"
    with pytest.raises(fluxo.NondeterminismError, match="continue_as_new old~1"):
        replay(document, workflows=[tally])


def test_the_environment_runs_fifty_rounds_in_virtual_time() -> None:
    with WorkflowEnvironment() as env:
        start = env.now()
        handle = env.start(poller.options(id="env-loop"), ROUNDS)
        assert handle.result() == EXPECTED
        assert (env.now() - start).total_seconds() >= ROUNDS * 3600
        assert env.engine.get_run("env-loop").id == f"env-loop~{ROUNDS}"
        for i in range(ROUNDS + 1):
            run_id = "env-loop" if i == 0 else f"env-loop~{i}"
            assert len(env.history(run_id)) <= BOUND
        assert len(env.steps_run()) == ROUNDS


def test_the_environment_cancels_the_latest_run() -> None:
    with WorkflowEnvironment() as env:
        handle = env.start(poller.options(id="env-cancel"), 5)
        env.advance(3600 * 2 + 1)
        run = env.cancel(handle)
        assert run.id == "env-cancel~2"
        assert run.status is fluxo.RunStatus.CANCELLED
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result()


def test_the_executor_reports_a_continued_outcome(make_engine: MakeEngine) -> None:
    engine = make_engine(tally)
    engine.start(tally.options(id="o"), 1)
    assert execute(engine, "o") is _executor.Outcome.CONTINUED
