"""Finding the project's workflows: ``workflows.py`` in every installed app, and ``WORKFLOWS``.

Decorators register nothing, so the engine is given an explicit list; this module
builds it. Autodiscovery imports ``<app>.workflows`` for every installed app that
has one (``django.utils.module_loading.autodiscover_modules``, as the admin finds
``admin.py``) and takes every module attribute that is a ``fluxo.Workflow``,
whether defined there or imported. ``FLUXO["WORKFLOWS"]`` adds workflows by dotted
path. Each workflow is listed once, however many modules name it.
"""

from __future__ import annotations

import sys
from typing import Any

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import autodiscover_modules, import_string

from fluxo import _definitions
from fluxo.contrib.django import _settings

MODULE = "workflows"
"""The module autodiscovery imports in each installed app."""


def resolve(path: str) -> _definitions.Workflow[Any, Any]:
    """The workflow a ``FLUXO["WORKFLOWS"]`` entry names.

    Raises:
        ImproperlyConfigured: the path does not import, or names something that is
            not a ``@fluxo.workflow``.
    """
    try:
        found = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"settings.FLUXO['WORKFLOWS'] lists {path!r}, which does not import ({exc}); "
            "check the module and the name"
        ) from exc
    if not isinstance(found, _definitions.Workflow):
        hint = " decorate it with @fluxo.workflow," if callable(found) else ""
        raise ImproperlyConfigured(
            f"settings.FLUXO['WORKFLOWS'] lists {path!r}, which is a {type(found).__name__}, "
            f"not a workflow;{hint} or take it out of the list"
        )
    return found


def discovered() -> list[_definitions.Workflow[Any, Any]]:
    """The workflows of the ``workflows.py`` modules of the installed apps, in app order.

    Imports those modules first. An import error inside one of them is raised as
    it is: it is a bug in that module.
    """
    autodiscover_modules(MODULE)
    found: list[_definitions.Workflow[Any, Any]] = []
    for app in apps.get_app_configs():
        module = sys.modules.get(f"{app.name}.{MODULE}")
        if module is not None:
            found += [v for v in vars(module).values() if isinstance(v, _definitions.Workflow)]
    return found


def workflows(config: _settings.FluxoSettings) -> list[_definitions.Workflow[Any, Any]]:
    """Every workflow the project's engine registers: discovered, then listed; once each.

    Raises:
        ImproperlyConfigured: an entry of ``FLUXO["WORKFLOWS"]`` is unusable.
    """
    found = discovered() if config.autodiscover else []
    found += [resolve(path) for path in config.workflows]
    return list({id(workflow): workflow for workflow in found}.values())
