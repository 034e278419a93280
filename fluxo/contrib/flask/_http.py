"""Fluxo's errors as HTTP answers, for the views of a Flask app (opt-in).

A view that signals, cancels or looks up a run by an id taken from its URL can
let Fluxo's errors through: an unknown run answers 404, a taken run id or a run
whose state forbids the operation 409, a store that cannot be reached 503. Each
is turned into the matching ``werkzeug`` HTTP exception and handed to the app's
own handlers for that status, so an app that answers errors as JSON answers
these as JSON too. A 404 or 409 carries Fluxo's message, about the run the
client named; a 503 says only that the store is unavailable, since the cause
names the database, its host and user: that is logged, for the server's eyes.
"""

from __future__ import annotations

import logging
from typing import Final

import flask
from flask.typing import ResponseReturnValue
from werkzeug import exceptions

from fluxo import _errors, _redact

log = logging.getLogger(__name__)

STATUSES: Final[dict[type[_errors.FluxoError], int]] = {
    _errors.RunNotFoundError: 404,
    _errors.RunIdConflictError: 409,
    _errors.RunStateError: 409,
    _errors.StoreUnavailableError: 503,
}
"""The HTTP status each Fluxo error is answered with (a subclass takes its base's)."""

UNAVAILABLE: Final = "the workflow store is unavailable; try again later"
"""The description of a 503: nothing of the store's address or user."""


def register_error_handlers(app: flask.Flask | flask.Blueprint) -> None:
    """Answer Fluxo's errors with HTTP statuses (see :data:`STATUSES`) in ``app``'s views.

    ``app.config["FLUXO_ERROR_HANDLERS"] = True`` does this for an app; call it
    for a blueprint to limit it to that blueprint's views.
    """
    for error in STATUSES:
        app.register_error_handler(error, _answer)


def _answer(error: Exception) -> ResponseReturnValue:
    status = next(code for cls, code in STATUSES.items() if isinstance(error, cls))
    if status == 503:
        log.warning(
            "answered %s %s with 503: %s: %s",
            flask.request.method if flask.has_request_context() else "",
            flask.request.path if flask.has_request_context() else "",
            type(error).__name__,
            _redact.redact(str(error)),
        )
        description = UNAVAILABLE
    else:
        description = str(error)
    http = exceptions.default_exceptions[status](description=description)
    answer: ResponseReturnValue = flask.current_app.handle_http_exception(http)
    return answer
