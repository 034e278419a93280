"""``fluxo schedules``: list, pause, resume and trigger, driven through click's runner."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

import fluxo
from fluxo import cli

from .helpers import FakeClock


@fluxo.schedule(every=timedelta(minutes=1))
@fluxo.workflow(name="minutely")
def minutely(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.workflow(name="unscheduled")
def unscheduled() -> None: ...


clock = FakeClock(1_900_000_000.0)
store = fluxo.open_store("memory://")
engine = fluxo.Engine(store, workflows=[minutely, unscheduled], clock=clock)


def app() -> fluxo.Engine:
    """The app the commands load (and close): an engine on the test's store."""
    return fluxo.Engine(store, workflows=[minutely, unscheduled], clock=clock)


def bare() -> fluxo.Engine:
    return fluxo.Engine("memory://", workflows=[unscheduled])


APP = "tests.unit.test_cli_schedules:app"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli, list(args), env={"FLUXO_STORE_URL": None, "FLUXO_APP": None}
    )
    return result.exit_code, result.output


@pytest.fixture(autouse=True)
def _fresh() -> None:
    """One engine for the module: each test cancels and purges what it left."""
    for run in engine.list_runs(limit=1000):
        if not run.status.is_terminal:
            engine.cancel(run.id)
    engine.worker(sticky=0).process_one()  # the cancellations take effect
    clock.advance(1)
    engine.purge(older_than=0)


def test_the_commands_need_the_app() -> None:
    code, out = invoke("schedules", "list", "--store", "memory://")
    assert code == 2
    assert "name your engine with --app or FLUXO_APP" in out


def test_list_shows_each_schedule() -> None:
    code, out = invoke("schedules", "list", "--app", APP)
    assert code == 0, out
    assert out.splitlines()[0].split() == [
        "WORKFLOW",
        "SCHEDULE",
        "STATUS",
        "LAST",
        "TICK",
        "NEXT",
        "TICK",
    ]
    assert out.splitlines()[1].split()[:4] == ["minutely", "every", "1m", "not"]
    engine.worker(sticky=0).process_one()
    code, out = invoke("schedules", "list", "--app", APP, "--json")
    (record,) = json.loads(out)
    assert record["workflow"] == "minutely"
    assert record["every"] == 60
    assert record["status"] == "waiting"
    assert record["paused"] is False
    assert record["run_id"] == "fluxo.schedule:minutely"


def test_an_app_without_schedules_says_so() -> None:
    code, out = invoke("schedules", "list", "--app", "tests.unit.test_cli_schedules:bare")
    assert code == 0
    assert "the app has no schedules" in out


def test_pause_resume_and_trigger() -> None:
    code, out = invoke("schedules", "pause", "minutely", "--app", APP)
    assert code == 0, out
    assert "schedule 'minutely' is asked to pause" in out
    engine.worker(sticky=0).process_one()
    code, out = invoke("schedules", "list", "--app", APP)
    assert " paused " in out
    code, out = invoke("schedules", "trigger", "minutely", "--app", APP)
    assert code == 0
    run_id = out.strip()
    assert run_id.startswith("minutely@trigger-")
    engine.worker(sticky=0).process_one()
    assert engine.get_run(run_id).status.value == "completed"
    code, out = invoke("schedules", "resume", "minutely", "--app", APP)
    assert code == 0
    engine.worker(sticky=0).process_one()
    assert not engine.schedules.get(minutely).paused


def test_an_unknown_schedule_is_an_error_naming_the_known_ones() -> None:
    code, out = invoke("schedules", "pause", "unscheduled", "--app", APP)
    assert code == 1
    assert "no scheduled workflow named 'unscheduled'" in out
    assert "['minutely']" in out
