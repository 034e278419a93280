"""Sagas: undo what a workflow did when it cannot finish.

A saga is a block of workflow code in which each step that changes the world
registers the step that undoes it. If the block fails, the registered steps run
as ordinary durable steps, newest first, and the failure goes on up. Because a
compensation is a step, it is recorded like any other: a run that crashes while
compensating resumes with the compensations it had not finished, and the ones
already recorded do not run again.
"""

from __future__ import annotations

import contextvars
from types import TracebackType
from typing import Any, TypeAlias

from typing_extensions import ParamSpec

from fluxo import _definitions, _errors, _runtime, _workflow_api

P = ParamSpec("P")

_Compensation: TypeAlias = "_definitions.Call[Any]"
"""A registered compensation: the step, and the arguments to call it with."""

_innermost: contextvars.ContextVar[Saga | None] = contextvars.ContextVar("fluxo_saga", default=None)


class Saga:
    """The compensations of one ``with fluxo.saga()`` block; see :func:`saga`."""

    def __init__(self) -> None:
        self._compensations: list[_Compensation] = []
        self._state = "new"
        self._context: _runtime.Runtime | None = None
        self._parent: Saga | None = None
        self._token: contextvars.Token[Saga | None] | None = None

    def __repr__(self) -> str:
        count = len(self._compensations)
        return f"<fluxo.Saga {self._state}, {count} compensation{'' if count == 1 else 's'}>"

    def compensate_with(
        self, step: _definitions.Step[P, Any], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Register ``step(*args, **kwargs)`` to run if the saga's block fails.

        Call it right after the step it undoes has succeeded. The arguments are
        kept as given, not recorded: a resumed run registers them again as it
        replays the block, from the same recorded results.

        Raises:
            DefinitionError: ``step`` is not a ``@fluxo.step``, the arguments do not
                fit its signature, or the saga's ``with`` block is not running.
        """
        if not isinstance(step, _definitions.Step):
            what = "a workflow" if isinstance(step, _definitions.Workflow) else repr(step)
            raise _errors.DefinitionError(
                f"saga.compensate_with() takes a @fluxo.step, not {what}: a compensation "
                "is recorded like any step, so that a run resumed after a crash never "
                "undoes the same thing twice"
            )
        if self._state != "open":
            when = "before its with block began" if self._state == "new" else "after it ended"
            raise _errors.DefinitionError(
                f"saga.compensate_with() was called {when}; register compensations inside "
                "the block: with fluxo.saga() as saga: ..."
            )
        try:
            call = step.bind(*args, **kwargs)
        except _errors.DefinitionError as exc:
            raise _errors.DefinitionError(
                f"compensation {step.name!r} registered with arguments that do not fit: {exc}"
            ) from None
        self._compensations.append(call)

    def __enter__(self) -> Saga:
        self._open()
        if self._context is not None and self._context.is_async:
            self._end_block()
            raise _errors.DefinitionError(
                f"async workflow {self._context.workflow_name!r} opens a saga with 'with'; "
                "write 'async with fluxo.saga() as saga:' so that its compensations are awaited"
            )
        return self

    async def __aenter__(self) -> Saga:
        self._open()
        if self._context is not None and not self._context.is_async:
            self._end_block()
            raise _errors.DefinitionError(
                "'async with fluxo.saga()' is for async workflows; sync workflow "
                f"{self._context.workflow_name!r} writes 'with fluxo.saga() as saga:'"
            )
        return self

    def _open(self) -> None:
        if self._state != "new":
            raise _errors.DefinitionError(
                "a saga runs one with block; call fluxo.saga() again for another"
            )
        self._state = "open"
        self._context = _runtime.current()
        self._parent = _innermost.get()
        self._token = _innermost.set(self)

    def _end_block(self) -> None:
        """Close the saga's block: it is no longer the innermost one."""
        if self._token is not None:
            _innermost.reset(self._token)
            self._token = None
        self._state = "closed"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        compensations = self._close(exc)
        if compensations:
            assert exc is not None
            state = _Compensating()
            for call in compensations:
                while True:
                    try:
                        call.step(*call.args, **call.kwargs)
                    except (_runtime.Cancelled, Exception) as failure:
                        if state.again(call, failure):
                            continue
                    break
            state.end(exc)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        compensations = self._close(exc)
        if compensations:
            assert exc is not None
            state = _Compensating()
            for call in compensations:
                step = call.step
                while True:
                    try:
                        made = (
                            step(*call.args, **call.kwargs)
                            if step.is_async
                            else step.call_async(*call.args, **call.kwargs)
                        )
                        await made
                    except (_runtime.Cancelled, Exception) as failure:
                        if state.again(call, failure):
                            continue
                    break
            state.end(exc)

    def _close(self, exc: BaseException | None) -> list[_Compensation]:
        """End the block; the compensations to run, newest first (none: nothing to undo)."""
        self._end_block()
        compensations, self._compensations = self._compensations, []
        if exc is None:
            parent = self._parent
            if parent is not None and parent._state == "open" and parent._context is self._context:
                parent._compensations.extend(compensations)  # undone if the outer saga fails
            return []
        if not _compensates_for(exc) or not compensations:
            return []
        _workflow_api.logger.info(
            "saga: %s: %s; running %d compensation%s",
            type(exc).__name__,
            exc,
            len(compensations),
            "" if len(compensations) == 1 else "s",
        )
        return list(reversed(compensations))


class _Compensating:
    """What running a saga's compensations met: their failures, and a cancellation.

    Each compensation runs once. A cancellation that arrives while compensating
    does not stop it: the compensation it interrupted is called again (it had
    not begun, or it waited for a retry), and the rest follow.
    """

    def __init__(self) -> None:
        self.failures: list[Exception] = []
        self.cancelled: _runtime.Cancelled | None = None

    def again(self, call: _Compensation, failure: BaseException) -> bool:
        """Take what compensation ``call`` raised; True: call it again."""
        if isinstance(failure, _runtime.Cancelled):
            if self.cancelled is not None:
                raise failure  # delivered once per execution; never loop on it
            self.cancelled = failure
            return True
        if isinstance(failure, _errors.NondeterminismError) or not isinstance(failure, Exception):
            raise failure
        _workflow_api.logger.warning("saga: compensation %s failed: %s", call.step.name, failure)
        self.failures.append(failure)
        return False

    def end(self, exc: BaseException) -> None:
        """After the compensations: raise what the block ends with, if not ``exc`` itself."""
        failures, arrived = self.failures, self.cancelled
        cancelled = arrived is not None or isinstance(exc, _runtime.Cancelled)
        if cancelled and failures:
            # Cancellation stays control flow that no except Exception: can catch, so
            # the failures are told here; each is in the history as a failed step.
            _workflow_api.logger.error(
                "saga: the run was cancelled and %s", _errors.CompensationError(exc, failures)
            )
        if arrived is not None:
            raise arrived
        if failures and not cancelled:
            raise _errors.CompensationError(exc, failures) from exc


def _compensates_for(exc: BaseException) -> bool:
    """Tell whether a saga undoes its work when its block raises ``exc``.

    An exception of the workflow's own, or a cancellation, ends the run, so the
    saga compensates. A mismatch with the history is not a failure of the run
    but of the code: nothing is undone, and the run resumes after a fix. Other
    control flow (a wait, a shutdown, a crash) only pauses the run.
    """
    if isinstance(exc, _errors.NondeterminismError):
        return False
    return isinstance(exc, (Exception, _runtime.Cancelled))


def saga() -> Saga:
    """Open a saga: ``with fluxo.saga() as saga:``, then register compensations in it.

    After each step that changes something, register the step that undoes it
    with :meth:`Saga.compensate_with`. If the block raises, the registered
    steps run newest first, each a recorded step (a resumed run skips the ones
    already recorded), and then the exception goes on up. If it finishes
    normally, nothing is undone; inside an enclosing saga of the same workflow,
    its compensations join that saga's, to be undone if the enclosing block fails.

    * A failing compensation does not stop the others. Once all have run, a
      :class:`CompensationError` carrying the original failure and each
      compensation failure is raised, chained to the original.
    * ``fluxo.Cancelled`` (``engine.cancel()`` or a workflow timeout) compensates
      too, and the run then ends cancelled. A cancellation that arrives while
      compensating waits until every compensation has run. Compensation failures
      during a cancellation are recorded in the history and logged; the run
      still ends cancelled.
    * A wait, a shutdown, a crash or a ``NondeterminismError`` undoes nothing:
      the run is not over, it resumes later.
    * Outside a workflow the compensations are plain calls, as steps are.
    * In an ``async def`` workflow, write ``async with fluxo.saga() as saga:``; the
      compensations (``async def`` or plain steps) are awaited one at a time.

    Example:
        >>> @fluxo.workflow
        ... def book_trip(trip: Trip) -> str:
        ...     with fluxo.saga() as saga:
        ...         flight = book_flight(trip)
        ...         saga.compensate_with(cancel_flight, flight.id)
        ...         hotel = book_hotel(trip)
        ...         saga.compensate_with(cancel_hotel, hotel.id)
        ...         charge(trip.customer, flight.cents + hotel.cents)  # raises: both undone
        ...     return flight.id
    """
    return Saga()
