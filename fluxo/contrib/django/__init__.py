"""Fluxo in a Django project: add ``"fluxo.contrib.django"`` to ``INSTALLED_APPS``.

Then write workflows in a ``workflows.py`` module of any app, run ``python
manage.py migrate`` (it makes Fluxo's tables in the default database), start runs
with ``get_engine().start(...)`` and run workers with ``python manage.py fluxo
worker``. See docs/django.md.

Example:
    >>> from django.db import transaction
    >>> from fluxo.contrib.django import get_engine
    >>> with transaction.atomic():
    ...     order = Order.objects.create(cents=4200)
    ...     get_engine().start(checkout, order.id)   # exists once the block commits
"""

from fluxo.contrib.django._process import close_engine, current_settings, get_engine
from fluxo.contrib.django._settings import FluxoSettings

__all__ = ["FluxoSettings", "close_engine", "current_settings", "get_engine"]
