"""The alembic migrations build exactly the tables of ``fluxo.stores.sql._schema``.

On SQLite, PostgreSQL and MySQL/MariaDB: ``upgrade head`` on an empty database
leaves no difference alembic's autogenerate can find, the revision lands in
``fluxo_alembic_version``, a database written by an older revision keeps its data
through the upgrade, and stores starting their first runs together on a new
database (threads or processes) all succeed, the migration running once.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from fluxo import _errors, history
from fluxo.stores import sql
from fluxo.stores.sql import _migrate, _schema

REPO = Path(__file__).resolve().parents[2]

DATABASES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=DATABASES)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fluxo.db'}"
    else:
        url: str = request.getfixturevalue(f"fresh_{request.param}_url")
        yield url


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(sql.normalize_url(url), poolclass=NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_head_revision_constant_is_the_newest_script() -> None:
    assert _migrate.head() == _schema.HEAD_REVISION


def test_the_scripts_are_found_in_the_repository() -> None:
    assert _migrate.migrations_dir() == REPO / "migrations"


def test_upgrade_head_leaves_no_difference_from_the_metadata(empty_url: str) -> None:
    assert _migrate.current(empty_url) is None

    _migrate.upgrade(empty_url)

    assert _migrate.check(empty_url) == []
    assert _migrate.current(empty_url) == _schema.HEAD_REVISION


def test_the_version_table_is_fluxos_own(empty_url: str) -> None:
    _migrate.upgrade(empty_url)

    names = table_names(empty_url)
    assert _schema.VERSION_TABLE == "fluxo_alembic_version"
    assert names == {
        "fluxo_alembic_version",
        "fluxo_runs",
        "fluxo_events",
        "fluxo_signals",
        "fluxo_workers",
        "fluxo_queues",
    }
    assert "alembic_version" not in names


def test_check_reports_a_database_without_the_tables(empty_url: str) -> None:
    assert _migrate.check(empty_url) == [_migrate.NO_SCHEMA]


def test_check_names_each_difference_in_one_readable_line(empty_url: str) -> None:
    _migrate.upgrade(empty_url)
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE fluxo_signals")
            conn.exec_driver_sql("CREATE TABLE fluxo_extra (x INTEGER)")
            conn.exec_driver_sql("CREATE INDEX ix_extra ON fluxo_events (kind)")
            conn.exec_driver_sql(f"UPDATE {_schema.VERSION_TABLE} SET version_num = '0002'")
    finally:
        engine.dispose()

    problems = _migrate.check(empty_url)

    assert problems[0] == f"the schema revision is '0002', not {_schema.HEAD_REVISION!r}"
    assert "table fluxo_signals is missing" in problems
    assert "table fluxo_extra is not in this Fluxo's schema" in problems
    assert "index ix_extra on fluxo_events is not in this Fluxo's schema" in problems
    for problem in problems:
        assert "\n" not in problem
        assert "Table(" not in problem
        assert "Column(" not in problem
        assert len(problem) < 120


@pytest.mark.parametrize(
    ("diff", "line"),
    [
        (
            ("modify_type", None, "fluxo_runs", "workflow", {}, sa.Text(), sa.String(255)),
            "column fluxo_runs.workflow has type TEXT, not VARCHAR(255)",
        ),
        (
            ("modify_nullable", None, "fluxo_runs", "ready_at", {}, False, True),
            "column fluxo_runs.ready_at is NOT NULL, not nullable",
        ),
        (
            ("add_column", None, "fluxo_runs", sa.Column("deadline", sa.Float())),
            "column fluxo_runs.deadline is missing",
        ),
        (
            ("remove_column", None, "fluxo_runs", sa.Column("extra", sa.Float())),
            "column fluxo_runs.extra is not in this Fluxo's schema",
        ),
        (("something_new", None), "something new"),
    ],
)
def test_each_kind_of_difference_reads_as_a_sentence(diff: tuple[object, ...], line: str) -> None:
    assert _migrate.describe(diff) == line
    assert _migrate.describe([diff, diff]) == f"{line}; {line}"


def test_upgrade_at_head_is_a_no_op_and_keeps_data(empty_url: str) -> None:
    store = sql.SQLStore(empty_url)
    store.create_run("r1", "wf", b"[]", now=1.0)
    store.close()

    _migrate.upgrade(empty_url)
    store = sql.SQLStore(empty_url)

    assert store.get_run("r1").workflow == "wf"
    store.close()


# -- upgrading a database in use ---------------------------------------------

RUNS_AT_0001 = [
    # id, status, ready_at, lease_owner, lease_until, cancel_requested
    ("pending-1", "pending", 10.0, None, None, False),
    ("running-1", "running", 10.0, "w1", 40.0, False),
    ("waiting-1", "waiting", None, None, None, True),
    ("done-1", "completed", None, None, None, False),
]


def write_at_0001(url: str) -> None:
    """Fill a database at revision 0001 the way Fluxo 0001 wrote it (no store of today)."""
    _migrate.upgrade(url, "0001")
    engine = sa.create_engine(sql.normalize_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for run_id, status, ready_at, owner, lease_until, cancel in RUNS_AT_0001:
                conn.execute(
                    sa.text(
                        "INSERT INTO fluxo_runs (id, workflow, status, created_at, updated_at, "
                        "ready_at, lease_owner, lease_until, cancel_requested) VALUES (:id, 'wf', "
                        ":status, 1.0, 2.0, :ready_at, :owner, :lease_until, :cancel)"
                    ),
                    {
                        "id": run_id,
                        "status": status,
                        "ready_at": ready_at,
                        "owner": owner,
                        "lease_until": lease_until,
                        "cancel": cancel,
                    },
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO fluxo_events (run_id, seq, kind, name, data, created_at) "
                        "VALUES (:id, 0, 'workflow_started', 'wf', :data, 1.0)"
                    ),
                    {"id": run_id, "data": b"[]"},
                )
    finally:
        engine.dispose()


def assert_runs_kept(store: sql.SQLStore, deadlines: dict[str, float]) -> None:
    """The runs ``write_at_0001`` wrote read back unchanged, with no parent and no headers."""
    for run_id, status, ready_at, owner, lease_until, cancel in RUNS_AT_0001:
        state = store.load(run_id)
        run = state.run
        assert (run.id, run.workflow, run.status.value) == (run_id, "wf", status)
        assert (run.created_at, run.updated_at, run.ready_at) == (1.0, 2.0, ready_at)
        assert (run.lease_owner, run.lease_until) == (owner, lease_until)
        assert (run.cancel_requested, run.wake_requested) == (cancel, False)
        assert run.deadline == deadlines.get(run_id)
        assert run.parent is None
        assert run.headers == {}
        assert state.events == (history.WorkflowStarted("wf", b"[]"),)


def test_a_database_at_0001_with_runs_upgrades_and_keeps_them(empty_url: str) -> None:
    write_at_0001(empty_url)
    assert _migrate.current(empty_url) == "0001"

    _migrate.upgrade(empty_url)

    assert _migrate.current(empty_url) == _schema.HEAD_REVISION
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert_runs_kept(store, deadlines={})
        assert all(store.load(run_id).signals == () for run_id, *_ in RUNS_AT_0001)
        # The new parts work on the old runs.
        assert store.send_signal("waiting-1", "go", b"1", now=50.0) is True
        assert store.get_run("waiting-1").status is history.RunStatus.PENDING
        assert [s.name for s in store.load("waiting-1").signals] == ["go"]
        run, _ = store.create_run("new-1", "wf", b"[]", now=60.0, deadline=90.5)
        assert store.get_run("new-1").deadline == run.deadline == 90.5
    finally:
        store.close()


def test_a_store_opening_an_older_fluxo_schema_upgrades_it(empty_url: str) -> None:
    write_at_0002(empty_url)

    store = sql.SQLStore(empty_url)
    try:
        assert _migrate.current(empty_url) == _schema.HEAD_REVISION
        assert_runs_kept(store, deadlines={"waiting-1": 99.5})
    finally:
        store.close()


def test_downgrade_to_0001_keeps_the_runs_and_upgrades_again(empty_url: str) -> None:
    from alembic import command

    write_at_0001(empty_url)
    _migrate.upgrade(empty_url)

    command.downgrade(_migrate.alembic_config(url=empty_url), "0001")

    assert _migrate.current(empty_url) == "0001"
    assert "fluxo_signals" not in table_names(empty_url)
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            ids = conn.exec_driver_sql("SELECT id FROM fluxo_runs").scalars().all()
    finally:
        engine.dispose()
    assert sorted(_text(i) for i in ids) == sorted(run[0] for run in RUNS_AT_0001)
    _migrate.upgrade(empty_url)
    assert _migrate.check(empty_url) == []


def write_at_0002(url: str) -> None:
    """Fill a database at revision 0002: the runs of 0001, one with a deadline and a signal."""
    write_at_0001(url)
    _migrate.upgrade(url, "0002")
    engine = sa.create_engine(sql.normalize_url(url), poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE fluxo_runs SET deadline = 99.5 WHERE id = 'waiting-1'"))
            conn.execute(
                sa.text(
                    "INSERT INTO fluxo_signals (run_id, name, payload, sent_at, dedupe_key) "
                    "VALUES ('waiting-1', 'go', :payload, 3.0, NULL)"
                ),
                {"payload": b"1"},
            )
    finally:
        engine.dispose()


def test_a_database_at_0002_with_runs_upgrades_and_keeps_them(empty_url: str) -> None:
    write_at_0002(empty_url)
    assert _migrate.current(empty_url) == "0002"

    _migrate.upgrade(empty_url)

    assert _migrate.current(empty_url) == _schema.HEAD_REVISION
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert_runs_kept(store, deadlines={"waiting-1": 99.5})
        assert [(s.name, s.payload) for s in store.load("waiting-1").signals] == [("go", b"1")]
        assert [run.parent for run in store.list_runs()] == [None] * len(RUNS_AT_0001)
        # The new column works next to the old runs.
        run, _ = store.create_run("child-1", "wf", b"[]", now=60.0, parent="running-1")
        assert store.get_run("child-1").parent == run.parent == "running-1"
    finally:
        store.close()


def test_downgrade_to_0002_keeps_the_runs_and_upgrades_again(empty_url: str) -> None:
    from alembic import command

    write_at_0002(empty_url)
    _migrate.upgrade(empty_url)
    store = sql.SQLStore(empty_url, auto_migrate=False)
    store.create_run("child-1", "wf", b"[]", now=60.0, parent="running-1")
    store.close()

    command.downgrade(_migrate.alembic_config(url=empty_url), "0002")

    assert _migrate.current(empty_url) == "0002"
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    try:
        columns = {column["name"] for column in sa.inspect(engine).get_columns("fluxo_runs")}
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, deadline FROM fluxo_runs").all()
            signals = conn.exec_driver_sql("SELECT name FROM fluxo_signals").scalars().all()
    finally:
        engine.dispose()
    assert "parent" not in columns
    assert "deadline" in columns
    assert sorted((_text(i), deadline) for i, deadline in rows) == sorted(
        [(run[0], 99.5 if run[0] == "waiting-1" else None) for run in RUNS_AT_0001]
        + [("child-1", None)]
    )
    assert [_text(name) for name in signals] == ["go"]
    _migrate.upgrade(empty_url)
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert store.get_run("child-1").parent is None
    finally:
        store.close()


TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}


def test_a_database_at_0003_with_runs_upgrades_and_keeps_them(empty_url: str) -> None:
    write_at_0002(empty_url)
    _migrate.upgrade(empty_url, "0003")
    assert _migrate.current(empty_url) == "0003"

    _migrate.upgrade(empty_url)

    assert _migrate.current(empty_url) == _schema.HEAD_REVISION
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert_runs_kept(store, deadlines={"waiting-1": 99.5})
        assert [run.headers for run in store.list_runs()] == [{}] * len(RUNS_AT_0001)
        # The new column works next to the old runs.
        run, _ = store.create_run("traced-1", "wf", b"[]", now=60.0, headers=TRACE)
        assert store.get_run("traced-1").headers == run.headers == TRACE
    finally:
        store.close()


def test_downgrade_to_0003_keeps_the_runs_and_upgrades_again(empty_url: str) -> None:
    from alembic import command

    write_at_0002(empty_url)
    _migrate.upgrade(empty_url)
    store = sql.SQLStore(empty_url, auto_migrate=False)
    store.create_run("traced-1", "wf", b"[]", now=60.0, parent="running-1", headers=TRACE)
    store.close()

    command.downgrade(_migrate.alembic_config(url=empty_url), "0003")

    assert _migrate.current(empty_url) == "0003"
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    try:
        columns = {column["name"] for column in sa.inspect(engine).get_columns("fluxo_runs")}
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT id, parent FROM fluxo_runs").all()
    finally:
        engine.dispose()
    assert "headers" not in columns
    assert "parent" in columns
    assert sorted((_text(i), None if p is None else _text(p)) for i, p in rows) == sorted(
        [(run[0], None) for run in RUNS_AT_0001] + [("traced-1", "running-1")]
    )
    _migrate.upgrade(empty_url)
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert store.get_run("traced-1").headers == {}
    finally:
        store.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def test_a_database_at_0006_with_runs_upgrades_and_keeps_them_in_the_default_queue(
    empty_url: str,
) -> None:
    write_at_0002(empty_url)
    _migrate.upgrade(empty_url, "0006")
    assert _migrate.current(empty_url) == "0006"

    _migrate.upgrade(empty_url)

    assert _migrate.current(empty_url) == _schema.HEAD_REVISION
    assert _migrate.check(empty_url) == []
    store = sql.SQLStore(empty_url, auto_migrate=False)
    try:
        assert_runs_kept(store, deadlines={"waiting-1": 99.5})
        assert {(r.queue, r.priority, r.partition, r.start_at) for r in store.list_runs()} == {
            ("", 0, None, None)
        }
        assert store.read_queue("q") == (0, b"")
        # The new columns and table work next to the old runs.
        store.create_run("queued-1", "wf", b"[]", now=60.0, queue="q", partition="p")
        assert [run.id for run in store.queued_runs("q", now=60.0, limit=10)[0]] == ["queued-1"]
        assert store.write_queue("q", 0, b"state") is True
        assert store.admit(["queued-1", "pending-1"], now=61.0) == ["queued-1"]
    finally:
        store.close()


def test_downgrade_to_0006_keeps_the_runs_and_upgrades_again(empty_url: str) -> None:
    write_at_0002(empty_url)
    _migrate.upgrade(empty_url)
    store = sql.SQLStore(empty_url, auto_migrate=False)
    store.create_run("queued-1", "wf", b"[]", now=60.0, queue="q", priority=2)
    store.write_queue("q", 0, b"state")
    store.close()

    _migrate.downgrade(empty_url, "0006")

    assert _migrate.current(empty_url) == "0006"
    assert "fluxo_queues" not in table_names(empty_url)
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    try:
        columns = {column["name"] for column in sa.inspect(engine).get_columns("fluxo_runs")}
        with engine.connect() as conn:
            ids = conn.exec_driver_sql("SELECT id FROM fluxo_runs").scalars().all()
    finally:
        engine.dispose()
    assert not columns & {"queue", "priority", "partition", "start_at"}
    assert "recoveries" in columns
    assert sorted(_text(i) for i in ids) == sorted([run[0] for run in RUNS_AT_0001] + ["queued-1"])
    _migrate.upgrade(empty_url)
    assert _migrate.check(empty_url) == []


def test_the_applications_own_tables_and_alembic_table_are_left_alone(empty_url: str) -> None:
    engine = sa.create_engine(sql.normalize_url(empty_url), poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('abc123')")
        conn.exec_driver_sql("CREATE TABLE app_users (id INTEGER PRIMARY KEY)")
    try:
        _migrate.upgrade(empty_url)

        assert _migrate.check(empty_url) == []
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [
                ("abc123",)
            ]
    finally:
        engine.dispose()


def test_downgrade_to_base_removes_the_tables(tmp_path: Path) -> None:
    from alembic import command

    url = f"sqlite:///{tmp_path / 'fluxo.db'}"
    _migrate.upgrade(url)

    command.downgrade(_migrate.alembic_config(url=url), "base")

    assert table_names(url) == {"fluxo_alembic_version"}
    assert _migrate.current(url) is None
    _migrate.upgrade(url)
    assert _migrate.check(url) == []


def test_downgrade_takes_the_schema_back_and_to_base_leaves_no_fluxo_table(
    empty_url: str,
) -> None:
    write_at_0002(empty_url)
    _migrate.upgrade(empty_url)

    _migrate.downgrade(empty_url, "0002")
    assert _migrate.current(empty_url) == "0002"
    _migrate.downgrade(empty_url, "0002")  # there already: nothing to do
    assert _migrate.current(empty_url) == "0002"

    _migrate.downgrade(empty_url, "base")
    assert _migrate.current(empty_url) is None
    assert not {name for name in table_names(empty_url) if name.startswith("fluxo_")}
    _migrate.upgrade(empty_url)
    assert _migrate.check(empty_url) == []


@pytest.mark.parametrize(
    ("found", "revision", "expected"),
    [
        (None, "base", True),
        (None, "0001", False),
        ("0001", "0001", True),
        ("0003", "0001", True),
        ("0002", "0003", False),
        ("0003", "0004", False),
        ("0004", "0003", True),
        ("0001", "base", True),
        ("9999", "0003", True),  # a newer Fluxo's revision is past every one this Fluxo knows
    ],
)
def test_reached_tells_whether_a_revision_is_behind_the_databases(
    found: str | None, revision: str, expected: bool
) -> None:
    assert _migrate.reached(found, revision) is expected


def test_a_revision_from_a_newer_fluxo_is_reported(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fluxo.db'}"
    _migrate.upgrade(url)
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE fluxo_alembic_version SET version_num = '9999'")
    engine.dispose()

    with pytest.raises(_errors.StoreError, match="newer Fluxo"):
        sql.SQLStore(url)
    with pytest.raises(_errors.StoreError, match="'9999'"):
        sql.SQLStore(url, auto_migrate=False)


# -- starting together --------------------------------------------------------

STARTERS = 6


def test_stores_starting_together_in_threads_all_succeed(empty_url: str) -> None:
    barrier = threading.Barrier(STARTERS)
    errors: list[BaseException] = []
    stores: list[sql.SQLStore] = []
    lock = threading.Lock()

    def start(number: int) -> None:
        try:
            barrier.wait(timeout=30)
            store = sql.SQLStore(empty_url)
            with lock:
                stores.append(store)
            store.create_run(f"first-{number}", "wf", b"[]", now=1.0)  # creates the tables
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    try:
        assert errors == []
        assert len(stores) == STARTERS
        assert _migrate.check(empty_url) == []
        assert len(stores[0].list_runs()) == STARTERS
        stores[0].create_run("r1", "wf", b"[]", now=1.0)
        assert stores[-1].get_run("r1").workflow == "wf"
    finally:
        for store in stores:
            store.close()


STARTER_SCRIPT = textwrap.dedent(
    """
    import sys
    from fluxo.stores import sql
    url = sys.argv[1]
    print("ready", flush=True)
    sys.stdin.readline()  # the test's go, sent to every process at once
    store = sql.SQLStore(url)
    store.create_run(sys.argv[2], "wf", b"[]", now=1.0)  # the first run creates the tables
    store.close()
    print("ok")
    """
)


@pytest.mark.slow
def test_stores_starting_together_in_processes_all_succeed(empty_url: str) -> None:
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER_SCRIPT, empty_url, f"first-{number}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for number in range(4)
    ]
    try:
        for process in processes:  # every interpreter has imported Fluxo
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.communicate()[1]
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=120) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()

    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert out.strip() == "ok"
    assert _migrate.check(empty_url) == []
