"""Every exception Fluxo raises, rooted at :class:`FluxoError`.

The tree::

    FluxoError
    ├── DefinitionError          a @workflow/@step or an Engine argument is unusable
    ├── UnknownWorkflowError     a run names a workflow this engine was not given
    ├── RunNotFoundError         no run has this id
    ├── RunIdConflictError       the id is taken by a run of another workflow or arguments
    ├── RunNotFinishedError      a run's result was asked for before it finished (timeout)
    ├── RunStateError            the run is in a state that forbids the operation
    │   └── CancelPendingError   a store refused to record an end: the run's cancellation is pending
    ├── CodecError
    │   ├── EncodeError          a value cannot be encoded (names the step and the type)
    │   └── DecodeError          stored bytes do not decode to the annotated type
    ├── NondeterminismError      the workflow code no longer matches its history
    │   └── ReplayMismatchError  ... found by replaying a recorded history (with a diff)
    ├── HistoryFormatError       an exported history document is malformed or too new
    ├── HistoryCorruptError      a stored history (or run record) is damaged: cannot replay
    ├── StepError                a step failed for good (after its retries)
    ├── StepTimeout              a step attempt ran past its ``timeout=`` (then retried or failed)
    ├── CompensationError        a saga's compensations failed too (carries the original error)
    ├── SignalTimeout            wait_for_signal's timeout passed first
    ├── SignalError              fluxo.signal() could not deliver (no such run, finished)
    ├── EventTimeout             get_event/watch_event waited its timeout for a value
    ├── WorkflowFailedError      a run ended failed; raised by ``handle.result()``
    │   └── RunDiedError         ... dead: its executions kept dying (``max_recoveries``)
    ├── WorkflowCancelledError   a run ended cancelled; raised by ``handle.result()``
    │   └── WorkflowTimeoutError  ... because it passed its deadline (``timeout=``)
    └── StoreError
        ├── StoreUnavailableError  the database or server cannot be reached (transient)
        ├── StoreRejectedError     the store refuses this data for good (too large...)
        └── SequenceConflictError  another writer recorded this position first

Control flow inside a workflow (suspension, cancellation) uses ``BaseException``
subclasses (``fluxo._runtime.ControlFlow``) so that ``except Exception:`` in user
code cannot swallow it.
"""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from typing import Any, Final

DETERMINISM_DOCS = "docs/determinism.md in the Fluxo repository"

_LONG: Final = 60
"""A string longer than this is shortened where a message quotes it (see :func:`quoted`)."""
_QUOTED = reprlib.Repr()
_QUOTED.maxstring = _QUOTED.maxother = _LONG


def quoted(value: object) -> str:
    """``repr(value)`` for a message: a long string as its first 40 characters and its length.

    An id or name a user got wrong may be thousands of characters long; an error
    quotes enough of it to recognize: ``'LLLL...'... (5000 characters)``.
    """
    if isinstance(value, str) and len(value) > _LONG:
        return f"{value[:40]!r}... ({len(value)} characters)"
    return _QUOTED.repr(value)


class FluxoError(Exception):
    """Base class of every Fluxo error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class DefinitionError(FluxoError, TypeError):
    """A workflow, step or engine definition is unusable."""


class UnknownWorkflowError(FluxoError, LookupError):
    """The run names a workflow this engine does not know."""


class RunNotFoundError(FluxoError, LookupError):
    """No run has this id."""

    def __init__(self, run_id: str, hint: str = "") -> None:
        self.run_id = run_id
        self.hint = hint
        super().__init__(f"no run with id {quoted(run_id)}" + (f"; {hint}" if hint else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.hint))


class RunIdConflictError(FluxoError):
    """A run with this id already exists, of another workflow or with other arguments.

    Attributes:
        run_id: the id asked for.
        existing: the workflow of the run that has the id.
        requested: the workflow asked for.
        arguments: the names of the arguments that differ from the existing run's,
            when the workflows are the same (empty when they could not be told apart
            by name: the stored input no longer decodes).
        detail: each differing argument as ``name: stored ... != given ...``.
    """

    def __init__(
        self,
        run_id: str,
        existing: str,
        requested: str,
        *,
        arguments: Sequence[str] = (),
        detail: str = "",
    ) -> None:
        self.run_id = run_id
        self.existing = existing
        self.requested = requested
        self.arguments = tuple(arguments)
        self.detail = detail
        if existing != requested:
            message = (
                f"run id {run_id!r} is taken by a run of workflow {existing!r}, so it cannot "
                f"start workflow {requested!r}; choose another id"
            )
        else:
            names = ", ".join(self.arguments) or "its arguments"
            verb = "differs" if len(self.arguments) == 1 else "differ"
            message = (
                f"run id {run_id!r} is taken by a run of workflow {existing!r} started with "
                f"other arguments ({names} {verb}), so starting it again would return a result "
                "of other arguments; "
                "choose another id, or pass .options(id=..., if_exists='return') to get the "
                "existing run whatever its arguments"
            )
            if detail:
                message = f"{message}\n{detail}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.run_id, self.existing, self.requested)
        return (_rebuild_run_id_conflict, (fields, self.arguments, self.detail))


def _rebuild_run_id_conflict(
    fields: tuple[str, str, str], arguments: tuple[str, ...], detail: str
) -> RunIdConflictError:
    return RunIdConflictError(*fields, arguments=arguments, detail=detail)


class RunNotFinishedError(FluxoError, TimeoutError):
    """The run did not finish within the time given."""


class RunStateError(FluxoError):
    """The run's current status does not allow this operation."""


def damaged_run(run_id: str, damage: str | None, verb: str) -> RunStateError:
    """The error for an operation refused because the run's stored record is damaged."""
    return RunStateError(
        f"run {run_id!r} cannot be {verb}: its record in the store is damaged "
        f"({damage}), and Fluxo leaves it as it is: repair the record in the store "
        "by hand, or delete it (see docs/history-format.md, 'Damaged histories')"
    )


class CancelPendingError(RunStateError):
    """The store refused to record events: a cancellation of the run is pending.

    Raised by ``Store.append(..., unless_cancel_requested=True)`` when the run's
    ``cancel_requested`` flag is set; nothing was written. The executor then
    records the cancellation at that position instead of the run's end.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} has a pending cancellation, so its end was not recorded as asked"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id,))


class CodecError(FluxoError):
    """A value could not be encoded or decoded."""


class EncodeError(CodecError, TypeError):
    """A value cannot be encoded by the codec."""


class DecodeError(CodecError, ValueError):
    """Stored bytes cannot be decoded to the expected type."""


class NondeterminismError(FluxoError):
    """The workflow code made a different durable call than its history records.

    Attributes:
        run_id: the run being replayed.
        seq: the history position where code and history part ways.
        expected: what the code called at that position, e.g. ``step shop.charge``.
        recorded: what the history holds there, e.g. ``step shop.refund``.
    """

    def __init__(self, run_id: str, seq: int, expected: str, recorded: str, hint: str = "") -> None:
        self.run_id = run_id
        self.seq = seq
        self.expected = expected
        self.recorded = recorded
        self.hint = hint
        lines = [
            f"run {run_id!r} no longer matches its history at position {seq}:",
            f"  the code called: {expected}",
            f"  the history has: {recorded}",
        ]
        if hint:
            lines.append(hint)
        lines.append(
            "The history is kept unchanged. Restore the code path (or guard the change "
            "with a version check), then resume the run with engine.retry(). "
            f"See {DETERMINISM_DOCS}"
        )
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.seq, self.expected, self.recorded, self.hint))


class ReplayMismatchError(NondeterminismError):
    """A recorded history, replayed against today's code, no longer matches it.

    Raised by :func:`fluxo.testing.replay`. Besides the attributes of
    :class:`NondeterminismError` it has ``diff``, the readable report that is also
    its message: the position, what the history recorded there, what the code
    calls now, and a few matched positions around it.
    """

    def __init__(
        self, run_id: str, seq: int, expected: str, recorded: str, hint: str = "", *, diff: str = ""
    ) -> None:
        super().__init__(run_id, seq, expected, recorded, hint)
        self.diff = diff
        if diff:
            self.args = (diff,)

    def __reduce__(self) -> tuple[Any, ...]:
        fields = (self.run_id, self.seq, self.expected, self.recorded, self.hint)
        return (_rebuild_replay_mismatch, (fields, self.diff))


def _rebuild_replay_mismatch(
    fields: tuple[str, int, str, str, str], diff: str
) -> ReplayMismatchError:
    return ReplayMismatchError(*fields, diff=diff)


class HistoryFormatError(FluxoError, ValueError):
    """A history document is not one Fluxo can load; the message names where and why."""


class HistoryCorruptError(FluxoError, ValueError):
    """A run's stored history, or its stored record, is damaged: Fluxo cannot replay it.

    Raised by ``Store.load`` when a position is missing or repeated, an event's kind
    is unknown (written by a newer Fluxo, or damaged) or a row does not parse, and
    when the run's own record (its status) is damaged. Not a ``StoreError``: the
    store works, and trying again cannot help, so the engine fails the run once
    instead of backing off and retrying it.

    Attributes:
        run_id: the damaged run.
        seq: the history position of the damage (``None``: the run's record).
        problem: what is wrong there.
        next_seq: the position after the last stored event, where an append goes.
    """

    def __init__(self, run_id: str, seq: int | None, problem: str, next_seq: int = 0) -> None:
        self.run_id = run_id
        self.seq = seq
        self.problem = problem
        self.next_seq = next_seq
        what = "record" if seq is None else "history"
        where = "" if seq is None else f" at position {seq}"
        super().__init__(
            f"the stored {what} of run {run_id!r} is damaged{where}: {problem}; Fluxo "
            "cannot replay it (see docs/history-format.md, 'Damaged histories')"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.seq, self.problem, self.next_seq))


class _RemoteError(FluxoError):
    """An error recorded in a history, carried by type names rather than by class."""

    def __init__(
        self,
        message: str,
        *,
        type_name: str,
        type_names: Sequence[str] = (),
        error_message: str = "",
        traceback: str = "",
    ) -> None:
        self.type_name = read_type_name(type_name)
        self.type_names = tuple(map(read_type_name, type_names)) or (self.type_name,)
        self.error_message = error_message
        self.traceback = traceback
        super().__init__(message)

    def is_instance(self, cls: type[BaseException]) -> bool:
        """Tell whether the original exception was an instance of ``cls``.

        The original exception object is not kept (a history stores data, not
        code), so the check compares the recorded class names of its MRO.
        """
        return type_name(cls) in self.type_names


class StepError(_RemoteError):
    """A step failed for good: it raised on its last attempt.

    Raised in the workflow in the same form live and on replay. Attributes:
    ``step`` (the step name), ``type_name`` (the qualified class name of the
    original exception), ``type_names`` (its MRO), ``error_message`` and
    ``traceback`` (the original traceback as text) and ``attempts``.
    """

    def __init__(
        self,
        step: str,
        *,
        type_name: str,
        type_names: Sequence[str] = (),
        error_message: str = "",
        traceback: str = "",
        attempts: int = 1,
    ) -> None:
        self.step = step
        self.attempts = attempts
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        super().__init__(
            f"step {step!r} failed after {tries}: {type_name}: {error_message}",
            type_name=type_name,
            type_names=type_names,
            error_message=error_message,
            traceback=traceback,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_step_error, (self.step, self._fields(), self.attempts))

    def _fields(self) -> dict[str, Any]:
        return {
            "type_name": self.type_name,
            "type_names": list(self.type_names),
            "error_message": self.error_message,
            "traceback": self.traceback,
        }


def _rebuild_step_error(step: str, fields: dict[str, Any], attempts: int) -> StepError:
    return StepError(step, attempts=attempts, **fields)


class StepTimeout(FluxoError, TimeoutError):
    """A step attempt ran longer than the step's ``timeout=``.

    Raised inside the attempt's place, so it is a failed attempt like any other:
    the step's retry policy decides whether another attempt follows, and a final
    one reaches the workflow as a :class:`StepError` whose ``is_instance(StepTimeout)``
    is true. A plain step's thread is abandoned, not stopped: Python cannot kill a
    thread, so the step's function may still be running, and finish, afterwards.
    An ``async def`` step's coroutine is cancelled (``cancelled`` is true).
    """

    def __init__(self, step: str, timeout: float, *, cancelled: bool = False) -> None:
        self.step = step
        self.timeout = timeout
        self.cancelled = cancelled
        """An ``async def`` step's coroutine, cancelled (not a thread left running)."""
        ending = (
            "it was cancelled" if cancelled else "its thread was abandoned and may still be running"
        )
        super().__init__(
            f"step {step!r} did not finish within its timeout of {timeout:g}s; {ending}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_step_timeout, (self.step, self.timeout, self.cancelled))


def _rebuild_step_timeout(step: str, timeout: float, cancelled: bool) -> StepTimeout:
    return StepTimeout(step, timeout, cancelled=cancelled)


class CompensationError(FluxoError):
    """A saga compensated after a failure, and some of its compensations failed too.

    Raised in place of the saga's original failure, and chained to it (its
    ``__cause__``), after every compensation has been tried.

    Attributes:
        error: the exception that made the saga compensate.
        failures: what each failed compensation raised, in the order they ran
            (a :class:`fluxo.StepError` inside a workflow).
    """

    def __init__(self, error: BaseException, failures: Sequence[BaseException]) -> None:
        self.error = error
        self.failures = list(failures)
        count = len(failures)
        lines = [
            f"{count} compensation{'' if count == 1 else 's'} failed after "
            f"{type(error).__name__}: {error}"
        ]
        lines += [f"  {type(failure).__name__}: {failure}" for failure in failures]
        super().__init__("\n".join(lines))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.error, self.failures))


class SignalTimeout(FluxoError, TimeoutError):
    """``fluxo.wait_for_signal`` reached its timeout before the signal arrived."""

    def __init__(self, name: str, timeout: float | None = None) -> None:
        self.name = name
        self.timeout = timeout
        after = f" within {timeout:g}s" if timeout is not None else ""
        super().__init__(f"signal {name!r} did not arrive{after}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.name, self.timeout))


class EventTimeout(FluxoError, TimeoutError):
    """``Engine.get_event`` or ``Engine.watch_event`` waited its timeout for a value in vain."""

    def __init__(self, run_id: str, key: str, status: str = "") -> None:
        self.run_id = run_id
        self.key = key
        self.status = status
        standing = f" (it is {status})" if status else ""
        super().__init__(
            f"run {run_id!r} set no new value of event {key!r} in the time given{standing}; "
            "wait longer, or check that a worker is running (engine.worker() or 'fluxo worker')"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.key, self.status))


class SignalError(FluxoError):
    """A workflow's signal to another run could not be delivered."""


class WorkflowFailedError(_RemoteError):
    """The run ended failed. ``run_id`` names it; the cause is described by type name."""

    def __init__(
        self,
        run_id: str,
        *,
        type_name: str,
        type_names: Sequence[str] = (),
        error_message: str = "",
        traceback: str = "",
    ) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} failed: {type_name}: {error_message}",
            type_name=type_name,
            type_names=type_names,
            error_message=error_message,
            traceback=traceback,
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_workflow_failed,
            (
                self.run_id,
                {
                    "type_name": self.type_name,
                    "type_names": list(self.type_names),
                    "error_message": self.error_message,
                    "traceback": self.traceback,
                },
            ),
        )


def _rebuild_workflow_failed(run_id: str, fields: dict[str, Any]) -> WorkflowFailedError:
    return WorkflowFailedError(run_id, **fields)


class RunDiedError(WorkflowFailedError):
    """The run is dead: its executions kept dying, more often than ``max_recoveries`` allows.

    A worker process that executed it was killed, crashed or lost its lease each
    time, so the run was taken over again and again; rather than take more workers
    down, Fluxo stopped running it. ``handle.result()`` raises this for a run whose
    status is ``dead``; fix the cause and ``engine.retry`` it.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_run_died, super().__reduce__()[1])


def _rebuild_run_died(run_id: str, fields: dict[str, Any]) -> RunDiedError:
    return RunDiedError(run_id, **fields)


def not_retryable(run_id: str, status: str) -> str:
    """Why ``engine.retry`` refuses a run that is ``status``."""
    if status == "cancelled":
        return (
            f"run {quoted(run_id)} is cancelled, not failed or dead; only a failed or dead run "
            "can be retried: resume a cancelled run with engine.resume (fluxo runs resume)"
        )
    return (
        f"run {quoted(run_id)} is {status}, not failed or dead; only a failed or dead run "
        "can be retried"
    )


def not_reopenable(run_id: str, status: str) -> str:
    """Why ``Store.reopen`` refuses a run that is ``status``."""
    return (
        f"run {quoted(run_id)} is {status}, not failed, dead or cancelled; only a failed or "
        "dead run can be retried (engine.retry), and a cancelled one resumed (engine.resume)"
    )


class WorkflowCancelledError(FluxoError):
    """The run was cancelled."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id!r} was cancelled")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id,))


class WorkflowTimeoutError(WorkflowCancelledError, TimeoutError):
    """The run passed its deadline (``workflow.options(timeout=...)``) and was cancelled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(run_id)
        self.args = (f"run {run_id!r} passed its deadline and was cancelled",)


class StoreError(FluxoError):
    """The store failed to carry out an operation."""


class StoreUnavailableError(StoreError, ConnectionError):
    """The store's database or server cannot be reached."""


class StoreRejectedError(StoreError):
    """The store refused to hold this data (too large, or text it cannot store).

    Permanent, unlike :class:`StoreUnavailableError`: trying the same write again
    fails again, so a run whose event the store refuses is failed, not resumed.
    """


class SequenceConflictError(StoreError):
    """Another writer recorded events at this position first; this writer must stop."""

    def __init__(self, run_id: str, seq: int) -> None:
        self.run_id = run_id
        self.seq = seq
        super().__init__(f"position {seq} of run {run_id!r} was already recorded by another writer")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.seq))


# -- the names histories record for exception classes -----------------------------------

LEGACY_TYPE_NAMES: dict[str, str] = {
    f"fluxo._errors.{name}": f"fluxo.{name}"
    for name in (
        "CodecError",
        "CompensationError",
        "DecodeError",
        "DefinitionError",
        "EncodeError",
        "FluxoError",
        "NondeterminismError",
        "RunIdConflictError",
        "RunNotFinishedError",
        "RunNotFoundError",
        "RunStateError",
        "SequenceConflictError",
        "SignalError",
        "SignalTimeout",
        "StepError",
        "StepTimeout",
        "StoreError",
        "StoreUnavailableError",
        "UnknownWorkflowError",
        "WorkflowCancelledError",
        "WorkflowFailedError",
        "WorkflowTimeoutError",
    )
} | {
    "fluxo._errors.HistoryFormatError": "fluxo.testing.HistoryFormatError",
    "fluxo._errors.ReplayMismatchError": "fluxo.testing.ReplayMismatchError",
    "fluxo._executor.Cancelled": "fluxo.Cancelled",
}
"""The private paths Fluxo 0.1 recorded for its own exceptions, and their public names.

Histories recorded since then hold the public names; these are read as them, so a
run recorded before behaves as one recorded now (docs/history-format.md).
"""


_EXPORTED_BY_FLUXO = (
    "CancelPendingError",
    "CodecError",
    "CompensationError",
    "DecodeError",
    "DefinitionError",
    "EncodeError",
    "EventTimeout",
    "FluxoError",
    "HistoryCorruptError",
    "NondeterminismError",
    "RunDiedError",
    "RunIdConflictError",
    "RunNotFinishedError",
    "RunNotFoundError",
    "RunStateError",
    "SequenceConflictError",
    "SignalError",
    "SignalTimeout",
    "StepError",
    "StepTimeout",
    "StoreError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "UnknownWorkflowError",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowTimeoutError",
)

PUBLIC_TYPE_NAMES: dict[str, str] = {
    f"fluxo._errors.{name}": f"fluxo.{name}" for name in _EXPORTED_BY_FLUXO
} | {
    "fluxo._errors.HistoryFormatError": "fluxo.testing.HistoryFormatError",
    "fluxo._errors.ReplayMismatchError": "fluxo.testing.ReplayMismatchError",
    "fluxo._runtime.Cancelled": "fluxo.Cancelled",
}
"""Each exception ``fluxo`` and ``fluxo.testing`` export: where it is defined, and its public name.

Written out as data, so that this module imports nothing of the package it is the
root of; a test checks it against the exports (``tests/unit/test_runtime.py``).
``fluxo`` presents these classes under its own name (their ``__module__`` is
``fluxo``, so tracebacks say ``fluxo.StepError``), and a history may hold either.
"""

_PUBLIC = frozenset(PUBLIC_TYPE_NAMES.values())


def type_name(cls: type[BaseException]) -> str:
    """The name a history records for an exception class.

    ``module.qualname``, except for Fluxo's own exceptions, which are recorded by
    the public name they are imported by (``fluxo.StepError``), so moving them
    between private modules changes no history.
    """
    path = f"{cls.__module__}.{cls.__qualname__}"
    return PUBLIC_TYPE_NAMES.get(path, path)


def is_private(cls: type[BaseException]) -> bool:
    """True for a class of Fluxo's internals that has no public name (a base class)."""
    module = cls.__module__
    if module != "fluxo" and not module.startswith("fluxo."):
        return False
    path = f"{module}.{cls.__qualname__}"
    return path not in PUBLIC_TYPE_NAMES and path not in _PUBLIC


def read_type_name(name: str) -> str:
    """A recorded exception type name as Fluxo names that class today."""
    return LEGACY_TYPE_NAMES.get(name) or PUBLIC_TYPE_NAMES.get(name) or name
