"""What the tests of the dashboard mounted in an app share: servers in threads, one walk-through.

:func:`wsgi_server` serves a WSGI app (Flask, Django) with werkzeug's threaded
server, :func:`asgi_server` an ASGI app (FastAPI, Django) with uvicorn, each in a
thread of the test, on a free port of 127.0.0.1. :func:`walk_through` is what a
logged-in user does with the dashboard, over real HTTP.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from typing import Any, Literal

import httpx

from tests.acceptance import _crash


@contextlib.contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with werkzeug's threaded server; yield its base URL."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="test-wsgi-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def asgi_server(
    app: Any, *, lifespan: Literal["on", "off"] = "on", root_path: str = ""
) -> Iterator[str]:
    """Serve ``app`` with uvicorn (``root_path``: as behind a proxy stripping it); yield its URL."""
    import uvicorn

    from tests.acceptance import _servers

    port = _servers.free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan=lifespan,
        root_path=root_path,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-asgi-server", daemon=True)
    thread.start()
    try:
        _crash.wait(lambda: server.started, 30, "uvicorn to start", every=0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def form_token(page: str) -> str:
    """The dashboard's form token on ``page`` (the hidden ``csrf`` field of its forms)."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found[1]


def walk_through(http: httpx.Client, prefix: str, run_id: str) -> None:
    """A logged-in user's visit: the runs, a run, a refused and a done cancel, files, live.

    ``http`` carries the app's login; ``run_id`` is a run waiting for a signal.
    """
    runs = http.get(f"{prefix}/")
    assert runs.status_code == 200, runs.text
    assert f'href="{prefix}/run?id={run_id}"' in runs.text
    assert f'href="{prefix}/static/fluxo.css"' in runs.text
    assert runs.headers["x-frame-options"] == "DENY"

    page = http.get(f"{prefix}/run", params={"id": run_id})
    assert page.status_code == 200, page.text
    assert run_id in page.text
    assert f'action="{prefix}/run/cancel"' in page.text
    token = form_token(page.text)
    assert http.cookies.get("fluxo_ui_csrf", path=prefix) == token  # scoped to the prefix

    refused = http.post(f"{prefix}/run/cancel", data={"id": run_id})
    assert refused.status_code == 403, refused.text
    assert "form token" in refused.text

    done = http.post(f"{prefix}/run/cancel", data={"id": run_id, "csrf": token})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"{prefix}/run?id={run_id}&done=cancel"
    after = http.get(done.headers["location"])
    assert "Cancellation requested." in after.text

    for name, kind in (("fluxo.css", "text/css"), ("fluxo.js", "javascript")):
        static = http.get(f"{prefix}/static/{name}")
        assert static.status_code == 200, name
        assert kind in static.headers["content-type"]
        assert static.content

    with http.stream("GET", f"{prefix}/live", params={"run": run_id}) as live:
        assert live.status_code == 200
        assert live.headers["content-type"] == "text/event-stream"
        first = next(live.iter_raw())
    assert first.startswith(b"retry: 3000")
