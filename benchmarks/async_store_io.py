"""Store writes from asyncio code on PostgreSQL: the driver's async API, or sync calls on threads.

Fluxo's async API must never block the event loop on the store. There are two
ways to keep it free, and this program measures both, in one run, against the
same server and table:

* ``async``: psycopg's ``AsyncConnection``, one per concurrent writer (as an
  async store driver would use it);
* ``threads``: psycopg's sync ``Connection``, one per thread of a bounded pool,
  each write sent there with ``loop.run_in_executor`` (as ``fluxo.AsyncEngine``
  does around the sync store);
* ``fluxo``: ``fluxo.AsyncEngine.start`` (a run created: one INSERT + COMMIT
  through the sync store on the engine's threads), for the whole path.

Each does ``--writes`` INSERT+COMMIT from ``--tasks`` concurrent tasks, with
``--connections`` connections (threads). It prints writes a second and the
latency of one write (p50, p99), as ratios too: the machines are shared.

    python benchmarks/async_store_io.py [--tasks 64] [--connections 8] [--writes 4000]

PostgreSQL comes from ``FLUXO_BENCH_POSTGRES_URL`` (default: the local server,
database ``postgres``).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import fluxo

TABLE = "fluxo_bench_async_io"


@fluxo.workflow(name="bench.async_io")
def noop_workflow() -> None:
    return None


def dsn() -> str:
    url = os.environ.get(
        "FLUXO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    return url.replace("postgresql+psycopg://", "postgresql://")


def prepare() -> None:
    import psycopg

    with psycopg.connect(dsn(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(f"CREATE TABLE {TABLE} (id TEXT PRIMARY KEY, data BYTEA, at DOUBLE PRECISION)")


async def drive(
    tasks: int, writes: int, write: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    """Run ``writes`` calls of ``write`` from ``tasks`` tasks; seconds in all, and each latency."""
    latencies: list[float] = []
    counter = iter(range(writes))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await write(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return time.perf_counter() - started, latencies


async def with_async_driver(tasks: int, connections: int, writes: int) -> tuple[float, list[float]]:
    import psycopg

    pool: asyncio.Queue[psycopg.AsyncConnection[Any]] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await psycopg.AsyncConnection.connect(dsn()))

    async def write(i: int) -> None:
        conn = await pool.get()
        try:
            await conn.execute(
                f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (f"a-{i}", b"123", time.time())
            )
            await conn.commit()
        finally:
            pool.put_nowait(conn)

    try:
        return await drive(tasks, writes, write)
    finally:
        while not pool.empty():
            await pool.get_nowait().close()


async def with_threads(tasks: int, connections: int, writes: int) -> tuple[float, list[float]]:
    import psycopg

    local = threading.local()
    opened: list[psycopg.Connection[Any]] = []
    lock = threading.Lock()

    def insert(i: int) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(dsn())
            with lock:
                opened.append(conn)
        conn.execute(f"INSERT INTO {TABLE} VALUES (%s, %s, %s)", (f"t-{i}", b"123", time.time()))
        conn.commit()

    loop = asyncio.get_running_loop()
    with concurrent.futures.ThreadPoolExecutor(connections) as threads:

        async def write(i: int) -> None:
            await loop.run_in_executor(threads, insert, i)

        try:
            return await drive(tasks, writes, write)
        finally:
            for conn in opened:
                conn.close()


async def with_fluxo(tasks: int, connections: int, writes: int) -> tuple[float, list[float]]:
    url = "postgresql+psycopg://" + dsn().removeprefix("postgresql://")
    prefix = uuid.uuid4().hex[:8]
    async with fluxo.AsyncEngine(url, workflows=[noop_workflow], max_threads=connections) as engine:
        await engine.start(noop_workflow.options(id=f"{prefix}-warm"))

        async def write(i: int) -> None:
            await engine.start(noop_workflow.options(id=f"{prefix}-{i}"))

        return await drive(tasks, writes, write)


def report(label: str, seconds: float, latencies: list[float], base: float | None) -> float:
    rate = len(latencies) / seconds
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[int(0.99 * (len(ordered) - 1))] * 1000
    ratio = "" if base is None else f"  = {rate / base:.2f}x the async driver's rate"
    print(f"{label:<34}{rate:9.0f} writes/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms{ratio}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--writes", type=int, default=4000)
    args = parser.parse_args()
    prepare()
    print(
        f"{args.writes} INSERT+COMMIT from {args.tasks} tasks on {args.connections} "
        "connections (threads)\n"
    )
    runs = [
        ("psycopg AsyncConnection", with_async_driver),
        ("sync psycopg on a thread pool", with_threads),
        ("fluxo.AsyncEngine.start", with_fluxo),
    ]
    base: float | None = None
    for label, how in runs:
        prepare()
        seconds, latencies = asyncio.run(how(args.tasks, args.connections, args.writes))
        rate = report(label, seconds, latencies, base)
        base = rate if base is None else base


if __name__ == "__main__":
    main()
