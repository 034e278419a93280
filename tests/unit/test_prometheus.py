"""fluxo.contrib.prometheus: the metrics' names, labels and counts, and the gauge read at scrape.

Each test registers its observer in a ``CollectorRegistry`` of its own, and reads
the metrics back as Prometheus would: through the text exposition.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest, parser

import fluxo
from fluxo.contrib import prometheus

from .helpers import FakeClock

ADDS, RETRIES, FAILS, WAITS = "prom.adds", "prom.retries", "prom.fails", "prom.waits"
ADD, FLAKY, BROKEN = "prom.add", "prom.flaky", "prom.broken"

_flaky_calls: dict[str, int] = {}


@fluxo.step(name=ADD)
def add(a: int, b: int) -> int:
    return a + b


@fluxo.step(name=FLAKY, retry=fluxo.Retry(max_attempts=3, initial=timedelta(0)))
def flaky(key: str) -> str:
    _flaky_calls[key] = _flaky_calls.get(key, 0) + 1
    if _flaky_calls[key] < 3:
        raise ValueError("not yet")
    return key


@fluxo.step(name=BROKEN, retry=fluxo.Retry(max_attempts=2, initial=timedelta(0)))
def broken() -> None:
    raise KeyError("gone")


@fluxo.workflow(name=ADDS)
def adds(n: int) -> int:
    total = 0
    for i in range(n):
        total = add(total, i)
    return total


@fluxo.workflow(name=RETRIES)
def retries(key: str) -> str:
    return flaky(key)


@fluxo.workflow(name=FAILS)
def fails() -> None:
    broken()


@fluxo.workflow(name=WAITS)
def waits() -> str:
    first = add(1, 2)
    fluxo.sleep(timedelta(hours=1))
    answer: str = fluxo.wait_for_signal("answer", type=str)
    return f"{answer}{first}"


@fluxo.workflow(name="prom.notifies")
def notifies(target: str) -> None:
    fluxo.signal(target, "answer", "hi")
    fluxo.sleep(timedelta(hours=1))


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the text exposition: ``(name, labels) -> value``."""
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One sample of the exposition, or None when it is not there."""
    return scrape(registry).get((name, frozenset(labels.items())))


def families(registry: CollectorRegistry) -> dict[str, str]:
    """The families of the exposition, ``name -> type``, but prometheus_client's ``_created``."""
    text = generate_latest(registry).decode()
    found = parser.text_string_to_metric_families(text)
    return {f.name: f.type for f in found if not f.name.endswith("_created")}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def observed(registry: CollectorRegistry, *workflows: Any, **options: Any) -> fluxo.Engine:
    """An engine in memory whose runs a PrometheusObserver counts in ``registry``."""
    engine = fluxo.Engine("memory://", workflows=workflows)
    engine.add_observer(prometheus.PrometheusObserver(registry, engine=engine, **options))
    return engine


def test_runs_and_steps_are_counted_by_workflow_step_and_outcome(
    registry: CollectorRegistry,
) -> None:
    with observed(registry, adds, retries, fails) as engine:
        assert engine.run(adds, 3) == 3
        assert engine.run(adds, 2) == 1
        assert engine.run(retries, "k-counted") == "k-counted"  # two retries, then done
        with pytest.raises(fluxo.WorkflowFailedError):
            engine.run(fails)  # one retry, then failed

    assert value(registry, "fluxo_runs_started_total", workflow=ADDS) == 2
    assert value(registry, "fluxo_runs_started_total", workflow=FAILS) == 1
    assert value(registry, "fluxo_runs_ended_total", workflow=ADDS, outcome="completed") == 2
    assert value(registry, "fluxo_runs_ended_total", workflow=RETRIES, outcome="completed") == 1
    assert value(registry, "fluxo_runs_ended_total", workflow=FAILS, outcome="failed") == 1
    assert value(registry, "fluxo_runs_ended_total", workflow=FAILS, outcome="completed") is None
    assert value(registry, "fluxo_run_executions_total", workflow=ADDS) == 2

    attempts = "fluxo_step_attempts_total"
    assert value(registry, attempts, workflow=ADDS, step=ADD, outcome="completed") == 5
    assert value(registry, attempts, workflow=RETRIES, step=FLAKY, outcome="retried") == 2
    assert value(registry, attempts, workflow=RETRIES, step=FLAKY, outcome="completed") == 1
    assert value(registry, attempts, workflow=FAILS, step=BROKEN, outcome="retried") == 1
    assert value(registry, attempts, workflow=FAILS, step=BROKEN, outcome="failed") == 1
    assert value(registry, "fluxo_step_retries_total", workflow=RETRIES, step=FLAKY) == 2
    assert value(registry, "fluxo_step_retries_total", workflow=FAILS, step=BROKEN) == 1

    duration = "fluxo_step_duration_seconds"
    assert value(registry, f"{duration}_count", workflow=ADDS, step=ADD) == 5
    assert value(registry, f"{duration}_count", workflow=RETRIES, step=FLAKY) == 3
    assert value(registry, f"{duration}_count", workflow=FAILS, step=BROKEN) == 2
    assert value(registry, f"{duration}_bucket", workflow=ADDS, step=ADD, le="+Inf") == 5
    assert value(registry, f"{duration}_bucket", workflow=ADDS, step=ADD, le="0.001") is not None


def test_every_documented_family_is_exposed_with_its_type(registry: CollectorRegistry) -> None:
    with observed(registry, adds) as engine:
        engine.run(adds, 1)
        exposed = families(registry)
    # the parser names counters without their _total suffix, as OpenMetrics does
    assert exposed == {
        "fluxo_runs_started": "counter",
        "fluxo_runs_ended": "counter",
        "fluxo_run_executions": "counter",
        "fluxo_runs_suspended": "counter",
        "fluxo_step_attempts": "counter",
        "fluxo_step_retries": "counter",
        "fluxo_step_duration_seconds": "histogram",
        "fluxo_run_claim_delay_seconds": "histogram",
        "fluxo_signals_sent": "counter",
        "fluxo_signals_received": "counter",
        "fluxo_timers_fired": "counter",
        "fluxo_nondeterminism": "counter",
        "fluxo_leases_lost": "counter",
        "fluxo_runs": "gauge",
    }
    for name in exposed:
        assert f"``{name}" in prometheus.__doc__, f"{name} is not in the module's table"


def test_replayed_events_are_never_counted(registry: CollectorRegistry) -> None:
    clock = FakeClock()
    with fluxo.Engine("memory://", workflows=[waits], clock=clock) as engine:
        engine.add_observer(prometheus.PrometheusObserver(registry, engine=engine))
        worker = engine.worker()
        engine.start(waits.options(id="resumed"))
        assert worker.process_one() == 1  # the step runs; the timer is set
        clock.advance(3600)
        assert worker.process_one() == 1  # the step replayed; the timer fires; it waits
        engine.signal("resumed", "answer", "yes")
        assert worker.process_one() == 1  # the step and the timer replayed; it ends
        assert engine.get_run("resumed").status is fluxo.RunStatus.COMPLETED

    assert value(registry, "fluxo_run_executions_total", workflow=WAITS) == 3
    assert value(registry, "fluxo_run_claim_delay_seconds_count", workflow=WAITS) == 3
    attempts = "fluxo_step_attempts_total"
    assert value(registry, attempts, workflow=WAITS, step=ADD, outcome="completed") == 1
    assert value(registry, "fluxo_step_duration_seconds_count", workflow=WAITS, step=ADD) == 1
    assert value(registry, "fluxo_timers_fired_total", workflow=WAITS) == 1
    assert value(registry, "fluxo_signals_sent_total", workflow=WAITS) == 1
    assert value(registry, "fluxo_signals_received_total", workflow=WAITS) == 1
    assert value(registry, "fluxo_runs_started_total", workflow=WAITS) == 1
    assert value(registry, "fluxo_runs_ended_total", workflow=WAITS, outcome="completed") == 1
    assert value(registry, "fluxo_runs_suspended_total", workflow=WAITS, reason="timer") == 1
    assert value(registry, "fluxo_runs_suspended_total", workflow=WAITS, reason="signal") == 1


def test_a_signal_sent_by_a_workflow_counts_once_without_a_workflow(
    registry: CollectorRegistry,
) -> None:
    clock = FakeClock()
    with fluxo.Engine("memory://", workflows=[waits, notifies], clock=clock) as engine:
        engine.add_observer(prometheus.PrometheusObserver(registry))
        worker = engine.worker()
        engine.start(waits.options(id="target"))
        engine.start(notifies.options(id="sender"), "target")
        worker.process_one()
        clock.advance(3600)
        worker.process_one()  # the sender replays its signal and ends; the target takes it
        assert engine.get_run("sender").status is fluxo.RunStatus.COMPLETED
        assert engine.get_run("target").status is fluxo.RunStatus.COMPLETED
    assert value(registry, "fluxo_signals_sent_total", workflow="") == 1
    assert value(registry, "fluxo_signals_received_total", workflow=WAITS) == 1


def test_a_claimed_run_observes_how_long_it_waited_to_be_claimed(
    registry: CollectorRegistry,
) -> None:
    with observed(registry, adds) as engine:
        engine.start(adds.options(id="claimed"), 2)
        assert engine.worker().process_one() == 1
    delay = "fluxo_run_claim_delay_seconds"
    assert value(registry, f"{delay}_count", workflow=ADDS) == 1
    assert value(registry, f"{delay}_bucket", workflow=ADDS, le="600.0") == 1
    assert value(registry, "fluxo_run_executions_total", workflow=ADDS) == 1


def event(kind: str, **fields: Any) -> fluxo.RunEvent:
    return fluxo.RunEvent(kind=kind, run_id="r-1", workflow="shop.checkout", time=0.0, **fields)


@pytest.mark.parametrize(
    ("kind", "fields", "name", "labels"),
    [
        ("run_cancelled", {"name": "deadline"}, "fluxo_runs_ended_total", {"outcome": "cancelled"}),
        ("run_continued", {}, "fluxo_runs_ended_total", {"outcome": "continued"}),
        ("run_suspended", {"name": "child"}, "fluxo_runs_suspended_total", {"reason": "child"}),
        ("run_suspended", {"name": "stopped"}, "fluxo_runs_suspended_total", {"reason": "stopped"}),
        ("nondeterminism", {"position": 3}, "fluxo_nondeterminism_total", {}),
        ("lease_lost", {"position": 3}, "fluxo_leases_lost_total", {}),
        ("signal_sent", {"name": "approved"}, "fluxo_signals_sent_total", {}),
        ("timer_fired", {"name": "sleep"}, "fluxo_timers_fired_total", {}),
    ],
)
def test_each_kind_of_event_counts_in_its_metric_once_and_never_replayed(
    registry: CollectorRegistry,
    kind: str,
    fields: dict[str, Any],
    name: str,
    labels: dict[str, str],
) -> None:
    observer = prometheus.PrometheusObserver(registry)
    method = getattr(observer, kind)
    method(event(kind, **fields))
    method(event(kind, replayed=True, **fields))
    assert value(registry, name, workflow="shop.checkout", **labels) == 1


def test_no_label_names_a_run(registry: CollectorRegistry) -> None:
    with observed(registry, adds, retries) as engine:
        engine.run(adds.options(id="run-id-that-must-not-show"), 2)
        engine.run(retries, "k-labels")
        samples = scrape(registry)
    labels = {key for _, pairs in samples for key, _ in pairs}
    assert labels <= {"workflow", "step", "outcome", "reason", "status", "le"}
    assert "run-id-that-must-not-show" not in generate_latest(registry).decode()


def test_the_runs_gauge_counts_the_store_by_workflow_and_status(
    registry: CollectorRegistry,
) -> None:
    with observed(registry, adds, fails, waits) as engine:
        engine.run(adds, 1)
        engine.run(adds, 2)
        with pytest.raises(fluxo.WorkflowFailedError):
            engine.run(fails)
        engine.start(waits.options(id="waiting"))
        engine.worker().process_one()  # it runs its step and sleeps
        engine.start(adds, 5)  # pending: no worker took it
        assert value(registry, "fluxo_runs", workflow=ADDS, status="completed") == 2
        assert value(registry, "fluxo_runs", workflow=ADDS, status="pending") == 1
        assert value(registry, "fluxo_runs", workflow=FAILS, status="failed") == 1
        assert value(registry, "fluxo_runs", workflow=WAITS, status="waiting") == 1
        # every status of every workflow the engine knows, zero included
        assert value(registry, "fluxo_runs", workflow=WAITS, status="completed") == 0
        assert value(registry, "fluxo_runs", workflow=FAILS, status="running") == 0
        engine.cancel("waiting")
        engine.worker().process_one()
        # read again at each scrape
        assert value(registry, "fluxo_runs", workflow=WAITS, status="waiting") == 0
        assert value(registry, "fluxo_runs", workflow=WAITS, status="cancelled") == 1


def test_without_an_engine_there_is_no_runs_gauge(registry: CollectorRegistry) -> None:
    observer = prometheus.PrometheusObserver(registry)
    observer.run_started(event("run_started"))
    assert "fluxo_runs" not in families(registry)
    assert value(registry, "fluxo_runs_started_total", workflow="shop.checkout") == 1


def test_a_store_failing_at_scrape_time_leaves_out_the_gauge_only(
    registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with observed(registry, adds) as engine:
        engine.run(adds, 2)

        def unreachable() -> dict[Any, int]:
            raise fluxo.StoreUnavailableError("the database is down")

        monkeypatch.setattr(engine, "count_runs", unreachable)
        with caplog.at_level(logging.INFO, logger="fluxo.contrib.prometheus"):
            for _ in range(3):
                exposed = families(registry)
                assert "fluxo_runs" not in exposed
                assert "fluxo_step_attempts" in exposed
            completed = value(
                registry, "fluxo_runs_ended_total", workflow=ADDS, outcome="completed"
            )
            assert completed == 1
            monkeypatch.undo()
            assert value(registry, "fluxo_runs", workflow=ADDS, status="completed") == 1
    messages = [r.getMessage() for r in caplog.records if r.name == "fluxo.contrib.prometheus"]
    assert len(messages) == 2, messages  # the failure once, then the recovery
    assert "cannot count the runs for the metric fluxo_runs" in messages[0]
    assert "the database is down" in caplog.records[0].exc_text  # type: ignore[operator]
    assert "counted again" in messages[1]


def test_the_namespace_prefixes_every_name(registry: CollectorRegistry) -> None:
    with observed(registry, adds, namespace="shop") as engine:
        engine.run(adds, 1)
        exposed = families(registry)
    assert "shop_step_attempts" in exposed
    assert "shop_runs" in exposed
    assert not any(name.startswith("fluxo") for name in exposed)


@pytest.mark.parametrize("namespace", ["1fluxo", "flu-xo", "fluxo.metrics", 3])
def test_a_bad_namespace_is_refused_with_an_example(namespace: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="for example 'fluxo'"):
        prometheus.PrometheusObserver(CollectorRegistry(), namespace=namespace)


def test_a_second_observer_on_the_same_registry_is_refused_until_the_first_leaves(
    registry: CollectorRegistry,
) -> None:
    first = prometheus.PrometheusObserver(registry)
    with pytest.raises(fluxo.DefinitionError, match="give one PrometheusObserver to every"):
        prometheus.PrometheusObserver(registry)
    prometheus.PrometheusObserver(registry, namespace="other")
    first.unregister()
    prometheus.PrometheusObserver(registry)


def test_a_scrape_counts_the_steps_of_a_run_still_executing(registry: CollectorRegistry) -> None:
    inside, go_on = threading.Event(), threading.Event()

    @fluxo.step(name="prom.blocking")
    def blocking() -> None:
        inside.set()
        go_on.wait(10)

    @fluxo.workflow(name="prom.blocks")
    def blocks() -> None:
        add(1, 2)
        add(3, 4)
        blocking()

    attempts = "fluxo_step_attempts_total"
    with observed(registry, blocks) as engine:
        thread = threading.Thread(target=engine.run, args=(blocks,))
        thread.start()
        assert inside.wait(10)
        counted = value(registry, attempts, workflow="prom.blocks", step=ADD, outcome="completed")
        go_on.set()
        thread.join(10)
    assert counted == 2  # live steps are timed in bulk, and a scrape takes what waits
    duration = "fluxo_step_duration_seconds_count"
    assert value(registry, duration, workflow="prom.blocks", step="prom.blocking") == 1


def test_it_is_an_inline_observer_of_the_events_it_counts() -> None:
    observer = prometheus.PrometheusObserver(CollectorRegistry())
    with fluxo.Engine("memory://", workflows=[adds], observers=[observer]) as engine:
        dispatch = engine.observers
        assert not dispatch.deliveries  # no thread of its own: called in the run's thread
        assert dispatch.step_completed
        assert dispatch.run_resumed
        assert not dispatch.step_started  # not counted, so never built for it
        assert not dispatch.timer_set


def test_fluxo_imports_no_prometheus_client_and_without_it_the_error_names_the_extra() -> None:
    code = (
        "import sys, fluxo, fluxo.cli\n"
        "print('prometheus_client' in sys.modules)\n"
        "sys.modules['prometheus_client'] = None\n"
        "try:\n"
        "    import fluxo.contrib.prometheus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    imported, error = result.stdout.splitlines()
    assert imported == "False"
    assert error == (
        "fluxo.contrib.prometheus needs the prometheus_client package; "
        "install it with pip install 'fluxo[prometheus]'"
    )
