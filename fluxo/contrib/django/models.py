"""A read-only view of Fluxo's runs for the admin: an unmanaged model over ``fluxo_runs``.

Django never creates, alters or writes this table (``managed = False``): Fluxo's
own migrations make it (see ``migrations/``), and Fluxo's engine writes it.
Change runs through the engine (``get_engine().cancel(run_id)``...), never
through the model. Queries go to the Fluxo database (``FLUXO["DATABASE"]``);
with ``FLUXO["STORE"]`` the runs are not in a Django database, and the model
finds none.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from django.db import models

from fluxo.contrib.django import _process


class KeyField(models.CharField):
    """An identifier column (run id, workflow name, worker id), always read as text.

    Fluxo stores identifiers as ``VARBINARY`` on MySQL and MariaDB, so that they
    compare byte for byte; the driver hands those back as bytes.
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        """Decode the bytes of a MySQL ``VARBINARY`` column."""
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value).decode("utf-8")
        return value


class RunManager(models.Manager["Run"]):
    """Reads runs from the Fluxo database, whatever database the default router picks."""

    def get_queryset(self) -> models.QuerySet[Run]:
        """The runs of the Fluxo database (none when ``FLUXO["STORE"]`` is another store)."""
        queryset = super().get_queryset()
        config = _process.current_settings()
        if config.store is not None:
            return queryset.none()
        return queryset.using(self._db or config.database)


class Run(models.Model):
    """One run of a workflow, as the ``fluxo_runs`` table holds it (times: epoch seconds)."""

    id = KeyField(max_length=255, primary_key=True)
    workflow = KeyField(max_length=255)
    status = models.CharField(max_length=16)
    created_at = models.FloatField()
    updated_at = models.FloatField()
    ready_at = models.FloatField(null=True)
    lease_owner = KeyField(max_length=255, null=True)
    lease_until = models.FloatField(null=True)
    cancel_requested = models.BooleanField()
    wake_requested = models.BooleanField()
    deadline = models.FloatField(null=True)
    parent = KeyField(max_length=255, null=True)

    objects = RunManager()

    class Meta:
        """Unmanaged: Django reads the table, Fluxo makes and writes it."""

        managed = False
        db_table = "fluxo_runs"
        default_permissions = ("view",)
        permissions = (
            ("cancel_run", "Can cancel runs"),
            ("retry_run", "Can retry failed runs"),
            ("signal_run", "Can send signals to runs"),
        )

    def __str__(self) -> str:
        return f"{self.workflow} {self.id}"

    @property
    def created(self) -> datetime:
        """When the run was started."""
        return datetime.fromtimestamp(self.created_at, timezone.utc)

    @property
    def updated(self) -> datetime:
        """When the run last changed."""
        return datetime.fromtimestamp(self.updated_at, timezone.utc)
