"""A five-step workflow for kill storms: real ``fluxo worker`` processes, killed at random.

Each step appends ``<run input> <step>`` to a ledger file as it runs, so a test (or
``benchmarks/chaos.py``) can count how often each step of each run executed across
processes, including the executions a ``SIGKILL`` cut short before they were
recorded. Each step takes a few milliseconds, so kills land inside steps too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fluxo

WORKDIR = Path(os.environ.get("FLUXO_STORM_DIR", "."))
STEP_SECONDS = float(os.environ.get("FLUXO_STORM_STEP_SECONDS", "0.005"))


def _ledger(x: int, name: str) -> None:
    # One short write per line in append mode: lines from concurrent processes do not interleave.
    with (WORKDIR / "ledger.txt").open("a") as f:
        f.write(f"{x} {name}\n")


@fluxo.step(name="storm.work")
def work(x: int, index: int, acc: int) -> int:
    _ledger(x, f"step{index}")
    time.sleep(STEP_SECONDS)
    return acc * 3 + index


@fluxo.workflow(name="storm.five")
def five(x: int) -> int:
    acc = x
    for index in range(1, 6):
        acc = work(x, index, acc)
    return acc


def expected(x: int) -> int:
    """The result ``five(x)`` returns."""
    acc = x
    for index in range(1, 6):
        acc = acc * 3 + index
    return acc


def make_engine() -> fluxo.Engine:
    """The engine each worker process loads, on the store the test hands over."""
    return fluxo.Engine(os.environ["FLUXO_STORM_URL"], workflows=[five])


class Audit:
    """What a kill storm left behind, read from the store and the ledger."""

    def __init__(self, engine: fluxo.Engine, inputs: dict[str, int], workdir: Path) -> None:
        self.runs = len(inputs)
        self.not_completed: list[str] = []
        """Runs that did not end ``completed`` with the right result (lost or wrong)."""
        self.bad_histories: list[str] = []
        """Runs whose history is not start, five steps, one end: a position recorded twice."""
        self.leases_left: list[str] = []
        self.executions = 0
        """Step executions in the ledger, including those a kill cut short."""
        self.reexecutions = 0
        """Executions beyond one per step of each run (at-least-once steps, after a kill)."""
        self.missing_steps = 0
        """Recorded steps the ledger never saw run (would mean a record without its work)."""
        counts: dict[tuple[int, str], int] = {}
        ledger = workdir / "ledger.txt"
        for line in ledger.read_text().splitlines() if ledger.exists() else ():
            x, _, step = line.partition(" ")
            counts[int(x), step] = counts.get((int(x), step), 0) + 1
        self.executions = sum(counts.values())
        expected_kinds = ["workflow_started", *["step_completed"] * 5, "workflow_completed"]
        for run_id, x in inputs.items():
            state = engine.store.load(run_id)
            kinds = [e.kind for e in state.events]
            if kinds != expected_kinds:
                self.bad_histories.append(run_id)
            if state.run.lease_owner is not None:
                self.leases_left.append(run_id)
            ok = state.run.status is fluxo.RunStatus.COMPLETED
            if ok:
                ok = engine.codec.decode(state.events[-1].data or b"null", int) == expected(x)
            if not ok:
                self.not_completed.append(run_id)
            for index in range(1, 6):
                seen = counts.get((x, f"step{index}"), 0)
                if seen == 0:
                    self.missing_steps += 1
                self.reexecutions += max(seen - 1, 0)

    @property
    def clean(self) -> bool:
        """Every run completed once, no position twice, no lease left, no step unseen."""
        return not (
            self.not_completed or self.bad_histories or self.leases_left or self.missing_steps
        )

    def summary(self) -> str:
        """One line for a log or a report."""
        return (
            f"{self.runs} runs: {len(self.not_completed)} not completed, "
            f"{len(self.bad_histories)} histories with a position recorded twice or missing, "
            f"{len(self.leases_left)} leases left; {self.executions} step executions, "
            f"{self.reexecutions} re-executions, {self.missing_steps} recorded steps never run"
        )
