"""How an execution unwinds and how it ends: the control flow and the outcomes.

The executor unwinds a workflow with these private subclasses of
:class:`fluxo._runtime.ControlFlow`, a ``BaseException``, so that a user's
``except Exception:`` cannot swallow them; :func:`outcome_of` tells what each
one means for the execution. ``fluxo.Cancelled`` is the one control flow user
code sees (see :mod:`fluxo._runtime`).
"""

from __future__ import annotations

import enum

from fluxo import _runtime


class RunLost(_runtime.ControlFlow):
    """Another writer owns the run now (lost race or lease): stop without writing."""


class Suspended(_runtime.ControlFlow):
    """The run waits (timer or signal); its wait and wake-up time are recorded."""


class Stopped(_runtime.ControlFlow):
    """The worker is shutting down: stop at this durable call and give the run back."""


class StoreFailed(Stopped):
    """The store failed to record an event: stop, and let the run resume from its history.

    Raised as control flow, so a workflow's ``except Exception:`` cannot swallow the
    store's error and go on with a call that was never recorded.
    """


class Rejected(_runtime.ControlFlow):
    """The store refused, for good, what the run had to record: the run fails instead."""


class ReplayEnd(_runtime.ControlFlow):
    """``replay_only``: the code went past the recorded history, which it matched."""


class Continued(_runtime.ControlFlow):
    """``fluxo.continue_as_new``: the next run exists and this one is recorded as continued."""


class Restart(_runtime.ControlFlow):
    """``restart_after_record``: a position was recorded; execute again from the top."""


class Outcome(enum.Enum):
    """How one execution of a run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"
    """Another writer owns the run; this execution stopped without recording more."""
    STOPPED = "stopped"
    """The worker stopped it at a durable call to shut down; the run is intact."""
    SUSPENDED = "suspended"
    """The run waits for a timer or a signal; whichever worker is free resumes it."""
    BROKEN = "broken"
    """The store failed to record; the run resumes from its history when its lease expires.

    Only for transient failures: when the store refuses the data itself
    (``StoreRejectedError``), the run fails instead (``FAILED``)."""
    REPLAYED = "replayed"
    """``replay_only``: the code matched the whole recorded history (and ran no step)."""
    RESTART = "restart"
    """``restart_after_record``: a position was recorded; the run must be executed again."""
    CONTINUED = "continued"
    """``fluxo.continue_as_new``: the run ended, and the next run of its chain is ready."""


_OUTCOMES: tuple[tuple[type[_runtime.ControlFlow], Outcome], ...] = (
    (ReplayEnd, Outcome.REPLAYED),
    (Restart, Outcome.RESTART),
    (Continued, Outcome.CONTINUED),
    (Suspended, Outcome.SUSPENDED),
    (RunLost, Outcome.LOST),
    (StoreFailed, Outcome.BROKEN),
)
"""What an execution unwound by each control flow ended as (``Stopped``: ``STOPPED``)."""


def outcome_of(unwinding: _runtime.ControlFlow | None) -> Outcome:
    """The outcome of an execution that ``unwinding`` unwound, but for ``Rejected``.

    A rejected record fails the run (which records something); the caller does that.
    """
    for kind, outcome in _OUTCOMES:
        if isinstance(unwinding, kind):
            return outcome
    return Outcome.STOPPED
