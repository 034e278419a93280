"""A five-step workflow for the crash tests, run by the real ``fluxo worker`` CLI.

Each step appends its name to a ledger file when it runs, so the test can count
executions across processes. Step 3 waits until the test allows it to finish,
so a worker can be killed while it is inside step 3, after step 2 committed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fluxo

WORKDIR = Path(os.environ.get("FLUXO_CRASH_DIR", "."))


def _ledger(name: str) -> None:
    with (WORKDIR / "ledger.txt").open("a") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())


@fluxo.step
def step1(x: int) -> int:
    _ledger("step1")
    return x + 1


@fluxo.step
def step2(x: int) -> int:
    _ledger("step2")
    return x * 2


@fluxo.step
def step3(x: int) -> int:
    _ledger("step3")
    deadline = time.monotonic() + 60
    while not (WORKDIR / "release-step3").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never released step 3")
        time.sleep(0.02)
    return x + 3


@fluxo.step
def step4(x: int) -> int:
    _ledger("step4")
    return x * 10


@fluxo.step
def step5(x: int) -> str:
    _ledger("step5")
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
    _ledger(f"{label} {now!r}")
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
