"""A five-branch fan-out for the crash tests, run by the real ``fluxo worker`` CLI.

Each branch appends ``branchN`` to a ledger file when it runs, so the test can
count executions across processes. Branches 2 and 4 wait until the test allows
them to finish, so a worker can be killed while they run, after the other three
branches were recorded.
"""

from __future__ import annotations

import os

import fluxo
from tests.acceptance import _ledger

HELD = (2, 4)


@fluxo.step
def branch(index: int) -> int:
    _ledger.write(f"branch{index}")
    if index in HELD:
        _ledger.hold("release", "the held branches")
    return index * index


@fluxo.step
def total(values: list[int]) -> str:
    _ledger.write("total")
    return f"sum:{sum(values)}"


@fluxo.workflow
def fan_out(count: int) -> str:
    return total(fluxo.map(branch, range(count)))


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[fan_out])
