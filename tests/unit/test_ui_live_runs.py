"""The runs page's live stream: it watches the rows the page shows, with the page's filters."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import httpx
import pytest

import fluxo
from fluxo.ui import Dashboard, _http, _live

pytest.importorskip("jinja2")


@fluxo.workflow(name="live.runs.echo")
def _echo(n: int) -> int:
    return n


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=[_echo]) as engine:
        yield engine


@pytest.fixture
def dashboard(engine: fluxo.Engine) -> Iterator[Dashboard]:
    shown = Dashboard(engine)
    yield shown
    shown.close()


def _stream_of(dashboard: Dashboard, page: str) -> _live.PageStream:
    """The stream the runs page at ``page`` (its address) opens, as its browser would."""
    client = httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
    )
    with client:
        text = client.get(page).text
    found = re.search(r'<div id="live" data-live="([^"]+)"', text)
    assert found, text[:500]
    address = httpx.URL(found.group(1).replace("&amp;", "&"))
    query = {key: address.params.get_list(key) for key in address.params}
    stream = dashboard.handle(_http.Request("GET", address.path, query=query))
    assert isinstance(stream, _live.PageStream)
    return stream


def _until_change(stream: _live.PageStream, pings: int = 100) -> list[bytes]:
    """The stream's chunks up to its first ``change``, or ``pings`` quiet pings."""
    seen = []
    for chunk in stream.chunks():
        seen.append(chunk)
        if chunk == _live.CHANGE or seen.count(b": ping\n\n") >= pings:
            break
    return seen


def test_a_runs_page_filtered_by_id_prefix_hears_of_its_rows(
    engine: fluxo.Engine, dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "PING_EVERY", 0.05)
    engine.start(_echo.options(id="order-1"), 1)
    stream = _stream_of(dashboard, "/?id=order")
    chunks = stream.chunks()
    assert next(chunks) == b"retry: 3000\n\n"
    # The page's own rows are what it shows: nothing moved, so nothing to refresh.
    assert next(chunks) == b": ping\n\n"
    engine.cancel("order-1")
    assert _until_change(stream)[-1] == _live.CHANGE


def test_a_runs_page_up_to_an_age_hears_of_a_run_that_aged_into_it(
    engine: fluxo.Engine, dashboard: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "PING_EVERY", 0.05)
    engine.start(_echo.options(id="young"), 1)
    stream = _stream_of(dashboard, "/?until=1s")  # runs older than a second: none yet
    chunks = stream.chunks()
    assert next(chunks) == b"retry: 3000\n\n"
    client = httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
    )
    with client:
        while "young" not in client.get("/?until=1s&fragment=1").text:
            time.sleep(0.05)  # the page, refreshed now, shows the run
    engine.cancel("young")  # a change of a row the page shows now
    seen = [b"retry: 3000\n\n", *_until_change(stream)]
    assert seen[-1] == _live.CHANGE, seen
