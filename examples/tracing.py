"""Tracing runs with OpenTelemetry: one trace per run, drawn as a tree.

The run is started inside a span (as a web request would start it), its first
execution stops while the run waits for a signal, and a second execution, after
the signal, replays the first steps and runs the last. The spans of both
executions and of the caller make one tree.

Run it with ``python examples/tracing.py`` (``pip install 'fluxo[otel]' opentelemetry-sdk``).
"""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fluxo
from fluxo.contrib.otel import OpenTelemetryObserver
from fluxo.stores.memory import MemoryStore

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("shop.web")


@fluxo.step(name="shop.reserve")
def reserve(order_id: str) -> str:
    return f"stock-{order_id}"


@fluxo.step(name="shop.charge")
def charge(order_id: str) -> str:
    with tracer.start_as_current_span("POST payments.example/charges"):  # inside the step
        return f"receipt-{order_id}"


@fluxo.step(name="shop.ship")
def ship(order_id: str) -> str:
    return f"parcel-{order_id}"


@fluxo.workflow(name="shop.checkout")
def checkout(order_id: str) -> str:
    reserve(order_id)
    receipt = charge(order_id)
    fluxo.wait_for_signal("approved", type=bool)  # the first execution stops here
    ship(order_id)
    return receipt


store = MemoryStore()
observers = [OpenTelemetryObserver(tracer_provider=provider)]
with (
    fluxo.Engine(store, workflows=[checkout], observers=observers) as web,
    tracer.start_as_current_span("POST /orders"),  # the web request
):
    handle = web.start(checkout.options(id="order-17"), "o-17")

with fluxo.Engine(store, workflows=[checkout], observers=observers) as engine:
    worker = engine.worker()
    worker.process_one()  # reserve, charge, then the run waits for its signal
    with tracer.start_as_current_span("POST /orders/o-17/approval"):  # another request
        engine.signal("order-17", "approved", True)
    worker.process_one()  # replays reserve and charge (no spans), runs ship
    print(engine.handle(handle.id).result(timeout=10))  # prints: receipt-o-17

spans = exporter.get_finished_spans()
children: dict[int | None, list[ReadableSpan]] = {}
for span in spans:
    parent = span.parent.span_id if span.parent is not None else None
    children.setdefault(parent, []).append(span)


def draw(span: ReadableSpan, depth: int) -> None:
    print("    " * depth + span.name)
    below = children.get(span.context.span_id, [])
    for child in sorted(below, key=lambda s: s.start_time or 0):
        draw(child, depth + 1)


run_trace = next(s.context.trace_id for s in spans if s.name == "start shop.checkout")
print("spans of the run's trace:", sum(s.context.trace_id == run_trace for s in spans))
# prints: spans of the run's trace: 8
for root in children[None]:
    draw(root, 0)
# prints: POST /orders
# prints:     start shop.checkout
# prints:         run shop.checkout
# prints:         step shop.reserve
# prints:         step shop.charge
# prints:             POST payments.example/charges
# prints:         signal received approved
# prints:         step shop.ship
# prints: POST /orders/o-17/approval
# prints:     signal approved
