"""Fluxo's tables at schema revision 0006: the runs' recoveries.

Non-atomic: Fluxo migrates its tables on a connection of its own (see
``fluxo.contrib.django._schema``), so Django holds no transaction meanwhile.
"""

from django.db import migrations

from fluxo.contrib.django import _schema


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("fluxo", "0003_fluxo_0005")]

    operations = [
        _schema.FluxoSchema(revision="0006", previous="0005"),
    ]
