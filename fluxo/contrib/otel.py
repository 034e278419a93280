"""Tracing runs with OpenTelemetry: :class:`OpenTelemetryObserver`.

``pip install 'fluxo[otel]'``. The observer uses the OpenTelemetry API only:
configure the SDK, its sampler and its exporter as for the rest of your service,
and pass the observer to every engine that starts or executes runs (the web app's
and the workers')::

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    import fluxo
    from fluxo.contrib.otel import OpenTelemetryObserver

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)

    engine = fluxo.Engine(url, workflows=[checkout], observers=[OpenTelemetryObserver()])

**One trace per run**, whichever workers execute it and however often it is
replayed. A checkout started in a web request, whose first worker was killed in
its third step and which a second worker finished, gives::

    POST /orders                     the caller's span (current at engine.start)
    └── start checkout               PRODUCER, ended at once; its context is recorded
        │                            with the run, as the run's headers
        ├── step reserve             worker A, INTERNAL, current while the attempt runs
        ├── step charge              worker A, killed in the next step
        ├── step ship                worker B replays reserve and charge: no spans
        ├── step notify              worker B
        ├── step close               worker B
        └── run checkout             CONSUMER, from the run's creation to its end

The spans:

``start <workflow>`` (``SpanKind.PRODUCER``)
    Made by :meth:`~OpenTelemetryObserver.headers` in the thread that starts the
    run, as a child of the span current there (for a child run: of the parent
    run's ``start`` span), and ended at once. Its context, as the global
    propagator injects it (``traceparent``, and ``tracestate`` and ``baggage``
    when there are any), is recorded with the run and comes back with every
    event of the run, in every worker: it is the parent of all the run's other
    spans. A start with the id of a run that already exists makes a ``start``
    span too, although the run keeps the context recorded the first time.
``step <step>`` (``SpanKind.INTERNAL``)
    One per live step attempt, current while the attempt runs (with the baggage
    recorded with the run), so the spans the step makes, such as an
    instrumented HTTP client's, are its children. An attempt that raises has the
    exception recorded, status ERROR and ``error.type``; a failed attempt that
    is retried and its retry are two spans. Replayed steps make no span.
``run <workflow>`` (``SpanKind.CONSUMER``)
    Made when the run completes, fails, is cancelled or continues as new, by the
    worker that ends it, from the run's creation to its end: its status is ERROR
    when the run failed and OK otherwise, and ``fluxo.outcome`` says how it ended.
``signal <name>`` (``SpanKind.PRODUCER``)
    ``engine.signal()``, in the context current there (a web request's), linked
    to the run's ``start`` span.
Markers (``SpanKind.INTERNAL``)
    ``timer fired <name>``, ``signal received <name>``, ``nondeterminism
    <workflow>`` (status ERROR) and ``lease lost <workflow>``: zero-length spans
    under the ``start`` span, at the time they happened, that explain a gap
    between steps or why an execution stopped.

A run recorded without a trace context (started by an engine without this
observer, or with a context that no longer parses) still gets one trace: its
spans' parent is a context derived from the run's id (trace id: the first 16
bytes of the SHA-256 of the id; span id: the next 8; sampled), the same in every
worker. Events met again on replay never make spans.

Attributes: ``fluxo.run_id``, ``fluxo.workflow``, ``fluxo.parent_run_id`` (a
child's ``start``), ``fluxo.step``, ``fluxo.attempt``, ``fluxo.position``,
``fluxo.branch`` (steps of ``fluxo.parallel`` and ``fluxo.map`` branches),
``fluxo.worker``, ``fluxo.outcome``, ``fluxo.error.message``, ``fluxo.signal``,
``fluxo.timer``, ``fluxo.cancel_reason`` (``cancelled`` or ``deadline``),
``fluxo.next_run_id`` (a run continued as new); and by the
OpenTelemetry semantic conventions ``code.function.name`` (the step's name) and
``error.type`` (the exception's ``module.qualname``, as Fluxo records it:
``builtins.ValueError``, ``fluxo.StepError``).

Times: a ``step`` span is timed by the worker's clock as the attempt runs; the
``run`` span and the markers by the engine's clock, as the events report it.
"""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Mapping
from types import TracebackType
from typing import ClassVar

import fluxo
from fluxo import _errors, _observers, observe

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.util import types as otel_types
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "fluxo.contrib.otel needs the OpenTelemetry API; pip install 'fluxo[otel]'",
        name=exc.name,
    ) from exc

__all__ = ["OpenTelemetryObserver"]

RUN_ID = "fluxo.run_id"
WORKFLOW = "fluxo.workflow"
PARENT_RUN_ID = "fluxo.parent_run_id"
STEP = "fluxo.step"
ATTEMPT = "fluxo.attempt"
POSITION = "fluxo.position"
BRANCH = "fluxo.branch"
WORKER = "fluxo.worker"
OUTCOME = "fluxo.outcome"
ERROR_MESSAGE = "fluxo.error.message"
SIGNAL = "fluxo.signal"
TIMER = "fluxo.timer"
NEXT_RUN_ID = "fluxo.next_run_id"
CANCEL_REASON = "fluxo.cancel_reason"
CODE_FUNCTION_NAME = "code.function.name"
ERROR_TYPE = "error.type"

_OUTCOMES = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_continued": "continued",
}
_TRACE_KEYS = ("traceparent", "tracestate")


class OpenTelemetryObserver(observe.Observer):
    """Turns runs into OpenTelemetry spans: one trace per run, across workers and replays.

    See the module's documentation for the spans and their attributes.

    Args:
        tracer_provider: the provider of the tracer; the global one (as
            ``opentelemetry.trace.set_tracer_provider`` sets it, even later) by default.

    Example:
        >>> engine = fluxo.Engine(url, workflows=[checkout],
        ...                       observers=[OpenTelemetryObserver()])
        >>> with tracer.start_as_current_span("POST /orders"):
        ...     engine.start(checkout, "o-17", 4200)   # start checkout: a child of it
    """

    inline: ClassVar[bool] = True

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("fluxo", fluxo.__version__, tracer_provider=tracer_provider)
        """The tracer the spans are made with."""

    def __repr__(self) -> str:
        return "OpenTelemetryObserver()"

    # -- a run's trace context ----------------------------------------------------------

    def headers(
        self, workflow: str, run_id: str, parent: observe.RunEvent | None
    ) -> Mapping[str, str]:
        """Make the run's ``start`` span; return its context to record with the run."""
        attributes: dict[str, otel_types.AttributeValue] = {RUN_ID: run_id, WORKFLOW: workflow}
        if parent is None:
            context = otel_context.get_current()
        else:
            context = _run_context(parent.headers, parent.run_id)
            attributes[PARENT_RUN_ID] = parent.run_id
        span = self.tracer.start_span(
            f"start {workflow}",
            context=context,
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
        )
        span.end()
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span, context))
        if sum(len(k) + len(v) for k, v in carrier.items()) > _observers.MAX_HEADERS_SIZE:
            carrier = {k: v for k, v in carrier.items() if k in _TRACE_KEYS}  # large baggage
        return carrier

    # -- step attempts ------------------------------------------------------------------

    def step_scope(self, event: observe.RunEvent) -> _CurrentSpan | None:
        """The span of a live step attempt, current while the attempt runs."""
        if event.replayed:
            return None
        context = _run_context(event.headers, event.run_id)
        attributes = _attributes(event)
        attributes[STEP] = event.step
        attributes[CODE_FUNCTION_NAME] = event.step
        attributes[ATTEMPT] = event.attempt
        if event.branch is not None:
            attributes[BRANCH] = event.branch
        span = self.tracer.start_span(
            f"step {event.step}",
            context=context,
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
        )
        return _CurrentSpan(span, trace.set_span_in_context(span, context))

    # -- the end of a run ---------------------------------------------------------------

    def _run_ended(self, event: observe.RunEvent) -> None:
        if event.replayed:
            return
        end = _nanoseconds(event.time)
        age = _nanoseconds(event.duration) if event.duration is not None else 0
        attributes = _attributes(event)
        attributes[OUTCOME] = _OUTCOMES.get(event.kind, event.kind)
        if event.kind == "run_cancelled" and event.name:
            attributes[CANCEL_REASON] = event.name
        if event.kind == "run_continued" and event.other_run:
            attributes[NEXT_RUN_ID] = event.other_run
        span = self.tracer.start_span(
            f"run {event.workflow}",
            context=_run_context(event.headers, event.run_id),
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
            start_time=end - max(age, 0),
        )
        if event.kind == "run_failed":
            _set_failure(span, event, end)
        else:
            span.set_status(trace.StatusCode.OK)
        span.end(end_time=end)

    run_completed = run_failed = run_cancelled = run_continued = _run_ended

    # -- signals and markers ------------------------------------------------------------

    def signal_sent(self, event: observe.RunEvent) -> None:
        """A ``signal <name>`` span in the sender's context, linked to the run's start."""
        if event.replayed:
            return
        start = trace.get_current_span(_run_context(event.headers, event.run_id))
        attributes: dict[str, otel_types.AttributeValue] = {
            RUN_ID: event.run_id,
            SIGNAL: event.name,
        }
        if event.workflow:
            attributes[WORKFLOW] = event.workflow
        span = self.tracer.start_span(
            f"signal {event.name}",
            kind=trace.SpanKind.PRODUCER,
            attributes=attributes,
            links=[trace.Link(start.get_span_context())],
        )
        span.end()

    def timer_fired(self, event: observe.RunEvent) -> None:
        """A zero-length ``timer fired <name>`` span under the run's start."""
        self._marker(event, f"timer fired {event.name}", {TIMER: event.name})

    def signal_received(self, event: observe.RunEvent) -> None:
        """A zero-length ``signal received <name>`` span under the run's start."""
        self._marker(event, f"signal received {event.name}", {SIGNAL: event.name})

    def nondeterminism(self, event: observe.RunEvent) -> None:
        """A zero-length ``nondeterminism <workflow>`` span, status ERROR."""
        self._marker(event, f"nondeterminism {event.workflow}", {})

    def lease_lost(self, event: observe.RunEvent) -> None:
        """A zero-length ``lease lost <workflow>`` span: this worker stopped executing the run."""
        self._marker(event, f"lease lost {event.workflow}", {})

    def _marker(
        self, event: observe.RunEvent, name: str, extra: dict[str, otel_types.AttributeValue]
    ) -> None:
        if event.replayed:
            return
        at = _nanoseconds(event.time)
        attributes = _attributes(event)
        attributes.update(extra)
        span = self.tracer.start_span(
            name,
            context=_run_context(event.headers, event.run_id),
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            start_time=at,
        )
        if event.kind == "nondeterminism":
            _set_failure(span, event, at)
        span.end(end_time=at)


class _CurrentSpan:
    """A step attempt's span, current in the run's thread while the attempt runs."""

    __slots__ = ("_context", "_span", "_token")

    def __init__(self, span: trace.Span, context: otel_context.Context) -> None:
        self._span = span
        self._context = context
        self._token: contextvars.Token[otel_context.Context] | None = None

    def __enter__(self) -> trace.Span:
        self._token = otel_context.attach(self._context)
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if exc is not None:
                error_type = _errors.type_name(type(exc))
                span.record_exception(exc)
                span.set_attribute(ERROR_TYPE, error_type)
                span.set_status(trace.StatusCode.ERROR, f"{error_type}: {_message(exc)}")
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
            span.end()


_CONTEXTS: dict[tuple[str, tuple[tuple[str, str], ...]], otel_context.Context] = {}
"""Runs' contexts by run id and headers: a run's steps extract the same headers again."""
_CONTEXTS_SIZE = 512


def _run_context(headers: Mapping[str, str], run_id: str) -> otel_context.Context:
    """The context of a run's ``start`` span, from the headers recorded with the run.

    Extracted with the global propagator, from an empty context (never the one
    current here). When the headers hold no valid span context, the parent is
    the one derived from ``run_id``, so the run's spans still share one trace.
    """
    try:
        key = (run_id, tuple(headers.items()))
        found = _CONTEXTS.get(key)
    except Exception:  # headers that are no mapping of strings
        key, found = None, None
    if found is not None:
        return found
    context = otel_context.Context()
    if headers:
        try:
            context = propagate.extract(dict(headers), context=context)
        except Exception:  # a garbled carrier: a propagator may raise on it
            context = otel_context.Context()
    if not trace.get_current_span(context).get_span_context().is_valid:
        derived = trace.NonRecordingSpan(_derived_span_context(run_id))
        context = trace.set_span_in_context(derived, context)
    if key is not None:
        if len(_CONTEXTS) >= _CONTEXTS_SIZE:
            _CONTEXTS.clear()
        _CONTEXTS[key] = context
    return context


def _derived_span_context(run_id: str) -> trace.SpanContext:
    """A remote, sampled span context that depends on ``run_id`` alone, the same in every process.

    Trace id: the first 16 bytes of the SHA-256 of the id; span id: the next 8.
    """
    digest = hashlib.sha256(run_id.encode("utf-8", "surrogatepass")).digest()
    return trace.SpanContext(
        trace_id=int.from_bytes(digest[:16], "big") or 1,
        span_id=int.from_bytes(digest[16:24], "big") or 1,
        is_remote=True,
        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
    )


def _attributes(event: observe.RunEvent) -> dict[str, otel_types.AttributeValue]:
    attributes: dict[str, otel_types.AttributeValue] = {
        RUN_ID: event.run_id,
        WORKFLOW: event.workflow,
    }
    if event.position is not None:
        attributes[POSITION] = event.position
    if event.worker:
        attributes[WORKER] = event.worker
    return attributes


def _set_failure(span: trace.Span, event: observe.RunEvent, at: int) -> None:
    """Status ERROR, ``error.type`` and the message of a failure an event reports."""
    error_type = event.error_type or "_OTHER"
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_attribute(ERROR_MESSAGE, event.error_message)
    span.add_event(
        "exception",
        {"exception.type": error_type, "exception.message": event.error_message},
        timestamp=at,
    )
    span.set_status(trace.StatusCode.ERROR, f"{error_type}: {event.error_message}")


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def _nanoseconds(seconds: float) -> int:
    return int(seconds * 1e9)
