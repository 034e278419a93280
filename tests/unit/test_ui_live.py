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


class FlakyStore:
    """A store whose change feed fails twice with a driver's own error, then works."""

    def __init__(self, store: fluxo.Store) -> None:
        self.store = store
        self.failures = 2

    def change_token(self, run_id: str | None) -> object:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("the driver lost its socket")
        return self.store.change_token(run_id)

    def wait_for_change(self, *args: object, **kwargs: object) -> bool:
        return self.store.wait_for_change(*args, **kwargs)  # type: ignore[arg-type]


def test_the_watcher_outlives_a_drivers_error_and_says_so_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_live.time, "sleep", lambda seconds: None)  # no back-off wait here
    engine = fluxo.Engine("memory://", workflows=[_echo])
    flaky = FlakyStore(engine.store)
    changes = _live.Changes(flaky)  # type: ignore[arg-type]
    with caplog.at_level("INFO", logger="fluxo.ui._live"):
        before = changes.generation  # starts the thread
        for attempt in range(50):  # a change made while it still fails is not one it waits on
            engine.start(_echo.options(id=f"after-the-errors-{attempt}"), 1)
            if changes.wait(before, 0.2) != before:
                break
        else:
            raise AssertionError("the watcher never saw a change after its errors")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot watch the store for changes" in warnings[0].getMessage()
    assert any("watches the store for changes again" in r.getMessage() for r in caplog.records)
    changes.close()
    engine.close()


@fluxo.workflow(name="live.echo")
def _echo(n: int) -> int:
    return n


def test_the_runs_page_hears_of_changes_to_its_own_rows_only() -> None:
    import threading
    import time

    from fluxo.ui import _http

    engine = fluxo.Engine("memory://", workflows=[_echo])
    dashboard = Dashboard(engine)
    request = _http.Request("GET", "/live", query={"status": ["completed"]})
    stream = dashboard.handle(request)
    assert not isinstance(stream, _http.Response)
    chunks: list[bytes] = []

    def read() -> None:
        for chunk in stream.chunks():
            chunks.append(chunk)
            if chunk == _live.CHANGE:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 10
    while not chunks:  # the stream has read the page it compares with
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.2)
    engine.start(_echo.options(id="not-on-the-page"), 1)  # pending: the page shows completed
    time.sleep(1.0)
    assert _live.CHANGE not in chunks
    engine.run(_echo.options(id="on-the-page"), 2)  # runs here and completes
    reader.join(10)
    assert chunks[-1] == _live.CHANGE
    dashboard.close()
    engine.close()


def test_an_asgi_stream_ends_as_soon_as_its_page_goes_away(engine: fluxo.Engine) -> None:
    dashboard = Dashboard(engine)
    sent: list[dict[str, object]] = []

    async def visit() -> None:
        leave = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)
            if message.get("body") == b"retry: 3000\n\n":
                leave.set()  # the page is closed once its stream has opened

        scope = {"type": "http", "method": "GET", "path": "/live", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1")], "root_path": ""}  # fmt: skip
        # The next keep-alive ping is 15 s away: the stream must not wait for it.
        await asyncio.wait_for(dashboard.asgi(scope, receive, send), 10)

    asyncio.run(visit())
    assert sent[0]["type"] == "http.response.start"
    assert sent[1]["body"] == b"retry: 3000\n\n"
    dashboard.close()


def test_head_answers_headers_without_a_body_or_a_stream(engine: fluxo.Engine) -> None:
    import httpx

    dashboard = Dashboard(engine)
    client = httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
    )
    page = client.head("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.content == b""
    live = client.head("/live")
    assert live.status_code == 200
    assert live.headers["content-type"] == "text/event-stream"
    assert live.content == b""
    dashboard.close()


def test_an_asgi_stream_cancelled_by_its_server_ends_cancelled(engine: fluxo.Engine) -> None:
    # A server's shutdown (uvicorn --timeout-graceful-shutdown) or a framework's task
    # group cancels the stream's task while the stream waits for a change.
    dashboard = Dashboard(engine)

    async def visit() -> None:
        opened = asyncio.Event()
        requested = False

        async def receive() -> dict[str, object]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the page stays open
            raise AssertionError("unreachable")

        async def send(message: dict[str, object]) -> None:
            if message.get("body") == b"retry: 3000\n\n":
                opened.set()

        scope = {"type": "http", "method": "GET", "path": "/live", "query_string": b"",
                 "headers": [(b"host", b"127.0.0.1")], "root_path": ""}  # fmt: skip
        task = asyncio.ensure_future(dashboard.asgi(scope, receive, send))
        await opened.wait()
        for _ in range(20):  # the stream is past its first chunk, waiting
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not others, others  # the stream's own tasks were ended, not left pending

    asyncio.run(visit())
    dashboard.close()


class ChangeAfterAQuietWait:
    """A store where a run starts just as the watcher's wait ends quietly."""

    def __init__(self, engine: fluxo.Engine) -> None:
        self.engine = engine
        self.store = engine.store
        self.started = False

    def change_token(self, run_id: str | None) -> object:
        return self.store.change_token(run_id)

    def wait_for_change(self, *args: object, **kwargs: object) -> bool:
        changed = self.store.wait_for_change(*args, **kwargs)  # type: ignore[arg-type]
        if not changed and not self.started:
            self.started = True
            self.engine.start(_echo.options(id="between-two-waits"), 1)
        return changed


def test_a_change_right_after_a_quiet_wait_is_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_live, "PING_EVERY", 0.05)
    engine = fluxo.Engine("memory://", workflows=[_echo])
    store = ChangeAfterAQuietWait(engine)
    changes = _live.Changes(store)  # type: ignore[arg-type]
    before = changes.generation  # starts the thread
    while not store.started:
        changes.wait(before, 0.05)
    # The change came after the wait ended and before the next one: that next wait sees it.
    assert changes.wait(before, 10) != before
    changes.close()
    engine.close()


def test_head_of_a_refused_request_has_no_body_either(engine: fluxo.Engine) -> None:
    import httpx

    dashboard = Dashboard(engine, token="a-token-of-twenty-chars")
    client = httpx.Client(
        transport=httpx.WSGITransport(app=dashboard.wsgi), base_url="http://127.0.0.1"
    )
    refused = client.head("/")
    assert refused.status_code == 401
    assert refused.content == b""  # a WSGI server such as wsgiref sends what it is given
    assert refused.headers["x-frame-options"] == "DENY"
    dashboard.close()


def test_a_busy_store_is_read_at_most_once_per_interval(
    engine: fluxo.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = _live.Changes(engine.store)
    reads: list[int] = []
    pauses: list[float] = []

    def version() -> object:
        reads.append(len(reads))
        if len(reads) == 1:  # the stream's first reading: the store changes right after
            changes._bump()
        return "the same rows"  # the store changes, the page does not

    def pause(seconds: float) -> None:  # each pause, the store has changed again
        pauses.append(seconds)
        if len(reads) >= 5:
            changes.close()
        else:
            changes._bump()

    monkeypatch.setattr(_live.time, "sleep", pause)
    stream = _live.PageStream(changes, version, min_interval=0.75)
    chunks = list(itertools.islice(stream.chunks(), 20))
    assert _live.CHANGE not in chunks
    assert len(reads) == 5
    assert pauses == [0.75] * 4  # a pause after every reading that a change caused
