"""Django under plain pytest, without a plugin: the settings, and a test database.

The test database is a file, not SQLite's default in-memory one: the worker a test
starts runs the steps in threads of its own, on connections of their own.
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

    connection.settings_dict["TEST"]["NAME"] = str(tmp_path_factory.mktemp("shop") / "db.sqlite3")
    utils.setup_test_environment()
    databases = utils.setup_databases(verbosity=0, interactive=False)
    yield
    utils.teardown_databases(databases, verbosity=0)
    utils.teardown_test_environment()
