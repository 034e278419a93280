"""Sagas in ``async def`` workflows: ``async with fluxo.saga() as saga:``."""

from __future__ import annotations

import asyncio

import pytest

import fluxo
from fluxo.testing import WorkflowEnvironment, replay

calls: list[str] = []


@pytest.fixture(autouse=True)
def _clean() -> None:
    calls.clear()


@fluxo.step(name="asaga.book")
async def book(what: str) -> str:
    calls.append(f"book {what}")
    await asyncio.sleep(0)
    return f"{what}-1"


@fluxo.step(name="asaga.pay", retry=fluxo.Retry(max_attempts=1))
async def pay(cents: int) -> str:
    calls.append(f"pay {cents}")
    if cents > 1000:
        raise ValueError("card declined")
    return "paid"


@fluxo.step(name="asaga.cancel")
async def cancel(booking: str) -> None:
    calls.append(f"cancel {booking}")


@fluxo.step(name="asaga.release")
def release(booking: str) -> None:  # a plain step as a compensation
    calls.append(f"release {booking}")


@fluxo.step(name="asaga.refuse", retry=fluxo.Retry(max_attempts=1))
async def refuse(booking: str) -> None:
    calls.append(f"refuse {booking}")
    raise RuntimeError("cannot undo")


@fluxo.workflow(name="asaga.trip")
async def trip(cents: int) -> str:
    async with fluxo.saga() as saga:
        flight = await book("flight")
        saga.compensate_with(cancel, flight)
        hotel = await book("hotel")
        saga.compensate_with(release, hotel)
        return await pay(cents)


@fluxo.workflow(name="asaga.stubborn")
async def stubborn() -> str:
    async with fluxo.saga() as saga:
        car = await book("car")
        saga.compensate_with(cancel, car)
        saga.compensate_with(refuse, car)
        raise ValueError("no driver")


@fluxo.workflow(name="asaga.plain_with")
async def plain_with() -> str:
    with fluxo.saga():
        return "never"


WORKFLOWS = [trip, stubborn, plain_with]


def test_a_failure_undoes_the_async_and_plain_steps_newest_first() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:  # replays after every record
        handle = env.start(trip.options(id="t"), 5000)
        with pytest.raises(fluxo.WorkflowFailedError, match="card declined"):
            handle.result()
        kinds = [(e.kind, e.name) for e in env.history("t")]
    assert calls == [
        "book flight",
        "book hotel",
        "pay 5000",
        "release hotel-1",
        "cancel flight-1",
    ]  # each once, though the run replayed after every record
    assert kinds[-3:] == [
        ("step_completed", "asaga.release"),
        ("step_completed", "asaga.cancel"),
        ("workflow_failed", ""),
    ]


def test_a_saga_that_finishes_undoes_nothing() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        assert env.run(trip, 100) == "paid"
    assert calls == ["book flight", "book hotel", "pay 100"]


def test_a_failing_compensation_does_not_stop_the_others() -> None:
    with fluxo.Engine("memory://", workflows=WORKFLOWS) as engine:
        handle = engine.start(stubborn.options(id="s"))
        with engine.worker(), pytest.raises(fluxo.WorkflowFailedError) as failed:
            handle.result(timeout=30)
        assert failed.value.type_name.endswith("CompensationError")
        assert "no driver" in str(failed.value)
        calls.clear()
        replay(engine.export_history("s"), workflows=WORKFLOWS)
    assert calls == []  # a forced replay runs no compensation again


def test_with_in_an_async_workflow_is_refused_with_what_to_write() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        handle = env.start(plain_with)
        with pytest.raises(fluxo.WorkflowFailedError, match=r"async with fluxo\.saga"):
            handle.result()


def test_async_with_outside_a_workflow_makes_plain_calls() -> None:
    async def book_and_fail() -> None:
        async with fluxo.saga() as saga:
            saga.compensate_with(cancel, await book("boat"))
            saga.compensate_with(release, "dock")
            raise ValueError("storm")

    with pytest.raises(ValueError, match="storm"):
        asyncio.run(book_and_fail())
    assert calls == ["book boat", "release dock", "cancel boat-1"]


def test_async_with_in_a_sync_workflow_is_refused() -> None:
    @fluxo.workflow(name="asaga.sync_opens_async")
    def sync_opens_async() -> None:
        asyncio.run(fluxo.saga().__aenter__())

    with WorkflowEnvironment(workflows=[sync_opens_async]) as env:
        handle = env.start(sync_opens_async)
        with pytest.raises(fluxo.WorkflowFailedError, match="is for async workflows"):
            handle.result()
