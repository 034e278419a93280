"""How fast ``engine.purge`` deletes finished runs, and how long its longest batch holds on.

Fills a scratch store with ``--runs`` finished runs of ``--events`` events and
``--signals`` signals each (written straight into the tables on the SQL stores,
so filling is quick), plus one unfinished run in ten, which must survive; then
times ``engine.purge(older_than=..., batch=--batch)`` and prints:

* the runs and the rows (runs, events and signals) deleted per second;
* each batch's time: the median and the longest (on PostgreSQL a batch is one
  statement, so the longest batch is the longest any row lock was held).

    python benchmarks/purge.py [--runs 100000] [--events 4] [--signals 1]
        [--batch 1000] [--stores postgres,sqlite]

PostgreSQL comes from ``FLUXO_BENCH_POSTGRES_URL`` (default: the local server,
database ``postgres``); a scratch database ``fluxo_bench_purge`` is created
there. MySQL (``FLUXO_BENCH_MYSQL_URL``), Redis (``FLUXO_BENCH_REDIS_URL``) and
MongoDB (``FLUXO_BENCH_MONGO_URL``) can be added to ``--stores`` too; they are
filled through the store (slower: use fewer runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

import fluxo
from fluxo import history
from fluxo.stores import sql
from fluxo.stores.sql import _migrate, _schema

T0 = 1_700_000_000.0
DAY = 86_400.0
CHUNK = 5_000
STEP = history.StepCompleted("bench.step", b'{"ok": true, "n": 12345}')


def scratch_database(admin_url: str, name: str) -> str:
    """A new empty database on the server of ``admin_url``; returns its URL."""
    admin = sa.create_engine(sql.normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if admin.dialect.name == "postgresql":
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            else:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` COLLATE utf8mb4_bin")
    finally:
        admin.dispose()
    return sql.normalize_url(admin_url).set(database=name).render_as_string(hide_password=False)


def fill_sql(url: str, runs: int, events: int, signals: int) -> None:
    """Write the runs straight into the tables, as the store would have."""
    _migrate.upgrade(url)
    engine = sa.create_engine(sql.normalize_url(url))
    binary = engine.dialect.name in ("mysql", "mariadb")  # identifiers are VARBINARY there

    def key(text: str) -> str | bytes:
        return text.encode() if binary else text

    try:
        for start in range(0, runs, CHUNK):
            numbers = range(start, min(start + CHUNK, runs))
            run_rows, event_rows, signal_rows = [], [], []
            for i in numbers:
                live = i % 10 == 9
                run_rows.append(
                    {
                        "id": key(f"run-{i}"),
                        "workflow": key("bench.work"),
                        "status": "waiting" if live else "completed",
                        "created_at": T0 + i / 1000,
                        "updated_at": T0 + i / 1000 + 1,
                        "ready_at": None,
                        "lease_owner": None,
                        "lease_until": None,
                        "cancel_requested": False,
                        "wake_requested": False,
                        "deadline": None,
                        "parent": None,
                    }
                )
                kinds = ["workflow_started", *(["step_completed"] * (events - 2))]
                kinds.append("value_recorded" if live else "workflow_completed")
                for seq, kind in enumerate(kinds):
                    event_rows.append(
                        {
                            "run_id": key(f"run-{i}"),
                            "seq": seq,
                            "kind": kind,
                            "name": "bench.step",
                            "data": STEP.data,
                            "created_at": T0 + i / 1000,
                        }
                    )
                for n in range(signals):
                    signal_rows.append(
                        {
                            "run_id": key(f"run-{i}"),
                            "name": f"signal-{n}",
                            "payload": b"1",
                            "sent_at": T0 + i / 1000,
                            "dedupe_key": None,
                        }
                    )
            with engine.begin() as conn:
                conn.execute(_schema.runs.insert(), run_rows)
                conn.execute(_schema.events.insert(), event_rows)
                if signal_rows:
                    conn.execute(_schema.signals.insert(), signal_rows)
    finally:
        engine.dispose()


def fill_store(store: fluxo.Store, runs: int, events: int, signals: int) -> None:
    """Create the runs through the store (Redis, MongoDB)."""
    for i in range(runs):
        run_id, at = f"run-{i}", T0 + i / 1000
        store.create_run(run_id, "bench.work", b"[]", now=at)
        for n in range(signals):
            store.send_signal(run_id, f"signal-{n}", b"1", now=at)
        steps = [STEP] * (events - 2)
        if i % 10 == 9:
            store.append(
                run_id,
                1,
                [*steps, history.ValueRecorded("timer", b"{}")],
                now=at,
                status=history.RunStatus.WAITING,
            )
        else:
            store.append(
                run_id,
                1,
                [*steps, history.WorkflowCompleted("", b"1")],
                now=at + 1,
                status=history.RunStatus.COMPLETED,
            )


def count_rows(url: str) -> int:
    engine = sa.create_engine(sql.normalize_url(url))
    try:
        with engine.connect() as conn:
            return sum(
                conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
                for table in (_schema.runs, _schema.events, _schema.signals)
            )
    finally:
        engine.dispose()


def measure(name: str, url: str, args: argparse.Namespace) -> None:
    is_sql = name in ("postgres", "sqlite", "mysql")
    started = time.perf_counter()
    if is_sql:
        fill_sql(url, args.runs, args.events, args.signals)
    store = fluxo.open_store(url)
    if not is_sql:
        fill_store(store, args.runs, args.events, args.signals)
    filled = time.perf_counter() - started
    rows_before = count_rows(url) if is_sql else None

    batches: list[float] = []
    purge = store.purge

    def timed(**options: Any) -> int:
        begun = time.perf_counter()
        deleted = purge(**options)
        batches.append(time.perf_counter() - begun)
        return deleted

    store.purge = timed  # type: ignore[method-assign]
    engine = fluxo.Engine(store, workflows=[], clock=lambda: T0 + 30 * DAY)
    begun = time.perf_counter()
    deleted = engine.purge(older_than=timedelta(days=1), batch=args.batch)
    elapsed = time.perf_counter() - begun
    left = len(engine.list_runs(limit=args.runs + 1))
    engine.close()
    store.close()

    if rows_before is not None:
        rows = rows_before - count_rows(url)
    else:
        rows = deleted * (1 + args.events + args.signals)
    expected = args.runs - args.runs // 10
    assert deleted == expected, (deleted, expected)
    assert left == args.runs // 10, left
    print(
        f"{name:<9}{deleted:>9,}{rows:>11,}{elapsed:>9.2f} s{deleted / elapsed:>11,.0f}"
        f"{rows / elapsed:>12,.0f}{len(batches):>9}"
        f"{statistics.median(batches) * 1e3:>10.1f} ms{max(batches) * 1e3:>10.1f} ms"
        f"   (filled in {filled:.0f} s; {left:,} unfinished runs kept)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=4, help="events per run (at least 2)")
    parser.add_argument("--signals", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--stores", default="postgres")
    args = parser.parse_args()
    if args.events < 2:
        parser.error("--events must be at least 2 (a start and an end)")
    print(
        f"{args.runs:,} runs ({args.runs // 10:,} of them unfinished), {args.events} events "
        f"and {args.signals} signal(s) each; batches of {args.batch:,}\n"
    )
    print(
        f"{'store':<9}{'runs':>9}{'rows':>11}{'time':>11}{'runs/s':>11}{'rows/s':>12}"
        f"{'batches':>9}{'median':>13}{'longest':>13}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in (s.strip() for s in args.stores.split(",") if s.strip()):
            if name == "sqlite":
                url = f"sqlite:///{tmp}/purge.db"
            elif name == "postgres":
                url = scratch_database(
                    os.environ.get(
                        "FLUXO_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                    ),
                    "fluxo_bench_purge",
                )
            elif name == "mysql":
                url = scratch_database(
                    os.environ.get("FLUXO_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1/test"),
                    "fluxo_bench_purge",
                )
            elif name == "redis":
                base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
                url = f"{base}?prefix=fluxo-bench-purge-{os.getpid()}"
            elif name == "mongo":
                base = os.environ.get("FLUXO_BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
                url = f"{base.rstrip('/')}/fluxo_bench_purge_{os.getpid()}"
            else:
                parser.error(f"unknown store {name!r}")
            measure(name, url, args)


if __name__ == "__main__":
    main()
