"""The run context: one execution of one run, composed of the executor's parts.

A :class:`RunContext` is what workflow code calls (it implements
:class:`fluxo._runtime.Runtime`). It owns what every durable call shares, and
hands each kind of call to the part that knows it:

* the history cursor (:mod:`._cursor`): the position, matching, the fenced append;
* steps (:mod:`._steps`): attempts, retries, back-offs and timeouts;
* waits (:mod:`._waits`): timers, the signal inbox and suspension;
* parallel branches (:mod:`._branches`);
* other runs (:mod:`._children`): child runs and the next run of a chain;
* the ending (:mod:`._ending`): how the function's end becomes the outcome.

What it keeps itself: the checks every durable call makes first (a pending
unwinding, a mismatch, a stop, a cancellation to deliver), the policy of every
record (``replay_only``, the lease flag, ``restart_after_record``, what a store
failure means), and the small durable calls (recorded values, patches, signals
sent to other runs). What other threads may touch is in :attr:`RunContext.shared`;
what its caller sets is :attr:`RunContext.options`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from fluxo import (
    _aio,
    _errors,
    _observers,
    _payloads,
    _run_events,
    _runtime,
    codec,
    history,
    observe,
    stores,
)
from fluxo._executor import (
    _branches,
    _children,
    _control,
    _cursor,
    _ending,
    _shared,
    _steps,
    _waits,
)

if TYPE_CHECKING:
    from fluxo import _definitions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How one execution runs, as set by whoever executes it.

    Attributes:
        step_runner: calls a step's function for one live attempt (the test
            environment stubs steps with its own).
        pause: waits a short retry back-off in the thread. ``None``: wait, and end
            early when the run must stop or is cancelled; the test environment
            moves its virtual clock instead.
        replay_only: check the code against the recorded history only: run no
            step, record nothing (the replayer).
        restart_after_record: stop after every recorded position and execute
            again, so each durable call is replayed once (the test environment).
        child_started: told of each child run the execution starts live (a runner
            may execute it inline; the test environment registers its workflow).
        workflow_runner: calls the workflow's function for the execution (the test
            environment stands a stub in for a child run's function with its own).
        holder: holds a short recorded wait in the execution's thread instead of
            unwinding (a runner's); ``None``: every wait unwinds.
    """

    step_runner: _steps.StepRunner = _steps.call_step_function
    pause: Callable[[float], object] | None = None
    replay_only: bool = False
    restart_after_record: bool = False
    child_started: Callable[[str, _definitions.Workflow[Any, Any]], None] | None = None
    workflow_runner: _ending.WorkflowRunner = _ending.call_workflow_function
    holder: _waits.Holder | None = None


class RunContext:
    """The state of one execution of one run, composed of the executor's parts.

    It implements :class:`fluxo._runtime.Runtime`, the protocol workflow code calls,
    and :class:`fluxo._executor._waits.HeldRun`, what a runner's holder may do with
    an execution whose wait it holds. :meth:`execute` runs it once.

    Attributes:
        run_id: the run.
        workflow: the run's workflow.
        created_at: when the run was created.
        shared: what other threads may read and set (cancel and stop flags, lease).
        options: how it runs (:class:`RunOptions`); fixed once it begins.
        result: the encoded result, once the run completed.
        error: how the run failed, once it failed.
        cancel_reason: ``"cancelled"`` or ``"deadline"``, once cancelled.
        store_error: the store's error that stopped it, if one did.
    """

    def __init__(
        self,
        *,
        state: history.RunState,
        workflow: _definitions.Workflow[Any, Any],
        store: stores.Store,
        codec: codec.Codec,
        clock: Callable[[], float],
        options: RunOptions | None = None,
        threads: _branches.StepThreads | None = None,
        observers: _observers.Dispatch = _observers.NONE,
        worker: str = "",
    ) -> None:
        run = state.run
        self.observers = observers
        """The engine's observers, told of what this execution does."""
        self.worker = worker
        self.headers = run.headers
        self.queued_as = run  # a successor goes on in its queue, priority and partition
        self._ready_for = (
            max(run.updated_at - run.ready_at, 0.0) if run.ready_at is not None else None
        )
        """Seconds from the run being ready to being claimed for this execution."""
        self.run_id = run.id
        self.created_at = run.created_at
        self.workflow = workflow
        self.is_async = workflow.is_async
        """The workflow is ``async def``: its coroutine runs on an event loop (``fluxo._aio``)."""
        self.store = store
        self.codec = codec
        self.clock = clock
        self.threads = threads if threads is not None else _branches.SHARED_THREADS
        self.started = state.events[0]
        self.deadline = run.deadline
        self.parent = run.parent
        self._retried_at = [
            seq for seq, e in enumerate(state.events) if isinstance(e, history.RunRetried)
        ]
        self.retries = len(self._retried_at)
        self.shared = _shared.SharedState(cancel_requested=run.cancel_requested)
        self._cursor = _cursor.HistoryCursor(
            run_id=run.id, events=state.events, store=store, codec=codec, clock=clock
        )
        self._steps = _steps.Steps(self)
        self.call_step = self._steps.call
        """Run a step once for this run, or return its recorded outcome (``Steps.call``).

        Bound straight to the part: it is every step's way in."""
        self._waits = _waits.Waits(self, state.signals)
        self._branches = _branches.Branches(self)
        self._children = _children.Children(self)
        self._ending = _ending.Ending(self)
        self.store_error: _errors.StoreError | None = None
        self.cancel_reason = ""
        self._cancel_delivered = False
        self._cancel_seq = 0
        """The position that recorded the cancellation, once delivered."""
        self._unwinding: _runtime.ControlFlow | None = None
        self._rejected = False
        """The store refused a record for good, and the run is being failed for it."""
        self._in_block = False
        self._restart_due = False
        self._began = False
        self._held: tuple[history.Event, ...] = ()
        """A completed step's record not written yet (see :meth:`_record_later`)."""
        self._batch: _aio.StepBatch[_definitions.Call[Any]] | None = None
        """An async workflow's step calls not made yet (see :meth:`defer_step`)."""
        self.result: bytes | None = None
        self.error: _payloads.ErrorInfo | None = None
        self._options = RunOptions()
        self._adopt(options if options is not None else self._options)

    def __repr__(self) -> str:
        return f"<fluxo RunContext {self.run_id} of {self.workflow.name}>"

    # -- options ---------------------------------------------------------------------

    @property
    def options(self) -> RunOptions:
        """How the execution runs; a caller may replace them before it begins."""
        return self._options

    @options.setter
    def options(self, options: RunOptions) -> None:
        if self._began:
            raise _errors.RunStateError(
                f"the execution of run {self.run_id!r} has begun; set its options before "
                "execute(), for example in a runner's context_hook"
            )
        self._adopt(options)

    def _adopt(self, options: RunOptions) -> None:
        self._options = options
        # Read on every record and step: kept at hand.
        self._step_runner = options.step_runner
        self._pause = options.pause
        self._replay_only = options.replay_only
        self._restart_after_record = options.restart_after_record
        self._steps.adopt(restart_after_record=options.restart_after_record)
        self._child_started = options.child_started
        self._workflow_runner = options.workflow_runner
        self._holder = options.holder

    def _set_option(self, **change: Any) -> None:
        self.options = dataclasses.replace(self._options, **change)

    @property
    def step_runner(self) -> _steps.StepRunner:
        """``options.step_runner``; settable before the execution begins."""
        return self._step_runner

    @step_runner.setter
    def step_runner(self, runner: _steps.StepRunner) -> None:
        self._set_option(step_runner=runner)

    @property
    def pause(self) -> Callable[[float], object]:
        """What a short retry back-off waits with; settable before the execution begins."""
        return self._wait_interruptibly if self._pause is None else self._pause

    @pause.setter
    def pause(self, pause: Callable[[float], object]) -> None:
        self._set_option(pause=pause)

    @property
    def replay_only(self) -> bool:
        """``options.replay_only``; settable before the execution begins."""
        return self._replay_only

    @replay_only.setter
    def replay_only(self, value: bool) -> None:
        self._set_option(replay_only=value)

    @property
    def restart_after_record(self) -> bool:
        """``options.restart_after_record``; settable before the execution begins."""
        return self._restart_after_record

    @restart_after_record.setter
    def restart_after_record(self, value: bool) -> None:
        self._set_option(restart_after_record=value)

    @property
    def child_started(self) -> Callable[[str, _definitions.Workflow[Any, Any]], None] | None:
        """``options.child_started``; settable before the execution begins."""
        return self._child_started

    @child_started.setter
    def child_started(
        self, hook: Callable[[str, _definitions.Workflow[Any, Any]], None] | None
    ) -> None:
        self._set_option(child_started=hook)

    # -- what other threads and the caller see -----------------------------------------

    @property
    def cancel_requested(self) -> threading.Event:
        """``shared.cancel_requested``: set when the run's cancellation is known."""
        return self.shared.cancel_requested

    @property
    def stop_requested(self) -> threading.Event:
        """``shared.stop_requested``: set to stop at the next durable call."""
        return self.shared.stop_requested

    @property
    def nondeterminism(self) -> _errors.NondeterminismError | None:
        """The mismatch between code and history found, if the code diverged."""
        return self._cursor.nondeterminism

    @property
    def replaying(self) -> bool:
        """True while the code is catching up with recorded history."""
        return self._cursor.replaying

    @property
    def workflow_name(self) -> str:
        """The name of the run's workflow."""
        return self.workflow.name

    def now(self) -> float:
        """The engine's clock (not recorded: ``fluxo.now()`` records it)."""
        return self.clock()

    # -- a held wait (HeldRun) ----------------------------------------------------------

    @property
    def next_seq(self) -> int:
        """The length of the history as this execution knows it."""
        return self._cursor.next_seq

    @property
    def cancel_delivered(self) -> bool:
        """The execution has raised its cancellation already."""
        return self._cancel_delivered

    @property
    def signals_seen(self) -> int:
        """The id of the newest signal the execution has taken in (-1: none)."""
        return self._waits.inbox.seen

    def take_signals(self, signals: Sequence[history.Signal]) -> None:
        """Take in the signals sent since ``signals_seen``, read as a held wait takes it back."""
        self._waits.inbox.take(signals)

    def make_ready(self, now: float) -> None:
        """Make the held run ``pending`` and ready at ``now``: a fenced write of no event.

        Its lease is given back with it; the holder leased the run first.
        """
        self._record_many((), history.RunStatus.PENDING, now)

    # -- running ----------------------------------------------------------------------

    def execute(self) -> _control.Outcome:
        """Run the workflow function to its end or to the first point it must stop."""
        self._began = True
        observers = self.observers
        if observers.run_resumed:
            event = self.event("run_resumed", self.next_seq, delay=self._ready_for)
            observers.emit(observers.run_resumed, event)
        token = _runtime.enter(self)
        try:
            outcome = self._ending.run()
        finally:
            _runtime.leave(token)
        if observers.active:
            if observers.step_times:
                observers.tidy()  # folds step times that nobody reads, now and then
            self._tell_outcome(outcome)
        return outcome

    # -- telling observers -------------------------------------------------------------

    def event(
        self, kind: str, position: int | None = None, *, at: float | None = None, **fields: Any
    ) -> observe.RunEvent:
        """An event of this run for its observers, live, happening now (or ``at`` then)."""
        return observe.RunEvent(
            kind=kind,
            run_id=self.run_id,
            workflow=self.workflow.name,
            time=self.clock() if at is None else at,
            position=position,
            worker=self.worker,
            parent=self.parent,
            headers=self.headers,
            **fields,
        )

    def tell(self, kind: str, position: int | None = None, **fields: Any) -> None:
        """Tell the observers of ``kind`` an event of this run, if any observer has that method."""
        handlers: tuple[_observers.Handler, ...] = getattr(self.observers, kind)
        if handlers:
            self.observers.emit(handlers, self.event(kind, position, **fields))

    def _tell_outcome(self, outcome: _control.Outcome) -> None:
        """Tell the observers how this execution ended (a suspension told itself)."""
        Outcome = _control.Outcome
        now = self.clock()  # one reading: the event's time minus its duration is the creation
        age = now - self.created_at
        last = self._cursor.next_seq - 1
        if outcome is Outcome.COMPLETED:
            self.tell("run_completed", last, at=now, duration=age)
        elif outcome is Outcome.FAILED:
            mismatch = self._cursor.nondeterminism
            if mismatch is not None:
                self.tell(
                    "nondeterminism",
                    mismatch.seq,
                    error_type=_payloads.MISMATCH,
                    error_message=str(mismatch),
                )
            error = self.error
            self.tell(
                "run_failed",
                last,
                at=now,
                duration=age,
                error_type=error.type if error is not None else "",
                error_message=error.message if error is not None else "",
            )
        elif outcome is Outcome.CANCELLED:
            reason = self.cancel_reason or "cancelled"
            self.tell("run_cancelled", last, at=now, duration=age, name=reason)
        elif outcome is Outcome.CONTINUED:
            next_run = history.chain_next(self.run_id)
            self.tell("run_continued", last, at=now, duration=age, other_run=next_run)
        elif outcome is Outcome.LOST:
            self.tell("lease_lost", self._cursor.next_seq)
        elif outcome in (Outcome.STOPPED, Outcome.BROKEN, Outcome.RESTART):
            why = {Outcome.STOPPED: "stopped", Outcome.BROKEN: "store_error"}.get(
                outcome, "restart"
            )
            self.tell("run_suspended", self._cursor.next_seq, name=why)

    # -- what every durable call does first ----------------------------------------------

    def _unwind(self, flow: _runtime.ControlFlow) -> NoReturn:
        """Unwind the workflow with ``flow``; every later durable call raises it again."""
        self._unwinding = flow
        raise flow

    def _enter_durable_call(self) -> None:
        """Checks every durable call makes before touching the history.

        An async workflow's step calls not made yet are made first, so the history
        keeps the order the workflow made its calls in. Then a held step record is
        written (the last of those calls', say), so the call sees the history's
        true length (a child's id, a signal's key, a block's position).
        """
        batch = self._batch
        if batch is not None and batch.waiting:
            batch.flush()
        if self._held:
            self._write_held()
        if self._unwinding is not None:
            raise self._unwinding
        if self._cursor.nondeterminism is not None:
            raise self._cursor.nondeterminism
        if self.shared.stop_requested.is_set():
            self._unwind(_control.Stopped())
        self._cancel_point()

    def _cancel_point(self) -> None:
        """Deliver a cancellation here: the one recorded at this position, or a new one."""
        if self._cancel_delivered:
            return
        cursor = self._cursor
        recorded = cursor.peek()
        if recorded is not None:
            if isinstance(recorded.event, history.CancelRequested):
                cursor.pos += 1
                self._cancel_seq = recorded.seq
                self._cancel_delivered = True
                self.cancel_reason = recorded.event.name or "cancelled"
                self._children.cancel_children()  # again: a crash may have come before
                raise _runtime.cancellation()
        elif reason := self._cancel_due():
            self._cancel_seq = cursor.next_seq
            self._record(history.CancelRequested(reason))
            self._cancel_delivered = True
            self.cancel_reason = reason
            self._children.cancel_children()
            raise _runtime.cancellation()

    def _wait_interruptibly(self, seconds: float) -> None:
        """Wait a short back-off; end it early when the run must stop or is cancelled."""
        shared = self.shared
        deadline = time.monotonic() + seconds
        while not shared.stop_requested.is_set() and not (
            shared.cancel_requested.is_set() and not self._cancel_delivered
        ):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            shared.attention.wait(remaining)
            shared.attention.clear()  # the flags, set before it, are looked at again

    def _cancel_due(self) -> str:
        """Why the run must stop now: ``"cancelled"``, ``"deadline"``, or ``""``."""
        if self.shared.cancel_requested.is_set():
            return "cancelled"
        if self.deadline is not None and self.clock() >= self.deadline:
            return "deadline"
        return ""

    # -- every record --------------------------------------------------------------------

    def _store_failed(self, exc: _errors.StoreError) -> NoReturn:
        """Stop at a store failure: the run resumes from its history (``Outcome.BROKEN``).

        When the store refused the data itself (``StoreRejectedError``), resuming would
        meet the same refusal, so the run unwinds to fail instead (``Ending``); if even
        its failure is refused, it stops as for any other store failure.
        """
        self.store_error = exc
        rejected = isinstance(exc, _errors.StoreRejectedError) and not self._rejected
        self._unwinding = _control.Rejected() if rejected else _control.StoreFailed()
        raise self._unwinding from exc

    def _go_live(self) -> None:
        """Called before anything with an effect: ``replay_only`` stops here."""
        if self._replay_only:
            self._unwind(_control.ReplayEnd())

    def _record(
        self,
        event: history.Event,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        *,
        unless_cancel_requested: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        self._record_many(
            (event,), status, ready_at, unless_cancel_requested=unless_cancel_requested, then=then
        )

    def _record_later(self, event: history.Event) -> None:
        """Record a completed step's ``event`` with the next write, not now.

        The next durable call writes it first (:meth:`_enter_durable_call`); the
        run's end writes it in the same write as the end. So a workflow whose last
        step is followed by its end costs one write less. A crash before that write
        runs the step again, as a crash before any step's record does: steps are
        at-least-once. Not under ``restart_after_record``, which replays after
        every record.
        """
        if self._restart_after_record:
            self._record(event)
        else:
            self._held = (event,)

    def _write_held(self) -> None:
        """Write the held step record now, on its own."""
        held, self._held = self._held, ()
        self._record_many(held)

    def _record_many(
        self,
        events: Sequence[history.Event],
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        *,
        unless_cancel_requested: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Append ``events`` at the next position (raises ``CancelPendingError`` as is).

        ``then`` is called once they are recorded, before anything unwinds. A held
        step record goes first: in the same write when this one sets a status (the
        run's end), else in a write of its own before it; a write of both that the
        store refuses for good is made again as two.
        """
        held = self._held
        if held:
            if status is None:
                self._write_held()
            else:
                self._held = ()
                try:
                    self._record_many(
                        (*held, *events),
                        status,
                        ready_at,
                        unless_cancel_requested=unless_cancel_requested,
                        then=then,
                    )
                except _errors.CancelPendingError:
                    self._held = held  # nothing was written: still to record
                    raise
                except _control.Rejected:
                    # Refused for good, and nothing was written: each on its own, so
                    # an end the store refuses does not take the step's record with it.
                    self._unwinding = self.store_error = None
                    self.shared.lease_released = False
                    self._record_many(held)
                    self._record_many(
                        events,
                        status,
                        ready_at,
                        unless_cancel_requested=unless_cancel_requested,
                        then=then,
                    )
                return
        self._go_live()
        guard = _GUARD if unless_cancel_requested else _NO_GUARD
        if status is not None:
            # A status write clears the lease. Said before the write, so that a heartbeat
            # reading the run meanwhile does not take the cleared lease for a lost one
            # (if the write fails, the execution stops anyway).
            self.shared.lease_released = True
        try:
            self._cursor.append(events, status, ready_at, guard)
        except _errors.CancelPendingError:
            self.shared.lease_released = False  # refused: nothing changed, the lease is ours
            raise
        except (_errors.SequenceConflictError, _errors.RunNotFoundError):
            log.warning(
                "run %s: position %d was recorded by another worker; this worker stops "
                "executing the run",
                self.run_id,
                self._cursor.next_seq,
                extra={"fluxo_run_id": self.run_id},
            )
            self._unwinding = _control.RunLost()
            raise self._unwinding from None
        except _errors.StoreError as exc:
            if not isinstance(exc, _errors.StoreRejectedError):
                log.warning(
                    "run %s: could not record position %d (%s); this worker stops executing "
                    "the run, which resumes from its history",
                    self.run_id,
                    self._cursor.next_seq,
                    exc,
                    extra={"fluxo_run_id": self.run_id},
                )
            self._store_failed(exc)
        if then is not None:
            then()  # (observers) told of the record before a restart unwinds
        if status is None and self._restart_after_record:
            if self._in_block:
                self._restart_due = True  # once the branches still running are recorded
                return
            self._unwind(_control.Restart())

    # -- the durable calls (Runtime) -----------------------------------------------------

    def defer_step(self, call: _definitions.Call[Any]) -> Coroutine[Any, Any, Any]:
        """An async workflow's step call: an awaitable of its outcome, made with its batch.

        The calls the workflow makes until its event loop runs out of work are
        made together (:class:`fluxo._aio.StepBatch`): alone, as a step; two or
        more, as the branches of one parallel block, at once.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise _errors.DefinitionError(
                f"step {call.step.name!r} was called outside the event loop of async workflow "
                f"{self.workflow.name!r} (from another thread?); call and await steps in the "
                "workflow's own coroutines and tasks"
            ) from None
        batch = self._batch
        if batch is None or batch.loop is not loop:
            batch = self._batch = _aio.StepBatch(loop, self._make_steps)
        return batch.add(call)

    def _make_steps(self, calls: list[_definitions.Call[Any]]) -> list[_aio.Outcome]:
        """Make a batch of step calls: one as a step, more as one parallel block."""
        if len(calls) == 1:
            call = calls[0]
            try:
                return [(self._steps.call(call.step, call.args, call.kwargs), None)]
            except Exception as exc:  # its awaiter raises it; control flow goes to every one
                return [(None, exc)]
        return self._branches.outcomes(calls)

    def call_parallel(
        self, calls: Sequence[_definitions.Call[Any]], max_concurrency: int | None
    ) -> list[Any]:
        """``fluxo.parallel``: run the calls as branches of one block; their results."""
        return self._branches.call(calls, max_concurrency)

    def sleep_until(self, fire_at: float) -> None:
        """``fluxo.sleep_until``: a durable timer that fires at ``fire_at`` (epoch seconds)."""
        self._waits.sleep_until(fire_at)

    def wait_for_signal(self, name: str, timeout: float | None, type: Any) -> Any:
        """``fluxo.wait_for_signal``: the payload of the oldest unconsumed signal ``name``."""
        return self._waits.wait_for_signal(name, timeout, type)

    def start_child(
        self,
        workflow: _definitions.Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> tuple[str, bool]:
        """``fluxo.start_child``: start a child run; return its id and "detached"."""
        return self._children.start(workflow, args, kwargs)

    def child_result(self, child: str, return_type: Any) -> Any:
        """``ChildHandle.result()``: the child's outcome, waited for durably and recorded."""
        return self._children.result(child, return_type)

    def cancel_child(self, child: str) -> None:
        """``ChildHandle.cancel()``: ask a child run to stop."""
        self._children.cancel(child)

    def continue_as_new(self, args: Sequence[Any], kwargs: dict[str, Any]) -> NoReturn:
        """``fluxo.continue_as_new``: end this run and go on in a fresh one of its chain."""
        self._children.continue_as_new(args, kwargs)

    def record_value(self, name: str, produce: Callable[[], Any], type: Any) -> Any:
        """Return a nondeterministic value, taken live once and replayed from history."""
        self._enter_durable_call()
        cursor = self._cursor
        call = f"{history.ValueRecorded.kind} {name}"
        event = cursor.match((history.ValueRecorded,), call, frozenset((name,)))
        if event is not None:
            return cursor.decode_recorded(call, event.data, type)
        data = self.codec.encode(produce())
        self._record(history.ValueRecorded(name, data))
        return self.codec.decode(data, type)

    def set_event(self, key: str, value: Any) -> None:
        """``fluxo.set_event``: record the value at once, or meet its record again."""
        self._enter_durable_call()
        call = f"{history.EventSet.kind} {key}"
        if self._cursor.match((history.EventSet,), call, frozenset((key,))) is not None:
            return
        self._go_live()
        try:
            data = self.codec.encode(value)
        except TypeError as exc:
            raise _errors.EncodeError(
                f"the value of event {key!r} cannot be encoded: {exc}; set JSON-friendly "
                "values (dataclasses, dicts, lists, str, numbers, datetimes...)"
            ) from exc
        self._record(history.EventSet(key, data))

    def info(self) -> _run_events.WorkflowInfo:
        """``fluxo.info()``: the same at one point of the code on every replay."""
        recorded = self._cursor.peek()
        here = recorded.seq if recorded is not None else self._cursor.next_seq
        return _run_events.workflow_info(
            run_id=self.run_id,
            workflow=self.workflow.name,
            retried_before=sum(seq < here for seq in self._retried_at),
            parent=self.parent,
            created_at=self.created_at,
            deadline=self.deadline,
            headers=self.headers,
        )

    def patched(self, change: str) -> bool:
        """``fluxo.patched``: True for runs that reach this point under the new code."""
        self._enter_durable_call()
        cursor = self._cursor
        recorded = cursor.peek()
        if recorded is not None:
            event = recorded.event
            if isinstance(event, history.PatchMarker) and event.name == change:
                cursor.pos += 1
                return True
            return False  # recorded before the change existed: keep the old branch
        self._record(history.PatchMarker(change))
        return True

    def deprecate_patch(self, change: str) -> None:
        """``fluxo.deprecate_patch``: accept an old marker of ``change`` where one is recorded."""
        self._enter_durable_call()
        cursor = self._cursor
        recorded = cursor.peek()
        if (
            recorded is not None
            and isinstance(recorded.event, history.PatchMarker)
            and recorded.event.name == change
        ):
            cursor.pos += 1

    def send_signal(self, run_id: str, name: str, payload: Any) -> None:
        """``fluxo.signal`` from a workflow: sent exactly once, whatever crashes in between."""
        self._enter_durable_call()
        cursor = self._cursor
        target = f"{run_id}/{name}"
        call = f"signal {target}"
        event = cursor.match((history.SignalSent,), call, frozenset((target,)))
        if event is not None:
            if event.data is not None:
                raise _errors.SignalError(cursor.decode_error(call, event.data).message)
            return
        self._go_live()
        data = self.codec.encode(payload)
        key = f"{self.run_id}:{cursor.next_seq}"  # the same key if a crash makes us send again
        try:
            self.store.send_signal(run_id, name, data, now=self.clock(), key=key)
        except (_errors.RunNotFoundError, _errors.RunStateError) as exc:
            info = self.codec.encode(_payloads.error_info(exc))
            self._record(history.SignalSent(target, info))
            raise _errors.SignalError(str(exc)) from None
        except _errors.StoreError as exc:
            self._store_failed(exc)
        observers = self.observers
        told = None
        if observers.signal_sent:
            sent = observe.RunEvent(
                kind="signal_sent",
                run_id=run_id,
                workflow="",
                time=self.clock(),
                name=name,
                other_run=self.run_id,
            )
            told = lambda: observers.emit(observers.signal_sent, sent)  # noqa: E731
        self._record(history.SignalSent(target), then=told)


_GUARD: Mapping[str, bool] = {"unless_cancel_requested": True}
_NO_GUARD: Mapping[str, bool] = {}
"""Passed to the store only when asked for, so that store wrappers written before it work."""
