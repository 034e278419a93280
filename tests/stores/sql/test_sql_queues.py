"""What is particular to queues on the SQL store (the contract: tests/stores/conformance).

A transactional start takes the queue options as ``create_run`` does; ``queued_runs``
reads indexes of the runs awaiting admission, never the queue's finished runs (the
admission index, in order, where indexes can be partial); ``admit``
takes batches of any size; a queue's record lives in ``fluxo_queues``, which a
purge leaves alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from fluxo import history
from fluxo.stores import sql

T0 = 1_700_000_000.0
RunStatus = history.RunStatus


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


def test_a_run_started_in_the_callers_transaction_takes_the_queue_options(
    any_sql_url: str,
) -> None:
    store = sql.SQLStore(any_sql_url)
    store.migrate()
    app = sa.create_engine(sql.normalize_url(any_sql_url), poolclass=NullPool)
    pooled = app.raw_connection()  # the application's own connection, in its transaction
    try:
        joined = store.join(pooled.dbapi_connection, after_commit=None)
        queued, _ = joined.create_run(
            "q1", "wf", b"[]", now=T0, queue="q", priority=3, partition="p", start_at=T0 + 5
        )
        later, _ = joined.create_run("d1", "wf", b"[]", now=T0, start_at=T0 + 60)
        again, created = joined.create_run("q1", "wf", b"[]", now=T0, queue="other")
        assert not created
        assert again == queued == joined.get_run("q1")
        pooled.dbapi_connection.commit()
    finally:
        pooled.close()
        app.dispose()
    try:
        assert (queued.queue, queued.priority, queued.partition) == ("q", 3, "p")
        assert (queued.status, queued.ready_at, queued.start_at) == (
            RunStatus.PENDING,
            None,
            T0 + 5,
        )
        assert (later.queue, later.ready_at, later.start_at) == ("", T0 + 60, None)
        assert store.get_run("q1") == queued
        assert store.get_run("d1") == later
        assert [run.id for run in store.queued_runs("q", now=T0 + 5, limit=10)[0]] == ["q1"]
    finally:
        store.close()


def test_a_run_executed_in_place_is_refused_a_queue_in_the_callers_transaction(
    sqlite_url: str,
) -> None:
    store = sql.SQLStore(sqlite_url)
    store.migrate()
    app = sa.create_engine(sql.normalize_url(sqlite_url), poolclass=NullPool)
    pooled = app.raw_connection()
    try:
        joined = store.join(pooled.dbapi_connection, after_commit=None)
        with pytest.raises(ValueError, match="'r1'"):
            joined.create_run(
                "r1", "wf", b"[]", now=T0, owner="inline", lease_until=T0 + 30, queue="q"
            )
        pooled.dbapi_connection.commit()
    finally:
        pooled.close()
        app.dispose()
    try:
        assert store.list_runs() == []
    finally:
        store.close()


def test_queued_runs_reads_the_queue_index_and_never_the_finished_runs(sqlite_url: str) -> None:
    store = sql.SQLStore(sqlite_url)
    try:
        for i in range(20):
            store.create_run(f"done-{i}", "wf", b"[]", now=T0, queue="q")
            store.append(
                f"done-{i}",
                1,
                [history.WorkflowCompleted("", b"1")],
                now=T0,
                status=RunStatus.COMPLETED,
            )
        store.create_run("waiting", "wf", b"[]", now=T0, queue="q")
        statement = store._queues._queued  # the one statement queued_runs runs
        args = statement.args({"p_queue": "q", "p_now": T0 + 1, "p_limit": 10})
        with store.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            plan = [
                row[-1]
                for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement.text}", args)
            ]

        reads = [step for step in plan if "fluxo_runs" in step]
        assert len(reads) == 2, plan
        # The due runs in admission order (no sort), and the next start.
        assert "USING INDEX ix_fluxo_runs_admission (queue=?)" in reads[0], plan
        assert "INDEX ix_fluxo_runs_queue_start_at (queue=? AND start_at>?)" in reads[1], plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
        assert [run.id for run in store.queued_runs("q", now=T0 + 1, limit=10)[0]] == ["waiting"]
    finally:
        store.close()


def test_the_admission_index_is_made_where_indexes_can_be_partial(any_sql_url: str) -> None:
    with sql.SQLStore(any_sql_url) as store:
        store.migrate()
    engine = sa.create_engine(sql.normalize_url(any_sql_url), poolclass=NullPool)
    try:
        names = {index["name"] for index in sa.inspect(engine).get_indexes("fluxo_runs")}
        partial = engine.dialect.name in ("postgresql", "sqlite")
    finally:
        engine.dispose()

    assert "ix_fluxo_runs_queue_start_at" in names
    assert ("ix_fluxo_runs_admission" in names) is partial


def test_admit_takes_more_runs_than_one_statement_names(any_sql_url: str) -> None:
    store = sql.SQLStore(any_sql_url)
    ids = [f"r{i:03}" for i in range(300)]
    try:
        for run_id in ids:
            store.create_run(run_id, "wf", b"[]", now=T0, queue="q")

        admitted = store.admit([*ids, "missing"], now=T0 + 1)

        assert sorted(admitted) == ids
        assert store.queued_runs("q", now=T0 + 1, limit=500) == ([], None)
        assert {run.ready_at for run in store.get_runs(ids).values()} == {T0 + 1}
        assert store.admit(ids, now=T0 + 2) == []
    finally:
        store.close()


def test_a_purge_leaves_the_queue_records(any_sql_url: str) -> None:
    store = sql.SQLStore(any_sql_url)
    try:
        store.create_run("r1", "wf", b"[]", now=T0, queue="q")
        assert store.write_queue("q", 0, b"state") is True
        store.append("r1", 1, [history.WorkflowCancelled()], now=T0, status=RunStatus.CANCELLED)

        assert store.purge(finished_before=T0 + 1, statuses=[RunStatus.CANCELLED], limit=10) == 1

        assert store.read_queue("q") == (1, b"state")
    finally:
        store.close()
