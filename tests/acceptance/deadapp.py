"""A workflow that SIGKILLs the worker executing it, and ordinary ones, for ``test_dead.py``.

``poison`` records its first step, then kills its own worker process in its
second, every time it runs; it allows :data:`MAX_RECOVERIES` takeovers. ``ordinary``
runs take a little while, so some of them are in flight on the worker that dies.
Each step appends to the ledger (see ``_ledger``), so the test counts executions.
"""

from __future__ import annotations

import os
import signal
import time

import fluxo
from tests.acceptance import _ledger

MAX_RECOVERIES = 2


@fluxo.step
def prepare(x: int) -> int:
    _ledger.write("prepare")
    return x + 1


@fluxo.step
def explode(x: int) -> int:
    _ledger.write("explode")
    os.kill(os.getpid(), signal.SIGKILL)  # the whole worker process dies, here, each time
    return x


@fluxo.workflow(name="dead.poison", max_recoveries=MAX_RECOVERIES)
def poison(x: int) -> int:
    return explode(prepare(x))


@fluxo.step
def work(x: int) -> int:
    time.sleep(0.2)
    _ledger.write(f"work-{x}")
    return x * 10


@fluxo.workflow(name="dead.ordinary")
def ordinary(x: int) -> int:
    return work(x) + work(x + 1)


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[poison, ordinary])
