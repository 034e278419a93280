"""What a child workflow costs, against a step, on each store.

For every store, in one run on one machine, a worker (4 slots, the default
sticky window) executes:

* ``steps``: a workflow calling one trivial step N times;
* ``children``: a workflow calling a trivial child workflow N times, one after
  the other; each child is a run of its own (created, claimed, one step,
  ended, its outcome sent to the parent, which is woken and records it);
* ``fan-out``: a workflow starting N children at once, then awaiting them all.

It prints the cost per call and its ratio to a step, which travels across
machines better than absolute times.

    python -m benchmarks.child_workflows [--calls 50] [--repeats 3]
        [--stores memory,sqlite,postgres]

PostgreSQL comes from ``FLUXO_BENCH_POSTGRES_URL`` (default: the local server,
database ``postgres``); a scratch database ``fluxo_bench_children`` is created
there. Redis (``FLUXO_BENCH_REDIS_URL``) and MongoDB (``FLUXO_BENCH_MONGO_URL``)
can be added to ``--stores`` too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import fluxo
from benchmarks.long_history import recreate_postgres_database, us


@fluxo.step(name="bench.child_noop")
def noop(i: int) -> int:
    return i


@fluxo.workflow(name="bench.leaf")
def leaf(i: int) -> int:
    return noop(i)


@fluxo.workflow(name="bench.step_loop")
def step_loop(n: int) -> int:
    return sum(noop(i) for i in range(n))


@fluxo.workflow(name="bench.child_loop")
def child_loop(n: int) -> int:
    return sum(leaf(i) for i in range(n))


@fluxo.workflow(name="bench.child_fan_out")
def child_fan_out(n: int) -> int:
    handles = [fluxo.start_child(leaf, i) for i in range(n)]
    return sum(h.result() for h in handles)


WORKFLOWS = [leaf, step_loop, child_loop, child_fan_out]


def per_call(engine: fluxo.Engine, wf: fluxo.Workflow[[int], int], n: int, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert engine.start(wf, n).result(timeout=600) == n * (n - 1) // 2
        samples.append((time.perf_counter() - started) / n)
    return statistics.median(samples)


def measure(label: str, url: str, n: int, repeats: int) -> tuple[float, float, float]:
    with fluxo.Engine(url, workflows=WORKFLOWS) as engine, engine.worker(concurrency=4):
        per_call(engine, child_loop, 5, 1)  # warm up: schema, connections, caches
        step = per_call(engine, step_loop, n, repeats)
        child = per_call(engine, child_loop, n, repeats)
        fan = per_call(engine, child_fan_out, n, repeats)
    print(
        f"{label:<9}{us(step)}{us(child)}{child / step:>9.1f}x{us(fan)}{fan / step:>9.1f}x",
        flush=True,
    )
    return step, child, fan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stores", default="memory,sqlite,postgres")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    pg_admin = os.environ.get(
        "FLUXO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    print(f"{args.calls} calls per run, repeats: {args.repeats} (medians), worker of 4 slots\n")
    print(
        f"{'store':<9}{'per step':>14}{'per child':>14}{'ratio':>10}"
        f"{'fan-out/child':>14}{'ratio':>10}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in stores:
            if name == "memory":
                url = "memory://"
            elif name == "sqlite":
                url = f"sqlite:///{tmp}/children.db"
            elif name == "postgres":
                url = recreate_postgres_database(pg_admin, "fluxo_bench_children")
            elif name == "redis":
                base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
                url = f"{base}?prefix=fluxo-bench-children-{os.getpid()}"
            elif name == "mongo":
                base = os.environ.get("FLUXO_BENCH_MONGO_URL", "mongodb://127.0.0.1:27017")
                url = f"{base.rstrip('/')}/fluxo_bench_children_{os.getpid()}"
            else:
                parser.error(f"unknown store {name!r}")
            measure(name, url, args.calls, args.repeats)


if __name__ == "__main__":
    main()
