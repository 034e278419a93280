"""The replay executor: runs a workflow function against its history.

Each durable call (a step, ``fluxo.now()``...) takes the next position of the
history. If the history already holds an event there, it must be the same kind
of call with the same name, and its recorded outcome is returned; otherwise the
call is done live, recorded, and its *recorded* form returned, so the live run
sees exactly what every replay will see.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import contextvars
import enum
import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import msgspec

from fluxo import _errors, codec, history, stores

if TYPE_CHECKING:
    from fluxo import _decorators

log = logging.getLogger(__name__)

_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "fluxo_run_context", default=None
)

StepRunner = Callable[["_decorators.Step[Any, Any]", Sequence[Any], Mapping[str, Any]], Any]
"""Calls a step's function for one live attempt: ``(step, args, kwargs) -> result``."""


def _call_step_function(
    step: _decorators.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    return step.fn(*args, **kwargs)


DEFAULT_PARALLEL_THREADS = 16
"""Threads an engine runs parallel branches on, unless ``Engine(parallel_threads=)`` says."""


class StepThreads:
    """The bounded pool of threads that runs the branches of parallel blocks.

    One per engine, shared by every run the engine executes, so a worker runs at
    most ``size`` branches at once whatever its runs fan out to. The threads are
    started on first use.
    """

    def __init__(self, size: int = DEFAULT_PARALLEL_THREADS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _errors.DefinitionError(
                f"parallel_threads must be a whole number >= 1, not {size!r}"
            )
        self.size = size
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], /, *args: Any) -> concurrent.futures.Future[None]:
        """Run ``fn(*args)`` on one of the threads (queued while all are busy)."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix="fluxo-branch"
                )
            pool = self._pool
        return pool.submit(fn, *args)

    def close(self) -> None:
        """Drop queued branches and let the threads end once their branch returns."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_shared_threads = StepThreads()
"""The pool of contexts made without one (tools; the replayer never runs a branch)."""


def check_signal_name(name: object) -> str:
    """Return ``name`` if it may name a user's signal, else raise ``DefinitionError``."""
    if not isinstance(name, str) or not name:
        raise _errors.DefinitionError(
            f"a signal name must be a non-empty string, not {_errors.quoted(name)}"
        )
    if name.startswith(history.SIGNAL_PREFIX):
        raise _errors.DefinitionError(
            f"signal names starting with {history.SIGNAL_PREFIX!r} are Fluxo's own (child runs "
            f"send their outcome under one); rename signal {_errors.quoted(name)}"
        )
    return history.check_name("the signal name", name)


def current_context() -> RunContext | None:
    """Return the context of the workflow running in this thread or task, if any."""
    return _current.get()


class _ControlFlow(BaseException):
    """Unwinds a workflow. A ``BaseException`` so ``except Exception:`` cannot swallow it."""

    def __init__(self, *args: object) -> None:
        if type(self) is _ControlFlow:
            raise TypeError("_ControlFlow is abstract")
        super().__init__(*args)


class _RunLost(_ControlFlow):
    """Another writer owns the run now (lost race or lease): stop without writing."""


class _Suspended(_ControlFlow):
    """The run waits (timer or signal); its wait and wake-up time are recorded."""


class _Stopped(_ControlFlow):
    """The worker is shutting down: stop at this durable call and give the run back."""


class _StoreFailed(_Stopped):
    """The store failed to record an event: stop, and let the run resume from its history.

    Raised as control flow, so a workflow's ``except Exception:`` cannot swallow the
    store's error and go on with a call that was never recorded.
    """


class _Rejected(_ControlFlow):
    """The store refused, for good, what the run had to record: the run fails instead."""


class _ReplayEnd(_ControlFlow):
    """``replay_only``: the code went past the recorded history, which it matched."""


class _Continued(_ControlFlow):
    """``fluxo.continue_as_new``: the next run exists and this one is recorded as continued."""


class _Restart(_ControlFlow):
    """``restart_after_record``: a position was recorded; execute again from the top."""


class Cancelled(_ControlFlow):
    """The run was cancelled. Raised at a durable call; ``finally:`` blocks still run.

    Fluxo raises it; user code cannot construct it. It derives from
    ``BaseException``, so ``except Exception:`` does not catch it.
    """

    def __init__(self, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("fluxo.Cancelled is raised by Fluxo and cannot be constructed")
        super().__init__("the run was cancelled")


_TOKEN = object()


class ErrorInfo(msgspec.Struct, omit_defaults=True):
    """How an exception is recorded in a history."""

    type: str
    message: str = ""
    types: list[str] = msgspec.field(default_factory=list)
    traceback: str = ""
    attempt: int = 0
    details: dict[str, Any] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Read names recorded by older versions as they are recorded now.
        self.type = _errors.read_type_name(self.type)
        self.types = [_errors.read_type_name(name) for name in self.types]


_MISMATCH = "fluxo.NondeterminismError"
"""How a history names a failure by a mismatch between code and history."""


def error_info(exc: BaseException, attempt: int = 0) -> ErrorInfo:
    """Describe ``exc`` by class names and text, since a history stores data, not code.

    Fluxo's own exceptions by their public names (``fluxo.StepError``), leaving out
    its private base classes; others by ``module.qualname``.
    """
    cls = type(exc)
    types = [_errors.type_name(cls)] + [
        _errors.type_name(base)
        for base in cls.__mro__[1:]
        if base not in (object, BaseException) and not _errors.is_private(base)
    ]
    details: dict[str, Any] = {}
    if isinstance(exc, _errors.NondeterminismError):
        details = {
            "run_id": exc.run_id,
            "seq": exc.seq,
            "expected": exc.expected,
            "recorded": exc.recorded,
            "hint": exc.hint,
        }
    if isinstance(exc, _errors.WorkflowFailedError):
        message = exc.error_message
    else:
        try:
            message = str(exc)
        except Exception:
            message = f"<{type(exc).__name__}: str() failed>"
    return ErrorInfo(
        type=types[0],
        message=_recordable(message),
        types=types,
        traceback=_recordable("".join(traceback.format_exception(exc))),
        attempt=attempt,
        details=details,
    )


def _recordable(text: str) -> str:
    """Escape what no codec can store (lone surrogates, as in undecodable file names)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def step_error(step: str, info: ErrorInfo) -> _errors.StepError:
    """Build the exception a workflow sees for a step's final failure."""
    return _errors.StepError(
        step,
        type_name=info.type,
        type_names=info.types,
        error_message=info.message,
        traceback=info.traceback,
        attempts=max(info.attempt, 1),
    )


def workflow_error(run_id: str, info: ErrorInfo) -> _errors.FluxoError:
    """Build the exception ``handle.result()`` raises for a failed run."""
    if info.type == _MISMATCH and info.details:
        d = info.details
        return _errors.NondeterminismError(
            d.get("run_id", run_id), d["seq"], d["expected"], d["recorded"], d.get("hint", "")
        )
    return _errors.WorkflowFailedError(
        run_id,
        type_name=info.type,
        type_names=info.types,
        error_message=info.message,
        traceback=info.traceback,
    )


class Outcome(enum.Enum):
    """How one execution of a run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    """Another writer owns the run; this execution stopped without recording more."""
    STOPPED = "stopped"
    """The worker stopped it at a durable call to shut down; the run is intact."""
    SUSPENDED = "suspended"
    """The run waits for a timer or a signal; whichever worker is free resumes it."""
    BROKEN = "broken"
    """The store failed to record; the run resumes from its history when its lease expires.

    Only for transient failures: when the store refuses the data itself
    (``StoreRejectedError``), the run fails instead (``FAILED``)."""
    REPLAYED = "replayed"
    """``replay_only``: the code matched the whole recorded history (and ran no step)."""
    RESTART = "restart"
    """``restart_after_record``: a position was recorded; the run must be executed again."""
    CONTINUED = "continued"
    """``fluxo.continue_as_new``: the run ended, and the next run of its chain is ready."""


def tell_parent(
    store: stores.Store, parent: str, outcome: ChildOutcome, *, now: float, key: str
) -> None:
    """Send a child run's outcome to its parent, which wakes it; idempotent on ``key``.

    A parent that has finished (or is gone) no longer waits: nothing needs it then.
    """
    name = history.child_signal_name(history.chain_root(outcome.run))
    with contextlib.suppress(_errors.RunNotFoundError, _errors.RunStateError):
        store.send_signal(parent, name, msgspec.json.encode(outcome), now=now, key=key)


def fail_damaged(
    store: stores.Store,
    codec: codec.Codec,
    clock: Callable[[], float],
    owner: str,
    damage: _errors.HistoryCorruptError,
) -> Outcome:
    """Fail, once, a run ``owner`` claimed whose stored history cannot be replayed.

    Records ``WorkflowFailed`` carrying the error where the stored history ends
    (``damage.next_seq``), with the status ``FAILED``, so no worker claims the run
    again; the damaged rows stay as they are, for an operator to look at. Its parent,
    if it has one, is told, as for any failure. Returns ``FAILED``; ``LOST`` when
    another writer got there first; ``BROKEN`` when the store could not take even
    that write: the lease is kept, and its expiry spaces out the next attempt.
    """
    run_id = damage.run_id
    log.error("%s; the run is failed", damage, extra={"fluxo_run_id": run_id})
    data = codec.encode(error_info(damage))
    try:
        run = store.get_run(run_id)
        if run.lease_owner != owner or run.status.is_terminal:
            return Outcome.LOST
        if run.parent is not None:
            # Keyed by the position: a damaged run failed again after a retry tells again.
            key = f"{history.SIGNAL_PREFIX}{run_id}:damaged:{damage.next_seq}"
            outcome = ChildOutcome("failed", data, run_id)
            tell_parent(store, run.parent, outcome, now=clock(), key=key)
        store.append(
            run_id,
            damage.next_seq,
            [history.WorkflowFailed(data=data)],
            now=clock(),
            status=history.RunStatus.FAILED,
        )
    except (_errors.SequenceConflictError, _errors.RunNotFoundError):
        return Outcome.LOST
    except _errors.StoreError as exc:
        log.warning(
            "run %s: could not record its failure (%s); trying again when its lease expires",
            run_id,
            exc,
            extra={"fluxo_run_id": run_id},
        )
        return Outcome.BROKEN
    return Outcome.FAILED


_REASON_LIMIT = 2000
"""The most characters of a store's refusal a run's recorded failure quotes."""

STICKY_GRACE = 2.0
"""Seconds a timer held in a worker's thread is reserved for that worker after it fires.

While a worker holds a short wait in its thread, the run's ``ready_at`` is the fire
time plus this grace, so other workers leave it alone; if the holder dies, the run
resumes at most this much late. A timer never fires early."""

DURABLE_BACKOFF = 2.0
"""Step retry back-offs longer than this many seconds wait on a durable timer."""


class HoldSlots(Protocol):
    """How a worker lends its execution slots to the waits its threads hold.

    A held wait gives its execution slot back while it holds (the worker may
    refuse the hold when it holds as many as it allows), and asks for a slot again
    when it is woken: it goes on in its thread only if it gets one.
    """

    def enter_hold(self, run_id: str) -> bool:
        """Trade the run's execution slot for a hold place; False: unwind instead."""
        ...

    def leave_hold(self, run_id: str, *, resume: bool) -> bool:
        """Give the hold place up; True when the run has an execution slot again.

        With ``resume`` the run takes a free slot if there is one; without, it only
        keeps one the worker gave it meanwhile (by claiming the run for it).
        """
        ...


@dataclass(frozen=True, slots=True)
class Hold:
    """How an execution may hold a short wait in its thread instead of unwinding.

    Attributes:
        owner: the lease owner (worker id) that takes the run back after the wait.
        lease: the lease length when it does.
        window: the longest wait, in seconds, held in the thread (0: never hold).
        heartbeat: renews the lease while the run executes (``add``/``remove``).
        slots: the worker's execution slots, or None (``engine.run``: no limit).
    """

    owner: str
    lease: float
    window: float
    heartbeat: Any
    slots: HoldSlots | None = None


class _Flag(threading.Event):
    """A run's cancel or stop flag: setting it also wakes the run's short back-offs."""

    def __init__(self, attention: threading.Event) -> None:
        super().__init__()
        self._attention = attention

    def set(self) -> None:
        super().set()
        self._attention.set()


@dataclass(frozen=True, slots=True)
class _Recorded:
    seq: int
    event: history.Event


def _replay_script(
    events: Sequence[history.Event],
    is_mismatch: Callable[[history.Event], bool] = lambda event: False,
) -> list[_Recorded]:
    """The recorded durable calls, in order, that replay must meet again.

    ``WorkflowStarted`` is not a call. A ``WorkflowFailed`` that an operator
    retried (``RunRetried`` follows it) is skipped, and when the failure came
    straight from a step's final failure, that step's attempts are dropped too,
    so the step runs again with a fresh retry budget. A failure that
    ``is_mismatch`` (a ``NondeterminismError``) did not come from the step: the
    step's failure was settled history, and stays so.
    """
    script: list[_Recorded] = []
    last = len(events) - 1
    for seq, event in enumerate(events):
        if seq == 0 or isinstance(event, history.RunRetried):
            continue
        if (
            isinstance(event, history.WorkflowFailed)
            and seq < last
            and isinstance(events[seq + 1], history.RunRetried)
        ):
            if (
                script
                and isinstance(script[-1].event, history.StepFailed)
                and not is_mismatch(event)
            ):
                name = script[-1].event.name
                while script and (
                    isinstance(script[-1].event, (history.StepFailed, history.StepAttemptFailed))
                    and script[-1].event.name == name
                ):
                    script.pop()
            elif script and not is_mismatch(event):
                _forget_failed_branches(script)
            continue
        script.append(_Recorded(seq, event))
    return script


def _forget_failed_branches(script: list[_Recorded]) -> None:
    """Give the failed branches of a block that ends the script a fresh retry budget.

    When a run failed right after a parallel block with a failed branch, an
    operator's retry keeps the branches that completed and attempts the others
    again, as it does for a single step's final failure.
    """
    start = len(script)
    while start > 0 and isinstance(script[start - 1].event, history.BRANCH_KINDS):
        start -= 1
    if start == 0 or start == len(script):
        return
    if not isinstance(script[start - 1].event, history.ParallelStarted):
        return
    branches = script[start:]
    if any(isinstance(r.event, history.BranchFailed) for r in branches):
        script[start:] = [r for r in branches if isinstance(r.event, history.BranchCompleted)]


class _Plan(msgspec.Struct, omit_defaults=True):
    """The recorded shape of a parallel block: how many branches, calling which steps."""

    count: int
    steps: list[str] = msgspec.field(default_factory=list)


class ChildStart(msgspec.Struct, omit_defaults=True):
    """What a ``child_started`` event records: the child's workflow and how it started.

    ``error`` is set when the store refused to start it (its id was taken).
    """

    workflow: str
    detached: bool = False
    error: ErrorInfo | None = None


class ChildOutcome(msgspec.Struct, omit_defaults=True):
    """What a child run sends its parent as it ends: the payload of its signal.

    ``kind`` is ``completed``, ``failed`` or ``cancelled``; ``data`` is what the
    child's own end event holds (its encoded result, its error), or the encoded
    reason of a cancellation. Encoded with msgspec's JSON, not the user codec: the
    envelope is Fluxo's, the payload inside it the codec's.
    """

    kind: str
    data: bytes | None = None
    run: str = ""
    """The run that sent it: the child, or the latest run of its chain."""
    retries: int = 0
    """How many times an operator had retried that run (``engine.retry``) when it ended."""


class Rejection(msgspec.Struct, omit_defaults=True):
    """What a ``signal_rejected`` event records: why the payload did not fit, and the payload.

    Encoded with msgspec's JSON (the payload as base64), like :class:`ChildOutcome`:
    the envelope is Fluxo's, the payload inside it the codec's. A payload over
    ``REJECTED_PAYLOAD_LIMIT`` bytes is left out (the signal keeps it): a copy of a
    large message must not make the record itself too large for the store.
    """

    error: str
    payload: bytes | None = None


REJECTED_PAYLOAD_LIMIT = 64 << 10
"""The largest payload a ``signal_rejected`` event copies."""


_WAIT_KINDS: dict[bool, tuple[type[history.Event], ...]] = {
    False: (history.SignalReceived, history.SignalRejected, history.SignalWaitStarted),
    True: (history.SignalReceived, history.SignalRejected, history.SignalTimedOut),
}
"""What a signal wait may have recorded next, before and after its ``SignalWaitStarted``."""


_CHILD_EVENTS: dict[str, type[history.Event]] = {
    "completed": history.ChildCompleted,
    "failed": history.ChildFailed,
    "cancelled": history.ChildCancelled,
}


_ENDS = (history.WorkflowCompleted, history.WorkflowFailed, history.WorkflowCancelled)


_ATTEMPT_FAILED = "attempt_failed"
_COMPLETED = "completed"
_FAILED = "failed"
_ABANDONED = "abandoned"
_CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class _Report:
    """What a branch's thread tells the workflow thread, which alone records."""

    index: int
    what: str
    attempt: int
    value: Any = None
    error: ErrorInfo | None = None
    crash: BaseException | None = None


class _Block:
    """One parallel block: its branches' outcomes so far, and what its threads share."""

    def __init__(self, calls: Sequence[_decorators.Call[Any]]) -> None:
        count = len(calls)
        self.calls = calls
        self.results: list[Any] = [None] * count
        self.failures: dict[int, ErrorInfo] = {}
        self.attempts = [0] * count
        """Failed attempts recorded so far, per branch."""
        self.settled = [False] * count
        self.return_types: dict[int, Any] = {}
        self.inbox: queue.SimpleQueue[_Report] = queue.SimpleQueue()
        """Reports from the branch threads to the workflow thread, which alone records."""
        self.interrupted = threading.Event()
        """Set when the block stops early: branches between attempts give up."""


class RunContext:
    """The state of one execution of one run: its history cursor and its writer."""

    def __init__(
        self,
        *,
        state: history.RunState,
        workflow: _decorators.Workflow[Any, Any],
        store: stores.Store,
        codec: codec.Codec,
        clock: Callable[[], float],
        hold: Hold | None = None,
        threads: StepThreads | None = None,
    ) -> None:
        self.run_id = state.run.id
        self.created_at = state.run.created_at
        self.threads = threads if threads is not None else _shared_threads
        self.workflow = workflow
        self.store = store
        self.codec = codec
        self.clock = clock
        self.started = state.events[0]
        self._script = _replay_script(state.events, self._failed_by_mismatch)
        self._pos = 0
        self.next_seq = len(state.events)
        self.hold = hold
        self.holding = False
        self.lease_released = False
        self.lease_epoch = 0
        """How many times this execution took its run back after a held wait."""
        self.store_error: _errors.StoreError | None = None
        self.deadline = state.run.deadline
        self.parent = state.run.parent
        self.retries = sum(isinstance(e, history.RunRetried) for e in state.events)
        self.cancel_reason = ""
        self._children: dict[str, bool] = {}
        """Child runs started and not yet awaited, each mapped to "was started detached"."""
        self._started: set[str] = set()
        """Every child run this run started, awaited or not."""
        self.child_started: Callable[[str, _decorators.Workflow[Any, Any]], None] | None = None
        """Told of each child run this execution starts live (the engine may execute it)."""
        self._pending: dict[str, collections.deque[bytes]] = {}
        self._consumed: dict[str, int] = {}  # signals taken so far, replayed or live
        self._refresh_signals(state.signals)
        self._attention = threading.Event()
        self.cancel_requested: threading.Event = _Flag(self._attention)
        """Set when the run's cancellation is known (at load, by the heartbeat)."""
        if state.run.cancel_requested:
            self.cancel_requested.set()
        self.stop_requested: threading.Event = _Flag(self._attention)
        """Set to stop at the next durable call (shutdown, lost lease)."""
        self.pause: Callable[[float], object] = self._wait_interruptibly
        """Waits a short retry back-off (a virtual clock replaces it in tests)."""
        self.step_runner: StepRunner = _call_step_function
        """Calls a step's function live (a test environment replaces it to stub steps)."""
        self.replay_only = False
        """Check the code against the recorded history only: run no step, record nothing."""
        self.restart_after_record = False
        """Stop after every recorded position, so each durable call is replayed once."""
        self._in_block = False
        self._restart_due = False
        self._cancel_delivered = False
        self._cancel_seq = 0
        """The position that recorded the cancellation, once delivered."""
        self._nondeterminism: _errors.NondeterminismError | None = None
        self._unwinding: _ControlFlow | None = None
        self._rejected = False
        """The store refused a record for good, and the run is being failed for it."""
        self.result: bytes | None = None
        self.error: ErrorInfo | None = None

    # -- reading the history ---------------------------------------------------------

    def _failed_by_mismatch(self, event: history.Event) -> bool:
        """Tell whether a recorded ``WorkflowFailed`` was a ``NondeterminismError``."""
        try:
            info: ErrorInfo = self.codec.decode(event.data or b"{}", ErrorInfo)
        except Exception:
            return False
        return info.type == _MISMATCH

    @property
    def replaying(self) -> bool:
        """True while the code is catching up with recorded history."""
        return self._pos < len(self._script)

    def _peek(self) -> _Recorded | None:
        return self._script[self._pos] if self._pos < len(self._script) else None

    def _diverged(self, expected: str, recorded: _Recorded | None, hint: str = "") -> NoReturn:
        seq = recorded.seq if recorded is not None else self.next_seq
        what = recorded.event.describe() if recorded is not None else "nothing (it ends here)"
        self._nondeterminism = _errors.NondeterminismError(self.run_id, seq, expected, what, hint)
        raise self._nondeterminism

    def _match(
        self, kinds: tuple[type[history.Event], ...], call: str, names: frozenset[str]
    ) -> history.Event | None:
        """Consume and return the next recorded event if it answers this call."""
        recorded = self._peek()
        if recorded is None:
            return None
        event = recorded.event
        if isinstance(event, kinds) and event.name in names:
            self._pos += 1
            return event
        self._diverged(call, recorded)

    def _enter_durable_call(self) -> None:
        """Checks every durable call makes before touching the history."""
        if self._unwinding is not None:
            raise self._unwinding
        if self._nondeterminism is not None:
            raise self._nondeterminism
        if self.stop_requested.is_set():
            self._unwinding = _Stopped()
            raise self._unwinding
        self._cancel_point()

    def _cancel_point(self) -> None:
        """Deliver a cancellation here: the one recorded at this position, or a new one."""
        if self._cancel_delivered:
            return
        recorded = self._peek()
        if recorded is not None:
            if isinstance(recorded.event, history.CancelRequested):
                self._pos += 1
                self._cancel_seq = recorded.seq
                self._cancel_delivered = True
                self.cancel_reason = recorded.event.name or "cancelled"
                self._cancel_children()  # again: a crash may have come before it was done
                raise Cancelled(_TOKEN)
        elif reason := self._cancel_due():
            self._cancel_seq = self.next_seq
            self._record(history.CancelRequested(reason))
            self._cancel_delivered = True
            self.cancel_reason = reason
            self._cancel_children()
            raise Cancelled(_TOKEN)

    def _wait_interruptibly(self, seconds: float) -> None:
        """Wait a short back-off; end it early when the run must stop or is cancelled."""
        deadline = time.monotonic() + seconds
        while not self.stop_requested.is_set() and not (
            self.cancel_requested.is_set() and not self._cancel_delivered
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._attention.wait(remaining)
            self._attention.clear()  # the flags, set before it, are looked at again

    def _cancel_due(self) -> str:
        """Why the run must stop now: ``"cancelled"``, ``"deadline"``, or ``""``."""
        if self.cancel_requested.is_set():
            return "cancelled"
        if self.deadline is not None and self.clock() >= self.deadline:
            return "deadline"
        return ""

    # -- writing the history ---------------------------------------------------------

    def _store_failed(self, exc: _errors.StoreError) -> NoReturn:
        """Stop at a store failure: the run resumes from its history (``Outcome.BROKEN``).

        When the store refused the data itself (``StoreRejectedError``), resuming would
        meet the same refusal, so the run unwinds to fail instead (``_finish_rejected``);
        if even its failure is refused, it stops as for any other store failure.
        """
        self.store_error = exc
        rejected = isinstance(exc, _errors.StoreRejectedError) and not self._rejected
        self._unwinding = _Rejected() if rejected else _StoreFailed()
        raise self._unwinding from exc

    def _record(
        self,
        event: history.Event,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        *,
        unless_cancel_requested: bool = False,
    ) -> None:
        self._record_many(
            (event,), status, ready_at, unless_cancel_requested=unless_cancel_requested
        )

    def _go_live(self) -> None:
        """Called before anything with an effect: ``replay_only`` stops here."""
        if self.replay_only:
            self._unwinding = _ReplayEnd()
            raise self._unwinding

    def _record_many(
        self,
        events: Sequence[history.Event],
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        *,
        unless_cancel_requested: bool = False,
    ) -> None:
        """Append ``events`` at the next position (raises ``CancelPendingError`` as is)."""
        self._go_live()
        # Passed only when asked for, so that store wrappers written before it still work.
        guard = {"unless_cancel_requested": True} if unless_cancel_requested else {}
        if status is not None:
            # A status write clears the lease. Said before the write, so that a heartbeat
            # reading the run meanwhile does not take the cleared lease for a lost one
            # (if the write fails, the execution stops anyway).
            self.lease_released = True
        try:
            self.store.append(
                self.run_id,
                self.next_seq,
                events,
                now=self.clock(),
                status=status,
                ready_at=ready_at,
                **guard,
            )
        except _errors.CancelPendingError:
            self.lease_released = False  # refused: nothing changed, the lease is still ours
            raise
        except (_errors.SequenceConflictError, _errors.RunNotFoundError):
            log.warning(
                "run %s: position %d was recorded by another worker; this worker stops "
                "executing the run",
                self.run_id,
                self.next_seq,
                extra={"fluxo_run_id": self.run_id},
            )
            self._unwinding = _RunLost()
            raise self._unwinding from None
        except _errors.StoreError as exc:
            if not isinstance(exc, _errors.StoreRejectedError):
                log.warning(
                    "run %s: could not record position %d (%s); this worker stops executing "
                    "the run, which resumes from its history",
                    self.run_id,
                    self.next_seq,
                    exc,
                    extra={"fluxo_run_id": self.run_id},
                )
            self._store_failed(exc)
        self.next_seq += len(events)
        if status is None and self.restart_after_record:
            if self._in_block:
                self._restart_due = True  # once the branches still running are recorded
                return
            self._unwinding = _Restart()
            raise self._unwinding

    # -- durable calls ---------------------------------------------------------------

    def call_step(
        self,
        step: _decorators.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Run ``step`` once for this run, or return its recorded outcome."""
        self._enter_durable_call()
        call = f"step {step.name}"
        attempt = 0
        while True:
            event = self._match(
                (history.StepCompleted, history.StepAttemptFailed, history.StepFailed),
                call,
                step.names,
            )
            if event is None:
                break
            if isinstance(event, history.StepCompleted):
                return self._decode_recorded(call, event.data, step.return_type)
            info = self._decode_error(call, event.data)
            if isinstance(event, history.StepFailed):
                raise step_error(step.name, info)
            attempt += 1
            self._backoff(step, attempt, live=False)
        self._go_live()
        return self._run_step_live(step, args, kwargs, attempt)

    def _backoff(self, step: _decorators.Step[Any, Any], attempt: int, *, live: bool) -> None:
        """Wait between failed attempt ``attempt`` and the next, as the live run did.

        A long back-off is a durable timer (a crash during it loses nothing, and the
        worker is free meanwhile); a short one waits in the thread, and is skipped
        on replay. Either way a cancellation may be delivered here.
        """
        delay = step.retry.delay(attempt)
        recorded = self._peek()
        timer = f"retry {step.name}"
        if (
            recorded is not None
            and isinstance(recorded.event, history.TimerStarted)
            and recorded.event.name == timer
        ):
            self._timer(timer, delay)
            return
        if recorded is None and delay > DURABLE_BACKOFF:
            self._enter_durable_call()
            self._timer(timer, delay)
            return
        # restart_after_record replays the failed attempt before the next one runs
        # live, so the back-off is waited there, as the run would have without restarting.
        if live or (self.restart_after_record and recorded is None):
            self.pause(delay)
        self._enter_durable_call()

    def _run_step_live(
        self,
        step: _decorators.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        attempt: int,
    ) -> Any:
        try:
            return_type = step.return_type  # resolved before the side effect, not after
        except _errors.DefinitionError as exc:
            self._fail_step(step, error_info(exc, attempt + 1))
        while True:
            attempt += 1
            failure: ErrorInfo | None = None
            token = _current.set(None)  # steps called by a step are plain calls
            try:
                value = self._attempt(step, args, kwargs)
            except Exception as exc:
                failure = error_info(exc, attempt)
                retrying = step.retry.should_retry(exc, attempt)
            finally:
                _current.reset(token)
            if failure is not None:
                # Raised outside the except block, so the live StepError carries no
                # __context__ that a replay could not give it.
                if not retrying:
                    self._fail_step(step, failure)
                self._record(history.StepAttemptFailed(step.name, self._encode_error(failure)))
                log.info(
                    "run %s: step %s attempt %d failed (%s: %s); retrying in %.3gs",
                    self.run_id,
                    step.name,
                    attempt,
                    failure.type,
                    failure.message,
                    step.retry.delay(attempt),
                    extra={"fluxo_run_id": self.run_id},
                )
                self._backoff(step, attempt, live=True)
                continue
            data, result, problem = self._encode_result(step, value, return_type)
            if problem is not None:
                self._fail_step(step, error_info(problem, attempt))
            self._record(history.StepCompleted(step.name, data))
            return result

    def _encode_result(
        self, step: _decorators.Step[Any, Any], value: Any, return_type: Any
    ) -> tuple[bytes, Any, _errors.FluxoError | None]:
        """Encode a step's result and decode it back as the workflow will see it."""
        try:
            data = self.codec.encode(value)
        except Exception as exc:
            return (
                b"",
                None,
                _errors.EncodeError(
                    f"step {step.name!r} returned a value of type "
                    f"{type(value).__module__}.{type(value).__qualname__} that the codec "
                    f"cannot encode ({exc}); return a dataclass, dict, list, str, number, "
                    "datetime, UUID or another type the codec knows, or pass a codec that "
                    "handles it"
                ),
            )
        try:
            return data, self.codec.decode(data, return_type), None
        except Exception as exc:
            return (
                data,
                None,
                _errors.DecodeError(
                    f"step {step.name!r} returned a value that does not match its return "
                    f"annotation: {exc}"
                ),
            )

    def _fail_step(self, step: _decorators.Step[Any, Any], info: ErrorInfo) -> NoReturn:
        self._record(history.StepFailed(step.name, self._encode_error(info)))
        raise step_error(step.name, info)

    def _attempt(
        self, step: _decorators.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """Call a step's function for one attempt, within its ``timeout=`` if it has one.

        A timed attempt runs in a daemon thread of its own. When the timeout passes
        first the thread is abandoned (Python cannot stop it) and the attempt fails
        with ``StepTimeout``; whatever the thread does later is ignored.
        """
        limit = step.timeout
        if limit is None:
            return self.step_runner(step, args, kwargs)
        outcome: list[Any] = []
        failure: list[BaseException] = []
        finished = threading.Event()
        runner = self.step_runner

        def attempt() -> None:
            _current.set(None)
            try:
                outcome.append(runner(step, args, kwargs))
            except BaseException as exc:
                failure.append(exc)
            finally:
                finished.set()

        thread = threading.Thread(target=attempt, name=f"fluxo-step-{step.name}", daemon=True)
        thread.start()
        if not finished.wait(limit):
            log.warning(
                "run %s: step %s did not finish within %gs; its thread is abandoned",
                self.run_id,
                step.name,
                limit,
                extra={"fluxo_run_id": self.run_id},
            )
            raise _errors.StepTimeout(step.name, limit)
        if failure:
            raise failure[0]
        return outcome[0]

    # -- parallel blocks ---------------------------------------------------------------

    def call_parallel(
        self, calls: Sequence[_decorators.Call[Any]], max_concurrency: int | None
    ) -> list[Any]:
        """``fluxo.parallel``: run the calls as branches of one block; return their results.

        The block takes one position, a ``ParallelStarted`` naming each branch's step.
        Each branch's attempts and outcome are recorded, by this thread alone, as
        they arrive, in whatever order the branches finish; events carry the branch
        index, so replay reads them back by index and runs only the branches with
        no outcome. Once every branch has one, the lowest-index failure is raised,
        if any, else the results are returned in the order of ``calls``.
        """
        self._enter_durable_call()
        count = len(calls)
        if count == 0:
            return []
        steps = [c.step for c in calls]
        uniform = all(s.name == steps[0].name for s in steps)
        if uniform:
            call = f"parallel of {count} x step {steps[0].name}"
        else:
            shown = ", ".join(s.name for s in steps[:5]) + (", ..." if count > 5 else "")
            call = f"parallel of {count} steps ({shown})"
        recorded = self._peek()
        if recorded is not None:
            self._match_plan(call, recorded, steps)
        else:
            plan = _Plan(count) if uniform else _Plan(count, [s.name for s in steps])
            name = steps[0].name if uniform else ""
            self._record(history.ParallelStarted(name, self.codec.encode(plan)))
        block = _Block(calls)
        left = count
        while left:
            recorded = self._peek()
            if recorded is None or not isinstance(recorded.event, history.BRANCH_KINDS):
                break
            event = recorded.event
            parsed = history.parse_branch_name(event.name)
            if (
                parsed is None
                or parsed[1] >= count
                or parsed[0] not in steps[parsed[1]].names
                or block.settled[parsed[1]]
            ):
                self._diverged(call, recorded, "  the branch recorded here is not in this block")
            self._pos += 1
            index = parsed[1]
            step = steps[index]
            if isinstance(event, history.BranchCompleted):
                block.results[index] = self._decode_recorded(
                    f"step {step.name}", event.data, step.return_type
                )
            else:
                info = self._decode_error(f"step {step.name}", event.data)
                if isinstance(event, history.BranchAttemptFailed):
                    block.attempts[index] += 1
                    continue
                block.failures[index] = info
            block.settled[index] = True
            left -= 1
        if left:
            if self._peek() is not None:
                self._cancel_point()  # a cancellation was delivered while branches ran
                self._diverged(call, self._peek(), "  the block's branches end early here")
            self._run_branches(block, max_concurrency)
        if block.failures:
            first = min(block.failures)
            raise step_error(steps[first].name, block.failures[first])
        return block.results

    def _match_plan(
        self, call: str, recorded: _Recorded, steps: Sequence[_decorators.Step[Any, Any]]
    ) -> None:
        """Consume the recorded start of a block, which must have these branches."""
        event = recorded.event
        if not isinstance(event, history.ParallelStarted):
            self._diverged(call, recorded)
        try:
            plan: _Plan = self.codec.decode(event.data or b"{}", _Plan)
        except Exception as exc:
            self._diverged(call, recorded, f"  its recorded plan does not decode ({exc})")
        names = plan.steps or [event.name] * plan.count
        if len(names) != len(steps) or any(
            n not in s.names for n, s in zip(names, steps, strict=True)
        ):
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            self._diverged(
                call,
                recorded,
                f"  the history's block has {len(names)} branches ({shown})",
            )
        self._pos += 1

    def _run_branches(self, block: _Block, max_concurrency: int | None) -> None:
        """Run the unsettled branches live on the engine's threads and record their outcomes.

        Stops early, starting no more branches, when the run is cancelled (the
        running ones finish and are recorded, then ``Cancelled`` is raised here),
        when the worker stops or loses the lease (nothing more is recorded; running
        branches are abandoned) and, under ``restart_after_record``, after the first
        record (the running ones are recorded, then the run executes again).
        """
        self._go_live()
        waiting = collections.deque(i for i, done in enumerate(block.settled) if not done)
        unsettled = len(waiting)
        limit = min(max_concurrency or self.threads.size, unsettled)
        running: dict[int, concurrent.futures.Future[None]] = {}
        cancel = False
        self._in_block = True
        try:
            while True:
                if self.stop_requested.is_set():
                    self._unwinding = _Stopped()
                    raise self._unwinding
                if not cancel and not self._cancel_delivered and self._cancel_due():
                    cancel = True
                if cancel or self._restart_due:
                    block.interrupted.set()
                    waiting.clear()
                    for index, future in list(running.items()):
                        if future.cancel():  # queued, never started: stays unsettled
                            del running[index]
                while waiting and len(running) < limit:
                    index = waiting.popleft()
                    try:
                        block.return_types[index] = block.calls[index].step.return_type
                    except _errors.DefinitionError as exc:  # resolved before any side effect
                        attempt = block.attempts[index] + 1
                        block.inbox.put(_Report(index, _FAILED, attempt, error=error_info(exc)))
                        continue
                    running[index] = self.threads.submit(
                        self._run_branch, block, index, block.attempts[index]
                    )
                if not running and block.inbox.empty():
                    break
                try:
                    reports = [block.inbox.get(timeout=0.05)]
                except queue.Empty:
                    continue
                while True:
                    try:
                        reports.append(block.inbox.get_nowait())
                    except queue.Empty:
                        break
                if self.stop_requested.is_set():
                    continue  # stops at the top of the loop, recording nothing more
                events: list[history.Event] = []
                for report in reports:
                    if report.what == _CRASHED:
                        if events:
                            self._record_many(events)
                        assert report.crash is not None
                        raise report.crash
                    event = self._branch_event(block, report)
                    if event is not None:
                        events.append(event)
                    if report.what != _ATTEMPT_FAILED:
                        running.pop(report.index, None)
                if events:
                    self._record_many(events)
        finally:
            self._in_block = False
            block.interrupted.set()
            for future in running.values():
                future.cancel()
        if self._restart_due:
            self._unwinding = _Restart()
            raise self._unwinding
        if cancel and not all(block.settled):
            # Some branches never settled: deliver the cancellation here, where replay
            # meets it too. When all did, the next durable call delivers it.
            self._cancel_point()

    def _branch_event(self, block: _Block, report: _Report) -> history.Event | None:
        """Turn a branch's report into the event that records it (none when abandoned)."""
        index = report.index
        step = block.calls[index].step
        name = history.branch_name(step.name, index)
        if report.what == _ABANDONED:
            return None
        if report.what == _COMPLETED:
            data, result, problem = self._encode_result(
                step, report.value, block.return_types[index]
            )
            if problem is None:
                block.results[index] = result
                block.settled[index] = True
                return history.BranchCompleted(name, data)
            info = error_info(problem, report.attempt)
        else:
            assert report.error is not None
            info = report.error
        if report.what == _ATTEMPT_FAILED:
            log.info(
                "run %s: step %s (branch %d) attempt %d failed (%s: %s); retrying in %.3gs",
                self.run_id,
                step.name,
                index,
                report.attempt,
                info.type,
                info.message,
                step.retry.delay(report.attempt),
                extra={"fluxo_run_id": self.run_id},
            )
            return history.BranchAttemptFailed(name, self._encode_error(info))
        block.failures[index] = info
        block.settled[index] = True
        return history.BranchFailed(name, self._encode_error(info))

    def _run_branch(self, block: _Block, index: int, attempt: int) -> None:
        """One branch, in a thread of the pool: its attempts, retries and back-offs.

        It records nothing itself: it reports each outcome to the workflow thread.
        Back-offs wait here, in the branch's thread (a durable timer cannot suspend
        one branch of a block), and end early, abandoning the branch, when the
        block is interrupted.
        """
        call = block.calls[index]
        step = call.step
        try:
            while True:
                attempt += 1
                failure: ErrorInfo | None = None
                try:
                    value = self._attempt(step, call.args, call.kwargs)
                except Exception as exc:
                    failure = error_info(exc, attempt)
                    retrying = step.retry.should_retry(exc, attempt)
                if failure is None:
                    block.inbox.put(_Report(index, _COMPLETED, attempt, value=value))
                    return
                if not retrying:
                    block.inbox.put(_Report(index, _FAILED, attempt, error=failure))
                    return
                block.inbox.put(_Report(index, _ATTEMPT_FAILED, attempt, error=failure))
                if not self._branch_backoff(block, step.retry.delay(attempt)):
                    block.inbox.put(_Report(index, _ABANDONED, attempt))
                    return
        except BaseException as exc:  # the process is going down (or a test says so)
            block.inbox.put(_Report(index, _CRASHED, attempt, crash=exc))

    def _branch_backoff(self, block: _Block, delay: float) -> bool:
        """Wait a branch's back-off; False when the block was interrupted meanwhile."""
        if self.pause == self._wait_interruptibly:
            return not block.interrupted.wait(delay)
        self.pause(delay)  # a test environment's virtual clock
        return not block.interrupted.is_set()

    def record_value(self, name: str, produce: Callable[[], Any], type: Any) -> Any:
        """Return a nondeterministic value, taken live once and replayed from history."""
        self._enter_durable_call()
        call = f"{history.ValueRecorded.kind} {name}"
        event = self._match((history.ValueRecorded,), call, frozenset((name,)))
        if event is not None:
            return self._decode_recorded(call, event.data, type)
        data = self.codec.encode(produce())
        self._record(history.ValueRecorded(name, data))
        return self.codec.decode(data, type)

    # -- waiting -------------------------------------------------------------------------

    def _timer(self, name: str, delay: float | None, fire_at: float | None = None) -> None:
        """A durable timer: returns once it has fired, recording its start and firing."""
        call = f"timer {name}"
        names = frozenset((name,))
        started = self._match((history.TimerStarted,), call, names)
        if started is not None:
            fire_at = float(self._decode_recorded(call, started.data, float))
            self._cancel_point()
            if self._match((history.TimerFired,), call, names) is not None:
                return
            unrecorded: list[history.Event] = []
        else:
            if fire_at is None:
                fire_at = self.clock() + (delay or 0.0)
            unrecorded = [history.TimerStarted(name, self.codec.encode(fire_at))]
        while True:
            if not unrecorded:
                self._cancel_point()
            if self.clock() >= fire_at:
                self._record_many([*unrecorded, history.TimerFired(name)])
                return
            self._suspend(unrecorded, fire_at, timer=True)
            unrecorded = []

    def sleep_until(self, fire_at: float) -> None:
        """``fluxo.sleep_until``: a durable timer that fires at ``fire_at`` (epoch seconds)."""
        self._enter_durable_call()
        self._timer("sleep", None, fire_at)

    def wait_for_signal(self, name: str, timeout: float | None, type: Any) -> Any:
        """``fluxo.wait_for_signal``: the payload of the oldest unconsumed signal ``name``.

        A signal whose payload does not decode as ``type`` is skipped: consumed,
        recorded as ``SignalRejected`` and logged, and the wait goes on. A message
        from outside cannot fail the run. Replay skips what the history rejected,
        and also a recorded ``SignalReceived`` whose payload does not decode (older
        Fluxo failed the run there; ``engine.retry`` then resumes it waiting).
        """
        self._enter_durable_call()
        call = f"wait_for_signal {name}"
        started = False  # a SignalWaitStarted is recorded, which holds the deadline
        deadline: float | None = None
        skipped = ""  # why replay skipped a received signal, for a mismatch after it
        while (recorded := self._peek()) is not None:
            event = recorded.event
            kinds = _WAIT_KINDS[started]
            if not isinstance(event, kinds) or event.name != name:
                self._diverged(call, recorded, skipped)
            self._pos += 1
            if isinstance(event, history.SignalReceived):
                self._consume(name)
                try:
                    return self.codec.decode(event.data or b"null", type)
                except _errors.DefinitionError:
                    raise
                except Exception as exc:
                    skipped = f"  the signal at position {recorded.seq} was skipped: {exc}"
            elif isinstance(event, history.SignalRejected):
                self._consume(name)
            elif isinstance(event, history.SignalWaitStarted):
                deadline = self._decode_recorded(call, event.data, float | None)
                started = True
            else:
                raise _errors.SignalTimeout(name, timeout)
            self._cancel_point()
        if not started:
            deadline = None if timeout is None else self.clock() + timeout
        unrecorded: list[history.Event] = []
        while True:
            queue = self._pending.get(name)
            if queue:
                payload = queue[0]
                try:
                    value = self.codec.decode(payload, type)
                except _errors.DefinitionError:
                    raise  # the annotation, not the payload: no signal could fit it
                except Exception as exc:
                    self._reject(name, payload, exc)  # (nothing is unrecorded here)
                    self._cancel_point()
                    continue
                self._record_many([*unrecorded, history.SignalReceived(name, payload)])
                self._consume(name)
                return value
            if not started:
                unrecorded = [history.SignalWaitStarted(name, self.codec.encode(deadline))]
                started = True
            if deadline is not None and self.clock() >= deadline:
                self._record_many([*unrecorded, history.SignalTimedOut(name)])
                raise _errors.SignalTimeout(name, timeout)
            self._suspend(unrecorded, deadline, timer=False)
            unrecorded = []
            self._cancel_point()

    def _reject(self, name: str, payload: bytes, exc: Exception) -> None:
        """Skip the oldest pending signal ``name``, whose payload does not fit: record, log."""
        reason = _recordable(str(exc))[:_REASON_LIMIT]
        copy = payload if len(payload) <= REJECTED_PAYLOAD_LIMIT else None
        self._record(history.SignalRejected(name, msgspec.json.encode(Rejection(reason, copy))))
        self._consume(name)
        log.warning(
            "run %s: skipped signal %r: its payload does not fit the wait (%s); waiting for "
            "the next one",
            self.run_id,
            name,
            reason,
            extra={"fluxo_run_id": self.run_id},
        )

    def _refresh_signals(self, signals: Sequence[history.Signal]) -> None:
        """Rebuild the queues of unconsumed signals from everything sent to the run."""
        pending: dict[str, collections.deque[bytes]] = {}
        for signal in signals:
            pending.setdefault(signal.name, collections.deque()).append(signal.payload)
        for name, count in self._consumed.items():
            queue = pending.get(name)
            for _ in range(min(count, len(queue or ()))):
                queue.popleft()  # type: ignore[union-attr]
        self._pending = pending

    def send_signal(self, run_id: str, name: str, payload: Any) -> None:
        """``fluxo.signal`` from a workflow: sent exactly once, whatever crashes in between."""
        self._enter_durable_call()
        target = f"{run_id}/{name}"
        call = f"signal {target}"
        event = self._match((history.SignalSent,), call, frozenset((target,)))
        if event is not None:
            if event.data is not None:
                raise _errors.SignalError(self._decode_error(call, event.data).message)
            return
        self._go_live()
        data = self.codec.encode(payload)
        key = f"{self.run_id}:{self.next_seq}"  # the same key if a crash makes us send again
        try:
            self.store.send_signal(run_id, name, data, now=self.clock(), key=key)
        except (_errors.RunNotFoundError, _errors.RunStateError) as exc:
            self._record(history.SignalSent(target, self._encode_error(error_info(exc))))
            raise _errors.SignalError(str(exc)) from None
        except _errors.StoreError as exc:
            self._store_failed(exc)
        self._record(history.SignalSent(target))

    # -- child workflows -----------------------------------------------------------------

    def start_child(
        self,
        wf: _decorators.Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> tuple[str, bool]:
        """``fluxo.start_child``: start ``wf`` as a child run; return its id and "detached".

        The child is created (idempotent on its id, with this run as its parent)
        before ``ChildStarted`` is recorded, so a crash in between finds the same
        child on resume, never a second one. Its id is the one given with
        ``wf.options(id=)``, else this run's id and the call's position.
        """
        data = wf.encode_input(self.codec, args, kwargs, "fluxo.start_child(): ")
        try:
            self._enter_durable_call()
        except Cancelled:
            # The cancellation took this call's position, which names the child an
            # execution that crashed before recording its start may have created.
            if not wf.start_detached:
                self._cancel_unrecorded_child(
                    wf.start_id or history.child_id(self.run_id, self._cancel_seq)
                )
            raise
        call = f"start child workflow {wf.name}"
        recorded = self._peek()
        if recorded is not None:
            return self._replay_child_start(call, recorded, wf)
        self._go_live()
        detached = wf.start_detached
        child = wf.start_id or history.child_id(self.run_id, self.next_seq)
        if len(child) > stores.MAX_ID_LENGTH:
            raise _errors.DefinitionError(
                f"the child run's id {child[:40]!r}... would be longer than "
                f"{stores.MAX_ID_LENGTH} characters; give it a shorter one with "
                f"{wf.name}.options(id=...)"
            )
        started = self.codec.encode(ChildStart(wf.name, detached))  # before the child exists
        if child in self._started:
            raise self._refuse_child(
                child,
                wf,
                detached,
                _errors.RunStateError(
                    f"this run already started a child run {child!r}; give each child its own id"
                ),
            )
        now = self.clock()
        deadline = None if wf.start_timeout is None else now + wf.start_timeout
        refused: _errors.RunStateError | None = None
        try:
            run, created = self.store.create_run(
                child, wf.name, data, now=now, deadline=deadline, parent=self.run_id
            )
        except _errors.RunIdConflictError as exc:
            refused = _errors.RunStateError(
                f"cannot start child workflow {wf.name!r} as run {child!r}: a run of workflow "
                f"{exc.existing!r} has that id; give the child another id"
            )
        except _errors.StoreError as exc:
            self._store_failed(exc)
        else:
            if not created and run.parent != self.run_id:
                refused = _errors.RunStateError(
                    f"cannot start child workflow {wf.name!r} as run {child!r}: that run exists "
                    "and was not started by this run; give the child another id"
                )
            elif not created and wf.start_if_exists == "check":
                self._check_created_input(wf, run, data, f"{call} as run {child}")
        if refused is not None:
            raise self._refuse_child(child, wf, detached, refused)
        self._children[child] = detached
        self._started.add(child)
        if self.child_started is not None:
            self.child_started(child, wf)  # it exists: it may run, whatever happens here next
        self._record(history.ChildStarted(child, started))
        return child, detached

    def _check_created_input(
        self, wf: _decorators.Workflow[Any, Any], run: history.RunInfo, data: bytes, call: str
    ) -> None:
        """Fail the run by a mismatch if an earlier execution created ``run`` with other input.

        Only an execution of this run that crashed before recording the start (of a
        child, or of the next run of its chain) creates the run a live call finds:
        the code then computed other arguments than that execution did, as changed
        or nondeterministic code does. The run fails with a ``NondeterminismError``
        naming them, and its history stays intact for a fix and ``engine.retry``.
        """
        try:
            conflict = wf.input_conflict(self.store, self.codec, run, data)
        except _errors.StoreError as exc:
            self._store_failed(exc)
        if conflict is None:
            return
        self._nondeterminism = _errors.NondeterminismError(
            self.run_id,
            self.next_seq,
            f"{call}, with the arguments the code computes now",
            f"nothing, but an execution of this run that crashed before recording it "
            f"created run {run.id!r} with other arguments",
            conflict.detail,
        )
        raise self._nondeterminism

    def _cancel_unrecorded_child(self, child: str) -> None:
        """Cancel ``child`` if an execution of this run created it, then crashed unrecorded."""
        if self.replay_only:
            return
        try:
            if self.store.get_run(child).parent == self.run_id:
                self._cancel_chain(child)
        except _errors.RunNotFoundError:
            pass  # the usual case: it was never created
        except _errors.StoreError as exc:
            self._store_failed(exc)

    def _refuse_child(
        self,
        child: str,
        wf: _decorators.Workflow[Any, Any],
        detached: bool,
        refused: _errors.RunStateError,
    ) -> _errors.RunStateError:
        """Record that a child could not be started, so replay raises the same; return it."""
        start = ChildStart(wf.name, detached, error_info(refused))
        self._record(history.ChildStarted(child, self.codec.encode(start)))
        return refused

    def _replay_child_start(
        self, call: str, recorded: _Recorded, wf: _decorators.Workflow[Any, Any]
    ) -> tuple[str, bool]:
        event = recorded.event
        if not isinstance(event, history.ChildStarted):
            self._diverged(call, recorded)
        self._pos += 1
        start: ChildStart = self._decode_recorded(call, event.data, ChildStart)
        if start.workflow not in wf.names:
            self._diverged(call, recorded, f"  the history's child is of workflow {start.workflow}")
        if wf.start_id is not None and wf.start_id != event.name:
            self._diverged(
                f"{call} as run {wf.start_id}", recorded, "  the history's child has another id"
            )
        if start.error is not None:
            raise _errors.RunStateError(start.error.message)
        self._children[event.name] = start.detached
        self._started.add(event.name)
        return event.name, start.detached

    def child_result(self, child: str, return_type: Any) -> Any:
        """``ChildHandle.result()``: the child's outcome, waited for durably and recorded.

        The child sends its outcome to this run as a signal as it ends; taking it
        records ``ChildCompleted``/``ChildFailed``/``ChildCancelled`` here, so replay
        reads it from this run's own history and needs nothing of the child's.
        """
        self._enter_durable_call()
        call = f"result of child run {child}"
        signal = history.child_signal_name(child)
        event = self._match(history.CHILD_OUTCOMES, call, frozenset((child,)))
        if event is not None:
            self._consume(signal)
        else:
            self._go_live()
            while (event := self._child_outcome(child, signal)) is None:
                self._suspend([], None, timer=False)
                self._cancel_point()
            self._record(event)
            self._consume(signal)
        self._children.pop(child, None)
        if isinstance(event, history.ChildCompleted):
            return self._decode_recorded(call, event.data, return_type)
        if isinstance(event, history.ChildFailed):
            info = self._decode_error(call, event.data)
            if info.type == _MISMATCH:
                info.details = {}  # the child's mismatch, not this run's: a plain failure
            raise workflow_error(child, info)
        reason = self._decode_recorded(call, event.data, str)
        if reason == "deadline":
            raise _errors.WorkflowTimeoutError(child)
        raise _errors.WorkflowCancelledError(child)

    def _consume(self, signal: str) -> None:
        self._consumed[signal] = self._consumed.get(signal, 0) + 1
        queue = self._pending.get(signal)
        if queue:
            queue.popleft()

    def _child_outcome(self, child: str, signal: str) -> history.Event | None:
        """How the child ended, if it has: the event to record, or None while it runs.

        The child's latest outcome signal is the fast answer; the child run itself
        is the truth. It is read to settle what a signal cannot tell: an outcome
        that never arrived (it reached this run while it had failed, and an
        operator retried it since), a failure that a retry of the child may have
        superseded, and a sender that lost its run to another worker.
        """
        queue = self._pending.get(signal)
        try:
            if not queue:
                run = stores.latest_run(self.store, child)
                return self._ended_child(child, run.id) if run.status.is_terminal else None
            try:
                outcome = msgspec.json.decode(queue[-1], type=ChildOutcome)
                kind = _CHILD_EVENTS[outcome.kind]
            except (msgspec.DecodeError, KeyError) as exc:
                info = ErrorInfo(
                    type="fluxo.CorruptedOutcome",
                    message=f"child run {child!r} sent an outcome that does not decode ({exc})",
                )
                return history.ChildFailed(child, self._encode_error(info))
            sender = outcome.run or child
            run = self.store.get_run(sender)
            if run.status.is_terminal:
                if run.status.value == outcome.kind:
                    return kind(child, outcome.data)
                return self._ended_child(child, sender)  # it ended otherwise: the truth
            if kind is history.ChildCompleted and run.cancel_requested:
                return self._completion_if_kept(child, sender, outcome)
            if kind is not history.ChildFailed:
                return kind(child, outcome.data)  # sent just before its end was recorded
            # A failure, and the run is going again: retried since (that failure is
            # superseded), or just about to record it.
            try:
                events = self.store.load(sender).events
            except _errors.HistoryCorruptError:
                return kind(child, outcome.data)  # a damaged run is failed as it is
            retries = sum(isinstance(e, history.RunRetried) for e in events)
            return kind(child, outcome.data) if retries == outcome.retries else None
        except _errors.RunNotFoundError:
            return None  # not created yet: its parent crashed and starts it again
        except _errors.StoreError as exc:
            self._store_failed(exc)

    def _completion_if_kept(
        self, child: str, sender: str, outcome: ChildOutcome
    ) -> history.Event | None:
        """A child sent "completed" and has a pending cancellation: will its end stand?

        Only if the child saw its cancellation (caught ``fluxo.Cancelled``, so its
        history holds ``cancel_requested``). Otherwise the store refuses to record
        the completion and the child ends cancelled, telling this run again: wait.
        """
        state = self.store.load(sender)
        if state.run.status.is_terminal:
            return self._ended_child(child, sender)
        if any(isinstance(e, history.CancelRequested) for e in state.events):
            return history.ChildCompleted(child, outcome.data)
        return None

    def _ended_child(self, child: str, run_id: str) -> history.Event:
        """The outcome of a finished child run, read from its own history."""
        try:
            events = self.store.load(run_id).events
        except _errors.HistoryCorruptError as exc:  # failed for it, if it ran since
            return history.ChildFailed(child, self._encode_error(error_info(exc)))
        end = next((e for e in reversed(events) if isinstance(e, _ENDS)), events[-1])
        if isinstance(end, history.WorkflowCompleted):
            return history.ChildCompleted(child, end.data)
        if isinstance(end, history.WorkflowFailed):
            return history.ChildFailed(child, end.data)
        return history.ChildCancelled(child, self.codec.encode(end.name or "cancelled"))

    def cancel_child(self, child: str) -> None:
        """``ChildHandle.cancel()``: ask a child run to stop (idempotent, so not recorded)."""
        self._enter_durable_call()
        if self.replaying or self.replay_only:
            return  # asked already: this run recorded more after asking
        try:
            self._cancel_chain(child)
        except _errors.StoreError as exc:
            self._store_failed(exc)

    def _cancel_chain(self, run_id: str) -> None:
        """Cancel a run, or the latest run of its chain if it continued as new."""
        now = self.clock()
        run = self.store.request_cancel(run_id, now=now)
        while run.status is history.RunStatus.COMPLETED:
            try:
                run = self.store.request_cancel(history.chain_next(run.id), now=now)
            except _errors.RunNotFoundError:
                return

    def _cancel_children(self) -> None:
        """Cancel the children started without ``detached`` that this run has not awaited."""
        if self.replay_only:
            return
        for child, detached in list(self._children.items()):
            if detached:
                continue
            try:
                self._cancel_chain(child)
            except _errors.RunNotFoundError:
                pass
            except _errors.StoreError as exc:
                self._store_failed(exc)

    def _end_children(self) -> None:
        """As the run ends: its children that are not detached end with it."""
        attached = [child for child, detached in self._children.items() if not detached]
        if attached and not self._cancel_delivered:
            log.warning(
                "run %s ends without waiting for its child runs %s; they are cancelled "
                "(start a child with .options(detached=True) to let it outlive its parent)",
                self.run_id,
                ", ".join(attached),
                extra={"fluxo_run_id": self.run_id},
            )
        self._cancel_children()

    def _tell_parent(self, end: history.Event, *, again: bool = False) -> None:
        """Send this child run's outcome to its parent, before the end is recorded.

        Keyed by this run and its operator retries, so the copy a resumed run sends
        again is dropped, while a retried run's new outcome is not. ``again``: the
        cancellation that replaces a completion the store refused to record (the
        completion was sent already), under a key of its own.
        """
        if self.parent is None:
            return
        run, retries = self.run_id, self.retries
        if isinstance(end, history.WorkflowCompleted):
            outcome = ChildOutcome("completed", end.data, run, retries)
        elif isinstance(end, history.WorkflowFailed):
            outcome = ChildOutcome("failed", end.data, run, retries)
        else:
            reason = self.codec.encode(end.name or "cancelled")
            outcome = ChildOutcome("cancelled", reason, run, retries)
        key = f"{history.SIGNAL_PREFIX}{run}:{retries}"  # once per run and operator retry
        if again:
            key += ":cancelled"
        try:
            tell_parent(self.store, self.parent, outcome, now=self.clock(), key=key)
        except _errors.StoreError as exc:
            self._store_failed(exc)

    def patched(self, change: str) -> bool:
        """``fluxo.patched``: True for runs that reach this point under the new code."""
        self._enter_durable_call()
        recorded = self._peek()
        if recorded is not None:
            event = recorded.event
            if isinstance(event, history.PatchMarker) and event.name == change:
                self._pos += 1
                return True
            return False  # recorded before the change existed: keep the old branch
        self._record(history.PatchMarker(change))
        return True

    def deprecate_patch(self, change: str) -> None:
        """``fluxo.deprecate_patch``: accept an old marker of ``change`` where one is recorded."""
        self._enter_durable_call()
        recorded = self._peek()
        if (
            recorded is not None
            and isinstance(recorded.event, history.PatchMarker)
            and recorded.event.name == change
        ):
            self._pos += 1

    def continue_as_new(self, args: Sequence[Any], kwargs: dict[str, Any]) -> NoReturn:
        """``fluxo.continue_as_new``: end this run and go on in a fresh one of its chain.

        The next run is created first (idempotent on its id, which follows from
        this run's), then ``ContinuedAsNew`` ends this run. A crash in between
        leaves a created next run and an unfinished current one; resuming the
        current one meets the same call, finds the next run created, and records
        the end, so the chain neither breaks nor forks.
        """
        wf = self.workflow
        next_id = history.chain_next(self.run_id)
        if len(next_id) > stores.MAX_ID_LENGTH:
            raise _errors.DefinitionError(
                f"fluxo.continue_as_new(): the next run's id {next_id[:40]!r}... would be longer "
                f"than {stores.MAX_ID_LENGTH} characters; start the workflow with a shorter id"
            )
        data = wf.encode_input(self.codec, args, kwargs, "fluxo.continue_as_new(): ")
        try:
            self._enter_durable_call()
        except Cancelled:
            self._cancel_next(next_id)  # created by an execution that crashed before its end
            raise
        call = f"continue_as_new {next_id}"
        if self._match((history.ContinuedAsNew,), call, frozenset((next_id,))) is not None:
            self._unwinding = _ReplayEnd() if self.replay_only else _Continued()
            raise self._unwinding
        self._go_live()
        try:
            self._end_children()  # a run's children end with it, as they would at any end
            run, created = self.store.create_run(
                next_id,
                wf.name,
                data,
                now=self.clock(),
                deadline=self.deadline,
                parent=self.parent,  # the chain is one child of the same parent
            )
            if not created:
                self._check_created_input(wf, run, data, call)
        except _errors.RunIdConflictError as exc:
            raise _errors.RunStateError(
                f"fluxo.continue_as_new(): run {next_id!r} exists and belongs to workflow "
                f"{exc.existing!r}; the chain cannot go on"
            ) from None
        except _errors.StoreError as exc:
            self._store_failed(exc)
        end = history.ContinuedAsNew(next_id)
        if self._cancel_delivered and self.cancel_requested.is_set():
            self._pass_on_cancel(next_id)  # it caught fluxo.Cancelled: the chain stays cancelled
        try:
            self._record(
                end,
                history.RunStatus.COMPLETED,
                None,
                unless_cancel_requested=not self._cancel_delivered,
            )
        except _errors.CancelPendingError:
            # engine.cancel flags the latest run of a chain: this one, until its end is
            # recorded. The chain goes on cancelled: the next run ends before it begins.
            self._pass_on_cancel(next_id)
            self._record(end, history.RunStatus.COMPLETED, None)
        self._unwinding = _Continued()
        raise self._unwinding

    def _pass_on_cancel(self, next_id: str) -> None:
        """Cancel the next run of the chain before this run's end is recorded.

        Before, so that a crash in between leaves this run to resume and pass the
        cancellation on again; a store failure stops the run the same way.
        """
        try:
            self.store.request_cancel(next_id, now=self.clock())
        except _errors.StoreError as exc:
            self._store_failed(exc)

    def _cancel_next(self, next_id: str) -> None:
        if self.replay_only:
            return
        # Not created (the usual case), or the store is down: nothing to pass on.
        with contextlib.suppress(_errors.RunNotFoundError, _errors.StoreError):
            self.store.request_cancel(next_id, now=self.clock())

    def _suspend(self, events: list[history.Event], wake_at: float | None, *, timer: bool) -> None:
        """Record the wait and the wake-up, then hold it in this thread or unwind.

        Returns only when this thread took the run back (the wait may be over, or
        something arrived); the caller checks again. Otherwise raises ``_Suspended``.
        """
        now = self.clock()
        hold = self.hold
        held_until: float | None = None
        if hold is not None and hold.window > 0:
            if timer:
                if wake_at is not None and wake_at - now <= hold.window:
                    held_until = wake_at
            else:
                held_until = (
                    now + hold.window if wake_at is None else min(wake_at, now + hold.window)
                )
        ready_at = wake_at
        if timer and held_until is not None and wake_at is not None:
            ready_at = wake_at + STICKY_GRACE  # reserved for us; others step in if we die
        deadline = None if self._cancel_delivered else self.deadline  # delivered: no wake
        if deadline is not None and (ready_at is None or deadline < ready_at):
            ready_at = deadline  # woken to be cancelled at the run's deadline
            if held_until is not None:
                held_until = min(held_until, deadline)
        # The thread takes the run back at the end of the hold only when the wait has
        # something to do then (a timer fires, a timeout or the deadline passes). A
        # hold that only ran out of window lets go, freeing the worker's slot: the
        # run waits in the store, and whatever wakes it makes it claimable.
        due_at = min((t for t in (wake_at, ready_at) if t is not None), default=None)
        reclaim = held_until is not None and due_at is not None and held_until >= due_at
        self._record_many(events, history.RunStatus.WAITING, ready_at)
        if hold is None or held_until is None or not self._hold(hold, held_until, reclaim):
            self._unwinding = _Suspended()
            raise self._unwinding

    def _hold(self, hold: Hold, until: float, reclaim: bool) -> bool:
        """Wait in the thread until ``until`` or a wake-up, then take the run back.

        Without ``reclaim``, reaching ``until`` with nothing arrived gives up instead.
        The wait gives the worker's execution slot back while it holds, and goes on
        in this thread only if it gets one again (``HoldSlots``); the worker may
        also refuse the hold, when it holds as many waits as it allows.
        """
        slots = hold.slots
        if slots is not None and not slots.enter_hold(self.run_id):
            return False
        hold.heartbeat.remove(self)
        self.holding = True
        resumed = False
        try:
            resumed = self._hold_and_reclaim(hold, until, reclaim)
            return resumed
        finally:
            self.holding = False
            if slots is not None and not resumed:
                slots.leave_hold(self.run_id, resume=False)

    def _hold_and_reclaim(self, hold: Hold, until: float, reclaim: bool) -> bool:
        while True:
            token = self.store.change_token(self.run_id)
            run = self.store.get_run(self.run_id)
            now = self.clock()
            # Our own worker may have claimed it for us (its loop leaves held runs alone).
            cancel = run.cancel_requested and not self._cancel_delivered
            woken = run.wake_requested or cancel or run.lease_owner == hold.owner
            if woken or now >= until or run.lease_owner is not None or run.status.is_terminal:
                break
            if self.stop_requested.is_set():
                return False
            # Slices: a stopping worker asks this thread to let go meanwhile.
            self.store.wait_for_change(self.run_id, min(until - now, 0.5), since=token)
        if self.stop_requested.is_set() or not (woken or (reclaim and now >= until)):
            return False
        if run.status.is_terminal or run.lease_owner not in (None, hold.owner):
            return False  # another worker has it
        if hold.slots is not None and not hold.slots.leave_hold(self.run_id, resume=True):
            # Every slot of the worker is busy: the run goes back to the store, where
            # any worker resumes it. One that is still reserved for this thread (a
            # timer's grace) is made ready now.
            if run.ready_at is not None and run.ready_at > now:
                self._make_ready(hold)
            return False
        claimed = self.store.claim_run(
            hold.owner, self.run_id, now=now, lease_until=now + hold.lease
        )
        if claimed is None:
            return False  # another worker resumed it
        try:
            state = self.store.load(self.run_id)
        except _errors.HistoryCorruptError:
            state = None  # damaged meanwhile: the worker that claims it next fails it
        if state is None or len(state.events) != self.next_seq:
            self.store.release(hold.owner, self.run_id, now=self.clock())
            return False
        self._refresh_signals(state.signals)
        self.lease_epoch += 1  # first: a heartbeat's read from before is then ignored
        self.lease_released = False
        if claimed.cancel_requested:
            self.cancel_requested.set()
        hold.heartbeat.add(self)
        return True

    def _make_ready(self, hold: Hold) -> None:
        """Make the held run claimable now: its wait is over, and this thread lets go.

        Its ``ready_at`` still reserves it to this worker (``STICKY_GRACE``): the run
        is leased, then made ``pending`` and ready now in a fenced write that
        records nothing and gives the lease back.
        """
        now = self.clock()
        lease_until = now + hold.lease
        leased = self.store.claim_run(hold.owner, self.run_id, now=now, lease_until=lease_until)
        if leased is not None:
            self._record_many((), history.RunStatus.PENDING, now)

    # -- codec helpers ---------------------------------------------------------------

    def _decode_recorded(self, call: str, data: bytes | None, type: Any) -> Any:
        """Decode the payload of the event replay just matched.

        One that no longer decodes (the annotation changed, or the history is
        damaged) is a mismatch like any other: sticky, so ``except Exception:`` in
        the workflow cannot turn it into a different branch than the live run took.
        """
        try:
            return self.codec.decode(data if data is not None else b"null", type)
        except Exception as exc:
            self._diverged(
                call,
                self._script[self._pos - 1],
                f"  its recorded payload does not decode ({exc}); the annotated type "
                "changed, or the history is damaged",
            )

    def _encode_error(self, info: ErrorInfo) -> bytes:
        return self.codec.encode(info)

    def _decode_error(self, call: str, data: bytes | None) -> ErrorInfo:
        if data is None:
            return ErrorInfo(type="unknown", message="no error details were recorded")
        decoded: ErrorInfo = self._decode_recorded(call, data, ErrorInfo)
        return decoded

    # -- running the workflow --------------------------------------------------------

    def execute(self) -> Outcome:
        """Run the workflow function to its end or to the first point it must stop."""
        token = _current.set(self)
        try:
            return self._execute()
        finally:
            _current.reset(token)

    def _execute(self) -> Outcome:
        wf = self.workflow
        # A run cancelled (or past its deadline) before it ever ran ends without
        # running user code.
        if not self._script and self.next_seq == 1 and self._cancel_due():
            return self._finish_cancelled(record_request=True)
        data = self.started.data or b"{}"
        try:
            packed = self.codec.decode(data, wf.input_type())
            args, kwargs = wf.unpack_input(packed)
        except Exception as error:  # a custom codec's own errors too: the input never decodes
            exc = error
            if isinstance(exc, _errors.DecodeError) or not isinstance(exc, _errors.FluxoError):
                exc = _errors.DecodeError(wf.input_problem(self.codec, data, error))
            if self.replay_only:
                self._nondeterminism = _errors.NondeterminismError(
                    self.run_id, 0, f"workflow {wf.name}", "its recorded input", f"  {exc}"
                )
            return self._finish_failed(exc)
        try:
            value = wf.fn(*args, **kwargs)
        except (_ControlFlow, Exception) as exc:
            return self._ended_by(exc)
        if self._unwinding is not None:
            return self._unwound()  # user code swallowed control flow; honour it anyway
        if self._nondeterminism is not None:
            return self._finish_failed(self._nondeterminism)
        if self._recorded_end(history.WorkflowCompleted) or self._recorded_late_cancel():
            return Outcome.REPLAYED
        if self.replaying:
            return self._leftover("the workflow returned")
        try:
            data = self.codec.encode(value)
            self.codec.decode(data, wf.return_type)
        except (TypeError, _errors.DecodeError) as exc:
            err = _errors.EncodeError(
                f"workflow {wf.name!r} returned a value of type "
                f"{type(value).__module__}.{type(value).__qualname__} that cannot be recorded "
                f"as its annotated return type ({exc})"
            )
            return self._finish_failed(err)
        return self._finish(history.WorkflowCompleted(data=data), history.RunStatus.COMPLETED)

    def _ended_by(self, exc: BaseException) -> Outcome:
        """Settle a run whose workflow function raised ``exc``."""
        if self._unwinding is not None:
            # Suspension, a lost lease or a shutdown is under way: whatever user code
            # raised while unwinding (a finally: that failed), record nothing.
            return self._unwound()
        if self._nondeterminism is not None:
            return self._finish_failed(self._nondeterminism)
        if isinstance(exc, Cancelled):
            if self._recorded_end(history.WorkflowCancelled):
                return Outcome.REPLAYED
            if self.replaying:
                return self._leftover("the workflow ended cancelled")
            return self._finish_cancelled(record_request=False)
        if self._recorded_end(history.WorkflowFailed):
            return Outcome.REPLAYED
        if self.replaying:
            return self._leftover(f"the workflow raised {type(exc).__name__}: {exc}")
        return self._finish_failed(exc)

    def _recorded_end(self, kind: type[history.Event]) -> bool:
        """``replay_only``: the history ends the way the code just ended; consume it."""
        if not self.replay_only or self._pos != len(self._script) - 1:
            return False
        if not isinstance(self._script[self._pos].event, kind):
            return False
        self._pos += 1
        return True

    def _recorded_late_cancel(self) -> bool:
        """``replay_only``: the function returned, and the history ends cancelled right here.

        That is how a run ends that was cancelled after its function returned and
        before its completion was recorded (see ``_cancelled_at_the_end``).
        """
        if not self.replay_only or self._pos != len(self._script) - 2:
            return False
        request, end = (r.event for r in self._script[self._pos :])
        if not isinstance(request, history.CancelRequested):
            return False
        if not isinstance(end, history.WorkflowCancelled):
            return False
        self._pos += 2
        return True

    def _unwound(self) -> Outcome:
        unwinding = self._unwinding
        if isinstance(unwinding, _ReplayEnd):
            return Outcome.REPLAYED
        if isinstance(unwinding, _Restart):
            return Outcome.RESTART
        if isinstance(unwinding, _Continued):
            return Outcome.CONTINUED
        if isinstance(unwinding, _Suspended):
            return Outcome.SUSPENDED
        if isinstance(unwinding, _RunLost):
            return Outcome.LOST
        if isinstance(unwinding, _StoreFailed):
            return Outcome.BROKEN
        if isinstance(unwinding, _Rejected):
            return self._finish_rejected()
        return Outcome.STOPPED

    def _finish_rejected(self) -> Outcome:
        """Fail the run whose record the store refused for good, once, where it stopped."""
        self._rejected = True
        self._unwinding = None
        reason = _recordable(str(self.store_error))
        if len(reason) > _REASON_LIMIT:
            reason = reason[:_REASON_LIMIT] + "..."
        error = _errors.StoreRejectedError(
            f"run {self.run_id!r} stopped at position {self.next_seq}: the store refused "
            f"what the run had to record there, and would refuse it again ({reason})"
        )
        log.error("%s; the run is failed", error, extra={"fluxo_run_id": self.run_id})
        return self._finish_failed(error)

    def _leftover(self, what: str) -> Outcome:
        try:
            self._diverged(what, self._peek())
        except _errors.NondeterminismError as exc:
            return self._finish_failed(exc)

    def _finish(self, event: history.Event, status: history.RunStatus) -> Outcome:
        if self.replay_only and self._nondeterminism is not None:
            return Outcome.FAILED  # reported through self.error; nothing is recorded
        # A completion is refused while a cancellation the function never saw is
        # pending; one that it saw (and caught) lets it complete.
        guarded = isinstance(event, history.WorkflowCompleted) and not self._cancel_delivered
        try:
            if not self.replay_only:
                # Both before the end is recorded: a crash in between redoes them, and
                # each is idempotent. A run failed by a mismatch is meant to be fixed
                # and retried (engine.retry): its children go on meanwhile.
                if self._nondeterminism is None:
                    self._end_children()
                self._tell_parent(event)
            self._record(event, status=status, ready_at=None, unless_cancel_requested=guarded)
        except _errors.CancelPendingError:
            return self._cancelled_at_the_end()
        except _ControlFlow:
            return self._unwound()
        if isinstance(event, history.WorkflowCompleted):
            self.result = event.data
            return Outcome.COMPLETED
        return Outcome.CANCELLED if status is history.RunStatus.CANCELLED else Outcome.FAILED

    def _cancelled_at_the_end(self) -> Outcome:
        """End the run cancelled: it was cancelled after its function returned.

        The store refused to record the completion because a cancellation was
        accepted first (``engine.cancel`` returned for a running run), so the run
        ends as if the function had been cancelled at its next durable call: the
        cancellation and the end are recorded at this position, in one write, and
        the parent is told (its children were already cancelled by ``_finish``).
        """
        self.cancel_reason = "cancelled"
        self._cancel_seq = self.next_seq
        self._cancel_delivered = True
        end = history.WorkflowCancelled(self.cancel_reason)
        log.info(
            "run %s: cancelled after its workflow returned, before its completion was recorded",
            self.run_id,
            extra={"fluxo_run_id": self.run_id},
        )
        try:
            self._tell_parent(end, again=True)
            self._record_many(
                (history.CancelRequested(self.cancel_reason), end),
                status=history.RunStatus.CANCELLED,
                ready_at=None,
            )
        except _ControlFlow:
            return self._unwound()
        return Outcome.CANCELLED

    def _finish_failed(self, exc: BaseException) -> Outcome:
        self.error = error_info(exc)
        if isinstance(exc, _errors.NondeterminismError) and not self.replay_only:
            log.error("%s", exc, extra={"fluxo_run_id": self.run_id})
        return self._finish(
            history.WorkflowFailed(data=self._encode_error(self.error)), history.RunStatus.FAILED
        )

    def _finish_cancelled(self, *, record_request: bool) -> Outcome:
        if record_request:  # cancelled before any durable call was recorded
            self.cancel_reason = self._cancel_due()
            self._cancel_seq = self.next_seq
            try:
                self._record(history.CancelRequested(self.cancel_reason))
                # An execution that crashed at once may have created its first child,
                # or the next run of its chain.
                self._cancel_unrecorded_child(history.child_id(self.run_id, self._cancel_seq))
                self._cancel_next(history.chain_next(self.run_id))
            except _ControlFlow:
                return self._unwound()
        return self._finish(
            history.WorkflowCancelled(self.cancel_reason or "cancelled"),
            history.RunStatus.CANCELLED,
        )
