"""Typing promises, checked by ``mypy --strict`` (``[tool.mypy] files`` lists this folder).

Nothing here runs under pytest (the name does not start with ``test_``). Each
``assert_type`` states what a type checker must infer. Each ``# type: ignore[code]``
marks a call that must be an error: ``warn_unused_ignores`` makes mypy fail if the
error goes away, so the ignore is the assertion.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from typing_extensions import assert_type

import fluxo


@dataclasses.dataclass
class Receipt:
    """What ``charge`` returns."""

    id: str
    cents: int


@fluxo.step
def charge(order_id: str, cents: int) -> Receipt:
    """A bare step."""
    return Receipt(order_id, cents)


@fluxo.step(name="typing.notify", retry=3)
def notify(message: str, *, loud: bool = False) -> None:
    """A called step with a keyword-only parameter."""


@fluxo.workflow
def checkout(order_id: str, cents: int) -> str:
    """A bare workflow."""
    receipt = charge(order_id, cents)
    assert_type(receipt, Receipt)
    notify(receipt.id, loud=True)
    return receipt.id


@fluxo.workflow(name="typing.bulk", aliases=["typing.bulk_v0"])
def bulk(*order_ids: str, dry_run: bool = False) -> list[Receipt]:
    """A called workflow with variadic and keyword-only parameters."""
    return [charge(order_id, 0) for order_id in order_ids]


def decorators_keep_signatures() -> None:
    """Steps and workflows keep their parameters and return types."""
    as_step: fluxo.Step[[str, int], Receipt] = charge
    as_callable: Callable[[str, int], Receipt] = charge
    as_workflow: fluxo.Workflow[[str, int], str] = checkout.options(id="order-1")
    returning: fluxo.Workflow[[str, int], str] = checkout.options(id="o", if_exists="return")
    del as_step, as_callable, as_workflow, returning
    assert_type(charge("o", 1), Receipt)
    assert_type(notify("m"), None)
    assert_type(checkout("o", 1), str)
    assert_type(checkout.options(id="order-1")("o", 1), str)
    wrong_step: fluxo.Step[[int], Receipt] = charge  # type: ignore[assignment]
    wrong_result: Callable[[str, int], int] = charge  # type: ignore[assignment]
    del wrong_step, wrong_result
    assert_type(bulk("a", "b", dry_run=True), list[Receipt])
    assert_type(checkout.name, str)
    assert_type(checkout.__name__, str)
    assert_type(charge.__qualname__, str)
    wrapped: Callable[[str, int], Receipt] = charge.__wrapped__
    del wrapped


def wrong_calls_are_errors() -> None:
    """Calls that do not fit the decorated function's signature."""
    charge("o", "1")  # type: ignore[arg-type]
    charge("o")  # type: ignore[call-arg]
    notify("m", True)  # type: ignore[call-arg]
    notify("m", loud="yes")  # type: ignore[arg-type]
    checkout(1, 2)  # type: ignore[arg-type]
    bulk("a", 2)  # type: ignore[arg-type]
    checkout.options(id=7)  # type: ignore[arg-type]
    checkout.options(id="o", if_exists="always")  # type: ignore[arg-type]


def engine_calls_are_checked(engine: fluxo.Engine) -> None:
    """``engine.start``/``engine.run`` are checked against the workflow's signature."""
    handle = engine.start(checkout, "o", 1)
    assert_type(handle, fluxo.RunHandle[str])
    assert_type(handle.result(), str)
    assert_type(handle.result(timeout=1.5), str)
    assert_type(handle.id, str)
    assert_type(handle.status(), fluxo.RunStatus)
    assert_type(engine.start(checkout.options(id="order-1"), "o", cents=1), fluxo.RunHandle[str])
    assert_type(engine.start(bulk, "a", "b", dry_run=True).result(), list[Receipt])
    assert_type(engine.run(checkout, "o", 1), str)
    assert_type(engine.run(bulk), list[Receipt])
    assert_type(engine.handle("run-1"), fluxo.RunHandle[Any])
    assert_type(engine.get_run("run-1"), fluxo.RunInfo)
    assert_type(engine.history("run-1"), list[fluxo.Event])
    assert_type(engine.list_runs(status="failed", workflow=checkout), list[fluxo.RunInfo])
    assert_type(engine.worker(concurrency=2), fluxo.Worker)

    engine.start(checkout, "o", "1")  # type: ignore[arg-type]
    engine.start(checkout, "o")  # type: ignore[call-arg]
    engine.start(checkout, "o", 1, 2)  # type: ignore[call-arg]
    engine.start(checkout, "o", 1, id="order-1")  # type: ignore[call-arg]
    engine.run(checkout, order_id=1, cents=1)  # type: ignore[arg-type]
    engine.start(bulk, 1)  # type: ignore[arg-type]
    engine.start(charge, "o", 1)  # type: ignore[arg-type]
    bad: int = engine.run(checkout, "o", 1)  # type: ignore[assignment]
    del bad


def deterministic_helpers() -> None:
    """The helpers' return types."""
    import uuid
    from datetime import datetime

    assert_type(fluxo.now(), datetime)
    assert_type(fluxo.uuid4(), uuid.UUID)
    assert_type(fluxo.random(), float)
    assert_type(fluxo.in_workflow(), bool)
    assert_type(fluxo.is_replaying(), bool)


async def async_engine_keeps_types(engine: fluxo.AsyncEngine) -> None:
    """AsyncEngine's operations are awaited and typed like Engine's."""
    handle = await engine.start(checkout, "o-1", 4200)
    assert_type(handle, fluxo.AsyncRunHandle[str])
    assert_type(await handle.result(timeout=5), str)
    assert_type(await engine.run(bulk, "a", "b", dry_run=True), list[Receipt])
    assert_type(await handle.status(), fluxo.RunStatus)
    assert_type(await engine.get_run(handle.id), fluxo.RunInfo)
    await engine.start(checkout, "o-1")  # type: ignore[call-arg]
    await engine.start(checkout, "o-1", "cents")  # type: ignore[arg-type]
    not_awaited = engine.start(checkout, "o-1", 4200)
    not_awaited.close()  # a coroutine: forgetting ``await`` leaves no handle to misuse
    with_engine = fluxo.AsyncEngine(fluxo.Engine("memory://", workflows=[checkout]))
    await with_engine.aclose()


@fluxo.step(name="typing.fetch")
async def fetch(url: str) -> Receipt:
    """An async step: called in an async workflow, it is awaited."""
    return Receipt(url, 0)


@fluxo.workflow(name="typing.async_child")
async def async_child(order_id: str) -> int:
    """An async workflow, used as a child."""
    return 1


@fluxo.workflow(name="typing.async_checkout")
async def async_checkout(order_id: str, cents: int) -> str:
    """An async workflow awaiting async steps, a sync step and the async durable calls."""
    receipt = await fetch(order_id)
    assert_type(receipt, Receipt)
    charged = await charge.call_async(order_id, cents)
    assert_type(charged, Receipt)
    assert_type(await async_child(order_id), int)
    await fluxo.sleep_async(5)
    approved = await fluxo.wait_for_signal_async("approved", type=bool)
    await fluxo.signal_async("other-run", "go", approved)
    await fetch(order_id, 4)  # type: ignore[call-arg]
    assert_type(await fluxo.map_async(fetch, ["a", "b"]), list[Receipt])
    assert_type(await fluxo.map_async(notify, ["a"]), list[None])
    assert_type(await fluxo.parallel_async(fetch.bind("a"), fetch.bind("b")), list[Receipt])
    later = await fluxo.start_child_async(async_child, order_id)
    assert_type(later, fluxo.ChildHandle[int])
    assert_type(await later.result_async(), int)
    plain_child = await fluxo.start_child_async(checkout, order_id, cents)
    assert_type(await plain_child.result_async(), str)
    return receipt.id


def async_workflows_keep_types(engine: fluxo.Engine) -> None:
    """An async workflow's handle gives the awaited type, and options keep its kind."""
    as_async: fluxo.AsyncWorkflow[[str, int], str] = async_checkout
    with_options: fluxo.AsyncWorkflow[[str, int], str] = async_checkout.options(id="o")
    assert_type(engine.start(async_checkout, "o", 1), fluxo.RunHandle[str])
    assert_type(engine.run(async_checkout, "o", 1), str)

    async def later(n: int) -> float:
        return n / 2

    named: fluxo.AsyncWorkflow[[int], float] = fluxo.workflow(name="typing.later")(later)
    del as_async, with_options, named


def environment_stubs_and_calls() -> None:
    """A step's stub keeps step calls, a workflow's child calls; a bare ``Stub`` is a step's."""
    from fluxo.testing import ChildCall, StepCall, Stub, WorkflowEnvironment

    with WorkflowEnvironment() as env:
        assert_type(env.stub(charge, returns=Receipt("r", 1)), Stub[StepCall])
        assert_type(env.stub(checkout, returns="r").calls, list[ChildCall])
        assert_type(env.stub("charge", returns=None), Stub[Any])
        assert_type(env.calls(charge), list[StepCall])
        assert_type(env.calls(bulk), list[ChildCall])
        assert_type(env.calls(), list[StepCall | ChildCall])
        assert_type(env.calls("charge", run="r"), list[StepCall | ChildCall])
        step_stub: Stub = env.stub(charge, returns=Receipt("r", 1))
        assert_type(step_stub.calls, list[StepCall])
        env.stub(42, returns=1)  # type: ignore[call-overload]


# -- schedules ------------------------------------------------------------------------------


@fluxo.schedule("0 2 * * *", tz="Europe/Helsinki")
@fluxo.workflow
def nightly(tick: datetime) -> int:
    """A scheduled workflow keeps its type."""
    return tick.day


assert_type(nightly.fn(datetime.now()), int)
nightly.fn("2030-01-01")  # type: ignore[arg-type]
assert_type(nightly.schedule, fluxo.Schedule | None)
fluxo.schedule(every=timedelta(minutes=5), catch_up="sometimes")  # type: ignore[arg-type]
fluxo.schedule(every=60)(charge)  # type: ignore[type-var]


def start_scheduled(engine: fluxo.Engine) -> None:
    """A scheduled workflow starts by hand like any other, checked against its signature."""
    assert_type(engine.start(nightly, datetime.now()), fluxo.RunHandle[int])
    engine.start(nightly, "2030-01-01")  # type: ignore[arg-type]
    assert_type(engine.schedules.trigger(nightly), str)
    assert_type(engine.schedules.list(), list[fluxo.ScheduleInfo])
