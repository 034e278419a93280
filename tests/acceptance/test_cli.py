"""The real ``fluxo`` executable, run in subprocesses against real stores.

Every command is driven here on SQLite, error paths included (an unknown run
id, an unreachable store, a bad payload); a representative subset runs on the
server stores too. Runs are made in this process with the workflows of
``cliapp``, then inspected and steered through the command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import fluxo
from tests.acceptance import cliapp

FLUXO = str(Path(sys.executable).with_name("fluxo"))  # the installed console script
ROOT = Path(__file__).parents[2]
APP = "tests.acceptance.cliapp:make_engine"
GREET = "tests.acceptance.cliapp.greet"
UNREACHABLE = {
    "postgres": "postgresql+psycopg://fluxo:s3cret@127.0.0.1:1/fluxo",
    "redis": "redis://:s3cret@127.0.0.1:1/0",
}


def run_cli(
    *args: str,
    url: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``fluxo ARGS`` with FLUXO_STORE_URL set to ``url`` (and no other Fluxo setting)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "CLIAPP_"))}
    if url is not None:
        clean["FLUXO_STORE_URL"] = url
    clean.update(env or {})
    return subprocess.run(
        [FLUXO, *args],
        env=clean,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_many(
    commands: Sequence[Sequence[str]], url: str | None = None, env: dict[str, str] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run independent ``fluxo`` commands side by side (each one is a fresh process)."""
    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(lambda args: run_cli(*args, url=url, env=env), commands))


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0], result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@dataclass
class Runs:
    """One run in each interesting state, on the store at ``url``."""

    url: str
    engine: fluxo.Engine
    done: str
    waiting: str
    failed: str

    def process(self) -> int:
        """Execute in this process whatever is runnable now."""
        return self.engine.worker().process_one()


def make_runs(url: str, monkeypatch: pytest.MonkeyPatch) -> Runs:
    engine = fluxo.Engine(url, workflows=[cliapp.greet, cliapp.approval, cliapp.reorder])
    tag = uuid.uuid4().hex[:6]
    runs = Runs(url, engine, f"greet-{tag}", f"approval-{tag}", f"reorder-{tag}")
    assert engine.run(cliapp.greet.options(id=runs.done), "ana") == "ANA!"
    engine.start(cliapp.approval.options(id=runs.waiting), "o-17")
    runs.process()
    assert engine.get_run(runs.waiting).status is fluxo.RunStatus.WAITING
    with monkeypatch.context() as patch:
        patch.setenv("CLIAPP_OUT_OF_STOCK", "1")
        with pytest.raises(fluxo.WorkflowFailedError):
            engine.run(cliapp.reorder.options(id=runs.failed), "nails")
    return runs


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/cli.db"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Runs for the tests that only read them, shared by the module (made once: faster)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('cli')}/shared.db"
    with pytest.MonkeyPatch.context() as monkeypatch:
        made = make_runs(url, monkeypatch)
    yield made
    made.engine.close()


@pytest.fixture
def fresh_runs(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runs]:
    """Runs of this test's own, for the tests that change them."""
    made = make_runs(sqlite_url, monkeypatch)
    yield made
    made.engine.close()


# -- help ----------------------------------------------------------------------------------


def test_help_shows_the_commands_and_the_environment_variables() -> None:
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    for word in ("worker", "runs", "replay", "db", "FLUXO_APP", "FLUXO_STORE_URL"):
        assert word in top.stdout
    listing = run_cli("runs", "list", "--help")
    assert listing.returncode == 0
    words = " ".join(listing.stdout.split())
    assert "env var: FLUXO_STORE_URL" in words
    assert "env var: FLUXO_APP" in words
    precedence = " ".join(run_cli("runs", "--help").stdout.split())
    assert "An option on the command line wins over its environment variable" in precedence


# -- runs list -----------------------------------------------------------------------------


def test_runs_list_prints_a_table_newest_first(runs: Runs) -> None:
    result = run_cli("runs", "list", url=runs.url)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED"]
    assert [row.split()[0] for row in rows] == [runs.failed, runs.waiting, runs.done]
    assert [row.split()[2] for row in rows] == ["failed", "waiting", "completed"]
    assert all(row.split()[3].endswith("Z") for row in rows)


def test_runs_list_json_has_stable_keys(runs: Runs) -> None:
    result = run_cli("runs", "list", "--json", "--store", runs.url)
    assert result.returncode == 0, result.stderr
    records = json.loads(result.stdout)
    assert [r["id"] for r in records] == [runs.failed, runs.waiting, runs.done]
    assert list(records[0]) == [
        "id",
        "workflow",
        "status",
        "created_at",
        "updated_at",
        "ready_at",
        "deadline",
        "lease_owner",
        "cancel_requested",
        "parent",
        "recoveries",
        "damage",
    ]
    assert records[2]["parent"] is None
    assert records[2]["workflow"] == GREET
    assert records[2]["created_at"].endswith("Z")


def test_runs_list_filters(runs: Runs) -> None:
    filters = [
        ("--status", "failed", "--status", "WAITING"),
        ("--workflow", GREET),
        ("--since", "1h", "--until", "2999-01-01T00:00:00Z"),
        ("--limit", "1"),
    ]
    commands = [("runs", "list", "--json", *f) for f in filters]
    commands += [("runs", "list", "--until", "2000-01-01"), ("runs", "list", "--since", "soon")]
    *results, empty, bad = run_many(commands, url=runs.url)
    for result in results:
        assert result.returncode == 0, result.stderr
    found = [[r["id"] for r in json.loads(result.stdout)] for result in results]
    assert found == [
        [runs.failed, runs.waiting],
        [runs.done],
        [runs.failed, runs.waiting, runs.done],
        [runs.failed],
    ]
    assert "pass --limit for more" in results[-1].stderr
    assert empty.stdout.strip() == "no runs match"
    assert_one_line_error(bad, 2, "Invalid value for '--since': 'soon' is not a time")


# -- runs show -----------------------------------------------------------------------------


def test_runs_show_summarizes_a_completed_run_with_a_timeline(runs: Runs) -> None:
    result = run_cli("runs", "show", runs.done, url=runs.url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"run       {runs.done}" in out
    assert "status    completed" in out
    assert 'input     {"name": "ana"}' in out
    assert 'result    "ANA!"' in out
    assert "history (4 events, from 20" in out
    steps = [line.split() for line in out.splitlines() if "step_completed" in line]
    assert [s[4].rsplit(".", 1)[-1] for s in steps] == ["shout", "punctuate"]
    for step in steps:  # SEQ AT TOOK EVENT NAME DETAIL; each step sleeps 20 ms
        assert step[1].startswith("+")
        assert float(step[2].rstrip("s")) >= 0.015


def test_runs_show_json_has_the_outcome_and_durations(runs: Runs) -> None:
    result = run_cli("runs", "show", runs.done, "--json", url=runs.url)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["status"] == "completed"
    assert doc["input"] == {"name": "ana"}
    assert doc["result"] == "ANA!"
    assert doc["error"] is None
    kinds = [e["kind"] for e in doc["timeline"]]
    assert kinds == ["workflow_started", "step_completed", "step_completed", "workflow_completed"]
    assert doc["timeline"][0]["offset"] == 0
    assert doc["timeline"][0]["duration"] is None
    assert all(e["duration"] >= 0.015 for e in doc["timeline"][1:3])


def test_runs_show_gives_the_error_of_a_failed_run(runs: Runs) -> None:
    result, as_json = run_many(
        [("runs", "show", runs.failed), ("runs", "show", runs.failed, "--json")], url=runs.url
    )
    assert result.returncode == 0, result.stderr
    assert "status    failed" in result.stdout
    assert "error     fluxo.StepError: " in result.stdout
    assert "no supplier has nails" in result.stdout
    assert "step_failed" in result.stdout
    assert "traceback (from the run's history):" in result.stdout
    doc = json.loads(as_json.stdout)
    assert "LookupError: no supplier has nails" in doc["error"]["message"]


def test_runs_show_with_only_the_app(runs: Runs) -> None:
    # No FLUXO_STORE_URL: the app's engine and its own store are used.
    result = run_cli(
        "runs", "show", runs.waiting, env={"FLUXO_APP": APP, "CLIAPP_STORE_URL": runs.url}
    )
    assert result.returncode == 0, result.stderr
    assert "waiting   for signal 'decision'" in result.stdout


def test_runs_store_wins_over_the_apps_store(runs: Runs, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path}/other.db"
    result = run_cli(
        "runs",
        "show",
        runs.done,
        "--store",
        runs.url,
        env={"FLUXO_APP": APP, "CLIAPP_STORE_URL": elsewhere},
    )
    assert result.returncode == 0, result.stderr
    assert "status    completed" in result.stdout


# -- runs history --------------------------------------------------------------------------


def test_runs_history_exports_a_json_document(runs: Runs, tmp_path: Path) -> None:
    target = tmp_path / "exported.json"
    printed, written = run_many(
        [("runs", "history", runs.done), ("runs", "history", runs.done, "-o", str(target))],
        url=runs.url,
    )
    assert printed.returncode == 0, printed.stderr
    assert written.returncode == 0, written.stderr
    doc = json.loads(printed.stdout)
    assert doc == runs.engine.export_history(runs.done)
    assert doc["run"]["id"] == runs.done
    assert json.loads(target.read_text()) == doc


# -- runs signal, cancel, retry ------------------------------------------------------------


def test_runs_signal_rejects_a_bad_payload_and_sends_nothing(runs: Runs) -> None:
    bad, both = run_many(
        [
            ("runs", "signal", runs.waiting, "decision", "{approved: true}"),
            ("runs", "signal", runs.waiting, "decision", "1", "--payload-file", "-"),
        ],
        url=runs.url,
    )
    assert_one_line_error(bad, 2, "Invalid value for PAYLOAD: not valid JSON", "quote text")
    assert_one_line_error(both, 2, "not both")
    assert runs.engine.store.load(runs.waiting).signals == ()


def test_runs_signal_delivers_a_json_payload(fresh_runs: Runs) -> None:
    result = run_cli(
        "runs", "signal", fresh_runs.waiting, "decision", '{"approved": true}', url=fresh_runs.url
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"signal 'decision' sent to run {fresh_runs.waiting!r}"
    shown = run_cli("runs", "show", fresh_runs.waiting, url=fresh_runs.url).stdout
    assert 'signal    decision {"approved": true}' in shown
    fresh_runs.process()
    assert fresh_runs.engine.handle(fresh_runs.waiting).result(timeout=10) == {
        "order": "o-17",
        "approved": True,
    }
    finished = run_cli("runs", "signal", fresh_runs.waiting, "decision", "1", url=fresh_runs.url)
    assert_one_line_error(finished, 1, "has finished (completed)")


def test_runs_signal_reads_the_payload_from_stdin(fresh_runs: Runs) -> None:
    result = run_cli(
        "runs",
        "signal",
        fresh_runs.waiting,
        "decision",
        "--payload-file",
        "-",
        url=fresh_runs.url,
        env={"FLUXO_APP": APP},
        stdin='{"approved": false, "by": "ops"}',
    )
    assert result.returncode == 0, result.stderr
    fresh_runs.process()
    assert fresh_runs.engine.handle(fresh_runs.waiting).result(timeout=10)["by"] == "ops"


def test_runs_cancel(fresh_runs: Runs) -> None:
    fresh_runs.engine.start(cliapp.greet.options(id="not-begun"), "x")
    waiting, not_begun, finished = run_many(
        [
            ("runs", "cancel", fresh_runs.waiting),
            ("runs", "cancel", "not-begun"),
            ("runs", "cancel", fresh_runs.done),
        ],
        url=fresh_runs.url,
    )
    assert waiting.returncode == 0, waiting.stderr
    assert "cancellation of run" in waiting.stdout
    fresh_runs.process()
    assert fresh_runs.engine.get_run(fresh_runs.waiting).status is fluxo.RunStatus.CANCELLED
    assert not_begun.stdout.strip() == "run 'not-begun' is cancelled"
    assert_one_line_error(finished, 1, "already finished (completed)")


def test_runs_retry_resumes_a_failed_run(fresh_runs: Runs) -> None:
    result, not_failed = run_many(
        [("runs", "retry", fresh_runs.failed), ("runs", "retry", fresh_runs.done)],
        url=fresh_runs.url,
    )
    assert result.returncode == 0, result.stderr
    assert "is pending again" in result.stdout
    fresh_runs.process()  # the cause is fixed: CLIAPP_OUT_OF_STOCK is unset here
    assert fresh_runs.engine.handle(fresh_runs.failed).result(timeout=10) == 12
    assert_one_line_error(not_failed, 1, "only a failed or dead run can be retried")


# -- error paths common to the runs commands -----------------------------------------------


def test_an_unknown_run_id(runs: Runs) -> None:
    commands = [
        ("show", "nope"),
        ("history", "nope"),
        ("signal", "nope", "decision", "true"),
        ("cancel", "nope"),
        ("retry", "nope"),
    ]
    for result in run_many([("runs", *command) for command in commands], url=runs.url):
        assert_one_line_error(
            result, 1, f"no run 'nope' in {runs.url}", "list runs with `fluxo runs list`"
        )


def test_an_unreachable_store_fails_fast_in_one_line() -> None:
    started = time.monotonic()
    postgres, redis = run_many(
        [
            ("runs", "list", "--store", UNREACHABLE["postgres"]),
            ("runs", "show", "some-run", "--store", UNREACHABLE["redis"]),
        ]
    )
    assert time.monotonic() - started < 20
    for result in (postgres, redis):
        assert_one_line_error(result, 1, "cannot reach the store at ", "check FLUXO_STORE_URL")
        assert "s3cret" not in result.stderr
        assert ":***@127.0.0.1:1" in result.stderr
    assert "Connection refused" in postgres.stderr


def test_verbose_shows_the_traceback_and_no_store_says_what_to_set() -> None:
    verbose, no_store = run_many(
        [("--verbose", "runs", "list", "--store", UNREACHABLE["postgres"]), ("runs", "list")]
    )
    assert verbose.returncode == 1
    assert "Traceback" in verbose.stderr
    assert "StoreUnavailableError" in verbose.stderr
    assert_one_line_error(no_store, 2, "set FLUXO_STORE_URL or pass --store")


# -- worker --------------------------------------------------------------------------------


def test_worker_serves_the_chosen_workflows_and_stops_on_sigterm(sqlite_url: str) -> None:
    engine = fluxo.Engine(sqlite_url, workflows=[cliapp.greet, cliapp.approval])
    greeting = engine.start(cliapp.greet.options(id="w-greet"), "bo")
    engine.start(cliapp.approval.options(id="w-approval"), "o-1")
    worker = subprocess.Popen(
        [
            FLUXO,
            "worker",
            APP,
            "--workflow",
            GREET,
            "--concurrency",
            "2",
            "--log-level",
            "debug",
            "--worker-id",
            "cli-test-worker",
        ],
        env={**os.environ, "FLUXO_STORE_URL": sqlite_url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert greeting.result(timeout=30) == "BO!"
        other = engine.get_run("w-approval")
        assert other.status is fluxo.RunStatus.PENDING
        assert other.lease_owner is None  # never claimed: not among --workflow
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
        engine.close()
    assert worker.returncode == 0, out
    assert "worker cli-test-worker serving 1 workflow(s) with concurrency 2" in out
    assert "SIGTERM received, shutting down" in out
    assert "worker cli-test-worker stopped" in out


def test_worker_errors(sqlite_url: str) -> None:
    with ThreadPoolExecutor(2) as pool:
        unknown = pool.submit(run_cli, "worker", APP, "--workflow", "nope", url=sqlite_url)
        unloadable = pool.submit(run_cli, "worker", APP)  # the app reads FLUXO_STORE_URL
    assert_one_line_error(unknown.result(), 2, "no workflow named 'nope'", GREET)
    assert_one_line_error(unloadable.result(), 1, "raised KeyError", "FLUXO_STORE_URL")


# -- db ------------------------------------------------------------------------------------


def test_db_upgrade_current_check(sqlite_url: str) -> None:
    assert run_cli("db", "current", url=sqlite_url).stdout.startswith("empty")
    assert_one_line_error(run_cli("db", "check", url=sqlite_url), 1, "fluxo db upgrade")
    upgraded = run_cli("db", "upgrade", "--url", sqlite_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith("schema is at ")
    checked = run_cli("db", "check", url=sqlite_url)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "schema is up to date"


def test_db_errors() -> None:
    missing, not_sql, unreachable = run_many(
        [
            ("db", "current"),
            ("db", "upgrade", "--url", UNREACHABLE["redis"]),
            ("db", "current", "--url", UNREACHABLE["postgres"]),
        ]
    )
    assert_one_line_error(missing, 2, "set FLUXO_STORE_URL or pass --url")
    assert_one_line_error(not_sql, 2, "'redis' is not a SQL store")
    assert_one_line_error(unreachable, 1, "cannot reach the store at postgresql+psycopg://")
    assert "s3cret" not in unreachable.stderr


# -- replay --------------------------------------------------------------------------------


def test_replay_passes_unchanged_code_and_fails_changed_code(runs: Runs, tmp_path: Path) -> None:
    folder = tmp_path / "histories"
    folder.mkdir()
    exported = run_cli("runs", "history", runs.done, "-o", str(folder / "greet.json"), url=runs.url)
    assert exported.returncode == 0, exported.stderr
    env = {"CLIAPP_STORE_URL": runs.url}

    same = run_cli("replay", str(folder), "--app", APP, env=env)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "1 history replayed: 1 ok, 0 failed" in same.stdout

    changed = run_cli(
        "replay",
        str(folder / "greet.json"),
        env={**env, "FLUXO_APP": APP.replace("make_engine", "make_changed_engine")},
    )
    assert changed.returncode == 1, changed.stdout + changed.stderr
    assert "diverged at position 1" in changed.stdout
    assert f"  >  1  recorded:  step {cliapp.shout.name}\n" in changed.stdout
    assert f"        code now:  step {cliapp.punctuate.name}\n" in changed.stdout
    assert "1 failed" in changed.stdout

    (folder / "junk.json").write_text("{not json")
    broken = run_cli("replay", str(folder), "--app", APP, env=env)
    assert broken.returncode == 1
    assert "1 ok, 1 failed" in broken.stdout


def test_replay_needs_an_app(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("replay", str(tmp_path)), 2, "Missing --app")


# -- the server stores ---------------------------------------------------------------------


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
def server_runs(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runs]:
    url = request.getfixturevalue(f"clean_{request.param}_url")
    made = make_runs(url, monkeypatch)
    yield made
    made.engine.close()


def test_the_runs_commands_on_a_server_store(server_runs: Runs) -> None:
    runs = server_runs
    listed, shown, signalled, retried, unknown = run_many(
        [
            ("runs", "list", "--json"),
            ("runs", "show", runs.done),
            ("runs", "signal", runs.waiting, "decision", "{}"),
            ("runs", "retry", runs.failed),
            ("runs", "show", "nope"),
        ],
        url=runs.url,
    )
    assert [r["id"] for r in json.loads(listed.stdout)] == [runs.failed, runs.waiting, runs.done]
    assert "status    completed" in shown.stdout, shown.stderr
    if runs.engine.store.load(runs.done).recorded_at:  # a store that records event times
        assert "+0.000s" in shown.stdout
    assert signalled.returncode == 0, signalled.stderr
    assert retried.returncode == 0, retried.stderr
    runs.process()
    assert runs.engine.get_run(runs.waiting).status is fluxo.RunStatus.COMPLETED
    assert runs.engine.get_run(runs.failed).status is fluxo.RunStatus.COMPLETED
    assert_one_line_error(unknown, 1, "no run 'nope' in ")
