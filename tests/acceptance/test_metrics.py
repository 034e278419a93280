"""``fluxo worker --metrics-port``: a real worker serves Prometheus metrics of its runs over HTTP.

The runs are started and signalled from this process on a SQLite file; the worker
subprocess executes them; the test scrapes ``/metrics`` as Prometheus would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from prometheus_client import parser

import fluxo
from tests.acceptance import cliapp
from tests.acceptance.test_cli import APP, FLUXO, GREET, ROOT

RUNS = 4
APPROVAL = "tests.acceptance.cliapp.approval"
SHOUT, PUNCTUATE = "tests.acceptance.cliapp.shout", "tests.acceptance.cliapp.punctuate"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> tuple[str, Samples]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


EXPECTED = {
    key("fluxo_runs_ended_total", workflow=GREET, outcome="completed"): RUNS,
    key("fluxo_runs_ended_total", workflow=APPROVAL, outcome="completed"): 1,
    key("fluxo_step_attempts_total", workflow=GREET, step=SHOUT, outcome="completed"): RUNS,
    key("fluxo_step_attempts_total", workflow=GREET, step=PUNCTUATE, outcome="completed"): RUNS,
    key("fluxo_step_duration_seconds_count", workflow=GREET, step=SHOUT): RUNS,
    key("fluxo_step_duration_seconds_count", workflow=GREET, step=PUNCTUATE): RUNS,
    key("fluxo_run_executions_total", workflow=GREET): RUNS,
    key("fluxo_run_claim_delay_seconds_count", workflow=GREET): RUNS,
    key("fluxo_signals_received_total", workflow=APPROVAL): 1,
    key("fluxo_runs", workflow=GREET, status="completed"): RUNS,
    key("fluxo_runs", workflow=GREET, status="pending"): 0,
    key("fluxo_runs", workflow=APPROVAL, status="completed"): 1,
    key("fluxo_runs", workflow="tests.acceptance.cliapp.reorder", status="failed"): 0,
}


def test_a_worker_serves_the_metrics_of_the_runs_it_executes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/metrics.db"
    engine = fluxo.Engine(url, workflows=[cliapp.greet, cliapp.approval])
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "CLIAPP_"))}
    worker = subprocess.Popen(
        [FLUXO, "worker", APP, "--metrics-port", str(port), "--concurrency", "2"],
        env={**env, "FLUXO_STORE_URL": url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        greetings = [engine.start(cliapp.greet.options(id=f"m-{i}"), f"n{i}") for i in range(RUNS)]
        approval = engine.start(cliapp.approval.options(id="m-approval"), "o-1")
        engine.signal(approval.id, "decision", {"ok": True})
        assert [g.result(timeout=30) for g in greetings] == [f"N{i}!" for i in range(RUNS)]
        assert approval.result(timeout=30) == {"order": "o-1", "ok": True}
        # The worker counts a run's end just after recording it: scrape until it has.
        deadline = time.monotonic() + 30
        while True:
            try:
                text, samples = scrape(port)
            except httpx.TransportError:
                text, samples = "", {}
            found = {k: samples.get(k) for k in EXPECTED}
            if found == EXPECTED or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
        engine.close()
    assert worker.returncode == 0, out
    assert found == EXPECTED, text
    # Counted where they happen: this process started and signalled the runs.
    assert key("fluxo_runs_started_total", workflow=GREET) not in samples
    assert key("fluxo_signals_sent_total", workflow=APPROVAL) not in samples
    assert out.count("serving Prometheus metrics at") == 1
    assert f"serving Prometheus metrics at http://127.0.0.1:{port}/metrics" in out
