"""A run whose executions keep dying ends ``dead`` after ``max_recoveries``, until retried.

Each worker here is a process of its own, and the run's second step kills it (as
a crashing native library or the kernel's out-of-memory killer would), so the
next worker takes the run over, and dies the same way. After two takeovers
(``max_recoveries=2``) the third one gives the run up: it ends ``dead``, and no
worker runs it again. Once the cause is fixed, ``engine.retry`` resumes it.

Run it with ``python examples/dead_runs.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import fluxo

LEASE = 0.5  # short, so a dead worker's run is taken over quickly


@fluxo.step(name="invoices.load")
def load(order_id: str) -> str:
    return f"invoice for {order_id}"


@fluxo.step(name="invoices.render")
def render(text: str) -> str:
    if os.environ.get("RENDER_KILLS_THE_WORKER") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # the whole worker process dies, here
    return text.upper()


@fluxo.workflow(name="invoices.invoice", max_recoveries=2)
def invoice(order_id: str) -> str:
    return render(load(order_id))


def worker_process(url: str, *, broken: bool) -> int:
    """Run one worker process until it runs out of work (or is killed); its exit code."""
    env = dict(os.environ, RENDER_KILLS_THE_WORKER="1" if broken else "0")
    return subprocess.run([sys.executable, __file__, url], env=env, check=False).returncode


if len(sys.argv) == 2:  # a worker process: execute what is runnable, then exit
    with fluxo.Engine(sys.argv[1], workflows=[invoice]) as engine:
        engine.worker(lease=LEASE).process_one()
    sys.exit(0)

with tempfile.TemporaryDirectory() as folder:
    url = f"sqlite:///{folder}/fluxo.db"  # or your PostgreSQL, MySQL, Redis, MongoDB
    with fluxo.Engine(url, workflows=[invoice]) as engine:
        handle = engine.start(invoice.options(id="invoice-17"), "o-17")
        while not engine.get_run(handle.id).status.is_terminal:
            code = worker_process(url, broken=True)
            print("worker killed" if code == -signal.SIGKILL else f"worker exited {code}")
            time.sleep(2 * LEASE)  # the dead worker's lease runs out
        # prints: worker killed
        # prints: worker killed
        # prints: worker killed
        # prints: worker exited 0
        run = engine.get_run(handle.id)
        print(run.status, "after", run.recoveries, "takeovers")  # prints: dead after 3 takeovers
        try:
            handle.result(timeout=1)
        except fluxo.RunDiedError as exc:
            print(exc.error_message.split(":")[0])
            # prints: its executions died 3 times (max_recoveries=2)

        engine.retry(handle.id)  # after fixing the cause
        worker_process(url, broken=False)
        print(handle.result(timeout=10))  # prints: INVOICE FOR O-17
