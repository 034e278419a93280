"""Throughput with 1, 2 and 4 worker processes sharing one store, and a correctness audit.

For each durable store it starts N five-step workflows (2,000 by default), then
starts 1, 2 or 4 ``fluxo worker`` processes and times how long they take to drain
them all. After each round it checks, from the store itself, that

* every run completed, exactly once (one ``workflow_completed`` event);
* its history is the five steps in order, with no position recorded twice;
* no run is left claimed (no lease owner).

    python benchmarks/scale_out.py [--runs 2000] [--workers 1,2,4]
        [--stores sqlite,postgres,mysql,redis,mongo] [--concurrency 4]

Server URLs come from FLUXO_BENCH_POSTGRES_URL, FLUXO_BENCH_MYSQL_URL,
FLUXO_BENCH_REDIS_URL and FLUXO_BENCH_MONGO_URL (defaults: the local servers).
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fluxo


@fluxo.step(name="scale.add")
def add(x: int, y: int) -> int:
    return x + y


@fluxo.workflow(name="scale.five")
def five(x: int) -> int:
    for i in range(5):
        x = add(x, i)
    return x


def make_engine() -> fluxo.Engine:
    """The engine each worker process loads."""
    return fluxo.Engine(os.environ["FLUXO_BENCH_URL"], workflows=[five])


def fresh_url(kind: str, tmp: str) -> str:
    tag = secrets.token_hex(4)
    if kind == "sqlite":
        return f"sqlite:///{tmp}/scale-{tag}.db"
    if kind == "postgres":
        import psycopg

        admin = os.environ.get(
            "FLUXO_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ).replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "fluxo_scale_{tag}"')
        return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + (
            f"/fluxo_scale_{tag}"
        )
    if kind == "mysql":
        import pymysql

        conn = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
        conn.cursor().execute(f"CREATE DATABASE fluxo_scale_{tag}")
        conn.close()
        base = os.environ.get("FLUXO_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
        return f"{base.rsplit('/', 1)[0] if base.count('/') > 2 else base}/fluxo_scale_{tag}"
    if kind == "redis":
        base = os.environ.get("FLUXO_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        return f"{base}?prefix=fluxoscale-{tag}"
    if kind == "mongo":
        base = os.environ.get("FLUXO_BENCH_MONGO_URL") or _secantus(tmp)
        return f"{base.rstrip('/')}/fluxo_scale_{tag}"
    raise SystemExit(f"unknown store {kind!r}")


_SECANTUS: list[object] = []


def _secantus(tmp: str) -> str:
    """Start SecantusDB (MongoDB's wire protocol, a test-only dependency) in this process."""
    from secantus import SecantusDBServer  # type: ignore[import-untyped]

    if not _SECANTUS:
        server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=f"{tmp}/secantus")
        server.start()
        _SECANTUS.append(server)
    host, port = _SECANTUS[0].address  # type: ignore[attr-defined]
    return f"mongodb://{host}:{port}"


def audit(engine: fluxo.Engine, run_ids: list[str]) -> str:
    problems = 0
    for run_id in run_ids:
        state = engine.store.load(run_id)
        kinds = [e.kind for e in state.events]
        expected = ["workflow_started", *["step_completed"] * 5, "workflow_completed"]
        if state.run.status is not fluxo.RunStatus.COMPLETED or kinds != expected:
            problems += 1
        if state.run.lease_owner is not None:
            problems += 1
    return "ok" if problems == 0 else f"{problems} PROBLEMS"


def round_trip(url: str, runs: int, workers: int, concurrency: int) -> None:
    elapsed, verdict = drain(url, runs, workers, concurrency)
    print(
        f"  {workers} worker(s): {runs / elapsed:8.1f} workflows/s  "
        f"{5 * runs / elapsed:9.1f} steps/s   audit: {verdict}",
        flush=True,
    )


def drain(url: str, runs: int, workers: int, concurrency: int) -> tuple[float, str]:
    """Start ``runs`` five-step workflows, drain them with ``workers`` processes.

    Returns the seconds from starting the worker processes until every run has
    completed, and the audit's verdict. :func:`drain_timed` also gives the seconds
    from the first run's claim (the workers' start left out).
    """
    elapsed, verdict, _ = drain_timed(url, runs, workers, concurrency)
    return elapsed, verdict


def drain_timed(url: str, runs: int, workers: int, concurrency: int) -> tuple[float, str, float]:
    """:func:`drain`, and the seconds from the first run's claim until the last completed."""
    with fluxo.Engine(url, workflows=[five]) as engine:
        handles = [engine.start(five, i) for i in range(runs)]
        env = dict(os.environ, FLUXO_BENCH_URL=url, PYTHONPATH=str(Path(__file__).parents[1]))
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("fluxo")),
                    "worker",
                    "benchmarks.scale_out:make_engine",
                    "--concurrency",
                    str(concurrency),
                    "--log-level",
                    "WARNING",
                ],
                env=env,
                cwd=Path(__file__).parents[1],
            )
            for _ in range(workers)
        ]
        try:
            first = handles[0].id  # the oldest: claimed first
            while engine.get_run(first).status is fluxo.RunStatus.PENDING:
                time.sleep(0.002)
            claimed = time.perf_counter()
            for i, handle in enumerate(handles):
                assert handle.result(timeout=600) == i + 10
            finished = time.perf_counter()
            elapsed = finished - started
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(60)
        verdict = audit(engine, [h.id for h in handles])
    return elapsed, verdict, finished - claimed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--stores", default="sqlite,postgres,mysql,redis,mongo")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            print(f"{kind}: {args.runs} five-step workflows")
            for workers in counts:
                round_trip(fresh_url(kind, tmp), args.runs, workers, args.concurrency)


if __name__ == "__main__":
    main()
