"""Stubbing a child workflow in the test environment, the way a step is stubbed.

A workflow's stub is the function of each child run of it that a workflow starts:
the child is still a run of its own, so its parent's history, result and replays
are the ones a real child ending the same way gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import fluxo
from fluxo import _executor, history
from fluxo.testing import ChildCall, StepCall, Stub, WorkflowEnvironment, replay

T0 = datetime(2030, 1, 1, tzinfo=timezone.utc)


@dataclasses.dataclass
class Order:
    id: str
    grams: int


@dataclasses.dataclass
class Parcel:
    tracking: str
    grams: int


class CarrierDown(Exception):
    pass


@pytest.fixture(params=[True, False], ids=["always_replay", "no_replay"])
def env(request: pytest.FixtureRequest) -> Iterator[WorkflowEnvironment]:
    with WorkflowEnvironment(start_time=T0, always_replay=request.param) as environment:
        yield environment


# -- workflows and steps ----------------------------------------------------------------


@fluxo.step
def book_carrier(order_id: str, grams: int) -> str:
    return f"real-{order_id}"


@fluxo.step
def label(text: str) -> str:
    return text


@fluxo.workflow(aliases=["tests.shipping.ship_v0"])
def ship_order(order: Order, *, express: bool = False) -> Parcel:
    """The real child: books a carrier, waits for the pick-up, may refuse a heavy order."""
    if order.grams > 20_000:
        raise CarrierDown(f"{order.id} is too heavy")
    tracking = book_carrier(order.id, order.grams)
    fluxo.sleep(timedelta(hours=1))
    return Parcel(tracking, order.grams)


@fluxo.workflow
def sell(order_id: str, grams: int) -> str:
    """Calls the child: ``child(...)`` is ``start_child(...).result()``."""
    parcel = ship_order(Order(order_id, grams), express=grams > 1000)
    return label(f"{order_id}: {parcel.tracking}")


@fluxo.workflow
def sell_tolerant(order_id: str, grams: int) -> str:
    """Tells a failed child from a shipped one."""
    try:
        parcel = ship_order(Order(order_id, grams))
    except fluxo.WorkflowFailedError as exc:
        return f"{exc.type_name}: {exc.error_message}"
    return parcel.tracking


@fluxo.workflow
def sell_later(order_id: str) -> list[str]:
    """Starts the child, does something else, then awaits it through its handle."""
    shipping = fluxo.start_child(ship_order, Order(order_id, 5))
    started = label(f"started {shipping.id}")
    return [started, shipping.result().tracking]


@fluxo.workflow
def count_down(n: int) -> int:
    """A child that continues as new until n is 0."""
    if n == 0:
        return 0
    fluxo.continue_as_new(n - 1)


@fluxo.workflow
def counts(n: int) -> int:
    return count_down(n)


def parcel(tracking: str, grams: int = 5) -> Parcel:
    return Parcel(tracking, grams)


# -- returns, raises, a replacement ------------------------------------------------------


def test_a_stubbed_child_returns_the_stubs_value(env: WorkflowEnvironment) -> None:
    stub = env.stub(ship_order, returns=parcel("T-1"))
    assert env.run(sell.options(id="s"), "o-1", 5) == "o-1: T-1"
    assert env.steps_run() == [label]  # the real child booked no carrier
    assert env.now() == T0  # nor waited for a pick-up
    (call,) = stub.calls
    assert call == ChildCall(
        "s",
        ship_order,
        call.child_id,
        (Order("o-1", 5),),
        {"express": False},
        stubbed=True,
        result=parcel("T-1"),
    )
    assert call.name == ship_order.name
    assert env.engine.get_run(call.child_id).parent == "s"
    assert [e.kind for e in env.history(call.child_id)] == [
        "workflow_started",
        "workflow_completed",
    ]


def test_a_stubbed_child_fails_with_what_the_stub_raises(env: WorkflowEnvironment) -> None:
    env.stub(ship_order, raises=CarrierDown("no trucks today"))
    with pytest.raises(fluxo.WorkflowFailedError, match="no trucks today") as raised:
        env.run(sell, "o-2", 5)
    assert raised.value.error_message == "no trucks today"
    (call,) = env.calls(ship_order)
    assert isinstance(call.error, CarrierDown)
    assert call.result is None
    assert env.engine.get_run(call.child_id).status is fluxo.RunStatus.FAILED

    env.stub(ship_order, raises=CarrierDown)  # a class: a new instance per child
    expected = f"{__name__}.CarrierDown: "
    assert env.run(sell_tolerant, "o-3", 5) == expected


def test_the_parent_catches_a_stubbed_failure_as_a_real_childs(env: WorkflowEnvironment) -> None:
    env.stub(ship_order, raises=CarrierDown("no trucks today"))
    assert env.run(sell_tolerant, "o-4", 5) == f"{__name__}.CarrierDown: no trucks today"


def test_a_replacement_receives_the_childs_arguments_as_the_child_would(
    env: WorkflowEnvironment,
) -> None:
    received: list[tuple[Order, bool]] = []

    def fake_ship(order: Order, *, express: bool = False) -> Parcel:
        received.append((order, express))
        return Parcel(f"{'express' if express else 'slow'}-{order.id}", order.grams)

    env.stub(ship_order, fake_ship)
    assert env.run(sell, "o-5", 2000) == "o-5: express-o-5"
    assert env.run(sell, "o-6", 5) == "o-6: slow-o-6"
    assert received == [(Order("o-5", 2000), True), (Order("o-6", 5), False)]  # decoded
    assert [(c.args, c.kwargs) for c in env.calls(ship_order)] == [
        ((Order("o-5", 2000),), {"express": True}),
        ((Order("o-6", 5),), {"express": False}),
    ]


def test_a_replacement_may_return_what_decodes_as_the_annotation(env: WorkflowEnvironment) -> None:
    env.stub(ship_order, lambda order, express=False: {"tracking": "as-dict", "grams": 1})
    assert env.run(sell, "o-7", 5) == "o-7: as-dict"


# -- a real child and a stubbed one give the parent the same history --------------------


@pytest.mark.parametrize("always_replay", [True, False])
def test_the_parents_history_is_the_one_a_real_child_gives(always_replay: bool) -> None:
    with WorkflowEnvironment(start_time=T0, always_replay=always_replay) as real:
        real.stub(book_carrier, returns="T-9")  # the real child returns Parcel("T-9", 5)
        assert real.run(sell.options(id="s"), "o-9", 5) == "o-9: T-9"
        expected = real.history("s")
        assert real.steps_run() == [book_carrier, label]
    with WorkflowEnvironment(start_time=T0, always_replay=always_replay) as stubbed:
        stubbed.stub(ship_order, returns=parcel("T-9"))
        assert stubbed.run(sell.options(id="s"), "o-9", 5) == "o-9: T-9"
        assert stubbed.history("s") == expected
        assert [e.kind for e in expected] == [
            "workflow_started",
            "child_started",
            "child_completed",
            "step_completed",
            "workflow_completed",
        ]
        replay(stubbed.engine.export_history("s"), workflows=[sell])  # replays clean


def error_of(env: WorkflowEnvironment, event: history.Event) -> tuple[str, list[str], str]:
    info = env.engine.codec.decode(event.data or b"", _executor.ErrorInfo)
    return info.type, info.types, info.message


@pytest.mark.parametrize("always_replay", [True, False])
def test_a_stubbed_failure_is_recorded_as_a_real_childs_failure(always_replay: bool) -> None:
    outcomes = []
    for stubbed in (False, True):
        with WorkflowEnvironment(start_time=T0, always_replay=always_replay) as env:
            if stubbed:  # the real child raises CarrierDown for an order this heavy
                env.stub(ship_order, raises=CarrierDown("o-10 is too heavy"))
            with pytest.raises(fluxo.WorkflowFailedError) as raised:
                env.run(sell.options(id="s"), "o-10", 30_000)
            events = env.history("s")
            outcomes.append(
                (
                    [(e.kind, e.name) for e in events],
                    [
                        error_of(env, e)
                        for e in events
                        if e.kind in ("child_failed", "workflow_failed")
                    ],
                    (raised.value.type_name, raised.value.error_message),
                )
            )
            replay(env.engine.export_history("s"), workflows=[sell])
    real, stub = outcomes
    assert stub == real
    assert [kind for kind, _ in real[0]] == [
        "workflow_started",
        "child_started",
        "child_failed",
        "workflow_failed",
    ]
    assert real[1][0][0] == f"{__name__}.CarrierDown"


# -- fluxo.start_child and its handle ----------------------------------------------------


def test_a_child_started_with_start_child_is_stubbed_too(env: WorkflowEnvironment) -> None:
    env.stub(ship_order, returns=parcel("T-11"))
    result = env.run(sell_later.options(id="later"), "o-11")
    (call,) = env.calls(ship_order)
    assert result == [f"started {call.child_id}", "T-11"]
    assert [type(c) for c in env.calls(run="later")] == [StepCall, ChildCall]
    assert env.steps_run("later") == [label]
    replay(env.engine.export_history("later"), workflows=[sell_later])


def test_a_run_the_test_starts_itself_is_never_stubbed(env: WorkflowEnvironment) -> None:
    env.stub(ship_order, returns=parcel("stub"))
    assert env.run(ship_order, Order("o-12", 5)) == Parcel("real-o-12", 5)
    assert env.calls(ship_order) == []  # not a child: no child call


# -- finding a workflow by name ----------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [ship_order.name, "tests.shipping.ship_v0", "ship_order"],
    ids=["full", "alias", "short"],
)
def test_a_child_workflow_is_stubbed_by_name(env: WorkflowEnvironment, name: str) -> None:
    stub = env.stub(name, returns=parcel("by-name"))  # before the parent is known
    assert env.run(sell, "o-13", 5) == "o-13: by-name"
    assert len(stub.calls) == 1
    assert env.calls(name) == env.calls(ship_order)


def a_step_also_called_ship_order() -> fluxo.Step[[str], str]:
    @fluxo.step(name="tests.other.ship_order")
    def ship_order(order_id: str) -> str:
        return order_id

    return ship_order


def test_a_name_of_both_a_step_and_a_workflow_is_an_error_naming_both(
    env: WorkflowEnvironment,
) -> None:
    ship_order_step = a_step_also_called_ship_order()

    @fluxo.workflow(name="tests.other.pack")
    def pack(order_id: str) -> str:
        return ship_order_step(order_id)

    assert env.run(pack, "o-14") == "o-14"  # the environment knows the step now
    env.stub("ship_order", returns=parcel("?"))
    message = (
        r"'ship_order' names both a step \(tests\.other\.ship_order\) and a workflow "
        rf"\({ship_order.name}\); pass the object"
    )
    with pytest.raises(fluxo.DefinitionError, match=message):
        env.run(sell, "o-14", 5)
    with pytest.raises(fluxo.DefinitionError, match=message):
        env.calls("ship_order")
    env.stubs[0].remove()
    with env.stub(ship_order_step, returns="a step's stub"):  # by object: only the step
        assert env.run(sell, "o-15", 5) == "o-15: real-o-15"
        assert env.run(pack, "o-15") == "a step's stub"
    with env.stub(ship_order.name, returns=parcel("full name")):
        assert env.run(sell, "o-16", 5) == "o-16: full name"
        assert env.run(pack, "o-16") == "o-16"


# -- newest wins, remove -----------------------------------------------------------------


def test_the_newest_stub_answers_and_removing_it_brings_back_the_one_before(
    env: WorkflowEnvironment,
) -> None:
    outer = env.stub(ship_order, returns=parcel("outer"))
    with env.stub("ship_order", returns=parcel("inner")) as inner:
        assert env.run(sell, "o-17", 5) == "o-17: inner"
        assert env.stubs == [outer, inner]
    assert not inner.active
    assert env.run(sell, "o-18", 5) == "o-18: outer"
    outer.remove()
    assert env.stubs == []
    assert env.run(sell, "o-19", 5) == "o-19: real-o-19"  # the real child again
    assert env.now() == T0 + timedelta(hours=1)
    assert [(c.stubbed, c.result) for c in env.calls(ship_order)] == [
        (True, parcel("inner")),
        (True, parcel("outer")),
        (False, Parcel("real-o-19", 5)),
    ]
    assert [len(inner.calls), len(outer.calls)] == [1, 1]


def test_a_stub_answers_each_child_once_however_often_the_parent_replays() -> None:
    calls: list[str] = []

    def fake_ship(order: Order, *, express: bool = False) -> Parcel:
        calls.append(order.id)
        return parcel(order.id)

    with WorkflowEnvironment(start_time=T0, always_replay=True) as env:
        env.stub(ship_order, fake_ship)
        assert env.run(sell, "o-20", 5) == "o-20: o-20"
        assert env.run(sell_later, "o-21") == [
            f"started {env.calls(ship_order)[1].child_id}",
            "o-21",
        ]
    assert calls == ["o-20", "o-21"]


def slow_ship(order: Order, *, express: bool = False) -> Parcel:
    """A replacement that waits: it is the child's function, so its waits are durable."""
    fluxo.sleep(timedelta(hours=2))
    return parcel(f"slow-{order.id}")


def test_a_stub_answers_the_child_it_was_chosen_for_to_its_end(env: WorkflowEnvironment) -> None:
    stub = env.stub(ship_order, slow_ship)
    handle = env.start(sell, "o-26", 5)  # the child waits two hours
    stub.remove()
    assert handle.result() == "o-26: slow-o-26"
    assert env.now() == T0 + timedelta(hours=2)
    assert [c.result for c in stub.calls] == [parcel("slow-o-26")]  # once, however replayed


def test_a_stubbed_child_cancelled_with_its_parent_has_no_call_record(
    env: WorkflowEnvironment,
) -> None:
    env.stub(ship_order, slow_ship)
    handle = env.start(sell, "o-27", 5)
    env.cancel(handle)
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result()
    (child,) = [run for run in env.engine.list_runs() if run.parent == handle.id]
    assert child.status is fluxo.RunStatus.CANCELLED
    assert env.calls(ship_order) == []


# -- call records of real children -------------------------------------------------------


def test_a_real_child_is_recorded_once_as_it_ends(env: WorkflowEnvironment) -> None:
    env.run(sell.options(id="s"), "o-22", 5)
    (call,) = env.calls(ship_order)
    assert call == ChildCall(
        "s",
        ship_order,
        call.child_id,
        (Order("o-22", 5),),
        {"express": False},
        result=Parcel("real-o-22", 5),
    )
    assert [type(c) for c in env.calls()] == [StepCall, ChildCall, StepCall]
    assert env.calls(run=call.child_id) == env.calls(book_carrier)
    assert env.steps_run() == [book_carrier, label]


def test_a_child_that_continues_as_new_is_one_call_with_its_last_result(
    env: WorkflowEnvironment,
) -> None:
    assert env.run(counts.options(id="c"), 3) == 0
    (call,) = env.calls(count_down)
    assert (call.run_id, call.args, call.result, call.stubbed) == ("c", (3,), 0, False)
    env.stub(count_down, returns=7)
    assert env.run(counts, 3) == 7


# -- errors ------------------------------------------------------------------------------


def test_a_value_that_does_not_fit_fails_the_child_naming_the_stub(
    env: WorkflowEnvironment,
) -> None:
    env.stub(ship_order, returns="not a parcel")
    failure = env.run(sell_tolerant, "o-23", 5)
    assert failure.startswith(
        f"fluxo.EncodeError: <fluxo stub of {ship_order.name}> returned a value of type "
        f"builtins.str that does not fit the return annotation of workflow "
        f"{ship_order.name!r} ({__name__}.Parcel)"
    )
    assert failure.endswith("stub it with a value the workflow could return")
    assert env.calls(ship_order)[0].result == "not a parcel"  # what the stub returned


def test_a_name_that_matches_nothing_is_an_error_before_anything_runs(
    env: WorkflowEnvironment,
) -> None:
    env.stub("ship_ordr", returns=parcel("typo"))
    with pytest.raises(fluxo.DefinitionError) as raised:
        env.start(sell, "o-24", 5)
    message = str(raised.value)
    assert "no step or workflow named 'ship_ordr'" in message
    assert "Did you mean 'ship_order'?" in message
    assert repr(ship_order.name) in message.split("known workflows:")[1]
    assert env.engine.list_runs() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((ship_order,), {}, "exactly one of .* it got nothing"),
        ((ship_order,), {"returns": parcel("x"), "raises": CarrierDown}, "returns= and raises="),
        ((ship_order, "not callable"), {}, "the signature of the step or workflow"),
        (
            (ship_order, lambda order_id, grams: None),
            {},
            rf"the replacement for workflow '{ship_order.name}' does not take the workflow's "
            r"arguments: the workflow is ship_order\(order: 'Order', \*, express",
        ),
        ((42,), {"returns": 1}, r"pass a @fluxo\.step or @fluxo\.workflow function, or its name"),
        ((parcel,), {"returns": 1}, r"decorate it with @fluxo\.step or @fluxo\.workflow"),
    ],
)
def test_stub_rejects_bad_input_with_the_fix(
    env: WorkflowEnvironment, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(fluxo.DefinitionError, match=message):
        env.stub(*args, **kwargs)
    assert env.stubs == []


def test_a_replacement_for_a_workflow_named_by_name_is_checked_too(
    env: WorkflowEnvironment,
) -> None:
    env.run(sell, "o-25", 5)  # registers sell, whose module holds ship_order
    with pytest.raises(fluxo.DefinitionError, match="the replacement for workflow"):
        env.stub("ship_order", lambda order_id, grams: None)


def test_workflow_stubs_describe_themselves(env: WorkflowEnvironment) -> None:
    stub: Stub[ChildCall] = env.stub(ship_order, returns=parcel("x"))
    assert repr(stub) == f"<fluxo stub of {ship_order.name}>"
    assert stub.target is ship_order
