"""The runtime workflow code calls: the one execution running in this thread or task.

Workflow-facing code (a step or child workflow called in a workflow, ``fluxo.sleep``,
``fluxo.parallel``, ``fluxo.now``...) never imports the executor. Each durable
call asks this module for the current :class:`Runtime` and calls one of its
methods; the executor implements the protocol and makes its execution current
while it runs the workflow function (:func:`enter`, :func:`leave`). Outside any
workflow, and inside a step, there is none (:func:`current` returns ``None``), and
each function falls back to its plain equivalent: ``fluxo.sleep`` is
``time.sleep``, a step is a plain call.

The current runtime lives in a ``contextvars.ContextVar``, which threads and
asyncio tasks each see on their own.

Control flow: a runtime unwinds a workflow with subclasses of :class:`ControlFlow`,
a ``BaseException``, so that a user's ``except Exception:`` cannot swallow a
suspension, a shutdown or a cancellation. :class:`Cancelled` is the one users
see (``fluxo.Cancelled``); only a runtime raises it (:func:`cancellation`).

The protocol takes the definitions of :mod:`fluxo._definitions` (a ``Step``, a
``Call``, a ``Workflow``) as ``Any``: they call the runtime, so this module sits
below them and never imports them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Protocol

_current: contextvars.ContextVar[Runtime | None] = contextvars.ContextVar(
    "fluxo_runtime", default=None
)


current = _current.get
"""``current() -> Runtime | None``: the runtime of the workflow executing in this thread or task.

Bound straight to the variable: a step called in a workflow looks it up every time."""

enter = _current.set
"""``enter(runtime) -> token``: make ``runtime`` current (``None``: none, as inside a step)."""

leave = _current.reset
"""``leave(token)``: make current again the runtime that was before ``enter`` gave ``token``."""


class ControlFlow(BaseException):
    """Unwinds a workflow. A ``BaseException`` so ``except Exception:`` cannot swallow it.

    Abstract: a runtime raises its own subclasses (and :class:`Cancelled`).
    """

    def __init__(self, *args: object) -> None:
        if type(self) is ControlFlow:
            raise TypeError("ControlFlow is abstract")
        super().__init__(*args)


_TOKEN = object()


class Cancelled(ControlFlow):
    """The run was cancelled. Raised at a durable call; ``finally:`` blocks still run.

    Fluxo raises it; user code cannot construct it. It derives from
    ``BaseException``, so ``except Exception:`` does not catch it.
    """

    def __init__(self, _token: object = None) -> None:
        if _token is not _TOKEN:
            raise TypeError("fluxo.Cancelled is raised by Fluxo and cannot be constructed")
        super().__init__("the run was cancelled")


def cancellation() -> Cancelled:
    """A :class:`Cancelled` for a runtime to raise at the durable call that delivers it."""
    return Cancelled(_TOKEN)


class Runtime(Protocol):
    """What workflow code needs of the execution it runs in.

    Every method but the properties and :meth:`now` is a durable call: it takes the
    run's next position in its history, replaying what is recorded there or doing
    the call live and recording it. Any of them may raise :class:`Cancelled`, or
    another :class:`ControlFlow` that unwinds the workflow.
    """

    @property
    def run_id(self) -> str:
        """The id of the run executing."""
        ...

    @property
    def workflow_name(self) -> str:
        """The name of the run's workflow."""
        ...

    @property
    def is_async(self) -> bool:
        """True when the run's workflow is ``async def`` (its durable calls are awaited)."""
        ...

    @property
    def replaying(self) -> bool:
        """True while the code is catching up with recorded history."""
        ...

    def now(self) -> float:
        """The engine's clock, in seconds since the epoch (not recorded)."""
        ...

    def call_step(self, step: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run ``step`` (a ``fluxo.Step``) once for this run, or return its recorded outcome."""
        ...

    def defer_step(self, call: Any) -> Any:
        """An async workflow's step call (a ``Call``): a coroutine of its outcome."""
        ...

    def call_parallel(self, calls: Sequence[Any], max_concurrency: int | None) -> list[Any]:
        """``fluxo.parallel``: run the calls (``fluxo.Call``) as one block; their results."""
        ...

    def record_value(self, name: str, produce: Callable[[], Any], type: Any) -> Any:
        """A nondeterministic value, taken live once by ``produce`` and replayed from history."""
        ...

    def set_event(self, key: str, value: Any) -> None:
        """``fluxo.set_event``: record ``value`` under ``key`` for the outside world."""
        ...

    def info(self) -> Any:
        """``fluxo.info()``: the run executing (a ``fluxo.WorkflowInfo``); not a durable call."""
        ...

    def sleep_until(self, fire_at: float) -> None:
        """A durable timer that fires at ``fire_at`` (seconds since the epoch)."""
        ...

    def wait_for_signal(self, name: str, timeout: float | None, type: Any) -> Any:
        """The payload of the oldest unconsumed signal ``name``, decoded as ``type``."""
        ...

    def send_signal(self, run_id: str, name: str, payload: Any) -> None:
        """``fluxo.signal``: send to another run, exactly once."""
        ...

    def start_child(
        self, workflow: Any, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[str, bool]:
        """Start ``workflow`` (a ``fluxo.Workflow``) as a child run: its id and "detached"."""
        ...

    def child_result(self, child: str, return_type: Any) -> Any:
        """The outcome of a child run, waited for durably; raises its failure."""
        ...

    def cancel_child(self, child: str) -> None:
        """Ask a child run to stop."""
        ...

    def patched(self, change: str) -> bool:
        """``fluxo.patched``: True for runs that reach this point under the new code."""
        ...

    def deprecate_patch(self, change: str) -> None:
        """``fluxo.deprecate_patch``: accept an old marker of ``change`` where one is recorded."""
        ...

    def continue_as_new(self, args: Sequence[Any], kwargs: dict[str, Any]) -> NoReturn:
        """End this run and go on in a fresh run of its chain."""
        ...
