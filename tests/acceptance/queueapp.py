"""Two queued workflows for the queue acceptance test, run by real ``fluxo worker`` processes.

``overlapping`` runs in a queue of concurrency 2: its step writes when it enters and
leaves, so the test can check that no more than 2 ever overlap across workers.
``paced`` runs in a queue of 10 admissions a second: its step writes the time its
run was admitted (the ``ready_at`` admission set), so the test can count admissions
in every one-second window.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import fluxo
from tests.acceptance import _ledger

LIMITED = fluxo.Queue("limited", concurrency=2)
PACED = fluxo.Queue("paced", rate=10, per=timedelta(seconds=1))

_engine: list[fluxo.Engine] = []


@fluxo.step
def overlap(run_id: str) -> str:
    _ledger.write(f"enter:{run_id}:{time.time()!r}")
    time.sleep(0.1)
    _ledger.write(f"leave:{run_id}:{time.time()!r}")
    return run_id


@fluxo.workflow(queue=LIMITED, name="queueapp.overlapping")
def overlapping() -> str:
    return overlap(fluxo.info().run_id)


@fluxo.step
def admitted(run_id: str) -> float:
    ready_at = _engine[0].store.get_run(run_id).ready_at
    assert ready_at is not None
    _ledger.write(f"admitted:{run_id}:{ready_at!r}")
    return ready_at


@fluxo.workflow(queue=PACED, name="queueapp.paced")
def paced() -> float:
    return admitted(fluxo.info().run_id)


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    engine = fluxo.Engine(
        os.environ["FLUXO_CRASH_URL"], workflows=[overlapping, paced], queues=[LIMITED, PACED]
    )
    _engine[:] = [engine]
    return engine
