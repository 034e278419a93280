"""What is particular to the SQL store (the contract itself is tested in tests/stores/conformance).

URLs and drivers, the schema check, error translation, SQLite's settings, the cost
of the hot path in statements and round trips, and waking waiters.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import fluxo
from fluxo import _errors, history
from fluxo.stores import Store, sql
from fluxo.stores.sql import _migrate, _nudge, _schema

T0 = 1_700_000_000.0
STEP = history.StepCompleted("shop.charge", b'{"ok": true}')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fluxo.db'}"


# -- URLs and drivers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql://u@h:5433/db", "postgresql+psycopg://u@h:5433/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("mysql://root@h/db", "mysql+pymysql://root@h/db?charset=utf8mb4"),
        ("mysql+pymysql://root@h/db?charset=utf8", "mysql+pymysql://root@h/db?charset=utf8"),
        ("mariadb://root@h/db", "mariadb+pymysql://root@h/db?charset=utf8mb4"),
        ("sqlite:///fluxo.db", "sqlite+pysqlite:///fluxo.db"),
        ("sqlite://", "sqlite+pysqlite://"),
    ],
)
def test_urls_get_fluxos_driver(given: str, expected: str) -> None:
    assert sql.normalize_url(given).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg2://u@h/db", "psycopg"),
        ("mysql+mysqldb://u@h/db", "pymysql"),
        ("oracle://u@h/db", "sqlite, postgresql or mysql"),
        ("not a url", "not a database URL"),
    ],
)
def test_unusable_urls_are_definition_errors(url: str, message: str) -> None:
    with pytest.raises(_errors.DefinitionError, match=message):
        sql.SQLStore(url)


def test_the_store_shows_its_url_as_given_with_the_password_masked() -> None:
    store = sql.SQLStore("sqlite://")
    try:
        assert repr(store) == "<SQLStore sqlite://>"  # not sqlite+pysqlite://
    finally:
        store.close()
    for reach in (sql.SQLStore, _migrate.current, _migrate.upgrade):
        with pytest.raises(_errors.StoreUnavailableError) as info:
            reach("postgresql://u:S3cretPw@127.0.0.1:1/db")
        assert "at postgresql://u:***@127.0.0.1:1/db " in str(info.value)


@pytest.mark.mysql
def test_a_charset_the_mysql_driver_does_not_know_is_refused_before_connecting() -> None:
    with pytest.raises(_errors.DefinitionError, match="charset='bogus'"):
        sql.SQLStore("mysql+pymysql://root@127.0.0.1:1/db?charset=bogus")


def test_importing_the_store_loads_no_driver() -> None:
    code = (
        "import sys, fluxo, fluxo.stores.sql;"
        "loaded = [m for m in ('psycopg', 'pymysql') if m in sys.modules];"
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    ("module", "url", "extra"),
    [
        ("psycopg", "postgresql://u@127.0.0.1/db", "fluxo[postgres]"),
        ("pymysql", "mysql://u@127.0.0.1/db", "fluxo[mysql]"),
    ],
)
def test_a_missing_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, url: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(_errors.DefinitionError, match=re.escape(f"pip install '{extra}'")) as info:
        sql.SQLStore(url)

    assert isinstance(info.value.__cause__, ImportError)


# -- unreachable databases ------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:1/postgres",
        "mysql://root@127.0.0.1:1/test",
        "sqlite:////nonexistent-dir/fluxo/f.db",
    ],
)
def test_an_unreachable_database_raises_store_unavailable_with_the_cause(url: str) -> None:
    with pytest.raises(_errors.StoreUnavailableError) as info:
        sql.SQLStore(url)

    assert info.value.__cause__ is not None
    assert "unavailable" in str(info.value)


KILL_SESSIONS = {
    "postgres": "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    "mysql": None,  # one KILL per session, below
}


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ],
)
def test_a_lost_connection_raises_store_unavailable_then_recovers(
    request: pytest.FixtureRequest, kind: str
) -> None:
    url: str = request.getfixturevalue(f"clean_{kind}_url")
    store = sql.SQLStore(url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.create_run("r1", "wf", b"[]", now=T0)
    admin = sa.create_engine(sql.normalize_url(url), poolclass=NullPool)
    with admin.connect() as conn:
        if kind == "postgres":
            conn.exec_driver_sql(str(KILL_SESSIONS["postgres"]))
        else:
            ids = conn.exec_driver_sql(
                "SELECT id FROM information_schema.processlist "
                "WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            ).scalars()
            for session in list(ids):
                conn.exec_driver_sql(f"KILL {int(session)}")
    admin.dispose()
    time.sleep(0.2)

    with pytest.raises(_errors.StoreUnavailableError) as info:
        store.get_run("r1")

    assert info.value.__cause__ is not None
    assert store.get_run("r1").workflow == "wf"  # the broken connection was replaced
    store.close()


# -- the schema -----------------------------------------------------------------


def test_without_auto_migrate_a_new_database_asks_for_fluxo_db_upgrade(sqlite_url: str) -> None:
    with pytest.raises(_errors.StoreError, match="fluxo db upgrade") as info:
        sql.SQLStore(sqlite_url, auto_migrate=False)

    assert f"no Fluxo tables at {sqlite_url};" in str(info.value)  # the URL as given
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()
    _migrate.upgrade(sqlite_url)
    sql.SQLStore(sqlite_url, auto_migrate=False).close()


@pytest.mark.postgres
def test_without_auto_migrate_a_new_postgres_database_asks_for_an_upgrade(
    fresh_postgres_url: str,
) -> None:
    with pytest.raises(_errors.StoreError, match="fluxo db upgrade"):
        sql.SQLStore(fresh_postgres_url, auto_migrate=False)
    assert _migrate.current(fresh_postgres_url) is None


def test_tables_dropped_under_a_running_store_ask_for_an_upgrade(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    engine = sa.create_engine(sqlite_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE fluxo_events")
    engine.dispose()

    with pytest.raises(_errors.StoreError, match="fluxo db upgrade"):
        store.load("r1")
    store.close()


def test_auto_migrate_creates_the_tables_on_the_first_run(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    assert _migrate.current(sqlite_url) is None

    store.create_run("r1", "wf", b"[]", now=T0)
    store.close()

    assert _migrate.current(sqlite_url) == _schema.HEAD_REVISION
    assert _migrate.check(sqlite_url) == []


def test_the_first_migration_logs_one_line_of_fluxos_own(tmp_path: Path) -> None:
    code = (
        "import logging, fluxo\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "for _ in range(2):\n"
        "    store = fluxo.open_store('sqlite:///fluxo.db')\n"
        "    store.claim('w', ['wf'], now=0.0, lease_until=1.0, limit=1)  # creates the tables\n"
        "    store.close()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"fluxo.stores.sql._migrate: migrated the Fluxo schema from nothing to "
        f"{_schema.HEAD_REVISION}\n"
    )


def test_alembic_logging_a_program_configured_is_left_alone(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="alembic")  # the program asked for alembic's lines
    store = sql.SQLStore(sqlite_url)
    store.claim("w", ["wf"], now=0.0, lease_until=1.0, limit=1)  # the first claim migrates
    store.close()
    assert any(r.name.startswith("alembic") for r in caplog.records)
    assert logging.getLogger("alembic").level == logging.INFO


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    ]
)
def any_sql_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    url: str = request.getfixturevalue(f"clean_{request.param}_url")
    return url


def test_a_status_write_that_changes_nothing_is_not_a_conflict(any_sql_url: str) -> None:
    # MySQL counts changed rows, not matched ones, unless the client asks otherwise.
    store = sql.SQLStore(any_sql_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    waiting = history.RunStatus.WAITING

    store.append("r1", 1, [], now=T0, status=waiting, ready_at=None)
    store.append("r1", 1, [], now=T0, status=waiting, ready_at=None)
    store.append("r1", 1, [STEP, STEP], now=T0, status=waiting, ready_at=None)
    store.release("w1", "r1", now=T0)

    assert store.get_run("r1").status is waiting
    store.close()


def test_a_held_run_taken_back_reads_a_signal_that_committed_while_it_waited(
    any_sql_url: str,
) -> None:
    # The run is woken already, so the lease goes for its row, which a second signal's
    # transaction holds: once that commits, the lease takes its wake-up too, and the
    # read made after the lease must see that signal.
    store = sql.SQLStore(any_sql_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    store.claim_run("w1", "r1", now=T0, lease_until=T0 + 30)
    store.append("r1", 1, [STEP], now=T0, status=history.RunStatus.WAITING, ready_at=None)
    store.send_signal("r1", "go", b"0", now=T0 + 1)
    app = sa.create_engine(sql.normalize_url(any_sql_url), poolclass=NullPool)
    found: list[Any] = []

    def take_back() -> None:
        found.append(
            store.take_back(
                "w1", "r1", now=T0 + 3, lease_until=T0 + 33, cancels=True, due=False, after=-1
            )
        )

    with app.connect() as conn:  # the second signal's transaction, as send_signal writes it
        conn.execute(
            sa.text(
                "UPDATE fluxo_runs SET wake_requested = :woken, updated_at = :now WHERE id = :id"
            ),
            {"woken": True, "now": T0 + 2, "id": "r1"},
        )
        conn.execute(
            sa.text(
                "INSERT INTO fluxo_signals (run_id, name, payload, sent_at) "
                "VALUES (:id, 'go', :payload, :now)"
            ),
            {"id": "r1", "payload": b"1", "now": T0 + 2},
        )
        thread = threading.Thread(target=take_back, daemon=True)
        thread.start()
        _wait_for_a_lock_wait(any_sql_url, thread)
        conn.commit()
    thread.join(30)
    app.dispose()

    [back] = found
    assert back.taken
    assert [s.payload for s in back.signals] == [b"0", b"1"]
    assert not store.get_run("r1").wake_requested
    store.close()


def _wait_for_a_lock_wait(url: str, thread: threading.Thread) -> None:
    """Until the take-back waits for the row (PostgreSQL tells; elsewhere give it time)."""
    if not url.startswith("postgresql"):
        thread.join(0.5)
        return
    watcher = sa.create_engine(sql.normalize_url(url), poolclass=NullPool)
    deadline = time.monotonic() + 30
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    with watcher.connect() as conn:
        while conn.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the take-back never waited for the run's row"
            time.sleep(0.01)
            conn.rollback()
    watcher.dispose()


def test_a_run_started_in_the_callers_transaction_keeps_its_headers(any_sql_url: str) -> None:
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    store = sql.SQLStore(any_sql_url)
    store.migrate()
    app = sa.create_engine(sql.normalize_url(any_sql_url), poolclass=NullPool)
    pooled = app.raw_connection()  # the application's own connection, in its transaction
    try:
        joined = store.join(pooled.dbapi_connection, after_commit=None)
        run, created = joined.create_run("r1", "wf", b"[]", now=T0, headers=headers)
        again, created_again = joined.create_run("r1", "wf", b"[]", now=T0, headers={"x": "y"})
        assert (created, created_again) == (True, False)
        assert run.headers == again.headers == joined.get_run("r1").headers == headers
        assert joined.load("r1").run == run
        pooled.dbapi_connection.commit()
    finally:
        pooled.close()
        app.dispose()
    assert store.get_run("r1").headers == headers
    assert store.load("r1").run == run
    store.close()


# -- SQLite ---------------------------------------------------------------------


def pragmas(store: sql.SQLStore) -> dict[str, object]:
    raw = store.engine.raw_connection()
    try:
        cursor = raw.cursor()
        found = {}
        for name in ("journal_mode", "synchronous", "busy_timeout"):
            cursor.execute(f"PRAGMA {name}")
            found[name] = cursor.fetchone()[0]
        return found
    finally:
        raw.close()


def test_sqlite_files_use_wal_full_sync_and_a_busy_timeout(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    store.create_run("r1", "wf", b"[]", now=T0)

    assert pragmas(store) == {"journal_mode": "wal", "synchronous": 2, "busy_timeout": 30000}
    store.close()


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The usual umask (group and others may read new files), whatever the test runner's."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(folder: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir()}


@pytest.mark.usefixtures("permissive_umask")
def test_a_new_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    store = sql.SQLStore(f"sqlite:///{tmp_path / 'fluxo.db'}")
    try:
        store.create_run("r1", "wf", b'{"card": "4242"}', now=T0)

        # while the store is open, SQLite keeps its WAL and shared-memory files
        assert modes(tmp_path) == {"fluxo.db": 0o600, "fluxo.db-wal": 0o600, "fluxo.db-shm": 0o600}
    finally:
        store.close()


@pytest.mark.usefixtures("permissive_umask")
def test_fluxo_db_upgrade_creates_the_sqlite_file_readable_by_its_owner_only(
    tmp_path: Path,
) -> None:
    _migrate.upgrade(f"sqlite:///{tmp_path / 'fluxo.db'}")

    assert modes(tmp_path)["fluxo.db"] == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_an_existing_sqlite_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "fluxo.db"
    path.touch()
    path.chmod(0o640)
    store = sql.SQLStore(f"sqlite:///{path}")
    try:
        store.create_run("r1", "wf", b"[]", now=T0)
    finally:
        store.close()

    assert modes(tmp_path)["fluxo.db"] == 0o640


def test_a_sqlite_file_in_a_missing_folder_is_unavailable_and_not_created(tmp_path: Path) -> None:
    with pytest.raises(_errors.StoreUnavailableError, match="does not exist"):
        sql.SQLStore(f"sqlite:///{tmp_path / 'nowhere' / 'fluxo.db'}")

    assert list(tmp_path.iterdir()) == []


def test_sqlite_synchronous_can_be_relaxed_in_the_url(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url + "?synchronous=normal")
    store.create_run("r1", "wf", b"[]", now=T0)

    assert pragmas(store)["synchronous"] == 1
    store.close()


def test_a_bad_sqlite_synchronous_value_is_a_definition_error(sqlite_url: str) -> None:
    with pytest.raises(_errors.DefinitionError, match="synchronous"):
        sql.SQLStore(sqlite_url + "?synchronous=sometimes")


def test_in_memory_sqlite_is_shared_by_threads() -> None:
    store = sql.SQLStore("sqlite://")
    store.create_run("r1", "wf", b"[]", now=T0)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        for _ in range(50):
            while True:
                try:
                    seq = store.load("r1").next_seq
                    store.append("r1", seq, [history.StepCompleted(f"w{worker}")], now=T0)
                    break
                except _errors.SequenceConflictError:
                    continue
                except BaseException as exc:
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert len(store.load("r1").events) == 1 + 4 * 50
    store.close()


def test_the_hot_path_is_one_statement_without_a_transaction_on_sqlite(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.create_run("r1", "wf", b"[]", now=T0)
    raw = store.engine.raw_connection()
    statements: list[str] = []
    raw.dbapi_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
    raw.close()

    store.append("r1", 1, [STEP], now=T0)

    assert len(statements) == 1
    assert statements[0].startswith("INSERT INTO fluxo_events")
    store.close()


# -- PostgreSQL: round trips ------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("status", [None, history.RunStatus.WAITING])
def test_an_append_is_one_round_trip_on_postgres(
    clean_postgres_url: str, tmp_path: Path, status: history.RunStatus | None
) -> None:
    store = sql.SQLStore(clean_postgres_url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.create_run("r1", "wf", b"[]", now=T0)
    raw = store.engine.raw_connection()
    pgconn = raw.dbapi_connection.pgconn  # type: ignore[union-attr]
    raw.close()
    trace = tmp_path / "libpq.trace"
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        try:
            store.append("r1", 1, [STEP], now=T0, status=status)
        finally:
            pgconn.untrace()

    messages = [line.split("\t")[3] for line in trace.read_text().splitlines() if "\tF\t" in line]
    assert messages.count("Sync") == 1, messages  # one exchange with the server
    assert "Query" not in messages  # no BEGIN or COMMIT of its own
    assert store.get_run("r1").status is (status or history.RunStatus.PENDING)
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("guarded", [False, True], ids=["plain", "unless-cancelled"])
def test_a_step_record_and_the_end_are_one_round_trip_on_postgres(
    clean_postgres_url: str, tmp_path: Path, guarded: bool
) -> None:
    store = sql.SQLStore(clean_postgres_url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.create_run("r1", "wf", b"[]", now=T0)
    store.append("r1", 1, [STEP], now=T0)
    raw = store.engine.raw_connection()
    pgconn = raw.dbapi_connection.pgconn  # type: ignore[union-attr]
    raw.close()
    trace = tmp_path / "libpq.trace"
    end = history.WorkflowCompleted("", b"1")
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        try:
            store.append(
                "r1",
                2,
                [STEP, end],
                now=T0,
                status=history.RunStatus.COMPLETED,
                unless_cancel_requested=guarded,
            )
        finally:
            pgconn.untrace()

    messages = [line.split("\t")[3] for line in trace.read_text().splitlines() if "\tF\t" in line]
    assert messages.count("Sync") == 1, messages  # one exchange with the server
    assert "Query" not in messages  # no BEGIN or COMMIT of its own
    assert store.get_run("r1").status is history.RunStatus.COMPLETED
    assert [e.kind for e in store.load("r1").events] == [
        "workflow_started",
        "step_completed",
        "step_completed",
        "workflow_completed",
    ]
    store.close()


@pytest.mark.postgres
def test_a_two_event_end_is_fenced_and_refused_while_a_cancel_is_pending_on_postgres(
    clean_postgres_url: str,
) -> None:
    store = sql.SQLStore(clean_postgres_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    end = history.WorkflowCompleted("", b"1")
    with pytest.raises(fluxo.SequenceConflictError):
        store.append("r1", 0, [STEP, end], now=T0, status=history.RunStatus.COMPLETED)
    with pytest.raises(fluxo.SequenceConflictError):  # a gap: position 1 is not there
        store.append("r1", 2, [STEP, end], now=T0, status=history.RunStatus.COMPLETED)
    store.request_cancel("r1", now=T0)
    with pytest.raises(fluxo.CancelPendingError):
        store.append(
            "r1",
            1,
            [STEP, end],
            now=T0,
            status=history.RunStatus.COMPLETED,
            unless_cancel_requested=True,
        )
    assert [e.kind for e in store.load("r1").events] == ["workflow_started"]  # nothing written
    store.close()


# -- engines ----------------------------------------------------------------------


def test_the_pool_keeps_twenty_connections_unless_told_otherwise(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    assert store.engine.pool.size() == 20  # type: ignore[attr-defined]
    store.close()
    told = sql.SQLStore(sqlite_url, engine_options={"pool_size": 3})
    assert told.engine.pool.size() == 3  # type: ignore[attr-defined]
    told.close()


@pytest.mark.postgres
def test_a_busy_worker_reuses_its_connections_on_postgres(clean_postgres_url: str) -> None:
    """A worker of concurrency 8 uses more than SQLAlchemy's default five connections at
    once; each one given back beyond those used to be closed, and the next call
    opened a new PostgreSQL connection (a server process) again."""

    @fluxo.step(name="pool.note")
    def note(i: int) -> int:
        return i

    @fluxo.workflow(name="pool.parked")
    def parked() -> int:
        return note(fluxo.wait_for_signal("go", type=int))

    engine = fluxo.Engine(clean_postgres_url, workflows=[parked])
    opened: list[object] = []
    sa.event.listen(engine.store.engine, "connect", lambda *_: opened.append(1))  # type: ignore[attr-defined]
    handles = [engine.start(parked) for _ in range(300)]
    with engine.worker(concurrency=8, sticky=0):
        while engine.count_runs().get(("pool.parked", fluxo.RunStatus.WAITING), 0) < 300:
            time.sleep(0.02)
        for i, handle in enumerate(handles):
            engine.signal(handle.id, "go", i)
        assert [h.result(timeout=120) for h in handles] == list(range(300))

    assert len(opened) <= 20  # the pool's own (51 with a pool of 5)
    engine.close()


def test_a_given_engine_is_used_and_left_open(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    store = sql.SQLStore(engine)
    store.create_run("r1", "wf", b"[]", now=T0)
    store.close()

    with engine.connect() as conn:  # still usable, and transactional as before
        conn.exec_driver_sql("UPDATE fluxo_runs SET workflow = 'other'")
        conn.rollback()
        assert conn.exec_driver_sql("SELECT workflow FROM fluxo_runs").scalar() == "wf"
    engine.dispose()


def test_engine_options_need_a_url(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with pytest.raises(_errors.DefinitionError, match="engine_options"):
        sql.SQLStore(engine, engine_options={"pool_size": 2})
    engine.dispose()


def test_the_store_is_a_store_and_closes_idempotently(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    assert isinstance(store, Store)
    assert "fluxo.db" in repr(store)

    store.close()
    store.close()

    assert "closed" in repr(store)
    with pytest.raises(_errors.StoreError, match="closed"):
        store.get_run("r1")


def test_the_store_is_a_context_manager(sqlite_url: str) -> None:
    with sql.SQLStore(sqlite_url) as store:
        store.create_run("r1", "wf", b"[]", now=T0)
    with pytest.raises(_errors.StoreError, match="closed"):
        store.get_run("r1")


# -- waking waiters ---------------------------------------------------------------


def wait_in_thread(store: sql.SQLStore, run_id: str | None, timeout: float) -> list[object]:
    result: list[object] = []

    def wait() -> None:
        start = time.monotonic()
        woke = store.wait_for_change(run_id, timeout)
        result.extend([woke, time.monotonic() - start])

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    result.append(thread)
    return result


def finish(waiter: list[object]) -> tuple[bool, float]:
    thread = waiter[0]
    assert isinstance(thread, threading.Thread)
    thread.join(30)
    woke, took = waiter[1], waiter[2]
    assert isinstance(woke, bool)
    assert isinstance(took, float)
    return woke, took


def test_a_write_through_the_same_store_wakes_waiters_at_once(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url, poll_interval=10)
    store.create_run("r1", "wf", b"[]", now=T0)
    waiter = wait_in_thread(store, "r1", timeout=20)
    time.sleep(0.1)

    store.append("r1", 1, [STEP], now=T0 + 1, status=history.RunStatus.WAITING)

    woke, took = finish(waiter)
    assert woke
    assert took < 2
    store.close()


@pytest.mark.parametrize("run_id", ["r1", None])
def test_a_write_by_another_process_wakes_waiters_by_polling(
    sqlite_url: str, run_id: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_nudge, "supported", lambda: False)  # as without Unix sockets
    store = sql.SQLStore(sqlite_url, poll_interval=0.05)
    other = sql.SQLStore(sqlite_url)  # as another process would, with its own pool
    store.create_run("r1", "wf", b"[]", now=T0)
    waiter = wait_in_thread(store, run_id, timeout=20)
    time.sleep(0.2)

    other.append("r1", 1, [STEP], now=T0 + 1, status=history.RunStatus.WAITING)

    woke, took = finish(waiter)
    assert woke
    assert took < 5
    store.close()
    other.close()


@pytest.mark.postgres
@pytest.mark.parametrize("run_id", ["r1", None])
def test_on_postgres_another_process_wakes_waiters_by_notify(
    clean_postgres_url: str, run_id: str | None
) -> None:
    store = sql.SQLStore(clean_postgres_url, poll_interval=30)  # polling would be too late
    other = sql.SQLStore(clean_postgres_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    assert store.wait_for_change(run_id, 0.2) is False  # starts the listener; nothing yet
    waiter = wait_in_thread(store, run_id, timeout=20)
    time.sleep(0.2)

    other.append("r1", 1, [STEP], now=T0 + 1, status=history.RunStatus.WAITING)

    woke, took = finish(waiter)
    assert woke
    assert took < 2
    store.close()
    other.close()
    assert not [t for t in threading.enumerate() if t.name == "fluxo-pg-listener"]


@pytest.mark.postgres
def test_on_postgres_without_listen_waiters_fall_back_to_polling(clean_postgres_url: str) -> None:
    store = sql.SQLStore(clean_postgres_url, poll_interval=0.1)
    store._listener = None  # as while the listening connection is down
    other = sql.SQLStore(clean_postgres_url)
    waiter = wait_in_thread(store, None, timeout=20)
    time.sleep(0.3)

    other.create_run("r1", "wf", b"[]", now=T0 - 1000)  # an older clock: no timestamp helps

    woke, took = finish(waiter)
    assert woke
    assert took < 5
    store.close()
    other.close()


@pytest.mark.postgres
def test_every_status_change_on_postgres_is_announced(clean_postgres_url: str) -> None:
    import psycopg

    listener = psycopg.connect(
        sql.normalize_url(clean_postgres_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False),
        autocommit=True,
    )
    listener.execute('LISTEN "fluxo_changes"')
    store = sql.SQLStore(clean_postgres_url)
    running = history.RunStatus.RUNNING

    store.create_run("r1", "wf", b"[]", now=T0)
    store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    store.release("w1", "r1", now=T0 + 1)
    store.append("r1", 1, [STEP], now=T0 + 2, status=running)  # one event, one statement
    store.append("r1", 2, [STEP, STEP], now=T0 + 3, status=running)  # a transaction
    store.append("r1", 4, [], now=T0 + 4, status=history.RunStatus.FAILED)  # status only
    store.reopen("r1", now=T0 + 5)
    store.request_cancel("r1", now=T0 + 6)

    payloads = [n.payload for n in listener.notifies(timeout=1.0)]
    # create, release, three appends with a status, reopen, cancel (claims are not news)
    assert payloads == ["r1"] * 7
    listener.close()
    store.close()


def test_waiting_without_changes_times_out(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url, poll_interval=0.05)
    store.create_run("r1", "wf", b"[]", now=T0)

    start = time.monotonic()
    assert store.wait_for_change("r1", 0.3) is False
    assert 0.25 < time.monotonic() - start < 3
    assert store.wait_for_change(None, 0) is False
    store.close()


def test_closing_the_store_wakes_its_waiters(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url, poll_interval=10)
    waiter = wait_in_thread(store, None, timeout=20)
    time.sleep(0.1)

    store.close()

    woke, took = finish(waiter)
    assert woke
    assert took < 2


# -- forks ------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_its_own_connections(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    pid = os.fork()
    if pid == 0:  # the child: use the inherited store, report by exit code, leave at once
        code = 1
        try:
            store.append("r1", 1, [STEP], now=T0)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(store.load("r1").events) == 2
    store.close()


# -- SQLite: this process's writes take turns --------------------------------------------


def test_sqlite_writes_of_one_process_take_turns_and_reads_do_not_wait(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    store.create_run("r1", "wf", b"[]", now=T0)
    writer = store._db.writer
    assert writer is not None
    appended = threading.Event()

    def append() -> None:
        store.append("r1", 1, [STEP], now=T0)
        appended.set()

    with writer:  # another write of this process holds the turn
        thread = threading.Thread(target=append)
        thread.start()
        assert not appended.wait(0.3)  # the append waits its turn
        assert store.load("r1").next_seq == 1  # a read does not
        assert store.get_run("r1").status is fluxo.RunStatus.PENDING
    thread.join(10)
    assert appended.is_set()
    assert store.load("r1").events[1:] == (STEP,)
    store.close()


def test_an_in_memory_sqlite_store_has_no_write_turn_of_its_own() -> None:
    store = sql.SQLStore("sqlite://")
    assert store._db.writer is None
    assert store._db.serial is not None  # its one connection is shared: every call takes turns
    store.close()
