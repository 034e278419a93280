"""The Fluxo dashboard as a router of a FastAPI app, behind the app's own dependencies.

::

    from fastapi import Depends
    from fluxo.contrib.fastapi import dashboard_router

    app.include_router(
        dashboard_router(get_engine, dependencies=[Depends(require_admin)]), prefix="/fluxo"
    )

Every page is an endpoint of the app, so the router's and ``include_router``'s
dependencies run before the dashboard does, and a dependency that raises
``HTTPException(401)`` answers instead of it. The dashboard's pages read the
store, which blocks: they run in the app's thread pool. The live refresh is an
async stream, which holds no thread while it waits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from fluxo.ui import _http, _mount

METHODS = ["GET", "HEAD", "POST"]


def dashboard_router(
    source: _mount.Source | Callable[..., Any],
    *,
    dependencies: list[Any] | None = None,
    title: str = "Fluxo",
) -> fastapi.APIRouter:
    """The Fluxo dashboard as an ``APIRouter``, to include under a prefix of the app.

    Args:
        source: what the dashboard shows: a :class:`fluxo.AsyncEngine` or
            :class:`fluxo.Engine`, a :class:`fluxo.ui.Dashboard` (to set its
            ``token`` or ``allowed_hosts``), or a FastAPI dependency that returns
            one, such as the ``get_engine`` that reads ``request.app.state``. The
            dashboard of an engine is built on its first request, in each process.
        dependencies: dependencies of every page (``[Depends(require_admin)]``),
            as ``APIRouter(dependencies=...)``; ``include_router(...,
            dependencies=...)`` adds more.
        title: the name shown in the dashboard's header.

    Example:
        >>> router = dashboard_router(get_engine, dependencies=[Depends(require_admin)])
        >>> app.include_router(router, prefix="/fluxo")

    Raises:
        DefinitionError: ``source`` is neither an engine, a dashboard nor a callable.
    """
    dashboards = _mount.Dashboards(title=title)
    router = fastapi.APIRouter(dependencies=dependencies, include_in_schema=False)

    async def serve(request: fastapi.Request, path: str, found: object) -> Response:
        if _mount.too_large(request.headers.get("content-length")):
            return _response(_http.Response.text("request body too large", 413))
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _http.MAX_BODY:
                return _response(_http.Response.text("request body too large", 413))
        dashboard = dashboards.get(found, "dashboard_router()")
        scope = request.scope
        root, full = str(scope.get("root_path") or ""), str(scope.get("path") or "/")
        reply = await run_in_threadpool(
            dashboard.handle,
            _mount.request(
                method=request.method,
                path=full if full.startswith(root) else root + full,
                inner=path,
                query=bytes(scope.get("query_string", b"")).decode("latin-1"),
                headers=_http.asgi_request(scope, b"").headers,
                body=body,
            ),
        )
        return _response(reply)

    if callable(source):
        dependency = source

        async def page_of_dependency(
            request: fastapi.Request,
            path: str,
            found: object = fastapi.Depends(dependency),
        ) -> Response:
            return await serve(request, path, found)

        router.add_api_route("/{path:path}", page_of_dependency, methods=METHODS)
    else:
        _mount.check_source(source, "dashboard_router()")
        given = source

        async def page(request: fastapi.Request, path: str) -> Response:
            return await serve(request, path, given)

        router.add_api_route("/{path:path}", page, methods=METHODS)
    return router


def _response(reply: _http.Response | _http.Stream) -> Response:
    """The Starlette response of the dashboard's answer (every header, each cookie)."""
    response: Response
    if isinstance(reply, _http.Response):
        response = Response(reply.body, status_code=reply.status)
    else:
        response = StreamingResponse(reply.achunks(), status_code=reply.status)
    for name, value in reply.headers:
        response.headers.append(name, value)
    return response
