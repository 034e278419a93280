"""``engine.fork`` on every store: the copy, and a forking process that dies before it.

The forked run's prefix (events and consumed signals) is written by the engine that
forks, or, when that process dies first, by the worker that claims the run once its
lease expires. Either way the run replays exactly the prefix asked for, and each
copied signal is stored once.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

import fluxo
from fluxo import history
from tests.unit.helpers import FakeClock, SimulatedCrash

CALLS: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()


@fluxo.step(name="forks.add")
def add_v1(x: int) -> int:
    CALLS["v1"] += 1
    return x + 1


@fluxo.step(name="forks.add")
def add_v2(x: int) -> int:
    CALLS["v2"] += 1
    return x + 100


@fluxo.workflow(name="forks.flow")
def flow_v1(x: int) -> list[int]:
    first: int = fluxo.wait_for_signal("n", type=int)
    second: int = fluxo.wait_for_signal("n", type=int)
    got = [first, second]
    for _ in range(3):
        got.append(add_v1(got[-1]))
    return got


@fluxo.workflow(name="forks.flow")
def flow_v2(x: int) -> list[int]:
    first: int = fluxo.wait_for_signal("n", type=int)
    second: int = fluxo.wait_for_signal("n", type=int)
    got = [first, second]
    for _ in range(3):
        got.append(add_v2(got[-1]))
    return got


class CrashOnCopy:
    """Forwards to a store; once armed, the process "dies" at the fork's ``when``."""

    def __init__(self, inner: fluxo.Store, when: str, after: int = 0) -> None:
        self.inner = inner
        self.when = when
        self.after = after
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def send_signal(self, run_id: str, name: str, payload: bytes, **kw: Any) -> bool:
        if self.armed and self.when == "signal":
            if self.after == 0:
                raise SimulatedCrash
            self.after -= 1
        return self.inner.send_signal(run_id, name, payload, **kw)

    def append(self, run_id: str, expected_seq: int, events: Any, **kw: Any) -> None:
        if self.armed and self.when == "append" and expected_seq == 1:
            raise SimulatedCrash
        self.inner.append(run_id, expected_seq, events, **kw)


def finished_source(store: Any, clock: FakeClock) -> fluxo.Engine:
    """Run ``src`` of version 1 to its end on ``store``: signals 1 and 2, steps 3, 4, 5."""
    with fluxo.Engine(store, workflows=[flow_v1], clock=clock) as v1:
        v1.start(flow_v1.options(id="src"), 0)
        v1.signal("src", "n", 1)
        v1.signal("src", "n", 2)
        v1.worker().process_one()
        assert v1.handle("src").result() == [1, 2, 3, 4, 5]
    CALLS.clear()
    return fluxo.Engine(store, workflows=[flow_v2], clock=clock)


def test_a_fork_replays_its_prefix_with_its_signals_and_runs_the_rest_anew(
    store: fluxo.Store,
) -> None:
    clock = FakeClock()
    with finished_source(store, clock) as v2:
        assert [e.kind for e in v2.history("src")][1:4] == [
            "signal_received",
            "signal_received",
            "step_completed",
        ]
        handle = v2.fork("src", from_position=4, id="fork")  # keeps the first step
        forked = store.load("fork")
        assert forked.events == store.load("src").events[:4]
        assert [(s.name, s.payload) for s in forked.signals] == [("n", b"1"), ("n", b"2")]
        assert forked.run.headers["fluxo-forked-from"] == "src"
        assert forked.run.status is history.RunStatus.PENDING
        assert v2.fork("src", from_position=4, id="fork").id == "fork"
        v2.worker().process_one()
        assert handle.result() == [1, 2, 3, 103, 203]
        assert CALLS == {"v2": 2}


@pytest.mark.parametrize(("when", "after"), [("append", 0), ("signal", 1)])
def test_a_worker_completes_the_copy_when_the_forking_process_died(
    store: fluxo.Store, when: str, after: int
) -> None:
    clock = FakeClock()
    crashing = CrashOnCopy(store, when, after)
    with finished_source(crashing, clock) as v2:
        crashing.armed = True
        with pytest.raises(SimulatedCrash):
            v2.fork("src", from_position=4, id="fork")
        crashing.armed = False
        assert [e.kind for e in v2.history("fork")] == ["workflow_started"]
        assert v2.worker().process_one() == 0  # leased to the engine that forked it
        clock.advance(31)  # its lease expires
        v2.worker().process_one()
        forked = store.load("fork")
        assert forked.events[:4] == store.load("src").events[:4]
        assert [(s.name, s.payload) for s in forked.signals] == [("n", b"1"), ("n", b"2")]
        assert v2.handle("fork").result() == [1, 2, 3, 103, 203]
        assert CALLS == {"v2": 2}
