"""How an execution ends: the workflow function's end becomes the outcome and the run's last record.

The function returns, raises, or is unwound by control flow. A return is
recorded as ``workflow_completed`` (unless a cancellation is pending, which ends
the run cancelled instead), an exception as ``workflow_failed``, a delivered
cancellation as ``workflow_cancelled``; control flow (a suspension, a shutdown, a
lost lease) records nothing more. Under ``replay_only`` nothing is recorded: the
history must end the way the code just did.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluxo import _aio, _errors, _payloads, _runtime, history
from fluxo._executor import _control

if TYPE_CHECKING:
    from fluxo import _definitions
    from fluxo._executor import _context

log = logging.getLogger(__name__)

WorkflowRunner = Callable[
    ["_definitions.Workflow[Any, Any]", Sequence[Any], Mapping[str, Any]], Any
]
"""Calls a run's workflow function for one execution: ``(workflow, args, kwargs) -> result``."""


def call_workflow_function(
    workflow: _definitions.Workflow[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """The :data:`WorkflowRunner` of a real run: call the workflow's own function."""
    return workflow.fn(*args, **kwargs)


class Ending:
    """Runs the workflow function of one execution and settles how it ended."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: _context.RunContext) -> None:
        self._ctx = ctx

    def run(self) -> _control.Outcome:
        """Call the workflow function and settle how it ended (see :meth:`RunContext.execute`)."""
        ctx = self._ctx
        cursor = ctx._cursor
        wf = ctx.workflow
        # A run cancelled (or past its deadline) before it ever ran ends without
        # running user code.
        if not cursor.script and cursor.next_seq == 1 and ctx._cancel_due():
            return self._finish_cancelled(record_request=True)
        data = ctx.started.data or b"{}"
        try:
            packed = ctx.codec.decode(data, wf.input_type())
            args, kwargs = wf.unpack_input(packed)
        except Exception as error:  # a custom codec's own errors too: the input never decodes
            exc = error
            if isinstance(exc, _errors.DecodeError) or not isinstance(exc, _errors.FluxoError):
                exc = _errors.DecodeError(wf.input_problem(ctx.codec, data, error))
            if ctx._replay_only:
                cursor.nondeterminism = _errors.NondeterminismError(
                    ctx.run_id, 0, f"workflow {wf.name}", "its recorded input", f"  {exc}"
                )
            return self._finish_failed(exc)
        try:
            value = ctx._workflow_runner(wf, args, kwargs)
            if ctx.is_async and inspect.iscoroutine(value):  # (a stub may return a value)
                value = _aio.run_workflow(value)
        except (_runtime.ControlFlow, Exception) as exc:
            return self._ended_by(exc)
        if ctx._unwinding is not None:
            return self._unwound()  # user code swallowed control flow; honour it anyway
        if cursor.nondeterminism is not None:
            return self._finish_failed(cursor.nondeterminism)
        if self._recorded_end(history.WorkflowCompleted) or self._recorded_late_cancel():
            return _control.Outcome.REPLAYED
        if cursor.replaying:
            return self._leftover("the workflow returned")
        try:
            data = ctx.codec.encode(value)
            ctx.codec.decode(data, wf.return_type)
        except (TypeError, _errors.DecodeError) as exc:
            err = _errors.EncodeError(
                f"workflow {wf.name!r} returned a value of type "
                f"{type(value).__module__}.{type(value).__qualname__} that cannot be recorded "
                f"as its annotated return type ({exc})"
            )
            return self._finish_failed(err)
        return self._finish(history.WorkflowCompleted(data=data), history.RunStatus.COMPLETED)

    def _ended_by(self, exc: BaseException) -> _control.Outcome:
        """Settle a run whose workflow function raised ``exc``."""
        ctx = self._ctx
        cursor = ctx._cursor
        if ctx._unwinding is not None:
            # Suspension, a lost lease or a shutdown is under way: whatever user code
            # raised while unwinding (a finally: that failed), record nothing.
            return self._unwound()
        if cursor.nondeterminism is not None:
            return self._finish_failed(cursor.nondeterminism)
        if isinstance(exc, _runtime.Cancelled):
            if self._recorded_end(history.WorkflowCancelled):
                return _control.Outcome.REPLAYED
            if cursor.replaying:
                return self._leftover("the workflow ended cancelled")
            return self._finish_cancelled(record_request=False)
        if self._recorded_end(history.WorkflowFailed):
            return _control.Outcome.REPLAYED
        if cursor.replaying:
            return self._leftover(f"the workflow raised {type(exc).__name__}: {exc}")
        return self._finish_failed(exc)

    def _recorded_end(self, kind: type[history.Event]) -> bool:
        """``replay_only``: the history ends the way the code just ended; consume it."""
        ctx = self._ctx
        cursor = ctx._cursor
        if not ctx._replay_only or cursor.pos != len(cursor.script) - 1:
            return False
        if not isinstance(cursor.script[cursor.pos].event, kind):
            return False
        cursor.pos += 1
        return True

    def _recorded_late_cancel(self) -> bool:
        """``replay_only``: the function returned, and the history ends cancelled right here.

        That is how a run ends that was cancelled after its function returned and
        before its completion was recorded (see ``_cancelled_at_the_end``).
        """
        ctx = self._ctx
        cursor = ctx._cursor
        if not ctx._replay_only or cursor.pos != len(cursor.script) - 2:
            return False
        request, end = (r.event for r in cursor.script[cursor.pos :])
        if not isinstance(request, history.CancelRequested):
            return False
        if not isinstance(end, history.WorkflowCancelled):
            return False
        cursor.pos += 2
        return True

    def _unwound(self) -> _control.Outcome:
        """The outcome of an execution unwound by control flow (a rejected record fails it)."""
        unwinding = self._ctx._unwinding
        if isinstance(unwinding, _control.Rejected):
            return self._finish_rejected()
        return _control.outcome_of(unwinding)

    def _finish_rejected(self) -> _control.Outcome:
        """Fail the run whose record the store refused for good, once, where it stopped."""
        ctx = self._ctx
        cursor = ctx._cursor
        ctx._rejected = True
        ctx._unwinding = None
        reason = _payloads.recordable(str(ctx.store_error))
        if len(reason) > _payloads.REASON_LIMIT:
            reason = reason[: _payloads.REASON_LIMIT] + "..."
        error = _errors.StoreRejectedError(
            f"run {ctx.run_id!r} stopped at position {cursor.next_seq}: the store refused "
            f"what the run had to record there, and would refuse it again ({reason})"
        )
        log.error("%s; the run is failed", error, extra={"fluxo_run_id": ctx.run_id})
        return self._finish_failed(error)

    def _leftover(self, what: str) -> _control.Outcome:
        ctx = self._ctx
        cursor = ctx._cursor
        try:
            cursor.diverged(what, cursor.peek())
        except _errors.NondeterminismError as exc:
            return self._finish_failed(exc)

    def _finish(self, event: history.Event, status: history.RunStatus) -> _control.Outcome:
        ctx = self._ctx
        cursor = ctx._cursor
        if ctx._replay_only and cursor.nondeterminism is not None:
            return _control.Outcome.FAILED  # reported through ctx.error; nothing is recorded
        # A completion is refused while a cancellation the function never saw is
        # pending; one that it saw (and caught) lets it complete.
        guarded = isinstance(event, history.WorkflowCompleted) and not ctx._cancel_delivered
        try:
            if not ctx._replay_only:
                # Both before the end is recorded: a crash in between redoes them, and
                # each is idempotent. A run failed by a mismatch is meant to be fixed
                # and retried (engine.retry): its children go on meanwhile.
                if cursor.nondeterminism is None:
                    ctx._children.end_children()
                ctx._children.tell_parent_of(event)
            ctx._record(event, status=status, ready_at=None, unless_cancel_requested=guarded)
        except _errors.CancelPendingError:
            return self._cancelled_at_the_end()
        except _runtime.ControlFlow:
            return self._unwound()
        if isinstance(event, history.WorkflowCompleted):
            ctx.result = event.data
            return _control.Outcome.COMPLETED
        return (
            _control.Outcome.CANCELLED
            if status is history.RunStatus.CANCELLED
            else _control.Outcome.FAILED
        )

    def _cancelled_at_the_end(self) -> _control.Outcome:
        """End the run cancelled: it was cancelled after its function returned.

        The store refused to record the completion because a cancellation was
        accepted first (``engine.cancel`` returned for a running run), so the run
        ends as if the function had been cancelled at its next durable call: the
        cancellation and the end are recorded at this position, in one write, and
        the parent is told (its children were already cancelled by ``_finish``).
        """
        ctx = self._ctx
        cursor = ctx._cursor
        try:
            if ctx._held:
                ctx._write_held()  # first: the cancellation is recorded after it
        except _runtime.ControlFlow:
            return self._unwound()
        ctx.cancel_reason = "cancelled"
        ctx._cancel_seq = cursor.next_seq
        ctx._cancel_delivered = True
        end = history.WorkflowCancelled(ctx.cancel_reason)
        log.info(
            "run %s: cancelled after its workflow returned, before its completion was recorded",
            ctx.run_id,
            extra={"fluxo_run_id": ctx.run_id},
        )
        try:
            ctx._children.tell_parent_of(end, again=True)
            ctx._record_many(
                (history.CancelRequested(ctx.cancel_reason), end),
                status=history.RunStatus.CANCELLED,
                ready_at=None,
            )
        except _runtime.ControlFlow:
            return self._unwound()
        return _control.Outcome.CANCELLED

    def _finish_failed(self, exc: BaseException) -> _control.Outcome:
        ctx = self._ctx
        ctx.error = _payloads.error_info(exc)
        if isinstance(exc, _errors.NondeterminismError) and not ctx._replay_only:
            log.error("%s", exc, extra={"fluxo_run_id": ctx.run_id})
        return self._finish(
            history.WorkflowFailed(data=ctx.codec.encode(ctx.error)), history.RunStatus.FAILED
        )

    def _finish_cancelled(self, *, record_request: bool) -> _control.Outcome:
        ctx = self._ctx
        cursor = ctx._cursor
        if record_request:  # cancelled before any durable call was recorded
            ctx.cancel_reason = ctx._cancel_due()
            ctx._cancel_seq = cursor.next_seq
            try:
                ctx._record(history.CancelRequested(ctx.cancel_reason))
                # An execution that crashed at once may have created its first child,
                # or the next run of its chain.
                ctx._children.cancel_unrecorded_child(history.child_id(ctx.run_id, ctx._cancel_seq))
                ctx._children.cancel_next(history.chain_next(ctx.run_id))
            except _runtime.ControlFlow:
                return self._unwound()
        return self._finish(
            history.WorkflowCancelled(ctx.cancel_reason or "cancelled"),
            history.RunStatus.CANCELLED,
        )
