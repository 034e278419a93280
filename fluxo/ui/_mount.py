"""What the dashboard's framework adapters share: which dashboard answers, and its request.

The Flask blueprint, the Django URLconf and the FastAPI router serve the dashboard
as views of the application, so the application's own login guards it. Each is
given an engine (or a function that finds one) rather than a dashboard, since the
engines of Flask and Django apps are built on first use in each process, and a
dashboard watches its engine's store from a thread of its process:
:class:`Dashboards` builds the dashboard of an engine on first use, in each
process, and a new one when that engine was closed and another took its place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from urllib.parse import parse_qs

from fluxo import _async_engine, _engine, _errors, ui
from fluxo.ui import _http

Source = ui.Dashboard | _engine.Engine | _async_engine.AsyncEngine
"""What an adapter serves: a dashboard, or the engine to build one of."""


def check_source(source: object, where: str) -> None:
    """Raise ``DefinitionError`` unless ``source`` is a dashboard or an engine."""
    if not isinstance(source, (ui.Dashboard, _engine.Engine, _async_engine.AsyncEngine)):
        raise _wrong_source(source, where)


def _wrong_source(source: object, where: str) -> _errors.DefinitionError:
    return _errors.DefinitionError(
        f"{where} takes a fluxo.Engine, a fluxo.AsyncEngine or a fluxo.ui.Dashboard, "
        f"not {type(source).__name__}"
    )


class Dashboards:
    """The dashboard of each engine an adapter is given, built on first use in this process.

    Args:
        title: the name shown in the header of the dashboards built here.
    """

    def __init__(self, *, title: str) -> None:
        self.title = title
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._built: dict[int, tuple[_engine.Engine, ui.Dashboard]] = {}

    def get(self, source: object, where: str) -> ui.Dashboard:
        """The dashboard ``source`` is, or the one of engine ``source`` (built if need be)."""
        if isinstance(source, ui.Dashboard):
            return source
        if isinstance(source, _async_engine.AsyncEngine):
            source = source.engine
        if not isinstance(source, _engine.Engine):
            raise _wrong_source(source, where)
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's dashboards watch nothing here
                self._pid, self._built = os.getpid(), {}
            found = self._built.get(id(source))
            if found is not None and found[0] is source:
                return found[1]
            for key, (engine, dashboard) in list(self._built.items()):
                if engine._closed:  # the app closed it and built another: let its watcher go
                    dashboard.close()
                    del self._built[key]
            dashboard = ui.Dashboard(source, title=self.title)
            self._built[id(source)] = (source, dashboard)
            return dashboard

    def close(self) -> None:
        """Close the dashboards built here (the engines stay open)."""
        with self._lock:
            built, self._built = self._built, {}
        if self._pid == os.getpid():
            for _, dashboard in built.values():
                dashboard.close()


def request(
    *,
    method: str,
    path: str,
    inner: str,
    query: str,
    headers: Mapping[str, str],
    body: bytes,
) -> _http.Request:
    """The dashboard's request for a view of the application.

    Args:
        method: the HTTP method.
        path: the whole path the browser asked for (the application's script root,
            the mount prefix and ``inner``).
        inner: the path inside the dashboard, as the framework's route matched it
            (``/`` for its home, ``/run``...).
        query: the query string, undecoded.
        headers: the request's headers, lower-cased names.
        body: the request's body.
    """
    inner = "/" + inner.lstrip("/")
    base = path[: len(path) - len(inner)] if path.endswith(inner) else path
    return _http.Request(
        method=method.upper(),
        path=inner,
        base=base.rstrip("/"),
        query=parse_qs(query, keep_blank_values=True),
        headers=headers,
        body=body,
    )


def too_large(length: str | int | None) -> bool:
    """Whether a declared ``Content-Length`` is over what the dashboard reads."""
    try:
        return int(length or 0) > _http.MAX_BODY
    except ValueError:
        return False
