"""The Fluxo dashboard as a blueprint of a Flask app, behind the app's own login.

::

    app.register_blueprint(dashboard_blueprint(decorators=[login_required]), url_prefix="/fluxo")

Its pages are views of the app: its ``before_request`` hooks, the blueprint's
own, and the decorators given here all run before the dashboard does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import flask
from werkzeug.datastructures import Headers

from fluxo import _errors
from fluxo.contrib.flask import _extension
from fluxo.ui import _http, _mount

METHODS = ["GET", "POST"]  # Flask adds HEAD to GET


def dashboard_blueprint(
    source: _mount.Source | Callable[[], _mount.Source] | _extension.Fluxo | None = None,
    *,
    decorators: Iterable[Callable[[Callable[..., Any]], Callable[..., Any]]] = (),
    name: str = "fluxo_dashboard",
    title: str = "Fluxo",
) -> flask.Blueprint:
    """The Fluxo dashboard as a blueprint, to register under a prefix of the app.

    Args:
        source: what the dashboard shows. ``None``: the engine of the current app's
            :class:`Fluxo` extension (built on first use, in each process). Else a
            :class:`Fluxo` extension, a :class:`fluxo.Engine` or
            :class:`fluxo.AsyncEngine`, a :class:`fluxo.ui.Dashboard` (to set its
            ``token`` or ``allowed_hosts``), or a function that returns one.
        decorators: view decorators that guard every page, such as Flask-Login's
            ``login_required``, applied as a class-based view's ``decorators``
            (the first is the innermost).
        name: the blueprint's name (``url_for(name + ".page", path="run", id=...)``).
        title: the name shown in the dashboard's header.

    Example:
        >>> bp = dashboard_blueprint(decorators=[login_required])
        >>> app.register_blueprint(bp, url_prefix="/fluxo")
        >>> @bp.before_request  # or a hook of the blueprint's own
        ... def only_admins():
        ...     if not current_user.is_admin:
        ...         abort(403)

    Raises:
        DefinitionError: ``source`` is none of these, or a decorator is not callable.
    """
    if source is not None and not callable(source) and not isinstance(source, _extension.Fluxo):
        _mount.check_source(source, "dashboard_blueprint()")
    decorators = list(decorators)
    wrong = [d for d in decorators if not callable(d)]
    if wrong:
        raise _errors.DefinitionError(
            f"dashboard_blueprint(decorators=...) holds {', '.join(map(repr, wrong))}, which "
            "is not a view decorator; pass functions such as login_required"
        )
    dashboards = _mount.Dashboards(title=title)

    def page(path: str) -> flask.Response:
        """One page of the dashboard (every path under the blueprint's prefix)."""
        request = flask.request
        if _mount.too_large(request.content_length):
            return _response(_http.Response.text("request body too large", 413))
        dashboard = dashboards.get(_resolve(source), "dashboard_blueprint()")
        reply = dashboard.handle(
            _mount.request(
                method=request.method,
                path=request.script_root + request.path,
                inner=path,
                query=request.query_string.decode("latin-1"),
                headers=_http._wsgi_headers(request.environ),
                body=request.get_data(cache=False),
            )
        )
        return _response(reply)

    view: Callable[..., Any] = page
    for decorator in decorators:
        view = decorator(view)
    blueprint = flask.Blueprint(name, __name__)
    blueprint.add_url_rule(
        "/", endpoint="page", view_func=view, defaults={"path": ""}, methods=METHODS
    )
    blueprint.add_url_rule("/<path:path>", endpoint="page", view_func=view, methods=METHODS)
    return blueprint


def _resolve(source: object) -> object:
    """The dashboard or engine to serve, for the current app."""
    if source is None:
        state = flask.current_app.extensions.get(_extension.EXTENSION_KEY)
        if not isinstance(state, _extension.FluxoState):
            raise _errors.DefinitionError(
                f"dashboard_blueprint() without an engine shows the app's Fluxo engine, but "
                f"Fluxo is not set up on app {flask.current_app.name!r}: set it up "
                "(Fluxo(app) or init_app) or pass the engine, dashboard_blueprint(engine)"
            )
        return state.engine()
    if isinstance(source, _extension.Fluxo):
        return source.engine
    if callable(source):
        return source()
    return source


def _response(reply: _http.Response | _http.Stream) -> flask.Response:
    """The Flask response of the dashboard's answer (every header, each cookie)."""
    headers = Headers(reply.headers)
    if isinstance(reply, _http.Response):
        return flask.Response(reply.body, status=reply.status, headers=headers)
    return flask.Response(reply.chunks(), status=reply.status, headers=headers)
