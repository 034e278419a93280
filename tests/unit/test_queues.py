"""Named queues above the store: limits, priorities, partitions, start_at, and their edges.

Run on the memory store with a fake clock; workers are driven with
``process_one()`` where the order matters, and in threads where they race.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fluxo
from fluxo import _queues, history, stores
from fluxo.stores.memory import MemoryStore

from .helpers import WAIT, FakeClock, SimulatedCrash

RunStatus = history.RunStatus

log: list[str] = []
lock = threading.Lock()
inside = {"now": 0, "most": 0}


@fluxo.step
def note(label: str) -> str:
    with lock:
        log.append(label)
    return label


@fluxo.step
def counted(label: str) -> str:
    with lock:
        inside["now"] += 1
        inside["most"] = max(inside["most"], inside["now"])
    threading.Event().wait(0.01)  # others may start meanwhile, if they are let in
    with lock:
        inside["now"] -= 1
    return label


@fluxo.workflow(queue="q", name="queues.quick")
def quick(label: str) -> str:
    return note(label)


@fluxo.workflow(queue="q", name="queues.gated")
def gated(label: str) -> str:
    note(label)
    fluxo.wait_for_signal("go")
    return label


@fluxo.workflow(queue="q", name="queues.busy")
def busy(label: str) -> str:
    return counted(label)


@fluxo.workflow(name="queues.plain")
def plain(label: str) -> str:
    return note(label)


@fluxo.workflow(name="queues.parent")
def parent(label: str) -> str:
    return gated(label)


@fluxo.workflow(queue="q", name="queues.chain")
def chain(n: int) -> int:
    if n > 0:
        fluxo.continue_as_new(n - 1)
    return n


@fluxo.workflow(queue="q", name="queues.napping")
def napping(label: str) -> str:
    counted(label)
    fluxo.sleep(timedelta(milliseconds=20))  # held in the worker's thread, off its slot
    return counted(label)


WORKFLOWS = [quick, gated, busy, plain, parent, chain, napping]


@pytest.fixture(autouse=True)
def _reset() -> None:
    log.clear()
    inside.update(now=0, most=0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def engine_with(clock: FakeClock, *queues: fluxo.Queue, store: Any = None) -> fluxo.Engine:
    return fluxo.Engine(
        store if store is not None else MemoryStore(),
        workflows=WORKFLOWS,
        queues=queues,
        clock=clock,
    )


def status(engine: fluxo.Engine, run_id: str) -> RunStatus:
    return engine.store.get_run(run_id).status


def awaiting(engine: fluxo.Engine, ids: list[str]) -> list[str]:
    return [i for i in ids if engine.store.get_run(i).start_at is not None]


def start_many(engine: fluxo.Engine, wf: Any, n: int, **options: Any) -> list[str]:
    return [engine.start(wf.options(id=f"r{i}", **options), f"r{i}").id for i in range(n)]


# -- limits ----------------------------------------------------------------------------


def test_concurrency_admits_at_most_the_limit_and_a_finished_run_frees_its_place(
    clock: FakeClock,
) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=2))
    ids = start_many(engine, gated, 5)
    assert all(engine.store.get_run(i).ready_at is None for i in ids)  # awaiting admission
    worker = engine.worker()
    assert worker.process_one() == 2
    assert log == ["r0", "r1"]  # waiting for their signals, they keep their places
    assert awaiting(engine, ids) == ["r2", "r3", "r4"]
    assert worker.process_one() == 0
    engine.signal("r0", "go", None)
    assert worker.process_one() == 2  # r0 completes, r2 takes its place
    assert status(engine, "r0") is RunStatus.COMPLETED
    assert log == ["r0", "r1", "r2"]
    assert awaiting(engine, ids) == ["r3", "r4"]


def test_rate_admits_at_most_rate_per_period(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", rate=2, per=timedelta(seconds=10)))
    start_many(engine, quick, 5)
    worker = engine.worker()
    assert worker.process_one() == 2
    clock.advance(9.9)
    assert worker.process_one() == 0
    clock.advance(0.2)
    assert worker.process_one() == 2
    clock.advance(10.1)
    assert worker.process_one() == 1
    assert log == ["r0", "r1", "r2", "r3", "r4"]


def test_higher_priority_is_admitted_first_then_start_order(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    for label, priority in (("low", 0), ("mid", 5), ("high", 10), ("mid2", 5)):
        engine.start(quick.options(id=label, priority=priority), label)
        clock.advance(1)
    engine.worker().process_one()
    assert log == ["high", "mid", "mid2", "low"]


def test_a_full_partition_is_passed_over_for_the_next(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", partition_concurrency=1))
    for run_id, partition in (("a1", "a"), ("a2", "a"), ("b1", "b"), ("none", None)):
        engine.start(gated.options(id=run_id, partition=partition), run_id)
    worker = engine.worker()
    assert worker.process_one() == 3
    assert sorted(log) == ["a1", "b1", "none"]
    assert awaiting(engine, ["a1", "a2", "b1", "none"]) == ["a2"]
    engine.signal("a1", "go", None)
    worker.process_one()
    assert log[-1] == "a2"


def test_an_undeclared_named_queue_admits_without_limits(clock: FakeClock) -> None:
    engine = engine_with(clock)  # "q" is named by the workflow but not declared
    ids = start_many(engine, gated, 3)
    assert engine.worker().process_one() == 3
    assert sorted(log) == ids
    assert engine.store.read_queue("q") == (0, b"")  # no limit: no record is kept


# -- start_at ----------------------------------------------------------------------------


def test_start_at_holds_a_queued_run_until_then(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=5))
    later = datetime.fromtimestamp(clock() + 60, tz=timezone.utc)
    engine.start(quick.options(id="later", start_at=later), "later")
    engine.start(quick.options(id="epoch", start_at=clock() + 30), "epoch")
    worker = engine.worker()
    assert worker.process_one() == 0
    clock.advance(30)
    assert worker.process_one() == 1
    clock.advance(30)
    assert worker.process_one() == 1
    assert log == ["epoch", "later"]


def test_start_at_in_the_default_queue_is_a_delayed_start(clock: FakeClock) -> None:
    engine = engine_with(clock)
    handle = engine.start(plain.options(start_at=clock() + 5), "x")
    run = engine.store.get_run(handle.id)
    assert (run.queue, run.start_at, run.ready_at) == ("", None, clock() + 5)
    worker = engine.worker()
    assert worker.process_one() == 0
    clock.advance(5)
    assert worker.process_one() == 1


def test_the_worker_sleeps_until_the_next_start_at(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    engine.start(quick.options(start_at=clock() + 42), "x")
    served = engine.worker().served
    assert served.admit(engine.store, clock) == clock() + 42


def test_a_full_rate_window_wakes_the_worker_when_it_ends(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", rate=1, per=7))
    start_many(engine, quick, 2)
    served = engine.worker().served
    served.admit(engine.store, clock)
    assert served.admit(engine.store, clock) == clock() + 7


# -- per worker --------------------------------------------------------------------------


def test_worker_concurrency_limits_one_workers_runs_of_the_queue(clock: FakeClock) -> None:
    engine = fluxo.Engine(
        MemoryStore(), workflows=WORKFLOWS, queues=[fluxo.Queue("q", worker_concurrency=1)]
    )
    ids = start_many(engine, busy, 6)
    with engine.worker(concurrency=4, idle_timeout=0.05):
        for run_id in ids:
            assert engine.handle(run_id).result(timeout=WAIT) == run_id
    assert inside["most"] == 1


def test_worker_concurrency_holds_for_runs_resuming_from_a_held_wait() -> None:
    engine = fluxo.Engine(
        MemoryStore(), workflows=WORKFLOWS, queues=[fluxo.Queue("q", worker_concurrency=1)]
    )
    ids = start_many(engine, napping, 5)
    with engine.worker(concurrency=4, idle_timeout=0.05, sticky=5):
        for run_id in ids:
            assert engine.handle(run_id).result(timeout=WAIT) == run_id
    assert inside["most"] == 1


def test_worker_concurrency_leaves_a_full_queue_out_of_the_claim() -> None:
    store = MemoryStore()
    served = _queues.served_queues(None, {"q": fluxo.Queue("q", worker_concurrency=1)}, [], "w")
    calls: list[Any] = []

    class Spy:
        def claim(self, *args: Any, **kwargs: Any) -> list[history.RunInfo]:
            calls.append((kwargs["limit"], kwargs["queues"]))
            return store.claim(*args, **kwargs)

    served.claim(Spy(), "w", ["x"], now=1, lease_until=2, free=3, executing={"q": 1})  # type: ignore[arg-type]
    assert calls == [(3, [""])]
    calls.clear()
    served.claim(Spy(), "w", ["x"], now=1, lease_until=2, free=3, executing={})  # type: ignore[arg-type]
    assert calls == [(3, [""]), (1, ["q"])]


# -- races and crashes -------------------------------------------------------------------


def test_two_engines_racing_on_one_store_never_exceed_the_concurrency() -> None:
    store = MemoryStore()
    queue = fluxo.Queue("q", concurrency=2)
    one = fluxo.Engine(store, workflows=WORKFLOWS, queues=[queue])
    two = fluxo.Engine(store, workflows=WORKFLOWS, queues=[queue])
    ids = start_many(one, busy, 12)
    with one.worker(concurrency=4, idle_timeout=0.05), two.worker(concurrency=4, idle_timeout=0.05):
        for run_id in ids:
            assert one.handle(run_id).result(timeout=WAIT) == run_id
    assert inside["most"] <= 2


def test_concurrent_admission_rounds_admit_no_more_than_the_limit(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=3))
    ids = start_many(engine, gated, 20)
    limits = fluxo.Queue("q", concurrency=3)
    barrier = threading.Barrier(8)

    def round_() -> None:
        barrier.wait()
        for _ in range(5):
            _queues.admit_round(engine.store, "q", limits, now=clock())

    threads = [threading.Thread(target=round_) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(ids) - len(awaiting(engine, ids)) == 3


class CrashOnAdmit:
    """A store whose next ``admit`` dies before it writes, as a worker killed there would."""

    def __init__(self, inner: stores.Store) -> None:
        self.inner = inner
        self.crash = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def admit(self, run_ids: Any, *, now: float) -> list[str]:
        if self.crash:
            self.crash = False
            raise SimulatedCrash
        return self.inner.admit(run_ids, now=now)


def test_a_crash_between_the_record_and_admit_is_repaired_by_the_next_round(
    clock: FakeClock,
) -> None:
    store = MemoryStore()
    engine = engine_with(clock, fluxo.Queue("q", concurrency=2), store=store)
    ids = start_many(engine, gated, 4)
    crashing = CrashOnAdmit(store)
    limits = fluxo.Queue("q", concurrency=2)
    with pytest.raises(SimulatedCrash):
        _queues.admit_round(crashing, "q", limits, now=clock())  # type: ignore[arg-type]
    assert awaiting(engine, ids) == ids  # chosen, recorded, not admitted
    done = _queues.admit_round(store, "q", limits, now=clock())
    assert sorted(done.admitted) == ["r0", "r1"]  # the same two: no place lost or doubled
    assert awaiting(engine, ids) == ["r2", "r3"]


# -- retries, cancellation, inheritance --------------------------------------------------


def test_a_retried_run_awaits_admission_again(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    engine.start(gated.options(id="holder"), "holder")
    engine.start(gated.options(id="failing"), "failing")
    worker = engine.worker()
    worker.process_one()
    engine.signal("holder", "go", None)
    worker.process_one()  # holder completes, failing is admitted and waits
    engine.store.append(
        "failing",
        len(engine.history("failing")),
        [history.WorkflowFailed(b'{"type": "X", "message": "boom"}')],
        now=clock(),
        status=RunStatus.FAILED,
    )
    engine.start(gated.options(id="next"), "next")
    worker.process_one()  # next takes the free place
    engine.retry("failing")
    assert engine.store.get_run("failing").start_at is not None
    assert worker.process_one() == 0  # "next" holds the only place
    engine.signal("next", "go", None)
    worker.process_one()
    assert status(engine, "next") is RunStatus.COMPLETED
    assert engine.store.get_run("failing").start_at is None


def test_cancelling_a_queued_run_cancels_it_at_once(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    engine.start(gated.options(id="holder"), "holder")
    engine.start(gated.options(id="queued"), "queued")
    engine.worker().process_one()
    engine.cancel("queued")
    assert status(engine, "queued") is RunStatus.CANCELLED
    assert log == ["holder"]


def test_a_cancelled_child_awaiting_admission_ends_without_waiting_for_a_place(
    clock: FakeClock,
) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    engine.start(gated.options(id="holder"), "holder")
    worker = engine.worker()
    worker.process_one()  # holder keeps the queue's only place
    engine.start(parent.options(id="p"), "child")
    worker.process_one()  # the parent starts its child, which awaits admission
    child = next(r for r in engine.store.list_runs() if r.parent == "p")
    assert child.start_at is not None
    engine.cancel("p")
    worker.process_one()
    assert status(engine, child.id) is RunStatus.CANCELLED
    assert status(engine, "p") is RunStatus.CANCELLED
    assert status(engine, "holder") is RunStatus.WAITING
    assert log == ["holder"]


def test_children_use_their_own_queue_and_successors_inherit(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=3))
    engine.start(parent.options(id="p"), "c")
    engine.worker().process_one()
    child = next(r for r in engine.store.list_runs() if r.parent == "p")
    assert (engine.store.get_run("p").queue, child.queue) == ("", "q")
    engine.start(chain.options(id="c", priority=7, partition="k"), 2)
    engine.worker().process_one()
    last = engine.get_run("c")
    assert last.id != "c"
    assert (last.queue, last.priority, last.partition) == ("q", 7, "k")
    assert last.status is RunStatus.COMPLETED


def test_options_queue_overrides_the_workflows(clock: FakeClock) -> None:
    engine = engine_with(clock)
    one = engine.start(plain.options(queue="other", priority=2, partition="p"), "x")
    two = engine.start(quick.options(queue=fluxo.Queue("default")), "y")
    assert (engine.store.get_run(one.id).queue, engine.store.get_run(two.id).queue) == ("other", "")


def test_a_fork_goes_in_its_sources_queue(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=2))
    engine.start(gated.options(id="src", priority=4), "src")
    engine.worker().process_one()
    fork_id = engine.fork("src", from_position=2).id
    fork = engine.store.get_run(fork_id)
    assert (fork.queue, fork.priority, fork.start_at is not None) == ("q", 4, True)
    engine.worker().process_one()
    assert engine.store.get_run(fork_id).status is RunStatus.WAITING
    assert len(engine.history(fork_id)) == len(engine.history("src"))


# -- the default queue's hot path ---------------------------------------------------------


def test_a_worker_of_the_default_queue_only_makes_no_queue_calls(clock: FakeClock) -> None:
    store = MemoryStore()
    calls: list[str] = []

    class Spy:
        def __getattr__(self, name: str) -> Any:
            if name in ("read_queue", "write_queue", "queued_runs", "admit"):
                calls.append(name)
            return getattr(store, name)

    engine = fluxo.Engine(store, workflows=[plain], clock=clock)
    engine.store = Spy()  # type: ignore[assignment]
    engine.runner.store = engine.store  # type: ignore[attr-defined]
    engine.start(plain, "x")
    assert engine.worker().process_one() == 1
    assert calls == []


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": ""}, "non-empty string"),
        ({"name": "a\x00b"}, "control character"),
        ({"name": "q", "concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"name": "q", "worker_concurrency": 1.5}, "worker_concurrency must"),
        ({"name": "q", "rate": 10}, "rate and per go together"),
        ({"name": "q", "per": 1}, "rate and per go together"),
        ({"name": "q", "rate": 1, "per": -1}, "per must be a timedelta"),
        ({"name": "q", "partition_concurrency": True}, "partition_concurrency must"),
        ({"name": "default", "concurrency": 2}, "put these workflows in a named queue"),
    ],
)
def test_a_bad_queue_is_refused(kwargs: dict[str, Any], fragment: str) -> None:
    name = kwargs.pop("name")
    with pytest.raises(fluxo.DefinitionError, match=fragment):
        fluxo.Queue(name, **kwargs)


def test_a_queue_is_frozen_and_per_is_seconds() -> None:
    queue = fluxo.Queue("q", rate=5, per=timedelta(minutes=1))
    assert queue.per == 60.0
    with pytest.raises(AttributeError):
        queue.rate = 6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"queue": ""}, "queue= takes a queue name"),
        ({"queue": 3}, "queue= takes a queue name"),
        ({"priority": "high"}, "priority= takes a whole number"),
        ({"priority": 2**40}, "priority= takes a number from"),
        ({"partition": ""}, "partition= takes None or a non-empty string"),
        ({"start_at": datetime(2030, 1, 1)}, "aware datetime, not the naive"),
        ({"start_at": "tomorrow"}, "start_at= takes an aware datetime"),
        ({"start_at": float("nan")}, "finite time"),
    ],
)
def test_bad_start_options_are_refused(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises(fluxo.DefinitionError, match=fragment):
        quick.options(**options)


def test_a_bad_workflow_queue_is_refused() -> None:
    with pytest.raises(fluxo.DefinitionError, match="queue= takes a queue name"):
        fluxo.workflow(queue="")


def test_bad_engine_and_worker_queues_are_refused(clock: FakeClock) -> None:
    with pytest.raises(fluxo.DefinitionError, match=r"takes fluxo\.Queue objects"):
        fluxo.Engine(MemoryStore(), workflows=[quick], queues=["q"])  # type: ignore[list-item]
    with pytest.raises(fluxo.DefinitionError, match="given twice with other limits"):
        engine_with(clock, fluxo.Queue("q", concurrency=1), fluxo.Queue("q", concurrency=2))
    engine = engine_with(clock)
    with pytest.raises(fluxo.DefinitionError, match="queues= is empty"):
        engine.worker(queues=[])
    with pytest.raises(fluxo.DefinitionError, match="list of queue names"):
        engine.worker(queues="q")  # type: ignore[arg-type]


def test_engine_run_refuses_a_queued_workflow_and_a_start_at(clock: FakeClock) -> None:
    engine = engine_with(clock)
    with pytest.raises(fluxo.DefinitionError, match=r"engine\.start"):
        engine.run(quick, "x")
    with pytest.raises(fluxo.DefinitionError, match="takes no start_at"):
        engine.run(plain.options(start_at=clock() + 1), "x")
    assert engine.store.list_runs() == []


def test_the_default_worker_serves_the_declared_and_named_queues_and_default(
    clock: FakeClock,
) -> None:
    engine = engine_with(clock, fluxo.Queue("payments", concurrency=1))
    assert engine.worker().served.queues == ["", "payments", "q"]
    assert engine.worker(queues=["default", fluxo.Queue("x")]).served.queues == ["", "x"]


def test_a_worker_of_other_queues_leaves_a_queued_run_alone(clock: FakeClock) -> None:
    engine = engine_with(clock, fluxo.Queue("q", concurrency=1))
    engine.start(quick.options(id="a"), "a")
    assert engine.worker(queues=["default"]).process_one() == 0
    assert engine.store.get_run("a").start_at is not None
    assert engine.worker(queues=["q"]).process_one() == 1


def test_the_test_environment_admits_queued_runs_under_their_limits() -> None:
    from fluxo.testing import WorkflowEnvironment

    with WorkflowEnvironment(workflows=[gated], queues=[fluxo.Queue("q", concurrency=1)]) as env:
        first = env.start(gated.options(id="first"), "first")
        second = env.start(gated.options(id="second"), "second")
        assert log == ["first"]  # second awaits admission: first holds the only place
        env.signal(first, "go", None)
        env.signal(second, "go", None)
        assert second.result() == "second"
        assert log == ["first", "second"]
