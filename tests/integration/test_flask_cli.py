"""fluxo.contrib.flask: `flask fluxo ...`, Fluxo's command line with the app's engine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask_sqlalchemy")

from flask import Flask

import fluxo
from fluxo import testing
from fluxo.stores.sql import _migrate
from tests.integration import flaskapp
from tests.integration.flaskapp import ext, greet

ROOT = Path(__file__).parents[2]


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture
def app(database: str) -> Iterator[Flask]:
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database})
    with app.app_context():
        flaskapp.db.create_all()
    yield app
    ext.close(app)


def invoke(app: Flask, *args: str) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["fluxo", *args])
    return result.exit_code, result.output


def test_flask_lists_the_fluxo_command(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["--help"])
    assert result.exit_code == 0
    assert "fluxo" in result.output


def test_flask_fluxo_help_shows_fluxos_commands_under_its_name(app: Flask) -> None:
    code, out = invoke(app, "--help")
    assert code == 0, out
    assert "Usage: flask fluxo" in out
    for command in ("worker", "runs", "replay", "db"):
        assert command in out


def test_runs_commands_use_the_apps_engine(app: Flask) -> None:
    engine = ext.get_engine(app)
    engine.start(greet.options(id="greet-ana"), "ana")

    code, out = invoke(app, "runs", "list")
    assert code == 0, out
    assert "greet-ana" in out
    assert greet.name in out

    code, out = invoke(app, "runs", "show", "greet-ana", "--json")
    assert code == 0, out
    assert json.loads(out)["id"] == "greet-ana"

    code, out = invoke(app, "runs", "cancel", "greet-ana")
    assert code == 0, out
    assert engine.get_run("greet-ana").status is fluxo.RunStatus.CANCELLED

    assert ext.get_engine(app).list_runs()  # the app's engine still works afterwards


def test_db_commands_take_the_apps_database(app: Flask) -> None:
    ext.get_engine(app)  # built: the tables are there
    code, out = invoke(app, "db", "check")
    assert code == 0, out
    assert "schema is up to date" in out


def test_errors_print_one_line_and_exit_1(app: Flask) -> None:
    ext.get_engine(app)  # built: the tables are there
    code, out = invoke(app, "runs", "show", "nobody")
    assert code == 1
    assert "Error: no run 'nobody'" in out
    assert "Traceback" not in out


def test_read_only_commands_leave_a_new_database_without_tables(app: Flask, database: str) -> None:
    for args, status, says in [
        (("db", "check"), 1, "no Fluxo schema at"),
        (("db", "current"), 0, "empty (run"),
        (("runs", "list"), 1, "no Fluxo tables at"),
        (("runs", "show", "nobody"), 1, "no Fluxo tables at"),
    ]:
        code, out = invoke(app, *args)
        assert (code, args) == (status, args), out
        assert says in out, out
    assert _migrate.current(database) is None
    assert app.extensions["fluxo"].built() is None  # nor an engine left behind


def test_read_only_commands_leave_an_older_schema_as_it_is(app: Flask, database: str) -> None:
    _migrate.upgrade(database, "0001")
    code, out = invoke(app, "db", "current")
    assert (code, out.strip()) == (0, "0001")
    code, out = invoke(app, "db", "check")
    assert code == 1, out
    code, out = invoke(app, "runs", "list")
    assert code == 1, out
    assert "revision '0001'" in out
    assert _migrate.current(database) == "0001"

    code, out = invoke(app, "db", "upgrade")
    assert code == 0, out
    assert _migrate.current(database) == _migrate.head()


def test_db_upgrade_works_with_auto_migrate_off(database: str) -> None:
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database, "FLUXO_AUTO_MIGRATE": False})
    try:
        code, out = invoke(app, "db", "upgrade")
        assert code == 0, out
        assert "schema is at" in out
        code, out = invoke(app, "db", "check")
        assert code == 0, out
        ext.get_engine(app).start(greet.options(id="after-upgrade"), "ana")
    finally:
        ext.close(app)


def test_replay_needs_no_database(app: Flask, tmp_path: Path) -> None:
    engine = ext.get_engine(app)
    assert engine.run(greet.options(id="recorded"), "ana") == "flaskapp (0 notes): hello ana"
    (tmp_path / "h").mkdir()
    testing.save_history(engine.export_history("recorded"), tmp_path / "h" / "recorded.json")
    nowhere = flaskapp.create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'missing' / 'app.db'}"}
    )
    code, out = invoke(nowhere, "replay", str(tmp_path / "h"))
    assert code == 0, out
    assert not (tmp_path / "missing").exists()


def test_the_workers_engine_creates_the_tables(app: Flask, database: str) -> None:
    state = app.extensions["fluxo"]
    with state.command_engine("worker") as factory:
        factory().worker().process_one()
    assert _migrate.current(database) == _migrate.head()


def test_a_command_that_starts_in_a_session_on_a_new_sqlite_database_says_what_to_do(
    app: Flask,
) -> None:
    @app.cli.command("add-note")
    def add_note() -> None:
        note = flaskapp.Note(text="from a command")
        flaskapp.db.session.add(note)
        flaskapp.db.session.flush()  # the session's transaction holds SQLite's write lock
        ext.engine.start(flaskapp.see.options(id="from-a-command"), note.id)
        flaskapp.db.session.commit()

    result = app.test_cli_runner().invoke(args=["add-note"])
    assert isinstance(result.exception, fluxo.StoreUnavailableError), result.output
    message = str(result.exception)
    assert "database is locked" in message
    assert "db.session has a transaction open here" in message
    assert "`flask fluxo db upgrade`" in message

    code, out = invoke(app, "db", "upgrade")  # as the message says
    assert code == 0, out
    result = app.test_cli_runner().invoke(args=["add-note"])
    assert result.exit_code == 0, result.output
    assert ext.get_engine(app).get_run("from-a-command").workflow == flaskapp.see.name


def test_the_commands_run_in_the_app_context(app: Flask) -> None:
    engine = ext.get_engine(app)
    engine.start(greet.options(id="greet-bob"), "bob")
    code, out = invoke(app, "runs", "list", "--json")
    assert code == 0, out
    assert [run["id"] for run in json.loads(out)] == ["greet-bob"]


def environment(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "FLASK_"))}
    env["FLASKAPP_DATABASE"] = database
    return env


def flask(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "tests.integration.flaskapp", *args]


def test_flask_fluxo_runs_list_in_a_real_process(app: Flask, database: str) -> None:
    ext.get_engine(app).start(greet.options(id="greet-cli"), "cli")
    done = subprocess.run(
        flask("fluxo", "runs", "list"),
        cwd=ROOT,
        env=environment(database),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "greet-cli" in done.stdout


def test_flask_fluxo_db_upgrade_uses_the_apps_database(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'fresh.db'}"
    done = subprocess.run(
        flask("fluxo", "db", "upgrade"),
        cwd=ROOT,
        env=environment(database),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "schema is at" in done.stdout


def test_flask_fluxo_worker_runs_the_apps_workflows_in_its_app_context(
    app: Flask, database: str, tmp_path: Path
) -> None:
    engine = ext.get_engine(app)
    handle = engine.start(greet.options(id="greet-worker"), "worker")
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        flask("fluxo", "worker", "--concurrency", "2"),
        cwd=ROOT,
        env=environment(database),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        assert handle.result(timeout=60) == "flaskapp (0 notes): hello worker"
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(timeout=30)
        log.close()
    output = (tmp_path / "worker.log").read_text()
    assert code == 0, output
    assert "greet-worker" in output
