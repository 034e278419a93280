"""Shared helpers of the unit tests: a fake clock, a spying store, run drivers."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable, Collection, Iterable
from typing import Any

import fluxo
from fluxo import _executor, _worker, history

T0 = 1_700_000_000.0
"""Where fake clocks start: a realistic epoch time."""

WAIT = 10.0
"""Generous upper bound for any wait on another thread; never reached when things work."""


class SimulatedCrash(BaseException):
    """Stands in for the process dying mid-run.

    A ``BaseException`` that no part of Fluxo catches, so it leaves the run exactly
    as a ``kill -9`` would: whatever was recorded stays, the lease stays held.
    """


class FakeClock:
    """An engine clock that moves only when told to."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def kinds(events: Iterable[history.Event]) -> list[str]:
    """The kinds of a history's events, in order."""
    return [event.kind for event in events]


def named(events: Iterable[history.Event]) -> list[tuple[str, str]]:
    """``(kind, name)`` of a history's events, in order."""
    return [(event.kind, event.name) for event in events]


def claim(engine: fluxo.Engine, run_id: str, owner: str, lease: float = 30.0) -> None:
    """Lease ``run_id`` (and nothing else) to ``owner`` at the engine's current time."""
    workflow = engine.store.get_run(run_id).workflow
    now = engine.clock()
    claimed = engine.store.claim(owner, [workflow], now=now, lease_until=now + lease, limit=1)
    assert [run.id for run in claimed] == [run_id], f"could not claim {run_id!r}: {claimed}"


def execute(
    engine: fluxo.Engine,
    run_id: str,
    owner: str = "tester",
    *,
    lease: float = 30.0,
    hook: Callable[[_executor.RunContext], None] | None = None,
    claimed: bool = False,
) -> _executor.Outcome:
    """Claim ``run_id`` for ``owner`` and execute it in this thread, without lease renewal."""
    if not claimed:
        claim(engine, run_id, owner, lease)
    heartbeat = _worker.Heartbeat(engine, owner, lease)
    return engine.execute_claimed(run_id, owner, heartbeat=heartbeat, context_hook=hook)


def no_sleep(sleeps: list[float]) -> Callable[[_executor.RunContext], None]:
    """A context hook that records retry back-off waits instead of sleeping them."""

    def hook(context: _executor.RunContext) -> None:
        context.pause = sleeps.append

    return hook


class SpyStore:
    """A store that forwards everything to another one and lets a test watch renewals.

    ``renewed`` is set after every ``renew``; ``renewals`` keeps what each returned.
    """

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.renewals: list[dict[str, bool]] = []
        self.renewed = threading.Condition()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        held = self.inner.renew(worker_id, run_ids, lease_until=lease_until)
        with self.renewed:
            self.renewals.append(dict(held))
            self.renewed.notify_all()
        return held

    def wait_renewals(self, count: int, timeout: float = WAIT) -> None:
        """Block until ``count`` more renewals than now have happened."""
        with self.renewed:
            target = len(self.renewals) + count
            ok = self.renewed.wait_for(lambda: len(self.renewals) >= target, timeout)
        assert ok, "the heartbeat did not renew in time"

    def wait_cancel_delivered(self, run_id: str, timeout: float = WAIT) -> None:
        """Block until a renewal reported the run's cancellation, and the beat after it.

        The heartbeat tells the running workflow right after the renewal returns, so
        once the next renewal has happened, the workflow has surely been told.
        """
        with self.renewed:
            ok = self.renewed.wait_for(
                lambda: any(held.get(run_id) for held in self.renewals), timeout
            )
        assert ok, "no renewal reported the cancellation"
        self.wait_renewals(1, timeout)


class CountingStore:
    """A store that forwards everything to another one and counts history reads."""

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.loads = 0
        self.loads_of: collections.Counter[str] = collections.Counter()
        """The reads of each run's history."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, run_id: str) -> history.RunState:
        self.loads += 1
        self.loads_of[run_id] += 1
        return self.inner.load(run_id)


class Box:
    """A thread's outcome: the value it returned, or the exception it raised."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self, fn: Callable[[], Any], name: str | None = None) -> threading.Thread:
        def target() -> None:
            try:
                self.value = fn()
            except BaseException as exc:
                self.error = exc
            finally:
                self.done.set()

        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def get(self, timeout: float = WAIT) -> Any:
        assert self.done.wait(timeout), "the thread did not finish in time"
        if self.error is not None:
            raise self.error
        return self.value
