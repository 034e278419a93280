"""The replay executor: runs a workflow function against its history.

Each durable call (a step, ``fluxo.now()``...) takes the next position of the
history. If the history already holds an event there, it must be the same kind
of call with the same name, and its recorded outcome is returned; otherwise the
call is done live, recorded, and its *recorded* form returned, so the live run
sees exactly what every replay will see.

The package is split by concept; :class:`RunContext` composes the parts:

====================  ===========================================================
``_context``          the run context, the options its caller sets, every record
``_cursor``           the history cursor: script, position, matching, the append
``_steps``            step calls: attempts, retries, back-offs, timeouts
``_waits``            timers, the signal inbox, suspension (and the holder protocol)
``_branches``         parallel blocks and the pool of threads they run on
``_children``         child runs and the next run of a chain
``_ending``           how the function's end becomes the outcome and last record
``_control``          the control flow that unwinds a workflow, and the outcomes
``_shared``           the state an execution shares with other threads
====================  ===========================================================

Only this module's names are for the rest of Fluxo: the runner executes runs
with them (:mod:`fluxo._runner`). Workflow code never imports the executor; it
calls the runtime protocol (:mod:`fluxo._runtime`) that :class:`RunContext`
implements. The payloads of Fluxo's own events are in :mod:`fluxo._payloads`
and are also found here under their former names.
"""

from __future__ import annotations

from fluxo._executor._branches import DEFAULT_PARALLEL_THREADS, StepThreads
from fluxo._executor._children import tell_parent
from fluxo._executor._context import RunContext, RunOptions
from fluxo._executor._control import Outcome
from fluxo._executor._shared import SharedState
from fluxo._executor._steps import DURABLE_BACKOFF, StepRunner
from fluxo._executor._waits import STICKY_GRACE, HeldRun, Holder
from fluxo._payloads import (
    REJECTED_PAYLOAD_LIMIT,
    ChildOutcome,
    ChildStart,
    ErrorInfo,
    Rejection,
    error_info,
    step_error,
    workflow_error,
)

__all__ = [
    "DEFAULT_PARALLEL_THREADS",
    "DURABLE_BACKOFF",
    "REJECTED_PAYLOAD_LIMIT",
    "STICKY_GRACE",
    "ChildOutcome",
    "ChildStart",
    "ErrorInfo",
    "HeldRun",
    "Holder",
    "Outcome",
    "Rejection",
    "RunContext",
    "RunOptions",
    "SharedState",
    "StepRunner",
    "StepThreads",
    "error_info",
    "step_error",
    "tell_parent",
    "workflow_error",
]
