"""Bursts of waiting runs, signals to many runs at once, and how fast a cancel lands.

For each store, with one real ``fluxo worker`` process (default ``--sticky 5``
unless ``--sticky`` says otherwise), it measures:

* park: ``--runs`` runs (50) started at once, each recording a step and then
  waiting for a signal, against one worker of ``--concurrency`` (4): the time
  from the first start until every run is ``waiting``;
* signal: 12 runs, parked in a wait for a signal, against a worker of
  concurrency 2, signalled at once: the time until the last signal is consumed
  (each run then records a step and waits for a second signal, which it holds);
* cancel: a run recording a step every 20 ms, cancelled with ``engine.cancel``:
  the time until the run is ``cancelled``, executed by the worker process
  (``--lease 30``) and by ``engine.run`` in this process (five rounds each,
  median and worst).

While the park and signal rounds run it samples the store every 20 ms and
reports the most runs ever ``running`` (leased) at once, which a worker should
keep within its concurrency.

    python -m benchmarks.burst [--stores sqlite,postgres,redis,mongo] [--runs 50]
        [--concurrency 4] [--sticky 5]

Server URLs come from FLUXO_BENCH_POSTGRES_URL, FLUXO_BENCH_REDIS_URL and
FLUXO_BENCH_MONGO_URL (defaults: the local servers; MongoDB: SecantusDB started
in this process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator

import fluxo
from benchmarks import _processes, scale_out

SIGNALLED = 12
"""Runs signalled at once in the signal round."""
CANCEL_ROUNDS = 5


@fluxo.step(name="burst.note")
def note(value: int) -> int:
    return value


@fluxo.workflow(name="burst.parked")
def parked(i: int) -> int:
    """Record a step, wait for a signal, record another step."""
    note(i)
    return note(fluxo.wait_for_signal("go", type=int))


@fluxo.workflow(name="burst.twice")
def twice(i: int) -> int:
    """Wait for a signal, record a step, wait for another."""
    note(i)
    first = note(fluxo.wait_for_signal("go", type=int))
    return first + fluxo.wait_for_signal("done", type=int)


@fluxo.step(name="burst.tick")
def tick(i: int) -> int:
    time.sleep(0.02)
    return i


@fluxo.workflow(name="burst.ticker")
def ticker(n: int) -> int:
    """A step every 20 ms, ``n`` times."""
    for i in range(n):
        tick(i)
    return n


@fluxo.workflow(name="burst.ready")
def ready() -> int:
    return note(1)


WORKFLOWS = [parked, twice, ticker, ready]


def make_engine() -> fluxo.Engine:
    """The engine the worker process loads."""
    return fluxo.Engine(os.environ["FLUXO_BENCH_URL"], workflows=WORKFLOWS)


@contextlib.contextmanager
def worker_process(url: str, concurrency: int, sticky: float | None) -> Iterator[None]:
    """A ``fluxo worker`` process on ``url``, serving once this returns."""
    options = ["--concurrency", str(concurrency), "--lease", "30", "--log-level", "WARNING"]
    if sticky is not None:
        options += ["--sticky", str(sticky)]
    with _processes.worker_process(url, "benchmarks.burst:make_engine", ready, *options):
        yield


class Sampler:
    """Counts, every 20 ms in a thread, the runs that are ``running`` (leased)."""

    def __init__(self, engine: fluxo.Engine) -> None:
        self.engine = engine
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            running = self.engine.list_runs(status="running", limit=10_000)
            self.most = max(self.most, len(running))


def wait_for(predicate: Callable[[], bool], limit: float = 600.0) -> float:
    """Seconds until ``predicate()`` holds, polled every 5 ms."""
    started = time.perf_counter()
    while not predicate():
        if time.perf_counter() - started > limit:
            raise SystemExit(f"gave up after {limit:.0f}s")
        time.sleep(0.005)
    return time.perf_counter() - started


def count(engine: fluxo.Engine, status: str, workflow: fluxo.Workflow[..., object]) -> int:
    return len(engine.list_runs(status=status, workflow=workflow, limit=10_000))


def park_round(url: str, runs: int, concurrency: int, sticky: float | None) -> str:
    with worker_process(url, concurrency, sticky), fluxo.Engine(url, workflows=WORKFLOWS) as eng:
        with Sampler(eng) as sampler:
            started = time.perf_counter()
            for i in range(runs):
                eng.start(parked, i)
            wait_for(lambda: count(eng, "waiting", parked) == runs)
            seconds = time.perf_counter() - started  # from the first start
        for run in eng.list_runs(workflow=parked, limit=10_000):
            eng.signal(run.id, "go", 1)  # let the worker finish them before it stops
        wait_for(lambda: count(eng, "completed", parked) == runs)
    return f"park {runs} (c={concurrency}): {seconds:6.2f}s, most running {sampler.most}"


def consumed(eng: fluxo.Engine, run_ids: list[str]) -> int:
    """How many of the runs consumed their "go" signal."""
    return sum(any(e.kind == "signal_received" for e in eng.history(run_id)) for run_id in run_ids)


def signal_round(url: str, sticky: float | None) -> str:
    concurrency = 2
    with worker_process(url, concurrency, sticky), fluxo.Engine(url, workflows=WORKFLOWS) as eng:
        handles = [eng.start(twice, i) for i in range(SIGNALLED)]
        ids = [handle.id for handle in handles]
        wait_for(lambda: count(eng, "waiting", twice) == SIGNALLED)
        with Sampler(eng) as sampler:
            started = time.perf_counter()
            for i, handle in enumerate(handles):
                eng.signal(handle.id, "go", i)
            wait_for(lambda: consumed(eng, ids) == SIGNALLED)
            seconds = time.perf_counter() - started
        for handle in handles:
            eng.signal(handle.id, "done", 0)
        for i, handle in enumerate(handles):
            assert handle.result(timeout=600) == i
    return (
        f"signal {SIGNALLED} (c={concurrency}): {seconds:6.2f}s to the last consumed, "
        f"most running {sampler.most}"
    )


def steps_recorded(eng: fluxo.Engine, run_id: str) -> int:
    try:
        return len(eng.history(run_id))
    except fluxo.RunNotFoundError:
        return 0  # engine.run in another thread has not created it yet


def cancel_latency(eng: fluxo.Engine, start: Callable[[str], None], tag: str) -> list[float]:
    """Seconds from ``engine.cancel`` returning to the run being ``cancelled``, per round."""
    seconds = []
    for i in range(CANCEL_ROUNDS):
        run_id = f"{tag}-{i}"
        start(run_id)
        wait_for(lambda r=run_id: steps_recorded(eng, r) >= 5)  # running, a few steps in
        time.sleep(0.1 * i)  # cancel at a different moment of the step each round
        eng.cancel(run_id)
        began = time.perf_counter()
        wait_for(lambda r=run_id: eng.get_run(r).status is fluxo.RunStatus.CANCELLED)
        seconds.append(time.perf_counter() - began)
    return seconds


def cancel_round(url: str, sticky: float | None) -> str:
    with fluxo.Engine(url, workflows=WORKFLOWS) as eng:
        with worker_process(url, 4, sticky):
            by_worker = cancel_latency(
                eng, lambda run_id: eng.start(ticker.options(id=run_id), 100_000), "worker"
            )

        def run_inline(run_id: str) -> None:
            def body() -> None:
                with contextlib.suppress(fluxo.WorkflowCancelledError):
                    eng.run(ticker.options(id=run_id), 100_000)

            threading.Thread(target=body, daemon=True).start()

        inline = cancel_latency(eng, run_inline, "inline")
    return (
        f"cancel: worker median {statistics.median(by_worker):.2f}s max {max(by_worker):.2f}s; "
        f"engine.run median {statistics.median(inline):.2f}s max {max(inline):.2f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres,redis,mongo")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sticky", type=float, default=None, help="default: the worker's own")
    parser.add_argument("--rounds", default="park,signal,cancel")
    args = parser.parse_args()
    rounds = {r.strip() for r in args.rounds.split(",")}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            print(f"{kind}:", flush=True)
            if "park" in rounds:
                url = scale_out.fresh_url(kind, tmp)
                print("  " + park_round(url, args.runs, args.concurrency, args.sticky), flush=True)
            if "signal" in rounds:
                print("  " + signal_round(scale_out.fresh_url(kind, tmp), args.sticky), flush=True)
            if "cancel" in rounds:
                print("  " + cancel_round(scale_out.fresh_url(kind, tmp), args.sticky), flush=True)


if __name__ == "__main__":
    main()
