"""Django under plain pytest, without a plugin: the settings, and a test database.

On SQLite the test database is a file, not the default in-memory one: the worker a
test starts runs the steps in threads of its own, on connections of their own.
Fluxo closes its engine before Django drops the test database (PostgreSQL refuses
to drop a database still in use).
"""

import os
from collections.abc import Iterator

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()


@pytest.fixture(scope="session", autouse=True)
def test_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    from django.db import connection
    from django.test import utils

    if connection.vendor == "sqlite":  # a file: SQLite's test database is in memory by default
        connection.settings_dict["TEST"]["NAME"] = str(
            tmp_path_factory.mktemp("shop") / "db.sqlite3"
        )
    utils.setup_test_environment()
    databases = utils.setup_databases(verbosity=0, interactive=False)
    yield
    utils.teardown_databases(databases, verbosity=0)
    utils.teardown_test_environment()
