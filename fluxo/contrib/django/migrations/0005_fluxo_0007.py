"""Fluxo's tables at schema revision 0007: queues.

Non-atomic: Fluxo migrates its tables on a connection of its own (see
``fluxo.contrib.django._schema``), so Django holds no transaction meanwhile.
"""

from django.db import migrations

from fluxo.contrib.django import _schema


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("fluxo", "0004_fluxo_0006")]

    operations = [
        _schema.FluxoSchema(revision="0007", previous="0006"),
    ]
