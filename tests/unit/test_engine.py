"""The engine facade: starting, running, inspecting, cancelling, retrying, closing."""

from __future__ import annotations

import collections
import dataclasses
import re
import threading
from datetime import date
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.stores.memory import MemoryStore

from . import workflows as wfs
from .conftest import MakeEngine
from .helpers import T0, WAIT, Box, FakeClock, SpyStore, execute, kinds, named

Outcome = _executor.Outcome
Status = fluxo.RunStatus


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


CALLS: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    CALLS.clear()


@fluxo.step
def count(label: str) -> str:
    CALLS[label] += 1
    return label


@fluxo.workflow
def greet(name: str, punctuation: str = "!") -> str:
    count("greet")
    return f"hello {name}{punctuation}"


@fluxo.workflow
def other_greet(name: str) -> str:
    return name


@fluxo.workflow
def shapes(first: Item, *more: Item, when: date, **tags: str) -> dict[str, Any]:
    assert isinstance(first, Item)
    assert all(isinstance(item, Item) for item in more)
    assert isinstance(when, date)
    return {"skus": [first.sku, *(m.sku for m in more)], "when": str(when), "tags": tags}


@fluxo.workflow
def returns_item(sku: str) -> Item:
    return Item(sku, 2)


@fluxo.workflow
def fails(message: str) -> None:
    raise RuntimeError(message)


# -- starting ---------------------------------------------------------------------------


def test_start_returns_a_handle_and_a_worker_runs_it(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, "ada")
    assert isinstance(handle, fluxo.RunHandle)
    assert handle.engine is engine
    assert repr(handle) == f"RunHandle({handle.id!r})"
    assert handle.status() is Status.PENDING
    assert CALLS["greet"] == 0  # start does not run anything
    assert engine.history(handle.id) == [
        history.WorkflowStarted(greet.name, b'{"name":"ada"}'),
    ]
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == "hello ada!"
    assert handle.status() is Status.COMPLETED


def test_start_is_idempotent_on_the_run_id(store_url: str, make_engine: MakeEngine) -> None:
    engine = make_engine(greet, store=store_url)
    first = engine.start(greet.options(id="greet-1"), "ada")
    second = engine.start(greet.options(id="greet-1"), "ada")
    assert first.id == second.id == "greet-1"
    assert len(engine.list_runs()) == 1
    assert engine.history("greet-1") == [history.WorkflowStarted(greet.name, b'{"name":"ada"}')]
    with engine.worker(idle_timeout=0.05):
        assert second.result(timeout=WAIT) == "hello ada!"
    third = engine.start(greet.options(id="greet-1"), name="ada")
    assert third.result(timeout=1) == "hello ada!"
    assert CALLS["greet"] == 1
    assert kinds(engine.history("greet-1")) == [
        "workflow_started",
        "step_completed",
        "workflow_completed",
    ]


def test_a_run_id_taken_by_another_workflow_conflicts(
    store_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(greet, other_greet, store=store_url)
    engine.start(greet.options(id="shared"), "ada")
    with pytest.raises(fluxo.RunIdConflictError) as info:
        engine.start(other_greet.options(id="shared"), "bob")
    assert info.value.run_id == "shared"
    assert info.value.existing == greet.name
    assert info.value.requested == other_greet.name
    assert "choose another id" in str(info.value)
    assert [run.workflow for run in engine.list_runs()] == [greet.name]


def test_a_taken_run_id_with_other_arguments_conflicts_and_names_them(
    store_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(greet, store=store_url)
    engine.start(greet.options(id="greet-1"), "ada")
    for start in (engine.start, engine.run):
        with pytest.raises(fluxo.RunIdConflictError) as info:
            start(greet.options(id="greet-1"), "bob", "?")
        error = info.value
        assert (error.run_id, error.existing, error.requested) == (
            "greet-1",
            greet.name,
            greet.name,
        )
        assert error.arguments == ("name", "punctuation")
        assert "name: 'ada' (the existing run) != 'bob' (given)" in str(error)
        assert "punctuation: '!' (the existing run) != '?' (given)" in str(error)
        assert "if_exists='return'" in str(error)
    assert engine.history("greet-1") == [history.WorkflowStarted(greet.name, b'{"name":"ada"}')]
    assert CALLS["greet"] == 0


def test_the_conflict_shortens_long_values(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    engine.start(greet.options(id="long"), "a" * 10_000)
    with pytest.raises(fluxo.RunIdConflictError) as info:
        engine.start(greet.options(id="long"), "b" * 10_000)
    assert info.value.arguments == ("name",)
    assert len(str(info.value)) < 600


def test_if_exists_return_returns_the_existing_run_whatever_its_arguments(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(greet)
    first = engine.start(greet.options(id="greet-1"), "ada")
    again = engine.start(greet.options(id="greet-1", if_exists="return"), "bob")
    assert again.id == first.id
    assert execute(engine, first.id) is Outcome.COMPLETED
    assert engine.run(greet.options(id="greet-1", if_exists="return"), "eve") == "hello ada!"
    assert CALLS["greet"] == 1
    assert engine.history("greet-1")[0].data == b'{"name":"ada"}'


@pytest.mark.parametrize("value", ["always", None, True])
def test_if_exists_takes_check_or_return(value: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="if_exists= takes 'check'"):
        greet.options(id="x", if_exists=value)


@fluxo.workflow
def add(a: int, b: int = 2, *rest: int, scale: int = 1, **labels: str) -> int:
    return (a + b + sum(rest)) * scale


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (((1, 2), {}), ((1,), {"b": 2})),  # positional or by name: one call
        (((1,), {}), ((1, 2), {"scale": 1})),  # a default passed is a default left out
        (((1, 2, 3), {"x": "y"}), ((1, 2, 3), {"x": "y", "scale": 1})),
    ],
    ids=["by-name", "defaults", "varargs"],
)
def test_the_same_call_written_differently_is_the_same_start(
    make_engine: MakeEngine,
    first: tuple[tuple[Any, ...], dict[str, Any]],
    second: tuple[tuple[Any, ...], dict[str, Any]],
) -> None:
    engine = make_engine(add)
    one = engine.start(add.options(id="sum"), *first[0], **first[1])
    two = engine.start(add.options(id="sum"), *second[0], **second[1])
    assert one.id == two.id
    assert len(engine.list_runs()) == 1


def test_varargs_and_keywords_that_differ_are_named(make_engine: MakeEngine) -> None:
    engine = make_engine(add)
    engine.start(add.options(id="sum"), 1, 2, 3, x="y")
    with pytest.raises(fluxo.RunIdConflictError) as info:
        engine.start(add.options(id="sum"), 1, 2, 4, x="z", scale=3)
    assert info.value.arguments == ("rest", "scale", "labels")


def test_a_conflict_whose_stored_input_no_longer_decodes_names_the_arguments_as_stored(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(greet)
    engine.store.create_run("old", greet.name, b'{"name": 17}', now=0.0)  # an older signature
    with pytest.raises(fluxo.RunIdConflictError, match="name differs") as info:
        engine.start(greet.options(id="old"), "ada")
    assert info.value.arguments == ("name",)
    assert "name: 17 (the existing run) != 'ada' (given)" in str(info.value)


def test_a_conflict_whose_stored_input_is_no_mapping_says_the_arguments_differ(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(greet)
    engine.store.create_run("old", greet.name, b"[17]", now=0.0)
    with pytest.raises(fluxo.RunIdConflictError, match="its arguments differ") as info:
        engine.start(greet.options(id="old"), "ada")
    assert info.value.arguments == ()


def test_run_ids_are_generated_and_unique(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    ids = {engine.start(greet, "x").id for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {}), (("a", "b", "c"), {}), (("a",), {"nope": 1}), ((), {"punctuation": "?"})],
    ids=["missing", "too-many", "unknown-keyword", "missing-positional"],
)
def test_start_with_wrong_arguments_is_a_definition_error(
    make_engine: MakeEngine, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.DefinitionError, match="do not fit its signature") as info:
        engine.start(greet, *args, **kwargs)
    assert "greet(name: 'str', punctuation: 'str' = '!')" in str(info.value)
    assert engine.list_runs() == []


@fluxo.workflow(name="tests.order")
def order(order_id: str, cents: int) -> int:
    return cents


@fluxo.workflow(name="tests.loose")
def loose(label: str, n: Any, ratio: float = 0.0, extra: dict[str, Any] | None = None) -> str:
    return label


@pytest.mark.parametrize(
    ("cents", "given"), [("12", "str"), (1.5, "float"), (True, "bool"), (None, "None")]
)
def test_an_argument_of_another_type_is_refused_at_start(
    make_engine: MakeEngine, cents: Any, given: str
) -> None:
    engine = make_engine(order)

    for start in (engine.start, engine.run):
        with pytest.raises(fluxo.EncodeError) as info:
            start(order.options(id="o-1"), "o-1", cents)  # type: ignore[operator]

        message = str(info.value)
        assert isinstance(info.value, TypeError)  # like the arity error, DefinitionError
        assert message.startswith(f"workflow 'tests.order' got cents={cents!r} ({given})")
        assert "signature says cents: int" in message
        assert "WorkflowInput" not in message
        assert engine.list_runs() == []


def test_a_recorded_input_that_does_not_decode_names_the_workflow_and_argument(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(order)
    engine.store.create_run("old", order.name, b'{"order_id":"o","cents":"12"}', now=0.0)

    assert execute(engine, "old") is Outcome.FAILED
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        engine.handle("old").result(timeout=0)

    message = str(info.value)
    assert info.value.is_instance(fluxo.DecodeError)
    assert "the recorded input of workflow 'tests.order' does not decode" in message
    assert "cents='12' (str) where its signature says cents: int" in message
    assert "WorkflowInput" not in message
    assert "fluxo._" not in message


@pytest.mark.parametrize(
    ("first", "again"), [(1, True), (1, 1.0), (True, 1), ({"a": 1}, {"a": True})]
)
def test_arguments_equal_in_python_but_recorded_differently_are_named(
    make_engine: MakeEngine, first: Any, again: Any
) -> None:
    engine = make_engine(loose)
    engine.start(loose.options(id="l"), "a", first)

    with pytest.raises(fluxo.RunIdConflictError) as info:
        engine.start(loose.options(id="l"), "a", again)

    assert info.value.arguments == ("n",)
    assert f"n: {first!r} (the existing run) != {again!r} (given)" in str(info.value)


def test_arguments_that_record_the_same_are_the_same_run(make_engine: MakeEngine) -> None:
    engine = make_engine(loose)
    first = engine.start(loose.options(id="l"), "a", 1, 2, {"x": 1, "y": [1, 2]})

    again = engine.start(loose.options(id="l"), "a", 1, 2.0, {"y": [1, 2], "x": 1})

    assert again.id == first.id  # a float parameter records 2 as 2.0; a dict's order is no matter


def test_unregistered_workflows_are_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.UnknownWorkflowError, match="Engine\\(workflows="):
        engine.start(other_greet, "x")
    with pytest.raises(fluxo.UnknownWorkflowError):
        engine.run(other_greet, "x")

    @fluxo.workflow(name=greet.name)
    def same_name_other_code(name: str) -> str:
        return name

    with pytest.raises(fluxo.UnknownWorkflowError):
        engine.start(same_name_other_code, "x")
    with pytest.raises(fluxo.DefinitionError, match="not a workflow"):
        engine.start(greet.fn, "x")  # type: ignore[arg-type]
    assert engine.list_runs() == []


def test_unencodable_input_stores_nothing(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.EncodeError) as info:
        engine.start(greet, object())  # type: ignore[arg-type]
    assert isinstance(info.value, TypeError)
    assert greet.name in str(info.value)
    with pytest.raises(fluxo.EncodeError):
        engine.start(greet, "lone \udc80 surrogate")
    assert engine.list_runs() == []


def test_arguments_are_decoded_by_annotation(make_engine: MakeEngine) -> None:
    engine = make_engine(shapes)
    handle = engine.start(
        shapes, Item("a"), Item("b", 2), Item("c"), when=date(2024, 5, 1), gift="yes"
    )
    assert execute(engine, handle.id) is Outcome.COMPLETED
    assert handle.result(timeout=1) == {
        "skus": ["a", "b", "c"],
        "when": "2024-05-01",
        "tags": {"gift": "yes"},
    }


def test_defaults_are_not_stored_and_apply_at_execution(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, name="bob")
    assert engine.history(handle.id)[0].data == b'{"name":"bob"}'
    execute(engine, handle.id)
    assert handle.result(timeout=1) == "hello bob!"


def test_results_are_decoded_by_the_return_annotation(make_engine: MakeEngine) -> None:
    engine = make_engine(returns_item)
    handle = engine.start(returns_item, "x")
    execute(engine, handle.id)
    assert handle.result(timeout=1) == Item("x", 2)
    assert engine.handle(handle.id).result(timeout=1) == Item("x", 2)


def test_a_handle_for_a_workflow_the_engine_does_not_know_decodes_plainly(
    make_engine: MakeEngine,
) -> None:
    store = MemoryStore()
    knows = make_engine(returns_item, store=store)
    handle = knows.start(returns_item, "y")
    execute(knows, handle.id)
    stranger = make_engine(greet, store=store)
    assert stranger.handle(handle.id).result(timeout=1) == {"sku": "y", "qty": 2}


# -- running inline ---------------------------------------------------------------------


def test_run_executes_in_this_thread_and_returns_the_result(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    assert engine.run(greet, "eve", "?") == "hello eve?"
    (run,) = engine.list_runs()
    assert run.status is Status.COMPLETED
    assert run.lease_owner is None


def test_run_with_a_taken_id_does_not_execute_again(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    assert engine.run(greet.options(id="once"), "a") == "hello a!"
    assert engine.run(greet.options(id="once"), "a") == "hello a!"
    assert CALLS["greet"] == 1


def test_run_raises_the_failure(make_engine: MakeEngine) -> None:
    engine = make_engine(fails)
    with pytest.raises(fluxo.WorkflowFailedError) as info:
        engine.run(fails, "bad input")
    assert info.value.is_instance(RuntimeError)
    assert info.value.error_message == "bad input"
    assert engine.get_run(info.value.run_id).status is Status.FAILED


def test_result_times_out_while_the_run_is_unfinished(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, "late")
    with pytest.raises(fluxo.RunNotFinishedError) as info:
        handle.result(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert "still pending" in str(info.value)
    assert "worker" in str(info.value)


def test_result_wakes_when_another_thread_finishes_the_run(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, "later")
    waiter = Box()
    waiter.run(lambda: handle.result(timeout=WAIT))
    execute(engine, handle.id)
    assert waiter.get() == "hello later!"


# -- inspecting -------------------------------------------------------------------------


def test_list_runs_filters(store_url: str, make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(greet, fails, wfs.named_checkout, store=store_url)
    ok = engine.start(greet, "a")
    clock.advance(1)
    bad = engine.start(fails, "b")
    clock.advance(1)
    waiting = engine.start(greet, "c")
    clock.advance(1)
    named_run = engine.start(wfs.named_checkout, "o")
    execute(engine, ok.id)
    execute(engine, bad.id)

    def ids(runs: list[fluxo.RunInfo]) -> list[str]:
        return [run.id for run in runs]

    assert ids(engine.list_runs()) == [named_run.id, waiting.id, bad.id, ok.id]  # newest first
    assert ids(engine.list_runs(status=Status.COMPLETED)) == [ok.id]
    assert ids(engine.list_runs(status="failed")) == [bad.id]
    assert ids(engine.list_runs(status=[Status.PENDING, "completed"])) == [
        named_run.id,
        waiting.id,
        ok.id,
    ]
    assert ids(engine.list_runs(workflow=greet)) == [waiting.id, ok.id]
    assert ids(engine.list_runs(workflow=greet.name)) == [waiting.id, ok.id]
    assert ids(engine.list_runs(workflow=greet, status="pending")) == [waiting.id]
    assert ids(engine.list_runs(workflow=wfs.named_checkout)) == [named_run.id]
    assert ids(engine.list_runs(limit=2)) == [named_run.id, waiting.id]
    assert engine.list_runs(workflow="nobody") == []
    assert engine.list_runs(status=[]) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"status": "finished"}, {"status": ["pending", "nope"]}, {"limit": 0}, {"limit": "10"}],
)
def test_list_runs_rejects_bad_filters(make_engine: MakeEngine, kwargs: dict[str, Any]) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.DefinitionError):
        engine.list_runs(**kwargs)


def test_list_runs_by_id_prefix(store_url: str, make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(greet, fails, store=store_url)
    for run_id in ("order-1", "order-2", "Order-3", "order_4", "orders", "refund-1"):
        engine.start(greet.options(id=run_id), run_id)
        clock.advance(1)
    engine.start(fails.options(id="order-9"), "x")
    execute(engine, "order-9")

    def ids(**filters: Any) -> list[str]:
        return [run.id for run in engine.list_runs(**filters)]

    assert ids(id_prefix="order-") == ["order-9", "order-2", "order-1"]  # newest first
    assert ids(id_prefix="order") == ["order-9", "orders", "order_4", "order-2", "order-1"]
    assert ids(id_prefix="order_") == ["order_4"]  # "_" is itself, not any character
    assert ids(id_prefix="order%") == []
    assert ids(id_prefix="ORDER") == []  # case counts
    assert ids(id_prefix="order-", status="failed") == ["order-9"]
    assert ids(id_prefix="order-", workflow=greet) == ["order-2", "order-1"]
    assert ids(id_prefix="order-", limit=1) == ["order-9"]
    assert ids(id_prefix="order-", created_before=T0 + 1) == ["order-1"]
    assert ids(id_prefix="refund-1") == ["refund-1"]  # a whole id
    assert ids(id_prefix="") == ids() == ids(id_prefix=None)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (42, "id_prefix takes a string (the start of the run ids to list), not 42"),
        (b"order-", "id_prefix takes a string"),
        (["order-"], "id_prefix takes a string"),
        ("order\x00", "id_prefix 'order\\x00' holds the control character U+0000 at index 5"),
        ("\ud800", "holds a lone surrogate"),
        ("x" * 256, "id_prefix is 256 characters long, and no run id is longer than 255"),
    ],
)
def test_list_runs_rejects_a_bad_id_prefix(
    make_engine: MakeEngine, prefix: object, message: str
) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.DefinitionError, match=re.escape(message)):
        engine.list_runs(id_prefix=prefix)  # type: ignore[arg-type]


class _StoreWithoutIdPrefix(SpyStore):
    """A store written before ``id_prefix``: its ``list_runs`` does not take it."""

    def list_runs(self, **filters: Any) -> list[fluxo.RunInfo]:
        assert "id_prefix" not in filters
        return self.inner.list_runs(**filters)


def test_list_runs_passes_no_id_prefix_when_it_does_not_filter(make_engine: MakeEngine) -> None:
    engine = make_engine(greet, store=_StoreWithoutIdPrefix(MemoryStore()))
    engine.start(greet.options(id="a-1"), "a")

    assert [run.id for run in engine.list_runs()] == ["a-1"]
    assert [run.id for run in engine.list_runs(id_prefix="")] == ["a-1"]
    assert [run.id for run in engine.list_runs(id_prefix=None, status="pending")] == ["a-1"]


def test_count_runs_counts_each_workflow_in_each_status(
    store_url: str, make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(greet, fails, store=store_url)
    for workflow, name in ((greet, "a"), (greet, "b"), (fails, "c"), (greet, "d")):
        handle = engine.start(workflow, name)
        clock.advance(1)
        if name != "d":
            execute(engine, handle.id)

    assert engine.count_runs() == {
        (greet.name, Status.COMPLETED): 2,
        (greet.name, Status.PENDING): 1,
        (fails.name, Status.FAILED): 1,
    }


def test_get_run_and_history(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet.options(id="r1"), "ann")
    run = engine.get_run("r1")
    assert run.id == "r1"
    assert run.workflow == greet.name
    assert run.status is Status.PENDING
    assert run.created_at == clock()
    assert run.created.timestamp() == clock()
    clock.advance(5)
    execute(engine, handle.id)
    run = engine.get_run("r1")
    assert run.status is Status.COMPLETED
    assert run.updated_at == clock()
    events = engine.history("r1")
    assert isinstance(events, list)
    assert named(events) == [
        ("workflow_started", greet.name),
        ("step_completed", count.name),
        ("workflow_completed", ""),
    ]
    assert events[-1].data == b'"hello ann!"'


@pytest.mark.parametrize("operation", ["get_run", "history", "cancel", "retry", "handle"])
def test_unknown_run_ids_raise_run_not_found(make_engine: MakeEngine, operation: str) -> None:
    engine = make_engine(greet)
    with pytest.raises(fluxo.RunNotFoundError) as info:
        getattr(engine, operation)("no-such-run")
    assert info.value.run_id == "no-such-run"
    assert isinstance(info.value, LookupError)


# -- cancelling -------------------------------------------------------------------------


def test_cancelling_a_pending_run_ends_it_without_running_user_code(
    store_url: str, make_engine: MakeEngine
) -> None:
    engine = make_engine(greet, store=store_url)
    handle = engine.start(greet, "never")
    run = engine.cancel(handle.id)
    assert run.cancel_requested
    with engine.worker(idle_timeout=0.05), pytest.raises(fluxo.WorkflowCancelledError) as info:
        handle.result(timeout=WAIT)
    assert info.value.run_id == handle.id
    assert CALLS["greet"] == 0
    assert engine.get_run(handle.id).status is Status.CANCELLED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "cancel_requested",
        "workflow_cancelled",
    ]


def test_cancelling_a_finished_run_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(greet, fails)
    done = engine.start(greet, "x")
    failed = engine.start(fails, "y")
    execute(engine, done.id)
    execute(engine, failed.id)
    for handle in (done, failed):
        before = engine.history(handle.id)
        with pytest.raises(fluxo.RunStateError, match="already finished"):
            handle.cancel()
        assert engine.history(handle.id) == before
        assert not engine.get_run(handle.id).cancel_requested


def test_cancelling_twice_is_harmless(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, "x")
    engine.cancel(handle.id)
    assert engine.cancel(handle.id).status is fluxo.RunStatus.CANCELLED
    assert kinds(engine.history(handle.id)) == [
        "workflow_started",
        "cancel_requested",
        "workflow_cancelled",
    ]


def test_cancelling_a_run_not_yet_begun_needs_no_worker(make_engine: MakeEngine) -> None:
    engine = make_engine(greet)
    handle = engine.start(greet, "x")
    assert engine.cancel(handle.id).status is fluxo.RunStatus.CANCELLED
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=WAIT)


BLOCKING = {"entered": threading.Event(), "release": threading.Event()}


@fluxo.step
def blocking_step() -> str:
    CALLS["blocking"] += 1
    BLOCKING["entered"].set()
    assert BLOCKING["release"].wait(WAIT)
    return "unblocked"


@fluxo.step
def cleanup_step(note: str) -> str:
    CALLS["cleanup"] += 1
    assert not fluxo.in_workflow()
    return note


@fluxo.workflow
def cancellable() -> str:
    try:
        value = blocking_step()
        count("after")
        return value
    finally:
        cleanup_step("cleaned up")


def test_cancelling_a_running_workflow_runs_its_cleanup(make_engine: MakeEngine) -> None:
    BLOCKING["entered"].clear()
    BLOCKING["release"].clear()
    store = SpyStore(MemoryStore())
    engine = make_engine(cancellable, store=store)
    handle = engine.start(cancellable)
    with engine.worker(lease=0.3, idle_timeout=0.05):
        assert BLOCKING["entered"].wait(WAIT)
        run = engine.cancel(handle.id)
        assert run.status is Status.RUNNING
        assert run.cancel_requested
        store.wait_cancel_delivered(handle.id)  # by the worker's heartbeat
        BLOCKING["release"].set()
        with pytest.raises(fluxo.WorkflowCancelledError):
            handle.result(timeout=WAIT)
    assert CALLS == {"blocking": 1, "cleanup": 1}  # "after" never ran
    assert named(engine.history(handle.id)) == [
        ("workflow_started", cancellable.name),
        ("step_completed", blocking_step.name),
        ("cancel_requested", "cancelled"),
        ("step_completed", cleanup_step.name),
        ("workflow_cancelled", "cancelled"),
    ]
    run = engine.get_run(handle.id)
    assert run.status is Status.CANCELLED
    assert run.lease_owner is None


# -- lifecycle --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "args"),
    [
        ("start", (greet, "x")),
        ("run", (greet, "x")),
        ("get_run", ("r",)),
        ("list_runs", ()),
        ("count_runs", ()),
        ("history", ("r",)),
        ("cancel", ("r",)),
        ("retry", ("r",)),
        ("handle", ("r",)),
    ],
)
def test_a_closed_engine_says_so(operation: str, args: tuple[Any, ...]) -> None:
    engine = fluxo.Engine("memory://", workflows=[greet])
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(fluxo.RunStateError, match="Engine is closed") as info:
        getattr(engine, operation)(*args)
    assert "with fluxo.Engine" in str(info.value)


def test_a_closed_engines_handles_say_so() -> None:
    with fluxo.Engine("memory://", workflows=[greet]) as engine:
        handle = engine.start(greet, "x")
    with pytest.raises(fluxo.RunStateError, match="closed"):
        handle.result(timeout=1)


def test_an_engine_closes_only_the_store_it_opened() -> None:
    with fluxo.Engine("memory://", workflows=[greet]) as engine:
        owned = engine.store
    with pytest.raises(fluxo.StoreError, match="closed"):
        owned.list_runs()

    given = MemoryStore()
    with fluxo.Engine(given, workflows=[greet]) as engine:
        assert engine.store is given
        engine.start(greet, "x")
    assert len(given.list_runs()) == 1  # still open


@pytest.mark.parametrize(
    "store",
    [42, None, "not a url", "ftp://x", object()],
)
def test_bad_stores_are_refused_with_the_choices(store: Any) -> None:
    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.Engine(store, workflows=[greet])
    assert "sqlite:///" in str(info.value) or "memory" in str(info.value)


def test_repr_names_the_store_and_workflows(make_engine: MakeEngine) -> None:
    engine = make_engine(wfs.named_checkout, greet)
    assert (
        repr(engine)
        == f"Engine(MemoryStore(runs=0), workflows={sorted([greet.name, 'shop.checkout'])})"
    )
    assert engine.lookup("shop.checkout_v1") is wfs.named_checkout
    with pytest.raises(fluxo.UnknownWorkflowError, match="Engine\\(workflows="):
        engine.lookup("nope")


class RacyStore(SpyStore):
    """Finishes a run right after ``result()`` has read it as unfinished: the worst moment."""

    def __init__(self, inner: fluxo.Store) -> None:
        super().__init__(inner)
        self.finish_on_read: Any = None
        self.waits: list[bool] = []

    def get_run(self, run_id: str) -> history.RunInfo:
        run = self.inner.get_run(run_id)
        finish, self.finish_on_read = self.finish_on_read, None
        if finish is not None and not run.status.is_terminal:
            finish()
        return run

    def wait_for_change(self, run_id: str | None, timeout: float, since: object = None) -> bool:
        woke = self.inner.wait_for_change(run_id, timeout, since)
        self.waits.append(woke)
        return woke


def test_result_is_not_slowed_by_a_change_between_its_read_and_its_wait(
    make_engine: MakeEngine,
) -> None:
    store = RacyStore(MemoryStore())
    engine = make_engine(greet, store=store)
    handle = engine.start(greet, "racy")
    store.finish_on_read = lambda: execute(engine, handle.id)
    assert handle.result(timeout=0.3) == "hello racy!"
    assert False not in store.waits  # no wait ran into its timeout


def test_run_raises_a_store_failure_instead_of_waiting_forever(make_engine: MakeEngine) -> None:
    class DownAfterStart(SpyStore):
        def append(self, *args: Any, **kwargs: Any) -> None:
            raise fluxo.StoreUnavailableError("the database went away")

    engine = make_engine(greet, store=DownAfterStart(fluxo.open_store("memory://")))
    with pytest.raises(fluxo.StoreUnavailableError, match="resumes it from its history"):
        engine.run(greet, "x")


LONG = "L" * 5000


@pytest.mark.parametrize(
    "call",
    [
        lambda engine: engine.start(greet.options(id=LONG), "x"),
        lambda engine: engine.start(greet.options(id=LONG + "~"), "x"),
        lambda engine: engine.get_run(LONG),
        lambda engine: engine.signal(LONG, "go", 1),
        lambda engine: engine.cancel(LONG),
        lambda engine: engine.history(LONG + "\x00"),
        lambda engine: engine.signal("r", LONG + "\x00", 1),
        lambda engine: engine.signal("r", "fluxo:" + LONG, 1),
        lambda engine: engine.worker(worker_id=LONG + "\x00"),
        lambda engine: fluxo.workflow(name=LONG + "\x00")(greet.fn),
        lambda engine: fluxo.step(name="ok", aliases=[LONG + "\x00"])(count.fn),
    ],
    ids=[
        "options-id",
        "options-id-separator",
        "get_run",
        "signal-run",
        "cancel",
        "control-character",
        "signal-name",
        "reserved-signal-name",
        "worker-id",
        "workflow-name",
        "alias",
    ],
)
def test_errors_quote_a_long_id_or_name_short(make_engine: MakeEngine, call: Any) -> None:
    engine = make_engine(greet)

    with pytest.raises(fluxo.FluxoError) as info:
        call(engine)

    message = str(info.value)
    assert "LLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL'... (500" in message  # the start, and the length
    assert len(message) < 400, message
