"""``fluxo worker``: run a worker for an app's engine, on the queues it names.

Attached to the ``fluxo`` group by :mod:`fluxo.cli`.
"""

from __future__ import annotations

import logging

import click

from fluxo import _cli_apps, _cli_metrics, _engine, _queue_config, _redact
from fluxo.stores import memory

APP_ENV = _cli_apps.APP_ENV


class RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) with every password in them masked."""

    def format(self, record: logging.LogRecord) -> str:
        return _redact.redact(super().format(record))


@click.command()
@click.argument("app", envvar=APP_ENV, metavar="APP", required=False)
@click.option("--concurrency", "-c", default=4, show_default=True, help="Runs executed at once.")
@click.option(
    "--workflow",
    "-w",
    "only",
    multiple=True,
    metavar="NAME",
    help="Run only this workflow's runs (repeatable); by default, all of the app's.",
)
@click.option(
    "--lease", default=30.0, show_default=True, help="Seconds a claimed run stays leased."
)
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    help="Seconds in-flight runs get to finish on SIGTERM/SIGINT.",
)
@click.option(
    "--sticky",
    default=5.0,
    show_default=True,
    help="Longest wait (seconds) held in a worker thread, so the run resumes without replay "
    "(at most --concurrency waits held at once; a held wait takes no slot).",
)
@click.option(
    "--dead-after",
    default=2.0,
    show_default=True,
    help="Seconds without a liveness beat after which other workers resume a dead worker's "
    "runs (without waiting for their leases).",
)
@click.option(
    "--queue",
    "-q",
    "queues",
    multiple=True,
    metavar="NAME",
    help="Claim (and admit) runs of this queue (repeatable; 'default' is the default "
    "queue); by default, every queue the app declares or its workflows name, and 'default'.",
)
@click.option("--worker-id", help="Name this worker in leases and logs (default: host:pid:random).")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    envvar=_cli_metrics.PORT_ENV,
    show_envvar=True,
    help="Serve Prometheus metrics of the runs at http://HOST:PORT/metrics "
    "(needs pip install 'fluxo[prometheus]').",
)
@click.option(
    "--metrics-host",
    default=_cli_metrics.DEFAULT_HOST,
    show_default=True,
    envvar=_cli_metrics.HOST_ENV,
    show_envvar=True,
    help="The interface --metrics-port listens on: this machine only by default; "
    "0.0.0.0 for a scraper on another machine or outside a container.",
)
def worker(  # noqa: PLR0917 (click passes every option by position)
    app: str | None,
    concurrency: int,
    only: tuple[str, ...],
    queues: tuple[str, ...],
    lease: float,
    shutdown_timeout: float,
    sticky: float,
    dead_after: float,
    worker_id: str | None,
    log_level: str,
    metrics_port: int | None,
    metrics_host: str,
) -> None:
    """Run a worker for the engine APP ('module:attribute', or $FLUXO_APP).

    SIGTERM or SIGINT stop it gracefully: in-flight runs finish, or give their
    lease back so another worker resumes them. A second signal exits at once.
    """
    if metrics_port is not None:
        _cli_metrics.check_installed()  # before the app is loaded and connects
    engine, owned = _cli_apps.app_engine(app)
    try:
        serving = engine
        if only:
            missing = sorted(set(only) - engine.workflow_names)
            if missing:
                raise click.BadParameter(
                    f"the app has no workflow named {', '.join(map(repr, missing))}; "
                    f"its workflows are {', '.join(sorted(w.name for w in engine.workflows))}",
                    param_hint="'--workflow'",
                )
            # An engine of the chosen workflows on the same store claims only their runs.
            serving = _engine.Engine(
                engine.store,
                workflows=[engine.lookup(name) for name in only],
                codec=engine.codec,
                clock=engine.clock,
                step_context=engine.step_context,
                observers=engine.observers.observers,
                queues=engine.queues.values(),
            )
        handler = logging.StreamHandler()
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.basicConfig(level=log_level.upper(), handlers=[handler])
        if isinstance(engine.store, memory.MemoryStore):
            logging.getLogger(__name__).warning(
                "this worker's store is memory://, which lives in this process only: runs "
                "started by other processes never reach it; use a shared store"
            )
        with _cli_metrics.exposed(serving, metrics_host, metrics_port):
            serving.worker(
                concurrency=concurrency,
                lease=lease,
                shutdown_timeout=shutdown_timeout,
                sticky=sticky,
                dead_after=dead_after,
                worker_id=worker_id,
                queues=_queue_names(queues) if queues else None,
            ).run()
    finally:
        if serving is not engine:
            serving.close()  # its observers' queued events delivered; the store is engine's
        if owned:
            engine.close()


def _queue_names(queues: tuple[str, ...]) -> list[str]:
    """The ``--queue`` values, each a valid queue name (else a usage error naming it)."""
    for name in queues:
        problem = _queue_config.queue_name_problem(name)
        if problem is not None:
            raise click.BadParameter(problem, param_hint="'--queue'")
    return list(queues)
