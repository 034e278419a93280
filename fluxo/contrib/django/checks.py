"""Django system checks (``manage.py check``, and before ``runserver`` and ``migrate``).

They read the settings and import the workflows, and never connect to a database:

* ``fluxo.E001``: ``settings.FLUXO`` is unusable (not a dict, an unknown key, a bad value).
* ``fluxo.E002``: ``FLUXO["DATABASE"]`` is not an alias of ``DATABASES``.
* ``fluxo.E003``: the store is unusable: an unknown URL scheme, a database Fluxo's SQL
  store does not run on, settings a URL cannot carry, a driver that is not installed.
* ``fluxo.E004``: a ``FLUXO["WORKFLOWS"]`` entry does not import or is not a workflow,
  or an app's ``workflows.py`` fails to import.
* ``fluxo.E005``: ``FLUXO["START"]`` is wrong.
* ``fluxo.E006``: the workflows cannot be registered together (two share a name).
* ``fluxo.W001``: no workflow was found at all.
* ``fluxo.W002``: the store is ``memory://``, which no other process sees.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from fluxo import _definitions, _engine, _errors
from fluxo.contrib.django import _discovery, _process, _settings, debug

TAG = "fluxo"
"""The tag of Fluxo's checks: ``manage.py check --tag fluxo`` runs them alone."""

_DRIVERS = {
    "postgresql": ("psycopg", "postgres"),
    "postgres": ("psycopg", "postgres"),
    "mysql": ("pymysql", "mysql"),
    "mariadb": ("pymysql", "mysql"),
    "redis": ("redis", "redis"),
    "rediss": ("redis", "redis"),
    "mongodb": ("pymongo", "mongo"),
}
"""The driver module each store needs, and the extra of Fluxo that installs it."""


def register() -> None:
    """Register :func:`check_fluxo` (called by the app's ``ready()``)."""
    checks.register(check_fluxo, TAG)


def check_fluxo(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Every check above, in order; an unusable setting stops the ones that depend on it."""
    config, found = _read_settings()
    if config is None:
        return found
    try:
        _process.check_alias(config.database)
    except ImproperlyConfigured as exc:
        return [*found, checks.Error(str(exc), id="fluxo.E002")]
    found += _check_store(config)
    found += _check_workflows(config)
    return found


def _read_settings() -> tuple[_settings.FluxoSettings | None, list[checks.CheckMessage]]:
    raw = getattr(settings, "FLUXO", None)
    try:
        return _settings.read(raw), []
    except ImproperlyConfigured as exc:
        message = str(exc)
        code = "fluxo.E005" if message.startswith("settings.FLUXO['START']") else "fluxo.E001"
        return None, [checks.Error(message, id=code)]


def _missing_driver(scheme: str) -> checks.CheckMessage | None:
    module, extra = _DRIVERS.get(scheme, (None, None))
    if module is None or importlib.util.find_spec(module) is not None:
        return None
    return checks.Error(
        f"Fluxo's store needs the {module!r} driver, which is not installed; run: "
        f"pip install 'fluxo[{extra}]'",
        id="fluxo.E003",
    )


@debug.sensitive
def _check_store(config: _settings.FluxoSettings) -> list[checks.CheckMessage]:
    if config.store is None:
        try:
            url = _process.database_url(config.database)
        except ImproperlyConfigured as exc:
            return [checks.Error(str(exc), id="fluxo.E003")]
        problem = _missing_driver(url.get_backend_name())
        return [] if problem is None else [problem]
    scheme = config.store.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory":
        return [
            checks.Warning(
                "settings.FLUXO['STORE'] is 'memory://': the runs live in each process's "
                "memory, so `manage.py fluxo worker` never sees the runs your web processes "
                "start; use it in tests only",
                id="fluxo.W002",
            )
        ]
    if scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        from fluxo.stores import sql

        try:
            sql.normalize_url(config.store)
        except _errors.DefinitionError as exc:
            return [checks.Error(f"settings.FLUXO['STORE']: {exc}", id="fluxo.E003")]
    elif scheme not in _DRIVERS:
        return [
            checks.Error(
                f"settings.FLUXO['STORE'] starts with {scheme!r}://, which no Fluxo store "
                "handles; the schemes are memory, sqlite, postgresql, mysql, redis and mongodb",
                id="fluxo.E003",
            )
        ]
    problem = _missing_driver(scheme)
    return [] if problem is None else [problem]


def _check_workflows(config: _settings.FluxoSettings) -> list[checks.CheckMessage]:
    found: list[_definitions.Workflow[Any, Any]] = []
    problems: list[checks.CheckMessage] = []
    if config.autodiscover:
        try:
            found += _discovery.discovered()
        except Exception as exc:
            problems.append(
                checks.Error(
                    f"importing the apps' {_discovery.MODULE}.py modules raised "
                    f"{type(exc).__name__}: {exc}",
                    id="fluxo.E004",
                )
            )
    for path in config.workflows:
        try:
            found.append(_discovery.resolve(path))
        except ImproperlyConfigured as exc:
            problems.append(checks.Error(str(exc), id="fluxo.E004"))
    if problems:
        return problems
    if not found:
        where = "" if config.autodiscover else " (FLUXO['AUTODISCOVER'] is False)"
        return [
            checks.Warning(
                f"Fluxo found no workflow{where}: put @fluxo.workflow functions in a "
                f"{_discovery.MODULE}.py module of an installed app, or list them in "
                "settings.FLUXO['WORKFLOWS']",
                id="fluxo.W001",
            )
        ]
    try:
        _engine.Engine("memory://", workflows=found).close()
    except _errors.DefinitionError as exc:
        return [checks.Error(str(exc), id="fluxo.E006")]
    return []
