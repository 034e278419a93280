"""Live refresh: the thread that watches the store, and the streams of open pages."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest

import fluxo
from fluxo.ui import Dashboard, _live

pytest.importorskip("jinja2")


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=[]) as engine:
        yield engine


def test_an_open_wsgi_stream_ends_when_the_dashboard_is_closed(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine)
    stream = _live.PageStream(dashboard._changes, None, min_interval=0)
    chunks = stream.chunks()
    assert next(chunks) == b"retry: 3000\n\n"
    dashboard.close()
    rest = list(itertools.islice(chunks, 50))
    assert len(rest) < 50, "the stream went on after close(), pinging without a pause"
    assert b": ping\n\n" not in rest


def test_an_open_asgi_stream_ends_when_the_dashboard_is_closed(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine)
    stream = _live.PageStream(dashboard._changes, None, min_interval=0)

    async def read() -> list[bytes]:
        chunks = stream.achunks()
        assert await chunks.__anext__() == b"retry: 3000\n\n"
        dashboard.close()
        rest = []
        async for chunk in chunks:
            rest.append(chunk)
            if len(rest) == 50:
                break
        await chunks.aclose()
        return rest

    rest = asyncio.run(read())
    assert len(rest) < 50, "the stream went on after close(), pinging without a pause"


def test_a_stream_opened_after_close_ends_at_once(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine)
    dashboard.close()
    stream = _live.PageStream(dashboard._changes, None, min_interval=0)
    assert list(itertools.islice(stream.chunks(), 50)) == [b"retry: 3000\n\n"]


def test_the_watcher_stops_when_the_engine_is_closed() -> None:
    engine = fluxo.Engine("memory://", workflows=[])
    dashboard = Dashboard(engine)
    changes = dashboard._changes
    assert changes.generation == 0  # starts the watching thread
    thread = changes._thread
    assert thread is not None
    engine.close()  # a closed store answers every wait at once
    thread.join(10)
    assert not thread.is_alive(), "the watcher went on, waking without a pause"
    assert changes.closed
    stream = _live.PageStream(changes, None, min_interval=0)
    assert list(itertools.islice(stream.chunks(), 50)) == [b"retry: 3000\n\n"]
    dashboard.close()
