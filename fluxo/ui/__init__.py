"""The Fluxo dashboard: see runs, read their histories as timelines, and steer them.

``fluxo ui --app myapp:engine`` serves it on 127.0.0.1 (docs/ui.md). The same
:class:`Dashboard` is a WSGI app (``dashboard.wsgi``) and an ASGI app
(``dashboard.asgi``); inside a Flask, Django or FastAPI application, behind its own
login, use that framework's adapter (docs/ui-mounting.md):
``fluxo.contrib.flask.dashboard_blueprint``, ``fluxo.contrib.django.dashboard``,
``fluxo.contrib.fastapi.dashboard_router``.

It needs Jinja2 (``pip install 'fluxo[ui]'``, which also brings the server that
``fluxo ui`` runs on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fluxo import _async_engine, _engine, _errors
from fluxo.ui import _guard, _http, _live, _pages

__all__ = ["Dashboard"]

LOOPBACK_HOSTS = _guard.LOOPBACK_HOSTS


def _templates() -> Any:
    try:
        import jinja2
    except ImportError:
        raise _errors.DefinitionError(
            "the Fluxo dashboard needs Jinja2: pip install 'fluxo[ui]'"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("fluxo.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


class Dashboard:
    """The dashboard of one engine, as a WSGI app (:attr:`wsgi`) and an ASGI app (:attr:`asgi`).

    Args:
        engine: the :class:`fluxo.Engine` (or :class:`fluxo.AsyncEngine`) whose store
            it shows. Actions (signal, cancel, retry, resume) go through it.
        token: when given, every request must carry it (see docs/ui.md, "Security").
            ``fluxo ui`` requires one to bind an address other than loopback.
        allowed_hosts: answer only requests whose ``Host`` is one of these names
            (any port); ``None`` accepts any (the application it is mounted in checks).
        title: the name shown in the page's header.

    Example:
        >>> dashboard = Dashboard(engine, token="s3cret")
        >>> app.mount("/fluxo", dashboard.asgi)  # FastAPI
    """

    def __init__(
        self,
        engine: _engine.Engine | _async_engine.AsyncEngine,
        *,
        token: str | None = None,
        allowed_hosts: Collection[str] | None = None,
        title: str = "Fluxo",
    ) -> None:
        if isinstance(engine, _async_engine.AsyncEngine):
            engine = engine.engine
        if not isinstance(engine, _engine.Engine):
            raise _errors.DefinitionError(
                f"Dashboard takes a fluxo.Engine or fluxo.AsyncEngine, not {type(engine).__name__}"
            )
        if token is not None and (not isinstance(token, str) or len(token) < 16):
            raise _errors.DefinitionError(
                "token must be a string of at least 16 characters (for example "
                "`python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        if isinstance(allowed_hosts, str):
            raise _errors.DefinitionError(
                f"allowed_hosts takes a list of host names, not the string {allowed_hosts!r}"
            )
        self.engine = engine
        env = _templates()
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._changes = _live.Changes(engine.store, ended=lambda: engine._closed)
        self._pages = _pages.Pages(
            engine,
            guard=_guard.Guard(token=token, allowed_hosts=allowed_hosts),
            changes=self._changes,
            render=lambda name, **values: env.get_template(name).render(**values),
            run_blocking=self._run_blocking,
            title=title,
        )
        pages, pool = self._pages, self._pool

        def wsgi(
            environ: MutableMapping[str, Any], start_response: Callable[..., Any]
        ) -> Iterable[bytes]:
            return _http.wsgi_call(pages, environ, start_response)

        async def asgi(
            scope: MutableMapping[str, Any], receive: _http.Receive, send: _http.Send
        ) -> None:
            await _http.asgi_call(pages, pool(), scope, receive, send)

        self.wsgi: Callable[[MutableMapping[str, Any], Callable[..., Any]], Iterable[bytes]] = wsgi
        """The dashboard as a WSGI application (Flask, Django, gunicorn)."""
        self.asgi: Callable[[MutableMapping[str, Any], _http.Receive, _http.Send], Any] = asgi
        """The dashboard as an ASGI application (uvicorn, FastAPI, Starlette)."""

    def handle(self, request: _http.Request) -> _http.Response | _http.Stream:
        """Answer one request (what the WSGI and ASGI apps call)."""
        return self._pages(request)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(8, thread_name_prefix="fluxo-ui")
            return self._executor

    async def _run_blocking(self, fn: Callable[[], object]) -> object:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self._pool(), fn)

    def close(self) -> None:
        """Stop watching the store and end open live streams. The engine stays open."""
        self._changes.close()
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None
