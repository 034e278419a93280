"""``manage.py fluxo ...``: Fluxo's command line on the project's engine.

Every ``fluxo`` command works under ``manage.py fluxo`` with the engine the
settings describe, so no ``APP`` argument and no ``--store`` is needed:
``manage.py fluxo worker``, ``manage.py fluxo runs list``, ``manage.py fluxo runs
show ID``, ``manage.py fluxo replay histories/``... ``manage.py fluxo --help``
lists them.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from fluxo import _engine, _errors, cli
from fluxo.contrib.django import _process, debug

PROG = "manage.py fluxo"

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "mysql", "mariadb"})
"""The store URL schemes whose schema ``db upgrade/current/check`` manage."""


def project_engine() -> _engine.Engine:
    """The project's engine, with a settings problem as the one-line error Fluxo's CLI prints."""
    try:
        return _process.get_engine()
    except ImproperlyConfigured as exc:
        raise _errors.DefinitionError(_settings_problem(exc)) from exc


def _settings_problem(exc: ImproperlyConfigured) -> str:
    """The message of a settings problem; one that says what to install needs no more."""
    message = str(exc)
    return message if "pip install" in message else f"{message} (fix settings.py)"


@debug.sensitive
def project_store_url() -> str | None:
    """The project's store URL, read from the settings without opening the store.

    For ``manage.py fluxo db upgrade``, ``db current`` and ``db check``, which must
    work on a database without Fluxo's tables, where the engine would not open.
    """
    try:
        config = _process.current_settings()
        if config.store is not None:
            scheme = config.store.split("://", 1)[0].split("+", 1)[0].lower()
            if scheme not in SQL_SCHEMES:
                raise _errors.DefinitionError(
                    f"the store is {scheme}://..., which has no schema to manage: `{PROG} db` "
                    "works on SQL stores only (settings.FLUXO['STORE'])"
                )
            return config.store
        url = _process.database_url(config.database)
    except ImproperlyConfigured as exc:
        raise _errors.DefinitionError(_settings_problem(exc)) from exc
    return str(url.render_as_string(hide_password=False))


class Command(BaseCommand):
    """Run Fluxo's command line with this project's engine."""

    help = (
        "Fluxo's command line with this project's engine: `manage.py fluxo worker`, "
        "`manage.py fluxo runs list`... (`manage.py fluxo --help` lists every command)."
    )
    requires_system_checks = ()  # `fluxo worker` reports a broken setting itself

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand everything after ``manage.py fluxo`` to Fluxo's command line, untouched."""
        try:
            run(argv[2:])
        finally:
            connections.close_all()

    def print_help(self, prog_name: str, subcommand: str) -> None:
        """``manage.py help fluxo``: Fluxo's own help."""
        with contextlib.suppress(SystemExit):
            run(["--help"])

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """For ``call_command("fluxo", "runs", "list")``: every argument goes to Fluxo."""
        parser.add_argument("args", nargs=argparse.REMAINDER)

    def handle(self, *args: str, **options: Any) -> None:
        """Run Fluxo's command line from ``call_command``; a failure is a ``CommandError``."""
        try:
            run(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            if code:
                raise CommandError(
                    f"`{PROG} {' '.join(args)}` failed (exit status {code})", returncode=code
                ) from None


def run(argv: list[str]) -> None:
    """Run ``fluxo`` with ``argv`` and the project's engine; exits with its status."""
    cli.main(argv, engine=project_engine, store_url=project_store_url, prog_name=PROG)
