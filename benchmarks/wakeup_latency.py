"""How fast an idle worker reacts, and how much it costs to sit idle.

For each store it measures, with a worker in another process (as in production)
and, for SQLite, also with the worker in the same process (an embedded app):

* signal -> step: from ``engine.signal()`` returning to the run's next step running;
* start -> step: from ``engine.start()`` returning to the run's first step running, and
  the same for a start made in the app's own transaction
  (``engine.in_transaction(conn)``), from its commit: the two should match;
* completion -> result: from the workflow's last step to ``handle.result()`` returning;
* timer lateness: how long after its fire time a ``fluxo.sleep`` resumes;
* idle CPU: the worker process's CPU time over 10 s with nothing to do.

    python benchmarks/wakeup_latency.py [--rounds 50] [--stores sqlite,postgres[,redis]]

Redis comes from ``FLUXO_BENCH_REDIS_URL`` (default: the local server, a key
prefix of its own); it has no transactional start, so that line is left out.

Medians and p99 are printed; no polling loop in Fluxo runs faster than once a second,
so anything well under a second here is a pushed wake-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

import fluxo
import fluxo.stores.sql


@fluxo.step(name="latency.clock")
def clock() -> float:
    return time.time()


@fluxo.workflow(name="latency.ping")
def ping(rounds: int) -> list[float]:
    """Wait for a signal, then stamp the time in a step; ``rounds`` times."""
    stamps = []
    for _ in range(rounds):
        fluxo.wait_for_signal("go")
        stamps.append(clock())
    return stamps


@fluxo.workflow(name="latency.done")
def done() -> float:
    return clock()


@fluxo.workflow(name="latency.nap")
def nap(seconds: float) -> float:
    fluxo.sleep(seconds)
    return clock()


WORKFLOWS = [ping, done, nap]


def make_engine() -> fluxo.Engine:
    """The engine a worker subprocess loads (``fluxo worker benchmarks.wakeup_latency:...``)."""
    return fluxo.Engine(os.environ["FLUXO_BENCH_URL"], workflows=WORKFLOWS)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, samples: list[float]) -> None:
    med = statistics.median(samples) * 1000
    p99 = percentile(samples, 0.99) * 1000
    print(f"  {label:<28} median {med:8.2f} ms   p99 {p99:8.2f} ms   (n={len(samples)})")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_waiting(engine: fluxo.Engine, run_id: str, count: int) -> None:
    """Wait until the run has started waiting for its ``count``-th signal."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        events = engine.history(run_id)
        waits = sum(isinstance(e, fluxo.history.SignalWaitStarted) for e in events)
        if waits >= count:
            return
        time.sleep(0.005)
    raise TimeoutError("the worker never reached the wait")


def measure(engine: fluxo.Engine, url: str, rounds: int) -> None:
    handle = engine.start(ping, rounds)
    sent = []
    for i in range(rounds):
        wait_until_waiting(engine, handle.id, i + 1)
        time.sleep(0.05)  # let the worker settle into its wait
        engine.signal(handle.id, "go")
        sent.append(time.time())
    stamps = handle.result(timeout=60)
    report("signal -> next step", [s - t for s, t in zip(stamps, sent, strict=True)])

    samples = []
    for _ in range(rounds):
        finished = engine.start(done).result(timeout=30)
        samples.append(time.time() - finished)
    report("completion -> result()", samples)

    plain, joined = [], []
    sql = url.startswith(("sqlite", "postgresql"))
    app_db = sa.create_engine(fluxo.stores.sql.normalize_url(url)) if sql else None
    for _ in range(rounds):  # interleaved, so both meet the same machine
        time.sleep(0.05)
        handle = engine.start(done)
        started = time.time()
        plain.append(handle.result(timeout=30) - started)
        if app_db is None:
            continue
        time.sleep(0.05)
        with app_db.connect() as conn:  # the app's own pool
            handle = engine.in_transaction(conn).start(done)
            conn.commit()
            committed = time.time()
        joined.append(handle.result(timeout=30) - committed)
    report("start -> first step", plain)
    if app_db is not None:
        app_db.dispose()
        report("transactional start -> step", joined)

    lateness = []
    for _ in range(max(rounds // 5, 5)):
        napping = engine.start(nap, 0.2)
        woke = napping.result(timeout=30)
        started = next(
            e for e in engine.history(napping.id) if isinstance(e, fluxo.history.TimerStarted)
        )
        lateness.append(woke - engine.codec.decode(started.data or b"", float))
    report("timer: fire time -> next step", lateness)


def run_store(label: str, url: str, rounds: int, in_process: bool) -> None:
    print(f"{label}:")
    engine = fluxo.Engine(url, workflows=WORKFLOWS)
    if in_process:
        with engine.worker(concurrency=4):
            measure(engine, url, rounds)
        engine.close()
        return
    env = dict(os.environ, FLUXO_BENCH_URL=url, PYTHONPATH=str(Path(__file__).parents[1]))
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("fluxo")),
            "worker",
            "benchmarks.wakeup_latency:make_engine",
            "--log-level",
            "WARNING",
        ],
        env=env,
        cwd=Path(__file__).parents[1],
    )
    try:
        measure(engine, url, rounds)
        time.sleep(1)
        before = cpu_seconds(worker.pid)
        time.sleep(10)
        used = cpu_seconds(worker.pid) - before
        print(
            f"  {'idle worker CPU over 10 s':<28} {used * 1000:8.1f} ms ({used / 10:.2%} of a core)"
        )
    finally:
        worker.terminate()
        worker.wait(30)
        engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    pg = os.environ.get(
        "FLUXO_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if "sqlite" in stores:
            run_store("sqlite, worker in this process", f"sqlite:///{tmp}/a.db", args.rounds, True)
            run_store(
                "sqlite, worker in another process", f"sqlite:///{tmp}/b.db", args.rounds, False
            )
        if "postgres" in stores:
            import psycopg

            admin = pg.replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute('DROP DATABASE IF EXISTS "fluxo_latency" WITH (FORCE)')
                conn.execute('CREATE DATABASE "fluxo_latency"')
            url = pg.rsplit("/", 1)[0] + "/fluxo_latency"
            run_store("postgres, worker in another process", url, args.rounds, False)
        if "redis" in stores:
            base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
            prefix = f"fluxo-latency-{os.getpid()}"
            url = f"{base}{'&' if '?' in base else '?'}prefix={prefix}"
            try:
                run_store("redis, worker in another process", url, args.rounds, False)
            finally:
                import redis

                client = redis.Redis.from_url(base)
                for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                    client.delete(key)
                client.close()


if __name__ == "__main__":
    main()
