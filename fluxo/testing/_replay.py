"""Replaying recorded histories against today's workflow code.

A replay runs the workflow function over a recorded history in ``replay_only``
mode: every durable call must meet its recorded event, no step runs and nothing
is written anywhere. It ends well when the code reaches the end of the history
(or ends exactly the way the history ends), and raises
:class:`~fluxo.testing.ReplayMismatchError`, a :class:`~fluxo.NondeterminismError` whose
message is a readable diff, when the code has diverged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

from fluxo import _definitions, _errors, _executor, _history_file, _payloads
from fluxo import codec as _codec
from fluxo import history as _history

if TYPE_CHECKING:
    from fluxo import _engine, stores

HistorySource = _history_file.History | str | os.PathLike[str] | Mapping[str, Any]
"""A history to replay: a loaded :class:`History`, a file path, or a parsed document."""

CONTEXT_LINES = 3
"""How many matched positions a divergence report shows before the divergent one."""


def load_history(path: str | os.PathLike[str]) -> _history_file.History:
    """Read and validate a history document written by ``Engine.export_history``.

    Raises:
        HistoryFormatError: the file is not a history document this Fluxo reads;
            the message names the file, the event and what is wrong.
        OSError: the file cannot be read.
    """
    return _history_file.load(path)


def save_history(
    history: _history_file.History | Mapping[str, Any], path: str | os.PathLike[str]
) -> Path:
    """Write a history (or a document from ``Engine.export_history``) to a JSON file.

    Example:
        >>> save_history(engine.export_history("order-17"), "tests/histories/order.json")
    """
    return _history_file.save(history, path)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """How one recorded history fared against today's code.

    Attributes:
        source: where the history came from (a file path, or ``run <id>``).
        run_id: the recorded run's id ("" when the history could not be loaded).
        workflow: its workflow's name ("" when the history could not be loaded).
        error: ``None`` when the code replayed the history cleanly; otherwise why
            not: a :class:`~fluxo.testing.ReplayMismatchError` (the code diverged), a
            :class:`~fluxo.UnknownWorkflowError`, or a loading error.
    """

    source: str
    run_id: str = ""
    workflow: str = ""
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        """True when the history replayed cleanly."""
        return self.error is None

    def describe(self) -> str:
        """One line when it replayed cleanly; otherwise that line and the reason, indented."""
        shown = self.run_id and not self.source.startswith("run ")
        run = f" (run {self.run_id!r})" if shown else ""
        if self.error is None:
            return f"ok      {self.source}{run}"
        reason = "\n".join(f"    {line}" if line else "" for line in str(self.error).splitlines())
        return f"FAILED  {self.source}{run}\n{reason}"


class ReplayReport(Sequence[ReplayResult]):
    """The results of replaying a batch of histories, in the order they were given."""

    def __init__(self, results: Iterable[ReplayResult]) -> None:
        self.results = tuple(results)

    def __repr__(self) -> str:
        return f"ReplayReport(passed={self.passed}, failed={len(self.failures)})"

    @overload
    def __getitem__(self, index: int) -> ReplayResult: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[ReplayResult]: ...

    def __getitem__(self, index: int | slice) -> ReplayResult | Sequence[ReplayResult]:
        return self.results[index]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[ReplayResult]:
        return iter(self.results)

    @property
    def ok(self) -> bool:
        """True when there was at least one history and every one replayed cleanly."""
        return bool(self.results) and not self.failures

    @property
    def passed(self) -> int:
        """How many histories replayed cleanly."""
        return sum(1 for result in self.results if result.ok)

    @property
    def failures(self) -> list[ReplayResult]:
        """The histories that did not replay cleanly."""
        return [result for result in self.results if not result.ok]

    def render(self, *, verbose: bool = False) -> str:
        """Printable text: every failure with its diff (every success too when verbose).

        The last line counts them, e.g. ``3 histories replayed: 2 ok, 1 failed``.
        """
        lines = [result.describe() for result in self.results if verbose or not result.ok]
        if not self.results:
            lines.append("no histories to replay")
        else:
            noun = "history" if len(self.results) == 1 else "histories"
            lines.append(
                f"{len(self.results)} {noun} replayed: {self.passed} ok, "
                f"{len(self.failures)} failed"
            )
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise the first failure's error (for a test asserting a batch replays cleanly)."""
        if not self.results:
            raise _errors.HistoryFormatError("no histories were replayed")
        for result in self.results:
            if result.error is not None:
                raise result.error


def replay(
    history: HistorySource,
    *,
    workflows: Iterable[_definitions.Workflow[Any, Any]],
    codec: _codec.Codec | None = None,
) -> ReplayResult:
    """Replay one recorded history against today's code, running no step.

    Args:
        history: a :class:`History`, the path of a history file, or a document
            from ``Engine.export_history``.
        workflows: the workflows to replay with; the history's workflow is found
            among them by name or alias.
        codec: the codec its payloads were written with (default: the JSON codec).

    Returns:
        A clean :class:`ReplayResult`.

    Raises:
        ReplayMismatchError: the code no longer matches the history; the message
            shows the position, what was recorded, what the code calls now, and
            the positions around it.
        UnknownWorkflowError: no given workflow has the history's workflow name.
        HistoryFormatError: the history document is malformed.

    Example:
        >>> replay("tests/histories/checkout.json", workflows=[checkout])
    """
    loaded = _coerce(history)
    _replay_history(loaded, _by_name(workflows), codec or _codec.JSONCodec())
    return ReplayResult(loaded.source, loaded.run_id, loaded.workflow)


def replay_all(
    sources: HistorySource | Iterable[HistorySource],
    *,
    workflows: Iterable[_definitions.Workflow[Any, Any]],
    codec: _codec.Codec | None = None,
) -> ReplayReport:
    """Replay a batch of histories, reporting on each instead of stopping at the first.

    Args:
        sources: history files, directories (every ``*.json`` below them, in name
            order), loaded :class:`History` objects or documents; or one of those.
        workflows: the workflows to replay with.
        codec: the codec the payloads were written with (default: the JSON codec).

    A history that cannot be loaded, names an unknown workflow or no longer
    matches the code is a failure in the report; an empty directory is one too,
    so a CI job pointed at the wrong place does not pass by replaying nothing.

    Example:
        >>> report = replay_all("tests/histories", workflows=[checkout, refund])
        >>> print(report.render())
        >>> assert report.ok
    """
    by_name = _by_name(workflows)
    chosen = codec or _codec.JSONCodec()
    results: list[ReplayResult] = []
    for source in _expand(sources):
        if isinstance(source, ReplayResult):
            results.append(source)
            continue
        results.append(_replay_quietly(source, by_name, chosen))
    return ReplayReport(results)


def replay_runs(
    engine: _engine.Engine,
    *,
    status: _history.RunStatus | str | Iterable[_history.RunStatus | str] | None = None,
    workflow: str | _definitions.Workflow[Any, Any] | None = None,
    limit: int = 100,
) -> ReplayReport:
    """Replay runs straight from an engine's store against the engine's workflows.

    Takes the runs ``engine.list_runs(status=, workflow=, limit=)`` lists (newest
    first) and replays each one's history with the engine's codec, writing
    nothing. Useful before a deploy: point an engine with the new code at a copy
    of the production database and check the runs still in flight.

    Example:
        >>> report = replay_runs(engine, status=["waiting", "pending"], limit=500)
        >>> assert report.ok, report.render()
    """
    by_name = _by_name(engine.workflows)
    results: list[ReplayResult] = []
    for run in engine.list_runs(status=status, workflow=workflow, limit=limit):
        try:
            state = engine.store.load(run.id)
        except _errors.RunNotFoundError as exc:  # deleted since it was listed
            results.append(ReplayResult(f"run {run.id}", run.id, run.workflow, exc))
            continue
        loaded = _history_file.History.from_state(state, source=f"run {run.id}")
        results.append(_replay_quietly(loaded, by_name, engine.codec))
    return ReplayReport(results)


# -- internals ---------------------------------------------------------------------------


def _by_name(
    workflows: Iterable[_definitions.Workflow[Any, Any]],
) -> dict[str, _definitions.Workflow[Any, Any]]:
    if isinstance(workflows, (str, bytes)) or not isinstance(workflows, Iterable):
        raise _errors.DefinitionError(
            f"workflows= takes a list of @fluxo.workflow functions, not {workflows!r}"
        )
    by_name: dict[str, _definitions.Workflow[Any, Any]] = {}
    for wf in workflows:
        if not isinstance(wf, _definitions.Workflow):
            raise _errors.DefinitionError(
                f"{wf!r} is not a workflow; pass the @fluxo.workflow functions to replay with"
            )
        for name in wf.names:
            by_name.setdefault(name, wf)
    return by_name


def _coerce(source: HistorySource) -> _history_file.History:
    if isinstance(source, _history_file.History):
        return source
    if isinstance(source, Mapping):
        return _history_file.History.from_document(dict(source))
    return _history_file.load(source)


def _expand(
    sources: HistorySource | Iterable[HistorySource],
) -> Iterator[HistorySource | ReplayResult]:
    items: Iterable[HistorySource]
    if isinstance(sources, (_history_file.History, Mapping, str, os.PathLike)):
        items = [sources]
    else:
        items = sources
    for item in items:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            found = sorted(path for path in Path(item).rglob("*.json") if path.is_file())
            if not found:
                yield ReplayResult(
                    os.fspath(item),
                    error=_errors.HistoryFormatError(f"{os.fspath(item)}: holds no *.json file"),
                )
            yield from (os.fspath(path) for path in found)
        else:
            yield item


def _replay_quietly(
    source: HistorySource,
    by_name: Mapping[str, _definitions.Workflow[Any, Any]],
    codec: _codec.Codec,
) -> ReplayResult:
    name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<document>"
    try:
        loaded = _coerce(source)
    except (_errors.HistoryFormatError, OSError) as exc:
        return ReplayResult(name, error=exc)
    try:
        _replay_history(loaded, by_name, codec)
    except (_errors.NondeterminismError, _errors.UnknownWorkflowError) as exc:
        return ReplayResult(loaded.source, loaded.run_id, loaded.workflow, exc)
    return ReplayResult(loaded.source, loaded.run_id, loaded.workflow)


class _StoreTouched(BaseException):
    """A replay reached the store. Never caught by workflow code or the executor."""


class _SealedStore:
    """The store a replay hands the executor: any use of it at all is reported."""

    def __getattr__(self, name: str) -> Any:
        raise _StoreTouched(name)


def _replay_history(
    loaded: _history_file.History,
    by_name: Mapping[str, _definitions.Workflow[Any, Any]],
    codec: _codec.Codec,
    *,
    store: stores.Store | None = None,
) -> None:
    wf = by_name.get(loaded.workflow)
    if wf is None:
        raise _errors.UnknownWorkflowError(
            f"{_origin(loaded)} is a run of workflow {loaded.workflow!r}, which is not among "
            f"the workflows given ({sorted(by_name) or 'none'}); pass it in workflows=[...]"
        )
    if [type(event) for event in loaded.events] == _NEVER_RAN:
        return  # cancelled before it began: no workflow code ever ran for it
    context = _executor.RunContext(
        state=_awaiting_retry(loaded.to_state(), codec),
        workflow=wf,
        store=store if store is not None else cast("stores.Store", _SealedStore()),
        codec=codec,
        clock=time.time,
        options=_executor.RunOptions(replay_only=True),
    )
    try:
        outcome = context.execute()
    except _StoreTouched as touched:
        raise _errors.FluxoError(
            f"replaying {_origin(loaded)} reached the store ({touched}), which a replay must "
            "never do; this is a bug in Fluxo, please report it"
        ) from None
    if outcome is _executor.Outcome.REPLAYED:
        return
    # On a mismatch the executor keeps the error it raised, also when what failed was
    # decoding the recorded input (then context.error describes the decoding error).
    error: Exception | None = context.nondeterminism
    if error is None and context.error is not None:
        error = _payloads.workflow_error(loaded.run_id, context.error)
    if isinstance(error, _errors.NondeterminismError):
        raise _errors.ReplayMismatchError(
            error.run_id,
            error.seq,
            error.expected,
            error.recorded,
            error.hint,
            diff=render_divergence(loaded, error),
        )
    raise _errors.FluxoError(
        f"replaying {_origin(loaded)} ended {outcome.value}, which a replay never should; "
        f"this is a bug in Fluxo, please report it ({error})"
    )


_NEVER_RAN = [_history.WorkflowStarted, _history.CancelRequested, _history.WorkflowCancelled]
"""The history ``engine.cancel`` writes for a run no worker had begun.

The workflow function never ran for it, so whatever today's code would do under
a cancellation at its first durable call (a ``finally:`` that records a step) is
no mismatch."""


def _awaiting_retry(state: _history.RunState, codec: _codec.Codec) -> _history.RunState:
    """Drop a final failure that was itself a mismatch: replay the run as a retry would.

    A run failed by a ``NondeterminismError`` waits for fixed code and a retry;
    what fixed code must match is the history before that failure.
    """
    last = state.events[-1]
    if not isinstance(last, _history.WorkflowFailed) or len(state.events) < 2:
        return state
    try:
        info: _payloads.ErrorInfo = codec.decode(last.data or b"{}", _payloads.ErrorInfo)
    except Exception:
        return state
    if info.type != _errors.type_name(_errors.NondeterminismError):
        return state
    return _history.RunState(
        state.run, state.events[:-1], state.signals, state.recorded_at[: len(state.events) - 1]
    )


def _origin(loaded: _history_file.History) -> str:
    if loaded.source and not loaded.source.startswith("run "):
        return f"the history in {loaded.source} (run {loaded.run_id!r})"
    return f"the history of run {loaded.run_id!r}"


def render_divergence(loaded: _history_file.History, error: _errors.NondeterminismError) -> str:
    """The readable report of where the code parted from a recorded history.

    The layout is stable; tools and tests may rely on it::

        history of run 'order-7' diverged at position 5:
          (workflow shop.checkout; tests/histories/order-7.json)
                ...
             2  step shop.charge                      matched
             3  timer sleep                           matched
             4  timer sleep (fired)                   matched
          >  5  recorded:  step shop.ship
                code now:  step shop.refund
             6  the workflow returned                 not reached
        The code no longer makes the durable calls this history recorded. ...
    """
    events = loaded.events
    seq = error.seq
    width = len(str(len(events)))
    pad = " " * width
    where = f"workflow {loaded.workflow}"
    if loaded.source and not loaded.source.startswith(("run ", "<")):
        where += f"; {loaded.source}"
    lines = [
        f"history of run {loaded.run_id!r} diverged at position {seq}:",
        f"  ({where})",
    ]
    first = max(1, seq - CONTEXT_LINES)
    if first > 1:
        lines.append(f"     {pad}  ...")
    for position in range(first, min(seq, len(events))):
        label = _label(events[position])
        lines.append(f"     {position:>{width}}  {label:<36}  {_fate(events, position)}".rstrip())
    recorded = _label(events[seq]) if seq < len(events) else "nothing (the history ends here)"
    lines.append(f"  >  {seq:>{width}}  recorded:  {recorded}")
    lines.append(f"     {pad}  code now:  {error.expected}")
    lines.extend(f"     {pad}  {line.strip()}" for line in error.hint.splitlines() if line.strip())
    if seq + 1 < len(events):
        lines.append(f"     {seq + 1:>{width}}  {_label(events[seq + 1]):<36}  not reached")
    rest = len(events) - seq - 2
    if rest > 0:
        lines.append(f"     {pad}  ... {rest} more recorded event{'s' if rest > 1 else ''}")
    lines.append(
        "The code no longer makes the durable calls this history recorded. Restore the old\n"
        f"path, or guard the change with fluxo.patched(); see {_errors.DETERMINISM_DOCS}."
    )
    return "\n".join(lines)


_LABELS: dict[type[_history.Event], str] = {
    _history.WorkflowStarted: "workflow {} started",
    _history.StepCompleted: "step {}",
    _history.StepAttemptFailed: "step {} (attempt failed)",
    _history.StepFailed: "step {} (failed)",
    _history.ValueRecorded: "value_recorded {}",
    _history.EventSet: "set_event {}",
    _history.TimerStarted: "timer {}",
    _history.TimerFired: "timer {} (fired)",
    _history.SignalWaitStarted: "wait_for_signal {}",
    _history.SignalReceived: "wait_for_signal {} (received)",
    _history.SignalTimedOut: "wait_for_signal {} (timed out)",
    _history.SignalSent: "signal {}",
    _history.PatchMarker: "patched {}",
    _history.CancelRequested: "cancellation ({})",
    _history.WorkflowCompleted: "the workflow returned",
    _history.WorkflowFailed: "the workflow raised",
    _history.WorkflowCancelled: "the workflow ended cancelled",
    _history.RunDied: "the run died (max_recoveries)",
    _history.RunRetried: "retried by an operator",
}


def _label(event: _history.Event) -> str:
    """Describe a recorded event in the words the executor uses for the code's calls."""
    template = _LABELS.get(type(event))
    if template is None:
        return event.describe()
    if isinstance(event, _history.CancelRequested):
        return template.format(event.name or "cancelled")
    return template.format(event.name)


def _fate(events: Sequence[_history.Event], position: int) -> str:
    event = events[position]
    if isinstance(event, _history.RunRetried):
        return ""
    if (
        isinstance(event, _history.FAILURE_ENDS)
        and position + 1 < len(events)
        and isinstance(events[position + 1], _history.RunRetried)
    ):
        return "retried"
    if _resumed_end(events, position) or (
        isinstance(event, _history.CancelRequested) and _resumed_end(events, position + 1)
    ):
        return "resumed"
    return "matched"


def _resumed_end(events: Sequence[_history.Event], position: int) -> bool:
    """Tell whether ``position`` holds a cancelled end an operator resumed (``engine.resume``)."""
    return (
        position + 1 < len(events)
        and isinstance(events[position], _history.WorkflowCancelled)
        and isinstance(events[position + 1], _history.RunRetried)
    )
