"""What is particular to worker liveness on the SQL store (the contract: tests/stores/conformance).

A beat creates the tables on a new database, as a claim does; a beat that finds
no dead worker costs one upsert and one small select (on PostgreSQL one round
trip); the runs a beat frees are announced to other processes; a dead worker's
many runs are all freed, once, however many workers beat at the same moment.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fluxo import _errors
from fluxo.stores import sql
from fluxo.stores.sql import _migrate, _schema

T0 = 1_700_000_000.0


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fluxo.db'}"


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


def start_claimed(store: sql.SQLStore, count: int, worker: str) -> list[str]:
    ids = [f"r{i:04}" for i in range(count)]
    for run_id in ids:
        store.create_run(run_id, "wf", b"[]", now=T0)
    claimed = store.claim(worker, ["wf"], now=T0, lease_until=T0 + 30, limit=count)
    assert len(claimed) == count
    return ids


def test_the_first_beat_creates_the_tables(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    with pytest.raises(_errors.StoreError, match="no Fluxo tables"):
        store.forget_worker("w1")  # forgetting makes nothing

    assert store.beat_worker("w1", now=T0, alive_until=T0 + 2, restarted=True) == []
    store.close()

    assert _migrate.current(sqlite_url) == _schema.HEAD_REVISION


def test_a_beat_that_finds_no_dead_worker_is_an_upsert_and_a_select_on_sqlite(
    sqlite_url: str,
) -> None:
    store = sql.SQLStore(sqlite_url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    raw = store.engine.raw_connection()
    statements: list[str] = []
    raw.dbapi_connection.set_trace_callback(statements.append)  # type: ignore[union-attr]
    raw.close()

    assert store.beat_worker("w2", now=T0 + 1, alive_until=T0 + 3) == []

    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "SELECT", "COMMIT"]
    assert "fluxo_runs" not in " ".join(statements)
    store.close()


@pytest.mark.postgres
@pytest.mark.parametrize("dead", [False, True], ids=["all-alive", "one-dead"])
def test_a_beat_is_one_round_trip_on_postgres(
    clean_postgres_url: str, tmp_path: Path, dead: bool
) -> None:
    store = sql.SQLStore(clean_postgres_url, engine_options={"pool_size": 1, "max_overflow": 0})
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    start_claimed(store, 2, "w1")
    raw = store.engine.raw_connection()
    pgconn = raw.dbapi_connection.pgconn  # type: ignore[union-attr]
    raw.close()
    trace = tmp_path / "libpq.trace"
    now = T0 + 3 if dead else T0 + 1
    with trace.open("w") as out:
        pgconn.trace(out.fileno())
        try:
            freed = store.beat_worker("w2", now=now, alive_until=now + 2)
        finally:
            pgconn.untrace()

    messages = [line.split("\t")[3] for line in trace.read_text().splitlines() if "\tF\t" in line]
    assert messages.count("Sync") == 1, messages  # one exchange with the server
    assert "Query" not in messages  # no BEGIN or COMMIT of its own
    assert sorted(freed) == (["r0000", "r0001"] if dead else [])
    store.close()


@pytest.mark.postgres
def test_the_runs_a_beat_frees_are_announced_on_postgres(clean_postgres_url: str) -> None:
    import psycopg

    listener = psycopg.connect(
        sql.normalize_url(clean_postgres_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False),
        autocommit=True,
    )
    store = sql.SQLStore(clean_postgres_url)
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    start_claimed(store, 2, "w1")
    listener.execute('LISTEN "fluxo_changes"')

    store.beat_worker("w2", now=T0 + 1, alive_until=T0 + 3)  # nothing to free: no news
    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    assert sorted(n.payload for n in listener.notifies(timeout=1.0)) == ["r0000", "r0001"]
    listener.close()
    store.close()


def test_every_run_of_a_dead_worker_is_freed(any_sql_url: str) -> None:
    # More than one UPDATE names by id on MySQL.
    store = sql.SQLStore(any_sql_url)
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    ids = start_claimed(store, 300, "w1")

    freed = store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    assert sorted(freed) == ids
    assert {store.get_run(run_id).lease_until for run_id in ids} == {T0 + 3}
    store.close()


def test_workers_beating_together_free_a_dead_workers_runs_once(any_sql_url: str) -> None:
    store = sql.SQLStore(any_sql_url)
    store.beat_worker("dead", now=T0, alive_until=T0 + 2)
    ids = start_claimed(store, 20, "dead")
    for i in range(8):
        store.beat_worker(f"w{i}", now=T0 + 1, alive_until=T0 + 10)
    together = threading.Barrier(8)
    freed: list[str] = []
    errors: list[BaseException] = []

    def beat(worker: str) -> None:
        together.wait()
        try:
            freed.extend(store.beat_worker(worker, now=T0 + 3, alive_until=T0 + 10))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=beat, args=(f"w{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    assert sorted(freed) == ids
    # the dead worker's record is gone: a later beat finds nothing to free
    assert store.beat_worker("w0", now=T0 + 4, alive_until=T0 + 10) == []
    store.close()


def test_a_forgotten_worker_can_beat_again(any_sql_url: str) -> None:
    store = sql.SQLStore(any_sql_url)
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.forget_worker("w1")
    store.forget_worker("w1")
    store.beat_worker("w1", now=T0 + 1, alive_until=T0 + 3)
    ids = start_claimed(store, 1, "w1")

    assert store.beat_worker("w2", now=T0 + 4, alive_until=T0 + 6) == ids
    store.close()
