"""The ``fluxo`` command line: run workers and manage the SQL schema.

Environment variables (read here, never in the library core):

* ``FLUXO_APP``: the engine to load, as ``module:attribute``.
* ``FLUXO_STORE_URL``: the store URL for ``fluxo db`` commands.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from fluxo import _engine, _errors

F = TypeVar("F", bound=Callable[..., Any])


class _CLIError(click.ClickException):
    """A one-line error for the user; the traceback only with --verbose."""


def load_engine(spec: str) -> _engine.Engine:
    """Import ``module:attribute`` and return the :class:`fluxo.Engine` it names.

    The attribute may also be a function that takes no arguments and returns an engine.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _CLIError(
            f"APP must look like 'module:attribute' (for example 'shop.tasks:engine'), not {spec!r}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise _CLIError(
            f"cannot import {module_name!r}: {exc}; run fluxo from your project's directory "
            "or add it to PYTHONPATH"
        ) from exc
    try:
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise _CLIError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(target) and not isinstance(target, _engine.Engine):
        target = target()
    if not isinstance(target, _engine.Engine):
        raise _CLIError(f"{spec!r} is {type(target).__name__}, not a fluxo.Engine")
    return target


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Fluxo: durable functions for Python."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose


@cli.command()
@click.argument("app", envvar="FLUXO_APP", metavar="APP")
@click.option("--concurrency", "-c", default=4, show_default=True, help="Runs executed at once.")
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
    help="Longest wait (seconds) held in a worker thread, so the run resumes without replay.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def worker(  # noqa: PLR0917 (click passes every option by position)
    app: str,
    concurrency: int,
    lease: float,
    shutdown_timeout: float,
    sticky: float,
    log_level: str,
) -> None:
    """Run a worker for the engine APP ('module:attribute', or $FLUXO_APP).

    SIGTERM or SIGINT stop it gracefully: in-flight runs finish, or give their
    lease back so another worker resumes them.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    engine = load_engine(app)
    try:
        engine.worker(
            concurrency=concurrency,
            lease=lease,
            shutdown_timeout=shutdown_timeout,
            sticky=sticky,
        ).run()
    finally:
        engine.close()


@cli.group()
def db() -> None:
    """Manage the SQL store's schema."""


def _url_option(fn: F) -> F:
    decorated: F = click.option(
        "--url",
        envvar="FLUXO_STORE_URL",
        required=True,
        help="The SQL store URL (or $FLUXO_STORE_URL).",
    )(fn)
    return decorated


@db.command()
@_url_option
def upgrade(url: str) -> None:
    """Bring the database schema to the newest version."""
    from fluxo.stores import _sql_migrate

    _sql_migrate.upgrade(url)
    click.echo(f"schema is at {_sql_migrate.current(url)}")


@db.command()
@_url_option
def current(url: str) -> None:
    """Print the schema version the database is at."""
    from fluxo.stores import _sql_migrate

    click.echo(_sql_migrate.current(url) or "empty (run 'fluxo db upgrade')")


@db.command()
@_url_option
def check(url: str) -> None:
    """Exit non-zero when the database schema is not the newest."""
    from fluxo.stores import _sql_migrate

    problems = _sql_migrate.check(url)
    if problems:
        raise _CLIError(
            "the database does not match this Fluxo's schema: "
            + "; ".join(problems)
            + ". Run 'fluxo db upgrade'"
        )
    click.echo("schema is up to date")


def main() -> None:
    """Run the command line, turning Fluxo errors into one-line messages."""
    verbose = "--verbose" in sys.argv[1:] or "-v" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        if verbose:
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except _errors.FluxoError as exc:
        if verbose:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
