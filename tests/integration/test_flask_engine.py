"""fluxo.contrib.flask: an engine per app and process, built anew after a fork; steps in context."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("flask_sqlalchemy")

from flask import Flask

import fluxo
from fluxo.contrib.flask import Fluxo
from tests.integration import flaskapp

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
    flaskapp.ext.close(app)


def test_the_engine_is_built_once_and_shared_by_threads(app: Flask) -> None:
    seen: list[fluxo.Engine] = []
    barrier = threading.Barrier(8)

    def take() -> None:
        barrier.wait()
        seen.append(flaskapp.ext.get_engine(app))

    threads = [threading.Thread(target=take) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 8
    assert all(engine is seen[0] for engine in seen)
    with app.app_context():
        assert flaskapp.ext.engine is seen[0]


def test_init_app_builds_no_engine(database: str) -> None:
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database})
    assert app.extensions["fluxo"]._engine is None


FORK_SCRIPT = """
import os, sys
from tests.integration import flaskapp

app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
with app.app_context():
    flaskapp.db.create_all()
parent = flaskapp.ext.get_engine(app)
parent.start(flaskapp.greet.options(id="started-by-parent"), "p")
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    child = flaskapp.ext.get_engine(app)
    own = child is not parent and child is flaskapp.ext.get_engine(app)
    own = own and f":{os.getpid()}:" in child.instance_id
    child.start(flaskapp.greet.options(id="started-by-child"), "c")
    os.write(write, b"own" if own else b"shared")
    sys.exit(0)  # runs the child's atexit hooks
os.waitpid(pid, 0)
print(os.read(read, 10).decode())
print(flaskapp.ext.get_engine(app) is parent)
print(sorted(run.id for run in parent.list_runs()))
"""


def run_script(script: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout.splitlines()


@pytest.mark.parametrize(
    "source", ["sqlite", pytest.param("fresh_postgres_url", marks=pytest.mark.postgres)]
)
def test_a_forked_child_builds_its_own_engine_and_both_keep_working(
    source: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """As gunicorn's workers, forked after the app (and maybe its engine) was made."""
    if source == "sqlite":
        url = f"sqlite:///{tmp_path / 'app.db'}"
    else:
        url = request.getfixturevalue(source)
    own, same, runs = run_script(FORK_SCRIPT, url)
    assert own == "own"
    assert same == "True"  # the parent keeps its engine
    assert runs == "['started-by-child', 'started-by-parent']"


EXIT_SCRIPT = """
import os, sys
from fluxo import _engine
from tests.integration import flaskapp

closing = _engine.Engine.close
def close(self):
    if not self._closed:
        print(f"closed an engine of {self.instance_id.split(':')[1]} in {os.getpid()}", flush=True)
    closing(self)
_engine.Engine.close = close

app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": sys.argv[1]})
flaskapp.ext.get_engine(app)
print(f"parent {os.getpid()}", flush=True)
pid = os.fork()
if pid == 0:
    flaskapp.ext.get_engine(app)
    print(f"child {os.getpid()}", flush=True)
    sys.exit(0)
os.waitpid(pid, 0)
"""


def test_each_process_closes_its_own_engine_at_exit(database: str) -> None:
    lines = run_script(EXIT_SCRIPT, database)
    parent = next(line.split()[1] for line in lines if line.startswith("parent "))
    child = next(line.split()[1] for line in lines if line.startswith("child "))
    closed = [line for line in lines if line.startswith("closed")]
    assert sorted(closed) == sorted(
        [f"closed an engine of {child} in {child}", f"closed an engine of {parent} in {parent}"]
    )


# -- steps in the app context --------------------------------------------------------------


def test_steps_run_inside_the_app_context(app: Flask) -> None:
    engine = flaskapp.ext.get_engine(app)
    assert engine.run(flaskapp.greet, "ana") == "flaskapp (0 notes): hello ana"  # inline
    with engine.worker():
        handle = engine.start(flaskapp.greet, "bob")
        assert handle.result(timeout=30) == "flaskapp (0 notes): hello bob"


def test_steps_run_inside_their_own_apps_context(tmp_path: Path) -> None:
    apps = [
        flaskapp.create_app(
            {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / f'{name}.db'}"}, name=name
        )
        for name in ("one", "two")
    ]
    try:
        for app in apps:
            with app.app_context():
                flaskapp.db.create_all()
                flaskapp.db.session.add(flaskapp.Note(text=app.name))
                flaskapp.db.session.commit()
        answers = [flaskapp.ext.get_engine(app).run(flaskapp.greet, "x") for app in apps]
        assert answers == ["one (1 notes): hello x", "two (1 notes): hello x"]
    finally:
        for app in apps:
            flaskapp.ext.close(app)


def test_without_the_app_context_steps_cannot_use_the_apps_extensions(database: str) -> None:
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database, "FLUXO_APP_CONTEXT": False})
    try:
        with pytest.raises(fluxo.WorkflowFailedError, match="Working outside of application"):
            flaskapp.ext.get_engine(app).run(flaskapp.greet, "ana")
    finally:
        flaskapp.ext.close(app)


def test_a_step_starting_a_run_uses_its_apps_engine(tmp_path: Path) -> None:
    ext = Fluxo()

    @fluxo.step(name="tests.flask.start_greeting")
    def start_greeting(name: str) -> str:
        return ext.engine.start(flaskapp.greet.options(id=f"greet-{name}"), name).id

    @fluxo.workflow(name="tests.flask.fan_out")
    def fan_out(name: str) -> str:
        return start_greeting(name)

    app = Flask("starter")
    app.config["FLUXO_STORE"] = f"sqlite:///{tmp_path / 'f.db'}"
    ext.workflows += [fan_out, flaskapp.greet]
    ext.init_app(app)
    try:
        engine = ext.get_engine(app)
        assert engine.run(fan_out, "ana") == "greet-ana"
        assert engine.get_run("greet-ana").workflow == flaskapp.greet.name
    finally:
        ext.close(app)


# -- before each request -------------------------------------------------------------------


def fluxo_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("fluxo.")]


def test_a_request_goes_on_when_the_store_is_down_and_the_warning_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fluxo.contrib.flask import _extension

    monkeypatch.setattr(_extension, "PREPARE_RETRY", 0.0)  # each request tries again
    folder = tmp_path / "not-yet"
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'app.db'}"})
    client = app.test_client()
    try:
        with caplog.at_level("INFO", logger="fluxo.contrib.flask"):
            assert client.get("/health").status_code == 200
            assert client.get("/health").status_code == 200
            assert client.post("/runs/r/signal").status_code == 500  # a view that uses Fluxo
            [warning] = fluxo_logs(caplog)
            assert warning.levelname == "WARNING"
            assert "building the Fluxo engine of app 'flaskapp' before a request" in (
                warning.getMessage()
            )
            assert "does not exist" in warning.getMessage()

            folder.mkdir()  # the store is back
            assert client.get("/health").status_code == 200
        assert [r.levelname for r in fluxo_logs(caplog)] == ["WARNING", "INFO"]
        assert app.extensions["fluxo"].built() is not None
    finally:
        flaskapp.ext.close(app)


def test_postgres_down_does_not_fail_a_request_that_does_not_use_fluxo(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed = "postgresql+psycopg://shop:s3cret@127.0.0.1:1/shop"  # nothing listens on port 1
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": closed})
    try:
        with caplog.at_level("WARNING", logger="fluxo.contrib.flask"):
            assert app.test_client().get("/health").status_code == 200
        [warning] = fluxo_logs(caplog)
        assert "StoreUnavailableError" in warning.getMessage()
        assert "s3cret" not in warning.getMessage()
    finally:
        flaskapp.ext.close(app)


def test_after_it_succeeds_the_request_hook_does_not_ask_for_the_engine(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = app.extensions["fluxo"]
    asked: list[int] = []
    build = state.engine

    def engine() -> fluxo.Engine:
        asked.append(1)
        return build()

    monkeypatch.setattr(state, "engine", engine)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/health").status_code == 200
    assert asked == [1]


def test_the_request_hook_is_only_where_the_store_may_be_the_apps_database(
    tmp_path: Path,
) -> None:
    database = f"sqlite:///{tmp_path / 'app.db'}"
    cases = [
        ({}, True),
        ({"FLUXO_STORE": database}, True),
        ({"FLUXO_STORE": f"sqlite:///{tmp_path / 'other.db'}"}, False),
        ({"FLUXO_STORE": "memory://"}, False),
    ]
    for index, (config, hooked) in enumerate(cases):
        app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database, **config}, f"a{index}")
        state = app.extensions["fluxo"]
        assert (state.prepare in app.before_request_funcs.get(None, [])) is hooked, config
