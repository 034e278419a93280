"""``fluxo worker --metrics-port``: the worker's Prometheus metrics, served over HTTP.

The worker's engine gets a ``fluxo.contrib.prometheus.PrometheusObserver`` on
``prometheus_client``'s default registry, which ``prometheus_client``'s own
server exposes at ``http://HOST:PORT/metrics`` from a thread of its own.

The address defaults to 127.0.0.1: a flag for metrics should not open a port
to the network as a side effect, on a host whose other interfaces may be public.
A scraper on another machine, or outside the worker's container, needs
``--metrics-host 0.0.0.0`` (every interface), chosen knowingly.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import click

from fluxo import _cli_apps

if TYPE_CHECKING:
    from fluxo import _engine

DEFAULT_HOST = "127.0.0.1"
PORT_ENV = "FLUXO_METRICS_PORT"
HOST_ENV = "FLUXO_METRICS_HOST"


def check_installed() -> None:
    """Raise a one-line CLI error naming the extra when ``prometheus_client`` is missing."""
    try:
        importlib.import_module("fluxo.contrib.prometheus")
    except ImportError as exc:
        raise _cli_apps.CLIError(
            "--metrics-port needs the prometheus_client package; install it with "
            "pip install 'fluxo[prometheus]'"
        ) from exc


def url(host: str, port: int) -> str:
    """The address of the metrics, as printed (an IPv6 host in brackets)."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/metrics"


@contextlib.contextmanager
def exposed(engine: _engine.Engine, host: str, port: int | None) -> Iterator[None]:
    """Count ``engine``'s runs and serve them at ``host:port`` while the block runs.

    Nothing happens when ``port`` is None. The address is printed once, on stderr.
    An engine that has a ``PrometheusObserver`` on the default registry already
    (the app's own) gets no second one.
    """
    if port is None:
        yield
        return
    import prometheus_client

    from fluxo.contrib import prometheus

    try:
        started = prometheus_client.start_http_server(port, addr=host)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        fix = (
            "pick another --metrics-port, or stop what listens there"
            if exc.errno == errno.EADDRINUSE
            else "check --metrics-host (an address of this machine, or 0.0.0.0) and --metrics-port"
        )
        raise _cli_apps.CLIError(
            f"cannot serve metrics on {url(host, port)}: {reason}; {fix}"
        ) from exc
    observer = None
    try:
        if not any(
            isinstance(o, prometheus.PrometheusObserver)
            and o.registry is prometheus_client.REGISTRY
            for o in engine.observers.observers
        ):  # else the app counts its runs in the default registry already
            observer = prometheus.PrometheusObserver(engine=engine)
            engine.add_observer(observer)
        click.echo(f"serving Prometheus metrics at {url(host, port)}", err=True)
        yield
    finally:
        if observer is not None:
            observer.unregister()
        # prometheus_client 0.20 and later return the server and its thread; older, None.
        if isinstance(started, tuple):
            server = started[0]
            server.shutdown()
            server.server_close()
