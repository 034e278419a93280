"""Text for the command line: reading times and payloads, writing tables and run reports.

Everything here is pure (no I/O, no click), so ``fluxo runs`` output is stable
and unit-tested; ``fluxo.cli`` wires it to the commands.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, overload

from fluxo import _durations, _errors, _fork, _history_file, history
from fluxo import codec as _codec


def parse_time(text: str, now: float) -> float:
    """Turn ``--since``/``--until`` text into seconds since the epoch.

    Takes an ISO-8601 time (``2026-11-25``, ``2026-11-25T14:00:00Z``,
    ``2026-11-25T15:00+01:00``; UTC unless it carries an offset) or an age counted
    back from ``now``: a number and a unit, ``s``, ``m``, ``h``, ``d`` or ``w``
    (``90s``, ``30m``, ``2h``, ``7d``, ``1.5h``).

    Raises:
        ValueError: neither form fits; the message shows both.
    """
    value = text.strip()
    age = _durations.parse_age(value)
    if age is not None:
        return now - age
    if value[-1:] in ("z", "Z"):
        value = value[:-1] + "+00:00"  # Python 3.10's fromisoformat has no 'Z'
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; give an ISO-8601 time such as 2026-11-25T14:00:00Z "
            "(UTC unless it has an offset) or an age such as 30m, 2h or 7d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def is_age(text: str) -> bool:
    """Tell whether ``--since``-style text is an age (``30m``, ``7d``) rather than a time."""
    return _durations.parse_age(text) is not None


@overload
def iso(seconds: float, *, precise: bool = False) -> str: ...


@overload
def iso(seconds: float | None, *, precise: bool = False) -> str | None: ...


def iso(seconds: float | None, *, precise: bool = False) -> str | None:
    """Seconds since the epoch as a UTC ISO-8601 time (``...Z``); milliseconds if ``precise``."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds" if precise else "seconds").replace(
        "+00:00", "Z"
    )


def format_duration(seconds: float) -> str:
    """A duration for people: ``0.052s``, ``4m07s``, ``3h02m``, ``2d05h``."""
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "") -> str:
    """Align columns with two spaces between them; trailing blanks are dropped."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=False)]
    lines = [
        indent + "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip()
        for line in (headers, *rows)
    ]
    return "\n".join(lines)


def parse_payload(text: str | None) -> Any:
    """A signal payload from JSON text; no text means ``null``.

    Raises:
        ValueError: the text is not JSON; the message says where and how to quote.
    """
    if text is None or not text.strip():
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            """quote text as a JSON string, e.g. '"yes"', or pass '{"approved": true}'"""
        ) from None


def one_line(text: str) -> str:
    """Join a message's lines, so every error prints as one line."""
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def root_reason(exc: BaseException) -> str:
    """The first line of the root cause of a store failure (the driver's own words)."""
    cause = exc
    while cause.__cause__ is not None:
        cause = cause.__cause__
    original = getattr(cause, "orig", None)  # a SQLAlchemy error wraps the driver's
    if isinstance(original, BaseException):
        cause = original
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = lines[0] if lines else type(cause).__name__
    text = text.split(", Topology Description:")[0]  # pymongo appends its whole topology
    return text if len(text) <= 200 else text[:197] + "..."


def run_record(run: history.RunInfo) -> dict[str, Any]:
    """A run as ``runs list --json`` prints it (stable keys, UTC ISO times)."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status.value,
        "created_at": iso(run.created_at, precise=True),
        "updated_at": iso(run.updated_at, precise=True),
        "ready_at": iso(run.ready_at, precise=True),
        "deadline": iso(run.deadline, precise=True),
        "lease_owner": run.lease_owner,
        "cancel_requested": run.cancel_requested,
        "parent": run.parent,
        "recoveries": run.recoveries,
        "damage": run.damage,
    }


def status_text(run: history.RunInfo) -> str:
    """The STATUS cell of ``runs list``: the status, or ``damaged`` when the record is."""
    return run.status.value if run.damage is None else "damaged"


def _value(codec: _codec.Codec, data: bytes | None) -> Any:
    """A stored value, decoded by ``codec`` into JSON-ready data."""
    if data is None:
        return None
    try:
        value = codec.decode(data, Any)
    except Exception:  # a codec may raise anything (a key gone, a payload of another codec)
        try:
            return data.decode()
        except UnicodeDecodeError:
            return f"<{len(data)} bytes>"
    return json.loads(json.dumps(value, default=str))


_ERROR_KINDS: tuple[type[history.Event], ...] = (
    history.StepAttemptFailed,
    history.StepFailed,
    history.BranchAttemptFailed,
    history.BranchFailed,
    history.ChildFailed,
    *history.FAILURE_ENDS,
)
_TIME_KINDS = (history.TimerStarted, history.SignalWaitStarted)
_TERMINAL_KINDS: tuple[type[history.Event], ...] = (
    history.WorkflowCompleted,
    *history.FAILURE_ENDS,
    history.WorkflowCancelled,
)


def describe_run(state: history.RunState, codec: _codec.Codec) -> dict[str, Any]:
    """What ``runs show --json`` prints: the run, its input, outcome and timeline.

    Each timeline entry has the event's ``recorded_at``, its ``offset`` from the
    first event and its ``duration``: the time since the event before it, which
    for a step is how long the step took. Times are ``null`` when the store did
    not record them.
    """
    run, events = state.run, state.events
    stamps = tuple(state.recorded_at) if len(state.recorded_at) == len(events) else ()
    timeline = []
    for seq, event in enumerate(events):
        at = stamps[seq] if stamps else None
        timeline.append(
            {
                "seq": seq,
                "kind": event.kind,
                "name": event.name,
                "recorded_at": iso(at, precise=True),
                "offset": None if at is None else round(at - stamps[0], 6),
                "duration": None if at is None or seq == 0 else round(at - stamps[seq - 1], 6),
                "data": event_value(codec, event),
            }
        )
    last_end = next((e for e in reversed(events) if isinstance(e, _TERMINAL_KINDS)), None)
    result = error = None
    if run.status is history.RunStatus.COMPLETED and last_end is not None:
        result = _value(codec, last_end.data)
    if run.status in history.RETRYABLE_STATUSES and last_end is not None:
        error = _value(codec, last_end.data)
    consumed: dict[str, int] = {}
    for event in events:
        if isinstance(event, (history.SignalReceived, history.SignalRejected)):
            consumed[event.name] = consumed.get(event.name, 0) + 1
        elif isinstance(event, history.CHILD_OUTCOMES):  # took the signal the child sent
            signal = history.child_signal_name(event.name)
            consumed[signal] = consumed.get(signal, 0) + 1
    pending = []
    for sent in state.signals:
        if consumed.get(sent.name, 0) > 0:
            consumed[sent.name] -= 1
        else:
            pending.append(
                {
                    "name": sent.name,
                    "payload": _signal_value(codec, sent),
                    "sent_at": iso(sent.sent_at, precise=True),
                }
            )
    return {
        **run_record(run),
        "parent": run.parent,
        "forked_from": _fork.source(run.headers),
        "input": _value(codec, events[0].data) if events else None,
        "result": result,
        "error": error,
        "cancel_reason": (
            last_end.name
            if run.status is history.RunStatus.CANCELLED
            and isinstance(last_end, history.WorkflowCancelled)
            else None
        ),
        "continued_as": (
            events[-1].name if events and isinstance(events[-1], history.ContinuedAsNew) else None
        ),
        "pending_signals": pending,
        "children": _children(events, codec),
        "started_at": iso(stamps[0], precise=True) if stamps else None,
        "timeline": timeline,
    }


def event_value(codec: _codec.Codec, event: history.Event) -> Any:
    """An event's data; a skipped signal's as ``{"error": ..., "payload": <decoded>}``."""
    rejected = _history_file.rejection(event)
    if rejected is None:
        return _value(codec, event.data)
    return {"error": rejected.error, "payload": _value(codec, rejected.payload)}  # None: too big


def _signal_value(codec: _codec.Codec, signal: history.Signal) -> Any:
    """A signal's payload; a child's outcome as ``{"kind": ..., "data": <decoded>}``."""
    outcome = _history_file.child_outcome(signal)
    if outcome is None:
        return _value(codec, signal.payload)
    kind, data = outcome
    return {"kind": kind, "data": _value(codec, data)}


def _children(events: Sequence[history.Event], codec: _codec.Codec) -> list[dict[str, Any]]:
    """The child runs a history started, each with how it ended as the run took delivery.

    ``seq`` is the position of its ``child_started``; ``outcome`` is ``completed``,
    ``failed`` or ``cancelled`` once the run awaited it (``data``: the result, the
    error or the reason), ``refused`` when the store would not start it (``data``:
    the error), else ``None``.
    """
    children: list[dict[str, Any]] = []
    for seq, event in enumerate(events):
        if isinstance(event, history.ChildStarted):
            start = _value(codec, event.data)
            start = start if isinstance(start, dict) else {}
            refusal = start.get("error")
            children.append(
                {
                    "id": event.name,
                    "workflow": start.get("workflow"),
                    "detached": bool(start.get("detached", False)),
                    "seq": seq,
                    "awaited": False,
                    "outcome": None if refusal is None else "refused",
                    "data": refusal,
                }
            )
        elif isinstance(event, history.CHILD_OUTCOMES):
            for child in reversed(children):
                if child["id"] == event.name and child["outcome"] is None:
                    child["awaited"] = True
                    child["outcome"] = event.kind.removeprefix("child_")
                    child["data"] = _value(codec, event.data)
                    break
    return children


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _error_text(error: Any, width: int = 60) -> str:
    """An encoded error's ``type: message`` on one line, cut to ``width``."""
    if not isinstance(error, dict):
        return _compact(error, width)
    kind = _errors.read_type_name(str(error.get("type", "?")))
    return _cut(f"{kind}: {one_line(str(error.get('message', '')))}", width)


def _cancel_reason(reason: Any) -> str:
    return "passed its deadline" if reason == "deadline" else "on request"


def _child_outcome(child: dict[str, Any], run_ended: bool) -> str:
    """How a child run of ``render_run``'s table ended, as far as its parent knows."""
    outcome, data = child["outcome"], child["data"]
    if outcome == "completed":
        text = f"completed: {_compact(data, 40)}"
    elif outcome == "failed":
        text = f"failed: {_error_text(data)}"
    elif outcome == "cancelled":
        text = f"cancelled {_cancel_reason(data)}"
    elif outcome == "refused":
        text = f"refused: {_error_text(data)}"
    else:
        text = "never awaited" if run_ended else "no outcome yet"
    return f"{text} (detached)" if child["detached"] else text


def _compact(value: Any, width: int = 60) -> str:
    return _cut(json.dumps(value, ensure_ascii=False), width)


def _detail(entry: dict[str, Any], width: int = 60) -> str:
    data, kind = entry["data"], entry["kind"]
    if kind in {k.kind for k in _ERROR_KINDS} and isinstance(data, dict):
        return _error_text(data, width)
    if kind in {k.kind for k in _TIME_KINDS} and isinstance(data, (int, float)):
        return f"until {iso(data)}"
    if kind == history.ChildStarted.kind and isinstance(data, dict):
        text = str(data.get("workflow", "?"))
        if data.get("detached"):
            text += ", detached"
        if isinstance(data.get("error"), dict):
            text += f", refused: {_error_text(data['error'], width)}"
        return _cut(text, width)
    if kind == history.ChildCancelled.kind:
        return _cancel_reason(data)
    if kind == history.SignalRejected.kind and isinstance(data, dict):
        return _cut(f"skipped: {one_line(str(data.get('error', '')))}", width)
    return "" if data is None else _compact(data, width)


def render_run(doc: dict[str, Any]) -> str:
    """The human form of :func:`describe_run`'s document."""
    lines = [
        f"run       {doc['id']}",
        f"workflow  {doc['workflow']}",
        *([f"parent    {doc['parent']}"] if doc.get("parent") else []),
        *(
            [f"forked    from {fork['run']} at position {fork['position']}"]
            if (fork := doc.get("forked_from"))
            else []
        ),
        f"status    {doc['status']}",
        f"created   {iso_short(doc['created_at'])}",
        f"updated   {iso_short(doc['updated_at'])}",
    ]
    status = doc["status"]
    children = doc.get("children", [])
    if status == "waiting":
        last = doc["timeline"][-1] if doc["timeline"] else {}
        what = {
            "timer_started": "for a timer",
            "signal_wait_started": f"for signal {last.get('name')!r}",
        }.get(last.get("kind", ""), "")
        if not what:  # a wait for a child's outcome records nothing until it arrives
            what = _awaited_children(children)
        until = f"until {iso_short(doc['ready_at'])}" if doc["ready_at"] else ""
        lines.append(f"waiting   {what} {until}".rstrip())
    if doc.get("recoveries"):
        times = "once" if doc["recoveries"] == 1 else f"{doc['recoveries']} times"
        lines.append(f"recovered {times}: taken over from executions that died")
    if status == "running" and doc["lease_owner"]:
        lines.append(f"worker    {doc['lease_owner']}")
    if doc["deadline"]:
        lines.append(f"deadline  {iso_short(doc['deadline'])}")
    if doc["cancel_requested"] and status not in ("completed", "failed", "cancelled", "dead"):
        lines.append("cancel    requested; the run stops at its next durable call")
    lines.append(f"input     {_compact(doc['input'], 200)}")
    if doc.get("continued_as"):
        lines.append(f"continued as new in run {doc['continued_as']}")
    elif status == "completed":
        lines.append(f"result    {_compact(doc['result'], 200)}")
    error = doc["error"]
    if isinstance(error, dict):
        message = str(error.get("message", "")).splitlines() or [""]
        lines.append(f"error     {error.get('type', '?')}: {message[0]}")
        lines.extend(f"          {line}" for line in message[1:])
    if status == "cancelled":
        lines.append(f"cancelled {_cancel_reason(doc['cancel_reason'])}")
    for signal in doc["pending_signals"]:
        lines.append(
            f"signal    {signal['name']} {_compact(signal['payload'])} "
            f"(sent {iso_short(signal['sent_at'])}, not yet received)"
        )
    if children:
        ended = status in ("completed", "failed", "cancelled", "dead")
        rows = [
            [str(child["seq"]), child["id"], str(child["workflow"]), _child_outcome(child, ended)]
            for child in children
        ]
        lines += ["", f"children ({len(children)} started)"]
        lines.append(format_table(["SEQ", "RUN", "WORKFLOW", "OUTCOME"], rows, "  "))
    timeline = doc["timeline"]
    started = f", from {doc['started_at']}" if doc["started_at"] else ""
    lines += ["", f"history ({len(timeline)} events{started})"]
    rows = [
        [
            str(entry["seq"]),
            "" if entry["offset"] is None else "+" + format_duration(entry["offset"]),
            "" if entry["duration"] is None else format_duration(entry["duration"]),
            entry["kind"],
            entry["name"],
            _detail(entry),
        ]
        for entry in timeline
    ]
    lines.append(format_table(["SEQ", "AT", "TOOK", "EVENT", "NAME", "DETAIL"], rows, "  "))
    if isinstance(error, dict) and error.get("traceback"):
        lines += ["", "traceback (from the run's history):"]
        lines.extend("  " + line for line in str(error["traceback"]).rstrip().splitlines())
    return "\n".join(lines)


def _awaited_children(children: Sequence[dict[str, Any]]) -> str:
    """What a waiting run that recorded no wait waits for: one of its unawaited children."""
    ids = [repr(child["id"]) for child in children if child["outcome"] is None]
    if len(ids) == 1:
        return f"for child run {ids[0]}"
    if ids:
        return f"for one of its child runs {', '.join(ids[:-1])} or {ids[-1]}"
    return ""


def iso_short(text: str | None) -> str:
    """An ISO time from a JSON document, cut to whole seconds for tables."""
    if not text:
        return "-"
    return re.sub(r"\.\d+Z$", "Z", text)
