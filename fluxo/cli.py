"""The ``fluxo`` command line: workers, inspecting and steering runs, replay, the SQL schema.

Environment variables (read here, never in the library core):

* ``FLUXO_APP``: the engine to load, as ``module:attribute``.
* ``FLUXO_STORE_URL``: the store URL.
* ``FLUXO_METRICS_PORT``, ``FLUXO_METRICS_HOST``: ``fluxo worker``'s Prometheus metrics.

Errors print one line, ``Error: ...``, that says what to do. The exit status is 1,
or 2 for a mistake in the command line itself (an unknown option, a bad value).
``fluxo --verbose ...`` shows the traceback too.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from fluxo import (
    _cli_apps,
    _cli_schedules,
    _cli_ui,
    _cli_worker,
    _engine,
    _errors,
    _redact,
    history,
)
from fluxo import _cli_format as fmt

F = TypeVar("F", bound=Callable[..., Any])

STORE_ENV = "FLUXO_STORE_URL"
APP_ENV = "FLUXO_APP"


_CLIError = _cli_apps.CLIError
load_engine = _cli_apps.load_engine
_app_engine = _cli_apps.app_engine
_connect = _cli_apps.connect
_given_url = _cli_apps.given_url


_RedactingFormatter = _cli_worker.RedactingFormatter


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Click callback for ``--since``/``--until``."""
    if value is None:
        return None
    try:
        return fmt.parse_time(value, time.time())
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _target_options(fn: F) -> F:
    """``--store`` and ``--app``, shared by the ``runs`` commands."""
    fn = click.option(
        "--app",
        envvar=APP_ENV,
        show_envvar=True,
        metavar="APP",
        help="Your engine, as 'module:attribute': its workflows and codec are used.",
    )(fn)
    decorated: F = click.option(
        "--store",
        envvar=STORE_ENV,
        show_envvar=True,
        metavar="URL",
        help="The store URL; wins over the app's own store.",
    )(fn)
    return decorated


def _echo_json(value: Any, out: IO[str] | None = None) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False), file=out)


# -- the commands --------------------------------------------------------------------------


class _Group(click.Group):
    """The root group: Fluxo's errors become one-line messages (tracebacks with --verbose)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _errors.StoreUnavailableError as exc:
            raise _CLIError(
                f"cannot reach the store: {fmt.root_reason(exc)}; check {STORE_ENV} or the URL "
                "your app uses"
            ) from exc
        except _errors.FluxoError as exc:
            raise _CLIError(fmt.one_line(str(exc))) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fluxo", prog_name="fluxo", message="%(prog)s %(version)s")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fluxo: durable functions for Python.

    FLUXO_APP names your engine, as 'module:attribute' (fluxo worker, replay,
    runs). FLUXO_STORE_URL is the store URL (fluxo runs, fluxo db).
    """
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


cli.add_command(_cli_worker.worker)


@cli.group()
def runs() -> None:
    """Inspect and steer runs.

    Which store: --store (or FLUXO_STORE_URL) is enough; values are then shown
    as the JSON they are stored as. With --app (or FLUXO_APP) too, the app's
    workflows and codec are used, on the --store store; with --app alone, on
    the app's own store. An option on the command line wins over its
    environment variable.
    """


@runs.command("list")
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in history.RunStatus], case_sensitive=False),
    help="Only runs with this status (repeatable).",
)
@click.option(
    "--workflow",
    "-w",
    "workflows",
    multiple=True,
    metavar="NAME",
    help="Only runs of this workflow (repeatable).",
)
@click.option(
    "--since",
    callback=_when,
    metavar="WHEN",
    help="Only runs created at or after WHEN: ISO-8601 (UTC unless an offset is given) "
    "or an age like 30m, 2h, 7d.",
)
@click.option("--until", callback=_when, metavar="WHEN", help="Only runs created before WHEN.")
@click.option(
    "--id-prefix",
    "id_prefix",
    metavar="TEXT",
    help="Only runs whose id starts with TEXT (case-sensitive; % and _ are plain characters).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="The most runs."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (for scripts).")
@_target_options
def list_runs(  # noqa: PLR0917 (click passes every option by position)
    statuses: tuple[str, ...],
    workflows: tuple[str, ...],
    since: float | None,
    until: float | None,
    id_prefix: str | None,
    limit: int,
    as_json: bool,
    store: str | None,
    app: str | None,
) -> None:
    """List runs, newest first, as a table (or JSON with --json)."""
    if since is not None and until is not None and since > until:
        raise click.BadParameter(
            f"--since ({fmt.iso(since)}) is later than --until ({fmt.iso(until)}); swap them",
            param_hint="'--since'",
        )
    with _connect(store, app) as engine:
        found = engine.list_runs(
            status=[s.lower() for s in statuses] or None,
            workflow=list(workflows) or None,
            created_after=since,
            created_before=until,
            limit=limit + 1,  # one more, to tell whether --limit hid any
            id_prefix=id_prefix,
        )
    more, found = len(found) > limit, found[:limit]
    if as_json:
        _echo_json([fmt.run_record(run) for run in found])
    elif not found:
        click.echo("no runs match")
    else:
        headers = ["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED"]
        rows = [
            [
                run.id,
                run.workflow,
                fmt.status_text(run),
                fmt.iso(run.created_at),
                fmt.iso(run.updated_at),
            ]
            for run in found
        ]
        if any(run.parent for run in found):  # only then: most runs are nobody's child
            headers.append("PARENT")
            for row, run in zip(rows, found, strict=True):
                row.append(run.parent or "")
        click.echo(fmt.format_table(headers, rows))
        for run in found:
            if run.damage is not None:
                click.echo(f"run {run.id}: its stored record is damaged: {run.damage}", err=True)
    if more:
        click.echo(f"(the newest {limit} shown; pass --limit for more)", err=True)


@runs.command()
@click.argument("run_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document (for scripts).")
@_target_options
def show(run_id: str, as_json: bool, store: str | None, app: str | None) -> None:
    """Show a run: status, input, result or error, and the timeline of its history."""
    with _connect(store, app) as engine:
        doc = fmt.describe_run(engine.store.load(run_id), engine.codec)
    if as_json:
        _echo_json(doc)
    else:
        click.echo(fmt.render_run(doc))


@runs.command("history")
@click.argument("run_id", metavar="ID")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="Write to this file (its folders are made) instead of standard output.",
)
@click.option(
    "--readable",
    is_flag=True,
    help="Also give each payload decoded, for people to read (replay ignores it).",
)
@_target_options
def history_command(
    run_id: str, output: Path, readable: bool, store: str | None, app: str | None
) -> None:
    """Export a run's history as a JSON document, the input of `fluxo replay`."""
    with _connect(store, app) as engine:
        document = engine.export_history(run_id, readable=readable)
    if str(output) == "-":
        _echo_json(document)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("w", encoding="utf-8") as file:
            _echo_json(document, file)
    except OSError as exc:
        raise _CLIError(f"cannot write {output}: {exc.strerror or exc}") from exc


@runs.command()
@click.argument("run_id", metavar="ID")
@click.argument("name")
@click.argument("payload", required=False)
@click.option(
    "--payload-file",
    type=click.File("r"),
    help="Read the JSON payload from this file ('-' for standard input).",
)
@_target_options
def signal(  # noqa: PLR0917 (click passes every option by position)
    run_id: str,
    name: str,
    payload: str | None,
    payload_file: IO[str] | None,
    store: str | None,
    app: str | None,
) -> None:
    """Send signal NAME to run ID, with PAYLOAD as JSON text (none: null)."""
    if payload is not None and payload_file is not None:
        raise click.UsageError("give the payload as PAYLOAD or with --payload-file, not both")
    text, hint = (payload, "PAYLOAD") if payload_file is None else (payload_file.read(), None)
    try:
        value = fmt.parse_payload(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint or "'--payload-file'") from None
    with _connect(store, app) as engine:
        engine.signal(run_id, name, value)
    click.echo(f"signal {name!r} sent to run {run_id!r}")


@runs.command()
@click.argument("run_id", metavar="ID")
@click.argument("key")
@click.option("--watch", is_flag=True, help="Print every value, one JSON line each, to the end.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    help="Seconds to wait for a (next) value; by default as long as it takes.",
)
@_target_options
def event(  # noqa: PLR0917 (click passes every option by position)
    run_id: str, key: str, watch: bool, timeout: float | None, store: str | None, app: str | None
) -> None:
    """Print the latest value run ID set under KEY (fluxo.set_event), waiting for the first."""
    with _connect(store, app) as engine:
        if not watch:
            _echo_json(engine.get_event(run_id, key, timeout=timeout))
            return
        for value in engine.watch_event(run_id, key, timeout=timeout):
            click.echo(json.dumps(value, ensure_ascii=False))


@runs.command()
@click.argument("run_id", metavar="ID")
@_target_options
def cancel(run_id: str, store: str | None, app: str | None) -> None:
    """Cancel a run: it stops at its next durable call (at once if it has not begun)."""
    with _connect(store, app) as engine:
        run = engine.cancel(run_id)
    if run.status is history.RunStatus.CANCELLED:
        click.echo(f"run {run_id!r} is cancelled")
    else:
        click.echo(
            f"cancellation of run {run_id!r} requested; it is {run.status.value} and stops "
            "at its next durable call"
        )


@runs.command()
@click.argument("run_id", metavar="ID")
@_target_options
def retry(run_id: str, store: str | None, app: str | None) -> None:
    """Resume a failed or dead run from its history (after fixing the code or the cause)."""
    with _connect(store, app) as engine:
        engine.retry(run_id)
    click.echo(f"run {run_id!r} is pending again; a worker resumes it from its history")


@runs.command()
@click.argument("run_id", metavar="ID")
@_target_options
def resume(run_id: str, store: str | None, app: str | None) -> None:
    """Resume a cancelled run where its cancellation took it, where that is safe."""
    with _connect(store, app) as engine:
        resumed = engine.resume(run_id).id
    click.echo(f"run {resumed!r} is pending again; a worker resumes it where it was cancelled")


@runs.command()
@click.argument("run_id", metavar="ID")
@click.option("--from-position", required=True, type=int, metavar="N", help="Replay 0 to N-1.")
@click.option("--id", "new_id", metavar="NEW", help="The new run's id (default: generated).")
@_target_options
def fork(
    run_id: str, from_position: int, new_id: str | None, store: str | None, app: str | None
) -> None:
    """Start a new run replaying run ID's history before position N, then today's code."""
    with _connect(store, app) as engine:
        handle = engine.fork(run_id, from_position=from_position, id=new_id)
    click.echo(handle.id)


def _age(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """Click callback for ``--older-than``: an age (a ``timedelta``) or a time (a ``datetime``)."""
    if value is None:
        return None
    now = time.time()
    try:
        moment = fmt.parse_time(value, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if fmt.is_age(value):
        return timedelta(seconds=now - moment)
    if moment > now:
        raise click.BadParameter(f"{value!r} is in the future", ctx, param)
    return datetime.fromtimestamp(moment, timezone.utc)


@runs.command()
@click.option(
    "--older-than",
    required=True,
    callback=_age,
    metavar="AGE",
    help="Delete runs that finished this long ago or more: an age like 30d, 12h or 2w, "
    "or an ISO-8601 time (UTC unless it has an offset).",
)
@click.option(
    "--status",
    "-s",
    "statuses",
    multiple=True,
    type=click.Choice([s.value for s in history.RunStatus if s.is_terminal], case_sensitive=False),
    help="Only runs that ended with this status (repeatable); by default any.",
)
@click.option(
    "--workflow",
    "-w",
    "workflows",
    multiple=True,
    metavar="NAME",
    help="Only runs of this workflow (repeatable).",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1, max=_engine.MAX_BATCH),
    default=1000,
    show_default=True,
    help="The most runs deleted per transaction.",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing; say how many runs would go.")
@_target_options
def purge(  # noqa: PLR0917 (click passes every option by position)
    older_than: timedelta | datetime,
    statuses: tuple[str, ...],
    workflows: tuple[str, ...],
    batch: int,
    dry_run: bool,
    store: str | None,
    app: str | None,
) -> None:
    """Delete finished runs, with their histories, once they are old enough.

    Deletes in batches, each a short transaction, until none is left. A run
    that has not finished is never deleted, nor a child whose parent is running
    or failed, nor a run of a continue_as_new chain that is still going. With
    --dry-run the count covers a first pass: a finished chain counts its latest
    run only.
    """
    with _connect(store, app) as engine:
        count = engine.purge(
            older_than=older_than,
            status=[s.lower() for s in statuses] or None,
            workflow=list(workflows) or None,
            batch=batch,
            dry_run=dry_run,
        )
    runs_word = "run" if count == 1 else "runs"
    if dry_run:
        click.echo(f"{count} finished {runs_word} would be deleted (dry run: nothing deleted)")
    else:
        click.echo(f"deleted {count} finished {runs_word}")


@cli.command()
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    metavar="PATH...",
    type=click.Path(exists=True, path_type=Path),
)
@click.option(
    "--app",
    envvar=APP_ENV,
    show_envvar=True,
    metavar="APP",
    help="Your engine, as 'module:attribute': the code to check.",
)
@click.pass_context
def replay(ctx: click.Context, paths: tuple[Path, ...], app: str | None) -> None:
    """Replay recorded histories against today's code; exit 1 if any does not match.

    PATH is a history exported with `fluxo runs history`, or a folder of them
    (every *.json below it). No step runs and nothing is recorded: this checks
    that the code still makes the durable calls its histories recorded, so
    runs in flight survive a deploy. Run it in CI over a folder of histories.
    """
    from fluxo import testing

    engine, owned = _app_engine(app, option="--app")
    try:
        report = testing.replay_all(list(paths), workflows=engine.workflows, codec=engine.codec)
    finally:
        if owned:
            engine.close()
    click.echo(report.render(verbose=True))
    if not report.ok:
        ctx.exit(1)


cli.add_command(_cli_schedules.schedules)
cli.add_command(_cli_ui.ui)


@cli.group()
def db() -> None:
    """Manage the SQL store's schema."""


def _url_option(fn: F) -> F:
    decorated: F = click.option(
        "--url",
        "--store",
        "url",
        envvar=STORE_ENV,
        show_envvar=True,
        metavar="URL",
        help="The SQL store URL.",
    )(fn)
    return decorated


_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")


@contextlib.contextmanager
def _database(url: str | None) -> Iterator[str]:
    if url is None:
        url = _given_url()
    if url is None:
        raise click.UsageError(f"no database given: set {STORE_ENV} or pass --url URL")
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise click.BadParameter(
            f"{_redact.redact_value(url)!r} is not a URL; pass something like "
            "'sqlite:///fluxo.db' or 'postgresql://user@host/app'",
            param_hint="'--url'",
        )
    if scheme.split("+", 1)[0].lower() not in _SQL_SCHEMES:
        raise click.BadParameter(
            f"{_redact.redact(scheme, _redact.secrets_of(url))!r} is not a SQL store; only the "
            "SQL stores (sqlite, postgresql, mysql) have a schema to manage",
            param_hint="'--url'",
        )
    try:
        yield url
    except _errors.StoreUnavailableError as exc:
        raise _CLIError(
            f"cannot reach the store at {_redact.redact_value(url)}: {fmt.root_reason(exc)}; "
            f"check {STORE_ENV} or --url"
        ) from exc


@db.command()
@_url_option
def upgrade(url: str | None) -> None:
    """Bring the database schema to the newest version."""
    from fluxo.stores.sql import _migrate

    with _database(url) as checked:
        _migrate.upgrade(checked)
        click.echo(f"schema is at {_migrate.current(checked)}")


@db.command()
@_url_option
def current(url: str | None) -> None:
    """Print the schema version the database is at."""
    from fluxo.stores.sql import _migrate

    with _database(url) as checked:
        click.echo(_migrate.current(checked) or "empty (run 'fluxo db upgrade')")


@db.command()
@_url_option
def check(url: str | None) -> None:
    """Exit non-zero when the database schema is not the newest."""
    from fluxo.stores.sql import _migrate

    with _database(url) as checked:
        problems = _migrate.check(checked)
        shown = _redact.redact_value(checked)
    if problems == [_migrate.NO_SCHEMA]:
        raise _CLIError(f"no Fluxo schema at {shown}; run `fluxo db upgrade`")
    if problems:
        for problem in problems:
            click.echo(f"  {problem}", err=True)
        count = f"{len(problems)} difference{'s' if len(problems) > 1 else ''}"
        raise _CLIError(
            f"the schema at {shown} is not this Fluxo's ({count} above); run `fluxo db upgrade`"
        )
    click.echo("schema is up to date")


def _wants_traceback(args: Sequence[str]) -> bool:
    """Whether ``--verbose`` comes before the command name (where the option lives)."""
    for arg in args:
        if not arg.startswith("-"):
            return False
        if arg in ("-v", "--verbose"):
            return True
    return False


def _url_secrets(args: Sequence[str]) -> tuple[str, ...]:
    """The passwords of the store URLs of a command line (and of ``FLUXO_STORE_URL``).

    Every message is masked with them too, whatever a driver made of the URL.
    """
    urls = [os.environ.get(STORE_ENV, "")]
    for index, arg in enumerate(args):
        name, equals, value = arg.partition("=")
        if name in ("--store", "--url"):
            urls.append(value if equals else "".join(args[index + 1 : index + 2]))
    return tuple(secret for url in urls for secret in _redact.secrets_of(url))


def main(
    argv: Sequence[str] | None = None,
    *,
    engine: Callable[[], _engine.Engine] | None = None,
    store_url: Callable[[], str | None] | None = None,
    prog_name: str = "fluxo",
) -> None:
    """Run the command line: errors print one line, and set the exit status.

    Args:
        argv: the arguments (default: the process's).
        engine: returns the engine the commands use when no APP is given (a web
            framework's integration passes its own, so ``manage.py fluxo worker``
            needs no ``module:attribute``). The commands do not close it, and
            ``FLUXO_APP`` / ``FLUXO_STORE_URL`` in the environment are ignored
            (``--app`` and ``--store`` still choose).
        store_url: returns the URL of that engine's store without opening it, for
            ``db upgrade``, ``db current`` and ``db check`` when ``--url`` is not given.
        prog_name: the command's name in help and errors.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = _wants_traceback(args)
    secrets = _url_secrets(args)
    obj: dict[str, Any] = {}
    if engine is not None:
        obj["engine"] = engine
    if store_url is not None:
        obj["store_url"] = store_url
    hidden = {
        name: os.environ.pop(name)
        for name in ((APP_ENV, STORE_ENV) if engine is not None else ())
        if name in os.environ
    }
    try:
        code = cli.main(args=args, prog_name=prog_name, standalone_mode=False, obj=obj)
    except _NoArgsIsHelp as exc:  # a group named alone: its help, as written
        click.echo(exc.format_message())
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Error: interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(fmt.one_line(exc.format_message()) + where, exc.exit_code, secrets=secrets)
    except click.ClickException as exc:
        traced = exc if verbose else None
        _fail(fmt.one_line(exc.format_message()), exc.exit_code, traced, secrets)
    except _errors.FluxoError as exc:
        _fail(fmt.one_line(str(exc)), 1, exc if verbose else None, secrets)
    except Exception as exc:  # a bug (ours or a driver's): its traceback, passwords masked
        _fail(
            f"unexpected {type(exc).__name__}: {fmt.one_line(str(exc))} (the traceback "
            "above shows where it was raised; if in Fluxo, please report it)",
            1,
            exc,
            secrets,
        )
    finally:
        os.environ.update(hidden)
    sys.exit(code if isinstance(code, int) else 0)


_NoArgsIsHelp: type[click.UsageError] = getattr(
    click.exceptions, "NoArgsIsHelpError", type("_NeverRaised", (click.UsageError,), {})
)
"""Click 8.2's error for a group called without a command (older clicks print the help)."""


def _fail(
    message: str, code: int, traced: BaseException | None = None, secrets: Sequence[str] = ()
) -> None:
    """Print the error (after its traceback, with --verbose), passwords masked, and exit."""
    if traced is not None:
        text = "".join(traceback.format_exception(traced))
        click.echo(_redact.redact(text, secrets).rstrip(), err=True)
    click.echo(f"Error: {_redact.redact(message, secrets)}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
