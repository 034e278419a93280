"""Waits: durable timers, the signal inbox, and suspension.

A wait that is not over records itself (``timer_started``, ``signal_wait_started``)
and, in the same write, the run's wake-up (``waiting`` and its ``ready_at``), then
suspends: it unwinds the workflow, and whichever worker is free resumes the run
by replaying it. A short wait may instead be held in the execution's thread by
the runner (:class:`Holder`), which takes the run back when the wait is over, so
the run goes on without replaying its history. The record comes first either way,
so a crash changes nothing.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from fluxo import _errors, _payloads, history
from fluxo._executor import _control, _shared

if TYPE_CHECKING:
    from fluxo._executor import _context

log = logging.getLogger(__name__)

STICKY_GRACE = 2.0
"""Seconds a timer held in a worker's thread is reserved for that worker after it fires.

While a worker holds a short wait in its thread, the run's ``ready_at`` is the fire
time plus this grace, so other workers leave it alone; if the holder dies, the run
resumes at most this much late. A timer never fires early."""

_WAIT_KINDS: dict[bool, tuple[type[history.Event], ...]] = {
    False: (history.SignalReceived, history.SignalRejected, history.SignalWaitStarted),
    True: (history.SignalReceived, history.SignalRejected, history.SignalTimedOut),
}
"""What a signal wait may have recorded next, before and after its ``SignalWaitStarted``."""


class HeldRun(Protocol):
    """What a :class:`Holder` may see and do of the execution whose wait it holds."""

    @property
    def run_id(self) -> str:
        """The run."""
        ...

    @property
    def shared(self) -> _shared.SharedState:
        """The execution's cross-thread state (its stop and cancel flags, its lease)."""
        ...

    @property
    def next_seq(self) -> int:
        """The length of the history as this execution knows it."""
        ...

    @property
    def cancel_delivered(self) -> bool:
        """The execution has raised its cancellation already."""
        ...

    @property
    def signals_seen(self) -> int:
        """The id of the newest signal the execution has taken in (-1: none)."""
        ...

    def take_signals(self, signals: Sequence[history.Signal]) -> None:
        """Take in the signals sent since ``signals_seen``, read as the run is taken back."""
        ...

    def make_ready(self, now: float) -> None:
        """Make the run ``pending`` and ready at ``now``, giving its lease back.

        A fenced write at the execution's position that records nothing; the caller
        holds the run's lease.
        """
        ...


class Holder(Protocol):
    """Holds a recorded wait in the execution's thread instead of unwinding (a runner's).

    Attributes:
        window: the longest wait, in seconds, held in the thread (0: never hold).
    """

    window: float

    def hold(self, run: HeldRun, until: float, reclaim: bool) -> bool:
        """Wait until ``until`` or a wake-up; True once the thread has the run back.

        The wait is recorded and the run's lease cleared before this is called.
        Without ``reclaim``, reaching ``until`` with nothing arrived gives up. False:
        the thread let go (the run is back in the store) and the execution unwinds.
        """
        ...


class SignalInbox:
    """The signals sent to the run that the execution has not consumed yet, by name.

    Signals come in oldest first (by id), and each consumption, replayed or live,
    takes the oldest pending signal of its name; one that finds none pending (its
    signal has not come in yet) takes the next of that name to come in.
    """

    __slots__ = ("_owed", "pending", "seen")

    def __init__(self, signals: Sequence[history.Signal]) -> None:
        self.pending: dict[str, collections.deque[bytes]] = {}
        self._owed: dict[str, int] = {}  # consumed with none pending, by name
        self.seen = -1
        """The id of the newest signal taken in (-1: none yet)."""
        self.take(signals)

    def take(self, signals: Sequence[history.Signal]) -> None:
        """Take in signals sent to the run, oldest first; those already taken are skipped."""
        for signal in signals:
            if signal.id <= self.seen:
                continue
            self.seen = signal.id
            owed = self._owed.get(signal.name, 0)
            if owed:
                self._owed[signal.name] = owed - 1  # consumed already
            else:
                self.pending.setdefault(signal.name, collections.deque()).append(signal.payload)

    def consume(self, signal: str) -> None:
        """Take the oldest signal ``signal`` (replayed or live)."""
        queue = self.pending.get(signal)
        if queue:
            queue.popleft()
        else:
            self._owed[signal] = self._owed.get(signal, 0) + 1


class Waits:
    """The timers and signal waits of one execution, and how it suspends."""

    __slots__ = ("_ctx", "inbox")

    def __init__(self, ctx: _context.RunContext, signals: Sequence[history.Signal]) -> None:
        self._ctx = ctx
        self.inbox = SignalInbox(signals)

    def timer(self, name: str, delay: float | None, fire_at: float | None = None) -> None:
        """A durable timer: returns once it has fired, recording its start and firing."""
        ctx = self._ctx
        cursor = ctx._cursor
        call = f"timer {name}"
        names = frozenset((name,))
        observers = ctx.observers
        started = cursor.match((history.TimerStarted,), call, names)
        if started is not None:
            fire_at = float(cursor.decode_recorded(call, started.data, float))
            if observers.timer_set:
                self._tell_replayed("timer_set", name)
            ctx._cancel_point()
            if cursor.match((history.TimerFired,), call, names) is not None:
                if observers.timer_fired:
                    self._tell_replayed("timer_fired", name)
                return
            unrecorded: list[history.Event] = []
        else:
            if fire_at is None:
                fire_at = ctx.clock() + (delay or 0.0)
            unrecorded = [history.TimerStarted(name, ctx.codec.encode(fire_at))]
        while True:
            if not unrecorded:
                ctx._cancel_point()
            if ctx.clock() >= fire_at:
                position = cursor.next_seq
                ctx._record_many(
                    [*unrecorded, history.TimerFired(name)],
                    then=self._telling_fired(position, name, fire_at, bool(unrecorded)),
                )
                return
            self.suspend(unrecorded, fire_at, timer=True, timer_name=name)
            unrecorded = []

    def sleep_until(self, fire_at: float) -> None:
        """``fluxo.sleep_until``: a durable timer that fires at ``fire_at`` (epoch seconds)."""
        self._ctx._enter_durable_call()
        self.timer("sleep", None, fire_at)

    def wait_for_signal(self, name: str, timeout: float | None, type: Any) -> Any:
        """``fluxo.wait_for_signal``: the payload of the oldest unconsumed signal ``name``.

        A signal whose payload does not decode as ``type`` is skipped: consumed,
        recorded as ``SignalRejected`` and logged, and the wait goes on. A message
        from outside cannot fail the run. Replay skips what the history rejected,
        and also a recorded ``SignalReceived`` whose payload does not decode (older
        Fluxo failed the run there; ``engine.retry`` then resumes it waiting).
        """
        ctx = self._ctx
        ctx._enter_durable_call()
        cursor = ctx._cursor
        codec = ctx.codec
        call = f"wait_for_signal {name}"
        started = False  # a SignalWaitStarted is recorded, which holds the deadline
        deadline: float | None = None
        skipped = ""  # why replay skipped a received signal, for a mismatch after it
        while (recorded := cursor.peek()) is not None:
            event = recorded.event
            kinds = _WAIT_KINDS[started]
            if not isinstance(event, kinds) or event.name != name:
                cursor.diverged(call, recorded, skipped)
            cursor.pos += 1
            if isinstance(event, history.SignalReceived):
                if ctx.observers.signal_received:
                    self._tell_replayed("signal_received", name)
                self.inbox.consume(name)
                try:
                    return codec.decode(event.data or b"null", type)
                except _errors.DefinitionError:
                    raise
                except Exception as exc:
                    skipped = f"  the signal at position {recorded.seq} was skipped: {exc}"
            elif isinstance(event, history.SignalRejected):
                self.inbox.consume(name)
            elif isinstance(event, history.SignalWaitStarted):
                deadline = cursor.decode_recorded(call, event.data, float | None)
                started = True
            else:
                raise _errors.SignalTimeout(name, timeout)
            ctx._cancel_point()
        if not started:
            deadline = None if timeout is None else ctx.clock() + timeout
        unrecorded: list[history.Event] = []
        while True:
            queue = self.inbox.pending.get(name)
            if queue:
                payload = queue[0]
                try:
                    value = codec.decode(payload, type)
                except _errors.DefinitionError:
                    raise  # the annotation, not the payload: no signal could fit it
                except Exception as exc:
                    self._reject(name, payload, exc)  # (nothing is unrecorded here)
                    ctx._cancel_point()
                    continue
                ctx._record_many(
                    [*unrecorded, history.SignalReceived(name, payload)],
                    then=(lambda: ctx.tell("signal_received", cursor.next_seq - 1, name=name))
                    if ctx.observers.signal_received
                    else None,
                )
                self.inbox.consume(name)
                return value
            if not started:
                unrecorded = [history.SignalWaitStarted(name, codec.encode(deadline))]
                started = True
            if deadline is not None and ctx.clock() >= deadline:
                ctx._record_many([*unrecorded, history.SignalTimedOut(name)])
                raise _errors.SignalTimeout(name, timeout)
            self.suspend(unrecorded, deadline, timer=False)
            unrecorded = []
            ctx._cancel_point()

    def _reject(self, name: str, payload: bytes, exc: Exception) -> None:
        """Skip the oldest pending signal ``name``, whose payload does not fit: record, log."""
        ctx = self._ctx
        reason = _payloads.recordable(str(exc))[: _payloads.REASON_LIMIT]
        copy = payload if len(payload) <= _payloads.REJECTED_PAYLOAD_LIMIT else None
        rejection = _payloads.Rejection(reason, copy)
        ctx._record(history.SignalRejected(name, msgspec.json.encode(rejection)))
        self.inbox.consume(name)
        log.warning(
            "run %s: skipped signal %r: its payload does not fit the wait (%s); waiting for "
            "the next one",
            ctx.run_id,
            name,
            reason,
            extra={"fluxo_run_id": ctx.run_id},
        )

    def _tell_replayed(self, kind: str, name: str) -> None:
        """Tell the observers of a record that replay just met."""
        ctx = self._ctx
        position = ctx._cursor.script[ctx._cursor.pos - 1].seq
        ctx.observers.emit(
            getattr(ctx.observers, kind), ctx.event(kind, position, replayed=True, name=name)
        )

    def _telling_fired(
        self, position: int, name: str, fire_at: float, was_set: bool
    ) -> Callable[[], None] | None:
        ctx = self._ctx
        if not ctx.observers.active:
            return None

        def tell() -> None:
            if was_set:
                self._tell_timer_set(position, name, fire_at)
            ctx.tell("timer_fired", ctx._cursor.next_seq - 1, name=name)

        return tell

    def _tell_timer_set(self, position: int, name: str, fire_at: float) -> None:
        ctx = self._ctx
        ctx.tell("timer_set", position, name=name, delay=max(fire_at - ctx.clock(), 0.0))

    def suspend(
        self,
        events: list[history.Event],
        wake_at: float | None,
        *,
        timer: bool,
        timer_name: str = "",
        waits_for: str = "",
    ) -> None:
        """Record the wait and the wake-up, then hold it in this thread or unwind.

        Returns only when this thread took the run back (the wait may be over, or
        something arrived); the caller checks again. Otherwise raises ``Suspended``.
        """
        ctx = self._ctx
        now = ctx.clock()
        holder = ctx._holder
        held_until: float | None = None
        if holder is not None and holder.window > 0:
            if timer:
                if wake_at is not None and wake_at - now <= holder.window:
                    held_until = wake_at
            else:
                held_until = (
                    now + holder.window if wake_at is None else min(wake_at, now + holder.window)
                )
        ready_at = wake_at
        if timer and held_until is not None and wake_at is not None:
            ready_at = wake_at + STICKY_GRACE  # reserved for us; others step in if we die
        deadline = None if ctx._cancel_delivered else ctx.deadline  # delivered: no wake
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
        position = ctx._cursor.next_seq
        ctx._record_many(events, history.RunStatus.WAITING, ready_at)
        if ctx.observers.active:
            if timer and events:
                self._tell_timer_set(position, timer_name, wake_at or now)
            why = "timer" if timer else (waits_for or "signal")
            ctx.tell("run_suspended", ctx._cursor.next_seq, name=why)
        if holder is None or held_until is None or not holder.hold(ctx, held_until, reclaim):
            ctx._unwind(_control.Suspended())
        ctx.tell("run_resumed", ctx._cursor.next_seq)
