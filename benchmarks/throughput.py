"""Workflows a second through one ``fluxo worker``, next to DBOS and the database's own limits.

For each store it starts ``--runs`` five-step workflows (1,000) at once, then
drains them with ONE ``fluxo worker`` process of ``--concurrency`` (8), timed from
starting the process until every run has completed, and audits the store after
(``scale_out.audit``: each run completed once, its history the five steps in
order, no lease left). On PostgreSQL it also measures, in the same run:

* DBOS, when ``import dbos`` works: the same load on the same server (a fresh
  database): ``--runs`` workflows of five trivial steps enqueued on a DBOS queue
  with ``worker_concurrency`` ``--concurrency``, polled every ``--dbos-poll``
  seconds (DBOS's default, 1 s, would let a worker start at most
  ``--concurrency`` workflows a second), then drained by one process started
  and timed as Fluxo's worker is; and the ratio Fluxo/DBOS;
* the server's raw rates for small rows through psycopg: INSERTs in batches of
  100 a transaction, and single INSERT+COMMITs from 8 connections at once; and
  the fraction of each that Fluxo's history writes reach (a run writes 7 events:
  started, five steps, completed);

and, on PostgreSQL and SQLite, the statements a run costs (``--count-runs``
runs, 100, in one in-process worker of ``--concurrency``), by kind (the SQL's
first word), for starting the runs and for executing them. These are counted
at the driver (a psycopg cursor class, SQLite's trace callback): the store runs
its statements on raw DB-API cursors, which SQLAlchemy's ``before_cursor_execute``
does not see. On PostgreSQL each statement is one round trip; SQLite has none.

    python -m benchmarks.throughput [--runs 1000] [--concurrency 8]
        [--stores sqlite,postgres,redis[,mysql,mongo]] [--count-runs 100]
        [--dbos-poll 0.01] [--no-dbos]

Server URLs come from FLUXO_BENCH_POSTGRES_URL, FLUXO_BENCH_MYSQL_URL,
FLUXO_BENCH_REDIS_URL and FLUXO_BENCH_MONGO_URL (defaults: the local servers;
MongoDB: SecantusDB started in this process).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

import fluxo
from benchmarks import scale_out

BATCH = 100
"""Rows a transaction in the raw batched-INSERT rate."""
CONNECTIONS = 8
"""Connections at once in the raw INSERT+COMMIT rate."""
RAW_SECONDS = 3.0
"""How long each raw rate is measured."""
TABLE = (
    "CREATE TABLE raw_events (run_id TEXT, seq INTEGER, kind TEXT, name TEXT, data BYTEA, "
    "created_at DOUBLE PRECISION, PRIMARY KEY (run_id, seq))"
)
INSERT = "INSERT INTO raw_events VALUES (%s, %s, %s, %s, %s, %s)"


def plain(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg and DBOS take it."""
    return url.replace("postgresql+psycopg://", "postgresql://")


# -- Fluxo ---------------------------------------------------------------------


def events_per_run(url: str) -> int:
    """The history events of one completed five-step run on ``url``."""
    with fluxo.Engine(url, workflows=[scale_out.five]) as engine:
        (run,) = engine.list_runs(workflow=scale_out.five, status="completed", limit=1)
        return len(engine.history(run.id))


# -- DBOS ----------------------------------------------------------------------


def dbos_seconds(url: str, runs: int, concurrency: int, poll: float) -> float:
    """Seconds for one DBOS process to drain ``runs`` enqueued five-step workflows."""
    import psycopg

    script = str(Path(__file__).with_name("_dbos_queue.py"))
    subprocess.run(
        [sys.executable, script, "enqueue", url, str(runs), str(concurrency), str(poll)],
        check=True,
        timeout=900,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, script, "drain", url], stdout=subprocess.DEVNULL)
        try:
            while True:
                done, failed = conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'SUCCESS'), "
                    "count(*) FILTER (WHERE status = 'ERROR') FROM dbos.workflow_status"
                ).fetchone() or (0, 0)
                if done + failed >= runs:
                    elapsed = time.perf_counter() - started
                    break
                if proc.poll() is not None or time.perf_counter() - started > 900:
                    raise SystemExit(f"DBOS drained {done} of {runs} workflows, then stopped")
                time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait(60)
    if failed:
        raise SystemExit(f"{failed} DBOS workflows failed")
    return elapsed


# -- the server's own limits ------------------------------------------------------


def row(thread: int, i: int) -> tuple[Any, ...]:
    return (f"t{thread}-{i // 1000}", i % 1000, "step_completed", "bench.add", b"123", time.time())


def raw_batched_rate(url: str) -> float:
    """Rows a second, INSERTed ``BATCH`` a transaction on one connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute(TABLE)
        conn.commit()
        rows = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < RAW_SECONDS:
            with conn.cursor() as cur:
                cur.executemany(INSERT, [row(0, rows + i) for i in range(BATCH)])
            conn.commit()
            rows += BATCH
        conn.execute("DROP TABLE raw_events")
        conn.commit()
    return rows / elapsed


def raw_single_rate(url: str) -> float:
    """Rows a second, one INSERT+COMMIT at a time on each of ``CONNECTIONS`` connections."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(TABLE)
    counts = [0] * CONNECTIONS
    barrier = threading.Barrier(CONNECTIONS + 1)

    def insert(thread: int) -> None:
        with psycopg.connect(url) as conn:
            barrier.wait()
            while time.perf_counter() < deadline:
                conn.execute(INSERT, row(thread, counts[thread]))
                conn.commit()
                counts[thread] += 1

    threads = [threading.Thread(target=insert, args=(i,)) for i in range(CONNECTIONS)]
    deadline = float("inf")
    for thread in threads:
        thread.start()
    deadline = time.perf_counter() + RAW_SECONDS
    started = time.perf_counter()
    barrier.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE raw_events")
    return sum(counts) / elapsed


# -- statements a run ------------------------------------------------------------


class Statements:
    """Statements seen at the driver, by kind (the SQL's first word) and in total."""

    def __init__(self) -> None:
        self.kinds: collections.Counter[str] = collections.Counter()
        self.round_trips = 0
        self._lock = threading.Lock()

    def note(self, sql: object, *, statements: int = 1) -> None:
        text = sql.decode() if isinstance(sql, bytes) else str(sql)
        words = text.split(None, 1)
        with self._lock:
            self.kinds[words[0].upper() if words else "?"] += statements
            self.round_trips += 1

    def take(self) -> tuple[collections.Counter[str], int]:
        """The counts so far; the counter starts again from zero."""
        with self._lock:
            kinds, trips = self.kinds, self.round_trips
            self.kinds, self.round_trips = collections.Counter(), 0
        return kinds, trips


@contextmanager
def counting(statements: Statements) -> Iterator[None]:
    """Count the statements of every database connection opened inside this block."""
    import psycopg

    class Cursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **options: Any) -> Any:
            statements.note(query)
            return super().execute(query, params, **options)

        def executemany(self, query: Any, params_seq: Any, **options: Any) -> Any:
            params_seq = list(params_seq)  # one pipeline: one round trip
            statements.note(query, statements=len(params_seq))
            return super().executemany(query, params_seq, **options)

    def connected(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.set_trace_callback(statements.note)
        elif isinstance(dbapi_connection, psycopg.Connection):
            dbapi_connection.cursor_factory = Cursor

    sa.event.listen(sa.pool.Pool, "connect", connected)
    try:
        yield
    finally:
        sa.event.remove(sa.pool.Pool, "connect", connected)


def per_run(kinds: collections.Counter[str], trips: int, runs: int, sqlite: bool) -> str:
    shown = ", ".join(f"{kind} {n / runs:.2f}" for kind, n in kinds.most_common())
    total = f"{sum(kinds.values()) / runs:5.2f} statements"
    if not sqlite:
        total += f", {trips / runs:5.2f} round trips"
    return f"{total} ({shown})"


def wait_completed(url: str, runs: int) -> None:
    """Wait until ``runs`` runs have completed, looking on a connection of its own.

    A plain DB-API connection, which ``counting`` does not count.
    """
    query = "SELECT count(*) FROM fluxo_runs WHERE status = 'completed'"
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(sa.make_url(url).database or "")
    else:
        import psycopg

        conn = psycopg.connect(plain(url), autocommit=True)
    try:
        started = time.perf_counter()
        while conn.execute(query).fetchone()[0] < runs:
            if time.perf_counter() - started > 600:
                raise SystemExit("the runs did not complete in 600 s")
            time.sleep(0.05)
    finally:
        conn.close()


def statements_per_run(url: str, runs: int, concurrency: int) -> list[str]:
    """Statements a run costs to start and to execute, in an in-process worker."""
    statements = Statements()
    with counting(statements), fluxo.Engine(url, workflows=[scale_out.five]) as engine:
        with engine.worker(concurrency=concurrency):  # warm up: schema, connections
            for handle in [engine.start(scale_out.five, i) for i in range(10)]:
                handle.result(timeout=120)
        statements.take()
        handles = [engine.start(scale_out.five, i) for i in range(runs)]
        started = statements.take()
        with engine.worker(concurrency=concurrency):
            wait_completed(url, runs + 10)
            executed = statements.take()
        verdict = scale_out.audit(engine, [h.id for h in handles])
    sqlite = url.startswith("sqlite")
    return [
        f"a run's statements ({runs} runs, audit {verdict}), start: "
        f"{per_run(*started, runs, sqlite)}",
        f"a run's statements, execute (one worker): {per_run(*executed, runs, sqlite)}",
    ]


# -- the report --------------------------------------------------------------------


def postgres_extras(
    url: str, fluxo_rate: float, args: argparse.Namespace, tmp: str
) -> Iterator[str]:
    """DBOS and the raw rates next to Fluxo's ``fluxo_rate`` workflows a second."""
    if not args.no_dbos and importlib.util.find_spec("dbos") is not None:
        dbos_url = plain(scale_out.fresh_url("postgres", tmp))
        seconds = dbos_seconds(dbos_url, args.runs, args.concurrency, args.dbos_poll)
        rate = args.runs / seconds
        yield (
            f"dbos:  {rate:8.1f} workflows/s (one process, queue worker_concurrency "
            f"{args.concurrency}, polled every {args.dbos_poll:g}s); "
            f"fluxo/dbos = {fluxo_rate / rate:.2f}x"
        )
    elif not args.no_dbos:
        yield "dbos: not installed (pip install dbos)"
    events = events_per_run(url)
    writes = fluxo_rate * events
    raw_url = plain(scale_out.fresh_url("postgres", tmp))
    batched = raw_batched_rate(raw_url)
    single = raw_single_rate(raw_url)
    yield (
        f"raw INSERT, {BATCH} rows a transaction: {batched:9,.0f} rows/s; fluxo's "
        f"{writes:,.0f} history events/s ({events} a run) are {writes / batched:.1%} of it"
    )
    yield (
        f"raw INSERT+COMMIT, {CONNECTIONS} connections: {single:9,.0f} rows/s; fluxo's "
        f"events are {writes / single:.1%} of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--count-runs", type=int, default=100, help="0: no statement counts")
    parser.add_argument("--dbos-poll", type=float, default=0.01, help="DBOS queue polling, s")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            print(
                f"{kind}: {args.runs} five-step workflows, one worker process of concurrency "
                f"{args.concurrency}",
                flush=True,
            )
            url = scale_out.fresh_url(kind, tmp)
            elapsed, verdict, working = scale_out.drain_timed(url, args.runs, 1, args.concurrency)
            rate = args.runs / elapsed
            print(
                f"  fluxo: {rate:8.1f} workflows/s ({5 * rate:,.0f} steps/s), audit {verdict}; "
                f"{args.runs / working:.1f} workflows/s from the first claim (the worker "
                "process's start left out)",
                flush=True,
            )
            if kind == "postgres":
                for line in postgres_extras(url, rate, args, tmp):
                    print("  " + line, flush=True)
            if kind in ("postgres", "sqlite") and args.count_runs:
                counted = scale_out.fresh_url(kind, tmp)
                for line in statements_per_run(counted, args.count_runs, args.concurrency):
                    print("  " + line, flush=True)


if __name__ == "__main__":
    main()
