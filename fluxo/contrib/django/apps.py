"""The Django app: ``INSTALLED_APPS = [..., "fluxo.contrib.django"]``, label ``fluxo``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed

WATCHED = frozenset({"FLUXO", "DATABASES", "INSTALLED_APPS"})
"""Settings whose change (``override_settings`` in a test) closes the process's engine."""


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in WATCHED:
        from fluxo.contrib.django import _process

        _process.close_engine()


class FluxoConfig(AppConfig):
    """Fluxo in a Django project: its tables, admin, checks and ``manage.py fluxo``."""

    name = "fluxo.contrib.django"
    label = "fluxo"
    verbose_name = "Fluxo"

    def ready(self) -> None:
        """Register the system checks; in tests, follow setting changes and test databases."""
        from fluxo.contrib.django import _testdb, checks

        checks.register()
        _testdb.install()
        setting_changed.connect(_settings_changed, dispatch_uid="fluxo.settings_changed")
