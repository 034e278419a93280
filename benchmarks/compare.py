"""Workflows a second through one worker, this checkout against another, in turns.

A change to throughput is judged against the commit before it in the same
session: the machines are shared, and their speed drifts between runs. This
drains ``--runs`` five-step workflows (1,000) with one ``fluxo worker`` process of
concurrency 8 (``scale_out.drain_timed``, as ``benchmarks/throughput.py`` does),
``--rounds`` times (4) for each checkout, the two alternating (ABBA...), each
drain in a fresh interpreter of its own checkout on a fresh database, and prints
each drain and the medians: from the worker process's start, and from the first
claim.

    git worktree add ../before HEAD~3 && python3 -m venv ../before/.venv \\
        && ../before/.venv/bin/pip install -e '../before[dev]'
    python -m benchmarks.compare --other ../before --other-python ../before/.venv/bin/python \\
        [--stores sqlite,postgres,redis] [--runs 1000] [--rounds 4]

Server URLs come from the same variables as ``benchmarks/throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ONE_DRAIN = """
import sys, tempfile
from benchmarks import scale_out
with tempfile.TemporaryDirectory() as tmp:
    url = scale_out.fresh_url(sys.argv[1], tmp)
    elapsed, verdict, claimed = scale_out.drain_timed(url, int(sys.argv[2]), 1, 8)
print(int(sys.argv[2]) / elapsed, int(sys.argv[2]) / claimed, verdict)
"""


def drain(root: Path, python: str, kind: str, runs: int) -> tuple[float, float]:
    """Drain ``runs`` workflows on a fresh ``kind`` database with the checkout at ``root``."""
    env = dict(os.environ, PYTHONPATH=str(root))
    done = subprocess.run(
        [python, "-c", ONE_DRAIN, kind, str(runs)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    fields = done.stdout.split()
    if done.returncode != 0 or len(fields) != 3 or fields[2] != "ok":
        raise SystemExit(f"{root} on {kind} failed:\n{done.stdout}\n{done.stderr[-2000:]}")
    return float(fields[0]), float(fields[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--other", required=True, type=Path, help="the other checkout")
    parser.add_argument("--other-python", required=True, help="its interpreter")
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trees = {
        "this": (Path(__file__).parents[1], sys.executable),
        "other": (args.other.resolve(), args.other_python),
    }
    for kind in [k.strip() for k in args.stores.split(",") if k.strip()]:
        rates: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for i in range(args.rounds):
            for name in ("this", "other") if i % 2 == 0 else ("other", "this"):
                root, python = trees[name]
                rate, from_claim = drain(root, python, kind, args.runs)
                rates[name].append((rate, from_claim))
                print(f"{kind} {name:5}: {rate:6.0f} workflows/s, {from_claim:6.0f} from a claim")
        for name, found in rates.items():
            print(
                f"{kind} {name:5} median: {statistics.median(r for r, _ in found):6.0f} "
                f"workflows/s, {statistics.median(c for _, c in found):6.0f} from the first claim",
                flush=True,
            )


if __name__ == "__main__":
    main()
