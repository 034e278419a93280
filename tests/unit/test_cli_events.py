"""``fluxo runs event``: a run's events from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

import fluxo
from fluxo import cli


@fluxo.workflow(name="cli_events.count")
def count(n: int) -> int:
    for i in range(1, n + 1):
        fluxo.set_event("progress", {"done": i})
    return n


@fluxo.workflow(name="cli_events.waits")
def waits() -> None:
    fluxo.wait_for_signal("never")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli, list(args), env={"FLUXO_STORE_URL": None, "FLUXO_APP": None}
    )
    return result.exit_code, result.output


def test_runs_event_prints_the_latest_value_and_watch_prints_each(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    with fluxo.Engine(url, workflows=[count]) as engine:
        engine.run(count.options(id="c1"), 3)
    code, out = invoke("runs", "event", "c1", "progress", "--store", url)
    assert (code, json.loads(out)) == (0, {"done": 3})
    code, out = invoke("runs", "event", "c1", "progress", "--watch", "--store", url)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [{"done": i} for i in (1, 2, 3)]


def test_runs_event_says_why_there_is_no_value(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    with fluxo.Engine(url, workflows=[count, waits]) as engine:
        engine.run(count.options(id="c2"), 1)
        engine.start(waits.options(id="w1"))
    code, out = invoke("runs", "event", "c2", "total", "--store", url)
    assert code == 1
    assert "ended without setting event 'total'" in out
    code, out = invoke("runs", "event", "w1", "total", "--timeout", "0.05", "--store", url)
    assert code == 1
    assert "set no new value of event 'total' in the time given (it is pending)" in out
    code, out = invoke("runs", "event", "w1", "total", "--timeout", "-1", "--store", url)
    assert code == 2
    assert "-1" in out
    code, out = invoke("runs", "event", "nobody", "total", "--store", url)
    assert code == 1
    assert "nobody" in out
