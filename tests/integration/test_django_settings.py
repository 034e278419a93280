"""fluxo.contrib.django: the FLUXO setting, a Django database as a store URL, the system checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from django.core.exceptions import ImproperlyConfigured

from fluxo.contrib.django import FluxoSettings, _databases, _settings
from tests.integration._django import Site


def test_import_fluxo_imports_no_framework() -> None:
    import subprocess
    import sys

    probe = "import sys, fluxo, fluxo.contrib; print(sorted(sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert "'django'" not in done.stdout
    assert "'fluxo.contrib.django'" not in done.stdout


# -- the settings shim ---------------------------------------------------------------------


def test_no_setting_means_every_default() -> None:
    config = _settings.read(None)
    assert config == FluxoSettings()
    assert (config.database, config.store, config.workflows) == ("default", None, ())
    assert config.autodiscover is True
    assert config.start is None
    assert config.start_mode == "transaction"


def test_every_key_is_read() -> None:
    config = _settings.read(
        {
            "DATABASE": "orders",
            "WORKFLOWS": ["shop.flows.checkout"],
            "AUTODISCOVER": False,
            "START": "on_commit",
        }
    )
    assert config == FluxoSettings(
        database="orders",
        workflows=("shop.flows.checkout",),
        autodiscover=False,
        start="on_commit",
    )


def test_another_store_starts_on_commit_by_default() -> None:
    config = _settings.read({"STORE": "redis://localhost/0"})
    assert config.start is None
    assert config.start_mode == "on_commit"


def test_the_settings_are_frozen() -> None:
    config = _settings.read({})
    with pytest.raises(AttributeError):
        config.database = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (["DATABASE"], "settings.FLUXO must be a dict"),
        ({"WORKFLOW": []}, "unknown key 'WORKFLOW'; did you mean 'WORKFLOWS'?"),
        ({"databse": "x"}, "unknown key 'databse'; did you mean 'DATABASE'?"),
        ({"COLOUR": "x"}, "unknown key 'COLOUR'; the keys are DATABASE, STORE, WORKFLOWS"),
        ({"DATABASE": ""}, "FLUXO['DATABASE'] must be the alias of a database"),
        ({"DATABASE": 1}, "FLUXO['DATABASE'] must be the alias of a database"),
        ({"STORE": "localhost:6379"}, "FLUXO['STORE'] must be a Fluxo store URL"),
        ({"STORE": 5}, "not int"),
        ({"WORKFLOWS": "shop.flows.checkout"}, "must be a list of dotted paths"),
        ({"WORKFLOWS": ["checkout"]}, "holds 'checkout', which is not a dotted path"),
        ({"AUTODISCOVER": "yes"}, "FLUXO['AUTODISCOVER'] must be True or False"),
        ({"START": "commit"}, "FLUXO['START'] is 'commit'; use 'transaction'"),
        (
            {"STORE": "redis://localhost/0", "START": "transaction"},
            "cannot join Django's transaction; use 'on_commit'",
        ),
    ],
)
def test_an_unusable_setting_is_refused_naming_the_key(raw: Any, expected: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        _settings.read(raw)
    assert expected in str(raised.value)


# -- a Django database as a store URL ---------------------------------------------------


def _database(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "NAME": "shop",
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "OPTIONS": {},
    }
    return {**base, **values}


def test_a_postgresql_database() -> None:
    url = _databases.store_url(
        "postgresql",
        _database(USER="app", PASSWORD="p@ss/w:rd", HOST="db.internal", PORT="6432"),
    )
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password, url.host, url.port) == (
        "app",
        "p@ss/w:rd",
        "db.internal",
        6432,
    )
    assert url.database == "shop"
    assert "p@ss" not in str(url)  # the URL never shows its password
    assert sa.make_url(url.render_as_string(hide_password=False)) == url  # escaped, not pasted


def test_postgresql_options_as_libpq_reads_them() -> None:
    url = _databases.store_url(
        "postgresql",
        _database(
            NAME="",
            OPTIONS={
                "service": "shop",
                "host": "10.0.0.5",
                "port": 5433,
                "password": "from-options",
                "sslmode": "require",
                "connect_timeout": 3,
                "isolation_level": 3,  # Django's, not libpq's
                "server_side_binding": True,
                "pool": {"min_size": 2},
            },
        ),
    )
    assert (url.host, url.port, url.password, url.database) == (
        "10.0.0.5",
        5433,
        "from-options",
        None,
    )
    assert dict(url.query) == {"service": "shop", "sslmode": "require", "connect_timeout": "3"}


def test_postgresql_settings_win_over_options_and_sockets_go_to_the_query() -> None:
    url = _databases.store_url(
        "postgresql",
        _database(USER="app", HOST="/var/run/postgresql", OPTIONS={"user": "other"}),
    )
    assert url.username == "app"
    assert url.host is None
    assert url.query["host"] == "/var/run/postgresql"


def test_a_postgresql_name_of_none_is_the_postgres_database() -> None:
    url = _databases.store_url("postgresql", _database(NAME=None, OPTIONS={"service": "x"}))
    assert url.database == "postgres"
    assert "service" not in url.query


def test_a_mysql_database() -> None:
    url = _databases.store_url(
        "mysql",
        _database(
            USER="root",
            PASSWORD="secret",
            HOST="127.0.0.1",
            PORT=3306,
            OPTIONS={
                "charset": "utf8mb4",
                "isolation_level": "read committed",
                "ssl": {"ca": "/ca"},
            },
        ),
    )
    assert url.drivername == "mysql+pymysql"
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "root",
        "secret",
        "127.0.0.1",
        3306,
        "shop",
    )
    assert dict(url.query) == {"charset": "utf8mb4", "ssl_ca": "/ca"}


def test_mysql_options_win_over_settings_and_a_socket_path_is_a_socket() -> None:
    url = _databases.store_url(
        "mysql",
        _database(USER="app", HOST="/run/mysqld/mysqld.sock", OPTIONS={"passwd": "pw", "db": "x"}),
    )
    assert (url.password, url.database, url.host) == ("pw", "x", None)
    assert url.query["unix_socket"] == "/run/mysqld/mysqld.sock"


def test_an_sqlite_file(tmp_path: Path) -> None:
    url = _databases.store_url("sqlite", _database(NAME=tmp_path / "db.sqlite3"))
    assert url.drivername == "sqlite"
    assert url.database == str(tmp_path / "db.sqlite3")


def test_an_sqlite_uri_of_a_file() -> None:
    url = _databases.store_url("sqlite", _database(NAME="file:/srv/shop.sqlite3?mode=rwc"))
    assert url.database == "file:/srv/shop.sqlite3"
    assert dict(url.query) == {"mode": "rwc", "uri": "true"}


@pytest.mark.parametrize("name", [":memory:", "", "file:memorydb_default?mode=memory&cache=shared"])
def test_an_sqlite_database_in_memory_is_refused_with_the_way_out(name: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        _databases.store_url("sqlite", _database(NAME=name), "default")
    assert "in memory" in str(raised.value)
    assert "DATABASES[...]['TEST'] = {'NAME': BASE_DIR / 'test.sqlite3'}" in str(raised.value)


def test_a_database_the_sql_store_does_not_run_on_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"DATABASES\['legacy'\] is a oracle database"):
        _databases.store_url("oracle", _database(), "legacy")


@pytest.mark.parametrize("vendor", ["postgresql", "mysql"])
def test_an_option_a_url_cannot_carry_is_refused_with_the_way_out(vendor: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        _databases.store_url(vendor, _database(OPTIONS={"cursor_class": object()}))
    assert "['OPTIONS']['cursor_class'] is a object" in str(raised.value)
    assert "set FLUXO['STORE']" in str(raised.value)


def test_a_port_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"'PORT'.*not a port number"):
        _databases.store_url("postgresql", _database(PORT="fivefour"))


# -- the system checks ------------------------------------------------------------------


def _check(**fluxo: Any) -> list[tuple[str, str]]:
    from django.test import override_settings

    from fluxo.contrib.django import checks

    with override_settings(FLUXO=fluxo):
        return [(message.id, message.msg) for message in checks.check_fluxo()]


def test_the_project_passes_the_checks(django_site: Site) -> None:
    from django.core import checks

    assert _check() == []
    assert [m for m in checks.run_checks(tags=["fluxo"]) if m.id.startswith("fluxo.")] == []


def test_a_check_reports_an_unusable_setting(django_site: Site) -> None:
    (found,) = _check(WORKFLOW=[])
    assert found[0] == "fluxo.E001"
    assert "did you mean 'WORKFLOWS'?" in found[1]


def test_a_check_reports_an_unknown_database_alias(django_site: Site) -> None:
    (found,) = _check(DATABASE="orders")
    assert found[0] == "fluxo.E002"
    assert "'orders', which is not in DATABASES" in found[1]


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("ftp://files/runs", "starts with 'ftp'://, which no Fluxo store handles"),
        ("postgresql+asyncpg://db/app", "not 'asyncpg'"),
    ],
)
def test_a_check_reports_an_unusable_store(django_site: Site, store: str, expected: str) -> None:
    (found,) = _check(STORE=store)
    assert found[0] == "fluxo.E003"
    assert expected in found[1]


def test_a_check_names_the_extra_that_brings_a_missing_driver(
    django_site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    (found,) = _check(STORE="redis://localhost/0")
    assert found == (
        "fluxo.E003",
        "Fluxo's store needs the 'redis' driver, which is not installed; run: "
        "pip install 'fluxo[redis]'",
    )


def test_a_check_warns_of_a_store_in_memory(django_site: Site) -> None:
    (found,) = _check(STORE="memory://")
    assert found[0] == "fluxo.W002"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests.integration.django_site.notes.nowhere", "does not import"),
        ("tests.integration.django_site.notes.workflows.write_note", "is a Step, not a workflow"),
    ],
)
def test_a_check_reports_a_listed_workflow_that_is_not_one(
    django_site: Site, path: str, expected: str
) -> None:
    (found,) = _check(WORKFLOWS=[path])
    assert found[0] == "fluxo.E004"
    assert expected in found[1]


def test_a_check_reports_a_wrong_start_mode(django_site: Site) -> None:
    (found,) = _check(START="later")
    assert found[0] == "fluxo.E005"


def test_a_check_warns_when_no_workflow_is_found(django_site: Site) -> None:
    (found,) = _check(AUTODISCOVER=False)
    assert found[0] == "fluxo.W001"
    assert "no workflow (FLUXO['AUTODISCOVER'] is False)" in found[1]


def test_a_listed_workflow_is_enough(django_site: Site) -> None:
    path = "tests.integration.django_site.notes.workflows.note"
    assert _check(AUTODISCOVER=False, WORKFLOWS=[path]) == []


def test_a_check_reports_two_workflows_with_one_name(django_site: Site) -> None:
    found = _check(WORKFLOWS=["tests.integration.django_site.clash.note"])
    assert [code for code, _ in found] == ["fluxo.E006"]
    assert "two workflows are named" in found[0][1]


def test_the_store_password_stays_off_django_error_reports(django_site: Site) -> None:
    from django.test import override_settings

    from fluxo.contrib.django import _databases, _process, debug
    from fluxo.contrib.django._settings import FluxoSettings

    store = "redis://:s3cret-pw@cache:6379/0"
    assert "s3cret-pw" not in repr(FluxoSettings(store=store))
    with override_settings(FLUXO={"STORE": store}):
        shown = debug.ExceptionReporterFilter().get_safe_settings()["FLUXO"]["STORE"]
    assert shown == "redis://:***@cache:6379/0"
    _process.database_url("default")
    _databases.store_url("postgresql", {"NAME": "shop", "PASSWORD": "s3cret-pw"})
    for function in (_process.database_url, _databases.store_url, _databases._postgresql):
        # what Django's error reporter looks for to hide a frame's locals
        assert getattr(function, "sensitive_variables", None) == "__ALL__"
