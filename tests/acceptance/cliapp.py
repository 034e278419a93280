"""Workflows for the command-line tests, and the engine ``fluxo --app`` loads.

The store comes from ``CLIAPP_STORE_URL``, else from ``FLUXO_STORE_URL``, as an
application would configure it (a test can so give the app a store of its own).
``restock`` fails while ``CLIAPP_OUT_OF_STOCK=1`` is set, so a test can fail a
run, fix the cause and retry it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import fluxo


@fluxo.step
def shout(name: str) -> str:
    time.sleep(0.02)  # so the timeline shows a duration
    return name.upper()


@fluxo.step
def punctuate(text: str) -> str:
    time.sleep(0.02)
    return text + "!"


@fluxo.workflow
def greet(name: str) -> str:
    return punctuate(shout(name))


@fluxo.workflow(name="tests.acceptance.cliapp.greet")
def greet_reordered(name: str) -> str:
    """Today's code of ``greet`` after a careless change: its histories no longer replay."""
    return shout(punctuate(name))


@fluxo.workflow
def approval(order: str) -> dict[str, Any]:
    decision: dict[str, Any] = fluxo.wait_for_signal("decision", type=dict[str, Any])
    return {"order": order, **decision}


@fluxo.step(retry=1)
def restock(item: str) -> int:
    if os.environ.get("CLIAPP_OUT_OF_STOCK") == "1":
        raise LookupError(f"no supplier has {item}")
    return 12


@fluxo.workflow
def reorder(item: str) -> int:
    return restock(item)


def _store_url() -> str:
    return os.environ.get("CLIAPP_STORE_URL") or os.environ["FLUXO_STORE_URL"]


def make_engine() -> fluxo.Engine:
    """The app's engine."""
    return fluxo.Engine(_store_url(), workflows=[greet, approval, reorder])


def make_changed_engine() -> fluxo.Engine:
    """The same app after the change to ``greet``."""
    return fluxo.Engine(_store_url(), workflows=[greet_reordered, approval, reorder])
