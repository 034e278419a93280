"""The run timeline of ``fluxo ui``: a run's history turned into rows to draw.

:func:`build` reads a :class:`~fluxo.history.RunState` once, in order, and gives
one :class:`Row` per thing the workflow did: a step with its failed attempts, a
parallel block and its branches, a timer, a wait for a signal, a child run, and
a point for each instant (a recorded value, a patch, the run's end). Events hold
only the time they were recorded, so a step starts at the event before it.

Everything here is pure: no I/O and no templates. Payloads are decoded with the
engine's codec and described the way ``fluxo runs show`` describes them; one that
does not decode reads ``<undecodable>``, and nothing in a damaged history raises.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fluxo import _cli_format, history
from fluxo import codec as _codec

ROW_KINDS: dict[str, str] = {
    history.WorkflowStarted.kind: "start",
    history.StepCompleted.kind: "step",
    history.StepAttemptFailed.kind: "step",
    history.StepFailed.kind: "step",
    history.ParallelStarted.kind: "parallel",
    history.BranchCompleted.kind: "branch",
    history.BranchAttemptFailed.kind: "branch",
    history.BranchFailed.kind: "branch",
    history.ValueRecorded.kind: "value",
    history.EventSet.kind: "event",
    history.TimerStarted.kind: "timer",
    history.TimerFired.kind: "timer",
    history.SignalWaitStarted.kind: "signal",
    history.SignalReceived.kind: "signal",
    history.SignalRejected.kind: "signal",
    history.SignalTimedOut.kind: "signal",
    history.SignalSent.kind: "signal",
    history.ChildStarted.kind: "child",
    history.ChildCompleted.kind: "child",
    history.ChildFailed.kind: "child",
    history.ChildCancelled.kind: "child",
    history.PatchMarker.kind: "patch",
    history.CancelRequested.kind: "cancel",
    history.WorkflowCompleted.kind: "end",
    history.WorkflowFailed.kind: "end",
    history.WorkflowCancelled.kind: "end",
    history.ContinuedAsNew.kind: "continued",
    history.RunDied.kind: "died",
    history.RunRetried.kind: "retried",
}
"""The row kind that draws each event kind of ``history.EVENT_TYPES``."""

STATUSES = ("ok", "failed", "retrying", "waiting", "cancelled", "running")
"""Every status a row may have."""

UNDECODABLE = "<undecodable>"
"""What a row shows for a payload the codec cannot read."""

MIN_WIDTH = 0.5
"""The narrowest bar, in percent of the timeline, so a short step stays visible."""

DETAIL_WIDTH = 120
"""The most characters of a row's detail line."""

PLACEHOLDER_LIMIT = 10_000
"""The most not-yet-recorded branches of an open parallel block drawn as running rows."""

_RETRY_TIMER = "retry "
"""How a step's long back-off names its timer: ``retry <step name>``."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed attempt of a step or branch that was tried again.

    Times are offsets in seconds from the timeline's start (``None``: no times
    recorded). ``backoff`` is the wait recorded after the attempt (a long back-off
    is a durable timer); ``None`` when the worker waited it without recording it.
    ``left``, ``width`` and ``gap`` (the back-off's width, right after the attempt)
    are percentages of the timeline, for drawing.
    """

    start: float | None
    end: float | None
    error_text: str
    backoff: float | None = None
    left: float | None = None
    width: float | None = None
    gap: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the timeline.

    ``start`` and ``end`` are offsets in seconds from the timeline's start; ``end``
    is ``None`` while the row is open (a timer not fired, a wait still waiting),
    and both are ``None`` when the store recorded no times. ``left``/``width`` are
    percentages for the bar (``None`` without times); a point has width 0.
    ``lane`` is 0 for the workflow's own sequence and ``index + 1`` for a branch
    of a parallel block, whose row index is the branch's ``group``. ``tries``
    counts the attempts made, the failed ones in ``attempts`` included.
    """

    kind: str
    label: str
    seqs: tuple[int, ...]
    status: str
    start: float | None = None
    end: float | None = None
    attempts: tuple[Attempt, ...] = ()
    tries: int = 0
    lane: int = 0
    group: int | None = None
    link: str | None = None
    detail: str = ""
    left: float | None = None
    width: float | None = None
    point: bool = False

    @property
    def duration(self) -> float | None:
        """Seconds from start to end; ``None`` while open or without times."""
        if self.start is None or self.end is None:
            return None
        return max(self.end - self.start, 0.0)

    @property
    def times(self) -> str:
        """When the row happened, for a tooltip: ``at +1.500s, took 0.250s``."""
        if self.start is None:
            return "no time recorded"
        text = f"at +{_cli_format.format_duration(self.start)}"
        if self.point:
            return text
        if self.end is None:
            return f"{text}, still open"
        return f"{text}, took {_cli_format.format_duration(max(self.end - self.start, 0.0))}"


@dataclass(frozen=True, slots=True)
class Timeline:
    """A run's history as rows: ``start`` is the first event's epoch time, ``span`` seconds.

    ``timed`` is false for a history stored without event times: rows then have
    no times and no bars, only their order.
    """

    rows: tuple[Row, ...]
    start: float | None
    span: float | None
    event_count: int
    run_id: str = ""
    status: str = ""
    timed: bool = True

    @property
    def span_text(self) -> str:
        """The span for people (``4m07s``), or ``""`` without times."""
        return "" if self.span is None else _cli_format.format_duration(self.span)


class _Open:
    """A row being built: mutable until :func:`build` freezes it."""

    __slots__ = (
        "attempt_start",
        "attempts",
        "backoff",
        "detail",
        "end",
        "group",
        "kind",
        "label",
        "lane",
        "link",
        "point",
        "seqs",
        "start",
        "status",
        "tries",
    )  # fmt: skip

    def __init__(self, kind: str, label: str, seq: int | None, start: float | None) -> None:
        self.kind = kind
        self.label = label
        self.seqs: list[int] = [] if seq is None else [seq]
        self.status = "ok"
        self.start = start
        self.end: float | None = start
        self.attempts: list[Attempt] = []
        self.tries = 0
        self.lane = 0
        self.group: int | None = None
        self.link: str | None = None
        self.detail = ""
        self.point = False
        self.attempt_start = start
        self.backoff: float | None = None

    def fail_attempt(self, seq: int, at: float | None, error: str) -> None:
        """Record a failed attempt that will be retried, ending at ``at``."""
        self.seqs.append(seq)
        self.attempts.append(Attempt(self.attempt_start, at, error))
        self.tries += 1
        self.attempt_start = at
        self.status, self.end, self.detail = "retrying", None, error

    def finish(self, seq: int, at: float | None, status: str, detail: str) -> None:
        """Close the row at ``at`` with ``status``."""
        self.seqs.append(seq)
        self.end, self.status, self.detail = at, status, detail


class _Builder:
    """Walks a history once; each handler turns one event into rows."""

    def __init__(self, state: history.RunState, codec: _codec.Codec) -> None:
        self.codec = codec
        self.state = state
        events = state.events
        stamps = tuple(state.recorded_at)
        self.timed = bool(events) and len(stamps) == len(events)
        self.origin = stamps[0] if self.timed else None
        self.offsets: tuple[float, ...] = (
            tuple(at - stamps[0] for at in stamps) if self.timed else ()
        )
        self.rows: list[_Open] = []
        self.steps: dict[str, _Open] = {}
        self.timers: dict[str, _Open] = {}
        self.waits: dict[str, _Open] = {}
        self.children: dict[str, _Open] = {}
        self.block: _Open | None = None
        self.block_count = 0
        self.block_index = 0
        self.block_step = ""
        self.block_steps: list[str] = []
        self.branches: dict[int, _Open] = {}
        self.last_end: str = ""

    # -- helpers -------------------------------------------------------------------------

    def at(self, seq: int) -> float | None:
        return self.offsets[seq] if self.timed else None

    def before(self, seq: int) -> float | None:
        """When what ``seq`` records began: the time of the event before it."""
        return self.offsets[max(seq - 1, 0)] if self.timed else None

    def add(self, kind: str, label: str, seq: int | None, start: float | None) -> _Open:
        row = _Open(kind, label, seq, start)
        self.rows.append(row)
        return row

    def point(self, kind: str, label: str, seq: int, status: str = "ok", detail: str = "") -> _Open:
        row = self.add(kind, label, seq, self.at(seq))
        row.point, row.status, row.detail = True, status, detail
        return row

    def value(self, event: history.Event) -> Any:
        """The event's payload as JSON-ready data, or ``_Undecodable`` for bad bytes."""
        if isinstance(event, history.SignalRejected):
            return _cli_format.event_value(self.codec, event)  # Fluxo's envelope
        if event.data is None:
            return None
        try:
            decoded = self.codec.decode(event.data, Any)
            return json.loads(json.dumps(decoded, default=str))
        except Exception:
            return _UNDECODABLE

    def detail(self, event: history.Event, value: Any = None) -> str:
        """One line describing the event's payload, as ``fluxo runs show`` does."""
        data = self.value(event) if value is None else value
        if data is _UNDECODABLE:
            return UNDECODABLE
        try:
            text = _cli_format._detail({"kind": event.kind, "data": data}, DETAIL_WIDTH)
        except Exception:
            return UNDECODABLE
        return _cli_format.one_line(text)

    def error(self, event: history.Event) -> str:
        data = self.value(event)
        if data is _UNDECODABLE:
            return UNDECODABLE
        try:
            return _cli_format._error_text(data, DETAIL_WIDTH)
        except Exception:
            return UNDECODABLE

    # -- the walk ------------------------------------------------------------------------

    def walk(self) -> None:
        for seq, event in enumerate(self.state.events):
            if self.block is not None and not isinstance(event, history.BRANCH_KINDS):
                self.close_block(open_=False)
            handler = _HANDLERS.get(event.kind)
            if handler is None:  # an Event subclass this module does not know
                self.point("event", event.kind, seq, detail=self.detail(event))
            else:
                handler(self, seq, event)
        if self.block is not None:
            self.close_block(open_=True)
        self.close_rest()

    def close_rest(self) -> None:
        """Leave open rows open in a run still going; close them in a finished one."""
        run = self.state.run
        if not run.status.is_terminal:
            return
        end = self.at(len(self.state.events) - 1)
        status = "cancelled" if run.status is history.RunStatus.CANCELLED else "failed"
        for row in self.rows:
            if row.status not in _OPEN:
                continue
            if row.kind == "child":  # never awaited: the parent does not know how it ended
                row.end, row.point, row.status = row.start, True, "ok"
                row.detail = row.detail or "never awaited"
            else:
                row.end, row.status = end, status

    # -- handlers ------------------------------------------------------------------------

    def started(self, seq: int, event: history.Event) -> None:
        self.point("start", f"started {event.name}", seq, detail=self.detail(event))

    def step_attempt(self, seq: int, event: history.Event) -> None:
        row = self.steps.get(event.name)
        if row is None:
            row = self.add("step", event.name, None, self.before(seq))
            row.attempt_start = row.start
            self.steps[event.name] = row
        row.fail_attempt(seq, self.at(seq), self.error(event))

    def step_end(self, seq: int, event: history.Event) -> None:
        row = self.steps.pop(event.name, None)
        if row is None:
            row = self.add("step", event.name, None, self.before(seq))
        failed = isinstance(event, history.StepFailed)
        row.tries += 1
        row.finish(seq, self.at(seq), "failed" if failed else "ok", self.detail(event))

    def parallel(self, seq: int, event: history.Event) -> None:
        plan = self.value(event)
        plan = plan if isinstance(plan, dict) else {}
        count = plan.get("count")
        steps = plan.get("steps")
        self.block_count = count if isinstance(count, int) and count >= 0 else 0
        self.block_steps = [str(s) for s in steps] if isinstance(steps, list) else []
        self.block_step = event.name
        if event.name:
            label = f"parallel: {self.block_count} calls of {event.name}"
        else:
            label = f"parallel: {self.block_count} branches"
        self.block_index = len(self.rows)
        row = self.add("parallel", label, seq, self.before(seq))
        row.end = self.at(seq)
        row.detail = UNDECODABLE if plan == {} and event.data is not None else ""
        self.block = row
        self.branches = {}

    def branch(self, seq: int, event: history.Event) -> None:
        parsed = history.parse_branch_name(event.name)
        step, index = parsed if parsed is not None else (event.name, -1)
        row = self.branches.get(index) if self.block is not None and index >= 0 else None
        if row is None:
            start = self.block.start if self.block is not None else self.before(seq)
            row = _Open("branch", f"{step} #{index}" if index >= 0 else step, None, start)
            row.lane = index + 1 if self.block is not None and index >= 0 else 0
            if self.block is not None and index >= 0:
                self.branches[index] = row
            else:
                self.rows.append(row)  # a branch outside any block: damaged, shown alone
        if isinstance(event, history.BranchAttemptFailed):
            row.fail_attempt(seq, self.at(seq), self.error(event))
            return
        failed = isinstance(event, history.BranchFailed)
        row.tries += 1
        row.finish(seq, self.at(seq), "failed" if failed else "ok", self.detail(event))

    def close_block(self, *, open_: bool) -> None:
        """Put the block's branch rows under it, by index; an open block gets running ones."""
        block = self.block
        assert block is not None
        self.block = None
        group = self.block_index
        live = open_ and not self.state.run.status.is_terminal
        if live and self.block_count <= PLACEHOLDER_LIMIT:
            for index in range(self.block_count):
                if index not in self.branches:
                    steps = self.block_steps
                    step = steps[index] if index < len(steps) else self.block_step
                    row = _Open("branch", f"{step} #{index}", None, block.start)
                    row.lane, row.status, row.end = index + 1, "running", None
                    self.branches[index] = row
        ends = [row.end for row in self.branches.values() if row.end is not None]
        if ends:
            block.end = max(ends)
        statuses = {row.status for row in self.branches.values()}
        if "failed" in statuses:
            block.status = "failed"
        elif statuses & _OPEN or (live and len(self.branches) < self.block_count):
            block.status, block.end = "running", None
        for index in sorted(self.branches):
            row = self.branches[index]
            row.group = group
            self.rows.append(row)
        self.branches = {}

    def timer_started(self, seq: int, event: history.Event) -> None:
        fire_at = self.value(event)
        fire = float(fire_at) if isinstance(fire_at, (int, float)) else None
        at = self.at(seq)
        started = self.state.recorded_at[seq] if at is not None else None
        wait = None if fire is None or started is None else max(fire - started, 0.0)
        step = self.steps.get(event.name[len(_RETRY_TIMER) :])
        if event.name.startswith(_RETRY_TIMER) and step is not None:
            step.seqs.append(seq)
            if step.attempts:
                step.attempts[-1] = _with_backoff(step.attempts[-1], wait)
            self.timers[event.name] = step
            return
        label = "sleep" if event.name == "sleep" else f"timer {event.name}"
        if wait is not None:
            label += f" {_seconds(wait)}"
        elif fire is not None:
            label += f" until {_iso(fire)}"
        row = self.add("timer", label, seq, at)
        row.status, row.end = "waiting", None
        row.detail = UNDECODABLE if fire_at is _UNDECODABLE else ""
        self.timers[event.name] = row

    def timer_fired(self, seq: int, event: history.Event) -> None:
        row = self.timers.pop(event.name, None)
        if row is None:
            self.point("timer", f"timer {event.name} fired", seq)
        elif row.kind == "step":  # a step's back-off ended: its next attempt begins
            row.seqs.append(seq)
            row.attempt_start = self.at(seq)
            last = row.attempts[-1] if row.attempts else None
            if last is not None and last.end is not None and row.attempt_start is not None:
                row.attempts[-1] = _with_backoff(last, max(row.attempt_start - last.end, 0.0))
        else:
            row.finish(seq, self.at(seq), "ok", row.detail)

    def wait_started(self, seq: int, event: history.Event) -> None:
        deadline = self.value(event)
        row = self.add("signal", f"wait for signal {event.name!r}", seq, self.at(seq))
        row.status, row.end = "waiting", None
        if isinstance(deadline, (int, float)):
            row.detail = f"until {_iso(float(deadline))}"
        elif deadline is _UNDECODABLE:
            row.detail = UNDECODABLE
        self.waits[event.name] = row

    def signal_received(self, seq: int, event: history.Event) -> None:
        row = self.waits.pop(event.name, None)
        detail = self.detail(event)
        if row is None:
            self.point("signal", f"signal {event.name!r} received", seq, detail=detail)
        else:
            row.finish(seq, self.at(seq), "ok", detail)

    def signal_rejected(self, seq: int, event: history.Event) -> None:
        detail = self.detail(event)
        row = self.waits.get(event.name)
        if row is None:
            self.point("signal", f"signal {event.name!r} skipped", seq, detail=detail)
        else:
            row.seqs.append(seq)
            row.detail = detail

    def signal_timed_out(self, seq: int, event: history.Event) -> None:
        row = self.waits.pop(event.name, None)
        if row is None:
            self.point("signal", f"wait for signal {event.name!r} timed out", seq, "failed")
        else:
            row.label += " (timed out)"
            row.finish(seq, self.at(seq), "failed", "timed out")

    def signal_sent(self, seq: int, event: history.Event) -> None:
        target, _, name = event.name.rpartition("/")
        failed = event.data is not None
        detail = self.error(event) if failed else ""
        label = f"send signal {name!r} to {target}"
        row = self.point("signal", label, seq, "failed" if failed else "ok", detail)
        row.link = target or None

    def child_started(self, seq: int, event: history.Event) -> None:
        start = self.value(event)
        info = start if isinstance(start, dict) else {}
        workflow = str(info.get("workflow", "?"))
        detached = bool(info.get("detached", False))
        label = f"child {workflow}" + (" (detached)" if detached else "")
        row = self.add("child", label, seq, self.at(seq))
        row.link = event.name or None
        if start is _UNDECODABLE:
            row.detail = UNDECODABLE
        if info.get("error") is not None:
            row.point, row.status = True, "failed"
            row.detail = f"refused: {_cli_format._error_text(info['error'], DETAIL_WIDTH)}"
        else:
            row.status, row.end = "running", None
            self.children[event.name] = row

    def child_outcome(self, seq: int, event: history.Event) -> None:
        status = {
            history.ChildCompleted.kind: "ok",
            history.ChildFailed.kind: "failed",
            history.ChildCancelled.kind: "cancelled",
        }[event.kind]
        detail = self.detail(event)
        row = self.children.pop(event.name, None)
        if row is None:
            label = f"child {event.name} {event.kind.removeprefix('child_')}"
            self.point("child", label, seq, status, detail).link = event.name or None
        else:
            row.finish(seq, self.at(seq), status, detail)

    def value_recorded(self, seq: int, event: history.Event) -> None:
        self.point("value", f"recorded {event.name}", seq, detail=self.detail(event))

    def event_set(self, seq: int, event: history.Event) -> None:
        self.point("event", f"set event {event.name!r}", seq, detail=self.detail(event))

    def patch(self, seq: int, event: history.Event) -> None:
        self.point("patch", f"patched {event.name!r}", seq)

    def cancel(self, seq: int, event: history.Event) -> None:
        why = "deadline passed" if event.name == "deadline" else "on request"
        self.point("cancel", f"cancel requested ({why})", seq, "cancelled")
        at = self.at(seq)
        for waits in (self.timers, self.waits, self.steps):
            for row in waits.values():
                if row.status in _OPEN:  # a step both retrying and in back-off: once
                    row.end, row.status = at, "cancelled"

    def ended(self, seq: int, event: history.Event) -> None:
        if isinstance(event, history.WorkflowCompleted):
            label, status = "completed", "ok"
        elif isinstance(event, history.WorkflowFailed):
            label, status = "failed", "failed"
        else:
            why = "deadline passed" if event.name == "deadline" else "on request"
            label, status = f"cancelled ({why})", "cancelled"
        self.last_end = event.kind
        detail = "" if status == "cancelled" else self.detail(event)
        self.point("end", label, seq, status, detail)

    def continued(self, seq: int, event: history.Event) -> None:
        self.last_end = event.kind
        row = self.point("continued", f"continued as new in {event.name}", seq)
        row.link = event.name or None

    def died(self, seq: int, event: history.Event) -> None:
        self.last_end = event.kind
        self.point("died", "run died", seq, "failed", self.detail(event))

    def retried(self, seq: int, event: history.Event) -> None:
        resumed = self.last_end == history.WorkflowCancelled.kind
        label = "resumed by an operator" if resumed else "retried by an operator"
        self.point("retried", label, seq).link = event.name or None
        for waits in (self.timers, self.waits):  # waits a cancellation cut may go on
            for row in waits.values():
                if row.status == "cancelled":
                    row.status, row.end = "waiting", None


class _Undecodable:
    """Marks a payload the codec could not read."""


_UNDECODABLE = _Undecodable()
_OPEN = frozenset({"waiting", "running", "retrying"})


def _with_backoff(attempt: Attempt, backoff: float | None) -> Attempt:
    return Attempt(attempt.start, attempt.end, attempt.error_text, backoff)


def _seconds(value: float) -> str:
    """A wait as people say it: ``5s``, ``1.5s``, ``2m``, ``4m07s``, ``3h``."""
    if value < 60:
        return f"{value:g}s" if value >= 0.001 else "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value % size == 0:
            return f"{int(value // size)}{unit}"
    return _cli_format.format_duration(value)


def _iso(value: float) -> str:
    try:
        return _cli_format.iso(value)
    except (OverflowError, OSError, ValueError):
        return repr(value)


_HANDLERS: dict[str, Callable[[_Builder, int, history.Event], None]] = {
    history.WorkflowStarted.kind: _Builder.started,
    history.StepCompleted.kind: _Builder.step_end,
    history.StepAttemptFailed.kind: _Builder.step_attempt,
    history.StepFailed.kind: _Builder.step_end,
    history.ParallelStarted.kind: _Builder.parallel,
    history.BranchCompleted.kind: _Builder.branch,
    history.BranchAttemptFailed.kind: _Builder.branch,
    history.BranchFailed.kind: _Builder.branch,
    history.ValueRecorded.kind: _Builder.value_recorded,
    history.EventSet.kind: _Builder.event_set,
    history.TimerStarted.kind: _Builder.timer_started,
    history.TimerFired.kind: _Builder.timer_fired,
    history.SignalWaitStarted.kind: _Builder.wait_started,
    history.SignalReceived.kind: _Builder.signal_received,
    history.SignalRejected.kind: _Builder.signal_rejected,
    history.SignalTimedOut.kind: _Builder.signal_timed_out,
    history.SignalSent.kind: _Builder.signal_sent,
    history.ChildStarted.kind: _Builder.child_started,
    history.ChildCompleted.kind: _Builder.child_outcome,
    history.ChildFailed.kind: _Builder.child_outcome,
    history.ChildCancelled.kind: _Builder.child_outcome,
    history.PatchMarker.kind: _Builder.patch,
    history.CancelRequested.kind: _Builder.cancel,
    history.WorkflowCompleted.kind: _Builder.ended,
    history.WorkflowFailed.kind: _Builder.ended,
    history.WorkflowCancelled.kind: _Builder.ended,
    history.ContinuedAsNew.kind: _Builder.continued,
    history.RunDied.kind: _Builder.died,
    history.RunRetried.kind: _Builder.retried,
}


def build(state: history.RunState, codec: _codec.Codec, *, now: float | None = None) -> Timeline:
    """Turn a run's history into the rows of its timeline, in one pass.

    Args:
        state: the run and its history, as ``Store.load`` returns them.
        codec: the engine's codec (``engine.codec``), to read payloads.
        now: the current time (epoch seconds): a run still going then spans up
            to it, so its open rows reach the right edge at the present.

    Returns:
        The timeline; it never raises on damaged payloads (they read
        ``<undecodable>``).
    """
    builder = _Builder(state, codec)
    builder.walk()
    span: float | None = None
    if builder.timed:
        span = max(builder.offsets[-1], 0.0)
        if now is not None and not state.run.status.is_terminal and builder.origin is not None:
            span = max(span, now - builder.origin)
    rows = tuple(_freeze(row, span) for row in builder.rows)
    return Timeline(
        rows=rows,
        start=builder.origin,
        span=span,
        event_count=len(state.events),
        run_id=state.run.id,
        status=state.run.status.value,
        timed=builder.timed,
    )


def _pct(offset: float, span: float) -> float:
    return 0.0 if span <= 0 else min(max(offset / span * 100.0, 0.0), 100.0)


def _bar(start: float, end: float | None, span: float) -> tuple[float, float]:
    """``(left, width)`` of a bar; an open one reaches the right edge."""
    left = _pct(start, span)
    right = 100.0 if end is None else _pct(end, span)
    width = max(right - left, MIN_WIDTH)
    return min(left, 100.0 - width), width


def _freeze(row: _Open, span: float | None) -> Row:
    left = width = None
    attempts: Sequence[Attempt] = row.attempts
    if span is not None and row.start is not None:
        if row.point:
            left, width = _pct(row.start, span), 0.0
        else:
            left, width = _bar(row.start, row.end, span)
            attempts = [_place(attempt, span) for attempt in row.attempts]
    return Row(
        kind=row.kind,
        label=row.label,
        seqs=tuple(row.seqs),
        status=row.status,
        start=row.start,
        end=row.end,
        attempts=tuple(attempts),
        tries=row.tries,
        lane=row.lane,
        group=row.group,
        link=row.link,
        detail=row.detail,
        left=left,
        width=width,
        point=row.point,
    )


def _place(attempt: Attempt, span: float) -> Attempt:
    if attempt.start is None or attempt.end is None:
        return attempt
    left = _pct(attempt.start, span)
    width = max(_pct(attempt.end, span) - left, 0.0)
    gap = None
    if attempt.backoff is not None:
        gap = min(_pct(attempt.end + attempt.backoff, span) - left - width, 100.0 - left - width)
        gap = max(gap, 0.0)
    return Attempt(
        attempt.start,
        attempt.end,
        attempt.error_text,
        attempt.backoff,
        left=left,
        width=width,
        gap=gap,
    )


__all__ = ["ROW_KINDS", "STATUSES", "Attempt", "Row", "Timeline", "build"]
