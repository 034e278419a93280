"""Other runs: the child runs a run starts and awaits, the next run of its chain.

A child run is created (idempotent on its id, with this run as its parent) before
its ``child_started`` is recorded, so a crash in between finds the same child on
resume, never a second one. The child sends its outcome to its parent as a
signal as it ends; taking it records ``child_completed``, ``child_failed`` or
``child_cancelled`` in the parent's own history, so replay needs nothing of the
child's. ``fluxo.continue_as_new`` creates the next run of the chain the same
way, before recording ``continued_as_new``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from fluxo import (
    _errors,
    _fork,
    _names,
    _observers,
    _payloads,
    _queue_config,
    _queues,
    _runtime,
    history,
    stores,
)
from fluxo._executor import _control, _cursor

if TYPE_CHECKING:
    from fluxo import _definitions
    from fluxo._executor import _context

log = logging.getLogger(__name__)


def tell_parent(
    store: stores.Store, parent: str, outcome: _payloads.ChildOutcome, *, now: float, key: str
) -> None:
    """Send a child run's outcome to its parent, which wakes it; idempotent on ``key``.

    A parent that has finished (or is gone) no longer waits: nothing needs it then.
    """
    name = history.child_signal_name(history.chain_root(outcome.run))
    with contextlib.suppress(_errors.RunNotFoundError, _errors.RunStateError):
        store.send_signal(parent, name, msgspec.json.encode(outcome), now=now, key=key)


_CHILD_EVENTS: dict[str, type[history.Event]] = {
    "completed": history.ChildCompleted,
    "failed": history.ChildFailed,
    "cancelled": history.ChildCancelled,
}


_ENDS: tuple[type[history.Event], ...] = (
    history.WorkflowCompleted,
    *history.FAILURE_ENDS,
    history.WorkflowCancelled,
)


class Children:
    """The child runs of one execution, and the next run of its chain."""

    __slots__ = ("_ctx", "open", "started")

    def __init__(self, ctx: _context.RunContext) -> None:
        self._ctx = ctx
        self.open: dict[str, bool] = {}
        """Child runs started and not yet awaited, each mapped to "was started detached"."""
        self.started: set[str] = set()
        """Every child run this run started, awaited or not."""

    def start(
        self,
        wf: _definitions.Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: dict[str, Any],
    ) -> tuple[str, bool]:
        """``fluxo.start_child``: start ``wf`` as a child run; return its id and "detached".

        The child is created (idempotent on its id, with this run as its parent)
        before ``ChildStarted`` is recorded, so a crash in between finds the same
        child on resume, never a second one. Its id is the one given with
        ``wf.options(id=)``, else this run's id and the call's position.
        """
        ctx = self._ctx
        cursor = ctx._cursor
        data = wf.encode_input(ctx.codec, args, kwargs, "fluxo.start_child(): ")
        try:
            ctx._enter_durable_call()
        except _runtime.Cancelled:
            # The cancellation took this call's position, which names the child an
            # execution that crashed before recording its start may have created.
            if not wf.start_detached:
                self.cancel_unrecorded_child(
                    wf.start_id or history.child_id(ctx.run_id, ctx._cancel_seq)
                )
            raise
        call = f"start child workflow {wf.name}"
        recorded = cursor.peek()
        if recorded is not None:
            return self._replay_child_start(call, recorded, wf)
        ctx._go_live()
        detached = wf.start_detached
        child = wf.start_id or history.child_id(ctx.run_id, cursor.next_seq)
        _names.check_new_id_length(
            child, "the child run's id", f"give it a shorter one with {wf.name}.options(id=...)"
        )
        started = ctx.codec.encode(_payloads.ChildStart(wf.name, detached))  # before it exists
        if child in self.started:
            raise self._refuse_child(
                child,
                wf,
                detached,
                _errors.RunStateError(
                    f"this run already started a child run {child!r}; give each child its own id"
                ),
            )
        now = ctx.clock()
        deadline = None if wf.start_timeout is None else now + wf.start_timeout
        refused: _errors.RunStateError | None = None
        observers = ctx.observers
        headers = (
            observers.headers(wf.name, child, ctx.event("child_started", cursor.next_seq))
            if observers.active
            else None
        )
        try:
            run, created = ctx.store.create_run(
                child,
                wf.name,
                data,
                now=now,
                deadline=deadline,
                parent=ctx.run_id,
                headers=headers,
                **_queue_config.create_args(wf),
            )
        except _errors.RunIdConflictError as exc:
            refused = _errors.RunStateError(
                f"cannot start child workflow {wf.name!r} as run {child!r}: a run of workflow "
                f"{exc.existing!r} has that id; give the child another id"
            )
        except _errors.StoreError as exc:
            ctx._store_failed(exc)
        else:
            if not created and run.parent != ctx.run_id:
                refused = _errors.RunStateError(
                    f"cannot start child workflow {wf.name!r} as run {child!r}: that run exists "
                    "and was not started by this run; give the child another id"
                )
            elif not created and wf.start_if_exists == "check":
                self._check_created_input(wf, run, data, f"{call} as run {child}")
        if refused is not None:
            raise self._refuse_child(child, wf, detached, refused)
        self.open[child] = detached
        self.started.add(child)
        if ctx._child_started is not None:
            ctx._child_started(child, wf)  # it exists: it may run, whatever happens here next
        position = cursor.next_seq

        def tell() -> None:
            ctx.tell("child_started", position, other_run=child)
            if created and observers.run_started:
                event = _observers.told(run, "run_started", now, 0)
                observers.emit(observers.run_started, event)

        ctx._record(history.ChildStarted(child, started), then=tell if observers.active else None)
        return child, detached

    def _check_created_input(
        self, wf: _definitions.Workflow[Any, Any], run: history.RunInfo, data: bytes, call: str
    ) -> None:
        """Fail the run by a mismatch if an earlier execution created ``run`` with other input.

        Only an execution of this run that crashed before recording the start (of a
        child, or of the next run of its chain) creates the run a live call finds:
        the code then computed other arguments than that execution did, as changed
        or nondeterministic code does. The run fails with a ``NondeterminismError``
        naming them, and its history stays intact for a fix and ``engine.retry``.
        """
        ctx = self._ctx
        cursor = ctx._cursor
        try:
            conflict = wf.input_conflict(ctx.store, ctx.codec, run, data)
        except _errors.StoreError as exc:
            ctx._store_failed(exc)
        if conflict is None:
            return
        cursor.nondeterminism = _errors.NondeterminismError(
            ctx.run_id,
            cursor.next_seq,
            f"{call}, with the arguments the code computes now",
            f"nothing, but an execution of this run that crashed before recording it "
            f"created run {run.id!r} with other arguments",
            conflict.detail,
        )
        raise cursor.nondeterminism

    def cancel_unrecorded_child(self, child: str) -> None:
        """Cancel ``child`` if an execution of this run created it, then crashed unrecorded."""
        ctx = self._ctx
        if ctx._replay_only:
            return
        try:
            if ctx.store.get_run(child).parent == ctx.run_id:
                self._cancel_chain(child)
        except _errors.RunNotFoundError:
            pass  # the usual case: it was never created
        except _errors.StoreError as exc:
            ctx._store_failed(exc)

    def _refuse_child(
        self,
        child: str,
        wf: _definitions.Workflow[Any, Any],
        detached: bool,
        refused: _errors.RunStateError,
    ) -> _errors.RunStateError:
        """Record that a child could not be started, so replay raises the same; return it."""
        ctx = self._ctx
        start = _payloads.ChildStart(wf.name, detached, _payloads.error_info(refused))
        ctx._record(history.ChildStarted(child, ctx.codec.encode(start)))
        return refused

    def _replay_child_start(
        self, call: str, recorded: _cursor.Recorded, wf: _definitions.Workflow[Any, Any]
    ) -> tuple[str, bool]:
        ctx = self._ctx
        cursor = ctx._cursor
        event = recorded.event
        if not isinstance(event, history.ChildStarted):
            cursor.diverged(call, recorded)
        cursor.pos += 1
        start: _payloads.ChildStart = cursor.decode_recorded(call, event.data, _payloads.ChildStart)
        if ctx.observers.child_started:
            ctx.observers.emit(
                ctx.observers.child_started,
                ctx.event("child_started", recorded.seq, replayed=True, other_run=event.name),
            )
        if start.workflow not in wf.names:
            cursor.diverged(
                call, recorded, f"  the history's child is of workflow {start.workflow}"
            )
        if wf.start_id is not None and wf.start_id != event.name:
            cursor.diverged(
                f"{call} as run {wf.start_id}", recorded, "  the history's child has another id"
            )
        if start.error is not None:
            raise _errors.RunStateError(start.error.message)
        self.open[event.name] = start.detached
        self.started.add(event.name)
        return event.name, start.detached

    def result(self, child: str, return_type: Any) -> Any:
        """``ChildHandle.result()``: the child's outcome, waited for durably and recorded.

        The child sends its outcome to this run as a signal as it ends; taking it
        records ``ChildCompleted``/``ChildFailed``/``ChildCancelled`` here, so replay
        reads it from this run's own history and needs nothing of the child's.
        """
        ctx = self._ctx
        cursor = ctx._cursor
        ctx._enter_durable_call()
        call = f"result of child run {child}"
        signal = history.child_signal_name(child)
        event = cursor.match(history.CHILD_OUTCOMES, call, frozenset((child,)))
        if event is not None:
            ctx._waits.inbox.consume(signal)
        else:
            ctx._go_live()
            while (event := self._child_outcome(child, signal)) is None:
                ctx._waits.suspend([], None, timer=False, waits_for="child")
                ctx._cancel_point()
            ctx._record(event)
            ctx._waits.inbox.consume(signal)
        self.open.pop(child, None)
        if isinstance(event, history.ChildCompleted):
            return cursor.decode_recorded(call, event.data, return_type)
        if isinstance(event, history.ChildFailed):
            info = cursor.decode_error(call, event.data)
            if info.type == _payloads.MISMATCH:
                info.details = {}  # the child's mismatch, not this run's: a plain failure
            raise _payloads.workflow_error(child, info)
        reason = cursor.decode_recorded(call, event.data, str)
        if reason == "deadline":
            raise _errors.WorkflowTimeoutError(child)
        raise _errors.WorkflowCancelledError(child)

    def _child_outcome(self, child: str, signal: str) -> history.Event | None:
        """How the child ended, if it has: the event to record, or None while it runs.

        The child's latest outcome signal is the fast answer; the child run itself
        is the truth. It is read to settle what a signal cannot tell: an outcome
        that never arrived (it reached this run while it had failed, and an
        operator retried it since), a failure or cancellation that a retry or
        resumption of the child may have superseded, and a sender that lost its run
        to another worker.
        """
        ctx = self._ctx
        queue = ctx._waits.inbox.pending.get(signal)
        try:
            if not queue:
                run = stores.latest_run(ctx.store, child)
                return self._ended_child(child, run.id) if run.status.is_terminal else None
            try:
                outcome = msgspec.json.decode(queue[-1], type=_payloads.ChildOutcome)
                kind = _CHILD_EVENTS[outcome.kind]
            except (msgspec.DecodeError, KeyError) as exc:
                info = _payloads.ErrorInfo(
                    type="fluxo.CorruptedOutcome",
                    message=f"child run {child!r} sent an outcome that does not decode ({exc})",
                )
                return history.ChildFailed(child, ctx.codec.encode(info))
            sender = outcome.run or child
            run = ctx.store.get_run(sender)
            if run.status.is_terminal:
                if run.status.value == outcome.kind:
                    return kind(child, outcome.data)
                return self._ended_child(child, sender)  # it ended otherwise: the truth
            if kind is history.ChildCompleted and run.cancel_requested:
                return self._completion_if_kept(child, sender, outcome)
            if kind is history.ChildCompleted:
                return kind(child, outcome.data)  # sent just before its end was recorded
            # A failure or a cancellation, and the run is going again: retried or resumed
            # since (that end is superseded), or just about to record it.
            try:
                events = ctx.store.load(sender).events
            except _errors.HistoryCorruptError:
                return kind(child, outcome.data)  # a damaged run is failed as it is
            retries = sum(isinstance(e, history.RunRetried) for e in events)
            return kind(child, outcome.data) if retries == outcome.retries else None
        except _errors.RunNotFoundError:
            return None  # not created yet: its parent crashed and starts it again
        except _errors.StoreError as exc:
            ctx._store_failed(exc)

    def _completion_if_kept(
        self, child: str, sender: str, outcome: _payloads.ChildOutcome
    ) -> history.Event | None:
        """A child sent "completed" and has a pending cancellation: will its end stand?

        Only if the child saw its cancellation (caught ``fluxo.Cancelled``, so its
        history holds ``cancel_requested`` since it was last resumed or retried).
        Otherwise the store refuses to record the completion and the child ends
        cancelled, telling this run again: wait.
        """
        ctx = self._ctx
        state = ctx.store.load(sender)
        if state.run.status.is_terminal:
            return self._ended_child(child, sender)
        since = state.events
        for seq in range(len(since) - 1, -1, -1):
            if isinstance(since[seq], history.RunRetried):
                since = since[seq + 1 :]
                break
        if any(isinstance(e, history.CancelRequested) for e in since):
            return history.ChildCompleted(child, outcome.data)
        return None

    def _ended_child(self, child: str, run_id: str) -> history.Event:
        """The outcome of a finished child run, read from its own history."""
        ctx = self._ctx
        try:
            events = ctx.store.load(run_id).events
        except _errors.HistoryCorruptError as exc:  # failed for it, if it ran since
            return history.ChildFailed(child, ctx.codec.encode(_payloads.error_info(exc)))
        end = next((e for e in reversed(events) if isinstance(e, _ENDS)), events[-1])
        if isinstance(end, history.WorkflowCompleted):
            return history.ChildCompleted(child, end.data)
        if isinstance(end, history.FAILURE_ENDS):  # failed, or dead
            return history.ChildFailed(child, end.data)
        return history.ChildCancelled(child, ctx.codec.encode(end.name or "cancelled"))

    def cancel(self, child: str) -> None:
        """``ChildHandle.cancel()``: ask a child run to stop (idempotent, so not recorded)."""
        ctx = self._ctx
        cursor = ctx._cursor
        ctx._enter_durable_call()
        if cursor.replaying or ctx._replay_only:
            return  # asked already: this run recorded more after asking
        try:
            self._cancel_chain(child)
        except _errors.StoreError as exc:
            ctx._store_failed(exc)

    def _cancel_chain(self, run_id: str) -> None:
        """Cancel a run, or the latest run of its chain if it continued as new."""
        ctx = self._ctx
        now = ctx.clock()
        run = ctx.store.request_cancel(run_id, now=now)
        while run.status is history.RunStatus.COMPLETED:
            try:
                run = ctx.store.request_cancel(history.chain_next(run.id), now=now)
            except _errors.RunNotFoundError:
                return
        _queues.admit_cancelled(ctx.store, run, now=now)  # ended at once, not after a wait

    def cancel_children(self) -> None:
        """Cancel the children started without ``detached`` that this run has not awaited."""
        ctx = self._ctx
        if ctx._replay_only:
            return
        for child, detached in list(self.open.items()):
            if detached:
                continue
            try:
                self._cancel_chain(child)
            except _errors.RunNotFoundError:
                pass
            except _errors.StoreError as exc:
                ctx._store_failed(exc)

    def end_children(self) -> None:
        """As the run ends: its children that are not detached end with it."""
        ctx = self._ctx
        attached = [child for child, detached in self.open.items() if not detached]
        if attached and not ctx._cancel_delivered:
            log.warning(
                "run %s ends without waiting for its child runs %s; they are cancelled "
                "(start a child with .options(detached=True) to let it outlive its parent)",
                ctx.run_id,
                ", ".join(attached),
                extra={"fluxo_run_id": ctx.run_id},
            )
        self.cancel_children()

    def tell_parent_of(self, end: history.Event, *, again: bool = False) -> None:
        """Send this child run's outcome to its parent, before the end is recorded.

        A held step record is written before it (the outcome may come from the step).

        Keyed by this run and its operator retries, so the copy a resumed run sends
        again is dropped, while a retried run's new outcome is not. ``again``: the
        cancellation that replaces a completion the store refused to record (the
        completion was sent already), under a key of its own.
        """
        ctx = self._ctx
        if ctx.parent is None:
            return
        if ctx._held:
            # First: the parent may take the outcome before the end is recorded, so
            # what it takes must follow from the recorded history alone.
            ctx._write_held()
        run, retries = ctx.run_id, ctx.retries
        if isinstance(end, history.WorkflowCompleted):
            outcome = _payloads.ChildOutcome("completed", end.data, run, retries)
        elif isinstance(end, history.WorkflowFailed):
            outcome = _payloads.ChildOutcome("failed", end.data, run, retries)
        else:
            reason = ctx.codec.encode(end.name or "cancelled")
            outcome = _payloads.ChildOutcome("cancelled", reason, run, retries)
        key = f"{history.SIGNAL_PREFIX}{run}:{retries}"  # once per run and operator retry
        if again:
            key += ":cancelled"
        try:
            tell_parent(ctx.store, ctx.parent, outcome, now=ctx.clock(), key=key)
        except _errors.StoreError as exc:
            ctx._store_failed(exc)

    def continue_as_new(self, args: Sequence[Any], kwargs: dict[str, Any]) -> NoReturn:
        """``fluxo.continue_as_new``: end this run and go on in a fresh one of its chain.

        The next run is created first (idempotent on its id, which follows from
        this run's), then ``ContinuedAsNew`` ends this run. A crash in between
        leaves a created next run and an unfinished current one; resuming the
        current one meets the same call, finds the next run created, and records
        the end, so the chain neither breaks nor forks.
        """
        ctx = self._ctx
        cursor = ctx._cursor
        wf = ctx.workflow
        next_id = history.chain_next(ctx.run_id)
        _names.check_new_id_length(
            next_id,
            "fluxo.continue_as_new(): the next run's id",
            "start the workflow with a shorter id",
        )
        data = wf.encode_input(ctx.codec, args, kwargs, "fluxo.continue_as_new(): ")
        try:
            ctx._enter_durable_call()
        except _runtime.Cancelled:
            self.cancel_next(next_id)  # created by an execution that crashed before its end
            raise
        call = f"continue_as_new {next_id}"
        if cursor.match((history.ContinuedAsNew,), call, frozenset((next_id,))) is not None:
            ctx._unwind(_control.ReplayEnd() if ctx._replay_only else _control.Continued())
        ctx._go_live()
        try:
            self.end_children()  # a run's children end with it, as they would at any end
            run, created = ctx.store.create_run(
                next_id,
                wf.name,
                data,
                now=ctx.clock(),
                deadline=ctx.deadline,
                parent=ctx.parent,  # the chain is one child of the same parent
                headers=_fork.passed_on(ctx.headers) or None,  # the chain is one trace
                **_queue_config.create_args(wf, inherited=ctx.queued_as),
            )
            if not created:
                self._check_created_input(wf, run, data, call)
        except _errors.RunIdConflictError as exc:
            raise _errors.RunStateError(
                f"fluxo.continue_as_new(): run {next_id!r} exists and belongs to workflow "
                f"{exc.existing!r}; the chain cannot go on"
            ) from None
        except _errors.StoreError as exc:
            ctx._store_failed(exc)
        end = history.ContinuedAsNew(next_id)
        if ctx._cancel_delivered and ctx.shared.cancel_requested.is_set():
            self._pass_on_cancel(next_id)  # it caught fluxo.Cancelled: the chain stays cancelled
        try:
            ctx._record(
                end,
                history.RunStatus.COMPLETED,
                None,
                unless_cancel_requested=not ctx._cancel_delivered,
            )
        except _errors.CancelPendingError:
            # engine.cancel flags the latest run of a chain: this one, until its end is
            # recorded. The chain goes on cancelled: the next run ends before it begins.
            self._pass_on_cancel(next_id)
            ctx._record(end, history.RunStatus.COMPLETED, None)
        ctx._unwind(_control.Continued())

    def _pass_on_cancel(self, next_id: str) -> None:
        """Cancel the next run of the chain before this run's end is recorded.

        Before, so that a crash in between leaves this run to resume and pass the
        cancellation on again; a store failure stops the run the same way.
        """
        ctx = self._ctx
        try:
            run = ctx.store.request_cancel(next_id, now=ctx.clock())
            _queues.admit_cancelled(ctx.store, run, now=ctx.clock())
        except _errors.StoreError as exc:
            ctx._store_failed(exc)

    def cancel_next(self, next_id: str) -> None:
        ctx = self._ctx
        if ctx._replay_only:
            return
        # Not created (the usual case), or the store is down: nothing to pass on.
        with contextlib.suppress(_errors.RunNotFoundError, _errors.StoreError):
            run = ctx.store.request_cancel(next_id, now=ctx.clock())
            _queues.admit_cancelled(ctx.store, run, now=ctx.clock())
