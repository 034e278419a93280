"""fluxo.AsyncEngine on every store: runs started, signalled and awaited from asyncio code."""

from __future__ import annotations

import asyncio

import fluxo

WAIT = 60.0
RUNS = 12


@fluxo.step(name="aengstores.double")
def double(n: int) -> int:
    return 2 * n


@fluxo.workflow(name="aengstores.asks")
def asks(n: int) -> int:
    answer: int = fluxo.wait_for_signal("answer", type=int)
    return double(n) + answer


def test_runs_are_started_signalled_and_awaited_without_blocking_the_loop(
    store: fluxo.Store,
) -> None:
    async def main() -> list[int]:
        async with fluxo.AsyncEngine(store, workflows=[asks], max_threads=4) as engine:
            with engine.engine.worker(concurrency=4, idle_timeout=0.05):
                handles = [await engine.start(asks.options(id=f"ask-{i}"), i) for i in range(RUNS)]
                waits = [asyncio.ensure_future(h.result(timeout=WAIT)) for h in handles]
                for handle in handles:
                    await engine.signal(handle.id, "answer", 100)
                results = await asyncio.gather(*waits)
                runs = await engine.list_runs(workflow=asks, status="completed")
                assert len(runs) == RUNS
                return results

    assert asyncio.run(main()) == [2 * i + 100 for i in range(RUNS)]
