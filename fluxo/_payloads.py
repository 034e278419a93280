"""The payloads of Fluxo's own events: how errors, child runs and skipped signals are recorded.

A history stores data, never code: an exception is recorded as an
:class:`ErrorInfo` (its class names, message and traceback), and read back as the
exception a workflow or ``handle.result()`` raises (:func:`step_error`,
:func:`workflow_error`). A child run's start and outcome, a parallel block's plan
and a skipped signal have envelopes of their own here. These are part of the
history format (``docs/history-format.md``): fields are only ever added, with
defaults, so older histories keep decoding.

The executor writes them; the engine, the history files, the command line and
the replayer read them, without importing the executor.
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from typing import Any

import msgspec

from fluxo import _errors, history


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


MISMATCH = "fluxo.NondeterminismError"
"""How a history names a failure by a mismatch between code and history."""
DIED = "fluxo.RunDiedError"
"""How a history names the end of a run whose executions kept dying (``run_died``)."""


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
        message=recordable(message),
        types=types,
        traceback=recordable("".join(traceback.format_exception(exc))),
        attempt=attempt,
        details=details,
    )


def recordable(text: str) -> str:
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
    if info.type == MISMATCH and info.details:
        d = info.details
        return _errors.NondeterminismError(
            d.get("run_id", run_id), d["seq"], d["expected"], d["recorded"], d.get("hint", "")
        )
    kind = _errors.RunDiedError if info.type == DIED else _errors.WorkflowFailedError
    return kind(
        run_id,
        type_name=info.type,
        type_names=info.types,
        error_message=info.message,
        traceback=info.traceback,
    )


REASON_LIMIT = 2000
"""The most characters of a refusal (a store's, a skipped signal's) a record quotes."""


class Plan(msgspec.Struct, omit_defaults=True):
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


_TERMINAL_EVENTS: tuple[type[history.Event], ...] = (
    history.WorkflowCompleted,
    *history.FAILURE_ENDS,
    history.WorkflowCancelled,
)


def cancelled_error(run_id: str, reason: str) -> _errors.WorkflowCancelledError:
    """The error awaiting a cancelled run raises: ``WorkflowTimeoutError`` past its deadline."""
    if reason == "deadline":
        return _errors.WorkflowTimeoutError(run_id)
    return _errors.WorkflowCancelledError(run_id)


def run_outcome(run: history.RunInfo, events: Sequence[history.Event], codec: Any, tp: Any) -> Any:
    """The result of a finished run read from its history, or the error it ended with."""
    # The last terminal event: a retry may have appended RunRetried after it.
    last = next((e for e in reversed(events) if isinstance(e, _TERMINAL_EVENTS)), events[-1])
    if isinstance(last, history.WorkflowCompleted):
        return codec.decode(last.data or b"null", tp)
    if isinstance(last, history.FAILURE_ENDS):  # failed, or dead
        info: ErrorInfo = codec.decode(last.data or b"{}", ErrorInfo)
        raise workflow_error(run.id, info)
    if isinstance(last, history.WorkflowCancelled):
        raise cancelled_error(run.id, last.name)
    if isinstance(last, history.ContinuedAsNew):
        raise _errors.RunNotFoundError(last.name)  # the chain went on in a run purged since
    raise _errors.StoreError(
        f"run {run.id!r} is {run.status.value} but its history ends with {last.kind!r}; "
        "the store is inconsistent"
    )
