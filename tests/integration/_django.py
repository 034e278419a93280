"""How the Django tests run the project in ``django_site/``: its databases, its subprocesses.

``django_site/settings.py`` reads ``DATABASES`` and ``FLUXO`` from the environment,
so the in-process tests (``conftest.py``) and the ``python -m django`` subprocesses
(:func:`django_env`, :func:`manage`) share it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).parents[2]
SETTINGS = "tests.integration.django_site.settings"


def django_databases(url: str | None = None, *, sqlite: Path | None = None) -> dict[str, Any]:
    """``DATABASES["default"]`` for an SQLite file or a database URL (PostgreSQL, MySQL)."""
    if sqlite is not None:
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(sqlite)}
    assert url is not None
    parsed = sa.make_url(url)
    engine = {"postgresql": "postgresql", "mysql": "mysql"}[parsed.get_backend_name()]
    return {
        "ENGINE": f"django.db.backends.{engine}",
        "NAME": parsed.database,
        "USER": parsed.username or "",
        "PASSWORD": parsed.password or "",
        "HOST": parsed.host or "",
        "PORT": str(parsed.port or ""),
    }


def django_env(
    databases: Mapping[str, Any], fluxo: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The environment of a ``python -m django ...`` subprocess on the test project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLUXO_", "DJANGO_"))}
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS
    env["FLUXO_TEST_DJANGO_DATABASES"] = json.dumps(databases)
    if fluxo is not None:
        env["FLUXO_TEST_DJANGO_FLUXO"] = json.dumps(fluxo)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def manage(*args: str) -> list[str]:
    """The command line of ``manage.py ARGS`` for the test project."""
    return [sys.executable, "-m", "django", *args]


@dataclass(frozen=True)
class Site:
    """The configured project: its database aliases."""

    aliases: tuple[str, ...]

    def require_postgres(self) -> None:
        if "pg" not in self.aliases:
            pytest.skip("the PostgreSQL server is unreachable")
