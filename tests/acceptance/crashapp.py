"""A five-step workflow for the crash tests, run by the real ``fluxo worker`` CLI.

Each step appends its name to a ledger file when it runs, so the test can count
executions across processes. Step 3 waits until the test allows it to finish,
so a worker can be killed while it is inside step 3, after step 2 committed.
"""

from __future__ import annotations

import os
import time

import fluxo
from tests.acceptance import _ledger


@fluxo.step
def step1(x: int) -> int:
    _ledger.write("step1")
    return x + 1


@fluxo.step
def step2(x: int) -> int:
    _ledger.write("step2")
    return x * 2


@fluxo.step
def step3(x: int) -> int:
    _ledger.write("step3")
    _ledger.hold("release-step3", "step 3")
    return x + 3


@fluxo.step
def step4(x: int) -> int:
    _ledger.write("step4")
    return x * 10


@fluxo.step
def step5(x: int) -> str:
    _ledger.write("step5")
    return f"done:{x}"


@fluxo.workflow
def five_steps(x: int) -> str:
    return step5(step4(step3(step2(step1(x)))))


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[five_steps])


@fluxo.step
def stamp(label: str) -> float:
    now = time.time()
    _ledger.write(f"{label} {now!r}")
    return now


NAP_SECONDS = 2.0
"""Long enough for the test to kill the worker well before the timer fires."""


@fluxo.workflow
def nap() -> float:
    stamp("before")
    fluxo.sleep(NAP_SECONDS)
    return stamp("after")


def make_timer_engine() -> fluxo.Engine:
    """The engine for the timer crash test."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[nap])
