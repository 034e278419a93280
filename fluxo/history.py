"""The events of a run's history, and the run records stores keep beside them.

A history is an append-only list of events; an event's position in the list is
its sequence number, starting at 0 with :class:`WorkflowStarted`. Every event
has the same persisted shape, ``(kind, name, data)``: a short kind string, a
name (of the workflow, step or value) and an optional opaque payload produced
by the codec. Stores persist exactly that shape, so they never import user
types and a new event kind needs no schema change.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import ClassVar

from fluxo import _errors, _names


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of a history. Subclasses fix ``kind``; ``data`` is codec output."""

    name: str = ""
    data: bytes | None = None

    kind: ClassVar[str] = ""

    def describe(self) -> str:
        """Return a short human description, used in nondeterminism reports."""
        return f"{self.kind} {self.name}".rstrip()


@dataclass(frozen=True, slots=True)
class WorkflowStarted(Event):
    """The run began: ``name`` is the workflow name, ``data`` its encoded arguments."""

    kind: ClassVar[str] = "workflow_started"


@dataclass(frozen=True, slots=True)
class StepCompleted(Event):
    """A step returned: ``data`` is its encoded result."""

    kind: ClassVar[str] = "step_completed"


@dataclass(frozen=True, slots=True)
class StepAttemptFailed(Event):
    """A step attempt raised and the step will be retried: ``data`` is the error."""

    kind: ClassVar[str] = "step_attempt_failed"


@dataclass(frozen=True, slots=True)
class StepFailed(Event):
    """A step raised on its last attempt: ``data`` is the error."""

    kind: ClassVar[str] = "step_failed"


@dataclass(frozen=True, slots=True)
class ParallelStarted(Event):
    """A ``fluxo.parallel``/``fluxo.map`` block began: its branch events follow.

    ``name`` is the step of every branch when they all call one step, else empty;
    ``data`` is the plan: ``{"count": n}``, plus ``"steps"`` (each branch's step
    name, in order) when the branches call different steps.
    """

    kind: ClassVar[str] = "parallel_started"


@dataclass(frozen=True, slots=True)
class BranchCompleted(Event):
    """A branch of a parallel block returned: ``name`` is ``step#index``, ``data`` its result."""

    kind: ClassVar[str] = "branch_completed"


@dataclass(frozen=True, slots=True)
class BranchAttemptFailed(Event):
    """A branch's attempt raised and it will be retried: ``name`` is ``step#index``."""

    kind: ClassVar[str] = "branch_attempt_failed"


@dataclass(frozen=True, slots=True)
class BranchFailed(Event):
    """A branch raised on its last attempt: ``name`` is ``step#index``, ``data`` the error."""

    kind: ClassVar[str] = "branch_failed"


BRANCH_KINDS: tuple[type[Event], ...] = (BranchCompleted, BranchAttemptFailed, BranchFailed)
"""The events recording branches of a parallel block, in any order after its start."""


def branch_name(step: str, index: int) -> str:
    """The ``name`` of a branch event: the step's name and the branch's index."""
    return f"{step}#{index}"


def parse_branch_name(name: str) -> tuple[str, int] | None:
    """Split a branch event's ``name`` into the step name and index (``None``: malformed)."""
    step, sep, index = name.rpartition("#")
    if not sep or not index.isdigit() or not index.isascii():
        return None
    return step, int(index)


@dataclass(frozen=True, slots=True)
class ValueRecorded(Event):
    """A nondeterministic value (``now``, ``uuid4``, ``random``) taken by the workflow."""

    kind: ClassVar[str] = "value_recorded"


@dataclass(frozen=True, slots=True)
class EventSet(Event):
    """The workflow set an event (``fluxo.set_event``): ``name`` is its key, ``data`` its value.

    Every value set is kept, in order: ``Engine.get_event`` reads the latest one,
    ``Engine.watch_event`` each of them.
    """

    kind: ClassVar[str] = "event_set"


@dataclass(frozen=True, slots=True)
class TimerStarted(Event):
    """A durable timer was set: ``data`` is its fire time (epoch seconds, JSON)."""

    kind: ClassVar[str] = "timer_started"


@dataclass(frozen=True, slots=True)
class TimerFired(Event):
    """The timer set by the preceding ``TimerStarted`` of the same name fired."""

    kind: ClassVar[str] = "timer_fired"


@dataclass(frozen=True, slots=True)
class SignalWaitStarted(Event):
    """The workflow began waiting for signal ``name``: ``data`` is its deadline or null."""

    kind: ClassVar[str] = "signal_wait_started"


@dataclass(frozen=True, slots=True)
class SignalReceived(Event):
    """The workflow consumed the oldest pending signal ``name``: ``data`` is its payload."""

    kind: ClassVar[str] = "signal_received"


@dataclass(frozen=True, slots=True)
class SignalRejected(Event):
    """The wait for signal ``name`` skipped the oldest pending one: its payload did not fit.

    ``data`` is Fluxo's JSON envelope ``{"error": ..., "payload": ...}`` (see
    ``fluxo._payloads.Rejection``): why the payload did not decode to the wait's
    ``type=``, and the payload itself. The signal is consumed; the wait goes on.
    """

    kind: ClassVar[str] = "signal_rejected"


@dataclass(frozen=True, slots=True)
class SignalTimedOut(Event):
    """The wait for signal ``name`` reached its deadline first."""

    kind: ClassVar[str] = "signal_timed_out"


@dataclass(frozen=True, slots=True)
class SignalSent(Event):
    """The workflow sent a signal: ``name`` is ``target-run-id/signal-name``."""

    kind: ClassVar[str] = "signal_sent"


@dataclass(frozen=True, slots=True)
class ChildStarted(Event):
    """The workflow started a child run: ``name`` is the child's run id.

    ``data`` records the child's workflow, whether it was started detached, and
    the error when the store refused to start it.
    """

    kind: ClassVar[str] = "child_started"


@dataclass(frozen=True, slots=True)
class ChildCompleted(Event):
    """The child run ``name`` completed: ``data`` is its encoded result."""

    kind: ClassVar[str] = "child_completed"


@dataclass(frozen=True, slots=True)
class ChildFailed(Event):
    """The child run ``name`` failed: ``data`` is its error."""

    kind: ClassVar[str] = "child_failed"


@dataclass(frozen=True, slots=True)
class ChildCancelled(Event):
    """The child run ``name`` was cancelled: ``data`` is why (``"cancelled"``, ``"deadline"``)."""

    kind: ClassVar[str] = "child_cancelled"


CHILD_OUTCOMES: tuple[type[Event], ...] = (ChildCompleted, ChildFailed, ChildCancelled)
"""The events recording how a child run ended, as its parent took delivery of it."""


@dataclass(frozen=True, slots=True)
class PatchMarker(Event):
    """The run took the new branch of ``fluxo.patched(name)``."""

    kind: ClassVar[str] = "patch_marker"


@dataclass(frozen=True, slots=True)
class CancelRequested(Event):
    """The run took delivery of a cancellation at this position (at a durable call)."""

    kind: ClassVar[str] = "cancel_requested"


@dataclass(frozen=True, slots=True)
class WorkflowCompleted(Event):
    """The workflow returned: ``data`` is its encoded result."""

    kind: ClassVar[str] = "workflow_completed"


@dataclass(frozen=True, slots=True)
class WorkflowFailed(Event):
    """The workflow raised: ``data`` is the error."""

    kind: ClassVar[str] = "workflow_failed"


@dataclass(frozen=True, slots=True)
class WorkflowCancelled(Event):
    """The run finished unwinding after a cancellation."""

    kind: ClassVar[str] = "workflow_cancelled"


@dataclass(frozen=True, slots=True)
class ContinuedAsNew(Event):
    """The workflow called ``fluxo.continue_as_new``: ``name`` is the id of the next run.

    It ends the run ``completed``; the logical workflow goes on in the run it names,
    which was created before this event was recorded.
    """

    kind: ClassVar[str] = "continued_as_new"


@dataclass(frozen=True, slots=True)
class RunDied(Event):
    """The run's executions died too often (``max_recoveries``): it ends ``dead``.

    Recorded instead of running the workflow again; ``data`` is the error, as
    ``workflow_failed`` records one (``fluxo.RunDiedError``).
    """

    kind: ClassVar[str] = "run_died"


FAILURE_ENDS: tuple[type[Event], ...] = (WorkflowFailed, RunDied)
"""The events that end a run failed or dead: an operator may retry it after them."""


@dataclass(frozen=True, slots=True)
class RunRetried(Event):
    """An operator resumed a failed, dead or cancelled run; ``data`` is unused.

    ``engine.retry`` resumes a failed or dead run, ``engine.resume`` a cancelled one.
    """

    kind: ClassVar[str] = "run_retried"


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        WorkflowStarted,
        StepCompleted,
        StepAttemptFailed,
        StepFailed,
        ParallelStarted,
        BranchCompleted,
        BranchAttemptFailed,
        BranchFailed,
        ValueRecorded,
        EventSet,
        TimerStarted,
        TimerFired,
        SignalWaitStarted,
        SignalReceived,
        SignalRejected,
        SignalTimedOut,
        SignalSent,
        ChildStarted,
        ChildCompleted,
        ChildFailed,
        ChildCancelled,
        PatchMarker,
        CancelRequested,
        WorkflowCompleted,
        WorkflowFailed,
        WorkflowCancelled,
        ContinuedAsNew,
        RunDied,
        RunRetried,
    )
}


CHAIN_SEPARATOR = _names.CHAIN_SEPARATOR
"""Joins a logical workflow id and a run's position in its chain: ``order-17~3``.

User-given run ids may not contain it, and generated ones never do, so the id of
every run ``fluxo.continue_as_new`` starts is unambiguous."""


def chain_next(run_id: str) -> str:
    """The id of the run that continues ``run_id``: ``a`` -> ``a~1`` -> ``a~2``..."""
    root, sep, position = run_id.rpartition(CHAIN_SEPARATOR)
    if sep and position.isdigit() and position.isascii():
        return f"{root}{CHAIN_SEPARATOR}{int(position) + 1}"
    return f"{run_id}{CHAIN_SEPARATOR}1"


def chain_root(run_id: str) -> str:
    """The first run of the chain ``run_id`` belongs to: ``a~2`` -> ``a``, ``a`` -> ``a``."""
    root, sep, position = run_id.rpartition(CHAIN_SEPARATOR)
    if sep and position.isdigit() and position.isascii():
        return root
    return run_id


def child_id(parent_id: str, seq: int) -> str:
    """The id of the child run a workflow starts at position ``seq`` without giving one.

    ``order-17`` starting a child at position 4 names it ``order-17~child-4``. The
    separator cannot appear in a user-given id, so these ids never collide with one.
    """
    return f"{parent_id}{CHAIN_SEPARATOR}child-{seq}"


SIGNAL_PREFIX = _names.SIGNAL_PREFIX
"""Signal names Fluxo keeps for itself; user signal names may not start with it."""


def child_signal_name(child_id: str) -> str:
    """The signal a child run sends its parent when it ends: ``fluxo:child:<child id>``.

    ``child_id`` is the id the parent gave it (the first run of the child's chain).
    """
    return f"{SIGNAL_PREFIX}child:{child_id}"


name_problem = _names.name_problem
"""What makes a value unfit to name a run, workflow, step, signal or worker, if anything.

``name_problem(value) -> str | None``: a store refuses such a name. The rules for
names and ids live in one private module; these three names stay here for stores."""

check_name = _names.check_name
"""``check_name(what, value) -> value``, or ``DefinitionError`` naming the value and the rule."""

name_rule = _names.name_rule
"""``name_rule(what, value, problem) -> str``: the message for a name that is refused."""


def event_from_record(
    kind: str, name: str, data: bytes | None, *, run_id: str = "", seq: int = 0
) -> Event:
    """Rebuild an event from its persisted ``(kind, name, data)`` shape.

    Raises:
        HistoryCorruptError: the kind is unknown (the history was written by a newer
            Fluxo, or is damaged), or the name or data has the wrong type.
    """
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        problem = f"unknown event kind {kind!r} (written by a newer Fluxo, or damaged)"
    elif not isinstance(name, str):
        problem = f"the {kind} event's name is not text but {type(name).__name__}"
    elif data is not None and not isinstance(data, bytes):
        problem = f"the {kind} event's data is not bytes but {type(data).__name__}"
    else:
        return cls(name, data)
    raise _errors.HistoryCorruptError(run_id, seq, problem, seq + 1)


def read_events(
    run_id: str,
    records: Iterable[tuple[int, str, str, bytes | None]],
    *,
    next_seq: int | None = None,
) -> tuple[Event, ...]:
    """Rebuild a stored history from its ``(seq, kind, name, data)`` rows, checked.

    Every store's ``load`` builds its history here, so each one refuses damage the
    same way: positions must run 0, 1, 2... without a gap or a repeat, every kind
    must be known, and the first event must be ``workflow_started``.

    Args:
        run_id: the run, named by the error.
        records: the rows in position order.
        next_seq: where the store appends next, when it keeps that apart from the
            rows (MongoDB); it must equal the number of rows.

    Raises:
        HistoryCorruptError: naming the first damaged position and the problem. Its
            ``next_seq`` is the position after the last stored row.
    """
    rows = list(records)
    end = max((row[0] for row in rows if isinstance(row[0], int)), default=-1) + 1
    end = max(end, 0 if next_seq is None else next_seq)
    events: list[Event] = []
    for expected, (seq, kind, name, data) in enumerate(rows):
        if seq != expected:
            if not isinstance(seq, int) or seq < 0:
                problem = f"a row has the impossible position {seq!r}"
            elif seq > expected:
                problem = f"position {expected} is missing (the next stored one is {seq})"
            else:
                problem = f"position {seq} is stored twice"
            raise _errors.HistoryCorruptError(run_id, expected, problem, end)
        try:
            event = event_from_record(kind, name, data, run_id=run_id, seq=seq)
        except _errors.HistoryCorruptError as exc:
            raise _errors.HistoryCorruptError(run_id, seq, exc.problem, end) from None
        if seq == 0 and not isinstance(event, WorkflowStarted):
            problem = f"the history starts with {kind!r}, not {WorkflowStarted.kind!r}"
            raise _errors.HistoryCorruptError(run_id, seq, problem, end)
        events.append(event)
    if not events:
        raise _errors.HistoryCorruptError(run_id, 0, "the history is empty", end)
    if next_seq is not None and next_seq != len(events):
        problem = (
            f"the run counts {next_seq} events but {len(events)} are stored"
            if next_seq > len(events)
            else f"{len(events)} events are stored but the run counts {next_seq}"
        )
        raise _errors.HistoryCorruptError(run_id, min(next_seq, len(events)), problem, end)
    return tuple(events)


class RunStatus(str, enum.Enum):
    """Where a run stands. Terminal statuses never change again."""

    PENDING = "pending"
    """Created or woken, waiting for a worker to claim it."""
    RUNNING = "running"
    """Claimed by a worker (the lease tells until when)."""
    WAITING = "waiting"
    """Suspended until ``ready_at`` or until something wakes it."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD = "dead"
    """Its executions kept dying (more than the workflow's ``max_recoveries``); retry it."""

    @property
    def is_terminal(self) -> bool:
        """Tell whether the run has finished for good."""
        return self in _TERMINAL

    def __str__(self) -> str:
        return self.value


_TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.DEAD})
ACTIVE_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
RETRYABLE_STATUSES = (RunStatus.FAILED, RunStatus.DEAD)
"""The statuses of a run that ``engine.retry`` resumes."""
REOPENABLE_STATUSES = (*RETRYABLE_STATUSES, RunStatus.CANCELLED)
"""The statuses of a run that ``Store.reopen`` resumes (``engine.retry``, ``engine.resume``)."""
KEEPING_PARENTS = frozenset({*ACTIVE_STATUSES, *REOPENABLE_STATUSES})
"""The statuses of a parent run that keep ``Store.purge`` from deleting its children.

An active parent reads its children; a failed, dead or cancelled one may be retried
or resumed, and read them then."""
_STATUSES = {status.value: status for status in RunStatus}

DEFAULT_QUEUE = ""
"""The stored name of the default queue: a run started without a queue is in it.

Users name it ``"default"``; the engine stores that name as ``""``, so runs created
before queues existed are in it as they are. It has no limits and no admission."""


def parse_status(raw: object) -> tuple[RunStatus, str | None]:
    """A stored status, and ``None``; or, for one Fluxo does not know, FAILED and the damage.

    A run whose stored status is damaged is never claimed (no store claims a status
    it does not know), so it reads as failed, with :attr:`RunInfo.damage` saying why.
    """
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    status = _STATUSES.get(text) if isinstance(text, str) else None
    if status is not None:
        return status, None
    return RunStatus.FAILED, f"its stored status {text!r} is not one Fluxo knows"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's projection as the store keeps it. Times are seconds since the epoch (UTC).

    ``ready_at`` is when the run may next be claimed (``None``: not before something
    wakes it); ``lease_owner``/``lease_until`` tell which worker holds it;
    ``cancel_requested`` is set by ``Store.request_cancel`` until the run finishes;
    ``wake_requested`` is set by a signal or a cancellation and cleared by a claim, so
    a run that suspends after something arrived is made ready again at once;
    ``deadline`` is when the run is cancelled if it has not finished (set at creation);
    ``parent`` is the id of the run that started this one as its child (set at creation).
    ``recoveries`` counts the claims that took the run over from an execution that
    never ended (its lease ran out, or its worker was found dead), since the run was
    created or last retried; a workflow's ``max_recoveries`` bounds it.
    ``queue`` names the run's queue (``DEFAULT_QUEUE``, ``""``: the default one);
    ``priority`` orders the admission of the runs of a named queue (highest first);
    ``partition`` is the key its queue's per-partition limit counts the run under
    (``None``: none); the three are set at creation and never changed. ``start_at``
    is not ``None`` exactly while the run awaits admission to its named queue: it
    is the time from which the run may be admitted, and ``ready_at`` is then ``None``.
    ``headers`` is a small mapping of text to text recorded with the run at creation
    and never changed, such as the W3C ``traceparent`` of the request that started it
    (empty: none); it takes no part in the hash.
    ``damage`` is ``None`` unless the store's record of the run is damaged (its
    stored status is unknown, a field does not parse): it then says what is wrong,
    the other fields are what could be read (damaged ``headers`` read empty), and
    ``Store.load`` raises ``HistoryCorruptError``. A status Fluxo does not know reads
    ``FAILED``, and no worker claims that run; damaged ``headers`` leave the status as
    stored, and the worker that claims the run fails it, once.
    """

    id: str
    workflow: str
    status: RunStatus
    created_at: float
    updated_at: float
    ready_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    cancel_requested: bool = False
    wake_requested: bool = False
    deadline: float | None = None
    parent: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, hash=False)
    damage: str | None = None
    recoveries: int = 0
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    partition: str | None = None
    start_at: float | None = None

    @property
    def created(self) -> datetime:
        """``created_at`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.created_at, tz=timezone.utc)

    @property
    def updated(self) -> datetime:
        """``updated_at`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.updated_at, tz=timezone.utc)


@dataclass(frozen=True, slots=True)
class Signal:
    """A message sent to a run. ``id`` orders the signals of one run (oldest first)."""

    id: int
    name: str
    payload: bytes
    sent_at: float


@dataclass(frozen=True, slots=True)
class RunState:
    """A run, its full history and every signal sent to it, as one ``Store.load`` returns them.

    Signals are never deleted: which ones the run consumed is told by its history
    (each ``SignalReceived`` consumes the oldest remaining signal of its name).
    ``recorded_at`` tells when each event was recorded: the ``now`` (seconds since
    the epoch) of the ``create_run``, ``append`` or ``reopen`` that wrote it, one
    entry per event, in the order of ``events``.
    """

    run: RunInfo
    events: tuple[Event, ...]
    signals: tuple[Signal, ...] = ()
    recorded_at: tuple[float, ...] = ()

    @property
    def next_seq(self) -> int:
        """The sequence number the next appended event will take."""
        return len(self.events)
