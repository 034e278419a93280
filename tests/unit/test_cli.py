"""The ``fluxo`` command line, driven through click's runner (the real executable runs in
tests/acceptance)."""

from __future__ import annotations

import importlib.metadata
import json
import math
import socket
import sys
import types
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import fluxo
from fluxo import _cli_format as fmt
from fluxo import _executor, cli, history
from fluxo.stores import memory
from tests.unit import workflows

from .helpers import T0, FakeClock, execute

engine = fluxo.Engine("memory://", workflows=[workflows.checkout])


def make() -> fluxo.Engine:
    return engine


not_an_engine = 42

async_engine = fluxo.AsyncEngine(engine)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli,
        list(args),
        catch_exceptions=False,
        env={"FLUXO_STORE_URL": None, "FLUXO_APP": None},
    )
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, out = invoke("--help")
    assert code == 0
    assert "worker" in out
    assert "db" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "must look like 'module:attribute'"),
        ("tests.unit.nowhere:engine", "cannot import 'tests.unit.nowhere'"),
        ("tests.unit.test_cli:missing", "has no attribute 'missing'"),
        ("tests.unit.test_cli:not_an_engine", "is int, not a fluxo.Engine"),
        ("tests.unit.test_cli:timed", "is a workflow, not a fluxo.Engine; point APP at the"),
        ("tests.unit.test_cli:tick", "is a step, not a fluxo.Engine"),
    ],
)
def test_load_engine_explains_a_bad_app(spec: str, message: str) -> None:
    with pytest.raises(cli._CLIError, match=message):
        cli.load_engine(spec)


def test_load_engine_takes_an_engine_or_a_factory() -> None:
    assert cli.load_engine("tests.unit.test_cli:engine") is engine
    assert cli.load_engine("tests.unit.test_cli:make") is engine


def test_load_engine_takes_an_async_apps_engine() -> None:
    assert cli.load_engine("tests.unit.test_cli:async_engine") is engine


def test_worker_reports_a_bad_app_in_one_line() -> None:
    code, out = invoke("worker", "tests.unit.nowhere:engine")
    assert code != 0
    assert "cannot import" in out
    assert "Traceback" not in out


def test_db_upgrade_current_and_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    code, out = invoke("db", "current", "--url", url)
    assert code == 0
    assert "empty" in out
    code, out = invoke("db", "check", "--url", url)
    assert code != 0
    assert "fluxo db upgrade" in out
    code, out = invoke("db", "upgrade", "--url", url)
    assert code == 0, out
    assert "schema is at" in out
    code, out = invoke("db", "check", "--url", url)
    assert code == 0, out
    assert "up to date" in out


def test_an_unexpected_error_prints_its_traceback_with_passwords_masked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "redis://:S3cretPw@127.0.0.1:1/0"

    def broken(url: str, *, auto_migrate: bool = True) -> object:
        raise AttributeError(f"a driver's bug, quoting {url} and S3cretPw")

    monkeypatch.setattr(fluxo.stores, "open_store", broken)
    with pytest.raises(SystemExit) as exited:
        cli.main(["runs", "list", "--store", url])

    output = "".join(capsys.readouterr())
    assert exited.value.code == 1
    assert "Traceback" in output
    assert "Error: unexpected AttributeError: a driver's bug" in output
    assert "S3cretPw" not in output


def test_db_check_of_a_database_without_fluxo_says_so_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/typo.db"

    code, out = invoke("db", "check", "--url", url)

    assert code == 1
    assert out.strip() == f"Error: no Fluxo schema at {url}; run `fluxo db upgrade`"
    assert not (tmp_path / "typo.db").exists()


def test_db_check_lists_the_differences_one_per_line(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path}/old.db"
    invoke("db", "upgrade", "--url", url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE fluxo_signals")
    engine.dispose()

    result = CliRunner().invoke(
        cli.cli, ["db", "check", "--url", url], env={"FLUXO_STORE_URL": None}
    )

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert "  table fluxo_signals is missing" in lines
    assert "Table(" not in result.output
    assert len(result.output) < 600
    assert f"the schema at {url} is not this Fluxo's" in lines[-1]


def test_db_commands_read_the_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    result = CliRunner().invoke(cli.cli, ["db", "upgrade"], env={"FLUXO_STORE_URL": url})
    assert result.exit_code == 0, result.output


# -- parsing and formatting helpers --------------------------------------------------------

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("90s", 90),
        ("30m", 30 * 60),
        ("2h", 2 * 3600),
        ("1.5h", 5400),
        ("7d", 7 * 86400),
        ("1w", 7 * 86400),
        ("2H", 7200),
        (" 0m ", 0),
    ],
)
def test_parse_time_reads_an_age(text: str, ago: float) -> None:
    assert fmt.parse_time(text, NOW) == NOW - ago


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-25", datetime(2026, 11, 25, tzinfo=timezone.utc)),
        ("2026-11-25T10:30:00Z", datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)),
        ("2026-11-25T10:30:00z", datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)),
        ("2026-11-25T10:30", datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)),  # UTC
        ("2026-11-25T11:30:00+01:00", datetime(2026, 11, 25, 10, 30, tzinfo=timezone.utc)),
        (
            "2026-11-25T10:30:00.250Z",
            datetime(2026, 11, 25, 10, 30, 0, 250000, tzinfo=timezone.utc),
        ),
    ],
)
def test_parse_time_reads_iso_8601(text: str, expected: datetime) -> None:
    assert fmt.parse_time(text, NOW) == expected.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "", "5x", "-2h", "2 hours", "2026-13-01", "h"])
def test_parse_time_explains_a_bad_value(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time; give an ISO-8601 time .* 30m, 2h or 7d"):
        fmt.parse_time(text, NOW)


def test_iso_is_utc_with_a_z() -> None:
    assert fmt.iso(T0) == "2023-11-14T22:13:20Z"
    assert fmt.iso(T0 + 0.25, precise=True) == "2023-11-14T22:13:20.250Z"
    assert fmt.iso(None) is None
    assert fmt.iso_short("2023-11-14T22:13:20.250Z") == "2023-11-14T22:13:20Z"
    assert fmt.iso_short(None) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.000s"),
        (0.0524, "0.052s"),
        (59.9994, "59.999s"),
        (247, "4m07s"),
        (3 * 3600 + 125, "3h02m"),
        (2 * 86400 + 5 * 3600 + 59, "2d05h"),
        (-1.5, "-1.500s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert fmt.format_duration(seconds) == text


def test_format_table_aligns_columns() -> None:
    table = fmt.format_table(["ID", "STATUS"], [["a-long-id", "ok"], ["b", ""]], indent="  ")
    assert table.splitlines() == ["  ID         STATUS", "  a-long-id  ok", "  b"]


def test_parse_payload() -> None:
    assert fmt.parse_payload(None) is None
    assert fmt.parse_payload("  ") is None
    assert fmt.parse_payload('{"ok": true, "n": [1, 2]}') == {"ok": True, "n": [1, 2]}
    assert fmt.parse_payload('"yes"') == "yes"
    with pytest.raises(ValueError, match=r"not valid JSON \(Expecting value at line 1 column 1\)"):
        fmt.parse_payload("yes")


def test_one_line_and_where_verbose_counts() -> None:
    assert fmt.one_line("first\n  second\n\n third ") == "first second third"
    assert cli._wants_traceback(["-v", "runs", "list"])
    assert cli._wants_traceback(["--verbose", "runs", "list"])
    assert not cli._wants_traceback(["runs", "list", "-v"])  # no such option there
    assert not cli._wants_traceback([])


# -- runs commands on an in-memory app -----------------------------------------------------

CLOCK = FakeClock()
STORE = memory.MemoryStore()
APP = "tests.unit.test_cli:memory_app"


@fluxo.step
def tick(seconds: float) -> float:
    CLOCK.advance(seconds)
    return seconds


@fluxo.workflow
def timed(first: float, second: float) -> float:
    return tick(first) + tick(second)


@fluxo.workflow
def waits() -> str:
    word: str = fluxo.wait_for_signal("go", type=str)
    return word


@fluxo.workflow
def delegates() -> str:
    """Waits for its child, a run of ``waits``."""
    return waits()


def memory_app() -> fluxo.Engine:
    return fluxo.Engine(STORE, workflows=[timed, waits, delegates], clock=CLOCK)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[fluxo.Engine]:
    """A fresh store and clock behind ``memory_app``, with a run of ``timed`` done."""
    monkeypatch.setattr(sys.modules[__name__], "STORE", memory.MemoryStore())
    monkeypatch.setattr(sys.modules[__name__], "CLOCK", FakeClock())
    engine = memory_app()
    engine.run(timed.options(id="t1"), 1.5, 0.25)
    yield engine
    engine.close()
    STORE.close()


def test_describe_run_times_each_event(app: fluxo.Engine) -> None:
    doc = fmt.describe_run(app.store.load("t1"), app.codec)
    assert doc["status"] == "completed"
    assert doc["input"] == {"first": 1.5, "second": 0.25}
    assert doc["result"] == 1.75
    assert doc["started_at"] == "2023-11-14T22:13:20.000Z"
    timeline = [(e["kind"], e["offset"], e["duration"], e["data"]) for e in doc["timeline"]]
    assert timeline == [
        ("workflow_started", 0.0, None, {"first": 1.5, "second": 0.25}),
        ("step_completed", 1.5, 1.5, 1.5),
        ("step_completed", 1.75, 0.25, 0.25),
        ("workflow_completed", 1.75, 0.0, 1.75),
    ]


def test_describe_run_without_event_times(app: fluxo.Engine) -> None:
    state = app.store.load("t1")
    untimed = history.RunState(state.run, state.events, state.signals, ())
    doc = fmt.describe_run(untimed, app.codec)
    assert doc["started_at"] is None
    assert all(e["offset"] is None and e["duration"] is None for e in doc["timeline"])
    text = fmt.render_run(doc)
    assert "history (4 events)" in text
    first = next(line.split() for line in text.splitlines() if line.startswith("  0 "))
    assert first[:2] == ["0", "workflow_started"]  # no times: blank AT and TOOK columns


def test_runs_show_renders_the_timeline(app: fluxo.Engine) -> None:
    code, out = invoke("runs", "show", "t1", "--app", APP)
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:5] == [
        "run       t1",
        "workflow  tests.unit.test_cli.timed",
        "status    completed",
        "created   2023-11-14T22:13:20Z",
        "updated   2023-11-14T22:13:21Z",
    ]
    assert 'input     {"first": 1.5, "second": 0.25}' in lines
    assert "result    1.75" in lines
    assert "history (4 events, from 2023-11-14T22:13:20.000Z)" in lines
    steps = [line.split() for line in lines if "step_completed" in line]
    assert [s[:3] for s in steps] == [["1", "+1.500s", "1.500s"], ["2", "+1.750s", "0.250s"]]


def test_runs_show_a_waiting_run_and_its_pending_signal(app: fluxo.Engine) -> None:
    app.start(waits.options(id="w1"))
    app.worker().process_one()
    app.signal("w1", "go", "now")
    app.cancel("w1")
    code, out = invoke("runs", "show", "w1", "--app", APP)
    assert code == 0, out
    assert "status    pending" in out
    assert 'signal    go "now" (sent 2023-11-14T22:13:21Z, not yet received)' in out
    assert "cancel    requested; the run stops at its next durable call" in out
    code, out = invoke("runs", "show", "w1", "--app", APP, "--json")
    doc = json.loads(out)
    assert doc["pending_signals"] == [
        {"name": "go", "payload": "now", "sent_at": "2023-11-14T22:13:21.750Z"}
    ]


def test_runs_list_table(app: fluxo.Engine) -> None:
    app.start(waits.options(id="w1"))
    code, out = invoke("runs", "list", "--app", APP)
    assert code == 0, out
    assert out.splitlines() == [
        "ID  WORKFLOW                   STATUS     CREATED               UPDATED",
        "w1  tests.unit.test_cli.waits  pending    2023-11-14T22:13:21Z  2023-11-14T22:13:21Z",
        "t1  tests.unit.test_cli.timed  completed  2023-11-14T22:13:20Z  2023-11-14T22:13:21Z",
    ]


def test_runs_show_a_parent_waiting_for_its_child_and_the_child(app: fluxo.Engine) -> None:
    app.start(delegates.options(id="p1"))
    app.worker().process_one()
    assert app.get_run("p1~child-1").status is fluxo.RunStatus.WAITING
    code, out = invoke("runs", "show", "p1", "--app", APP)
    assert code == 0, out
    assert "status    waiting" in out
    assert "waiting   for child run 'p1~child-1'" in out
    assert "children (1 started)" in out
    assert "  1    p1~child-1  tests.unit.test_cli.waits  no outcome yet" in out
    started = next(line.split() for line in out.splitlines() if "child_started" in line)
    assert started[-3:] == ["child_started", "p1~child-1", waits.name]
    code, out = invoke("runs", "show", "p1~child-1", "--app", APP)
    assert code == 0, out
    assert out.splitlines()[:4] == [
        "run       p1~child-1",
        "workflow  tests.unit.test_cli.waits",
        "parent    p1",
        "status    waiting",
    ]
    assert "waiting   for signal 'go'" in out
    assert "children" not in out


def test_runs_show_a_child_outcome_not_yet_taken_then_taken(app: fluxo.Engine) -> None:
    app.start(delegates.options(id="p1"))
    app.worker().process_one()
    app.signal("p1~child-1", "go", "now")
    execute(app, "p1~child-1")  # the child only: the parent has not taken its outcome yet
    code, out = invoke("runs", "show", "p1", "--app", APP)
    assert code == 0, out
    assert (
        'signal    fluxo:child:p1~child-1 {"kind": "completed", "data": "now"} '
        "(sent 2023-11-14T22:13:21Z, not yet received)"
    ) in out
    app.worker().process_one()
    code, out = invoke("runs", "show", "p1", "--app", APP)
    assert code == 0, out
    assert 'result    "now"' in out
    assert "not yet received" not in out  # taken, as child_completed records
    assert '  1    p1~child-1  tests.unit.test_cli.waits  completed: "now"' in out
    code, out = invoke("runs", "show", "p1", "--app", APP, "--json")
    doc = json.loads(out)
    assert doc["parent"] is None
    assert doc["pending_signals"] == []
    assert doc["children"] == [
        {
            "id": "p1~child-1",
            "workflow": waits.name,
            "detached": False,
            "seq": 1,
            "awaited": True,
            "outcome": "completed",
            "data": "now",
        }
    ]
    code, out = invoke("runs", "show", "p1~child-1", "--app", APP, "--json")
    assert json.loads(out)["parent"] == "p1"


def test_runs_history_of_a_parent_and_its_child(app: fluxo.Engine) -> None:
    app.start(delegates.options(id="p1"))
    app.worker().process_one()
    app.signal("p1~child-1", "go", "now")
    app.worker().process_one()
    code, out = invoke("runs", "history", "p1", "--app", APP, "--readable")
    assert code == 0, out
    document = json.loads(out)
    assert document["run"]["parent"] is None
    assert [(e["kind"], e.get("value")) for e in document["events"]] == [
        ("workflow_started", {}),
        ("child_started", {"workflow": waits.name}),
        ("child_completed", "now"),
        ("workflow_completed", "now"),
    ]
    assert [(s["name"], s["value"]) for s in document["signals"]] == [
        ("fluxo:child:p1~child-1", {"kind": "completed", "data": "now"})
    ]
    code, out = invoke("runs", "history", "p1~child-1", "--app", APP)
    assert code == 0, out
    assert json.loads(out)["run"]["parent"] == "p1"


def test_runs_history_output_makes_its_folders(app: fluxo.Engine, tmp_path: Path) -> None:
    app.start(delegates.options(id="p1"))
    target = tmp_path / "new" / "deeper" / "p1.json"
    code, out = invoke("runs", "history", "p1", "--app", APP, "-o", str(target))
    assert code == 0, out
    assert out == ""
    assert json.loads(target.read_text())["run"]["id"] == "p1"


def test_runs_history_output_that_cannot_be_written_says_so(
    app: fluxo.Engine, tmp_path: Path
) -> None:
    app.start(delegates.options(id="p1"))
    (tmp_path / "file").write_text("")
    code, out = invoke("runs", "history", "p1", "--app", APP, "-o", str(tmp_path / "file" / "x"))
    assert code == 1
    assert f"cannot write {tmp_path / 'file' / 'x'}" in out


def test_version_is_the_installed_packages() -> None:
    code, out = invoke("--version")
    assert code == 0
    assert out == f"fluxo {importlib.metadata.version('fluxo')}\n"
    assert importlib.metadata.version("fluxo") == fluxo.__version__


def _child_start(
    workflow: str, *, detached: bool = False, error: _executor.ErrorInfo | None = None
) -> bytes:
    return fluxo.JSONCodec().encode(_executor.ChildStart(workflow, detached, error))


def test_describe_and_render_every_child_event() -> None:
    codec = fluxo.JSONCodec()
    refusal = _executor.ErrorInfo("fluxo._errors.RunStateError", "id taken")
    failure = _executor.ErrorInfo("builtins.ValueError", "bad input\nsecond line")
    events = (
        history.WorkflowStarted("fam", codec.encode({"n": 1})),
        history.ChildStarted("fam~child-1", _child_start("kid")),
        history.ChildFailed("fam~child-1", codec.encode(failure)),
        history.ChildStarted("taken", _child_start("kid", error=refusal)),
        history.ChildStarted("fam~child-4", _child_start("kid", detached=True)),
        history.ChildCancelled("fam~child-4", codec.encode("deadline")),
        history.ChildStarted("fam~child-6", _child_start("kid")),
        history.ChildStarted("fam~child-7", _child_start("kid", detached=True)),
    )
    run = history.RunInfo("fam", "family", history.RunStatus.WAITING, T0, T0, parent="root")
    doc = fmt.describe_run(history.RunState(run, events), codec)
    assert doc["parent"] == "root"
    assert [(c["id"], c["awaited"], c["outcome"], c["detached"]) for c in doc["children"]] == [
        ("fam~child-1", True, "failed", False),
        ("taken", False, "refused", False),
        ("fam~child-4", True, "cancelled", True),
        ("fam~child-6", False, None, False),
        ("fam~child-7", False, None, True),
    ]
    text = fmt.render_run(doc)
    assert "parent    root" in text
    assert "waiting   for one of its child runs 'fam~child-6' or 'fam~child-7'" in text
    table = text.split("children (5 started)\n")[1].splitlines()
    rows = [line.split(None, 3)[1:] for line in table]
    assert rows[1:6] == [
        ["fam~child-1", "kid", "failed: builtins.ValueError: bad input second line"],
        ["taken", "kid", "refused: fluxo.RunStateError: id taken"],
        ["fam~child-4", "kid", "cancelled passed its deadline (detached)"],
        ["fam~child-6", "kid", "no outcome yet"],
        ["fam~child-7", "kid", "no outcome yet (detached)"],
    ]
    details = {(entry["kind"], entry["name"]): fmt._detail(entry) for entry in doc["timeline"][1:]}
    assert details == {
        ("child_started", "fam~child-1"): "kid",
        ("child_failed", "fam~child-1"): "builtins.ValueError: bad input second line",
        ("child_started", "taken"): "kid, refused: fluxo.RunStateError: id taken",
        ("child_started", "fam~child-4"): "kid, detached",
        ("child_cancelled", "fam~child-4"): "passed its deadline",
        ("child_started", "fam~child-6"): "kid",
        ("child_started", "fam~child-7"): "kid, detached",
    }


def test_runs_list_shows_parents_when_a_run_has_one(app: fluxo.Engine) -> None:
    app.start(delegates.options(id="p1"))
    app.worker().process_one()
    code, out = invoke("runs", "list", "--app", APP)
    assert code == 0, out
    assert [line.rstrip() for line in out.splitlines()] == [
        "ID          WORKFLOW                       STATUS     CREATED               UPDATED"
        "               PARENT",
        "p1          tests.unit.test_cli.delegates  waiting    2023-11-14T22:13:21Z"
        "  2023-11-14T22:13:21Z",
        "p1~child-1  tests.unit.test_cli.waits      waiting    2023-11-14T22:13:21Z"
        "  2023-11-14T22:13:21Z  p1",
        "t1          tests.unit.test_cli.timed      completed  2023-11-14T22:13:20Z"
        "  2023-11-14T22:13:21Z",
    ]


def test_runs_list_says_when_the_limit_hides_runs(app: fluxo.Engine) -> None:
    code, out = invoke("runs", "list", "--app", APP, "--limit", "1")
    assert code == 0, out
    assert "--limit" not in out  # the one run there is, shown
    app.start(waits.options(id="w1"))
    code, out = invoke("runs", "list", "--app", APP, "--limit", "1", "--json")
    assert code == 0, out
    assert "(the newest 1 shown; pass --limit for more)" in out
    assert [run["id"] for run in json.loads(out.split("(the newest")[0])] == ["w1"]


def test_runs_list_by_id_prefix(app: fluxo.Engine) -> None:
    for run_id in ("order-1", "order-2", "Order-3", "order_4", "100%_off"):
        CLOCK.advance(1)
        app.start(waits.options(id=run_id))
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "order-")
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()] == ["ID", "order-2", "order-1"]
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "order", "--json")
    assert code == 0, out
    assert [run["id"] for run in json.loads(out)] == ["order_4", "order-2", "order-1"]
    code, out = invoke(
        "runs", "list", "--app", APP, "--id-prefix", "order", "--status", "pending", "--limit", "1"
    )
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()[:2]] == ["ID", "order_4"]
    assert "(the newest 1 shown; pass --limit for more)" in out
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "100%_", "--json")
    assert [run["id"] for run in json.loads(out)] == ["100%_off"]
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "%", "-w", waits.name)
    assert (code, out) == (0, "no runs match\n")
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "")
    assert code == 0, out
    assert len(out.splitlines()) == 7  # the header and every run


def test_runs_list_refuses_an_id_prefix_no_run_id_starts_with(app: fluxo.Engine) -> None:
    code, out = invoke("runs", "list", "--app", APP, "--id-prefix", "a\tb")
    assert code == 1
    assert out == (
        "Error: id_prefix 'a\\tb' holds the control character U+0009 at index 1; names and ids "
        "may not contain control characters (such as NUL) or lone surrogates, which stores "
        "cannot hold\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "Invalid value for '--since': 'yesterday' is not a time"),
        (("--until", "5x"), "'5x' is not a time"),
        (("--since", "1h", "--until", "2h"), "is later than --until"),
        (("--status", "sleeping"), "'sleeping' is not one of"),
        (("--limit", "0"), "Invalid value for '--limit'"),
    ],
)
def test_runs_list_rejects_bad_options(
    app: fluxo.Engine, args: tuple[str, ...], message: str
) -> None:
    code, out = invoke("runs", "list", "--app", APP, *args)
    assert code == 2
    assert message in out


def test_runs_commands_need_a_store() -> None:
    code, out = invoke("runs", "list")
    assert code == 2
    assert "no store given: set FLUXO_STORE_URL or pass --store URL" in out


def test_runs_signal_checks_the_payload_before_connecting() -> None:
    code, out = invoke("runs", "signal", "r", "go", "{nope", "--store", "redis://127.0.0.1:1")
    assert code == 2
    assert "Invalid value for PAYLOAD: not valid JSON" in out


def test_worker_rejects_an_unknown_workflow() -> None:
    code, out = invoke("worker", "tests.unit.test_cli:make", "--workflow", "nope")
    assert code == 2
    assert "the app has no workflow named 'nope'; its workflows are " in out


def test_worker_metrics_need_prometheus_client_checked_before_the_app_loads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "fluxo.contrib.prometheus", raising=False)
    code, out = invoke("worker", "tests.unit.nowhere:engine", "--metrics-port", "9464")
    assert code == 1
    assert out.strip().splitlines() == [
        "Error: --metrics-port needs the prometheus_client package; install it with "
        "pip install 'fluxo[prometheus]'"
    ]


def test_worker_metrics_on_a_taken_port_say_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out = invoke("worker", "tests.unit.test_cli:make", "--metrics-port", str(port))
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, out
    assert f"cannot serve metrics on http://127.0.0.1:{port}/metrics: " in lines[0]
    assert "in use" in lines[0]
    assert "pick another --metrics-port" in lines[0]
    assert "Traceback" not in out


class Watching(fluxo.Observer):
    """An app's own observer."""

    inline = True

    def run_started(self, event: fluxo.RunEvent) -> None:
        pass


def make_watched() -> fluxo.Engine:
    return fluxo.Engine("memory://", workflows=[workflows.checkout], observers=[Watching()])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """What ``fluxo worker`` ran, its worker loop replaced by ``during_run``."""

    def __init__(self) -> None:
        self.engines: list[fluxo.Engine] = []
        self.seen: list[Any] = []
        self.during_run: Any = lambda: None


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Served:
    found = Served()

    def worker(engine: fluxo.Engine, **options: Any) -> Any:
        found.engines.append(engine)
        return types.SimpleNamespace(run=lambda: found.seen.append(found.during_run()))

    monkeypatch.setattr(fluxo.Engine, "worker", worker)
    return found


def test_worker_serves_metrics_while_it_runs_and_frees_the_port(served: Served) -> None:
    from fluxo.contrib import prometheus

    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    served.during_run = lambda: httpx.get(url, timeout=5).text
    code, out = invoke("worker", "tests.unit.test_cli:make_watched", "--metrics-port", str(port))
    assert code == 0, out
    assert out.count(f"serving Prometheus metrics at {url}") == 1
    [serving] = served.engines
    assert any(isinstance(o, Watching) for o in serving.observers.observers)
    [text] = served.seen
    assert f'fluxo_runs{{status="pending",workflow="{workflows.checkout.name}"}} 0.0' in text
    assert "# TYPE fluxo_step_attempts_total counter" in text
    # Once the worker stopped, its port and the default registry's names are free again.
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        again.bind(("127.0.0.1", port))
    prometheus.PrometheusObserver().unregister()


def test_worker_of_chosen_workflows_keeps_the_apps_observers(served: Served) -> None:
    name = workflows.checkout.name
    code, out = invoke("worker", "tests.unit.test_cli:make_watched", "--workflow", name)
    assert code == 0, out
    [serving] = served.engines
    assert serving.workflow_names == {name}
    assert any(isinstance(o, Watching) for o in serving.observers.observers)


def test_worker_metrics_on_an_address_of_another_machine_say_so_in_one_line() -> None:
    code, out = invoke(
        "worker",
        "tests.unit.test_cli:make",
        "--metrics-port",
        "9464",
        "--metrics-host",
        "192.0.2.1",
    )
    assert code == 1
    [line] = [line for line in out.splitlines() if line.startswith("Error:")]
    assert line.startswith("Error: cannot serve metrics on http://192.0.2.1:9464/metrics: ")
    assert line.endswith(
        "check --metrics-host (an address of this machine, or 0.0.0.0) and --metrics-port"
    )


def make_counted() -> fluxo.Engine:
    from fluxo.contrib import prometheus

    counted = fluxo.Engine("memory://", workflows=[workflows.checkout])
    counted.add_observer(prometheus.PrometheusObserver(engine=counted))
    return counted


def test_worker_metrics_of_an_app_that_counts_its_runs_already(served: Served) -> None:
    from fluxo.contrib import prometheus

    port = free_port()
    code, out = invoke("worker", "tests.unit.test_cli:make_counted", "--metrics-port", str(port))
    assert code == 0, out
    [serving] = served.engines
    [own] = [o for o in serving.observers.observers if isinstance(o, prometheus.PrometheusObserver)]
    own.unregister()  # it was the app's, left registered: the worker added none


def test_worker_metrics_port_must_be_a_port() -> None:
    code, out = invoke("worker", "tests.unit.test_cli:make", "--metrics-port", "0")
    assert code == 2
    assert "--metrics-port" in out


def test_main_prints_usage_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["runs", "list", "--zzz"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: No such option")  # click words it by version
    assert "--zzz" in err
    assert err.endswith(" (see 'fluxo runs list --help')\n")
    assert err.count("\n") == 1


def test_main_prints_fluxo_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["runs", "show", "x", "--store", "nowhere"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("Error: store URL 'nowhere' is not a URL")
    assert err.count("\n") == 1


# -- Engine.list_runs: the filters behind `fluxo runs list` --------------------------------


def test_list_runs_by_creation_time(make_engine: object, clock: FakeClock) -> None:
    engine = fluxo.Engine("memory://", workflows=[timed], clock=clock)
    for name in ("a", "b", "c"):
        engine.start(timed.options(id=name), 0, 0)
        clock.advance(10)
    ids = lambda **kw: [r.id for r in engine.list_runs(**kw)]  # noqa: E731
    assert ids(created_after=T0 + 10) == ["c", "b"]
    assert ids(created_before=T0 + 10) == ["a"]
    middle = datetime.fromtimestamp(T0 + 10, tz=timezone.utc)
    assert ids(created_after=middle, created_before=middle + timedelta(seconds=10)) == ["b"]
    assert ids(workflow=[timed, "other"]) == ["c", "b", "a"]
    engine.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"created_after": datetime(2026, 1, 1)}, "naive datetime"),
        ({"created_before": True}, "an aware datetime or seconds since the epoch"),
        ({"created_after": math.nan}, "an aware datetime or seconds since the epoch"),
        ({"created_after": "2026-01-01"}, "an aware datetime or seconds since the epoch"),
        ({"created_after": 20.0, "created_before": 10.0}, "is later than created_before"),
        ({"workflow": [42]}, "workflow= takes a workflow, a workflow name or a list"),
        ({"limit": True}, "limit must be a positive whole number"),
    ],
)
def test_list_runs_explains_bad_filters(options: dict[str, object], message: str) -> None:
    with (
        fluxo.Engine("memory://", workflows=[timed]) as engine,
        pytest.raises(fluxo.DefinitionError, match=message),
    ):
        engine.list_runs(**options)  # type: ignore[arg-type]


def test_runs_list_and_show_report_damage_in_one_line(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path}/damaged.db"
    store = fluxo.open_store(url)
    for run_id in ("gap", "odd", "fine"):
        store.create_run(run_id, "some.workflow", b"[]", now=T0)
        store.append(run_id, 1, [history.StepCompleted("a", b"1")], now=T0)
    store.close()
    with sqlite3.connect(tmp_path / "damaged.db") as db:
        db.execute("DELETE FROM fluxo_events WHERE run_id = 'gap' AND seq = 0")
        db.execute("UPDATE fluxo_runs SET status = 'exploded' WHERE id = 'odd'")

    code, out = invoke("runs", "list", "--store", url)
    assert code == 0, out
    rows = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:4]}
    assert rows == {"gap": "pending", "odd": "damaged", "fine": "pending"}
    assert "run odd: its stored record is damaged: its stored status 'exploded'" in out
    code, out = invoke("runs", "list", "--store", url, "--json")
    damage = {run["id"]: run["damage"] for run in json.loads(out.split("\nrun odd")[0])}
    assert damage["fine"] is None
    assert "'exploded'" in damage["odd"]

    for run_id, problem in (("gap", "position 0 is missing"), ("odd", "'exploded'")):
        code, out = invoke("runs", "show", run_id, "--store", url)
        assert code == 1
        assert len(out.strip().splitlines()) == 1, out
        assert out.startswith("Error: the stored ")
        assert f"run '{run_id}' is damaged" in out
        assert problem in out
        assert "Traceback" not in out


def test_runs_show_a_skipped_signal(app: fluxo.Engine) -> None:
    app.start(waits.options(id="w1"))
    app.worker().process_one()
    app.signal("w1", "go", {"not": "a string"})
    app.worker().process_one()

    code, out = invoke("runs", "show", "w1", "--app", APP)

    assert code == 0, out
    line = next(line for line in out.splitlines() if "signal_rejected" in line)
    assert "skipped: stored value does not decode as builtins.str" in line
    code, out = invoke("runs", "show", "w1", "--app", APP, "--json")
    rejected = next(e for e in json.loads(out)["timeline"] if e["kind"] == "signal_rejected")
    assert rejected["data"]["payload"] == {"not": "a string"}
    assert json.loads(out)["pending_signals"] == []


def test_a_long_run_id_is_quoted_short() -> None:
    code, out = invoke("runs", "show", "L" * 5000, "--store", "memory://")

    assert code == 1
    assert "'... (5000 characters) in memory://" in out
    assert len(out) < 300


def test_an_app_whose_dependency_is_missing_is_told_so_not_sent_to_pythonpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fluxo import _cli_apps

    (tmp_path / "needs_more.py").write_text("import fluxo_absent_dependency\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(_cli_apps.CLIError) as missing_dependency:
        _cli_apps.load_engine("needs_more:engine")
    assert "fluxo_absent_dependency" in str(missing_dependency.value)
    assert "PYTHONPATH" not in str(missing_dependency.value)
    with pytest.raises(_cli_apps.CLIError, match="PYTHONPATH"):
        _cli_apps.load_engine("not_a_module_here:engine")


def test_runs_fork_prints_the_new_id_and_runs_show_names_the_source(app: fluxo.Engine) -> None:
    code, out = invoke(
        "runs", "fork", "t1", "--from-position", "2", "--id", "t1-again", "--app", APP
    )
    assert code == 0, out
    assert out.strip() == "t1-again"
    assert app.history("t1-again") == app.history("t1")[:2]
    code, out = invoke("runs", "show", "t1-again", "--app", APP)
    assert code == 0, out
    assert "forked    from t1 at position 2" in out.splitlines()
    code, out = invoke("runs", "fork", "t1", "--from-position", "1", "--app", APP)
    assert code == 0, out
    assert app.get_run(out.strip()).headers["fluxo-forked-from"] == "t1"


def test_runs_fork_explains_a_refusal_in_one_line(app: fluxo.Engine) -> None:
    code, out = invoke("runs", "fork", "t1", "--from-position", "4", "--app", APP)
    assert code == 1
    assert out.startswith("Error: run 't1' ended at position 3 (workflow_completed)")
    code, out = invoke("runs", "fork", "t1", "--app", APP)
    assert code == 2
    assert "--from-position" in out


def test_runs_fork_needs_the_app_that_knows_the_workflow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/f.db"
    with fluxo.Engine(url, workflows=[timed], clock=FakeClock()) as engine:
        engine.run(timed.options(id="t1"), 1.0, 2.0)
    code, out = invoke("runs", "fork", "t1", "--from-position", "2", "--store", url)
    assert code == 1
    assert "this engine has no workflow named" in out
    assert "name your app with --app" in out


def test_worker_queue_options_reach_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[Any] = []

    class Ran:
        def run(self) -> None:
            pass

    def worker(self: fluxo.Engine, **kwargs: Any) -> Ran:
        asked.append(kwargs["queues"])
        return Ran()

    monkeypatch.setattr(fluxo.Engine, "worker", worker)
    code, out = invoke("worker", "tests.unit.test_cli:make", "-q", "payments", "--queue", "default")
    assert code == 0, out
    code, out = invoke("worker", "tests.unit.test_cli:make")
    assert code == 0, out
    assert asked == [["payments", "default"], None]


def test_worker_refuses_a_bad_queue_name() -> None:
    code, out = invoke("worker", "tests.unit.test_cli:make", "--queue", "a\x01b")
    assert code == 2
    assert "Invalid value for '--queue'" in out
    assert "control character" in out
