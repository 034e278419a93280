"""Per-step cost of a Fluxo workflow on each store, next to the raw cost of the store.

For every store it measures, in one run on one machine:

* ``fluxo``: a workflow of N trivial steps executed by ``engine.run``; the cost
  per step is the whole run divided by N (start and finish are amortized). On
  the memory store and PostgreSQL, the same as an ``async def`` workflow of
  ``async def`` steps, next to the sync one.
* ``raw``: one INSERT + COMMIT of a comparable row through the same driver on the
  same database, the floor for any durable step.
* ``dbos``: the same workflow written for DBOS, on the same SQLite file directory
  or the same PostgreSQL server, when ``dbos`` is installed (``pip install dbos``).
* ``observers`` (memory store): the same workflow with no observer, with
  ``fluxo.observe.BasicMetrics`` and with the OpenTelemetry observer (an SDK
  tracer provider whose exporter drops the spans, when ``opentelemetry-sdk`` is
  installed), each timed in turns with no observer (paired repeats, so that the
  machine's drift hits both alike); a ratio is the median of the pairs' ratios.

It prints ratios, which travel across machines better than absolute times.

    python benchmarks/step_overhead.py [--steps 500] [--repeats 5] [--stores memory,sqlite,postgres]

PostgreSQL comes from ``FLUXO_BENCH_POSTGRES_URL`` (default: the local server,
database ``postgres``); a scratch database ``fluxo_bench`` is created there.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fluxo


@fluxo.step(name="bench.noop")
def noop(i: int) -> int:
    return i


@fluxo.workflow(name="bench.many")
def many(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    return total


@fluxo.step(name="bench.async_noop")
async def async_noop(i: int) -> int:
    return i


@fluxo.workflow(name="bench.async_many")
async def async_many(n: int) -> int:
    total = 0
    for i in range(n):
        total += await async_noop(i)
    return total


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def fluxo_per_step(url: str, steps: int, repeats: int, workflow: Any = many) -> float:
    with fluxo.Engine(url, workflows=[workflow]) as engine:
        engine.run(workflow, 10)  # warm up: schema, connections, caches
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            assert engine.run(workflow, steps) == steps * (steps - 1) // 2
            samples.append((time.perf_counter() - started) / steps)
    return median(samples)


def otel_observer() -> Any | None:
    """The OpenTelemetry observer on a provider that exports to nowhere, if installed."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        from fluxo.contrib.otel import OpenTelemetryObserver
    except ImportError:
        return None

    class Dropping(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropping()))
    observer = OpenTelemetryObserver(tracer_provider=provider)
    observer.provider = provider  # type: ignore[attr-defined]  # (to flush between samples)
    return observer


def paired(setup: Any, steps: int, repeats: int, after: Any = None) -> tuple[float, float]:
    """Per-step cost with observers ``setup()``, and its ratio to no observer.

    Each repeat times both on fresh engines after a full garbage collection, in
    turns (each goes first as often), so that neither the machine's drift nor the
    garbage one leaves behind is charged to the other; ``after`` runs after each
    sample (to flush span exports, say). The ratio is the median of the repeats'
    own ratios, the cost a median too.
    """
    setups = {"off": list, "on": setup}
    samples: dict[str, list[float]] = {"off": [], "on": []}
    for repeat in range(repeats):
        for name in ("off", "on") if repeat % 2 else ("on", "off"):
            with fluxo.Engine("memory://", workflows=[many], observers=setups[name]()) as engine:
                engine.run(many, 10)  # warm up
                gc.collect()
                started = time.perf_counter()
                engine.run(many, steps)
                samples[name].append((time.perf_counter() - started) / steps)
            if after is not None:
                after()
    ratios = [on / off for on, off in zip(samples["on"], samples["off"], strict=True)]
    return median(samples["on"]), median(ratios)


def observer_costs(steps: int, repeats: int) -> dict[str, float]:
    """Per-step cost on the memory store with no observer, BasicMetrics, OpenTelemetry."""
    costs: dict[str, float] = {}
    costs["basic_metrics"], costs["basic_metrics_ratio"] = paired(
        lambda: [fluxo.observe.BasicMetrics()], steps, repeats
    )
    otel = otel_observer()
    if otel is not None:
        costs["otel"], costs["otel_ratio"] = paired(
            lambda: [otel], steps, max(repeats // 4, 5), after=otel.provider.force_flush
        )
    return costs


PAYLOAD = b"123"


def raw_sqlite_per_insert(path: str, inserts: int, repeats: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS raw_events (run_id TEXT, seq INTEGER, kind TEXT, name TEXT, "
        "data BLOB, created_at REAL, PRIMARY KEY (run_id, seq))"
    )
    samples = []
    for r in range(repeats):
        started = time.perf_counter()
        for i in range(inserts):
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO raw_events VALUES (?, ?, ?, ?, ?, ?)",
                (f"r{r}", i, "step_completed", "bench.noop", PAYLOAD, time.time()),
            )
            conn.execute("COMMIT")
        samples.append((time.perf_counter() - started) / inserts)
    conn.close()
    return median(samples)


def raw_postgres_per_insert(url: str, inserts: int, repeats: int) -> float:
    import psycopg

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS raw_events (run_id TEXT, seq INTEGER, kind TEXT, "
            "name TEXT, data BYTEA, created_at DOUBLE PRECISION, PRIMARY KEY (run_id, seq))"
        )
        conn.execute("TRUNCATE raw_events")
        conn.commit()
        samples = []
        for r in range(repeats):
            started = time.perf_counter()
            for i in range(inserts):
                conn.execute(
                    "INSERT INTO raw_events VALUES (%s, %s, %s, %s, %s, %s)",
                    (f"r{r}", i, "step_completed", "bench.noop", PAYLOAD, time.time()),
                )
                conn.commit()
            samples.append((time.perf_counter() - started) / inserts)
        conn.execute("DROP TABLE raw_events")
        conn.commit()
    return median(samples)


def raw_redis_per_op(url: str, inserts: int, repeats: int) -> float:
    """One RPUSH round trip: the floor for a durable step on Redis."""
    import redis
    import redis.cluster

    client: Any = redis.Redis.from_url(url.split("?", 1)[0])
    if client.info("cluster").get("cluster_enabled"):
        client.close()
        client = redis.cluster.RedisCluster.from_url(url.split("?", 1)[0])
    key = "fluxo-bench:raw"
    samples = []
    for _ in range(repeats):
        client.delete(key)
        started = time.perf_counter()
        for _ in range(inserts):
            client.rpush(key, PAYLOAD)
        samples.append((time.perf_counter() - started) / inserts)
    client.delete(key)
    client.close()
    return median(samples)


def raw_mongo_per_op(url: str, inserts: int, repeats: int) -> float:
    """One insert_one: the floor for a durable step on MongoDB."""
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(url)
    collection = client.get_default_database()["raw_events"]
    samples = []
    for r in range(repeats):
        started = time.perf_counter()
        for i in range(inserts):
            collection.insert_one({"run_id": f"r{r}", "seq": i, "data": PAYLOAD})
        samples.append((time.perf_counter() - started) / inserts)
    client.close()
    return median(samples)


def start_secantus(path: str) -> str:
    """SecantusDB (MongoDB's wire protocol; a test-only dependency) in this process."""
    from secantus import SecantusDBServer  # type: ignore[import-untyped]

    server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=path)
    server.start()
    host, port = server.address
    return f"mongodb://{host}:{port}"


def dbos_per_step(url: str, steps: int, repeats: int) -> float | None:
    if importlib.util.find_spec("dbos") is None:
        return None
    script = Path(__file__).with_name("_dbos_steps.py")
    done = subprocess.run(
        [sys.executable, str(script), url, str(steps), str(repeats)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if done.returncode != 0:
        print(f"  (dbos failed: {done.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    per_step: float = json.loads(done.stdout.strip().splitlines()[-1])["per_step"]
    return per_step


def recreate_postgres_database(admin_url: str, name: str) -> str:
    import psycopg

    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0]
    return f"{base}/{name}"


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.1f} us"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stores", default="memory,sqlite,postgres,redis,mongo")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS comparison")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    pg_admin = os.environ.get(
        "FLUXO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    rows: list[tuple[str, str, str]] = []

    def line(label: str, value: float | None, note: str = "") -> None:
        shown = us(value) if value is not None else "        n/a"
        rows.append((label, shown, note))
        print(f"{label:<34}{shown}  {note}", flush=True)

    print(f"steps per workflow: {args.steps}, repeats: {args.repeats} (medians)\n")
    with tempfile.TemporaryDirectory() as tmp:
        if "memory" in stores:
            mem = fluxo_per_step("memory://", args.steps, args.repeats)
            line("memory: fluxo per step", mem, "(engine overhead; target <= 20 us)")
            amem = fluxo_per_step("memory://", args.steps, args.repeats, async_many)
            line("memory: async workflow per step", amem, f"= {amem / mem:.2f}x the sync one")
            costs = observer_costs(args.steps, max(args.repeats, 9))
            basic = costs["basic_metrics"]
            ratio = costs["basic_metrics_ratio"]
            line("memory: BasicMetrics on", basic, f"= {ratio:.3f}x off (target <= 1.05x)")
            if "otel" in costs:
                line("memory: OpenTelemetry on", costs["otel"], f"= {costs['otel_ratio']:.3f}x off")
            else:
                line(
                    "memory: OpenTelemetry on",
                    None,
                    "(pip install 'fluxo[otel]' opentelemetry-sdk)",
                )
        if "sqlite" in stores:
            f = fluxo_per_step(f"sqlite:///{tmp}/fluxo.db", args.steps, args.repeats)
            raw = raw_sqlite_per_insert(f"{tmp}/raw.db", args.steps, args.repeats)
            line("sqlite: raw INSERT+COMMIT", raw, "(WAL, synchronous=FULL)")
            line("sqlite: fluxo per step", f, f"= {f / raw:.2f}x raw (target <= 2x)")
            if not args.no_dbos:
                d = dbos_per_step(f"sqlite:///{tmp}/dbos.sqlite", args.steps, args.repeats)
                if d is not None:
                    line("sqlite: dbos per step", d, f"= {d / f:.2f}x fluxo")
        if "postgres" in stores:
            url = recreate_postgres_database(pg_admin, "fluxo_bench")
            f = fluxo_per_step(
                url.replace("postgresql://", "postgresql+psycopg://"), args.steps, args.repeats
            )
            raw = raw_postgres_per_insert(url, args.steps, args.repeats)
            line("postgres: raw INSERT+COMMIT", raw, "(psycopg, same database)")
            line("postgres: fluxo per step", f, f"= {f / raw:.2f}x raw (target <= 1.5x)")
            af = fluxo_per_step(
                url.replace("postgresql://", "postgresql+psycopg://"),
                args.steps,
                args.repeats,
                async_many,
            )
            line("postgres: async workflow per step", af, f"= {af / f:.2f}x the sync one")
            if not args.no_dbos:
                dbos_url = recreate_postgres_database(pg_admin, "fluxo_bench_dbos")
                d = dbos_per_step(dbos_url, args.steps, args.repeats)
                if d is not None:
                    line("postgres: dbos per step", d, f"= {d / f:.2f}x fluxo (target >= 4x)")
        if "redis" in stores:
            base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
            f = fluxo_per_step(f"{base}?prefix=fluxo-bench-{os.getpid()}", args.steps, args.repeats)
            raw = raw_redis_per_op(base, args.steps, args.repeats)
            line("redis: raw RPUSH", raw, "(redis-py, same server)")
            line("redis: fluxo per step", f, f"= {f / raw:.2f}x raw")
        if "mongo" in stores:
            base = os.environ.get("FLUXO_BENCH_MONGO_URL") or start_secantus(f"{tmp}/secantus")
            f = fluxo_per_step(f"{base.rstrip('/')}/fluxo_bench", args.steps, args.repeats)
            raw = raw_mongo_per_op(f"{base.rstrip('/')}/fluxo_bench_raw", args.steps, args.repeats)
            line("mongo: raw insert_one", raw, "(pymongo, same server)")
            line("mongo: fluxo per step", f, f"= {f / raw:.2f}x raw")


if __name__ == "__main__":
    main()
