"""Prometheus metrics of Fluxo's runs: :class:`PrometheusObserver`.

Needs ``prometheus_client`` (``pip install 'fluxo[prometheus]'``); ``import fluxo``
never imports it. Give the observer to an engine and expose its registry the way
you expose any Prometheus registry::

    import prometheus_client
    from fluxo.contrib.prometheus import PrometheusObserver

    engine = fluxo.Engine("postgresql+psycopg://...", workflows=[checkout])
    engine.add_observer(PrometheusObserver(engine=engine))  # the default registry
    prometheus_client.start_http_server(9464, addr="127.0.0.1")  # GET /metrics
    engine.worker().run()

``fluxo worker shop.tasks:engine --metrics-port 9464`` does just that for the
worker it runs (``--metrics-host`` picks the interface, 127.0.0.1 by default).

Metrics
-------

Every name starts with the ``namespace=`` (``fluxo`` by default). The names, types
and labels are a contract: dashboards and alerts may rely on them.

| name | type | labels | what |
|---|---|---|---|
| ``fluxo_runs_started_total`` | counter | ``workflow`` | runs created |
| ``fluxo_runs_ended_total`` | counter | ``workflow``, ``outcome`` | runs ended |
| ``fluxo_run_executions_total`` | counter | ``workflow`` | executions begun |
| ``fluxo_runs_suspended_total`` | counter | ``workflow``, ``reason`` | executions stopped early |
| ``fluxo_step_attempts_total`` | counter | ``workflow``, ``step``, ``outcome`` | live attempts |
| ``fluxo_step_retries_total`` | counter | ``workflow``, ``step`` | attempts to be retried |
| ``fluxo_step_duration_seconds`` | histogram | ``workflow``, ``step`` | live attempts' time |
| ``fluxo_run_claim_delay_seconds`` | histogram | ``workflow`` | from ready to claimed |
| ``fluxo_signals_sent_total`` | counter | ``workflow`` | signals stored |
| ``fluxo_signals_received_total`` | counter | ``workflow`` | signals consumed |
| ``fluxo_timers_fired_total`` | counter | ``workflow`` | durable timers fired |
| ``fluxo_nondeterminism_total`` | counter | ``workflow`` | code/history mismatches |
| ``fluxo_leases_lost_total`` | counter | ``workflow`` | runs taken over |
| ``fluxo_runs`` | gauge | ``workflow``, ``status`` | runs in the store now |

In detail:

* ``runs_started``: by ``engine.start``, ``engine.run``, or as a child workflow.
* ``runs_ended``: ``outcome`` is ``completed``, ``failed``, ``cancelled`` or
  ``continued`` (continued as new).
* ``run_executions``: a run is executed once per claim by a worker (or inline
  run, or held wait that resumes), its recorded history replayed first.
* ``runs_suspended``: an execution that stopped before its run ended; ``reason``
  is what the run waits for, ``timer``, ``signal`` or ``child``, or why it stopped:
  ``stopped`` (the worker shut down), ``store_error`` or ``restart``; it resumes
  from its history.
* ``step_attempts``: ``outcome`` is ``completed``, ``retried`` (the attempt raised
  and the step is attempted again) or ``failed`` (it raised and the step failed).
  ``step_retries`` counts the ``retried`` ones again, for a short query.
* ``step_duration_seconds``: every live attempt, whatever its outcome; buckets
  :data:`STEP_DURATION_BUCKETS` (1 ms to 5 minutes).
* ``run_claim_delay_seconds``: from a run being ready (started, woken by its
  timer or a signal, its lease expired) to a worker claiming it, the backlog of
  a worker pool; buckets :data:`CLAIM_DELAY_BUCKETS` (1 ms to 10 minutes).
* ``signals_sent``: by ``engine.signal`` (``workflow`` is the receiving run's)
  or a workflow's ``fluxo.signal`` (``workflow`` is empty: the sender does not
  look the receiving run up). ``signals_received``: consumed by
  ``fluxo.wait_for_signal``.
* ``timers_fired``: ``fluxo.sleep``, ``fluxo.sleep_until``, long retry back-offs.
* ``nondeterminism``: runs failed because their code no longer matches their
  history. ``leases_lost``: executions stopped as another worker took the run.
* ``runs``: ``status`` is ``pending``, ``running``, ``waiting``, ``completed``,
  ``failed`` or ``cancelled``; only with ``engine=`` (see below).

The counters and histograms count what this process does, live: an event met
again as a run's history is replayed is never counted, so a step that completed
once counts once however often its run resumes. ``prometheus_client`` also
exposes a ``_created`` sample beside each counter and histogram (set
``PROMETHEUS_DISABLE_CREATED_SERIES=True`` to drop them).

``fluxo_runs`` is read from the store when Prometheus scrapes (one grouped count,
``engine.count_runs()``), so it covers every run of every process; each status of
every workflow the engine knows is there, zero included. Several workers that
expose it report the same numbers: aggregate it with ``max without (instance)``,
not ``sum``. When the store fails at scrape time, the gauge is left out of that
scrape (logged once, until it works again) and the other metrics are still served.

No label names a run: the series stay as many as your workflows and steps.

Exposing the metrics
--------------------

From a worker process, ``fluxo worker --metrics-port`` or
``prometheus_client.start_http_server`` as above. In a web app, mount the
registry's WSGI app, for example in Flask::

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    metrics_app = prometheus_client.make_wsgi_app()  # serves the default registry
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/metrics": metrics_app})

or in a Django view::

    def metrics(request):
        return HttpResponse(prometheus_client.generate_latest(),
                            content_type=prometheus_client.CONTENT_TYPE_LATEST)

A web process only starts and signals runs; the executions are counted where
they happen, in the workers. A server with several worker processes (gunicorn)
has one registry per process: see ``prometheus_client``'s multiprocess mode, or
scrape the Fluxo workers, which hold the interesting counts.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar

from fluxo import _errors, history, observe

try:
    import prometheus_client
    from prometheus_client import metrics_core
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "fluxo.contrib.prometheus needs the prometheus_client package; "
        "install it with pip install 'fluxo[prometheus]'",
        name=exc.name,
    ) from exc

if TYPE_CHECKING:
    from prometheus_client import registry as prometheus_registry

    from fluxo import _engine

__all__ = ["CLAIM_DELAY_BUCKETS", "STEP_DURATION_BUCKETS", "PrometheusObserver"]

log = logging.getLogger(__name__)

STEP_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""The upper bounds (seconds) of ``fluxo_step_duration_seconds``: 1 ms to 5 minutes."""

CLAIM_DELAY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
"""The upper bounds (seconds) of ``fluxo_run_claim_delay_seconds``: 1 ms to 10 minutes."""

_NAMESPACE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

_ENDED = {
    "run_completed": "completed",
    "run_failed": "failed",
    "run_cancelled": "cancelled",
    "run_continued": "continued",
}
_ATTEMPTS = {"step_completed": "completed", "step_failed": "failed", "step_retried": "retried"}

_M = TypeVar("_M", prometheus_client.Counter, prometheus_client.Histogram)


class _Labelled(Generic[_M]):
    """A metric and its children by label values, kept: ``labels()`` costs a lock each call."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: _M) -> None:
        self.metric: _M = metric
        self._children: dict[tuple[str, ...], _M] = {}

    def __call__(self, *values: str) -> _M:
        child = self._children.get(values)
        if child is None:  # a race makes the same child twice: prometheus_client keeps one
            child = self._children[values] = self.metric.labels(*values)
        return child


class PrometheusObserver(observe.Observer):
    """Counts what Fluxo's runs do as Prometheus metrics (the table is in the module's docs).

    It is an inline observer: each live event costs a dictionary lookup and an
    increment, in the run's thread; a live step that completes costs an append
    to its :attr:`step_times`, counted as its execution ends or as ``/metrics``
    is scraped. Give one observer to every engine of a
    process; a second one on the same registry and namespace is refused, as its
    metrics would clash.

    Args:
        registry: where the metrics are registered; ``prometheus_client.REGISTRY``
            (what ``start_http_server`` and ``make_wsgi_app`` serve) by default. A
            test passes a ``prometheus_client.CollectorRegistry()`` of its own.
        engine: the engine whose store ``fluxo_runs`` (runs by workflow and status)
            is read from at each scrape; without it that gauge is left out.
        namespace: the first word of every metric's name.

    Raises:
        DefinitionError: the namespace is not a valid metric name, or this
            registry already has metrics of these names.

    Example:
        >>> observer = PrometheusObserver(engine=engine)
        >>> engine.add_observer(observer)
        >>> prometheus_client.start_http_server(9464)
    """

    inline: ClassVar[bool] = True

    def __init__(
        self,
        registry: prometheus_registry.CollectorRegistry | None = None,
        *,
        engine: _engine.Engine | None = None,
        namespace: str = "fluxo",
    ) -> None:
        if not isinstance(namespace, str) or (namespace and not _NAMESPACE.fullmatch(namespace)):
            raise _errors.DefinitionError(
                f"namespace must be letters, digits and underscores, not starting with a "
                f"digit (for example 'fluxo' or 'shop_fluxo'), not {namespace!r}"
            )
        self.registry = prometheus_client.REGISTRY if registry is None else registry
        self.engine = engine
        self.namespace = namespace
        self._collector = _Collector(self)
        self.step_times = observe.StepTimes(self._fold_times)
        """The live step attempts that completed, not counted yet."""

        def counter(name: str, doc: str, labels: Sequence[str]) -> prometheus_client.Counter:
            made = prometheus_client.Counter(name, doc, labels, namespace=namespace, registry=None)
            self._collector.metrics.append(made)
            return made

        def histogram(
            name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
        ) -> prometheus_client.Histogram:
            made = prometheus_client.Histogram(
                name, doc, labels, namespace=namespace, buckets=buckets, registry=None
            )
            self._collector.metrics.append(made)
            return made

        wf, step = "workflow", "step"
        self._runs_started = _Labelled(counter("runs_started", "Runs created.", [wf]))
        self._runs_ended = _Labelled(
            counter("runs_ended", "Runs ended, by outcome.", [wf, "outcome"])
        )
        self._executions = _Labelled(
            counter("run_executions", "Executions of runs begun (claims and resumed waits).", [wf])
        )
        self._suspended = _Labelled(
            counter(
                "runs_suspended",
                "Executions stopped before their run ended, by why.",
                [wf, "reason"],
            )
        )
        self._attempts = _Labelled(
            counter("step_attempts", "Live step attempts, by outcome.", [wf, step, "outcome"])
        )
        self._retries = _Labelled(
            counter(
                "step_retries", "Step attempts that raised and are attempted again.", [wf, step]
            )
        )
        self._step_duration = _Labelled(
            histogram(
                "step_duration_seconds",
                "Seconds each live step attempt took.",
                [wf, step],
                STEP_DURATION_BUCKETS,
            )
        )
        self._claim_delay = _Labelled(
            histogram(
                "run_claim_delay_seconds",
                "Seconds from a run being ready to a worker claiming it.",
                [wf],
                CLAIM_DELAY_BUCKETS,
            )
        )
        self._signals_sent = _Labelled(counter("signals_sent", "Signals stored for runs.", [wf]))
        self._signals_received = _Labelled(
            counter("signals_received", "Signals consumed by workflows.", [wf])
        )
        self._timers_fired = _Labelled(counter("timers_fired", "Durable timers fired.", [wf]))
        self._nondeterminism = _Labelled(
            counter("nondeterminism", "Runs whose code no longer matches their history.", [wf])
        )
        self._leases_lost = _Labelled(
            counter("leases_lost", "Executions stopped as another worker took the run.", [wf])
        )
        try:
            self.registry.register(self._collector)
        except ValueError as exc:  # prometheus_client's DuplicateTimeseries
            raise _errors.DefinitionError(
                f"this registry has metrics named like the observer's already ({exc}): give "
                "one PrometheusObserver to every engine of the process "
                "(engine.add_observer(observer)), or pass another registry= or namespace="
            ) from exc

    def __repr__(self) -> str:
        return f"PrometheusObserver(namespace={self.namespace!r})"

    def unregister(self) -> None:
        """Take this observer's metrics out of its registry (they are no longer served)."""
        self.registry.unregister(self._collector)

    # -- the events ----------------------------------------------------------------------

    def run_started(self, event: observe.RunEvent) -> None:  # noqa: D102 (see Observer)
        if not event.replayed:
            self._runs_started(event.workflow).inc()

    def run_resumed(self, event: observe.RunEvent) -> None:  # noqa: D102
        if event.replayed:
            return
        self._executions(event.workflow).inc()
        if event.delay is not None:
            self._claim_delay(event.workflow).observe(event.delay)

    def run_suspended(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._suspended(event.workflow, event.name or "unknown").inc()

    def _run_ended(self, event: observe.RunEvent) -> None:
        if not event.replayed:
            self._runs_ended(event.workflow, _ENDED[event.kind]).inc()

    run_completed = run_failed = run_cancelled = run_continued = _run_ended

    def _attempt_ended(self, event: observe.RunEvent) -> None:
        if event.replayed:
            return
        workflow, step = event.workflow, event.step
        self._attempts(workflow, step, _ATTEMPTS[event.kind]).inc()
        if event.kind == "step_retried":
            self._retries(workflow, step).inc()
        if event.duration is not None:
            self._step_duration(workflow, step).observe(event.duration)

    step_completed = step_failed = step_retried = _attempt_ended

    def _fold_times(self, times: dict[tuple[str, str], list[float]]) -> None:
        for (workflow, step), durations in times.items():
            self._attempts(workflow, step, "completed").inc(len(durations))
            histogram = self._step_duration(workflow, step)
            for took in durations:
                histogram.observe(took)

    def signal_sent(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._signals_sent(event.workflow).inc()

    def signal_received(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._signals_received(event.workflow).inc()

    def timer_fired(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._timers_fired(event.workflow).inc()

    def nondeterminism(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._nondeterminism(event.workflow).inc()

    def lease_lost(self, event: observe.RunEvent) -> None:  # noqa: D102
        if not event.replayed:
            self._leases_lost(event.workflow).inc()


class _Collector:
    """What the observer registers: its metrics, and ``fluxo_runs`` read at each scrape.

    One collector, so the observer's names are registered (or refused) all at once.
    """

    def __init__(self, observer: PrometheusObserver) -> None:
        self.observer = observer
        self.metrics: list[prometheus_client.Counter | prometheus_client.Histogram] = []
        self.runs_name = f"{observer.namespace}_runs" if observer.namespace else "runs"
        self._failing = False
        self._lock = threading.Lock()

    def describe(self) -> Iterator[metrics_core.Metric]:
        """The families this collector serves, without their samples (for the registry)."""
        for metric in self.metrics:
            yield from metric.describe()
        yield self._runs_family()

    def collect(self) -> Iterator[metrics_core.Metric]:
        """Every family with its samples, ``fluxo_runs`` read from the store now."""
        times = self.observer.step_times
        try:
            if times is not None:
                times.flush()  # the steps of executions still running
        except Exception:
            log.exception("counting the step times of runs still executing failed")
        for metric in self.metrics:
            yield from metric.collect()
        engine = self.observer.engine
        if engine is not None:
            family = self.runs(engine)
            if family is not None:
                yield family

    def _runs_family(self) -> metrics_core.GaugeMetricFamily:
        return metrics_core.GaugeMetricFamily(
            self.runs_name,
            "Runs in the store, by workflow and status, when scraped.",
            labels=["workflow", "status"],
        )

    def runs(self, engine: _engine.Engine) -> metrics_core.GaugeMetricFamily | None:
        """Count the store's runs; a failure is logged once (until it works again), not raised."""
        try:
            counts = engine.count_runs()
            workflows: Iterable[str] = {name for name, _ in counts} | {
                wf.name for wf in engine.workflows
            }
        except Exception:
            with self._lock:
                first, self._failing = not self._failing, True
            if first:
                log.warning(
                    "cannot count the runs for the metric %s; it is left out of the scrapes "
                    "until the store answers again",
                    self.runs_name,
                    exc_info=True,
                )
            return None
        with self._lock:
            recovered, self._failing = self._failing, False
        if recovered:
            log.info("the metric %s is counted again", self.runs_name)
        family = self._runs_family()
        for workflow in sorted(workflows):
            for status in history.RunStatus:
                family.add_metric([workflow, status.value], counts.get((workflow, status), 0))
        return family
