"""Fluxo: durable functions for Python.

Decorate the orchestrating function with ``@fluxo.workflow`` and the functions it
calls with ``@fluxo.step``. Every step result is recorded in the run's history,
so a run that resumes (after a crash, a deploy, a wait) replays recorded
results instead of doing the work again.
"""

from fluxo import observe as observe
from fluxo._async_engine import AsyncEngine, AsyncRunHandle
from fluxo._decorators import step, workflow
from fluxo._definitions import AsyncWorkflow, Call, Step, Workflow
from fluxo._engine import Engine, RunHandle
from fluxo._errors import (
    CancelPendingError,
    CodecError,
    CompensationError,
    DecodeError,
    DefinitionError,
    EncodeError,
    EventTimeout,
    FluxoError,
    HistoryCorruptError,
    NondeterminismError,
    RunDiedError,
    RunIdConflictError,
    RunNotFinishedError,
    RunNotFoundError,
    RunStateError,
    SequenceConflictError,
    SignalError,
    SignalTimeout,
    StepError,
    StepTimeout,
    StoreError,
    StoreRejectedError,
    StoreUnavailableError,
    UnknownWorkflowError,
    WorkflowCancelledError,
    WorkflowFailedError,
    WorkflowTimeoutError,
)
from fluxo._queue_config import Queue
from fluxo._retry import Retry
from fluxo._run_events import WorkflowInfo, info, set_event
from fluxo._runtime import Cancelled
from fluxo._saga import Saga, saga
from fluxo._schedule_control import ScheduleInfo
from fluxo._schedule_loop import schedule
from fluxo._schedules import Schedule
from fluxo._worker import Worker
from fluxo._workflow_api import (
    ChildHandle,
    continue_as_new,
    deprecate_patch,
    in_workflow,
    is_replaying,
    logger,
    map,
    map_async,
    now,
    parallel,
    parallel_async,
    patched,
    random,
    signal,
    signal_async,
    sleep,
    sleep_async,
    sleep_until,
    sleep_until_async,
    start_child,
    start_child_async,
    uuid4,
    wait_for_signal,
    wait_for_signal_async,
)
from fluxo.codec import Codec, JSONCodec
from fluxo.history import Event, RunInfo, RunStatus
from fluxo.observe import Observer, RunEvent
from fluxo.stores import Store, open_store

__version__ = "0.1.0"

__all__ = [
    "AsyncEngine",
    "AsyncRunHandle",
    "AsyncWorkflow",
    "Call",
    "CancelPendingError",
    "Cancelled",
    "ChildHandle",
    "Codec",
    "CodecError",
    "CompensationError",
    "DecodeError",
    "DefinitionError",
    "EncodeError",
    "Engine",
    "Event",
    "EventTimeout",
    "FluxoError",
    "HistoryCorruptError",
    "JSONCodec",
    "NondeterminismError",
    "Observer",
    "Queue",
    "Retry",
    "RunDiedError",
    "RunEvent",
    "RunHandle",
    "RunIdConflictError",
    "RunInfo",
    "RunNotFinishedError",
    "RunNotFoundError",
    "RunStateError",
    "RunStatus",
    "Saga",
    "Schedule",
    "ScheduleInfo",
    "SequenceConflictError",
    "SignalError",
    "SignalTimeout",
    "Step",
    "StepError",
    "StepTimeout",
    "Store",
    "StoreError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "UnknownWorkflowError",
    "Worker",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowInfo",
    "WorkflowTimeoutError",
    "__version__",
    "continue_as_new",
    "deprecate_patch",
    "in_workflow",
    "info",
    "is_replaying",
    "logger",
    "map",
    "map_async",
    "now",
    "open_store",
    "parallel",
    "parallel_async",
    "patched",
    "random",
    "saga",
    "schedule",
    "set_event",
    "signal",
    "signal_async",
    "sleep",
    "sleep_async",
    "sleep_until",
    "sleep_until_async",
    "start_child",
    "start_child_async",
    "step",
    "uuid4",
    "wait_for_signal",
    "wait_for_signal_async",
    "workflow",
]


def _present_errors(module: str, names: list[str], namespace: dict[str, object]) -> None:
    """Make tracebacks name exported errors as users import them (``fluxo.StepError``).

    Not by the private module that defines them (``fluxo._errors.StepError``), as
    httpx does for its own. The private path is kept in ``_fluxo_path``, so a
    history that recorded it still reads (``fluxo._errors.read_type_name``).
    """
    for name in names:
        obj = namespace[name]
        if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ != module:
            obj._fluxo_path = f"{obj.__module__}.{obj.__qualname__}"  # type: ignore[attr-defined]
            obj.__module__ = module


_present_errors(__name__, __all__, globals())
