"""``async def`` workflows on every store: steps, fan-out, timers, signals and children."""

from __future__ import annotations

import asyncio
import time

import fluxo
from fluxo import history

WAIT = 60.0


@fluxo.step(name="awstores.double")
async def double(n: int) -> int:
    await asyncio.sleep(0)
    return 2 * n


@fluxo.step(name="awstores.label")
def label(n: int) -> str:
    return f"n{n}"


@fluxo.workflow(name="awstores.child")
async def child(n: int) -> int:
    return await double(n)


@fluxo.workflow(name="awstores.main")
async def main(n: int) -> str:
    doubled = list(await asyncio.gather(*(double(i) for i in range(n))))  # one block
    doubled += await fluxo.map_async(double, range(n))  # branches at once
    named = await label.call_async(n)
    await fluxo.sleep_async(0.2)
    answer: int = await fluxo.wait_for_signal_async("answer", type=int)
    from_child = await child(answer)
    return f"{named} {sum(doubled)} {from_child}"


def waiting_for_signal(engine: fluxo.Engine, run_id: str) -> bool:
    try:
        events = engine.history(run_id)
    except (fluxo.RunNotFoundError, fluxo.StoreError):
        return False
    return any(isinstance(event, history.SignalWaitStarted) for event in events)


def test_a_worker_runs_async_workflows_through_timers_signals_and_children(
    store: fluxo.Store,
) -> None:
    with (
        fluxo.Engine(store, workflows=[main, child]) as engine,
        engine.worker(concurrency=4, idle_timeout=0.05),
    ):
        handles = [engine.start(main.options(id=f"m-{i}"), 4) for i in range(3)]
        deadline = time.monotonic() + WAIT
        for handle in handles:
            while not waiting_for_signal(engine, handle.id):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            engine.signal(handle.id, "answer", 5)
        assert [h.result(timeout=WAIT) for h in handles] == ["n4 24 10"] * 3
        kinds = [e.kind for e in engine.history("m-0")]
    assert kinds.count("parallel_started") == 2  # the gather and map_async
    assert kinds.count("branch_completed") == 8
    assert kinds.count("step_completed") == 1  # the label
    assert "timer_fired" in kinds
    assert "child_completed" in kinds
