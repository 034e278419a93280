"""The dashboard over a few runs: one completed, one waiting for a signal, one failed.

Run ``python examples/dashboard.py`` to make the runs (in ``dashboard.db``) and read
the dashboard's pages once, then ``fluxo ui --app dashboard:engine`` (from examples/)
to open it at http://127.0.0.1:8765/. It needs ``pip install 'fluxo[ui]'``.
"""

from __future__ import annotations

import re
import threading
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

import fluxo
from fluxo.ui import Dashboard


@fluxo.step
def reserve(item: str) -> str:
    return f"reserved {item}"


@fluxo.step(retry=fluxo.Retry(max_attempts=2, initial=0.1))
def charge(cents: int) -> str:
    if cents > 10_000:
        raise ValueError(f"{cents} cents is over the card's limit")
    return f"charged {cents}"


@fluxo.workflow
def order(item: str, cents: int, approval: bool = False) -> str:
    reserve(item)
    if approval:
        fluxo.wait_for_signal("approve")  # a person approves it on the dashboard
    return charge(cents)


engine = fluxo.Engine("sqlite:///dashboard.db", workflows=[order])


class Quiet(WSGIRequestHandler):
    """A request handler that does not print a line per request."""

    def log_message(self, format: str, *args: object) -> None:
        """Print nothing."""


if __name__ == "__main__":
    with engine.worker():
        engine.start(order.options(id="order-1"), "book", 900).result(timeout=30)
        engine.start(order.options(id="order-2"), "bike", 5_000, approval=True)  # it waits
        try:
            engine.start(order.options(id="order-3"), "boat", 90_000).result(timeout=30)
        except fluxo.WorkflowFailedError:
            print("order-3 failed")  # prints: order-3 failed

    dashboard = Dashboard(engine)
    server = make_server("127.0.0.1", 0, dashboard.wsgi, handler_class=Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    with urllib.request.urlopen(f"{base}/?status=waiting") as reply:
        page = reply.read().decode()
    print("waiting:", re.findall(r'data-run="([^"]+)"', page))  # prints: waiting: ['order-2']
    with urllib.request.urlopen(f"{base}/run?id=order-3") as reply:
        page = reply.read().decode()
    print("order-3 timeline:", re.findall(r'data-kind="(\w+)"', page))
    # prints: order-3 timeline: ['start', 'step', 'step', 'end']
    server.shutdown()
    dashboard.close()
    engine.close()
