"""Fluxo's tables under ``manage.py migrate``: a migration operation that runs Fluxo's own.

Fluxo's schema is kept by its alembic migrations (``fluxo db upgrade``). Each
Django migration of this app that changes it holds one :class:`FluxoSchema`
operation, which brings the Fluxo database to one alembic revision (forwards) or
back to the one before (backwards): ``0001_initial`` to ``0003``, the next
migration to the next revision, and so on. So ``migrate`` makes the tables,
``migrate fluxo zero`` drops them, and ``migrate --check`` tells when a new Fluxo
brought a revision the database lacks.

The alembic migration runs on Fluxo's own connection, under Fluxo's migration lock
(so it never races a worker starting on a new database), not in Django's
transaction: the Django migrations holding this operation are ``atomic = False``,
so that on SQLite Django holds no write lock while Fluxo's connection migrates.

The tables go to the Fluxo database only: ``migrate --database other`` records the
migration there and changes nothing (also when a router refuses the ``fluxo``
app there). With ``FLUXO["DATABASE"] = "other"``, a plain ``migrate`` (of the
default database) logs a warning naming ``migrate --database other``, which makes
them. With ``FLUXO["STORE"]`` the runs live in another store, which Fluxo
migrates itself on first use (or ``manage.py fluxo db upgrade``); these
operations then do nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import DEFAULT_DB_ALIAS, router
from django.db.migrations.operations.base import Operation

from fluxo.contrib.django import _process

log = logging.getLogger(__name__)


class FluxoSchema(Operation):
    """Bring the Fluxo database to alembic revision ``revision`` (back: to ``previous``).

    Args:
        revision: the alembic revision this migration reaches.
        previous: the revision the migration before it reached; ``"base"`` (no
            Fluxo tables) for the first.
    """

    reversible = True
    reduces_to_sql = False

    def __init__(self, revision: str, previous: str = "base") -> None:
        self.revision = revision
        self.previous = previous

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        """How the migration file writes this operation."""
        return (
            f"{__name__}.{type(self).__qualname__}",
            [],
            {"revision": self.revision, "previous": self.previous},
        )

    def state_forwards(self, app_label: str, state: Any) -> None:
        """No model changes: the tables are Fluxo's, not Django's."""

    def database_forwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        """Upgrade the Fluxo database to :attr:`revision` (a no-op where it is there already)."""
        url = _target(app_label, schema_editor.connection)
        if url is None:
            return
        from fluxo.stores.sql import _migrate

        if not _migrate.reached(_migrate.current(url), self.revision):
            _migrate.upgrade(url, self.revision)

    def database_backwards(
        self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any
    ) -> None:
        """Downgrade the Fluxo database to :attr:`previous`, dropping what it lacks."""
        url = _target(app_label, schema_editor.connection)
        if url is None:
            return
        from fluxo.stores.sql import _migrate

        if _migrate.reached(_migrate.current(url), self.revision):
            _migrate.downgrade(url, self.previous)

    def describe(self) -> str:
        """The line ``manage.py migrate --plan`` and ``sqlmigrate`` show."""
        return f"Bring Fluxo's tables to schema revision {self.revision}"

    @property
    def migration_name_fragment(self) -> str:
        """For a migration named after its operation: ``fluxo_0004``."""
        return f"fluxo_{self.revision}"


def _target(app_label: str, connection: Any) -> Any:
    """The URL to migrate when Django migrates ``connection``, or ``None`` to do nothing."""
    config = _process.current_settings()
    if config.store is not None:
        return None
    if connection.alias != config.database:
        if connection.alias == DEFAULT_DB_ALIAS:  # a plain `migrate`
            log.warning(
                "Fluxo's tables go to FLUXO['DATABASE'] (%r), not to %r: run `%s` to make them",
                config.database,
                connection.alias,
                _process.migrate_command(config.database),
            )
        return None
    if not router.allow_migrate(connection.alias, app_label):
        return None
    if connection.in_atomic_block:  # the caller runs migrations in a transaction anyway
        log.warning(
            "Fluxo's tables are migrated on a connection of their own, outside the "
            "transaction Django's migration holds on %r",
            connection.alias,
        )
    return _process.database_url(connection.alias)
