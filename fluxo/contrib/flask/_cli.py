"""``flask fluxo ...``: Fluxo's command line with the app's engine, inside its app context.

Every command of ``fluxo`` is there: ``flask fluxo worker``, ``flask fluxo runs
list``, ``flask fluxo replay PATH``, ``flask fluxo db upgrade``... Where ``fluxo``
would need ``APP`` (``--app module:engine``), the app's engine is used; ``--app``
and ``--store`` still win when given. Only ``worker`` may create or upgrade
Fluxo's tables (as it claims runs), and ``db upgrade`` of course: the other
commands read the schema as it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
import flask
from flask.cli import with_appcontext

from fluxo import cli

if TYPE_CHECKING:
    from fluxo.contrib.flask._extension import FluxoState

PROG_NAME = "flask fluxo"


@click.command(
    "fluxo",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@with_appcontext
def fluxo_command(args: tuple[str, ...]) -> None:
    """Fluxo with this app's engine: worker, runs, replay, db (see flask fluxo --help)."""
    state: FluxoState = flask.current_app.extensions["fluxo"]
    command = next((arg for arg in args if not arg.startswith("-")), None)
    with state.command_engine(command) as engine:
        cli.main(list(args), engine=engine, store_url=state.store_url, prog_name=PROG_NAME)
