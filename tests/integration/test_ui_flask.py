"""The Fluxo dashboard as a blueprint of a Flask app, behind the app's own login.

The app logs its users in with a session flag (``/login``), guards the blueprint
with a ``login_required`` decorator of its own and, for one page, a
``before_request`` hook; its engine is the Fluxo extension's, on an SQLite file.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flask
import httpx
import pytest

import fluxo
from fluxo.contrib.flask import Fluxo, dashboard_blueprint
from tests.integration import _ui


@fluxo.workflow
def wait_for_go() -> Any:
    """A run that stays pending: nothing sends ``go``."""
    return fluxo.wait_for_signal("go")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """The app's own guard: a session flag, set by ``/login``."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not flask.session.get("user"):
            return flask.redirect(flask.url_for("login", next=flask.request.path))
        return view(*args, **kwargs)

    return guarded


def make_app(tmp_path: Path) -> tuple[flask.Flask, Fluxo]:
    app = flask.Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.secret_key = "tests-only"
    app.config["FLUXO_STORE"] = f"sqlite:///{tmp_path / 'fluxo.db'}"
    flows = Fluxo(app, workflows=[wait_for_go])

    @app.get("/login")
    def login() -> str:
        flask.session["user"] = flask.request.args.get("as", "ana")
        return "logged in"

    app.register_blueprint(dashboard_blueprint(decorators=[login_required]), url_prefix="/fluxo")
    admins = dashboard_blueprint(flows, name="admin_dashboard", title="Admin")

    @admins.before_request
    def admins_only() -> None:
        if flask.session.get("user") != "root":
            flask.abort(403)

    app.register_blueprint(admins, url_prefix="/ops/fluxo")
    return app, flows


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[flask.Flask, str]]:
    """The app, and the id of a pending run of its engine."""
    app, flows = make_app(tmp_path)
    with app.app_context():
        run_id = flows.engine.start(wait_for_go.options(id=f"go-{uuid.uuid4().hex[:8]}")).id
    yield app, run_id
    flows.close(app)


def test_logged_out_requests_are_refused_by_the_apps_login(
    shop: tuple[flask.Flask, str],
) -> None:
    app, run_id = shop
    client = app.test_client()

    for method, path in (("GET", "/fluxo/"), ("GET", "/fluxo/run"), ("POST", "/fluxo/run/cancel")):
        answer = client.open(path, method=method, query_string={"id": run_id})
        assert answer.status_code == 302, path
        assert answer.location == f"/login?next={path}"
        assert "set-cookie" not in answer.headers  # the dashboard did not run
    assert client.get("/fluxo/static/fluxo.css").status_code == 302


def test_a_before_request_hook_of_the_blueprint_guards_it(shop: tuple[flask.Flask, str]) -> None:
    app, run_id = shop
    client = app.test_client()
    client.get("/login")  # ana: not root
    assert client.get("/ops/fluxo/").status_code == 403
    client.get("/login", query_string={"as": "root"})

    page = client.get("/ops/fluxo/run", query_string={"id": run_id})

    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "<title>Admin: " in text
    assert 'href="/ops/fluxo/static/fluxo.css"' in text


def test_the_prefix_without_its_slash_is_sent_to_the_dashboards_home(
    shop: tuple[flask.Flask, str],
) -> None:
    app, _ = shop
    client = app.test_client()
    client.get("/login")

    moved = client.get("/fluxo")

    assert moved.status_code == 308
    assert moved.location.endswith("/fluxo/")
    with app.test_request_context():
        assert flask.url_for("fluxo_dashboard.page", path="") == "/fluxo/"
        assert flask.url_for("fluxo_dashboard.page", path="run") == "/fluxo/run"


def test_under_a_script_root_the_links_carry_it(shop: tuple[flask.Flask, str]) -> None:
    app, run_id = shop
    client = app.test_client()
    client.get("/login", base_url="http://localhost/shop")

    page = client.get("/fluxo/", base_url="http://localhost/shop")

    assert page.status_code == 200
    assert f'href="/shop/fluxo/run?id={run_id}"' in page.get_data(as_text=True)
    assert "Path=/shop/fluxo;" in page.headers["set-cookie"]


def test_a_logged_in_user_uses_the_dashboard_over_http(shop: tuple[flask.Flask, str]) -> None:
    app, run_id = shop
    with _ui.wsgi_server(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/login").status_code == 200
        _ui.walk_through(http, "/fluxo", run_id)
    with app.app_context():
        run = app.extensions["fluxo"].engine().get_run(run_id)
    assert run.status is fluxo.RunStatus.CANCELLED


def test_a_blueprint_without_an_engine_needs_the_extension(tmp_path: Path) -> None:
    app = flask.Flask(__name__)
    app.register_blueprint(dashboard_blueprint(), url_prefix="/fluxo")
    app.testing = True

    with pytest.raises(fluxo.DefinitionError, match=r"Fluxo is not set up on app"):
        app.test_client().get("/fluxo/")


def test_a_wrong_source_or_decorator_is_refused_at_once() -> None:
    with pytest.raises(fluxo.DefinitionError, match="not str"):
        dashboard_blueprint("memory://")  # type: ignore[arg-type]
    with pytest.raises(fluxo.DefinitionError, match="not a view decorator"):
        dashboard_blueprint(decorators=["login_required"])  # type: ignore[list-item]
