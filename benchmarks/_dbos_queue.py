"""Enqueue, or drain, DBOS workflows of five trivial steps on a DBOS queue.

Run as a subprocess by ``throughput.py`` (DBOS is a process-wide singleton), once
to enqueue and once to drain, so that the drain is timed as Fluxo's is: from
starting a process that executes them until every one has completed.

    python benchmarks/_dbos_queue.py enqueue SYSTEM_DATABASE_URL RUNS CONCURRENCY POLL
    python benchmarks/_dbos_queue.py drain SYSTEM_DATABASE_URL

``enqueue`` registers the queue ``bench`` (``worker_concurrency=CONCURRENCY``,
polled every ``POLL`` seconds), enqueues RUNS workflows without dequeuing any
(this process listens to no queue of its own), and exits. ``drain`` listens to
``bench`` and executes them until it is terminated.
"""

from __future__ import annotations

import logging
import sys
import threading

from dbos import DBOS, DBOSConfig

QUEUE = "bench"


@DBOS.step()
def add(x: int, y: int) -> int:
    return x + y


@DBOS.workflow()
def five(x: int) -> int:
    for i in range(5):
        x = add(x, i)
    return x


def launch(url: str, queues: list[str]) -> None:
    config: DBOSConfig = {
        "name": "fluxo-bench",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)
    DBOS.listen_queues(queues)
    DBOS.launch()
    logging.getLogger("dbos").setLevel(logging.WARNING)


def main() -> None:
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "enqueue":
        runs, concurrency, poll = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        launch(url, [])
        queue = DBOS.register_queue(
            QUEUE, worker_concurrency=concurrency, polling_interval_sec=poll
        )
        for i in range(runs):
            queue.enqueue(five, i)
        DBOS.destroy()
    elif mode == "drain":
        launch(url, [QUEUE])
        print("launched", flush=True)
        threading.Event().wait()  # until terminated
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
