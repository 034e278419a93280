"""The Fluxo dashboard as a router of a FastAPI app (``fluxo.contrib.fastapi``).

The app makes its ``fluxo.AsyncEngine`` in its lifespan, finds it with a
``get_engine`` dependency, and logs its users in with a cookie that a
``require_login`` dependency checks; the dashboard's router is included under
``/fluxo`` behind that dependency, and served over real HTTP by uvicorn.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI, HTTPException, Request

import fluxo
from fluxo.contrib.fastapi import dashboard_router
from fluxo.ui import Dashboard
from tests.integration import _ui

SESSION = "let-me-in"


@fluxo.workflow
def wait_for_go() -> Any:
    """A run that stays pending: nothing sends ``go``."""
    return fluxo.wait_for_signal("go")


def get_engine(request: Request) -> fluxo.AsyncEngine:
    engine: fluxo.AsyncEngine = request.app.state.fluxo
    return engine


def require_login(request: Request) -> None:
    """The app's own guard: its session cookie."""
    if request.cookies.get("session") != SESSION:
        raise HTTPException(401, "log in first")


@contextlib.contextmanager
def serving(app: FastAPI, *, root_path: str = "", **options: Any) -> Iterator[httpx.Client]:
    """An HTTP client of ``app``, served by uvicorn."""
    with (
        _ui.asgi_server(app, root_path=root_path) as url,
        httpx.Client(base_url=url, timeout=30, **options) as http,
    ):
        yield http


def make_app(engine: fluxo.Engine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with fluxo.AsyncEngine(engine) as shared:  # the test closes the engine
            app.state.fluxo = shared
            yield

    app = FastAPI(lifespan=lifespan)
    app.include_router(
        dashboard_router(get_engine, dependencies=[Depends(require_login)]), prefix="/fluxo"
    )
    return app


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[fluxo.Engine]:
    with fluxo.Engine(f"sqlite:///{tmp_path / 'fluxo.db'}", workflows=[wait_for_go]) as made:
        yield made


@pytest.fixture
def run_id(engine: fluxo.Engine) -> str:
    return engine.start(wait_for_go.options(id=f"go-{uuid.uuid4().hex[:8]}")).id


def test_logged_out_requests_are_refused_by_the_apps_dependency(
    engine: fluxo.Engine, run_id: str
) -> None:
    with serving(make_app(engine)) as client:
        for method, path in (
            ("GET", "/fluxo/"),
            ("GET", f"/fluxo/run?id={run_id}"),
            ("POST", "/fluxo/run/cancel"),
            ("GET", "/fluxo/static/fluxo.css"),
        ):
            answer = client.request(method, path, data={"id": run_id})
            assert answer.status_code == 401, path
            assert answer.json() == {"detail": "log in first"}
            assert "set-cookie" not in answer.headers  # the dashboard did not run
    assert engine.get_run(run_id).cancel_requested is False


def test_the_links_carry_the_apps_root_path(engine: fluxo.Engine, run_id: str) -> None:
    with serving(make_app(engine), root_path="/shop", cookies={"session": SESSION}) as client:
        page = client.get("/fluxo/")

    assert page.status_code == 200
    assert f'href="/shop/fluxo/run?id={run_id}"' in page.text
    assert "Path=/shop/fluxo;" in page.headers["set-cookie"]


def test_the_prefix_without_its_slash_is_sent_to_the_dashboards_home(
    engine: fluxo.Engine,
) -> None:
    with serving(make_app(engine), cookies={"session": SESSION}) as client:
        moved = client.get("/fluxo")

    assert moved.status_code == 307
    assert moved.headers["location"].endswith("/fluxo/")


def test_a_logged_in_user_uses_the_dashboard_over_http(engine: fluxo.Engine, run_id: str) -> None:
    with serving(make_app(engine), cookies={"session": SESSION}) as http:
        _ui.walk_through(http, "/fluxo", run_id)
    assert engine.get_run(run_id).status is fluxo.RunStatus.CANCELLED


def test_a_dashboard_of_its_own_behind_include_routers_dependencies(
    engine: fluxo.Engine, run_id: str
) -> None:
    dashboard = Dashboard(engine, title="Operations")

    def admins_only(request: Request) -> None:
        if request.headers.get("x-role") != "admin":
            raise HTTPException(403, "admins only")

    app = FastAPI()
    app.include_router(
        dashboard_router(dashboard), prefix="/ops", dependencies=[Depends(admins_only)]
    )
    try:
        with serving(app) as client:
            assert client.get("/ops/").status_code == 403
            page = client.get("/ops/run", params={"id": run_id}, headers={"x-role": "admin"})
    finally:
        dashboard.close()

    assert page.status_code == 200
    assert "<title>Operations: " in page.text
    assert 'action="/ops/run/cancel"' in page.text


def test_a_source_that_is_no_engine_is_refused_at_once() -> None:
    with pytest.raises(fluxo.DefinitionError, match="not str"):
        dashboard_router("sqlite:///fluxo.db")  # type: ignore[arg-type]


def test_import_fluxo_ui_imports_no_web_framework() -> None:
    probe = "import sys, fluxo, fluxo.ui, fluxo.contrib; print(sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    for framework in ("fastapi", "starlette", "flask", "django", "jinja2"):
        assert f"'{framework}'" not in done.stdout
