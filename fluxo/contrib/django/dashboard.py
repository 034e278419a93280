"""The Fluxo dashboard as views of a Django project: a URLconf to include under a prefix.

::

    urlpatterns = [
        path("admin/", admin.site.urls),
        path("fluxo/", include("fluxo.contrib.django.dashboard")),
    ]

It shows the project's engine (:func:`fluxo.contrib.django.get_engine`). Every page
is guarded by the decorator ``FLUXO["DASHBOARD_DECORATOR"]`` names, by default
Django admin's ``staff_member_required`` (an anonymous visitor is sent to the
admin's login page). The views are exempt from Django's CSRF check: the dashboard
checks its own form token, a cookie of its own and the ``Origin`` of every POST.
Under ASGI the live refresh is an async stream, which holds no thread.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie

from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse
from django.urls import path, re_path
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from fluxo.contrib.django import _process
from fluxo.ui import _http, _mount

app_name = "fluxo_dashboard"

_dashboards = _mount.Dashboards(title="Fluxo")

View = Callable[..., HttpResponseBase]


def _serve(request: HttpRequest, path: str = "") -> HttpResponseBase:
    """Answer one request with the dashboard of the project's engine."""
    if _mount.too_large(request.META.get("CONTENT_LENGTH")):
        return _response(_http.Response.text("request body too large", 413), request)
    dashboard = _dashboards.get(_process.get_engine(), "the Django dashboard")
    reply = dashboard.handle(
        _mount.request(
            method=request.method or "GET",
            path=request.path,
            inner=path,
            query=request.META.get("QUERY_STRING", ""),
            headers=_http._wsgi_headers(request.META),
            body=request.body,
        )
    )
    return _response(reply, request)


@functools.lru_cache(maxsize=8)
def _guarded(decorator: str | None) -> View:
    """:func:`_serve` behind the decorator at dotted path ``decorator``."""
    if decorator is None:
        return _serve
    try:
        wrap: Callable[[View], View] = import_string(decorator)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"settings.FLUXO['DASHBOARD_DECORATOR'] is {decorator!r}, which cannot be "
            f"imported ({exc}); name a view decorator, or None to guard the dashboard otherwise"
        ) from exc
    return wrap(_serve)


@csrf_exempt
def page(request: HttpRequest, path: str = "") -> HttpResponseBase:
    """A page of the dashboard, behind ``FLUXO["DASHBOARD_DECORATOR"]``."""
    return _guarded(_process.current_settings().dashboard_decorator)(request, path=path)


def _response(reply: _http.Response | _http.Stream, request: HttpRequest) -> HttpResponseBase:
    """The Django response of the dashboard's answer; cookies go to ``response.cookies``."""
    response: HttpResponseBase
    if isinstance(reply, _http.Response):
        response = HttpResponse(reply.body, status=reply.status)
    elif isinstance(request, ASGIRequest):  # an async iterator: the server awaits, no thread
        response = StreamingHttpResponse(reply.achunks(), status=reply.status)
    else:
        response = StreamingHttpResponse(reply.chunks(), status=reply.status)
    for name, value in reply.headers:
        if name == "set-cookie":
            _set_cookie(response, value)
        else:
            response.headers[name] = value
    return response


def _set_cookie(response: HttpResponseBase, header: str) -> None:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:  # pragma: no cover - the dashboard writes well-formed cookies
        return
    for name, morsel in jar.items():
        response.cookies[name] = morsel


urlpatterns = [
    path("", page, name="home"),
    re_path(r"^(?P<path>.+)$", page, name="page"),
]
