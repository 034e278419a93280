"""fluxo.contrib.otel: one trace per run, spans for live attempts only, on a private provider."""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import fluxo
from fluxo import _errors, _executor
from fluxo.contrib import otel
from fluxo.contrib.otel import OpenTelemetryObserver
from fluxo.stores.memory import MemoryStore
from fluxo.testing import WorkflowEnvironment

from .helpers import T0, FakeClock, execute


@dataclass
class Traced:
    """A private provider's observer, its exporter, and a tracer for the caller's spans."""

    observer: OpenTelemetryObserver
    exporter: InMemorySpanExporter
    tracer: trace.Tracer

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.named(name)
        return span


@pytest.fixture
def traced() -> Iterator[Traced]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Traced(
        OpenTelemetryObserver(tracer_provider=provider), exporter, provider.get_tracer("caller")
    )
    provider.shutdown()


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_ids(spans: Sequence[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


@fluxo.step(name="otel.add")
def add(a: int, b: int) -> int:
    return a + b


@fluxo.workflow(name="otel.adds")
def adds(n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return total


_flaky_calls: dict[str, int] = {}


@fluxo.step(name="otel.flaky", retry=fluxo.Retry(max_attempts=2, initial=timedelta(0)))
def flaky(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] < 2:
        raise ValueError("not yet")
    return key


@fluxo.workflow(name="otel.retries")
def retries(key: str) -> str:
    return flaky(key)


@fluxo.step(name="otel.broken", retry=fluxo.Retry(max_attempts=1))
def broken() -> None:
    raise KeyError("gone")


@fluxo.workflow(name="otel.fails")
def fails() -> None:
    broken()


@fluxo.workflow(name="otel.waits")
def waits() -> int:
    first = add(1, 1)
    fluxo.sleep(timedelta(hours=1))
    answer: int = fluxo.wait_for_signal("answer", type=int)
    return add(first, answer)


@fluxo.workflow(name="otel.asks_forever")
def asks_forever() -> int:
    answer: int = fluxo.wait_for_signal("never", type=int)
    return answer


@fluxo.workflow(name="otel.parent")
def parent() -> int:
    return adds(2) + add(10, 0)


@fluxo.step(name="otel.double")
def double(x: int) -> int:
    return 2 * x


@fluxo.workflow(name="otel.fans")
def fans() -> list[int]:
    return fluxo.map(double, [1, 2, 3])


def engine_with(traced: Traced, *workflows: fluxo.Workflow[..., object]) -> fluxo.Engine:
    return fluxo.Engine("memory://", workflows=workflows, observers=[traced.observer])


def test_a_run_is_one_trace_under_the_callers_span(traced: Traced) -> None:
    with engine_with(traced, adds) as engine:
        with traced.tracer.start_as_current_span("POST /orders"):
            assert engine.run(adds.options(id="r-1"), 3) == 3
        recorded = engine.get_run("r-1").headers

    caller = traced.one("POST /orders")
    start = traced.one("start otel.adds")
    steps = traced.named("step otel.add")
    run = traced.one("run otel.adds")
    assert len(traced.spans()) == 6
    assert trace_ids(traced.spans()) == {caller.context.trace_id}  # type: ignore[union-attr]
    assert parent_of(start) == span_id(caller)
    # engine.run executes in the caller's thread, yet the run's spans hang off its start.
    assert {parent_of(s) for s in [*steps, run]} == {span_id(start)}

    assert start.kind is SpanKind.PRODUCER
    assert attrs(start) == {"fluxo.run_id": "r-1", "fluxo.workflow": "otel.adds"}
    traceparent = recorded["traceparent"]
    assert traceparent.split("-")[2] == f"{span_id(start):016x}"  # recorded with the run

    assert [s.kind for s in steps] == [SpanKind.INTERNAL] * 3
    assert [attrs(s)["fluxo.position"] for s in steps] == [1, 2, 3]
    first = attrs(steps[0])
    assert first["fluxo.run_id"] == "r-1"
    assert first["fluxo.workflow"] == "otel.adds"
    assert first["fluxo.step"] == first["code.function.name"] == "otel.add"
    assert first["fluxo.attempt"] == 1
    assert first["fluxo.worker"]
    assert "fluxo.branch" not in first
    assert all(s.status.status_code is StatusCode.UNSET for s in steps)

    assert run.kind is SpanKind.CONSUMER
    assert run.status.status_code is StatusCode.OK
    assert attrs(run)["fluxo.outcome"] == "completed"
    assert run.start_time is not None
    assert run.end_time is not None
    assert start.start_time is not None
    assert run.start_time <= run.end_time
    assert steps[-1].end_time is not None
    assert run.end_time >= steps[-1].end_time - 1_000_000  # the engine's clock, in ns


def test_spans_made_inside_a_step_are_its_children_and_see_the_runs_baggage(
    traced: Traced,
) -> None:
    seen: list[tuple[int, object]] = []

    @fluxo.step(name="otel.calls_out")
    def calls_out() -> None:
        with traced.tracer.start_as_current_span("GET /inventory") as span:
            seen.append((span.get_span_context().span_id, baggage.get_baggage("tenant")))

    @fluxo.workflow(name="otel.calls")
    def calls() -> None:
        calls_out()

    with engine_with(traced, calls) as engine:
        token = otel_context.attach(baggage.set_baggage("tenant", "t-1"))
        try:
            engine.start(calls.options(id="calls-1"))
        finally:
            otel_context.detach(token)
        recorded = engine.get_run("calls-1").headers
        execute(engine, "calls-1")  # in a context that knows no tenant

    assert recorded["baggage"] == "tenant=t-1"
    step = traced.one("step otel.calls_out")
    http = traced.one("GET /inventory")
    assert parent_of(http) == span_id(step)
    assert seen == [(span_id(http), "t-1")]


def test_a_failed_attempt_and_its_retry_are_two_step_spans(traced: Traced) -> None:
    with engine_with(traced, retries) as engine:
        assert engine.run(retries, "k-1") == "k-1"
    first, second = traced.named("step otel.flaky")
    assert [attrs(s)["fluxo.attempt"] for s in (first, second)] == [1, 2]
    assert first.status.status_code is StatusCode.ERROR
    value_error = _errors.type_name(ValueError)  # as histories name it
    assert first.status.description == f"{value_error}: not yet"
    assert attrs(first)["error.type"] == value_error
    (exception,) = first.events
    assert exception.name == "exception"
    assert dict(exception.attributes or {})["exception.message"] == "not yet"
    assert second.status.status_code is StatusCode.UNSET
    assert "error.type" not in attrs(second)
    assert traced.one("run otel.retries").status.status_code is StatusCode.OK


def test_a_failed_run_says_why(traced: Traced) -> None:
    with engine_with(traced, fails) as engine, pytest.raises(fluxo.WorkflowFailedError):
        engine.run(fails)
    step = traced.one("step otel.broken")
    assert step.status.status_code is StatusCode.ERROR
    assert attrs(step)["error.type"] == _errors.type_name(KeyError)
    run = traced.one("run otel.fails")
    assert run.status.status_code is StatusCode.ERROR
    assert attrs(run)["fluxo.outcome"] == "failed"
    assert attrs(run)["error.type"] == "fluxo.StepError"
    assert "gone" in str(attrs(run)["fluxo.error.message"])
    assert [e.name for e in run.events] == ["exception"]


def test_replays_make_no_spans(traced: Traced) -> None:
    with WorkflowEnvironment(workflows=[waits], observers=[traced.observer]) as env:
        handle = env.start(waits)  # always_replay: executed again after every record
        env.signal(handle, "answer", 40)
        assert handle.result() == 42
    # The first add is live once and replayed after every later record: one span.
    assert len(traced.named("step otel.add")) == 2
    assert len(traced.named("start otel.waits")) == 1
    assert len(traced.named("run otel.waits")) == 1
    # engine.signal makes its span in the sender's trace (here: a trace of its own).
    (signal,) = traced.named("signal answer")
    assert len(trace_ids([s for s in traced.spans() if s is not signal])) == 1


def test_a_resumed_run_replays_without_spans_and_its_waits_leave_markers(
    traced: Traced, clock: FakeClock
) -> None:
    with fluxo.Engine(
        "memory://", workflows=[waits], observers=[traced.observer], clock=clock
    ) as engine:
        engine.start(waits.options(id="waits-1"))
        assert execute(engine, "waits-1", "worker-a") is _executor.Outcome.SUSPENDED
        clock.advance(3600)
        assert execute(engine, "waits-1", "worker-b") is _executor.Outcome.SUSPENDED
        with traced.tracer.start_as_current_span("POST /answers"):
            engine.signal("waits-1", "answer", 40)
        assert execute(engine, "waits-1", "worker-c") is _executor.Outcome.COMPLETED

    def where(span: ReadableSpan) -> tuple[str, object]:
        return span.name, attrs(span).get("fluxo.worker")

    assert sorted(map(where, traced.spans()), key=str) == sorted(
        [
            ("start otel.waits", None),
            ("step otel.add", "worker-a"),  # replayed by b and c: no spans
            ("timer fired sleep", "worker-b"),
            ("POST /answers", None),
            ("signal answer", None),
            ("signal received answer", "worker-c"),
            ("step otel.add", "worker-c"),
            ("run otel.waits", "worker-c"),
        ],
        key=str,
    )
    start = traced.one("start otel.waits")
    senders = {"POST /answers", "signal answer"}
    assert len(trace_ids([s for s in traced.spans() if s.name not in senders])) == 1
    for marker in ("timer fired sleep", "signal received answer"):
        span = traced.one(marker)
        assert parent_of(span) == span_id(start)
        assert span.start_time == span.end_time
    timer = traced.one("timer fired sleep")
    assert attrs(timer)["fluxo.timer"] == "sleep"
    assert timer.start_time == int((T0 + 3600) * 1e9)  # the engine's clock
    run = traced.one("run otel.waits")
    assert run.start_time == int(T0 * 1e9)  # from the run's creation
    assert run.end_time == int((T0 + 3600) * 1e9)

    signal = traced.one("signal answer")
    assert signal.kind is SpanKind.PRODUCER
    assert parent_of(signal) == span_id(traced.one("POST /answers"))  # the sender's context
    (link,) = signal.links
    assert link.context.span_id == span_id(start)
    assert link.context.trace_id == start.context.trace_id  # type: ignore[union-attr]
    assert attrs(signal)["fluxo.signal"] == "answer"
    assert attrs(signal)["fluxo.run_id"] == "waits-1"
    assert attrs(signal)["fluxo.workflow"] == "otel.waits"


def test_a_child_runs_spans_join_its_parents_trace(traced: Traced) -> None:
    with (
        engine_with(traced, parent, adds) as engine,
        traced.tracer.start_as_current_span("POST /parents"),
    ):
        assert engine.run(parent.options(id="p-1")) == 11
    caller = traced.one("POST /parents")
    parent_start = traced.one("start otel.parent")
    child_start = traced.one("start otel.adds")
    assert trace_ids(traced.spans()) == {caller.context.trace_id}  # type: ignore[union-attr]
    assert parent_of(parent_start) == span_id(caller)
    assert parent_of(child_start) == span_id(parent_start)
    child_id = attrs(child_start)["fluxo.run_id"]
    assert attrs(child_start)["fluxo.parent_run_id"] == "p-1"
    by_run: dict[object, set[int | None]] = {}
    for span in traced.named("step otel.add"):
        by_run.setdefault(attrs(span)["fluxo.run_id"], set()).add(parent_of(span))
    assert by_run == {child_id: {span_id(child_start)}, "p-1": {span_id(parent_start)}}
    assert parent_of(traced.one("run otel.adds")) == span_id(child_start)
    assert parent_of(traced.one("run otel.parent")) == span_id(parent_start)


def test_parallel_branches_make_a_span_each(traced: Traced) -> None:
    with engine_with(traced, fans) as engine:
        assert engine.run(fans) == [2, 4, 6]
    start = traced.one("start otel.fans")
    steps = traced.named("step otel.double")
    assert sorted(attrs(s)["fluxo.branch"] for s in steps) == [0, 1, 2]  # type: ignore[type-var]
    assert {parent_of(s) for s in steps} == {span_id(start)}


def test_a_run_recorded_without_a_trace_context_gets_one_derived_from_its_id(
    traced: Traced,
) -> None:
    store = MemoryStore()
    with fluxo.Engine(store, workflows=[adds]) as untraced:
        untraced.start(adds.options(id="plain-1"), 2)
        assert not untraced.get_run("plain-1").headers
    with fluxo.Engine(store, workflows=[adds], observers=[traced.observer]) as engine:
        execute(engine, "plain-1")
    store.close()

    digest = hashlib.sha256(b"plain-1").digest()
    spans = traced.spans()
    assert sorted(s.name for s in spans) == ["run otel.adds", "step otel.add", "step otel.add"]
    assert trace_ids(spans) == {int.from_bytes(digest[:16], "big")}
    assert {parent_of(s) for s in spans} == {int.from_bytes(digest[16:24], "big")}
    assert all(s.parent is not None and s.parent.is_remote for s in spans)


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "00-not-a-trace-01"},
        {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # an invalid (zero) id
        {"traceparent": ""},
        {"unrelated": "value"},
    ],
)
def test_garbled_headers_fall_back_to_the_derived_parent(
    traced: Traced, headers: dict[str, str]
) -> None:
    observer = traced.observer
    event = fluxo.RunEvent(
        kind="step_started",
        run_id="odd-1",
        workflow="w",
        time=1_700_000_000.0,
        step="s",
        attempt=1,
        headers=headers,
    )
    scope = observer.step_scope(event)
    assert scope is not None
    with scope:
        pass
    observer.run_completed(
        fluxo.RunEvent(kind="run_completed", run_id="odd-1", workflow="w", time=1.0)
    )
    observer.signal_sent(fluxo.RunEvent(kind="signal_sent", run_id="odd-1", workflow="", time=1.0))
    child_headers = observer.headers(
        "child", "odd-2", fluxo.RunEvent(kind="child_started", run_id="odd-1", workflow="w", time=1)
    )
    expected = otel._derived_span_context("odd-1")
    step, run, signal, child_start = traced.spans()
    assert step.parent is not None
    assert step.parent.span_id == expected.span_id
    assert trace_ids([step, run, child_start]) == {expected.trace_id}
    assert signal.links[0].context == expected
    assert "fluxo.workflow" not in attrs(signal)
    assert run.start_time == run.end_time  # no duration told: a zero-length span
    assert child_headers["traceparent"].split("-")[1] == f"{expected.trace_id:032x}"


def test_a_changed_workflow_leaves_a_nondeterminism_marker(traced: Traced) -> None:
    @fluxo.workflow(name="otel.changing")
    def before() -> int:
        add(1, 1)
        return fluxo.wait_for_signal("go", type=int)

    @fluxo.workflow(name="otel.changing")
    def after() -> int:
        fluxo.sleep(1)
        return fluxo.wait_for_signal("go", type=int)

    store = MemoryStore()
    with fluxo.Engine(store, workflows=[before], observers=[traced.observer]) as old:
        old.start(before.options(id="changing-1"))
        execute(old, "changing-1")
        old.signal("changing-1", "go", 1)
    with fluxo.Engine(store, workflows=[after], observers=[traced.observer]) as new:
        assert execute(new, "changing-1") is _executor.Outcome.FAILED
    store.close()
    marker = traced.one("nondeterminism otel.changing")
    assert marker.status.status_code is StatusCode.ERROR
    assert attrs(marker)["error.type"] == "fluxo.NondeterminismError"
    run = traced.one("run otel.changing")
    assert run.status.status_code is StatusCode.ERROR
    start = traced.one("start otel.changing")
    assert parent_of(marker) == parent_of(run) == span_id(start)


def test_a_lost_lease_leaves_a_marker(traced: Traced) -> None:
    observer = traced.observer
    headers = observer.headers("w", "lost-1", None)
    observer.lease_lost(
        fluxo.RunEvent(kind="lease_lost", run_id="lost-1", workflow="w", time=2.0, headers=headers)
    )
    observer.lease_lost(
        fluxo.RunEvent(
            kind="lease_lost",
            run_id="lost-1",
            workflow="w",
            time=3.0,
            headers=headers,
            replayed=True,
        )
    )
    start, marker = traced.spans()
    assert marker.name == "lease lost w"
    assert parent_of(marker) == span_id(start)
    assert marker.status.status_code is StatusCode.UNSET
    assert marker.start_time == marker.end_time == 2_000_000_000


def test_large_baggage_is_left_out_of_the_recorded_context(traced: Traced) -> None:
    token = otel_context.attach(baggage.set_baggage("blob", "x" * 9000))
    try:
        headers = traced.observer.headers("w", "big-1", None)
    finally:
        otel_context.detach(token)
    assert set(headers) == {"traceparent"}


def test_without_an_sdk_runs_go_on_and_the_callers_context_still_travels() -> None:
    observer = OpenTelemetryObserver(tracer_provider=trace.NoOpTracerProvider())
    with fluxo.Engine("memory://", workflows=[adds], observers=[observer]) as engine:
        assert engine.run(adds.options(id="noop-1"), 3) == 3
        assert not engine.get_run("noop-1").headers
        remote = trace.SpanContext(
            trace_id=7, span_id=9, is_remote=True, trace_flags=trace.TraceFlags(1)
        )
        token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(remote)))
        try:
            engine.start(adds.options(id="noop-2"), 1)
        finally:
            otel_context.detach(token)
        assert engine.get_run("noop-2").headers["traceparent"] == f"00-{7:032x}-{9:016x}-01"


def test_a_missing_api_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "fluxo.contrib.otel")
    with pytest.raises(ImportError, match=r"pip install 'fluxo\[otel\]'"):
        importlib.import_module("fluxo.contrib.otel")


def test_a_cancelled_run_ends_with_its_reason(traced: Traced) -> None:
    with engine_with(traced, asks_forever) as engine:
        engine.start(asks_forever.options(id="cancel-1"))
        assert execute(engine, "cancel-1") is _executor.Outcome.SUSPENDED
        engine.cancel("cancel-1")
        assert execute(engine, "cancel-1") is _executor.Outcome.CANCELLED
    run = traced.one("run otel.asks_forever")
    assert attrs(run)["fluxo.outcome"] == "cancelled"
    assert attrs(run)["fluxo.cancel_reason"] == "cancelled"
    assert run.status.status_code is StatusCode.OK
    assert parent_of(run) == span_id(traced.one("start otel.asks_forever"))
