"""Fluxo's tables at schema revision 0005: the workers' liveness.

Non-atomic: Fluxo migrates its tables on a connection of its own (see
``fluxo.contrib.django._schema``), so Django holds no transaction meanwhile.
"""

from django.db import migrations

from fluxo.contrib.django import _schema


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("fluxo", "0002_fluxo_0004")]

    operations = [
        _schema.FluxoSchema(revision="0005", previous="0004"),
    ]
