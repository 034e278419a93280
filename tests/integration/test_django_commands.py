"""fluxo.contrib.django from the command line: ``manage.py migrate`` and ``manage.py fluxo``.

Each test runs ``python -m django`` (what ``manage.py`` runs) in a subprocess on a
database of its own, with the settings it needs. Tests about what comes after
``migrate`` start from a copy of one database migrated once for the module.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from fluxo.stores.sql import _migrate
from tests.integration._django import ROOT, Site, django_databases, django_env, manage

FLUXO_TABLES = {
    "fluxo_alembic_version",
    "fluxo_runs",
    "fluxo_events",
    "fluxo_signals",
    "fluxo_workers",
    "fluxo_queues",
}


def run(
    databases: dict[str, Any], *args: str, fluxo: dict[str, Any] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        manage(*args),
        env=django_env(databases, fluxo),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def fluxo_tables(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {name for name in sa.inspect(conn).get_table_names() if name.startswith("fluxo")}
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[dict[str, Any], str]]:
    """``DATABASES["default"]`` of a new empty database, and its SQLAlchemy URL."""
    if request.param == "sqlite":
        path = tmp_path / "db.sqlite3"
        yield django_databases(sqlite=path), f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
        yield django_databases(url), url


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file ``manage.py migrate`` made once for this module: tests copy it."""
    path = tmp_path_factory.mktemp("django-migrated") / "db.sqlite3"
    run({"default": django_databases(sqlite=path)}, "migrate", "--verbosity", "0")
    return path


@pytest.fixture
def migrated(migrated_sqlite: Path, tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """``DATABASES`` of this test's own copy of :func:`migrated_sqlite`, and the file."""
    path = tmp_path / "db.sqlite3"
    shutil.copy(migrated_sqlite, path)
    return {"default": django_databases(sqlite=path)}, path


# -- migrate ---------------------------------------------------------------------------


@pytest.mark.slow
def test_migrate_makes_fluxos_tables_and_migrate_fluxo_zero_drops_them(
    database: tuple[dict[str, Any], str],
) -> None:
    settings, url = database
    databases = {"default": settings}

    run(databases, "migrate", "--verbosity", "0")

    assert fluxo_tables(url) == FLUXO_TABLES
    assert _migrate.check(url) == []  # the tables are exactly those of this Fluxo's schema
    run(databases, "migrate", "--check")
    run(databases, "makemigrations", "--check", "--dry-run")
    plan = run(databases, "migrate", "--plan").stdout
    assert "No planned migration operations." in plan

    run(databases, "migrate", "fluxo", "zero", "--verbosity", "0")
    assert fluxo_tables(url) == set()
    pending = run(databases, "migrate", "--check", check=False)
    assert pending.returncode == 1  # the Fluxo migration is unapplied, and says so

    run(databases, "migrate", "--verbosity", "0")  # brings them back
    assert _migrate.check(url) == []


def test_migrate_over_tables_fluxo_made_itself_keeps_them(tmp_path: Path) -> None:
    """A database a Fluxo store (or `fluxo db upgrade`) migrated first is left as it is."""
    path = tmp_path / "db.sqlite3"
    _migrate.upgrade(f"sqlite:///{path}")

    run({"default": django_databases(sqlite=path)}, "migrate", "--verbosity", "0")

    assert _migrate.check(f"sqlite:///{path}") == []


def test_only_the_fluxo_database_gets_the_tables(tmp_path: Path) -> None:
    main, other = tmp_path / "main.sqlite3", tmp_path / "other.sqlite3"
    databases = {
        "default": django_databases(sqlite=main),
        "other": django_databases(sqlite=other),
    }

    run(databases, "migrate", "--verbosity", "0")
    run(databases, "migrate", "--database", "other", "--verbosity", "0")

    assert fluxo_tables(f"sqlite:///{main}") == FLUXO_TABLES
    assert fluxo_tables(f"sqlite:///{other}") == set()
    run(databases, "migrate", "--check", "--database", "other")  # recorded there, all the same


def test_fluxo_database_names_the_database_that_gets_them(tmp_path: Path) -> None:
    """Until that database is migrated, migrate and ``manage.py fluxo`` say how to do it."""
    main, runs = tmp_path / "main.sqlite3", tmp_path / "runs.sqlite3"
    databases = {"default": django_databases(sqlite=main), "runs": django_databases(sqlite=runs)}
    fluxo = {"DATABASE": "runs"}

    migrated = run(databases, "migrate", fluxo=fluxo)
    assert "run `python manage.py migrate --database runs` to make them" in migrated.stderr
    done = run(databases, "fluxo", "runs", "list", fluxo=fluxo, check=False)
    assert done.returncode == 1
    assert "`python manage.py migrate --database runs`" in done.stderr

    run(databases, "migrate", "--database", "runs", "--verbosity", "0", fluxo=fluxo)

    assert fluxo_tables(f"sqlite:///{main}") == set()
    assert fluxo_tables(f"sqlite:///{runs}") == FLUXO_TABLES


def test_with_another_store_migrate_makes_no_fluxo_table(tmp_path: Path) -> None:
    main = tmp_path / "main.sqlite3"
    databases = {"default": django_databases(sqlite=main)}

    run(databases, "migrate", "--verbosity", "0", fluxo={"STORE": "memory://"})

    assert fluxo_tables(f"sqlite:///{main}") == set()


def test_the_django_migrations_reach_fluxos_alembic_head(django_site: Site) -> None:
    """A new Fluxo schema revision needs a Django migration: this fails until it has one."""
    from django.db.migrations.loader import MigrationLoader

    from fluxo.contrib.django import _schema

    loader = MigrationLoader(None, ignore_no_migrations=True)
    (leaf,) = loader.graph.leaf_nodes("fluxo")
    plan = [loader.graph.nodes[key] for key in loader.graph.forwards_plan(leaf)]
    schema = [
        (migration, operation)
        for migration in plan
        if migration.app_label == "fluxo"
        for operation in migration.operations
        if isinstance(operation, _schema.FluxoSchema)
    ]
    assert schema, "no Django migration applies Fluxo's schema"
    assert schema[-1][1].revision == _migrate.head(), (
        f"Fluxo's schema is at revision {_migrate.head()!r}; add a Django migration to "
        f"fluxo/contrib/django/migrations with FluxoSchema(revision={_migrate.head()!r}, "
        f"previous={schema[-1][1].revision!r})"
    )
    previous = "base"
    for migration, operation in schema:
        assert operation.previous == previous, migration.name
        assert migration.atomic is False, f"{migration.name} must be atomic = False"
        previous = operation.revision


# -- manage.py fluxo -------------------------------------------------------------------


START = (
    "from fluxo.contrib.django import get_engine\n"
    "from tests.integration.django_site.notes.workflows import note\n"
    "print(get_engine().start(note.options(id='note-1'), 'written by a worker').id)\n"
)


@pytest.mark.slow
def test_manage_py_fluxo_worker_runs_what_the_project_starts(
    django_site: Site, migrated: tuple[dict[str, Any], Path]
) -> None:
    databases, path = migrated
    assert run(databases, "shell", "-c", START).stdout.splitlines()[-1] == "note-1"
    listed = run(databases, "fluxo", "runs", "list").stdout
    assert "note-1" in listed
    assert "pending" in listed

    worker = subprocess.Popen(
        manage("fluxo", "worker", "--concurrency", "2"),
        env=django_env(databases),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        import fluxo
        from tests.integration.django_site.notes.workflows import note

        with fluxo.Engine(f"sqlite:///{path}", workflows=[note]) as engine:
            assert engine.handle("note-1").result(timeout=60) == 1
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, output

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT text FROM notes_note").fetchall() == [("written by a worker",)]
    shown = run(databases, "fluxo", "runs", "show", "note-1").stdout
    assert "status    completed" in shown
    assert "result    1" in shown


def test_manage_py_fluxo_errors_are_one_line(migrated: tuple[dict[str, Any], Path]) -> None:
    databases, _ = migrated

    missing = run(databases, "fluxo", "runs", "show", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("Error: no run 'nope'")

    broken = run(databases, "fluxo", "runs", "list", fluxo={"DATABASE": "orders"}, check=False)
    assert broken.returncode == 1
    assert "Error: settings.FLUXO['DATABASE'] is 'orders', which is not in DATABASES" in (
        broken.stderr
    )
    assert "Traceback" not in broken.stderr


def test_manage_py_fluxo_before_migrate_says_to_migrate(
    tmp_path: Path, migrated: tuple[dict[str, Any], Path]
) -> None:
    databases = {"default": django_databases(sqlite=tmp_path / "auth.sqlite3")}
    run(databases, "migrate", "auth", "--verbosity", "0")  # Django's tables, not Fluxo's

    done = run(databases, "fluxo", "runs", "list", check=False)

    assert done.returncode == 1
    assert "no Fluxo tables" in done.stderr
    assert "manage.py migrate" in done.stderr
    checked = run(databases, "fluxo", "db", "check", check=False)  # reads the URL, opens nothing
    assert checked.returncode == 1
    assert "no Fluxo schema" in checked.stderr
    databases, _ = migrated  # and once migrated:
    assert "schema is up to date" in run(databases, "fluxo", "db", "check").stdout
    assert run(databases, "fluxo", "db", "current").stdout.strip() == _migrate.head()


def test_manage_py_fluxo_help_is_fluxos(tmp_path: Path) -> None:
    databases = {"default": django_databases(sqlite=tmp_path / "db.sqlite3")}
    for args in (("fluxo", "--help"), ("help", "fluxo")):
        shown = run(databases, *args).stdout
        assert "Usage: manage.py fluxo" in shown
        assert "worker" in shown
        assert "runs" in shown


def test_with_a_redis_store_fluxo_db_says_there_is_no_schema(tmp_path: Path) -> None:
    databases = {"default": django_databases(sqlite=tmp_path / "db.sqlite3")}
    fluxo = {"STORE": "redis://:s3cret@127.0.0.1:6379/0"}

    for command in ("current", "upgrade"):
        done = run(databases, "fluxo", "db", command, fluxo=fluxo, check=False)
        assert done.returncode == 1
        assert "the store is redis://..., which has no schema to manage" in done.stderr
        assert "s3cret" not in done.stderr


FLUSHED_TEST = """
from django.test import TransactionTestCase

from fluxo.contrib.django import get_engine
from tests.integration.django_site.notes.workflows import wait_for_go


class Leaks(TransactionTestCase):
    def test_1_start(self):
        get_engine().start(wait_for_go.options(id="left-over"))
        self.assertEqual([r.id for r in get_engine().list_runs()], ["left-over"])

    def test_2_sees_no_run_of_the_test_before(self):
        self.assertEqual(list(get_engine().list_runs()), [])
"""


@pytest.fixture
def flushed_test(tmp_path: Path) -> str:
    """A test module with two TransactionTestCase tests, importable by ``manage.py test``."""
    (tmp_path / "test_flushed.py").write_text(FLUSHED_TEST)
    return str(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    "where", ["sqlite", "sqlite-parallel", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_manage_py_test_flushes_runs_and_drops_the_test_database(
    where: str, flushed_test: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The engine's pool is closed before the test database is dropped or cloned."""
    if where == "postgres":
        settings = django_databases(request.getfixturevalue("fresh_postgres_url"))
    else:
        settings = django_databases(sqlite=tmp_path / "db.sqlite3")
        settings["TEST"] = {"NAME": str(tmp_path / "test.sqlite3")}
    args = ["test", "--top-level-directory", flushed_test, "-v", "2"]
    if where == "sqlite-parallel":
        args += ["--parallel", "2"]

    done = subprocess.run(
        [*manage(*args), flushed_test],
        env=django_env({"default": settings}),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Ran 2 tests" in done.stderr
    assert "being accessed by other users" not in done.stderr
