"""Whether a step costs more as a run's history grows, on each store.

For every store and every history length N (100, 1,000 and 10,000 by default),
in one run on one machine:

* ``live``: a workflow of N trivial sequential steps executed by ``engine.run``;
  the cost per step is the whole run divided by N. The target is that the cost
  per step at the longest length stays within 1.5x of the shortest.
* ``resume``: a workflow of N steps that then waits for a signal. Once it waits,
  the signal is sent and a worker resumes it: it claims the run, loads the
  history (``load``), replays the N recorded steps, takes the signal and
  finishes. ``replay/step`` is the time from the end of the load to the first
  write, divided by N: the executor's cost per recorded event. The target is
  the same 1.5x.
* ``loads``: how many times the resume read the run's history from the store
  (``Store.load``); it must be 1 whatever N is.

It prints ratios to the shortest length, which travel across machines better
than absolute times.

    python benchmarks/long_history.py [--sizes 100,1000,10000] [--repeats 3]
        [--stores memory,sqlite,postgres]

PostgreSQL comes from ``FLUXO_BENCH_POSTGRES_URL`` (default: the local server,
database ``postgres``); a scratch database ``fluxo_bench_history`` is created
there. Redis (``FLUXO_BENCH_REDIS_URL``) and MongoDB (``FLUXO_BENCH_MONGO_URL``)
can be added to ``--stores`` too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from typing import Any, NamedTuple

import fluxo


@fluxo.step(name="bench.noop")
def noop(i: int) -> int:
    return i


def _steps(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    return total


@fluxo.workflow(name="bench.long")
def long(n: int) -> int:
    return _steps(n)


@fluxo.workflow(name="bench.long_then_wait")
def long_then_wait(n: int) -> int:
    total = _steps(n)
    fluxo.wait_for_signal("go")
    return total


class CountingStore:
    """A store that forwards everything to another one, counting and timing history reads.

    It notes when the last ``load`` returned and when the first ``append`` after it
    began: between the two, the executor replays what it loaded.
    """

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.loads = 0
        self.load_seconds = 0.0
        self.loaded_at = 0.0
        self.first_append_at = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def load(self, run_id: str) -> Any:
        self.loads += 1
        started = time.perf_counter()
        state = self.inner.load(run_id)
        self.loaded_at = time.perf_counter()
        self.load_seconds += self.loaded_at - started
        self.first_append_at = 0.0
        return state

    def append(self, *args: Any, **kwargs: Any) -> Any:
        if not self.first_append_at:
            self.first_append_at = time.perf_counter()
        return self.inner.append(*args, **kwargs)


def live_per_step(engine: fluxo.Engine, n: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert engine.run(long, n) == n * (n - 1) // 2
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


class Resume(NamedTuple):
    total: float
    """Seconds from the worker's claim to the run's end (medians, like the rest)."""
    load: float
    """Seconds of the one read of the history."""
    replay: float
    """Seconds from the end of that read to the first write: replaying the history."""
    loads: int
    """The most reads of the history one resume made."""


def resume(engine: fluxo.Engine, store: CountingStore, n: int, repeats: int) -> Resume:
    """Resume a run that waits after n steps, ``repeats`` times."""
    worker = engine.worker(concurrency=1)
    totals, loads, replays = [], [], []
    most_loads = 0
    for _ in range(repeats):
        handle = engine.start(long_then_wait, n)
        assert worker.process_one() == 1  # live, until it waits for the signal
        assert handle.status() is fluxo.RunStatus.WAITING
        engine.signal(handle.id, "go")
        store.loads, store.load_seconds = 0, 0.0
        started = time.perf_counter()
        assert worker.process_one() == 1  # load, replay n steps, take the signal, finish
        totals.append(time.perf_counter() - started)
        loads.append(store.load_seconds)
        replays.append(store.first_append_at - store.loaded_at)
        most_loads = max(most_loads, store.loads)
        assert handle.result(timeout=0) == n * (n - 1) // 2
    median = statistics.median
    return Resume(median(totals), median(loads), median(replays), most_loads)


def measure(
    label: str, url: str, sizes: list[int], repeats: int
) -> list[tuple[str, int, float, float, int]]:
    store = CountingStore(fluxo.open_store(url))
    rows = []
    try:
        with fluxo.Engine(store, workflows=[long, long_then_wait]) as engine:  # type: ignore[arg-type]
            engine.run(long, 10)  # warm up: schema, connections, caches
            for n in sizes:
                live = live_per_step(engine, n, repeats)
                # Short resumes are noisy and cheap to set up: take more of them.
                r = resume(engine, store, n, max(repeats, 3000 // n))
                rows.append((label, n, live, r.replay / n, r.loads))
                ratio_live, ratio_replay = live / rows[0][2], (r.replay / n) / rows[0][3]
                print(
                    f"{label:<9}{n:>8}{us(live)}{ratio_live:>8.2f}x{ms(r.total)}{ms(r.load)}"
                    f"{us(r.replay / n)}{ratio_replay:>8.2f}x{r.loads:>7}",
                    flush=True,
                )
    finally:
        store.inner.close()
    return rows


def recreate_postgres_database(admin_url: str, name: str) -> str:
    import psycopg

    dsn = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0]
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")


def us(seconds: float) -> str:
    return f"{seconds * 1e6:11.1f} us"


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:10.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,postgres")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    pg_admin = os.environ.get(
        "FLUXO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    print(f"history lengths: {sizes}, repeats: {args.repeats} (medians)\n")
    print(
        f"{'store':<9}{'steps':>8}{'live/step':>14}{'ratio':>9}{'resume':>13}{'load':>13}"
        f"{'replay/step':>14}{'ratio':>9}{'loads':>7}"
    )
    summary: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in stores:
            if name == "memory":
                url = "memory://"
            elif name == "sqlite":
                url = f"sqlite:///{tmp}/history.db"
            elif name == "postgres":
                url = recreate_postgres_database(pg_admin, "fluxo_bench_history")
            elif name == "redis":
                base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
                url = f"{base}?prefix=fluxo-bench-history-{os.getpid()}"
            elif name == "mongo":
                base = os.environ.get("FLUXO_BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
                url = f"{base.rstrip('/')}/fluxo_bench_history_{os.getpid()}"
            else:
                parser.error(f"unknown store {name!r}")
            results = measure(name, url, sizes, args.repeats)
            shortest, longest = results[0], results[-1]
            summary.append(
                f"{name}: live {longest[2] / shortest[2]:.2f}x, "
                f"replay {longest[3] / shortest[3]:.2f}x, "
                f"loads per resume {max(row[4] for row in results)}"
            )
    print(f"\n{max(sizes)} steps against {min(sizes)} (target: <= 1.5x; 1 load per resume)")
    for line in summary:
        print(f"  {line}")


if __name__ == "__main__":
    main()
