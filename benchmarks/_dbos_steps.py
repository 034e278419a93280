"""Run one DBOS workflow of N trivial steps on a given database; print seconds per step.

Run as a subprocess by ``step_overhead.py`` (DBOS is a process-wide singleton).
Usage: python benchmarks/_dbos_steps.py SYSTEM_DATABASE_URL STEPS REPEATS
"""

from __future__ import annotations

import json
import logging
import sys
import time

from dbos import DBOS, DBOSConfig


@DBOS.step()
def noop(i: int) -> int:
    return i


@DBOS.workflow()
def many(n: int) -> int:
    total = 0
    for i in range(n):
        total += noop(i)
    return total


def main() -> None:
    url, steps, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config: DBOSConfig = {
        "name": "fluxo-bench",
        "system_database_url": url,
        "run_admin_server": False,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)
    many(10)  # warm up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        assert many(steps) == steps * (steps - 1) // 2
        samples.append((time.perf_counter() - started) / steps)
    DBOS.destroy()
    print(json.dumps({"per_step": sorted(samples)[len(samples) // 2]}))


if __name__ == "__main__":
    main()
