"""Kill -9 a real worker process in the middle of an ``async def`` workflow, on every store.

The same scenarios as ``test_crash.py``, with async workflows and steps: a worker
killed inside step 3 (after steps 1 and 2 committed), one killed during a
durable sleep, one killed inside one branch of a ``map_async`` fan-out after
the others committed, and one killed inside an async child's step. Another
worker finishes each run; no committed step or branch runs again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import fluxo
from tests.acceptance import _crash, _ledger, asynccrashapp

APP = "tests.acceptance.asynccrashapp:make_engine"


def test_sigkill_inside_an_async_step_resumes_without_repeating(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[asynccrashapp.five_steps])
    run_id = f"async-crash-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(asynccrashapp.five_steps.options(id=run_id), 4)

    first = _crash.worker(store_url, tmp_path, APP)
    try:
        _crash.wait(
            lambda: _crash.completed_steps(engine, run_id) == ["step1", "step2"], 30, "step 2"
        )
        _crash.wait(lambda: _ledger.read(tmp_path).count("step3") == 1, 30, "step 3")
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    assert engine.get_run(run_id).status is fluxo.RunStatus.RUNNING

    (tmp_path / "release-step3").touch()
    second = _crash.worker(store_url, tmp_path, APP)
    try:
        assert handle.result(timeout=60) == "done:130"  # ((4+1)*2+3)*10
    finally:
        _crash.stop(second)

    ledger = _ledger.read(tmp_path)
    assert ledger.count("step1") == 1  # committed before the kill: never again
    assert ledger.count("step2") == 1
    assert ledger.count("step3") == 2  # running when the worker died: at least once
    assert ledger.count("step4") == 1
    assert ledger.count("step5") == 1
    assert [e.kind for e in engine.history(run_id)] == [
        "workflow_started",
        *["step_completed"] * 5,
        "workflow_completed",
    ]
    engine.close()


def test_sigkill_during_an_async_sleep_resumes_on_a_later_worker(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[asynccrashapp.nap])
    handle = engine.start(asynccrashapp.nap)
    first = _crash.worker(store_url, tmp_path, APP)
    try:
        _crash.wait(
            lambda: any(e.kind == "timer_started" for e in engine.history(handle.id)),
            30,
            "the timer",
        )
    finally:
        _crash.kill(first)
    second = _crash.worker(store_url, tmp_path, APP)
    try:
        after = handle.result(timeout=60)
    finally:
        _crash.stop(second)
    assert after >= _crash.fire_time(engine, handle.id)  # never early
    ledger = (tmp_path / "ledger.txt").read_text().splitlines()
    assert [line.split()[0] for line in ledger] == ["before", "after"]  # no step ran twice
    engine.close()


def test_sigkill_inside_one_branch_of_an_async_fan_out_reruns_that_branch_only(
    store_url: str, tmp_path: Path
) -> None:
    engine = fluxo.Engine(store_url, workflows=[asynccrashapp.fan_out])
    handle = engine.start(asynccrashapp.fan_out, 4)

    def committed() -> int:
        return sum(e.kind == "branch_completed" for e in engine.history(handle.id))

    first = _crash.worker(store_url, tmp_path, APP)
    try:
        _crash.wait(lambda: committed() == 3, 30, "three branches to commit")
        _crash.wait(lambda: "square2" in _ledger.read(tmp_path), 30, "branch 2 to start")
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    (tmp_path / "release-square2").touch()
    second = _crash.worker(store_url, tmp_path, APP)
    try:
        assert handle.result(timeout=60) == 0 + 1 + 4 + 9
    finally:
        _crash.stop(second)

    ledger = _ledger.read(tmp_path)
    assert [ledger.count(f"square{i}") for i in range(4)] == [1, 1, 2, 1]
    branches = [e.name for e in engine.history(handle.id) if e.kind == "branch_completed"]
    assert sorted(branches) == [f"asynccrash.square#{i}" for i in range(4)]  # each once
    engine.close()


def test_sigkill_inside_an_async_childs_step_resumes_the_child_and_its_parent(
    store_url: str, tmp_path: Path
) -> None:
    workflows = [asynccrashapp.order, asynccrashapp.shipment]
    engine = fluxo.Engine(store_url, workflows=workflows)
    run_id = f"async-order-{os.getpid()}-{time.monotonic_ns()}"
    handle = engine.start(asynccrashapp.order.options(id=run_id), "mug")

    first = _crash.worker(store_url, tmp_path, APP)
    try:
        _crash.wait(lambda: "pack" in _ledger.read(tmp_path), 30, "the child to start packing")
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL
    children = [e.name for e in engine.history(run_id) if e.kind == "child_started"]
    assert len(children) == 1
    assert engine.get_run(children[0]).parent == run_id
    (tmp_path / "release-pack").touch()
    second = _crash.worker(store_url, tmp_path, APP)
    try:
        assert handle.result(timeout=60) == "box(mug):4"
    finally:
        _crash.stop(second)

    ledger = _ledger.read(tmp_path)
    assert ledger.count("step1") == 1  # the parent's step never ran again
    assert ledger.count("pack") == 2  # running when its worker died: at least once
    assert [e.kind for e in engine.history(children[0])] == [
        "workflow_started",
        "step_completed",
        "workflow_completed",
    ]
    assert [e.kind for e in engine.history(run_id)] == [
        "workflow_started",
        "step_completed",
        "child_started",
        "child_completed",
        "workflow_completed",
    ]
    engine.close()
