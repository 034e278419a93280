"""``fluxo.parallel`` and ``fluxo.map``: durable fan-out, attacked through its invariants.

The branches run on real threads, so tests that care about the order in which
branches finish force it with events. A crash is ``SimulatedCrash`` raised by a
branch: the workflow thread re-raises it, and the run keeps what was recorded
and its lease, as after ``kill -9``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import fluxo
from fluxo import _cli_format, _executor, _history_file, history
from fluxo.testing import WorkflowEnvironment, replay

from .conftest import MakeEngine
from .helpers import WAIT, FakeClock, SimulatedCrash, execute, kinds, named, no_sleep

Outcome = _executor.Outcome


class Ledger:
    """Counts step runs and the order in which branches finished, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: collections.Counter[str] = collections.Counter()
        self.finished: list[int] = []

    def ran(self, key: str) -> int:
        with self.lock:
            self.runs[key] += 1
            return self.runs[key]

    def finish(self, index: int) -> None:
        with self.lock:
            self.finished.append(index)


def resume(engine: fluxo.Engine, clock: FakeClock, run_id: str, **kwargs: Any) -> Outcome:
    """Let the crashed execution's lease expire, and execute the run again."""
    clock.advance(3600)
    return execute(engine, run_id, f"resumer-{clock()}", **kwargs)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def branch_events(engine: fluxo.Engine, run_id: str) -> list[history.Event]:
    return [e for e in engine.history(run_id) if isinstance(e, history.BRANCH_KINDS)]


# -- a fan-out completes, in call order -------------------------------------------------


def test_a_fan_out_of_five_steps_completes(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.square")
    def square(x: int) -> int:
        return x * x

    @fluxo.step(name="par.label")
    def label(x: int) -> str:
        return f"#{x}"

    @fluxo.workflow(name="par.five")
    def five() -> list[Any]:
        return fluxo.parallel(
            square.bind(1), square.bind(2), label.bind(3), square.bind(x=4), label.bind(5)
        )

    engine = make_engine(five)
    handle = engine.start(five)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [1, 4, "#3", 16, "#5"]
    events = engine.history(handle.id)
    assert kinds(events[:2]) == ["workflow_started", "parallel_started"]
    assert events[1].name == ""  # the branches call different steps: the plan lists them
    plan = engine.codec.decode(events[1].data or b"", Any)
    assert plan == {
        "count": 5,
        "steps": [f"par.{n}" for n in ("square", "square", "label", "square", "label")],
    }
    assert sorted(e.name for e in events[2:7]) == [
        "par.label#2",
        "par.label#4",
        "par.square#0",
        "par.square#1",
        "par.square#3",
    ]
    assert kinds(events[2:7]) == ["branch_completed"] * 5
    assert kinds(events[7:]) == ["workflow_completed"]


def test_map_records_one_step_name_and_returns_results_in_item_order(
    make_engine: MakeEngine,
) -> None:
    @fluxo.step(name="par.inc")
    def inc(x: int) -> int:
        time.sleep(0.001 * (x % 3))  # finish out of order
        return x + 1

    @fluxo.workflow(name="par.mapped")
    def mapped(n: int) -> list[int]:
        return fluxo.map(inc, range(n), max_concurrency=4)

    engine = make_engine(mapped)
    handle = engine.start(mapped, 20)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == list(range(1, 21))
    started = engine.history(handle.id)[1]
    assert (started.kind, started.name) == ("parallel_started", "par.inc")
    assert engine.codec.decode(started.data or b"", Any) == {"count": 20}


def test_map_handles_a_thousand_items(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.triple")
    def triple(x: int) -> int:
        return 3 * x

    @fluxo.workflow(name="par.big")
    def big(n: int) -> int:
        return sum(fluxo.map(triple, range(n)))

    engine = make_engine(big)
    handle = engine.start(big, 1000)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 3 * sum(range(1000))
    assert len(branch_events(engine, handle.id)) == 1000


def test_an_empty_fan_out_records_nothing(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.never")
    def never(x: int) -> int:
        raise AssertionError("not called")

    @fluxo.workflow(name="par.empty")
    def empty() -> list[Any]:
        return [fluxo.parallel(), fluxo.map(never, [])]

    engine = make_engine(empty)
    handle = engine.start(empty)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [[], []]
    assert kinds(engine.history(handle.id)) == ["workflow_started", "workflow_completed"]


def test_max_concurrency_bounds_the_branches_running_at_once(make_engine: MakeEngine) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @fluxo.step(name="par.busy")
    def busy(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return x

    @fluxo.workflow(name="par.bounded")
    def bounded() -> list[int]:
        return fluxo.map(busy, range(12), max_concurrency=2)

    engine = make_engine(bounded)
    handle = engine.start(bounded)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == list(range(12))
    assert 1 <= peak[0] <= 2


def test_the_engine_pool_bounds_branches_too(make_engine: MakeEngine) -> None:
    lock = threading.Lock()
    running = [0]
    peak = [0]

    @fluxo.step(name="par.busy3")
    def busy(x: int) -> int:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return x

    @fluxo.workflow(name="par.pooled")
    def pooled() -> list[int]:
        return fluxo.map(busy, range(12))

    engine = make_engine(pooled, parallel_threads=3)
    handle = engine.start(pooled)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert 1 <= peak[0] <= 3


# -- completion order never matters -----------------------------------------------------


def _ordered_steps(ledger: Ledger, order: list[int], crash_after: bool) -> Any:
    """Five branches that finish in ``order`` (each waits for the one before it)."""
    turns = {index: threading.Event() for index in order}

    @fluxo.step(name="par.ordered")
    def ordered(index: int) -> str:
        ledger.ran(f"branch{index}")
        position = order.index(index)
        if position > 0:
            assert turns[order[position - 1]].wait(WAIT)
        ledger.finish(index)
        turns[index].set()
        return f"r{index}"

    @fluxo.step(name="par.after")
    def after() -> None:
        if ledger.ran("after") == 1 and crash_after:
            raise SimulatedCrash("after the fan-out")

    @fluxo.workflow(name="par.orders")
    def orders() -> str:
        results = fluxo.map(ordered, range(5))
        after()
        return ",".join(results)

    return orders


def test_replay_gives_the_same_result_whatever_order_branches_finished_in(
    store_url: str, make_engine: MakeEngine, clock: FakeClock
) -> None:
    ledger = Ledger()
    orders = _ordered_steps(ledger, [4, 2, 0, 3, 1], crash_after=True)
    engine = make_engine(orders, store=store_url)
    handle = engine.start(orders)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert ledger.finished == [4, 2, 0, 3, 1]
    recorded = [e.name for e in branch_events(engine, handle.id)]
    assert recorded == [f"par.ordered#{i}" for i in (4, 2, 0, 3, 1)]  # as they finished

    # Resumed: the fan-out is answered from the history, in index order; nothing reruns.
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "r0,r1,r2,r3,r4"
    assert sum(ledger.runs[f"branch{i}"] for i in range(5)) == 5
    # And a replay of the whole history, with no store and no step, agrees.
    assert replay(engine.export_history(handle.id), workflows=[orders]).ok


def test_branches_finishing_in_another_order_after_a_crash_replay_cleanly(
    store_url: str, make_engine: MakeEngine, clock: FakeClock
) -> None:
    """The live run records branches 4 and 2, then dies; the resumed run finishes 0, 1, 3."""
    ledger = Ledger()
    release = threading.Event()
    abandon = threading.Event()
    first_execution = [True]

    @fluxo.step(name="par.racer")
    def racer(index: int) -> int:
        ledger.ran(f"branch{index}")
        if first_execution[0] and index == 0:
            assert release.wait(WAIT)
            raise SimulatedCrash("the worker dies mid-fan-out")
        if first_execution[0] and index in (1, 3):
            assert abandon.wait(WAIT)  # held until after the crash
            return -1  # an abandoned branch: its result goes nowhere
        ledger.finish(index)
        return index * 10

    @fluxo.workflow(name="par.race")
    def race() -> list[int]:
        return fluxo.map(racer, range(5))

    engine = make_engine(race, store=store_url)
    handle = engine.start(race)
    crashed: list[BaseException] = []

    def run_first() -> None:
        try:
            execute(engine, handle.id)
        except SimulatedCrash as exc:
            crashed.append(exc)

    thread = threading.Thread(target=run_first)
    thread.start()
    wait_until(lambda: len(branch_events(engine, handle.id)) == 2, "branches 4 and 2")
    release.set()
    thread.join(WAIT)
    abandon.set()
    assert crashed, "the first execution did not crash"
    assert sorted(e.name for e in branch_events(engine, handle.id)) == [
        "par.racer#2",
        "par.racer#4",
    ]

    first_execution[0] = False
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [0, 10, 20, 30, 40]
    # Completed branches did not run again; the others ran once more.
    assert ledger.runs == {"branch0": 2, "branch1": 2, "branch2": 1, "branch3": 2, "branch4": 1}
    names = [e.name for e in branch_events(engine, handle.id)]
    assert sorted(names) == [f"par.racer#{i}" for i in range(5)]
    assert replay(engine.export_history(handle.id), workflows=[race]).ok


def test_a_crash_after_some_branches_were_recorded_reruns_only_the_others(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    ledger = Ledger()
    engine_box: list[fluxo.Engine] = []
    run_box: list[str] = []

    @fluxo.step(name="par.crasher")
    def crasher(index: int) -> int:
        count = ledger.ran(f"branch{index}")
        if index == 3 and count == 1:
            # Die once the four others are recorded.
            wait_until(
                lambda: len(branch_events(engine_box[0], run_box[0])) == 4, "the other branches"
            )
            raise SimulatedCrash("branch 3")
        return index

    @fluxo.workflow(name="par.crashy")
    def crashy() -> int:
        return sum(fluxo.map(crasher, range(5)))

    engine = make_engine(crashy)
    engine_box.append(engine)
    handle = engine.start(crashy)
    run_box.append(handle.id)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert engine.get_run(handle.id).status is fluxo.RunStatus.RUNNING  # still leased
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == 10
    assert ledger.runs == {"branch0": 1, "branch1": 1, "branch2": 1, "branch3": 2, "branch4": 1}


# -- failures ---------------------------------------------------------------------------


class Declined(Exception):
    pass


def test_a_failing_branch_lets_the_others_finish_and_raises_the_lowest_index_failure(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    seen: list[str] = []
    ledger = Ledger()

    @fluxo.step(name="par.maybe")
    def maybe(index: int) -> int:
        ledger.ran(f"branch{index}")
        if index in (1, 3):
            if index == 1:
                time.sleep(0.02)  # the higher-index failure is recorded first
            raise Declined(f"branch {index} declined")
        return index

    @fluxo.step(name="par.then")
    def then() -> None:
        if ledger.ran("then") == 1:
            raise SimulatedCrash("force a replay")

    @fluxo.workflow(name="par.failing")
    def failing() -> str:
        try:
            fluxo.map(maybe, range(5))
        except fluxo.StepError as exc:
            seen.append(f"{exc} ({exc.is_instance(Declined)})")
        then()
        return "handled"

    engine = make_engine(failing)
    handle = engine.start(failing)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "handled"
    assert (
        seen
        == [
            "step 'par.maybe' failed after 1 attempt: tests.unit.test_parallel.Declined: "
            "branch 1 declined (True)"
        ]
        * 2
    )  # live, then replayed: the same failure
    events = branch_events(engine, handle.id)
    assert sorted((e.kind, e.name) for e in events) == [
        ("branch_completed", "par.maybe#0"),
        ("branch_completed", "par.maybe#2"),
        ("branch_completed", "par.maybe#4"),
        ("branch_failed", "par.maybe#1"),
        ("branch_failed", "par.maybe#3"),
    ]
    assert all(ledger.runs[f"branch{i}"] == 1 for i in range(5))


def test_an_unhandled_branch_failure_fails_the_run(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.declines")
    def declines(index: int) -> int:
        if index == 2:
            raise Declined("no")
        return index

    @fluxo.workflow(name="par.unhandled")
    def unhandled() -> list[int]:
        return fluxo.map(declines, range(4))

    engine = make_engine(unhandled)
    handle = engine.start(unhandled)
    assert execute(engine, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as failed:
        handle.result(timeout=1)
    assert failed.value.type_name == "fluxo.StepError"
    assert len(branch_events(engine, handle.id)) == 4


def test_branches_retry_with_their_policy_and_record_each_attempt(
    make_engine: MakeEngine,
) -> None:
    ledger = Ledger()
    sleeps: list[float] = []

    @fluxo.step(name="par.flaky", retry=fluxo.Retry(max_attempts=3, initial=0.5, backoff=2))
    def flaky(index: int) -> int:
        if ledger.ran(f"branch{index}") < 3 and index == 1:
            raise ConnectionError("try again")
        return index

    @fluxo.workflow(name="par.retrying")
    def retrying() -> list[int]:
        return fluxo.map(flaky, range(3))

    engine = make_engine(retrying)
    handle = engine.start(retrying)
    assert execute(engine, handle.id, hook=no_sleep(sleeps)) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [0, 1, 2]
    assert sorted(sleeps) == [0.5, 1.0]  # back-offs wait in the branch's thread
    branch1 = [e.kind for e in branch_events(engine, handle.id) if e.name == "par.flaky#1"]
    assert branch1 == ["branch_attempt_failed", "branch_attempt_failed", "branch_completed"]


def test_a_branch_resumes_its_retry_budget_after_a_crash(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    ledger = Ledger()

    @fluxo.step(name="par.fails_then_dies", retry=fluxo.Retry(max_attempts=3, initial=0))
    def fails_then_dies(index: int) -> int:
        count = ledger.ran("attempt")
        if count == 1:
            raise ConnectionError("first attempt fails")
        if count == 2:
            raise SimulatedCrash("the second attempt dies")
        raise ConnectionError("the third, last attempt fails")

    @fluxo.workflow(name="par.budget")
    def budget() -> list[int]:
        return fluxo.map(fails_then_dies, [0])

    engine = make_engine(budget)
    handle = engine.start(budget)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    assert resume(engine, clock, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError, match="after 3 attempts"):
        handle.result(timeout=1)
    assert kinds(branch_events(engine, handle.id)) == [
        "branch_attempt_failed",
        "branch_attempt_failed",
        "branch_failed",
    ]


def test_retrying_a_run_failed_by_a_branch_reruns_only_the_failed_branches(
    make_engine: MakeEngine,
) -> None:
    ledger = Ledger()
    broken = [True]

    @fluxo.step(name="par.fixable")
    def fixable(index: int) -> int:
        ledger.ran(f"branch{index}")
        if index == 1 and broken[0]:
            raise Declined("not yet")
        return index

    @fluxo.workflow(name="par.fix")
    def fix() -> list[int]:
        return fluxo.map(fixable, range(3))

    engine = make_engine(fix)
    handle = engine.start(fix)
    assert execute(engine, handle.id) is Outcome.FAILED
    broken[0] = False
    engine.retry(handle.id)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [0, 1, 2]
    assert ledger.runs == {"branch0": 1, "branch1": 2, "branch2": 1}


def test_an_unencodable_branch_result_fails_that_branch(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.odd")
    def odd(index: int) -> Any:
        return object() if index == 1 else index

    @fluxo.workflow(name="par.odds")
    def odds() -> str:
        try:
            fluxo.map(odd, range(3))
        except fluxo.StepError as exc:
            return exc.type_name
        return "no error"

    engine = make_engine(odds)
    handle = engine.start(odds)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "fluxo.EncodeError"
    failed = [e for e in branch_events(engine, handle.id) if e.kind == "branch_failed"]
    assert [e.name for e in failed] == ["par.odd#1"]


# -- changed code -----------------------------------------------------------------------


def test_a_changed_fan_out_is_a_mismatch(shared_store: fluxo.Store, clock: FakeClock) -> None:
    @fluxo.step(name="par.a")
    def a(x: int) -> int:
        return x

    @fluxo.step(name="par.b")
    def b(x: int) -> int:
        return x

    @fluxo.step(name="par.stop")
    def stop() -> None:
        raise SimulatedCrash("before the end")

    @fluxo.workflow(name="par.shape")
    def old() -> int:
        total = sum(fluxo.parallel(a.bind(1), b.bind(2)))
        stop()
        return total

    @fluxo.workflow(name="par.shape")
    def new() -> int:
        return sum(fluxo.parallel(a.bind(1), a.bind(2)))

    engine = fluxo.Engine(shared_store, workflows=[old], clock=clock)
    handle = engine.start(old)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    changed = fluxo.Engine(shared_store, workflows=[new], clock=clock)
    assert resume(changed, clock, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError) as mismatch:
        changed.handle(handle.id).result(timeout=1)
    assert mismatch.value.seq == 1
    assert "parallel of 2 x step par.a" in str(mismatch.value)
    assert "par.a, par.b" in str(mismatch.value)


def test_a_step_where_a_fan_out_was_recorded_is_a_mismatch(
    shared_store: fluxo.Store, clock: FakeClock
) -> None:
    @fluxo.step(name="par.c")
    def c(x: int) -> int:
        return x

    @fluxo.step(name="par.halt")
    def halt() -> None:
        raise SimulatedCrash("before the end")

    @fluxo.workflow(name="par.kind")
    def old() -> int:
        total = sum(fluxo.map(c, [1, 2]))
        halt()
        return total

    @fluxo.workflow(name="par.kind")
    def new() -> int:
        return c(1) + c(2)

    engine = fluxo.Engine(shared_store, workflows=[old], clock=clock)
    handle = engine.start(old)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    changed = fluxo.Engine(shared_store, workflows=[new], clock=clock)
    assert resume(changed, clock, handle.id) is Outcome.FAILED
    with pytest.raises(fluxo.NondeterminismError, match=r"parallel_started par\.c"):
        changed.handle(handle.id).result(timeout=1)


# -- stopping early ---------------------------------------------------------------------


def test_a_cancellation_lets_running_branches_finish_and_starts_no_more(
    make_engine: MakeEngine,
) -> None:
    contexts: list[_executor.RunContext] = []
    ledger = Ledger()

    @fluxo.step(name="par.slow")
    def slow(index: int) -> int:
        ledger.ran(f"branch{index}")
        if index == 0:
            contexts[0].cancel_requested.set()  # as the heartbeat delivers it
        return index

    @fluxo.workflow(name="par.cancelled")
    def cancelled() -> list[int]:
        return fluxo.map(slow, range(4), max_concurrency=1)

    engine = make_engine(cancelled)
    handle = engine.start(cancelled)
    assert execute(engine, handle.id, hook=contexts.append) is Outcome.CANCELLED
    assert ledger.runs == {"branch0": 1}
    assert named(engine.history(handle.id))[1:] == [
        ("parallel_started", "par.slow"),
        ("branch_completed", "par.slow#0"),
        ("cancel_requested", "cancelled"),
        ("workflow_cancelled", "cancelled"),
    ]
    assert replay(engine.export_history(handle.id), workflows=[cancelled]).ok


def test_a_stopped_worker_records_nothing_more_and_the_run_resumes(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    contexts: list[_executor.RunContext] = []
    ledger = Ledger()
    stopped = [False]

    @fluxo.step(name="par.stoppable")
    def stoppable(index: int) -> int:
        ledger.ran(f"branch{index}")
        if index == 1 and not stopped[0]:
            stopped[0] = True
            contexts[-1].stop_requested.set()  # shutdown, or a lost lease
        return index

    @fluxo.workflow(name="par.stopping")
    def stopping() -> list[int]:
        return fluxo.map(stoppable, range(4), max_concurrency=1)

    engine = make_engine(stopping)
    handle = engine.start(stopping)
    assert execute(engine, handle.id, hook=contexts.append) is Outcome.STOPPED
    # Branch 1 finished after the stop: not recorded, so it runs again.
    assert [e.name for e in branch_events(engine, handle.id)] == ["par.stoppable#0"]
    assert resume(engine, clock, handle.id, hook=contexts.append) is Outcome.COMPLETED
    assert handle.result(timeout=1) == [0, 1, 2, 3]
    assert ledger.runs == {"branch0": 1, "branch1": 2, "branch2": 1, "branch3": 1}


def test_the_replayer_runs_no_branch(make_engine: MakeEngine, clock: FakeClock) -> None:
    ledger = Ledger()

    @fluxo.step(name="par.counted")
    def counted(index: int) -> int:
        if ledger.ran(f"branch{index}") == 1 and index == 2:
            raise SimulatedCrash("leave branch 2 unsettled")
        return index

    @fluxo.workflow(name="par.partial")
    def partial() -> list[int]:
        return fluxo.map(counted, range(3), max_concurrency=1)

    engine = make_engine(partial)
    handle = engine.start(partial)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id)
    before = dict(ledger.runs)
    assert replay(engine.export_history(handle.id), workflows=[partial]).ok
    assert ledger.runs == before


# -- the test environment ---------------------------------------------------------------


@fluxo.step(name="par.env.price")
def price(sku: str) -> int:
    raise AssertionError("tests stub the price lookup")


@fluxo.step(name="par.env.stock", retry=fluxo.Retry(max_attempts=2, initial=30))
def stock(sku: str) -> int:
    return len(sku)


@fluxo.workflow(name="par.env.quote")
def quote(skus: list[str]) -> int:
    prices = fluxo.map(price, skus, max_concurrency=2)
    stocks = fluxo.parallel(*(stock.bind(s) for s in skus))
    fluxo.sleep(60)
    return sum(p * s for p, s in zip(prices, stocks, strict=True))


@pytest.mark.parametrize("always_replay", [True, False])
def test_parallel_works_under_the_test_environment(always_replay: bool) -> None:
    flaky_calls: list[str] = []

    def flaky_stock(sku: str) -> int:
        flaky_calls.append(sku)
        if sku == "bb" and flaky_calls.count(sku) == 1:
            raise ConnectionError("flaky")
        return len(sku)

    with WorkflowEnvironment(always_replay=always_replay) as env:
        env.stub(price, lambda sku: {"a": 1, "bb": 2, "ccc": 3}[sku])
        env.stub(stock, flaky_stock)
        started = env.now()
        assert env.run(quote, ["a", "bb", "ccc"]) == 1 * 1 + 2 * 2 + 3 * 3
        assert (env.now() - started).total_seconds() >= 60 + 30  # virtual back-off and sleep
        assert sorted(c.args[0] for c in env.calls(price)) == ["a", "bb", "ccc"]
        assert sorted(flaky_calls) == ["a", "bb", "bb", "ccc"]  # each branch ran once more


# -- outside a workflow, and misuse -----------------------------------------------------


def test_outside_a_workflow_the_calls_are_plain_calls() -> None:
    @fluxo.step(name="par.plain")
    def plain(x: int) -> int:
        return x + 1

    assert fluxo.parallel(plain.bind(1), plain.bind(x=2)) == [2, 3]
    assert fluxo.map(plain, (1, 2, 3)) == [2, 3, 4]


def test_misuse_is_reported_with_the_fix() -> None:
    @fluxo.step(name="par.misused")
    def misused(x: int) -> int:
        return x

    with pytest.raises(fluxo.DefinitionError, match=r"pass par.misused.bind\(...\) instead"):
        fluxo.parallel(misused)  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="max_concurrency"):
        fluxo.parallel(misused.bind(1), max_concurrency=0)
    with pytest.raises(fluxo.DefinitionError, match=r"takes a @fluxo\.step"):
        fluxo.map(len, [1])  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="iterable"):
        fluxo.map(misused, 3)  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="signature"):
        misused.bind(1, 2)  # type: ignore[call-arg]
    with pytest.raises(fluxo.DefinitionError, match="parallel_threads"):
        fluxo.Engine("memory://", workflows=[], parallel_threads=0)
    assert repr(misused.bind(1)) == "<fluxo call par.misused(1)>"


# -- the history format and the command line --------------------------------------------


def test_branch_events_export_load_and_show(make_engine: MakeEngine) -> None:
    @fluxo.step(name="par.shown")
    def shown(index: int) -> int:
        if index == 1:
            raise Declined("bad item")
        return index

    @fluxo.workflow(name="par.show")
    def show() -> str:
        try:
            fluxo.map(shown, range(2))
        except fluxo.StepError:
            return "caught"
        return "none"

    engine = make_engine(show)
    handle = engine.start(show)
    assert execute(engine, handle.id) is Outcome.COMPLETED
    document = engine.export_history(handle.id, readable=True)
    loaded = _history_file.History.from_document(document)
    assert loaded.events == tuple(engine.history(handle.id))
    state = engine.store.load(handle.id)
    text = _cli_format.render_run(_cli_format.describe_run(state, engine.codec))
    assert "parallel_started" in text
    assert "branch_failed" in text
    assert "Declined: bad item" in text  # failures render as errors
    assert history.parse_branch_name("a#b#12") == ("a#b", 12)
    assert history.parse_branch_name("no-index") is None
