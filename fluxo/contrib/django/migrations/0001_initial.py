"""Fluxo's tables (schema revision 0003), and the admin's read-only view of its runs.

Non-atomic: Fluxo migrates its tables on a connection of its own (see
``fluxo.contrib.django._schema``), so Django holds no transaction meanwhile.
"""

from django.db import migrations, models

import fluxo.contrib.django.models
from fluxo.contrib.django import _schema


class Migration(migrations.Migration):
    initial = True
    atomic = False

    dependencies: list[tuple[str, str]] = []

    operations = [
        _schema.FluxoSchema(revision="0003", previous="base"),
        migrations.CreateModel(
            name="Run",
            fields=[
                (
                    "id",
                    fluxo.contrib.django.models.KeyField(
                        max_length=255, primary_key=True, serialize=False
                    ),
                ),
                ("workflow", fluxo.contrib.django.models.KeyField(max_length=255)),
                ("status", models.CharField(max_length=16)),
                ("created_at", models.FloatField()),
                ("updated_at", models.FloatField()),
                ("ready_at", models.FloatField(null=True)),
                ("lease_owner", fluxo.contrib.django.models.KeyField(max_length=255, null=True)),
                ("lease_until", models.FloatField(null=True)),
                ("cancel_requested", models.BooleanField()),
                ("wake_requested", models.BooleanField()),
                ("deadline", models.FloatField(null=True)),
                ("parent", fluxo.contrib.django.models.KeyField(max_length=255, null=True)),
            ],
            options={
                "db_table": "fluxo_runs",
                "permissions": (
                    ("cancel_run", "Can cancel runs"),
                    ("retry_run", "Can retry failed runs"),
                    ("signal_run", "Can send signals to runs"),
                ),
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
    ]
