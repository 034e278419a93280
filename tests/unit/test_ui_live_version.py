"""The dashboard's live streams: a run page hears of a change made before its stream opened.

A run page is read, then its browser opens the stream: a run that completes in between
(a worker is quick after a signal) must still refresh the page, so the page names the
version of the run it shows and the stream compares with that, not with what it finds.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator

import httpx
import pytest

import fluxo
from fluxo.ui import Dashboard, _live, _pages

pytest.importorskip("jinja2")


@fluxo.workflow(name="live.approval")
def approval(who: str) -> str:
    return f"{who}: {fluxo.wait_for_signal('approve')}"


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=[approval]) as engine, engine.worker(idle_timeout=0.1):
        yield engine


@pytest.fixture
def changes(engine: fluxo.Engine) -> Iterator[_live.Changes]:
    watched = _live.Changes(engine.store)
    yield watched
    watched.close()


def _waiting(engine: fluxo.Engine, run_id: str) -> str:
    """Start a run, wait until it waits for its signal; return the version a page shows."""
    handle = engine.start(approval.options(id=run_id), "ann")
    for _ in range(500):
        if engine.get_run(handle.id).status is fluxo.RunStatus.WAITING:
            return _pages.live_version(engine.get_run(handle.id))
        time.sleep(0.01)
    raise AssertionError(f"run {run_id} never waited")


def _stream(
    engine: fluxo.Engine, changes: _live.Changes, run_id: str, shown: str
) -> _live.PageStream:
    return _live.PageStream(
        changes, lambda: _pages.live_version(engine.store.get_run(run_id)), shown=shown
    )


def test_a_change_between_the_page_and_its_stream_is_told_at_once(
    engine: fluxo.Engine, changes: _live.Changes
) -> None:
    shown = _waiting(engine, "late-1")
    engine.signal("late-1", "approve", "yes")
    assert engine.handle("late-1").result(timeout=10) == "ann: yes"  # before the stream opens
    chunks = _stream(engine, changes, "late-1", shown).chunks()
    assert next(chunks) == b"retry: 3000\n\n"
    assert next(chunks) == _live.CHANGE


def test_the_async_stream_tells_it_at_once_too(
    engine: fluxo.Engine, changes: _live.Changes
) -> None:
    shown = _waiting(engine, "late-2")
    engine.signal("late-2", "approve", "yes")
    engine.handle("late-2").result(timeout=10)

    async def first_two() -> list[bytes]:
        chunks = _stream(engine, changes, "late-2", shown).achunks()
        try:
            return [await anext(chunks), await anext(chunks)]
        finally:
            await chunks.aclose()

    assert asyncio.run(first_two()) == [b"retry: 3000\n\n", _live.CHANGE]


def test_a_stream_on_the_version_the_page_shows_waits_for_a_change(
    engine: fluxo.Engine, changes: _live.Changes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live, "PING_EVERY", 0.05)
    shown = _waiting(engine, "still")
    chunks = _stream(engine, changes, "still", shown).chunks()
    assert next(chunks) == b"retry: 3000\n\n"
    assert next(chunks) == b": ping\n\n"  # nothing moved: no refresh


def test_the_run_page_names_the_version_it_shows_in_its_stream_address(
    engine: fluxo.Engine,
) -> None:
    shown = _waiting(engine, "named")
    dashboard = Dashboard(engine)
    try:
        with httpx.Client(
            transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
        ) as client:
            page = client.get("/run", params={"id": "named"}).text
    finally:
        dashboard.close()
    found = re.search(r'data-live="([^"]+)"', page)
    assert found, page[:500]
    address = httpx.URL(found.group(1).replace("&amp;", "&"))
    assert address.path == "/live"
    assert dict(address.params) == {"run": "named", "v": shown}
