"""``fluxo schedules``: list, pause, resume and trigger the app's schedules.

Schedules are defined in code (``@fluxo.schedule``), so these commands need the
app (``--app`` or ``FLUXO_APP``); ``--store`` may point them at another store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from fluxo import _cli_apps, _schedule_control
from fluxo import _cli_format as fmt

APP_ENV = "FLUXO_APP"
STORE_ENV = "FLUXO_STORE_URL"


def _options(fn: Any) -> Any:
    """``--app`` and ``--store``, as the ``runs`` commands take them."""
    fn = click.option(
        "--app",
        envvar=APP_ENV,
        show_envvar=True,
        metavar="APP",
        help="Your engine, as 'module:attribute': its scheduled workflows.",
    )(fn)
    return click.option(
        "--store",
        envvar=STORE_ENV,
        show_envvar=True,
        metavar="URL",
        help="The store URL; wins over the app's own store.",
    )(fn)


@click.group()
def schedules() -> None:
    """List, pause, resume and trigger the app's schedules (@fluxo.schedule).

    A schedule is named by its workflow's name. The app (--app or FLUXO_APP)
    defines the schedules; a worker starts each one as it starts.
    """


def _time(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat()


def record(info: _schedule_control.ScheduleInfo) -> dict[str, Any]:
    """A schedule as a JSON-ready dict (``fluxo schedules list --json``)."""
    spec = info.schedule
    return {
        "workflow": info.workflow,
        "cron": spec.cron,
        "every": spec.every,
        "tz": spec.tz,
        "catch_up": spec.catch_up,
        "status": info.status,
        "paused": info.paused,
        "last_tick": _time(info.last_tick),
        "last_run": info.last_run,
        "next_tick": _time(info.next_tick),
        "run_id": info.run_id,
    }


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (for scripts).")
@_options
def list_schedules(as_json: bool, store: str | None, app: str | None) -> None:
    """List the app's schedules: spec, status, paused, last and next tick."""
    _needs_app(app)
    with _cli_apps.connect(store, app) as engine:
        found = engine.schedules.list()
    if as_json:
        click.echo(fmt_json([record(info) for info in found]))
        return
    if not found:
        click.echo("the app has no schedules (put @fluxo.schedule(...) above a @fluxo.workflow)")
        return
    headers = ["WORKFLOW", "SCHEDULE", "STATUS", "LAST TICK", "NEXT TICK"]
    rows = [
        [
            info.workflow,
            info.schedule.describe(),
            "paused" if info.paused and info.status == "waiting" else info.status,
            _time(info.last_tick) or "-",
            _time(info.next_tick) or "-",
        ]
        for info in found
    ]
    click.echo(fmt.format_table(headers, rows))


@schedules.command()
@click.argument("name")
@_options
def pause(name: str, store: str | None, app: str | None) -> None:
    """Pause schedule NAME: its ticks start no run until it is resumed."""
    _needs_app(app)
    with _cli_apps.connect(store, app) as engine:
        engine.schedules.pause(name)
    click.echo(f"schedule {name!r} is asked to pause; it does as soon as a worker runs it")


@schedules.command()
@click.argument("name")
@_options
def resume(name: str, store: str | None, app: str | None) -> None:
    """Resume schedule NAME: its next tick starts a run again (missed ones do not)."""
    _needs_app(app)
    with _cli_apps.connect(store, app) as engine:
        engine.schedules.resume(name)
    click.echo(f"schedule {name!r} is asked to resume; it does as soon as a worker runs it")


@schedules.command()
@click.argument("name")
@_options
def trigger(name: str, store: str | None, app: str | None) -> None:
    """Start a run of schedule NAME's workflow now, paused or not; print its id."""
    _needs_app(app)
    with _cli_apps.connect(store, app) as engine:
        run_id = engine.schedules.trigger(name)
    click.echo(run_id)


def _needs_app(app: str | None) -> None:
    if app is None and _cli_apps.given() is None:
        raise click.UsageError(
            f"schedules are defined in your code: name your engine with --app or {APP_ENV}"
        )


def fmt_json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False)
