"""``async def`` workflows and steps, on the replay core that sync workflows use."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import fluxo
from fluxo import history
from fluxo.testing import WorkflowEnvironment

WAIT = 30.0


@dataclasses.dataclass(frozen=True)
class Receipt:
    order: str
    cents: int


live_calls: list[str] = []


@fluxo.step(name="aw.charge")
async def charge(order: str, cents: int) -> Receipt:
    live_calls.append(f"charge {order}")
    await asyncio.sleep(0)  # a real await, on the step loop
    return Receipt(order, cents)


@fluxo.step(name="aw.reserve")
def reserve(order: str) -> str:
    live_calls.append(f"reserve {order}")
    return f"held-{order}-{threading.current_thread().name}"


@fluxo.workflow(name="aw.checkout")
async def checkout(order: str, cents: int) -> str:
    held = await reserve.call_async(order)
    receipt = await charge(order, cents)
    return f"{held.split('-')[1]}:{receipt.order}:{receipt.cents}"


@fluxo.step(name="aw.delayed")
async def delayed(i: int) -> int:
    await asyncio.sleep(random.random() / 100)  # completion order varies from run to run
    live_calls.append(f"delayed {i}")
    return i * i


@fluxo.workflow(name="aw.fans")
async def fans(n: int) -> list[int]:
    return list(await asyncio.gather(*(delayed(i) for i in range(n))))


@fluxo.workflow(name="aw.waits")
async def waits(order: str) -> str:
    await fluxo.sleep_async(timedelta(hours=1))
    answer: str = await fluxo.wait_for_signal_async("answer", type=str)
    receipt = await charge(order, 100)
    return f"{answer} {receipt.order}"


@fluxo.workflow(name="aw.child")
async def child_wf(n: int) -> int:
    return (await charge(f"c{n}", n)).cents * 2


@fluxo.workflow(name="aw.parent")
async def parent_wf() -> int:
    first = await child_wf(1)
    second = await child_wf(2)
    return first + second


@fluxo.step(name="aw.boom", retry=fluxo.Retry(max_attempts=2, initial=timedelta(0)))
async def boom() -> None:
    live_calls.append("boom")
    raise KeyError("gone")


@fluxo.workflow(name="aw.fails")
async def fails() -> str:
    try:
        await boom()
    except fluxo.StepError as exc:
        return f"caught {exc.type_name}"
    return "no"


@fluxo.step(name="aw.slow", timeout=0.05, retry=fluxo.Retry(max_attempts=1))
async def slow() -> None:
    await asyncio.sleep(10)


@fluxo.workflow(name="aw.times_out")
async def times_out() -> str:
    try:
        await slow()
    except fluxo.StepError as exc:
        return exc.type_name
    return "no"


WORKFLOWS = [checkout, fans, waits, child_wf, parent_wf, fails, times_out]


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    live_calls.clear()


@pytest.fixture
def engine() -> Iterator[fluxo.Engine]:
    with fluxo.Engine("memory://", workflows=WORKFLOWS) as made:
        yield made


def test_an_async_workflow_awaits_async_and_sync_steps(engine: fluxo.Engine) -> None:
    assert engine.run(checkout.options(id="c-1"), "o1", 4200) == "o1:o1:4200"
    # the sync step ran on a step thread, never on the workflow's event loop
    assert engine.history("c-1")[1].kind == "step_completed"
    assert live_calls == ["reserve o1", "charge o1"]
    kinds = [e.kind for e in engine.history("c-1")]
    assert kinds == ["workflow_started", "step_completed", "step_completed", "workflow_completed"]


def test_the_sync_step_runs_on_a_step_thread(engine: fluxo.Engine) -> None:
    engine.run(checkout.options(id="c-2"), "o2", 1)
    recorded = engine.history("c-2")[1]
    assert isinstance(recorded, history.StepCompleted)
    assert b"fluxo" in recorded.data  # held-o2-fluxo-step_0: a thread of Fluxo's pool


def test_a_history_replays_without_running_steps_again() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:  # always_replay: restarts after records
        assert env.run(checkout, "o3", 300) == "o3:o3:300"
    assert live_calls == ["reserve o3", "charge o3"]


def test_gathered_steps_finishing_in_any_order_replay_the_same() -> None:
    for attempt in range(3):
        live_calls.clear()
        with WorkflowEnvironment(workflows=WORKFLOWS) as env:
            assert env.run(fans.options(id=f"fans-{attempt}"), 10) == [i * i for i in range(10)]
            recorded = [e.kind for e in env.history(f"fans-{attempt}")]
        assert recorded[1] == "parallel_started"  # the gathered calls ran as one block
        assert recorded.count("branch_completed") == 10
        assert sorted(live_calls) == sorted(f"delayed {i}" for i in range(10))


def test_a_forced_replay_agrees_with_the_live_run(engine: fluxo.Engine) -> None:
    assert engine.run(fans.options(id="f-live"), 6) == [0, 1, 4, 9, 16, 25]
    live_calls.clear()
    exported = engine.export_history("f-live")
    from fluxo.testing import replay

    replay(exported, workflows=WORKFLOWS)  # raises on any mismatch
    assert live_calls == []


def test_timers_and_signals_wait_durably() -> None:
    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        handle = env.start(waits, "w1")
        env.advance(timedelta(hours=2))
        env.signal(handle.id, "answer", "yes")
        assert handle.result() == "yes w1"
        kinds = [e.kind for e in env.history(handle.id)]
    assert "timer_started" in kinds
    assert "signal_received" in kinds


def test_async_child_workflows_are_awaited(engine: fluxo.Engine) -> None:
    assert engine.run(parent_wf.options(id="p-1")) == 6
    assert [e.kind for e in engine.history("p-1")].count("child_completed") == 2


def test_a_failing_async_step_raises_step_error_where_awaited(engine: fluxo.Engine) -> None:
    assert engine.run(fails.options(id="f-1")) == "caught builtins.KeyError"
    assert live_calls == ["boom", "boom"]  # retried once, as its retry says


def test_an_async_step_past_its_timeout_is_cancelled(engine: fluxo.Engine) -> None:
    assert engine.run(times_out.options(id="t-1")) == "fluxo.StepTimeout"
    failed = [e for e in engine.history("t-1") if isinstance(e, history.StepFailed)]
    message = engine.codec.decode(failed[0].data, dict)["message"]
    assert message.endswith("timeout of 0.05s; it was cancelled")  # no thread left running


cancelled_attempts: list[int] = []


@fluxo.step(name="aw.cancelled_inside", retry=fluxo.Retry(max_attempts=2, initial=timedelta(0)))
async def cancelled_inside() -> str:
    cancelled_attempts.append(1)
    if len(cancelled_attempts) == 1:
        raise asyncio.CancelledError  # as if a client it awaited was cancelled
    return "second attempt"


@fluxo.workflow(name="aw.cancelled_inside_wf")
async def cancelled_inside_wf() -> str:
    return await cancelled_inside()


def test_a_step_raising_cancelled_error_itself_is_a_failed_attempt_not_a_timeout() -> None:
    cancelled_attempts.clear()
    with fluxo.Engine("memory://", workflows=[cancelled_inside_wf]) as engine:
        assert engine.run(cancelled_inside_wf.options(id="ci")) == "second attempt"
        retried = [e for e in engine.history("ci") if isinstance(e, history.StepAttemptFailed)]
        info = engine.codec.decode(retried[0].data, dict)
    assert info["type"] == "builtins.RuntimeError"
    assert "raised asyncio.CancelledError" in info["message"]


def test_stubs_answer_for_async_steps() -> None:
    async def fake(order: str, cents: int) -> Receipt:
        return Receipt("stubbed", cents)

    with WorkflowEnvironment(workflows=WORKFLOWS) as env:
        env.stub(charge, fake)
        assert env.run(checkout, "o4", 5) == "o4:stubbed:5"
        env.stub(charge, returns=Receipt("value", 7))
        assert env.run(checkout, "o5", 5) == "o5:value:7"
    assert live_calls == ["reserve o4", "reserve o5"]


def test_mixing_sync_and_async_is_refused_with_what_to_write(engine: fluxo.Engine) -> None:
    @fluxo.workflow(name="aw.sync_calls_async")
    def sync_calls_async() -> Any:
        return charge("x", 1)

    @fluxo.workflow(name="aw.async_calls_sync_plainly")
    async def async_calls_sync_plainly() -> str:
        return reserve("x")

    @fluxo.workflow(name="aw.async_sleeps_sync")
    async def async_sleeps_sync() -> None:
        fluxo.sleep(1)

    @fluxo.workflow(name="aw.sync_sleeps_async")
    def sync_sleeps_async() -> None:
        fluxo.sleep_async(1).close()

    cases = {
        sync_calls_async: "cannot await it",
        async_calls_sync_plainly: r"call_async",
        async_sleeps_sync: r"await fluxo\.sleep_async",
        sync_sleeps_async: r"fluxo\.sleep\(",
    }
    with fluxo.Engine("memory://", workflows=list(cases)) as mixed:
        for wf, message in cases.items():
            with pytest.raises(fluxo.WorkflowFailedError, match=message):
                mixed.run(wf)


def test_steps_and_primitives_outside_a_workflow_are_plain_calls() -> None:
    async def main() -> tuple[Receipt, str]:
        await fluxo.sleep_async(0)
        return await charge("plain", 1), await reserve.call_async("plain")

    receipt, held = asyncio.run(main())
    assert receipt == Receipt("plain", 1)
    assert held.startswith("held-plain-")
    with pytest.raises(fluxo.DefinitionError, match="directly"):
        charge.call_async("x", 1)  # type: ignore[attr-defined]


def test_on_every_store_kind_the_worker_runs_async_workflows(engine: fluxo.Engine) -> None:
    with engine.worker(concurrency=2, idle_timeout=0.05):
        handles = [engine.start(checkout.options(id=f"wk-{i}"), f"o{i}", i) for i in range(5)]
        assert [h.result(timeout=WAIT) for h in handles] == [f"o{i}:o{i}:{i}" for i in range(5)]


@fluxo.workflow(name="aw.three_days")
async def three_days(order: str) -> str:
    await fluxo.sleep_async(timedelta(days=3))
    approved: bool = await fluxo.wait_for_signal_async("approved", type=bool)
    receipt = await charge(order, 500)
    return f"{approved} {receipt.order}"


def test_a_three_day_async_workflow_is_tested_in_virtual_time() -> None:
    with WorkflowEnvironment(workflows=[three_days]) as env:
        env.stub(charge, returns=Receipt("stubbed", 500))
        handle = env.start(three_days, "o-3d")
        env.advance(timedelta(days=3))
        env.signal(handle.id, "approved", True)
        assert handle.result() == "True stubbed"
        kinds = [e.kind for e in env.history(handle.id)]
    assert kinds.count("timer_fired") == 1
    assert live_calls == []  # the stub answered


def test_an_async_child_workflow_is_stubbed_like_a_step() -> None:
    async def fake_child(n: int) -> int:
        return 100 + n

    with WorkflowEnvironment(workflows=[parent_wf, child_wf]) as env:
        env.stub(child_wf, returns=7)
        assert env.run(parent_wf) == 14
        env.stub(child_wf, fake_child)
        assert env.run(parent_wf.options(id="p-fake")) == 203
        calls = env.calls(child_wf)
    assert [call.args for call in calls][-2:] == [(1,), (2,)]
    assert live_calls == []  # the real child, and so its step, never ran


running = {"now": 0, "most": 0}
running_lock = threading.Lock()


@fluxo.step(name="aw.measure")
async def measure(i: int) -> int:
    with running_lock:
        running["now"] += 1
        running["most"] = max(running["most"], running["now"])
    await asyncio.sleep(random.random() / 50)  # finishing order differs from the call order
    with running_lock:
        running["now"] -= 1
    live_calls.append(f"measure {i}")
    return i * 10


@fluxo.step(name="aw.plain_square")
def plain_square(i: int) -> int:
    return i * i


@fluxo.workflow(name="aw.fan_out")
async def fan_out(n: int) -> list[int]:
    tens = await fluxo.map_async(measure, range(n))
    both = await fluxo.parallel_async(measure.bind(n), plain_square.bind(n))
    return [*tens, *both]


def test_map_async_runs_async_steps_at_once_and_replays_them_in_order() -> None:
    running["most"] = 0
    with fluxo.Engine("memory://", workflows=[fan_out]) as fanning:
        expected = [i * 10 for i in range(10)] + [100, 100]
        assert fanning.run(fan_out.options(id="fan"), 10) == expected
        exported = fanning.export_history("fan")
    assert running["most"] > 1  # the branches overlapped
    assert sorted(live_calls) == sorted(f"measure {i}" for i in range(11))
    live_calls.clear()
    from fluxo.testing import replay

    replay(exported, workflows=[fan_out])  # whatever order they finished in
    assert live_calls == []
    with WorkflowEnvironment(workflows=[fan_out]) as env:  # always_replay
        assert env.run(fan_out, 4) == [0, 10, 20, 30, 40, 16]


def test_the_sync_fan_out_is_refused_in_async_workflows() -> None:
    @fluxo.workflow(name="aw.wrong_map")
    async def wrong_map() -> list[int]:
        return fluxo.map(plain_square, [1, 2])

    @fluxo.workflow(name="aw.wrong_parallel_async")
    def wrong_parallel_async() -> None:
        fluxo.parallel_async(plain_square.bind(1)).close()

    with fluxo.Engine("memory://", workflows=[wrong_map, wrong_parallel_async]) as engine:
        with pytest.raises(fluxo.WorkflowFailedError, match=r"fluxo\.map_async"):
            engine.run(wrong_map)
        with pytest.raises(fluxo.WorkflowFailedError, match=r"fluxo\.parallel\("):
            engine.run(wrong_parallel_async)

    async def plain() -> list[int]:
        return await fluxo.map_async(plain_square, [2, 3])

    assert asyncio.run(plain()) == [4, 9]  # outside a workflow: plain calls


@fluxo.workflow(name="aw.sync_child")
def sync_child(n: int) -> int:
    return plain_square(n)


@fluxo.workflow(name="aw.starts_children")
async def starts_children() -> int:
    first = await fluxo.start_child_async(child_wf, 3)
    second = await fluxo.start_child_async(sync_child.options(id="sq-4"), 4)
    assert second.id == "sq-4"
    return await first.result_async() + await second.result_async()


def test_start_child_async_starts_async_and_sync_children_awaited_later() -> None:
    with WorkflowEnvironment(workflows=[starts_children, child_wf, sync_child]) as env:
        assert env.run(starts_children) == 6 + 16
    with fluxo.Engine("memory://", workflows=[starts_children, child_wf, sync_child]) as engine:
        assert engine.run(starts_children.options(id="sc")) == 22
        kinds = [e.kind for e in engine.history("sc")]
    assert kinds.count("child_started") == 2
    assert kinds.count("child_completed") == 2


def test_the_sync_child_forms_are_refused_in_async_workflows() -> None:
    @fluxo.workflow(name="aw.wrong_start")
    async def wrong_start() -> None:
        fluxo.start_child(sync_child, 1)

    @fluxo.workflow(name="aw.wrong_result")
    async def wrong_result() -> int:
        handle = await fluxo.start_child_async(sync_child, 1)
        return handle.result()

    workflows = [wrong_start, wrong_result, sync_child]
    with fluxo.Engine("memory://", workflows=workflows) as engine:
        with pytest.raises(fluxo.WorkflowFailedError, match=r"start_child_async"):
            engine.run(wrong_start)
        with pytest.raises(fluxo.WorkflowFailedError, match=r"result_async"):
            engine.run(wrong_result)
