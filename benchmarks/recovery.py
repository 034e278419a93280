"""How long a run stays stuck after its worker is SIGKILLed inside a step.

For each store, each round starts two ``fluxo worker`` processes (the second
stands by, as in any deployment with more than one worker) and a five-step
workflow whose step 2 blocks: it appends a line to a ledger file, then waits
for a release file. Once step 2 runs, the worker running it is SIGKILLed and
the release file created; the round measures, from the SIGKILL:

* to step 2 running again, on the other worker (the ledger's second line for
  the run: the step is at-least-once, so it runs again);
* to the run's completion (the time the other worker recorded it).

A worker beats for its liveness every quarter of ``--dead-after`` (2 s); the
other worker frees a dead worker's runs once its last beat is ``--dead-after``
old, whatever is left of their leases (``--lease``, 30 s). Round i of n kills the
worker ``i/n`` of a beat period into step 2, so the kills fall at different
moments between beats. With ``--restart``, no worker stands by: the killed
worker is started again under the same ``--worker-id``, and takes its run back
at its first beat. Each store gets ``--rounds`` rounds (3); median and worst.

    python -m benchmarks.recovery [--stores postgres,redis,sqlite] [--rounds 3]
        [--lease 30] [--dead-after 2] [--restart]

Server URLs come from FLUXO_BENCH_POSTGRES_URL, FLUXO_BENCH_MYSQL_URL,
FLUXO_BENCH_REDIS_URL and FLUXO_BENCH_MONGO_URL (defaults: the local servers;
MongoDB: SecantusDB started in this process).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import fluxo
from benchmarks import _processes, scale_out


@fluxo.step(name="recovery.quick")
def quick(i: int) -> int:
    return i


@fluxo.step(name="recovery.blocking")
def blocking(workdir: str, tag: str) -> str:
    """Append ``tag``, this process and the time to the ledger; wait for the release file."""
    with open(Path(workdir, "ledger.txt"), "a") as ledger:
        ledger.write(f"{tag} {os.getpid()} {time.time()!r}\n")
    while not Path(workdir, f"release-{tag}").exists():
        time.sleep(0.005)
    return tag


@fluxo.workflow(name="recovery.five")
def five(workdir: str, tag: str) -> str:
    quick(1)
    blocking(workdir, tag)
    for i in range(3, 6):
        quick(i)
    return tag


@fluxo.workflow(name="recovery.ready")
def ready() -> int:
    return quick(0)


def make_engine() -> fluxo.Engine:
    """The engine each worker process loads."""
    return fluxo.Engine(os.environ["FLUXO_BENCH_URL"], workflows=[five, ready])


def step2_starts(workdir: str, tag: str) -> list[tuple[int, float]]:
    """(pid, time) of each start of the run ``tag``'s step 2, from the ledger."""
    ledger = Path(workdir, "ledger.txt")
    lines = ledger.read_text().splitlines() if ledger.exists() else []
    return [(int(pid), float(at)) for name, pid, at in map(str.split, lines) if name == tag]


def wait_for_starts(workdir: str, tag: str, starts: int, limit: float) -> list[tuple[int, float]]:
    began = time.perf_counter()
    while len(found := step2_starts(workdir, tag)) < starts:
        if time.perf_counter() - began > limit:
            raise SystemExit(f"step 2 of {tag} did not start {starts} time(s) in {limit:.0f}s")
        time.sleep(0.005)
    return found


def one_round(
    url: str, workdir: str, tag: str, options: list[str], *, into: float, restart: bool
) -> tuple[float, float, float]:
    """Kill the worker running step 2 ``into`` seconds into it; another takes over.

    Returns the seconds from the SIGKILL to step 2 running again, and to the
    run's completion, and the seconds its lease had left at the kill.
    """
    app = "benchmarks.recovery:make_engine"
    named = [*options, "--worker-id", f"recovery-{tag}"] if restart else options
    with contextlib.ExitStack() as stack:

        def worker(*these: str) -> subprocess.Popen[bytes]:
            return stack.enter_context(_processes.worker_process(url, app, ready, *these))

        engine = stack.enter_context(fluxo.Engine(url, workflows=[five, ready]))
        workers = [worker(*named)]
        if not restart:
            workers.append(worker(*options))
            time.sleep(3)  # both have beaten for a while, as long-running workers have
        handle = engine.start(five, workdir, tag)
        ((pid, _),) = wait_for_starts(workdir, tag, 1, 120)
        victim = next(w for w in workers if w.pid == pid)
        time.sleep(into)
        lease_until = engine.get_run(handle.id).lease_until
        killed = time.time()
        victim.kill()
        victim.wait()
        Path(workdir, f"release-{tag}").touch()
        if restart:
            workers.append(worker(*named))
        assert handle.result(timeout=300) == tag
        (_, again) = wait_for_starts(workdir, tag, 2, 10)[1]
        starts = step2_starts(workdir, tag)
        if len(starts) != 2 or starts[1][0] == pid:
            raise SystemExit(f"{tag}: step 2 ran in {starts}, not once in each worker")
        done = engine.get_run(handle.id)
    left = lease_until - killed if lease_until is not None else float("nan")
    return again - killed, done.updated_at - killed, left


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="postgres,redis,sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease", type=float, default=30.0, help="the workers' --lease, s")
    parser.add_argument("--dead-after", type=float, default=2.0, help="the workers' --dead-after")
    parser.add_argument("--restart", action="store_true", help="restart the worker under its id")
    args = parser.parse_args()
    options = ["--lease", str(args.lease), "--dead-after", str(args.dead_after)]
    options += ["--log-level", "WARNING"]
    how = "restarted under its id" if args.restart else "another worker standing by"
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
            print(
                f"{kind}: worker SIGKILLed in step 2, --lease {args.lease:g}, --dead-after "
                f"{args.dead_after:g}, {how}",
                flush=True,
            )
            url = scale_out.fresh_url(kind, tmp)
            to_step, to_done = [], []
            for i in range(args.rounds):
                into = i / args.rounds * args.dead_after / 4
                again, done, left = one_round(
                    url, tmp, f"{kind}-{i}", options, into=into, restart=args.restart
                )
                to_step.append(again)
                to_done.append(done)
                print(
                    f"  round {i + 1}: kill -> step 2 again {again:7.3f}s, -> completed "
                    f"{done:7.3f}s (lease left at the kill: {left:.2f}s)",
                    flush=True,
                )
            print(
                f"  median: step 2 again {statistics.median(to_step):7.3f}s, -> completed "
                f"{statistics.median(to_done):7.3f}s; worst: {max(to_step):.3f}s, "
                f"{max(to_done):.3f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
