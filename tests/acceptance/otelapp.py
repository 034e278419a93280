"""The crash test's five-step workflow, traced: the app of a real ``fluxo worker``.

The worker's spans go to an in-memory exporter that also appends each finished
span, as one JSON line, to the file named by ``FLUXO_OTEL_SPANS``, so the test
reads what a worker exported even after it was killed with SIGKILL.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fluxo
from fluxo.contrib.otel import OpenTelemetryObserver
from tests.acceptance import crashapp


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """What the test needs of a span, as JSON-friendly values (ids in hex)."""
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "start": span.start_time,
        "end": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


class FileExporter(InMemorySpanExporter):
    """Keeps spans in memory and appends each to a JSON-lines file as it is exported."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
        return result


def make_engine() -> fluxo.Engine:
    """The crash test's engine, with the OpenTelemetry observer on a provider of its own."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["FLUXO_OTEL_SPANS"])))
    return fluxo.Engine(
        os.environ["FLUXO_CRASH_URL"],
        workflows=[crashapp.five_steps],
        observers=[OpenTelemetryObserver(tracer_provider=provider)],
    )
