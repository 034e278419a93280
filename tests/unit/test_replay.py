"""Replaying recorded histories against changed code: what passes, what fails, and how."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fluxo
from fluxo import _executor
from fluxo.stores.memory import MemoryStore
from fluxo.testing import (
    History,
    HistoryFormatError,
    ReplayMismatchError,
    _replay,
    load_history,
    replay,
    replay_all,
    replay_runs,
    save_history,
)

from .conftest import MakeEngine
from .helpers import FakeClock, execute

Outcome = _executor.Outcome

# -- steps and workflows: several versions of one workflow name ---------------------------

ATTEMPTS: dict[str, int] = {}


@fluxo.step(name="t.a")
def a(n: int) -> int:
    return n + 1


@fluxo.step(name="t.b")
def b(n: int) -> int:
    return n * 2


@fluxo.step(name="t.b")
def b_as_list(n: int) -> list[str]:
    return [str(n)]


@fluxo.step(name="t.x")
def x(n: int) -> int:
    return n


@fluxo.step(name="t.flaky", retry=1)
def flaky(n: int) -> int:
    ATTEMPTS["flaky"] = ATTEMPTS.get("flaky", 0) + 1
    if ATTEMPTS["flaky"] == 1:
        raise RuntimeError("first attempt fails")
    return n


@fluxo.step(name="t.broken", retry=1)
def broken(n: int) -> int:
    raise ValueError(n)


@fluxo.workflow(name="t.order", aliases=["t.order_v0"])
def order(n: int) -> int:
    return b(a(n))


@fluxo.workflow(name="t.order")
def order_extra_call(n: int) -> int:
    m = a(n)
    x(m)
    return b(m)


@fluxo.workflow(name="t.order")
def order_call_after_end(n: int) -> int:
    value = b(a(n))
    return x(value)


@fluxo.workflow(name="t.order")
def order_fewer_calls(n: int) -> int:
    return a(n)


@fluxo.workflow(name="t.order")
def order_other_step(n: int) -> int:
    return x(a(n))


@fluxo.workflow(name="t.order")
def order_list_input(n: list[str]) -> int:
    return b(a(len(n)))


@fluxo.workflow(name="t.many")
def many(n: int) -> int:
    for _ in range(6):
        n = a(n)
    return b(n)


@fluxo.workflow(name="t.many")
def many_changed(n: int) -> int:
    for _ in range(6):
        n = a(n)
    return x(n)


@fluxo.workflow(name="t.order")
def order_list_result(n: int) -> int:
    return len(b_as_list(a(n)))


@fluxo.workflow(name="t.wait")
def wait(n: int) -> int:
    m = a(n)
    fluxo.sleep(60)
    got = fluxo.wait_for_signal("go", type=int)
    return b(m + got)


@fluxo.workflow(name="t.wait")
def wait_then_more(n: int) -> int:
    m = a(n)
    fluxo.sleep(60)
    got = fluxo.wait_for_signal("go", type=int)
    return x(b(m + got))


STEPS_RUN: list[str] = []
"""What the steps of ``wait_noting_steps`` ran, which a replay must never add to."""


@fluxo.step(name="t.a")
def a_noted(n: int) -> int:
    STEPS_RUN.append("t.a")
    return n + 1


@fluxo.step(name="t.b")
def b_noted(n: int) -> int:
    STEPS_RUN.append("t.b")
    return n * 2


@fluxo.workflow(name="t.wait")
def wait_noting_steps(n: int) -> int:
    m = a_noted(n)
    fluxo.sleep(60)
    got = fluxo.wait_for_signal("go", type=int)
    return b_noted(m + got)


@fluxo.workflow(name="t.cancellable")
def cancellable(n: int) -> int:
    try:
        return int(fluxo.wait_for_signal("go", type=int))
    finally:
        x(n)


@fluxo.workflow(name="t.failing")
def failing(n: int) -> int:
    a(n)
    return broken(n)


@fluxo.workflow(name="t.retried")
def retried(n: int) -> int:
    return flaky(a(n))


@fluxo.workflow(name="t.patch")
def patch_before(n: int) -> int:
    a(n)
    return b(n)


@fluxo.workflow(name="t.patch")
def patch_during(n: int) -> int:
    a(n)
    if fluxo.patched("use-x"):
        return x(n)
    return b(n)


@fluxo.workflow(name="t.patch")
def patch_retired(n: int) -> int:
    a(n)
    fluxo.deprecate_patch("use-x")
    return x(n)


def record(
    make_engine: MakeEngine,
    workflow: fluxo.Workflow[Any, Any],
    *args: Any,
    run_id: str = "r-1",
    then: Callable[[fluxo.Engine, str], None] | None = None,
) -> History:
    """Run ``workflow`` to its first stop (and ``then``), and return its history."""
    engine = make_engine(workflow)
    engine.start(workflow.options(id=run_id), *args)
    execute(engine, run_id)
    if then is not None:
        then(engine, run_id)
    return History.from_document(engine.export_history(run_id), source=f"run {run_id}")


def mismatch(history: History, workflow: fluxo.Workflow[Any, Any]) -> ReplayMismatchError:
    with pytest.raises(ReplayMismatchError) as caught:
        replay(history, workflows=[workflow])
    return caught.value


# -- histories that replay ---------------------------------------------------------------


def test_a_completed_history_replays_on_the_code_that_recorded_it(
    make_engine: MakeEngine,
) -> None:
    history = record(make_engine, order, 3)
    assert history.to_state().run.status is fluxo.RunStatus.COMPLETED
    result = replay(history, workflows=[order])
    assert (result.ok, result.run_id, result.workflow) == (True, "r-1", "t.order")


def test_a_history_is_found_under_an_alias(make_engine: MakeEngine) -> None:
    history = record(make_engine, order, 3)
    document = history.to_document()
    document["run"]["workflow"] = "t.order_v0"
    assert replay(document, workflows=[order]).ok


def test_in_flight_histories_replay_and_the_code_may_go_past_their_end(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(wait)
    engine.start(wait.options(id="w-1"), 1)
    snapshots = []
    assert execute(engine, "w-1") is Outcome.SUSPENDED  # on the timer
    snapshots.append(engine.export_history("w-1"))
    clock.advance(60)
    assert execute(engine, "w-1") is Outcome.SUSPENDED  # waiting for "go"
    snapshots.append(engine.export_history("w-1"))
    engine.signal("w-1", "go", 5)
    snapshots.append(engine.export_history("w-1"))  # the signal is stored, not yet consumed
    assert execute(engine, "w-1") is Outcome.COMPLETED
    done = engine.export_history("w-1")
    assert [e["kind"] for e in snapshots[1]["events"]][-3:] == [
        "timer_started",
        "timer_fired",
        "signal_wait_started",
    ]
    assert snapshots[2]["signals"][0]["payload"] == "5"
    for document in [*snapshots, done]:
        assert replay(document, workflows=[wait]).ok
    for document in snapshots:  # new calls after what they recorded are fine
        assert replay(document, workflows=[wait_then_more]).ok
    error = mismatch(History.from_document(done), wait_then_more)
    assert (error.seq, error.expected) == (7, "step t.x")
    assert "  >  7  recorded:  the workflow returned\n" in str(error)


def test_no_step_runs_where_the_code_goes_past_an_in_flight_history(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(wait)
    engine.start(wait.options(id="w-1"), 1)
    assert execute(engine, "w-1") is Outcome.SUSPENDED  # on the timer
    on_the_timer = engine.export_history("w-1")
    clock.advance(60)
    assert execute(engine, "w-1") is Outcome.SUSPENDED
    engine.signal("w-1", "go", 5)  # stored: next, the code would consume it and call t.b
    signalled = engine.export_history("w-1")
    STEPS_RUN.clear()
    for document in (on_the_timer, signalled):
        assert replay(document, workflows=[wait_noting_steps]).ok
    assert STEPS_RUN == []
    assert engine.export_history("w-1") == signalled  # and the store is as it was


def test_failed_cancelled_and_retried_histories_replay(
    make_engine: MakeEngine,
) -> None:
    failed = record(make_engine, failing, 1, run_id="f")
    assert [e.kind for e in failed.events][-2:] == ["step_failed", "workflow_failed"]
    assert replay(failed, workflows=[failing]).ok

    def cancel(engine: fluxo.Engine, run_id: str) -> None:
        engine.cancel(run_id)
        assert execute(engine, run_id) is Outcome.CANCELLED

    cancelled = record(make_engine, cancellable, 1, run_id="c", then=cancel)
    assert [e.kind for e in cancelled.events][-3:] == [
        "cancel_requested",
        "step_completed",
        "workflow_cancelled",
    ]
    assert replay(cancelled, workflows=[cancellable]).ok

    def retry(engine: fluxo.Engine, run_id: str) -> None:
        engine.retry(run_id)
        assert execute(engine, run_id) is Outcome.COMPLETED

    ATTEMPTS.clear()
    again = record(make_engine, retried, 1, run_id="rr", then=retry)
    assert "run_retried" in [e.kind for e in again.events]
    assert replay(again, workflows=[retried]).ok


def test_a_run_cancelled_before_it_began_replays(make_engine: MakeEngine) -> None:
    engine = make_engine(cancellable)
    engine.start(cancellable.options(id="c0"), 1)
    engine.cancel("c0")
    document = engine.export_history("c0")
    assert [e["kind"] for e in document["events"]] == [
        "workflow_started",
        "cancel_requested",
        "workflow_cancelled",
    ]
    assert replay(document, workflows=[cancellable]).ok


def test_patches_old_histories_take_the_old_branch(make_engine: MakeEngine) -> None:
    before = record(make_engine, patch_before, 1, run_id="p0")
    during = record(make_engine, patch_during, 1, run_id="p1")
    assert "patch_marker" in [e.kind for e in during.events]
    assert replay(before, workflows=[patch_during]).ok  # no marker: the old branch
    assert replay(during, workflows=[patch_during]).ok
    assert replay(during, workflows=[patch_retired]).ok  # the marker is accepted
    error = mismatch(before, patch_retired)  # retired too early: the old branch is gone
    assert (error.seq, error.expected) == (2, "step t.x")
    assert "  >  2  recorded:  step t.b\n" in str(error)


def test_a_history_that_failed_by_a_mismatch_replays_once_the_code_is_fixed(
    make_engine: MakeEngine,
) -> None:
    # A run of t.order failed at position 2 because code calling t.x was deployed.
    document = record(make_engine, order, 1).to_document()
    info = _executor.error_info(fluxo.NondeterminismError("r-1", 2, "step t.x", "step t.b"))
    failure = dict(document["events"][2], kind="workflow_failed", name="")
    failure["data"] = fluxo.JSONCodec().encode(info).decode()
    document["events"] = [*document["events"][:2], failure]
    document["run"]["status"] = "failed"
    # What fixed code must match is the history before the failure (as engine.retry does).
    assert replay(document, workflows=[order]).ok
    assert replay(document, workflows=[order_other_step]).ok  # nothing recorded at 2
    error = mismatch(History.from_document(document), order_list_input)
    assert error.seq == 0
    # Any other recorded failure is an ending like the others.
    document["events"][2]["data"] = (
        fluxo.JSONCodec().encode(_executor.error_info(ValueError("boom"))).decode()
    )
    error = mismatch(History.from_document(document), order)
    assert (error.seq, error.expected) == (2, "step t.b")
    assert "  >  2  recorded:  the workflow raised\n" in str(error)


# -- histories the code has diverged from ------------------------------------------------


def test_an_extra_call_before_the_end(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_extra_call)
    assert (error.run_id, error.seq, error.expected) == ("r-1", 2, "step t.x")
    assert error.recorded == "step_completed t.b"
    assert str(error) == error.diff
    assert str(error).splitlines()[:6] == [
        "history of run 'r-1' diverged at position 2:",
        "  (workflow t.order)",
        "     1  step t.a                              matched",
        "  >  2  recorded:  step t.b",
        "        code now:  step t.x",
        "     3  the workflow returned                 not reached",
    ]


def test_an_extra_call_at_the_end(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_call_after_end)
    assert (error.seq, error.expected) == (3, "step t.x")
    assert "  >  3  recorded:  the workflow returned\n        code now:  step t.x\n" in str(error)


def test_fewer_calls(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_fewer_calls)
    assert (error.seq, error.expected) == (2, "the workflow returned")
    assert "  >  2  recorded:  step t.b\n        code now:  the workflow returned\n" in str(error)


def test_a_different_step_at_a_position(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_other_step)
    assert (error.seq, error.expected, error.recorded) == (2, "step t.x", "step_completed t.b")


def test_a_changed_input_type(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_list_input)
    assert error.seq == 0
    lines = str(error).splitlines()
    assert lines[2] == "  >  0  recorded:  workflow t.order started"
    assert lines[3] == "        code now:  workflow t.order"
    assert "does not decode" in lines[4]


def test_a_recorded_result_that_no_longer_decodes(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, order, 3), order_list_result)
    assert (error.seq, error.expected) == (2, "step t.b")
    assert "its recorded payload does not decode" in str(error)


def test_long_histories_show_three_positions_of_context(make_engine: MakeEngine) -> None:
    error = mismatch(record(make_engine, many, 1), many_changed)
    assert str(error).splitlines()[2:9] == [
        "        ...",
        "     4  step t.a                              matched",
        "     5  step t.a                              matched",
        "     6  step t.a                              matched",
        "  >  7  recorded:  step t.b",
        "        code now:  step t.x",
        "     8  the workflow returned                 not reached",
    ]


def test_an_unknown_workflow(make_engine: MakeEngine) -> None:
    history = record(make_engine, order, 3)
    with pytest.raises(fluxo.UnknownWorkflowError, match=r"'t\.order', which is not among"):
        replay(history, workflows=[wait])


def test_replay_takes_workflows_only(make_engine: MakeEngine) -> None:
    history = record(make_engine, order, 3)
    with pytest.raises(fluxo.DefinitionError):
        replay(history, workflows=[a])  # type: ignore[list-item]
    with pytest.raises(fluxo.DefinitionError):
        replay(history, workflows=order)  # type: ignore[arg-type]


# -- nothing is written --------------------------------------------------------------------


class Tripwire(MemoryStore):
    """A store that notes every write made to it (and makes none)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def _write(self, name: str) -> Any:
        self.writes.append(name)
        raise AssertionError(f"replay wrote to the store: {name}")

    def create_run(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("create_run")

    def append(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("append")

    def send_signal(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("send_signal")

    def request_cancel(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("request_cancel")

    def reopen(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("reopen")

    def claim_run(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("claim_run")

    def release(self, *args: Any, **kwargs: Any) -> Any:
        return self._write("release")


GOLDEN = Path(__file__).parent.parent / "golden"


def test_replay_writes_nothing_even_where_a_live_run_would(make_engine: MakeEngine) -> None:
    from tests.golden import workflows as golden

    by_name = _replay._by_name([*golden.WORKFLOWS])
    store = Tripwire()
    paths = sorted((GOLDEN / "histories").glob("*.json"))
    assert paths
    for path in paths:
        _replay._replay_history(load_history(path), by_name, fluxo.JSONCodec(), store=store)
    for path in sorted((GOLDEN / "broken").glob("*.json")):
        with pytest.raises(ReplayMismatchError):
            _replay._replay_history(load_history(path), by_name, fluxo.JSONCodec(), store=store)
    assert store.writes == []


def test_a_replay_that_reached_the_store_is_reported(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(wait)
    engine.start(wait.options(id="w"), 1)
    assert execute(engine, "w") is Outcome.SUSPENDED
    document = engine.export_history("w")
    monkeypatch.setattr(_executor.RunContext, "_go_live", lambda self: None)
    with pytest.raises(fluxo.FluxoError, match="reached the store"):
        replay(document, workflows=[wait])


# -- files, batches and runs ----------------------------------------------------------------


def test_a_sqlite_run_exported_to_a_file_replays_and_changed_code_fails(
    tmp_path: Path, clock: FakeClock
) -> None:
    url = f"sqlite:///{tmp_path}/runs.db"
    with fluxo.Engine(url, workflows=[order], clock=clock) as engine:
        engine.start(order.options(id="order-7"), 3)
        assert execute(engine, "order-7") is Outcome.COMPLETED
        path = tmp_path / "order-7.json"
        path.write_text(json.dumps(engine.export_history("order-7"), indent=2))
    history = load_history(path)
    assert replay(history, workflows=[order]).ok
    assert replay(path, workflows=[order]).ok
    assert replay(str(path), workflows=[order]).ok
    with pytest.raises(fluxo.NondeterminismError) as caught:
        replay(path, workflows=[order_other_step])
    text = str(caught.value)
    assert text.startswith("history of run 'order-7' diverged at position 2:\n")
    assert f"  (workflow t.order; {path})\n" in text
    assert "  >  2  recorded:  step t.b\n        code now:  step t.x\n" in text


def test_replay_all_reports_every_history(make_engine: MakeEngine, tmp_path: Path) -> None:
    history = record(make_engine, order, 3)
    (tmp_path / "dir" / "nested").mkdir(parents=True)
    good = save_history(history, tmp_path / "dir" / "a-good.json")
    document = history.to_document()
    document["events"][1]["name"] = "t.zzz"
    save_history(document, tmp_path / "dir" / "nested" / "b-edited.json")
    (tmp_path / "dir" / "c-bad.json").write_text("{}")
    (tmp_path / "empty").mkdir()
    report = replay_all(
        [tmp_path / "dir", tmp_path / "empty", tmp_path / "missing.json", history],
        workflows=[order],
    )
    assert [r.ok for r in report] == [True, False, False, False, False, True]
    assert report.passed == 2
    assert len(report.failures) == 4
    assert not report.ok
    assert report[0].source == str(good)
    assert isinstance(report[1].error, HistoryFormatError)
    assert str(report[1].error).endswith("this is not a Fluxo history document")
    assert isinstance(report[2].error, ReplayMismatchError)
    assert isinstance(report[3].error, HistoryFormatError)
    assert str(report[3].error).endswith("holds no *.json file")
    assert isinstance(report[4].error, FileNotFoundError)
    text = report.render()
    assert text.splitlines()[-1] == "6 histories replayed: 2 ok, 4 failed"
    assert f"FAILED  {tmp_path / 'dir' / 'nested' / 'b-edited.json'} (run 'r-1')\n" in text
    assert "\n    history of run 'r-1' diverged at position 1:\n" in text
    assert f"ok      {good}" not in text
    assert f"ok      {good} (run 'r-1')" in report.render(verbose=True)
    with pytest.raises(HistoryFormatError):
        report.raise_for_failures()


def test_an_empty_batch_is_not_ok() -> None:
    report = replay_all([], workflows=[order])
    assert not report.ok
    assert report.render() == "no histories to replay"
    with pytest.raises(HistoryFormatError):
        report.raise_for_failures()


def test_replay_runs_checks_runs_straight_from_the_store(
    make_engine: MakeEngine, shared_store: fluxo.Store, clock: FakeClock
) -> None:
    old = make_engine(wait, store=shared_store)
    old.start(wait.options(id="w-1"), 1)
    assert execute(old, "w-1") is Outcome.SUSPENDED
    clock.advance(60)
    assert execute(old, "w-1") is Outcome.SUSPENDED  # past the timer, waiting for "go"
    old.start(wait.options(id="w-2"), 1)
    assert execute(old, "w-2") is Outcome.SUSPENDED  # on the timer
    new = make_engine(wait_then_more, store=shared_store)
    report = replay_runs(new, status="waiting")
    assert sorted((r.run_id, r.ok) for r in report) == [("w-1", True), ("w-2", True)]
    assert report[0].source.startswith("run w-")
    changed = make_engine(order, store=shared_store)  # knows no t.wait
    report = replay_runs(changed, limit=10)
    assert [type(r.error) for r in report] == [fluxo.UnknownWorkflowError] * 2
