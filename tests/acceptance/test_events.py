"""A page or script in another process reads the progress a workflow sets, value by value.

The workflow runs in a real ``fluxo worker`` process; this process reads its events
through ``engine.get_event`` and ``engine.watch_event`` on the same store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import fluxo
from tests.acceptance import _crash, eventsapp

APP = "tests.acceptance.eventsapp:make_engine"


def _run_id(name: str) -> str:
    return f"{name}-{os.getpid()}-{time.monotonic_ns()}"


def test_each_value_is_seen_in_order_as_the_worker_sets_it(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[eventsapp.report])
    handle = engine.start(eventsapp.report.options(id=_run_id("paced")), 5, True)
    worker = _crash.worker(store_url, tmp_path, APP)
    try:
        values = engine.watch_event(handle.id, "progress", timeout=60)
        for expected in range(1, 6):
            engine.signal(handle.id, "next")  # one part at a time: each value is seen live
            assert next(values) == {"done": expected, "of": 5}
            assert engine.get_event(handle.id, "progress") == {"done": expected, "of": 5}
        assert list(values) == []  # it ends with the run
        assert handle.result(timeout=60) == 55
        assert engine.get_event(handle.id, "total", timeout=0) == 55
    finally:
        _crash.stop(worker)
        engine.close()


def test_values_set_faster_than_they_are_read_are_all_kept(store_url: str, tmp_path: Path) -> None:
    engine = fluxo.Engine(store_url, workflows=[eventsapp.report])
    handle = engine.start(eventsapp.report.options(id=_run_id("fast")), 20, False)
    worker = _crash.worker(store_url, tmp_path, APP)
    try:
        first = engine.get_event(handle.id, "progress", timeout=60)  # waits for the first one
        assert first["of"] == 20
        seen = [value["done"] for value in engine.watch_event(handle.id, "progress", timeout=60)]
        assert seen == list(range(1, 21))
        assert handle.result(timeout=60) == sum(i * i for i in range(1, 21))
    finally:
        _crash.stop(worker)
        engine.close()
