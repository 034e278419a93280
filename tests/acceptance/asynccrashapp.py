"""The crash tests' workflows written with ``async def``, run by the real ``fluxo worker`` CLI.

As in ``crashapp``: each step appends its name to a ledger file when it runs, and
step 3 waits (awaiting, on Fluxo's step loop) until the test allows it to finish,
so a worker can be killed while it is inside step 3, after step 2 committed.
"""

from __future__ import annotations

import os
import time

import fluxo
from tests.acceptance import _ledger
from tests.acceptance.crashapp import NAP_SECONDS


@fluxo.step(name="asynccrash.step1")
async def step1(x: int) -> int:
    _ledger.write("step1")
    return x + 1


@fluxo.step(name="asynccrash.step2")
def step2(x: int) -> int:  # a plain step, called with call_async
    _ledger.write("step2")
    return x * 2


@fluxo.step(name="asynccrash.step3")
async def step3(x: int) -> int:
    _ledger.write("step3")
    await _ledger.hold_async("release-step3", "step 3")
    return x + 3


@fluxo.step(name="asynccrash.step4")
async def step4(x: int) -> int:
    _ledger.write("step4")
    return x * 10


@fluxo.step(name="asynccrash.step5")
async def step5(x: int) -> str:
    _ledger.write("step5")
    return f"done:{x}"


@fluxo.workflow(name="asynccrash.five_steps")
async def five_steps(x: int) -> str:
    one = await step1(x)
    two = await step2.call_async(one)
    return await step5(await step4(await step3(two)))


@fluxo.step(name="asynccrash.stamp")
async def stamp(label: str) -> float:
    now = time.time()
    _ledger.write(f"{label} {now!r}")
    return now


@fluxo.workflow(name="asynccrash.nap")
async def nap() -> float:
    await stamp("before")
    await fluxo.sleep_async(NAP_SECONDS)
    return await stamp("after")


@fluxo.step(name="asynccrash.square")
async def square(i: int) -> int:
    _ledger.write(f"square{i}")
    if i == 2:
        await _ledger.hold_async("release-square2", "branch 2")
    return i * i


@fluxo.workflow(name="asynccrash.fan_out")
async def fan_out(n: int) -> int:
    """``n`` branches at once (``map_async``); branch 2 waits until the test releases it."""
    return sum(await fluxo.map_async(square, range(n)))


@fluxo.step(name="asynccrash.pack")
async def pack(item: str) -> str:
    _ledger.write("pack")
    await _ledger.hold_async("release-pack", "the packing step")
    return f"box({item})"


@fluxo.workflow(name="asynccrash.shipment")
async def shipment(item: str) -> str:
    return await pack(item)


@fluxo.workflow(name="asynccrash.order")
async def order(item: str) -> str:
    """A step, then an async child whose step waits until the test releases it."""
    ready = await step1(len(item))
    child = await fluxo.start_child_async(shipment, item)
    return f"{await child.result_async()}:{ready}"


def make_engine() -> fluxo.Engine:
    """The engine of the async crash tests, on the store URL the test hands over."""
    return fluxo.Engine(
        os.environ["FLUXO_CRASH_URL"], workflows=[five_steps, nap, fan_out, order, shipment]
    )
