"""``manage.py flush``, which also empties Fluxo's tables on the Fluxo database.

Django's ``flush`` empties the tables of Django's managed models, and Fluxo's are
not among them (Fluxo's migrations make them, and the admin's ``Run`` model is
unmanaged). Django's ``TransactionTestCase`` flushes the database after each
test: without this command, the runs a test started would still be there in the
next. So this app's ``flush`` (an app's command of the same name takes the place
of Django's, as ``staticfiles`` does with ``runserver``) runs Django's, then
deletes every run, event and signal (and the workers' liveness and queue records), when the
database flushed is the Fluxo database (``FLUXO["DATABASE"]``, with no
``FLUXO["STORE"]``) and holds them.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush
from django.db import DEFAULT_DB_ALIAS, connections, transaction

from fluxo.contrib.django import _process

TABLES = ("fluxo_signals", "fluxo_events", "fluxo_runs", "fluxo_workers", "fluxo_queues")
"""Fluxo's tables of data (not ``fluxo_alembic_version``, which says what schema is there)."""


class Command(flush.Command):
    """Django's ``flush``, then Fluxo's runs, events and signals on the Fluxo database."""

    help = (
        "Empty the database: Django's flush, and every Fluxo run, event and signal when it "
        "is the Fluxo database."
    )

    def handle(self, **options: Any) -> None:
        """Ask (unless ``--no-input``), flush as Django does, then empty Fluxo's tables."""
        alias = options.get("database") or DEFAULT_DB_ALIAS
        if options.get("interactive", True) and fluxo_tables(alias):
            answer = input(
                f"You have requested a flush of the database {alias!r}.\nThis will IRREVERSIBLY "
                "DESTROY all data in it, every Fluxo run with it, and return each table to an "
                "empty state.\nAre you sure you want to do this?\n\n    Type 'yes' to "
                "continue, or 'no' to cancel: "
            )
            if answer != "yes":
                self.stdout.write("Flush cancelled.")
                return
            options = {**options, "interactive": False}
        super().handle(**options)
        empty_fluxo_tables(alias)


def fluxo_tables(alias: str) -> list[str]:
    """Fluxo's tables of data in the database ``alias``, if it is the Fluxo database."""
    config = _process.current_settings()
    if config.store is not None or alias != config.database:
        return []
    existing = set(connections[alias].introspection.table_names())
    return [table for table in TABLES if table in existing]


def empty_fluxo_tables(alias: str) -> None:
    """Delete every row of Fluxo's tables in the database ``alias`` (see :func:`fluxo_tables`)."""
    tables = fluxo_tables(alias)
    if not tables:
        return
    connection = connections[alias]
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")
