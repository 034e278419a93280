"""One trace per run across a kill -9: the caller's, the killed and the next worker's spans."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import fluxo
from fluxo import history
from fluxo.contrib.otel import OpenTelemetryObserver
from tests.acceptance import _crash, crashapp, otelapp

APP = "tests.acceptance.otelapp:make_engine"
WORKFLOW = crashapp.five_steps.name
STEP = "tests.acceptance.crashapp.step"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def otel_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite, and PostgreSQL (skipped when unreachable here, failing under CI=true)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/otel.db"
    url: str = request.getfixturevalue("clean_postgres_url")
    return url


def _worker(url: str, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """A worker named ``name`` that writes its spans to ``<name>.jsonl`` in ``workdir``."""
    spans = {"FLUXO_OTEL_SPANS": str(workdir / f"{name}.jsonl")}
    return _crash.worker(url, workdir, APP, "--worker-id", name, env=spans)


def _completed_steps(engine: fluxo.Engine, run_id: str) -> int:
    return sum(isinstance(e, history.StepCompleted) for e in engine.history(run_id))


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _tree(spans: list[dict[str, Any]]) -> str:
    """The spans as an indented tree, children in the order they ended."""
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    lines: list[str] = []

    def show(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["end"]):
            worker = span["attributes"].get("fluxo.worker")
            where = f"  [{worker}]" if worker else ""
            lines.append(f"{'    ' * depth}{span['name']}  {span['kind']} {span['status']}{where}")
            show(span["span_id"], depth + 1)

    show(None, 0)
    return "\n".join(lines)


def test_a_run_killed_mid_step_is_one_trace_across_both_workers(
    otel_store_url: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    engine = fluxo.Engine(
        otel_store_url,
        workflows=[crashapp.five_steps],
        observers=[OpenTelemetryObserver(tracer_provider=provider)],
    )
    run_id = f"otel-{os.getpid()}-{time.monotonic_ns()}"
    with provider.get_tracer("shop").start_as_current_span("POST /orders"):
        handle = engine.start(crashapp.five_steps.options(id=run_id), 4)

    first = _worker(otel_store_url, tmp_path, "worker-1")
    try:
        _crash.wait(lambda: _completed_steps(engine, run_id) == 2, 30, "step 2")
        _crash.wait(lambda: (tmp_path / "ledger.txt").read_text().count("step3") == 1, 30, "step 3")
    finally:
        _crash.kill(first)
    assert first.returncode == -signal.SIGKILL

    (tmp_path / "release-step3").touch()
    second = _worker(otel_store_url, tmp_path, "worker-2")
    try:
        assert handle.result(timeout=60) == "done:130"
    finally:
        _crash.stop(second)  # a graceful stop: its spans are all exported
    engine.close()
    provider.shutdown()

    caller_spans = [otelapp.span_record(s) for s in exporter.get_finished_spans()]
    one = _read(tmp_path / "worker-1.jsonl")
    two = _read(tmp_path / "worker-2.jsonl")
    spans = caller_spans + one + two
    tree = _tree(spans)
    print(tree)

    assert len({s["trace_id"] for s in spans}) == 1, tree
    (caller,) = [s for s in spans if s["name"] == "POST /orders"]
    (start,) = [s for s in spans if s["name"] == f"start {WORKFLOW}"]
    assert caller["parent_id"] is None
    assert start["parent_id"] == caller["span_id"]
    assert start["attributes"]["fluxo.run_id"] == run_id
    # One span per live attempt that finished: steps 1-2 in the killed worker (step 3
    # died with it); 3, 4 and 5 in the next, which replayed 1 and 2 without spans.
    assert [s["name"] for s in one] == [f"step {STEP}1", f"step {STEP}2"]
    assert [s["name"] for s in two] == [
        f"step {STEP}3",
        f"step {STEP}4",
        f"step {STEP}5",
        f"run {WORKFLOW}",
    ]
    assert {s["attributes"]["fluxo.worker"] for s in one} == {"worker-1"}
    assert {s["attributes"]["fluxo.worker"] for s in two} == {"worker-2"}
    assert {s["parent_id"] for s in one + two} == {start["span_id"]}
    run = two[-1]
    assert run["status"] == "OK"
    assert run["attributes"]["fluxo.outcome"] == "completed"
    assert run["start"] <= start["end"]  # from the run's creation...
    assert run["end"] >= two[-2]["end"]  # ...to its end
    assert tree == "\n".join(
        [
            "POST /orders  INTERNAL UNSET",
            f"    start {WORKFLOW}  PRODUCER UNSET",
            f"        step {STEP}1  INTERNAL UNSET  [worker-1]",
            f"        step {STEP}2  INTERNAL UNSET  [worker-1]",
            f"        step {STEP}3  INTERNAL UNSET  [worker-2]",
            f"        step {STEP}4  INTERNAL UNSET  [worker-2]",
            f"        step {STEP}5  INTERNAL UNSET  [worker-2]",
            f"        run {WORKFLOW}  CONSUMER OK  [worker-2]",
        ]
    )
