"""The dashboard's security: the token, the host check, cross-site requests, escaping.

Every request goes through ``Dashboard.wsgi`` (the ASGI face shares the same guard,
as tests/unit/test_ui_pages.py shows for the pages).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

import fluxo
from fluxo.ui import LOOPBACK_HOSTS, Dashboard

pytest.importorskip("jinja2")

TOKEN = "t0ken-for-the-dashboard-tests"


@fluxo.step
def echo(text: str) -> str:
    return text


@fluxo.workflow(name="guard.waiter")
def waiter(text: str) -> str:
    echo(text)
    return str(fluxo.wait_for_signal("go"))


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=[waiter]) as engine, engine.worker(idle_timeout=0.1):
        yield engine


def _waiting(engine: fluxo.Engine, run_id: str, text: str = "hello") -> None:
    import time

    engine.start(waiter.options(id=run_id), text)
    deadline = time.monotonic() + 10
    while engine.get_run(run_id).status is not fluxo.RunStatus.WAITING:
        assert time.monotonic() < deadline, "the run never waited"
        time.sleep(0.02)


def _client(dashboard: Dashboard, **kwargs: object) -> httpx.Client:
    return httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi),
        base_url="http://127.0.0.1:8765",
        **kwargs,  # type: ignore[arg-type]
    )


PAGES = [
    ("GET", "/"),
    ("GET", "/?status=waiting"),
    ("GET", "/counts"),
    ("GET", "/run?id=w-1"),
    ("GET", "/event?id=w-1&seq=0"),
    ("GET", "/live"),
    ("GET", "/static/fluxo.css"),
    ("GET", "/static/fluxo.js"),
    ("GET", "/no-such-page"),
    ("POST", "/run/cancel"),
    ("POST", "/run/signal"),
    ("PUT", "/"),
]


@pytest.mark.parametrize(("method", "path"), PAGES)
def test_with_a_token_every_page_refuses_a_request_without_it(
    engine: fluxo.Engine, method: str, path: str
) -> None:
    _waiting(engine, "w-1")
    dashboard = Dashboard(engine, token=TOKEN)
    with _client(dashboard) as client:
        reply = client.request(method, path, data={"id": "w-1"} if method == "POST" else None)
        assert reply.status_code == 401
        assert "needs its token" in reply.text
        assert "w-1" not in reply.text
        wrong = client.request(method, path, headers={"authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
    assert engine.get_run("w-1").status is fluxo.RunStatus.WAITING  # nothing was done
    dashboard.close()


def test_the_bearer_token_opens_the_pages(engine: fluxo.Engine) -> None:
    _waiting(engine, "w-1")
    dashboard = Dashboard(engine, token=TOKEN)
    with _client(dashboard, headers={"authorization": f"Bearer {TOKEN}"}) as client:
        assert client.get("/").status_code == 200
        assert client.get("/run", params={"id": "w-1"}).status_code == 200
        assert client.get("/counts").json()["waiting"] == 1
    dashboard.close()


def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_address(
    engine: fluxo.Engine,
) -> None:
    dashboard = Dashboard(engine, token=TOKEN)
    with _client(dashboard) as client:
        first = client.get("/", params={"token": TOKEN, "status": "waiting"})
        assert first.status_code == 303
        assert first.headers["location"] == "/?status=waiting"
        cookie = first.headers["set-cookie"]
        assert re.match(r"fluxo_ui_token_[0-9a-f]{10}=", cookie)
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert client.get("/").status_code == 200  # the client kept the cookie
        client.cookies.clear()
        assert client.get("/").status_code == 401
        assert client.get("/", params={"token": "wrong-token-wrong-token"}).status_code == 401
    dashboard.close()


@pytest.mark.parametrize("path", ["/%2F%2Fattacker.example/", "/\\attacker.example/"])
def test_the_token_redirect_stays_on_the_dashboard(engine: fluxo.Engine, path: str) -> None:
    dashboard = Dashboard(engine, token=TOKEN)
    with _client(dashboard) as client:
        reply = client.get(path, params={"token": TOKEN})
        assert reply.status_code == 303
        location = reply.headers["location"]
        # Browsers read //host, ///host and /\host as the address of another site.
        assert location[1:2] not in ("/", "\\"), location
        assert location == "/attacker.example/"
    dashboard.close()


def test_the_token_redirect_of_a_path_out_of_latin_1_is_quoted(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine, token=TOKEN)
    with _client(dashboard) as client:
        reply = client.get("/run/€", params={"token": TOKEN, "id": "w-1"})
        assert reply.status_code == 303
        assert reply.headers["location"] == "/run/%E2%82%AC?id=w-1"
    dashboard.close()


def test_two_dashboards_of_one_host_keep_a_cookie_each(engine: fluxo.Engine) -> None:
    first, second = Dashboard(engine, token=TOKEN), Dashboard(engine, token=TOKEN[::-1])
    with _client(first) as one, _client(second) as other:
        one_cookie = one.get("/", params={"token": TOKEN}).headers["set-cookie"].split("=")[0]
        other_cookie = other.get("/", params={"token": TOKEN[::-1]}).headers["set-cookie"]
        assert one_cookie != other_cookie.split("=")[0]
    first.close()
    second.close()


def test_the_token_must_be_long_enough(engine: fluxo.Engine) -> None:
    with pytest.raises(fluxo.DefinitionError, match="at least 16 characters"):
        Dashboard(engine, token="1234")


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8765", 200),
        ("localhost:8765", 200),
        ("[::1]:8765", 200),
        ("127.0.0.1", 200),
        ("evil.example", 421),
        ("evil.example:8765", 421),
        ("127.0.0.1.evil.example", 421),
        ("", 421),
    ],
)
def test_a_loopback_dashboard_answers_loopback_names_only(
    engine: fluxo.Engine, host: str, status: int
) -> None:
    dashboard = Dashboard(engine, allowed_hosts=LOOPBACK_HOSTS)
    with _client(dashboard) as client:
        reply = client.get("/", headers={"host": host})
        assert reply.status_code == status
        if status == 421:
            assert "answers to" in reply.text
    dashboard.close()


@pytest.fixture
def dashboard(engine: fluxo.Engine) -> Iterator[Dashboard]:
    dashboard = Dashboard(engine)
    yield dashboard
    dashboard.close()


def _form_token(client: httpx.Client, run_id: str) -> str:
    page = client.get("/run", params={"id": run_id})
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found.group(1)


def test_a_post_without_the_form_token_is_refused(
    engine: fluxo.Engine, dashboard: Dashboard
) -> None:
    _waiting(engine, "w-1")
    with _client(dashboard) as client:
        _form_token(client, "w-1")  # the cookie is set; the form value is not sent
        reply = client.post("/run/cancel", data={"id": "w-1"})
        assert reply.status_code == 403
        assert "form token is missing or stale" in reply.text
        forged = client.post("/run/cancel", data={"id": "w-1", "csrf": "A" * 43})
        assert forged.status_code == 403
    assert not engine.get_run("w-1").cancel_requested


def test_a_post_whose_cookie_is_gone_is_refused(engine: fluxo.Engine, dashboard: Dashboard) -> None:
    _waiting(engine, "w-1")
    with _client(dashboard) as client:
        token = _form_token(client, "w-1")
        client.cookies.clear()
        assert client.post("/run/cancel", data={"id": "w-1", "csrf": token}).status_code == 403
    assert not engine.get_run("w-1").cancel_requested


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},
        {"origin": "http://127.0.0.1:9999"},  # another port of this host is another origin
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
    ],
)
def test_a_cross_site_post_is_refused_even_with_the_token(
    engine: fluxo.Engine, dashboard: Dashboard, headers: dict[str, str]
) -> None:
    _waiting(engine, "w-1")
    with _client(dashboard) as client:
        token = _form_token(client, "w-1")
        reply = client.post("/run/cancel", data={"id": "w-1", "csrf": token}, headers=headers)
        assert reply.status_code == 403
        assert "refused" in reply.text
    assert not engine.get_run("w-1").cancel_requested


def test_a_same_origin_post_goes_through(engine: fluxo.Engine, dashboard: Dashboard) -> None:
    _waiting(engine, "w-1")
    with _client(dashboard) as client:
        token = _form_token(client, "w-1")
        reply = client.post(
            "/run/cancel",
            data={"id": "w-1", "csrf": token},
            headers={"origin": "http://127.0.0.1:8765", "sec-fetch-site": "same-origin"},
        )
        assert reply.status_code == 303
    assert engine.get_run("w-1").cancel_requested


def test_html_in_ids_payloads_and_errors_is_shown_escaped(
    engine: fluxo.Engine, dashboard: Dashboard
) -> None:
    evil = "<script>alert(1)</script>"
    run_id = "<img src=x onerror=alert(2)>"
    _waiting(engine, run_id, evil)
    with _client(dashboard) as client:
        token = _form_token(client, run_id)
        sent = client.post(
            "/run/signal",
            data={"id": run_id, "name": "<b>go</b>", "payload": f'"{evil}"', "csrf": token},
        )
        assert sent.status_code == 303
        pages = [
            client.get("/"),
            client.get("/", params={"fragment": "1"}),
            client.get("/run", params={"id": run_id}),
            client.get("/run", params={"id": run_id, "fragment": "1"}),
            client.get("/", params={"workflow": evil}),
            client.get("/", params={"since": evil}),
        ]
    for page in pages:
        assert "<script>alert" not in page.text
        assert "<img src=x" not in page.text
        assert "<b>go</b>" not in page.text
    run_page = pages[2].text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run_page  # the input, shown
    assert "&lt;img src=x onerror=alert(2)&gt;" in run_page
    assert "&lt;b&gt;go&lt;/b&gt;" in run_page  # the pending signal's name
    assert "&lt;script&gt;" in pages[4].text  # the filter, echoed in its field


def test_pages_carry_a_content_security_policy(engine: fluxo.Engine, dashboard: Dashboard) -> None:
    with _client(dashboard) as client:
        page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy.replace("style-src-attr 'unsafe-inline'", "")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script: the policy would block it
    assert " onclick=" not in page.text
    assert " onsubmit=" not in page.text


def test_a_huge_body_is_refused(engine: fluxo.Engine, dashboard: Dashboard) -> None:
    with _client(dashboard) as client:
        reply = client.post("/run/signal", content=b"x" * (2 << 20))
    assert reply.status_code == 413
