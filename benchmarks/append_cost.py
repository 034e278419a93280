"""What one durable step costs in the SQL store, against the floor of its driver.

For each database: the time of ``SQLStore.append`` of one event (the call a
workflow step makes), with and without a status change, next to a raw
``INSERT`` + ``COMMIT`` of the same row through the same driver on one
connection (the floor the design's cost model names).

Run::

    .venv/bin/python benchmarks/append_cost.py                   # SQLite only
    .venv/bin/python benchmarks/append_cost.py --postgres postgresql://postgres@127.0.0.1/postgres
    .venv/bin/python benchmarks/append_cost.py --mysql mysql://root@127.0.0.1/test

Server databases get a scratch database created and dropped by the script.

"client CPU" is this process's CPU time per call, the part Fluxo adds to. On a
loopback connection the raw loop's wall time flatters the floor: back to back,
the server process never sleeps between statements, and any client work between
them (a pool checkout is enough) costs a scheduler wake-up on each side.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from fluxo import history
from fluxo.stores import sql

EVENT = history.StepCompleted("shop.charge", b'{"id": "rcpt-17", "cents": 4200}')


def timed(label: str, count: int, fn: Callable[[int], None]) -> float:
    for i in range(min(50, count)):  # warm up: pools, prepared statements
        fn(-1 - i)
    samples = []
    cpu = time.process_time()
    for i in range(count):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    cpu = (time.process_time() - cpu) / count * 1e6
    mean = statistics.fmean(samples) * 1e6
    median = statistics.median(samples) * 1e6
    print(f"  {label:<40} median {median:7.1f} us  mean {mean:7.1f} us  client CPU {cpu:6.1f} us")
    return median


def measure(url: str, count: int, rounds: int) -> None:
    store = sql.SQLStore(url)
    engine = store.engine
    print(f"{engine.url.render_as_string(hide_password=True)} ({count} calls per line)")
    store.create_run("bench-store", "wf", b"[]", now=0.0)
    store.create_run("bench-status", "wf", b"[]", now=0.0)
    store.create_run("bench-raw", "wf", b"[]", now=0.0)

    seqs = {"store": 1, "status": 1}

    def append(_: int) -> None:
        store.append("bench-store", seqs["store"], [EVENT], now=1.0)
        seqs["store"] += 1

    def append_status(_: int) -> None:
        store.append(
            "bench-status",
            seqs["status"],
            [EVENT],
            now=1.0,
            status=history.RunStatus.RUNNING,
            ready_at=1.0,
        )
        seqs["status"] += 1

    # The floor: the same row inserted by hand on one autocommit connection.
    raw = engine.raw_connection()
    cursor = raw.cursor()
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    insert = (
        "INSERT INTO fluxo_events (run_id, seq, kind, name, data, created_at) "
        f"VALUES ({', '.join([mark] * 6)})"
    )
    raw_seq = [1]

    def raw_insert(_: int) -> None:
        cursor.execute(insert, ("bench-raw", raw_seq[0], EVENT.kind, EVENT.name, EVENT.data, 1.0))
        raw_seq[0] += 1

    best: dict[str, float] = {}
    for round_ in range(rounds):  # interleaved rounds; the best median of each counts
        print(f" round {round_ + 1}")
        for label, fn in (
            ("raw INSERT + COMMIT (driver, autocommit)", raw_insert),
            ("SQLStore.append, 1 event", append),
            ("SQLStore.append, 1 event + status", append_status),
        ):
            median = timed(label, count, fn)
            best[label] = min(best.get(label, median), median)
    floor, plain, status = best.values()
    print(
        f"  best medians: floor {floor:.1f} us, append {plain:.1f} us, with status {status:.1f} us"
    )
    print(f"  append overhead over the floor: {plain - floor:+.1f} us")
    print(f"  append + status over the floor: {status - floor:+.1f} us")
    cursor.close()
    raw.close()
    store.close()


def scratch(server: str) -> tuple[str, Callable[[], None]]:
    url = sql.normalize_url(server)
    name = f"fluxo_bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    quote = '"' if url.get_backend_name() == "postgresql" else "`"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quote}{name}{quote}")

    def drop() -> None:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if quote == '"' else ""
            conn.exec_driver_sql(f"DROP DATABASE {quote}{name}{quote}{force}")
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=2000)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    parser.add_argument("--postgres", help="a PostgreSQL server URL")
    parser.add_argument("--mysql", help="a MySQL/MariaDB server URL")
    parser.add_argument("--no-sqlite", action="store_true")
    args = parser.parse_args()
    if not args.no_sqlite:
        with tempfile.TemporaryDirectory() as tmp:
            for sync in ("full", "normal"):
                measure(
                    f"sqlite:///{Path(tmp) / sync}.db?synchronous={sync}", args.count, args.rounds
                )
    for server in (args.postgres, args.mysql):
        if server:
            url, drop = scratch(server)
            try:
                measure(url, args.count, args.rounds)
            finally:
                drop()


if __name__ == "__main__":
    main()
