"""Many async runs parked on a signal in one worker process, then all signalled.

For each store it starts one real ``fluxo worker`` process, starts ``--runs``
runs (10,000) of an ``async def`` workflow that waits for a signal and then
stamps the time in a step, waits until every run is ``waiting``, and signals
them all from this process with ``--senders`` threads (4): first at a steady
``--rate`` (200 signals a second), then, once those runs completed and another
``--runs`` wait, all at once, as fast as the threads can send. It reports:

* park: the time from the first start until every run waits;
* the worker process's peak resident memory (``VmHWM``), and its memory once
  every run waits;
* signal -> resume: for each run, from just before its ``engine.signal()`` to its
  step after the wait (p50, p99, worst);
* total: from the first signal until every run has completed, and the rates of
  signals sent and of runs resumed.

    python -m benchmarks.async_waiters [--stores postgres] [--runs 10000]
        [--concurrency 8] [--senders 4] [--rate 200]

A waiting run holds nothing in the worker: its wait is recorded, and it resumes
by replaying its history when its signal arrives (docs/async.md, "How async
workflows run"). So the worker's memory does not grow with the runs that wait.
At a steady rate the worker keeps up with, the latency is what one resume
costs; in a burst, signals queue, and the latency of the last is the burst's
size over the rate at which the worker resumes runs.

Server URLs come from FLUXO_BENCH_POSTGRES_URL, FLUXO_BENCH_REDIS_URL and
FLUXO_BENCH_MONGO_URL (defaults: the local servers; MongoDB: SecantusDB started
in this process).
"""

from __future__ import annotations

import argparse
import os
import queue
import tempfile
import threading
import time
from pathlib import Path

import fluxo
from benchmarks import _processes, scale_out


@fluxo.step(name="waiters.stamp")
async def stamp() -> float:
    return time.time()


@fluxo.workflow(name="waiters.parked")
async def parked(i: int) -> float:
    """Wait for a signal whose payload is the time it was sent; the seconds until resumed."""
    sent = await fluxo.wait_for_signal_async("go", type=float)
    return await stamp() - sent


@fluxo.workflow(name="waiters.ready")
async def ready() -> float:
    return await stamp()


WORKFLOWS = [parked, ready]


def make_engine() -> fluxo.Engine:
    """The engine the worker process loads."""
    return fluxo.Engine(os.environ["FLUXO_BENCH_URL"], workflows=WORKFLOWS)


def memory(pid: int) -> tuple[int, int]:
    """The process's resident memory now and at its peak, in bytes (Linux ``/proc``)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values["VmRSS"], values["VmHWM"]


def waiting(engine: fluxo.Engine) -> int:
    return engine.count_runs().get((parked.name, fluxo.RunStatus.WAITING), 0)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def send_all(engine: fluxo.Engine, run_ids: list[str], senders: int, rate: float) -> None:
    """Signal every run from ``senders`` threads, ``rate`` a second (0: at once).

    Each payload is the time just before its signal is sent.
    """
    work: queue.SimpleQueue[tuple[int, str] | None] = queue.SimpleQueue()
    for index, run_id in enumerate(run_ids):
        work.put((index, run_id))
    for _ in range(senders):
        work.put(None)
    began = time.perf_counter()

    def send() -> None:
        while (item := work.get()) is not None:
            index, run_id = item
            if rate > 0:
                time.sleep(max(began + index / rate - time.perf_counter(), 0.0))
            engine.signal(run_id, "go", time.time())

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def round_on(url: str, runs: int, concurrency: int, senders: int, rate: float) -> list[str]:
    lines = []
    with (
        _processes.worker_process(
            url,
            "benchmarks.async_waiters:make_engine",
            ready,
            *("--concurrency", str(concurrency), "--log-level", "WARNING"),
        ) as proc,
        fluxo.Engine(url, workflows=WORKFLOWS) as engine,
    ):
        rss_idle, _ = memory(proc.pid)
        lines.append(f"worker RSS idle: {rss_idle / 2**20:.0f} MB")
        for label, pace in ((f"at {rate:g}/s", rate), ("at once", 0.0)):
            started = time.perf_counter()
            handles = [engine.start(parked, i) for i in range(runs)]
            while waiting(engine) < runs:
                time.sleep(0.05)
            park = time.perf_counter() - started
            rss_parked, _ = memory(proc.pid)
            lines.append(
                f"park {runs}: {park:6.2f}s; worker RSS {rss_parked / 2**20:.0f} MB with "
                "every run waiting"
            )
            started = time.perf_counter()
            send_all(engine, [h.id for h in handles], senders, pace)
            sending = time.perf_counter() - started
            latencies = [handle.result(timeout=3600) for handle in handles]
            total = time.perf_counter() - started
            lines.append(
                f"signal {runs} {label}: sent in {sending:.2f}s ({runs / sending:,.0f}/s); "
                f"all completed in {total:.2f}s ({runs / total:,.0f} runs/s); "
                f"signal -> resume p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.0f} ms, "
                f"worst {max(latencies) * 1000:.0f} ms"
            )
        _, peak = memory(proc.pid)
        lines.append(f"worker peak RSS: {peak / 2**20:.0f} MB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="postgres")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--rate", type=float, default=200.0, help="signals a second, paced")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            print(f"{kind}:", flush=True)
            url = scale_out.fresh_url(kind, tmp)
            for line in round_on(url, args.runs, args.concurrency, args.senders, args.rate):
                print("  " + line, flush=True)


if __name__ == "__main__":
    main()
