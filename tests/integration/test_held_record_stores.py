"""A completed step's record held for the next write, on every store.

The last step's record and the run's end are one append of two events with a
status (on PostgreSQL one statement, guarded or not); a completion the store
refuses for a pending cancellation leaves the step to be written before the
cancellation. See ``tests/unit/test_held_records.py`` for the executor's side.
"""

from __future__ import annotations

from typing import Any

import fluxo
import fluxo.testing
from fluxo import _executor, history
from tests.unit.helpers import FakeClock, SpyStore, execute, kinds

Outcome = _executor.Outcome


class Appends(SpyStore):
    """Keeps the kinds of each append; cancels the run just before ``cancel_before``."""

    def __init__(self, inner: fluxo.Store, cancel_before: type[history.Event] | None = None):
        super().__init__(inner)
        self.cancel_before = cancel_before
        self.appended: list[list[str]] = []
        self.down_for: set[int] = set()

    def append(self, run_id: str, seq: int, events: Any, *args: Any, **kwargs: Any) -> None:
        if len(self.appended) + 1 in self.down_for:
            self.down_for.discard(len(self.appended) + 1)
            raise fluxo.StoreUnavailableError("the database went away")
        before = self.cancel_before
        if before is not None and any(isinstance(e, before) for e in events):
            self.cancel_before = None
            self.inner.request_cancel(run_id, now=kwargs["now"])  # engine.cancel, just now
        self.inner.append(run_id, seq, events, *args, **kwargs)
        self.appended.append(kinds(events))


@fluxo.step(name="heldstores.add")
def add(x: int) -> int:
    return x + 1


@fluxo.workflow(name="heldstores.five")
def five(x: int) -> int:
    for _ in range(5):
        x = add(x)
    return x


def test_the_last_step_and_the_end_are_one_append(store: fluxo.Store) -> None:
    spy = Appends(store)
    with fluxo.Engine(spy, workflows=[five], clock=FakeClock()) as engine:  # type: ignore[arg-type]
        handle = engine.start(five, 0)
        assert execute(engine, handle.id) is Outcome.COMPLETED
        assert handle.result(timeout=1) == 5
        assert spy.appended[-1] == ["step_completed", "workflow_completed"]
        assert kinds(engine.history(handle.id)) == [
            "workflow_started",
            *["step_completed"] * 5,
            "workflow_completed",
        ]


def test_a_cancel_accepted_before_the_end_comes_after_the_last_step(store: fluxo.Store) -> None:
    spy = Appends(store, cancel_before=history.WorkflowCompleted)
    with fluxo.Engine(spy, workflows=[five], clock=FakeClock()) as engine:  # type: ignore[arg-type]
        handle = engine.start(five, 0)
        assert execute(engine, handle.id) is Outcome.CANCELLED
        assert kinds(engine.history(handle.id)) == [
            "workflow_started",
            *["step_completed"] * 5,
            "cancel_requested",
            "workflow_cancelled",
        ]
        assert engine.get_run(handle.id).status is fluxo.RunStatus.CANCELLED
        fluxo.testing.replay(engine.export_history(handle.id), workflows=[five])


@fluxo.workflow(name="heldstores.kid")
def kid() -> int:
    return add(1)


@fluxo.step(name="heldstores.add_async")
async def add_async(x: int) -> int:
    return x + 1


@fluxo.workflow(name="heldstores.async_parent")
async def async_parent() -> str:
    pending = add_async(1)  # made by the next durable call
    handle = await fluxo.start_child_async(kid.options(detached=True))
    await pending
    return handle.id


def test_an_async_child_is_created_once_across_a_store_failure(store: fluxo.Store) -> None:
    spy = Appends(store)
    clock = FakeClock()
    with fluxo.Engine(spy, workflows=[async_parent, kid], clock=clock) as engine:  # type: ignore[arg-type]
        handle = engine.start(async_parent)
        spy.down_for = {2}  # the step's record is written; the child's start is not
        assert execute(engine, handle.id, "a") is Outcome.BROKEN
        clock.advance(31)
        assert execute(engine, handle.id, "b") is Outcome.COMPLETED
        child = handle.result(timeout=1)
        assert child == history.child_id(handle.id, 2)
        assert [run.id for run in store.list_runs(workflows=["heldstores.kid"])] == [child]
