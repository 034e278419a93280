"""The Fluxo dashboard as views of a Django project (``fluxo.contrib.django.dashboard``).

The test project includes it under ``fluxo/``; it is guarded by Django admin's
``staff_member_required`` unless ``FLUXO["DASHBOARD_DECORATOR"]`` names another
decorator, or none. Real users log in through Django's sessions; the pages are
served over real HTTP by a WSGI server and, for the async live stream, by uvicorn
through Django's ASGI handler.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

import fluxo
from fluxo.contrib.django import _settings, close_engine, get_engine
from tests.integration import _ui

pytestmark = pytest.mark.usefixtures("django_site")

NOTES = "tests.integration.django_site.notes.workflows"


def user(*, staff: bool) -> Any:
    from django.contrib.auth.models import User

    return User.objects.create_user(f"user-{uuid.uuid4().hex[:12]}", is_staff=staff)


def client_for(*, staff: bool) -> Client:
    client = Client()
    client.force_login(user(staff=staff))
    return client


@pytest.fixture(autouse=True)
def fresh_engine() -> Iterator[None]:
    close_engine()
    yield
    close_engine()


@pytest.fixture
def run_id() -> str:
    """A run of the project's engine, waiting for a signal."""
    from django.utils.module_loading import import_string

    wait_for_go = import_string(f"{NOTES}.wait_for_go")
    return get_engine().start(wait_for_go.options(id=f"go-{uuid.uuid4().hex[:8]}")).id


def test_anonymous_and_non_staff_users_are_sent_to_the_admins_login(run_id: str) -> None:
    for client in (Client(), client_for(staff=False)):
        for answer in (
            client.get("/fluxo/"),
            client.get("/fluxo/run", {"id": run_id}),
            client.post("/fluxo/run/cancel", {"id": run_id}),
        ):
            assert answer.status_code == 302
            assert answer["location"].startswith("/admin/login/?next=/fluxo/")
            assert "fluxo_ui_csrf" not in answer.cookies  # the dashboard did not run
    assert get_engine().get_run(run_id).cancel_requested is False


def test_a_staff_user_sees_the_runs_with_links_under_the_prefix(run_id: str) -> None:
    page = client_for(staff=True).get("/fluxo/")

    assert page.status_code == 200
    text = page.content.decode()
    assert f'href="/fluxo/run?id={run_id}"' in text
    cookie = page.cookies["fluxo_ui_csrf"]
    assert (cookie["path"], cookie["httponly"], cookie["samesite"]) == ("/fluxo", True, "Strict")


def test_the_urlconf_has_a_namespace() -> None:
    from django.urls import reverse

    assert reverse("fluxo_dashboard:home") == "/fluxo/"
    assert reverse("fluxo_dashboard:page", kwargs={"path": "run"}) == "/fluxo/run"


def test_the_prefix_without_its_slash_is_sent_to_the_dashboards_home() -> None:
    moved = client_for(staff=True).get("/fluxo")

    assert moved.status_code == 301
    assert moved["location"] == "/fluxo/"


def test_a_staff_user_uses_the_dashboard_over_http_under_wsgi(run_id: str) -> None:
    from django.core.handlers.wsgi import WSGIHandler

    with _ui.wsgi_server(WSGIHandler()) as url, logged_in(url) as http:
        _ui.walk_through(http, "/fluxo", run_id)
    assert get_engine().get_run(run_id).status is fluxo.RunStatus.CANCELLED


def test_a_staff_user_uses_the_dashboard_over_http_under_asgi(run_id: str) -> None:
    from django.core.handlers.asgi import ASGIHandler

    with _ui.asgi_server(ASGIHandler(), lifespan="off") as url, logged_in(url) as http:
        _ui.walk_through(http, "/fluxo", run_id)
    assert get_engine().get_run(run_id).status is fluxo.RunStatus.CANCELLED


def logged_in(url: str) -> httpx.Client:
    """An HTTP client with the session of a staff user, as a browser would have after login."""
    session = client_for(staff=True).cookies["sessionid"].value
    return httpx.Client(base_url=url, timeout=30, cookies={"sessionid": session})


def test_the_decorator_is_a_setting(run_id: str) -> None:
    with override_settings(FLUXO={"DASHBOARD_DECORATOR": None}):
        assert Client().get("/fluxo/").status_code == 200
    login = "django.contrib.auth.decorators.login_required"
    with override_settings(FLUXO={"DASHBOARD_DECORATOR": login}, LOGIN_URL="/accounts/in/"):
        assert Client().get("/fluxo/")["location"] == "/accounts/in/?next=/fluxo/"
        assert client_for(staff=False).get("/fluxo/").status_code == 200
    with (
        override_settings(FLUXO={"DASHBOARD_DECORATOR": "shop.auth.nope"}),
        pytest.raises(ImproperlyConfigured, match=r"DASHBOARD_DECORATOR.*cannot be imported"),
    ):
        Client().get("/fluxo/")


@pytest.mark.parametrize("value", [42, "login_required", ""])
def test_a_decorator_setting_that_is_no_dotted_path_is_refused(value: object) -> None:
    with pytest.raises(ImproperlyConfigured, match=r"FLUXO\['DASHBOARD_DECORATOR'\] must be"):
        _settings.read({"DASHBOARD_DECORATOR": value})
    assert _settings.read({}).dashboard_decorator == _settings.STAFF_ONLY
