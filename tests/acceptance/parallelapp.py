"""A five-branch fan-out for the crash tests, run by the real ``fluxo worker`` CLI.

Each branch appends ``branchN`` to a ledger file when it runs, so the test can
count executions across processes. Branches 2 and 4 wait until the test allows
them to finish, so a worker can be killed while they run, after the other three
branches were recorded.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fluxo

WORKDIR = Path(os.environ.get("FLUXO_CRASH_DIR", "."))
HELD = (2, 4)


def _ledger(name: str) -> None:
    with (WORKDIR / "ledger.txt").open("a") as f:
        f.write(name + "\n")
        f.flush()
        os.fsync(f.fileno())


@fluxo.step
def branch(index: int) -> int:
    _ledger(f"branch{index}")
    if index in HELD:
        deadline = time.monotonic() + 60
        while not (WORKDIR / "release").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never released the held branches")
            time.sleep(0.02)
    return index * index


@fluxo.step
def total(values: list[int]) -> str:
    _ledger("total")
    return f"sum:{sum(values)}"


@fluxo.workflow
def fan_out(count: int) -> str:
    return total(fluxo.map(branch, range(count)))


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[fan_out])
