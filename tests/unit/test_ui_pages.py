"""The dashboard's pages and actions, through both of its faces: WSGI and ASGI.

Each test runs the same requests through ``Dashboard.wsgi`` and ``Dashboard.asgi``
(httpx's transports), on an engine with a worker on the in-memory store.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import fluxo
from fluxo.ui import Dashboard

pytest.importorskip("jinja2")


@fluxo.step
def add(a: int, b: int) -> int:
    return a + b


@fluxo.workflow(name="ui.adder")
def adder(x: int) -> int:
    return add(x, 1)


@fluxo.workflow(name="ui.approval")
def approval(who: str) -> str:
    answer = fluxo.wait_for_signal("approve")
    return f"{who}: {answer}"


@fluxo.step(retry=fluxo.Retry(max_attempts=1))
def explode(text: str) -> None:
    raise ValueError(text)


@fluxo.workflow(name="ui.failing")
def failing(text: str) -> None:
    explode(text)


WORKFLOWS = [adder, approval, failing]


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=WORKFLOWS) as engine, engine.worker(idle_timeout=0.1):
        yield engine


class Client:
    """Requests through one face of the dashboard, answered synchronously."""

    def __init__(self, dashboard: Dashboard, face: str) -> None:
        self.face = face
        if face == "wsgi":
            self._sync: httpx.Client | None = httpx.Client(
                transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
            )
        else:
            self._sync = None
            self._loop = asyncio.new_event_loop()
            self._async = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=dashboard.asgi), base_url="http://127.0.0.1"
            )

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        if self._sync is not None:
            return self._sync.request(method, url, **kwargs)
        return self._loop.run_until_complete(self._async.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
        else:
            self._loop.run_until_complete(self._async.aclose())
            self._loop.close()


@pytest.fixture(params=["wsgi", "asgi"])
def client(request: pytest.FixtureRequest, engine: fluxo.Engine) -> Iterator[Client]:
    dashboard = Dashboard(engine)
    client = Client(dashboard, request.param)
    yield client
    client.close()
    dashboard.close()


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _run_ids(page: httpx.Response) -> list[str]:
    return re.findall(r'<tr data-run="([^"]*)"', page.text)


def test_runs_page_lists_runs_newest_first_with_links(client: Client, engine: fluxo.Engine) -> None:
    for i in range(3):
        engine.start(adder.options(id=f"add-{i}"), i).result(timeout=10)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert _run_ids(page) == ["add-2", "add-1", "add-0"]
    assert 'href="/run?id=add-1"' in page.text
    assert "content-security-policy" in page.headers


def test_counts_are_per_status_and_per_workflow(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="c-1"), 1).result(timeout=10)
    engine.start(approval.options(id="c-2"), "ann")
    _wait(lambda: engine.get_run("c-2").status is fluxo.RunStatus.WAITING, "the wait")
    counts = client.get("/counts").json()
    assert counts["completed"] == 1
    assert counts["waiting"] == 1
    assert set(counts) == {s.value for s in fluxo.RunStatus}
    time.sleep(2.1)  # past the counts' cache
    assert client.get("/counts", params={"workflow": "ui.adder"}).json()["waiting"] == 0


def test_filters_by_status_workflow_and_id_prefix(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="order-1"), 1).result(timeout=10)
    engine.start(adder.options(id="refund-1"), 1).result(timeout=10)
    engine.start(approval.options(id="order-2"), "bo")
    _wait(lambda: engine.get_run("order-2").status is fluxo.RunStatus.WAITING, "the wait")
    assert _run_ids(client.get("/", params={"status": "waiting"})) == ["order-2"]
    assert _run_ids(client.get("/", params={"workflow": "ui.adder"})) == ["refund-1", "order-1"]
    assert _run_ids(client.get("/", params={"id": "order-"})) == ["order-2", "order-1"]
    both = client.get("/", params=[("status", "waiting"), ("status", "completed")])
    assert len(_run_ids(both)) == 3


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "finished"}, "status: no status &#39;finished&#39;"),
        ({"size": "7"}, "size: &#39;7&#39; is not a page size"),
        ({"since": "yesterday"}, "since: &#39;yesterday&#39; is not a time"),
        ({"since": "1h", "until": "2h"}, "since (1h) is later than until (2h)"),
        ({"after": "not-a-cursor"}, "after: this page link is damaged"),
        ({"id": "a\x00b"}, "id: "),
    ],
)
def test_a_bad_filter_is_named_on_the_page(
    client: Client, params: dict[str, str], message: str
) -> None:
    page = client.get("/", params=params)
    assert page.status_code == 400
    assert message in page.text
    assert 'role="alert"' in page.text


def test_run_page_shows_input_result_and_events(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="r-1"), 41).result(timeout=10)
    page = client.get("/run", params={"id": "r-1"})
    assert page.status_code == 200
    assert 'data-status="completed"' in page.text
    assert re.search(r"<h2>Result</h2><pre class=\"value\">42</pre>", page.text)
    assert page.text.count("<tr data-seq=") == 3  # started, the step, completed
    event = client.get("/event", params={"id": "r-1", "seq": "1"}).json()
    assert event["kind"] == "step_completed"
    assert event["data"] == 42


def test_run_page_shows_the_error_with_its_traceback(client: Client, engine: fluxo.Engine) -> None:
    handle = engine.start(failing.options(id="f-1"), "no <luck>")
    with pytest.raises(fluxo.WorkflowFailedError):
        handle.result(timeout=10)
    page = client.get("/run", params={"id": "f-1"})
    assert "<h2>Error</h2>" in page.text
    assert "no &lt;luck&gt;" in page.text
    assert re.search(
        r"Raised in step <code>[\w.]*explode</code>: <strong>builtins.ValueError", page.text
    )
    assert "The step's traceback" in page.text
    assert "raise ValueError(text)" in page.text  # the user's own line
    assert "The workflow's traceback" in page.text
    assert 'name="retry"' in page.text
    assert 'name="cancel"' not in page.text


class _KeyGone(Exception):
    """What an encrypting codec raises when the key that wrote a payload is gone."""


class _LockedCodec:
    def encode(self, value: Any) -> bytes:
        raise TypeError("this codec only reads")

    def decode(self, data: bytes, type: Any = Any) -> Any:
        raise _KeyGone("no key for this payload")


def test_payloads_the_codec_cannot_read_do_not_break_the_run_page(engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="r-1"), 41).result(timeout=10)
    locked = fluxo.Engine(engine.store, workflows=WORKFLOWS, codec=_LockedCodec())
    dashboard = Dashboard(locked)
    client = Client(dashboard, "wsgi")
    try:
        page = client.get("/run", params={"id": "r-1"})
        assert page.status_code == 200, page.text
        assert 'data-status="completed"' in page.text
        event = client.get("/event", params={"id": "r-1", "seq": "1"})
        assert event.status_code == 200
        assert event.json()["kind"] == "step_completed"
    finally:
        client.close()
        dashboard.close()
        locked.close()


def test_unknown_run_and_page_are_404(client: Client) -> None:
    assert client.get("/run", params={"id": "nope"}).status_code == 404
    assert "no run &#39;nope&#39;" in client.get("/run", params={"id": "nope"}).text
    assert client.get("/run").status_code == 400
    assert client.get("/elsewhere").status_code == 404
    assert client.get("/static/../__init__.py").status_code == 404
    assert client.get("/event", params={"id": "nope", "seq": "0"}).status_code == 404


def test_event_seq_out_of_range_is_400(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="e-1"), 1).result(timeout=10)
    reply = client.get("/event", params={"id": "e-1", "seq": "99"})
    assert reply.status_code == 400
    assert "has events 0 to 2" in reply.json()["error"]


def test_signal_from_the_page_completes_the_run(client: Client, engine: fluxo.Engine) -> None:
    handle = engine.start(approval.options(id="s-1"), "kim")
    _wait(lambda: engine.get_run("s-1").status is fluxo.RunStatus.WAITING, "the wait")
    page = client.get("/run", params={"id": "s-1"})
    sent = client.post(
        "/run/signal",
        data={"id": "s-1", "name": "approve", "payload": '{"ok": true}', "csrf": _csrf(page)},
    )
    assert sent.status_code == 303
    assert sent.headers["location"] == "/run?id=s-1&done=signal"
    assert handle.result(timeout=10) == "kim: {'ok': True}"
    shown = client.get(sent.headers["location"])
    assert "Signal sent." in shown.text


def test_a_payload_that_is_not_json_is_named(client: Client, engine: fluxo.Engine) -> None:
    engine.start(approval.options(id="s-2"), "kim")
    page = client.get("/run", params={"id": "s-2"})
    reply = client.post(
        "/run/signal",
        data={"id": "s-2", "name": "approve", "payload": "{oops", "csrf": _csrf(page)},
    )
    assert reply.status_code == 409
    assert "payload: not JSON" in reply.text
    assert "{oops" in reply.text  # what was typed is kept in the form


def test_cancel_and_resume_from_the_page(client: Client, engine: fluxo.Engine) -> None:
    handle = engine.start(approval.options(id="k-1"), "kim")
    _wait(lambda: engine.get_run("k-1").status is fluxo.RunStatus.WAITING, "the wait")
    csrf = _csrf(client.get("/run", params={"id": "k-1"}))
    assert client.post("/run/cancel", data={"id": "k-1", "csrf": csrf}).status_code == 303
    with pytest.raises(fluxo.WorkflowCancelledError):
        handle.result(timeout=10)
    page = client.get("/run", params={"id": "k-1"})
    assert 'data-status="cancelled"' in page.text
    assert 'name="resume"' in page.text
    assert client.post("/run/resume", data={"id": "k-1", "csrf": csrf}).status_code == 303
    _wait(lambda: engine.get_run("k-1").status is fluxo.RunStatus.WAITING, "the resumed wait")


def test_retry_from_the_page(client: Client, engine: fluxo.Engine) -> None:
    with pytest.raises(fluxo.WorkflowFailedError):
        engine.start(failing.options(id="t-1"), "bad").result(timeout=10)
    csrf = _csrf(client.get("/run", params={"id": "t-1"}))
    assert client.post("/run/retry", data={"id": "t-1", "csrf": csrf}).status_code == 303
    _wait(lambda: engine.get_run("t-1").status is fluxo.RunStatus.FAILED, "the retried run")
    kinds = [event.kind for event in engine.history("t-1")]
    assert "run_retried" in kinds


def test_an_action_the_run_refuses_shows_fluxos_message(
    client: Client, engine: fluxo.Engine
) -> None:
    engine.start(adder.options(id="v-1"), 1).result(timeout=10)
    csrf = _csrf(client.get("/run", params={"id": "v-1"}))
    refused = client.post("/run/cancel", data={"id": "v-1", "csrf": csrf})
    assert refused.status_code == 409
    assert "already finished (completed); there is nothing to cancel" in refused.text
    assert 'data-status="completed"' in refused.text
    # The page's address is now the form's: live refresh reads the run's own page.
    assert 'data-refresh="/run?id=v-1"' in refused.text


def test_an_action_on_an_unknown_run_is_404(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="u-1"), 1).result(timeout=10)
    csrf = _csrf(client.get("/run", params={"id": "u-1"}))
    assert client.post("/run/cancel", data={"id": "ghost", "csrf": csrf}).status_code == 404


def test_fragment_is_only_the_live_part(client: Client, engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="g-1"), 1).result(timeout=10)
    whole = client.get("/run", params={"id": "g-1"})
    part = client.get("/run", params={"id": "g-1", "fragment": "1"})
    assert "<html" in whole.text
    assert "<html" not in part.text
    assert 'data-status="completed"' in part.text
    assert "<table" in client.get("/", params={"fragment": "1"}).text


def test_static_files_are_served_with_types(client: Client) -> None:
    css = client.get("/static/fluxo.css")
    assert css.status_code == 200
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    js = client.get("/static/fluxo.js")
    assert "javascript" in js.headers["content-type"]
    assert "EventSource" in js.text


def test_other_methods_are_refused(client: Client) -> None:
    assert client.request("PUT", "/").status_code == 405
    assert client.request("DELETE", "/run").status_code == 405


def test_mounted_under_a_prefix_links_carry_it(engine: fluxo.Engine) -> None:
    engine.start(adder.options(id="p-1"), 1).result(timeout=10)
    dashboard = Dashboard(engine)
    try:
        from werkzeug.exceptions import NotFound
        from werkzeug.middleware.dispatcher import DispatcherMiddleware

        mounted = DispatcherMiddleware(NotFound(), {"/ops/fluxo": dashboard.wsgi})
        client = httpx.Client(
            transport=httpx.WSGITransport(app=mounted), base_url="http://127.0.0.1"
        )
        page = client.get("/ops/fluxo/")
        assert 'href="/ops/fluxo/run?id=p-1"' in page.text
        assert 'src="/ops/fluxo/static/fluxo.js"' in page.text
        assert "Path=/ops/fluxo" in page.headers["set-cookie"]
    finally:
        dashboard.close()


def test_an_async_engine_is_taken(engine: fluxo.Engine) -> None:
    async_engine = fluxo.AsyncEngine(engine)
    dashboard = Dashboard(async_engine)
    assert dashboard.engine is engine
    dashboard.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"token": "short"}, "at least 16 characters"),
        ({"allowed_hosts": "localhost"}, "takes a list of host names"),
    ],
)
def test_bad_arguments_are_named(
    engine: fluxo.Engine, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(fluxo.DefinitionError, match=message):
        Dashboard(engine, **kwargs)


def test_not_an_engine_is_refused() -> None:
    with pytest.raises(fluxo.DefinitionError, match=r"takes a fluxo\.Engine"):
        Dashboard("memory://")  # type: ignore[arg-type]


def test_a_store_failure_is_a_page_not_a_crash(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine)
    client = httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
    )

    def down(*args: Any, **kwargs: Any) -> Any:
        raise fluxo.StoreUnavailableError("the database went away")

    engine.store.list_runs = down  # type: ignore[method-assign]
    page = client.get("/")
    assert page.status_code == 503
    assert "the database went away" in page.text
    dashboard.close()


def test_a_damaged_run_shows_fluxos_message(tmp_path: Any) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path / 'damaged.db'}"
    with fluxo.Engine(url, workflows=WORKFLOWS) as engine:
        engine.run(adder.options(id="broken"), 1)
        with sqlite3.connect(tmp_path / "damaged.db") as db:
            db.execute("UPDATE fluxo_runs SET status = 'bogus'")
        dashboard = Dashboard(engine)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
        )
        listed = client.get("/")
        assert '<span class="badge st-damaged">damaged</span>' in listed.text
        page = client.get("/run", params={"id": "broken"})
        assert page.status_code == 500
        assert "the stored record of run &#39;broken&#39; is damaged" in page.text
        dashboard.close()


@fluxo.step(name="ui.refuse", retry=fluxo.Retry(max_attempts=1))
def refuse(text: str) -> None:
    if not text.startswith("first"):
        time.sleep(0.2)  # the first branch fails first: the last to fail is another
    raise ValueError(text)


@fluxo.workflow(name="ui.fan_out")
def fan_out(texts: list[str]) -> None:
    fluxo.map(refuse, texts)


def test_a_failed_block_names_the_branch_whose_error_failed_the_run() -> None:
    with fluxo.Engine("memory://", workflows=[fan_out]) as engine:
        with pytest.raises(fluxo.WorkflowFailedError):
            engine.run(fan_out.options(id="fan"), ["first <one>", "second <two>", "third"])
        said = engine.get_run("fan")
        assert said.status is fluxo.RunStatus.FAILED
        message = json_error_message(engine, "fan")
        raised = next(text for text in ("first <one>", "second <two>", "third") if text in message)
        dashboard = Dashboard(engine)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
        )
        page = client.get("/run", params={"id": "fan"}).text
        cause = re.search(r'<p class="cause">(.*?)</p>', page, re.S)
        assert cause is not None
        escaped = raised.replace("<", "&lt;").replace(">", "&gt;")
        assert escaped in cause.group(1), (raised, cause.group(1))
        dashboard.close()


def json_error_message(engine: fluxo.Engine, run_id: str) -> str:
    from fluxo import _cli_format

    described = _cli_format.describe_run(engine.store.load(run_id), engine.codec)
    return str(described["error"]["message"])


@fluxo.workflow(name="ui.long")
def long_run(n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return total


def test_a_large_page_goes_gzipped_to_a_client_that_takes_it() -> None:
    import gzip

    with fluxo.Engine("memory://", workflows=[long_run]) as engine:
        engine.run(long_run.options(id="long"), 400)
        dashboard = Dashboard(engine)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
        )
        plain = client.get("/run", params={"id": "long"}, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert len(plain.content) > 32 * 1024
        with client.stream(
            "GET", "/run", params={"id": "long"}, headers={"accept-encoding": "gzip"}
        ) as packed:
            raw = b"".join(packed.iter_raw())
            assert packed.headers["content-encoding"] == "gzip"
            assert packed.headers["vary"] == "accept-encoding"
        assert len(raw) < len(plain.content) / 5
        shown = gzip.decompress(raw).decode()
        assert shown.count("<tr data-seq=") == 402
        small = client.get("/static/fluxo.js", headers={"accept-encoding": "gzip"})
        assert "content-encoding" not in small.headers  # a few kilobytes: sent as they are
        dashboard.close()


def test_a_huge_history_draws_its_latest_rows_unless_asked_for_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fluxo.ui import _pages

    monkeypatch.setattr(_pages, "SHOWN_ROWS", 50)  # as 5,000 of 50,000 events
    with fluxo.Engine("memory://", workflows=[long_run]) as engine:
        engine.run(long_run.options(id="huge"), 120)  # 122 events
        dashboard = Dashboard(engine)
        client = httpx.Client(
            transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
        )
        page = client.get("/run", params={"id": "huge"}).text
        assert "This history has 122 events: the latest 50 timeline rows" in page
        assert page.count("<tr data-seq=") == 50
        assert page.count('class="tl-row ') == 50
        assert '<tr data-seq="121"' in page  # the latest ones
        assert '<tr data-seq="0"' not in page
        assert 'href="/run?id=huge&amp;all=1"' in page
        whole = client.get("/run", params={"id": "huge", "all": "1"}).text
        assert "This history has" not in whole
        assert whole.count("<tr data-seq=") == 122
        assert 'data-refresh="/run?id=huge&amp;all=1"' in whole  # live refresh keeps it whole
        small = client.get("/run", params={"id": "huge"}).text
        assert small.count("<tr data-seq=") == 50
        dashboard.close()
