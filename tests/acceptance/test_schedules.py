"""An every-second schedule under three real ``fluxo worker`` processes, stopped and restarted.

Each tick starts one run (ids are made of the tick, so a duplicate cannot exist:
what is checked is that none is missing where none may be). All workers are
then stopped for five seconds: on restart, ``catch_up="all"`` starts every tick
of the outage, and ``catch_up="latest"`` only the most recent one. On SQLite,
PostgreSQL and Redis.
"""

from __future__ import annotations

import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

import fluxo
from tests.acceptance import _crash, scheduleapp
from tests.acceptance.conftest import POSTGRES, SQLITE, _url

APP = "tests.acceptance.scheduleapp:make_engine"


def _ticks(engine: fluxo.Engine, wf: fluxo.Workflow[str, str]) -> list[int]:
    """The ticks (whole seconds since the epoch) whose runs exist, each checked, sorted."""
    found = []
    for run in engine.list_runs(workflow=wf, limit=1000):
        name, _, when = run.id.partition("@")
        assert name == wf.name
        tick = datetime.strptime(when, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert run.parent == f"fluxo.schedule:{wf.name}"
        assert run.created_at >= tick.timestamp()  # never started before its time
        found.append(int(tick.timestamp()))
    assert len(found) == len(set(found))
    return sorted(found)


def _workers(url: str, tmp_path: Path) -> list[subprocess.Popen[bytes]]:
    return [_crash.worker(url, tmp_path, APP) for _ in range(3)]


@pytest.fixture(params=[SQLITE, POSTGRES, pytest.param("redis", marks=pytest.mark.redis)])
def schedule_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, PostgreSQL and Redis (whose claims and timers are scripts of their own)."""
    return _url(request.param, request, tmp_path)


def test_three_workers_start_one_run_per_tick_and_catch_up_after_an_outage(
    schedule_store_url: str, tmp_path: Path
) -> None:
    url = schedule_store_url
    engine = fluxo.Engine(url, workflows=[scheduleapp.beat_all, scheduleapp.beat_latest])
    workers = _workers(url, tmp_path)
    try:
        _crash.wait(
            lambda: len(_ticks(engine, scheduleapp.beat_all)) >= 10,
            30,
            "ten ticks",
            ignoring=(fluxo.FluxoError,),  # the workers create the tables
        )
    finally:
        for worker in workers:
            _crash.stop(worker)
    stopped = time.time()
    time.sleep(5)
    restarted = time.time()
    workers = _workers(url, tmp_path)
    try:
        _crash.wait(
            lambda: (_ticks(engine, scheduleapp.beat_latest) or [0])[-1] >= restarted + 2,
            30,
            "ticks after the restart",
        )
    finally:
        for worker in workers:
            _crash.stop(worker)

    every = _ticks(engine, scheduleapp.beat_all)
    assert every == list(range(every[0], every[-1] + 1))  # not one missing, outage included
    assert every[0] < stopped - 5
    assert every[-1] > restarted

    latest = _ticks(engine, scheduleapp.beat_latest)
    outage = [t for t in latest if stopped + 1 < t < restarted - 1]
    assert outage == []  # the missed ticks collapsed into the one at the restart
    before = [t for t in latest if t <= stopped]
    after = [t for t in latest if t >= restarted - 1]
    assert len(before) >= 9
    assert after
    assert before + after == latest

    for wf in (scheduleapp.beat_all, scheduleapp.beat_latest):
        runs = engine.list_runs(workflow=wf, limit=1000)
        assert {run.status.value for run in runs} == {"completed"}
        loops = engine.list_runs(workflow=wf.scheduler)  # type: ignore[arg-type]
        assert sum(not run.status.is_terminal for run in loops) == 1
    engine.close()
