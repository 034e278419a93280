"""Fixtures of the integration tests: a store of every kind, and the Django project.

``store`` gives each test that takes it one empty store of every kind in turn:
memory, SQLite, PostgreSQL, MariaDB, Redis and MongoDB (the server ones marked,
so that they skip, or fail under ``CI=true``, when their server is not there).

The Django project of ``test_django*.py`` is configured once for the test process.

Django is configured once per process, so every in-process Django test shares
``django_site``: the project in ``tests/integration/django_site`` on two databases,
``default`` (an SQLite file) and ``pg`` (a PostgreSQL database of the session's
own, when the server is there). Both are migrated with Fluxo's tables, so a test
picks one with ``override_settings(FLUXO={"DATABASE": "pg"})``. Tests that need
settings of their own run ``python -m django`` in a subprocess (``_django.django_env``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import fluxo
from fluxo.stores.memory import MemoryStore
from tests.conftest import create_database, drop_database
from tests.integration._django import Site, django_databases


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[fluxo.Store]:
    """An empty store of each kind in turn, closed after the test."""
    if request.param == "memory":
        opened: fluxo.Store = MemoryStore()
    elif request.param == "sqlite":
        opened = fluxo.open_store(f"sqlite:///{tmp_path}/fluxo.db")
    else:
        opened = fluxo.open_store(request.getfixturevalue(f"clean_{request.param}_url"))
    yield opened
    opened.close()


def _postgres(request: pytest.FixtureRequest) -> sa.URL | None:
    try:
        server: sa.URL = request.getfixturevalue("postgres_server")
    except pytest.skip.Exception:
        return None
    return server


@pytest.fixture(scope="session")
def django_site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    """Django configured with the test project, its databases migrated (see the docstring)."""
    import django
    from django.conf import settings
    from django.core.management import call_command
    from django.test import override_settings, utils

    from tests.integration.django_site import settings as site

    databases = {"default": django_databases(sqlite=tmp_path_factory.mktemp("django") / "db")}
    server = _postgres(request)
    pg_url = None if server is None else create_database(server)
    if pg_url is not None:
        databases["pg"] = django_databases(pg_url)
    values = {name: getattr(site, name) for name in dir(site) if name.isupper()}
    values["DATABASES"] = databases
    settings.configure(**values)
    django.setup()
    utils.setup_test_environment()
    try:
        call_command("migrate", verbosity=0)
        if pg_url is not None:
            with override_settings(FLUXO={"DATABASE": "pg"}):
                call_command("migrate", database="pg", verbosity=0)
        yield Site(tuple(databases))
    finally:
        from django.db import connections

        from fluxo.contrib.django import close_engine

        close_engine()
        connections.close_all()
        utils.teardown_test_environment()
        if pg_url is not None:
            drop_database(pg_url)
