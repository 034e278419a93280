"""The dashboard's pages and actions, written against :mod:`fluxo.ui._http`'s request.

``GET /``             the runs: counts, filters, one page, a link to the next
``GET /counts``       the counts per status, as JSON (the runs page fetches them)
``GET /run?id=``      one run: its record, input and outcome, timeline and events
``GET /event?id=&seq=`` one event of a run, whole, as JSON
``GET /live``         Server-Sent Events: ``change`` when the page's data may have moved
``POST /run/signal``  ``/run/cancel``, ``/run/retry``, ``/run/resume``: act, then show the run
``GET /static/...``   the stylesheet and script, shipped in the package

Every page also answers with ``fragment=1``: only the part that live refresh replaces.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mimetypes
import time
from collections.abc import Callable
from importlib import resources
from typing import Any

from fluxo import _cli_format, _engine, _errors, _names, history
from fluxo.ui import _guard, _http, _listing, _live, _timeline

log = logging.getLogger(__name__)

SHOWN_ROWS = 5_000
"""The most timeline rows and events a run page draws unless asked for all (``all=1``):
the latest ones. A browser draws 5,000 of each in about a second; 50,000 would freeze it."""

EVENT_TEXT = 240
"""Characters of an event's data shown in the events table (the rest: ``/event``)."""

_ACTIONS = ("signal", "cancel", "retry", "resume")
_DONE = {
    "signal": "Signal sent.",
    "cancel": "Cancellation requested.",
    "retry": "Run retried: a worker picks it up.",
    "resume": "Run resumed: a worker picks it up.",
}

SECURITY_HEADERS = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "style-src-attr 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
]


class Pages:
    """Answers the dashboard's requests for one engine."""

    def __init__(
        self,
        engine: _engine.Engine,
        *,
        guard: _guard.Guard,
        changes: _live.Changes,
        render: Callable[..., str],
        run_blocking: Callable[[Callable[[], object]], Any] | None,
        title: str,
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.changes = changes
        self.render = render
        self.run_blocking = run_blocking
        self.title = title
        self.counts = _listing.Counts(engine.count_runs)

    def __call__(self, request: _http.Request) -> _http.Response | _http.Stream:
        """Answer ``request``: the guard's refusal, a page, or a stream."""
        reply: _http.Response | _http.Stream | None = self.guard.admit(request)
        if reply is None:
            reply = self._answer(request)
        if request.method == "HEAD":  # the headers a GET would have, and no body
            reply = _http.Response(reply.status, b"", list(reply.headers))
        if isinstance(reply, _http.Response):
            reply.headers.extend(SECURITY_HEADERS)
            reply = _http.compressed(reply, request)
        return reply

    def _answer(self, request: _http.Request) -> _http.Response | _http.Stream:
        try:
            return self._route(request)
        except _errors.FluxoError as exc:  # the store is away, or a record is damaged
            status = 503 if isinstance(exc, _errors.StoreUnavailableError) else 500
            return self._page(request, "error.html", status, message=_cli_format.one_line(str(exc)))
        except Exception:
            log.exception("the dashboard failed to answer %s %s", request.method, request.path)
            return self._page(
                request, "error.html", 500, message="the dashboard failed; its log says why"
            )

    # -- routing -----------------------------------------------------------------------------

    def _route(self, request: _http.Request) -> _http.Response | _http.Stream:
        path, method = request.path, request.method
        if path.startswith("/static/") and method in ("GET", "HEAD"):
            return _static(path.removeprefix("/static/"))
        if method == "POST" and path.startswith("/run/"):
            action = path.removeprefix("/run/")
            if action in _ACTIONS:
                return self._act(request, action)
        if method not in ("GET", "HEAD"):
            return _http.Response.text(f"{method} is not served at {path}", 405)
        if path == "/":
            return self._runs(request)
        if path == "/counts":
            workflow = request.arg("workflow")
            return _http.Response.json(self.counts.get(workflow))
        if path == "/run":
            return self._run(request)
        if path == "/event":
            return self._event(request)
        if path == "/live":
            return self._live(request)
        return self._page(request, "error.html", 404, message=f"no page at {path}")

    # -- pages -------------------------------------------------------------------------------

    def _page(
        self, request: _http.Request, template: str, status: int = 200, **values: Any
    ) -> _http.Response:
        csrf, new_cookie = _guard.csrf_value(request)
        text = self.render(
            template,
            base=request.base,
            title=self.title,
            csrf=csrf,
            fragment=request.arg("fragment") == "1",
            request=request,
            **values,
        )
        reply = _http.Response.html(text, status)
        reply.headers.append(("cache-control", "no-store"))
        if new_cookie is not None:
            reply.headers.append(("set-cookie", new_cookie))
        return reply

    def _runs(self, request: _http.Request) -> _http.Response:
        now = time.time()
        try:
            filters = _listing.read_filters(request, now)
        except _listing.FilterError as exc:
            return self._page(
                request,
                "runs.html",
                400,
                filters=_listing.Filters(),
                page=None,
                error=str(exc),
                statuses=_listing.STATUSES,
                sizes=_listing.PAGE_SIZES,
            )
        page = _listing.read_page(self.engine, filters)
        return self._page(
            request,
            "runs.html",
            filters=filters,
            page=page,
            live_version=page_version(page),
            error=None,
            statuses=_listing.STATUSES,
            sizes=_listing.PAGE_SIZES,
            iso=_cli_format.iso,
            status_text=_cli_format.status_text,
        )

    def _load(self, run_id: str) -> history.RunState:
        _checked_id(run_id)
        return self.engine.store.load(run_id)

    def _run(self, request: _http.Request, *, status: int = 200, **extra: Any) -> _http.Response:
        run_id = request.arg("id") or request.form().get("id", "")
        try:
            state = self._load(run_id)
        except _errors.RunNotFoundError:
            return self._page(request, "error.html", 404, message=f"no run {run_id!r}")
        except _errors.DefinitionError as exc:
            return self._page(request, "error.html", 400, message=str(exc))
        described = _cli_format.describe_run(state, self.engine.codec)
        run = state.run
        timeline = _timeline.build(state, self.engine.codec, now=time.time())
        shown = None if request.arg("all") == "1" else SHOWN_ROWS
        hidden = max(len(timeline.rows) - shown, len(state.events) - shown, 0) if shown else 0
        if shown is not None and len(timeline.rows) > shown:
            timeline = dataclasses.replace(timeline, rows=timeline.rows[-shown:])
        return self._page(
            request,
            "run.html",
            status,
            run=run,
            described=described,
            timeline=timeline,
            events=_event_rows(described["timeline"][-shown:] if shown else described["timeline"]),
            shown_rows=shown if hidden else None,
            show_all="1" if request.arg("all") == "1" else "",
            done=_DONE.get(request.arg("done"), ""),
            can_cancel=not run.status.is_terminal and not run.cancel_requested,
            can_retry=run.status in history.RETRYABLE_STATUSES,
            can_resume=run.status is history.RunStatus.CANCELLED,
            live_version=live_version(run),
            cause=_step_cause(state, described, self.engine.codec),
            pretty=_pretty,
            status_text=_cli_format.status_text,
            **extra,
        )

    def _event(self, request: _http.Request) -> _http.Response:
        run_id, seq_text = request.arg("id"), request.arg("seq")
        try:
            state = self._load(run_id)
        except _errors.RunNotFoundError:
            return _http.Response.json({"error": f"no run {run_id!r}"}, 404)
        except _errors.DefinitionError as exc:
            return _http.Response.json({"error": str(exc)}, 400)
        if not seq_text.isdigit() or int(seq_text) >= len(state.events):
            return _http.Response.json(
                {"error": f"seq: run {run_id!r} has events 0 to {len(state.events) - 1}"}, 400
            )
        seq = int(seq_text)
        event = state.events[seq]
        return _http.Response.json(
            {
                "seq": seq,
                "kind": event.kind,
                "name": event.name,
                "recorded_at": _cli_format.iso(state.recorded_at[seq], precise=True)
                if len(state.recorded_at) == len(state.events)
                else None,
                "data": _cli_format.event_value(self.engine.codec, event),
            }
        )

    def _live(self, request: _http.Request) -> _http.Stream:
        # A run page's stream names its run with ``run``; ``id`` is the runs page's filter.
        run_id = request.arg("run")
        version: Callable[[], object]
        if not run_id:
            # The runs page's stream: a change is one when the page's rows changed (the
            # workers' heartbeats, say, change the store, not the page). Ages (since=2h)
            # count back from each reading, as the page's refresh counts them.
            engine = self.engine

            def version() -> object:
                try:  # the page shows the same error: nothing of it moves
                    filters = _listing.read_filters(request, time.time())
                except _listing.FilterError as exc:
                    return str(exc)
                return page_version(_listing.read_page(engine, filters))

        else:
            store = self.engine.store

            def version() -> object:
                return live_version(store.get_run(run_id))

        return _live.PageStream(
            self.changes, version, shown=request.arg("v") or None, run_blocking=self.run_blocking
        )

    # -- actions -----------------------------------------------------------------------------

    def _act(self, request: _http.Request, action: str) -> _http.Response:
        form = request.form()
        why = _guard.check_post(request, form)
        if why is not None:
            return _http.Response.text(
                f"refused: {why}; reload the dashboard's page and try again", 403
            )
        run_id = form.get("id", "")
        try:
            _checked_id(run_id)
            if action == "signal":
                name = form.get("name", "").strip()
                if not name:
                    raise _errors.DefinitionError("signal: give the signal's name")
                self.engine.signal(run_id, name, _payload(form.get("payload", "")))
            elif action == "cancel":
                self.engine.cancel(run_id)
            elif action == "retry":
                self.engine.retry(run_id)
            else:
                self.engine.resume(run_id)
        except _errors.FluxoError as exc:
            message = _cli_format.one_line(str(exc))
            if isinstance(exc, _errors.RunNotFoundError):
                return self._page(request, "error.html", 404, message=message)
            query = {"id": [run_id]}
            again = _http.Request("GET", "/run", request.base, query, request.headers)
            return self._run(again, status=409, action_error=message, form=form)
        log.info("dashboard: %s on run %s", action, run_id)
        return _http.Response.redirect(request.url("/run", id=run_id, done=action))


def _step_cause(
    state: history.RunState, described: dict[str, Any], codec: Any
) -> dict[str, Any] | None:
    """The step error a failed run's error wraps: the user's own code raised it there.

    A run that failed because a step (or a branch) failed records ``fluxo.StepError``
    with the workflow's traceback; the step's own error and traceback are in a
    ``step_failed`` or ``branch_failed`` event, which is what a reader looks for: the
    latest whose error the run's message names (several branches of a block may have
    failed), else the latest.
    """
    error = described.get("error")
    if not isinstance(error, dict) or "fluxo.StepError" not in (error.get("types") or ()):
        return None
    said = str(error.get("message", ""))
    latest: dict[str, Any] | None = None
    for event in reversed(state.events):
        if isinstance(event, (history.StepFailed, history.BranchFailed)):
            value = _cli_format.event_value(codec, event)
            if not isinstance(value, dict):
                continue
            cause = {"step": event.name, **value}
            named = f"{value.get('type', '')}: {value.get('message', '')}"
            if named in said or named.removeprefix("builtins.") in said:
                return cause
            latest = latest or cause
    return latest


def page_version(page: _listing.Page) -> str:
    """What a runs page shows of its runs, as its live stream compares it (a digest)."""
    shown = hashlib.sha256()
    for run in page.runs:
        shown.update(f"{run.id}\0{run.status.value}\0{run.updated_at!r}\0".encode())
        shown.update(b"1" if run.cancel_requested else b"0")
    shown.update(page.next_cursor.encode())
    return shown.hexdigest()[:24]


def live_version(run: history.RunInfo) -> str:
    """What a run page shows of the run's record, as its live stream compares it."""
    return f"{run.status.value} {run.updated_at!r} {int(run.cancel_requested)}"


def _checked_id(run_id: str) -> None:
    if not run_id:
        raise _errors.DefinitionError("id: give the run's id (…/run?id=<run id>)")
    _names.check_run_id(run_id)


def _payload(text: str) -> Any:
    """A signal's payload as typed in the form: JSON, or nothing for ``None``."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _errors.DefinitionError(
            f"payload: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            'write it as JSON, for example {"approved": true} or "yes"'
        ) from None


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _event_rows(timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for entry in timeline:
        text = json.dumps(entry["data"], ensure_ascii=False, default=str)
        rows.append({**entry, "text": text[:EVENT_TEXT], "cut": len(text) > EVENT_TEXT})
    return rows


_STATIC = {"fluxo.css", "fluxo.js", "timeline.css", "favicon.svg"}


def _static(name: str) -> _http.Response:
    if name not in _STATIC:
        return _http.Response.text(f"no file {name!r}", 404)
    body = resources.files("fluxo.ui").joinpath("static", name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith("javascript"):
        kind += "; charset=utf-8"
    return _http.Response(
        200, body, [("content-type", kind), ("cache-control", "public, max-age=3600")]
    )
