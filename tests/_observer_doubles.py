"""Observers for tests: one that keeps every event, one that raises on every call."""

from __future__ import annotations

from typing import Any

import fluxo


class Recorder(fluxo.Observer):
    """Keeps every event, in the run's thread."""

    inline = True

    def __init__(self) -> None:
        self.events: list[fluxo.RunEvent] = []

    def _keep(self, event: fluxo.RunEvent) -> None:
        self.events.append(event)

    run_started = run_resumed = run_suspended = _keep
    run_completed = run_failed = run_cancelled = run_continued = _keep
    step_started = step_completed = step_failed = step_retried = _keep
    timer_set = timer_fired = signal_sent = signal_received = _keep
    child_started = nondeterminism = lease_lost = _keep

    def kinds(self, *, replayed: bool | None = None) -> list[str]:
        """The kinds of the events kept (only the live or replayed ones, if asked)."""
        return [e.kind for e in self.events if replayed is None or e.replayed is replayed]


class Raising(fluxo.Observer):
    """Raises on every call, from ``headers`` and ``step_scope`` too; counts its calls."""

    inline = True

    def __init__(self) -> None:
        self.calls = 0

    def _raise(self, event: fluxo.RunEvent) -> None:
        self.calls += 1
        raise RuntimeError(f"broken observer: {event.kind}")

    run_started = run_resumed = run_suspended = _raise
    run_completed = run_failed = run_cancelled = run_continued = _raise
    step_started = step_completed = step_failed = step_retried = _raise
    timer_set = timer_fired = signal_sent = signal_received = _raise
    child_started = nondeterminism = lease_lost = _raise

    def headers(self, workflow: str, run_id: str, parent: Any) -> dict[str, str]:
        raise RuntimeError("broken observer: headers")

    def step_scope(self, event: fluxo.RunEvent) -> Any:
        raise RuntimeError("broken observer: step_scope")


class RaisingFold(fluxo.Observer):
    """Times steps through ``step_times``, whose fold raises every time; counts the folds."""

    inline = True

    def __init__(self) -> None:
        self.folds = 0
        self.step_times = fluxo.observe.StepTimes(self._fold)

    def _fold(self, times: dict[tuple[str, str], list[float]]) -> None:
        self.folds += 1
        raise RuntimeError("broken observer: fold")
