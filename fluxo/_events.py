"""The events observers are told: :class:`RunEvent`, and every kind of it.

Found as ``fluxo.observe.RunEvent`` and ``fluxo.RunEvent``; kept apart so that the
observers Fluxo ships (:mod:`fluxo._metrics`) need not import :mod:`fluxo.observe`.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

KINDS: tuple[str, ...] = (
    "run_started",
    "run_resumed",
    "run_suspended",
    "run_completed",
    "run_failed",
    "run_cancelled",
    "run_continued",
    "step_started",
    "step_completed",
    "step_failed",
    "step_retried",
    "timer_set",
    "timer_fired",
    "signal_sent",
    "signal_received",
    "child_started",
    "nondeterminism",
    "lease_lost",
)
"""Every kind of event, each the name of the :class:`Observer` method it calls."""


class RunEvent(msgspec.Struct, frozen=True):
    """What happened to a run, as an observer is told.

    Build one with keywords (``RunEvent(kind=..., run_id=..., ...)``, in a test of
    an observer, say): the order of the fields is not part of the API.

    Attributes:
        kind: the kind of event (one of :data:`KINDS`), the name of the method called.
        run_id: the run.
        workflow: the run's workflow name (empty for a signal sent by a workflow to
            a run it does not know the workflow of).
        time: when it happened, in seconds since the epoch, by the engine's clock.
        replayed: True when the event is met again in the recorded history as the
            run resumes, not happening now.
        position: the position of the history the event concerns: the record a step,
            timer, signal or child takes (a parallel block's for its branches); for
            ``run_resumed`` the length of the history being replayed.
        step: the step's name, for step events.
        branch: the branch's index, for the step events of ``fluxo.parallel`` and
            ``fluxo.map`` branches.
        attempt: the attempt's number, from 1, for step events.
        duration: seconds: a step attempt's (live step events); for the end of a run,
            its age (since it was created).
        delay: seconds: until the next attempt (``step_retried``), until the timer
            fires (``timer_set``), from the run being ready to being claimed for
            this execution (``run_resumed``).
        error_type: the exception's type name, for failures (``fluxo.StepError``,
            ``shop.PaymentDeclined``).
        error_message: the exception's message, for failures.
        name: the signal's name (signal events), the timer's (timer events), why a
            run was cancelled (``"cancelled"`` or ``"deadline"``), what a suspended
            run waits for (``"timer"``, ``"signal"``, ``"child"``) or why its
            execution stopped early (``"stopped"``: the worker shut down;
            ``"store_error"``: the store failed; it resumes from its history;
            ``"restart"``: the test environment's ``always_replay`` executes it again).
        other_run: the child's run id (``child_started``), the next run of the chain
            (``run_continued``), the sending run (``signal_sent`` from a workflow).
        worker: the lease owner executing the run, when one is.
        parent: the parent's run id, for a child run.
        headers: what was recorded with the run when it started (for example the
            W3C ``traceparent`` of the request that started it).
    """

    kind: str
    run_id: str
    workflow: str
    time: float
    replayed: bool = False
    position: int | None = None
    step: str = ""
    branch: int | None = None
    attempt: int = 0
    duration: float | None = None
    worker: str = ""
    parent: str | None = None
    headers: Mapping[str, str] = msgspec.field(default_factory=dict)
    delay: float | None = None
    error_type: str = ""
    error_message: str = ""
    name: str = ""
    other_run: str = ""
