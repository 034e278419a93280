"""fluxo.AsyncEngine: the engine's operations awaited from asyncio code."""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import _async_engine

WAIT = 30.0


@dataclasses.dataclass(frozen=True)
class Receipt:
    order: str
    cents: int


@fluxo.step(name="aeng.charge")
def charge(order: str, cents: int) -> Receipt:
    return Receipt(order, cents)


@fluxo.workflow(name="aeng.checkout")
def checkout(order: str, cents: int) -> Receipt:
    return charge(order, cents)


@fluxo.workflow(name="aeng.approval")
def approval(order: str) -> str:
    answer: str = fluxo.wait_for_signal("answer", type=str)
    return f"{order}: {answer}"


@fluxo.step(name="aeng.boom", retry=fluxo.Retry(max_attempts=1))
def boom() -> None:
    raise KeyError("gone")


@fluxo.workflow(name="aeng.fails")
def fails() -> None:
    boom()


@fluxo.workflow(name="aeng.rounds")
def rounds(left: int) -> int:
    if left > 0:
        fluxo.continue_as_new(left - 1)
    return 99


@fluxo.workflow(name="aeng.naps")
def naps() -> str:
    fluxo.sleep(timedelta(hours=1))
    return "rested"


WORKFLOWS = [checkout, approval, fails, rounds, naps]


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=WORKFLOWS) as made:
        yield made


@pytest.fixture
def worker(engine: fluxo.Engine) -> Iterator[fluxo.Worker]:
    with engine.worker(concurrency=4, idle_timeout=0.05) as running:
        yield running


def test_start_then_await_the_typed_result(engine: fluxo.Engine, worker: fluxo.Worker) -> None:
    async def main() -> Receipt:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.start(checkout.options(id="o-1"), "o-1", 4200)
            assert handle.id == "o-1"
            return await handle.result(timeout=WAIT)

    assert asyncio.run(main()) == Receipt("o-1", 4200)


def test_many_results_are_awaited_at_once_by_one_watching_thread(
    engine: fluxo.Engine, worker: fluxo.Worker
) -> None:
    async def main() -> list[str]:
        async with fluxo.AsyncEngine(engine, max_threads=2) as aengine:
            handles = [
                await aengine.start(approval.options(id=f"a-{i}"), f"a-{i}") for i in range(30)
            ]
            waits = [asyncio.ensure_future(h.result(timeout=WAIT)) for h in handles]
            await asyncio.sleep(0)  # every wait registered before any signal
            for handle in handles:
                await aengine.signal(handle.id, "answer", "yes")
            results = await asyncio.gather(*waits)
            watchers = [t for t in threading.enumerate() if t.name == "fluxo-async-results"]
            assert len(watchers) == 1
            return results

    assert asyncio.run(main()) == [f"a-{i}: yes" for i in range(30)]


def test_a_timeout_raises_and_leaves_the_run_alone(engine: fluxo.Engine) -> None:
    async def main() -> None:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.start(approval.options(id="late"), "late")
            with pytest.raises(fluxo.RunNotFinishedError, match="late"):
                await handle.result(timeout=0.05)
            task = asyncio.ensure_future(handle.result())
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await handle.status() is fluxo.RunStatus.PENDING
            assert not aengine._results._waits  # a wait that left is forgotten
        with engine.worker(idle_timeout=0.05):
            engine.signal("late", "answer", "after all")
            assert engine.handle("late").result(timeout=WAIT) == "late: after all"

    asyncio.run(main())


def test_failures_and_missing_runs_raise_as_in_sync_code(
    engine: fluxo.Engine, worker: fluxo.Worker
) -> None:
    async def main() -> None:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.start(fails.options(id="f-1"))
            with pytest.raises(fluxo.WorkflowFailedError, match="KeyError"):
                await handle.result(timeout=WAIT)
            with pytest.raises(fluxo.RunNotFoundError):
                await aengine.handle("nobody").result(timeout=1)
            with pytest.raises(fluxo.RunNotFoundError):
                await aengine.get_run("nobody")

    asyncio.run(main())


def test_a_chain_of_continue_as_new_is_followed(engine: fluxo.Engine, worker: fluxo.Worker) -> None:
    async def main() -> int:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.start(rounds.options(id="r"), 3)
            return await handle.result(timeout=WAIT)

    assert asyncio.run(main()) == 99


def test_steering_and_inspecting(engine: fluxo.Engine) -> None:
    async def main() -> None:
        async with fluxo.AsyncEngine(engine) as aengine:
            first = await aengine.start(naps.options(id="n-1"))
            await aengine.start(naps.options(id="n-2"))
            assert (await aengine.get_run("n-1")).status is fluxo.RunStatus.PENDING
            listed = await aengine.list_runs(workflow=naps)
            assert {r.id for r in listed} == {"n-1", "n-2"}
            assert [r.id for r in await aengine.list_runs(id_prefix="n-2")] == ["n-2"]
            assert await aengine.list_runs(id_prefix="N-") == []
            with pytest.raises(fluxo.DefinitionError, match="id_prefix takes a string"):
                await aengine.list_runs(id_prefix=2)
            assert (await aengine.count_runs())[("aeng.naps", fluxo.RunStatus.PENDING)] == 2
            cancelled = await first.cancel()
            assert cancelled.cancel_requested
            recorded = await aengine.history("n-1")
            assert recorded[0].kind == "workflow_started"
            exported = await aengine.export_history("n-1", readable=True)
            assert exported == engine.export_history("n-1", readable=True)
            with engine.worker(idle_timeout=0.05), pytest.raises(fluxo.WorkflowCancelledError):
                await first.result(timeout=WAIT)

    asyncio.run(main())


def test_run_executes_in_a_thread_of_its_own_not_the_loop(engine: fluxo.Engine) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []

    @fluxo.step(name="aeng.where")
    def where() -> int:
        seen.append(threading.get_ident())
        return 7

    @fluxo.workflow(name="aeng.here")
    def here() -> int:
        return where()

    async def main() -> int:
        async with fluxo.AsyncEngine("memory://", workflows=[here]) as aengine:
            return await aengine.run(here)

    assert asyncio.run(main()) == 7
    assert seen
    assert seen[0] != loop_thread


def test_store_calls_see_the_awaiting_tasks_context(engine: fluxo.Engine) -> None:
    request: contextvars.ContextVar[str] = contextvars.ContextVar("request", default="none")

    class Tagging(fluxo.Observer):
        inline = True

        def headers(self, workflow: str, run_id: str, parent: Any) -> dict[str, str]:
            return {"request": request.get(), "loop": str(threading.get_ident() == loop)}

    loop = threading.get_ident()

    async def main() -> dict[str, str]:
        async with fluxo.AsyncEngine(
            "memory://", workflows=[naps], observers=[Tagging()]
        ) as aengine:
            request.set("req-17")
            handle = await aengine.start(naps.options(id="tagged"))
            return dict((await aengine.get_run(handle.id)).headers)

    assert asyncio.run(main()) == {"request": "req-17", "loop": "False"}


def test_bad_arguments_are_refused_with_what_to_do(engine: fluxo.Engine) -> None:
    with pytest.raises(fluxo.DefinitionError, match="max_threads"):
        fluxo.AsyncEngine(engine, max_threads=0)
    with pytest.raises(fluxo.DefinitionError, match="workflows"):
        fluxo.AsyncEngine(engine, workflows=[checkout])
    with pytest.raises(fluxo.DefinitionError, match="workflows="):
        fluxo.AsyncEngine("memory://")

    async def main() -> None:
        aengine = fluxo.AsyncEngine(engine)
        handle = await aengine.start(approval.options(id="pending"), "pending")
        with pytest.raises(ValueError, match="timeout"):
            await handle.result(timeout=-1)
        waiting = asyncio.ensure_future(handle.result())
        await asyncio.sleep(0.05)
        await aengine.aclose()
        with pytest.raises(fluxo.RunStateError, match="closed"):
            await waiting
        with pytest.raises(fluxo.RunStateError, match="closed"):
            await aengine.get_run("pending")
        await aengine.aclose()  # idempotent

    asyncio.run(main())
    assert engine.get_run("pending").status is fluxo.RunStatus.PENDING  # a shared engine stays open


def test_an_engine_made_by_the_async_engine_is_closed_with_it() -> None:
    async def main() -> fluxo.Engine:
        async with fluxo.AsyncEngine("memory://", workflows=[checkout]) as aengine:
            return aengine.engine

    made = asyncio.run(main())
    with pytest.raises(fluxo.RunStateError, match="closed"):
        made.get_run("x")


def test_a_store_failing_while_results_are_awaited_is_retried(
    engine: fluxo.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine.store.get_runs
    failures = {"left": 3}

    def flaky(run_ids: Any) -> Any:
        if failures["left"]:
            failures["left"] -= 1
            raise fluxo.StoreUnavailableError("the store is restarting")
        return real(run_ids)

    monkeypatch.setattr(engine.store, "get_runs", flaky)
    monkeypatch.setattr(_async_engine, "RETRY_AFTER", 0.01)

    async def main() -> str:
        async with fluxo.AsyncEngine(engine) as aengine:
            handle = await aengine.start(approval.options(id="flaky"), "flaky")
            waiting = asyncio.ensure_future(handle.result(timeout=WAIT))
            await asyncio.sleep(0.05)
            await aengine.signal("flaky", "answer", "ok")
            with engine.worker(idle_timeout=0.05):
                return await waiting

    assert asyncio.run(main()) == "flaky: ok"
    assert failures["left"] == 0
