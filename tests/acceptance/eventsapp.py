"""A workflow that reports its progress with ``fluxo.set_event``, for a real ``fluxo worker``."""

from __future__ import annotations

import os

import fluxo


@fluxo.step
def part(index: int) -> int:
    return index * index


@fluxo.workflow
def report(parts: int, paced: bool) -> int:
    """Sets ``progress`` after each part; paced: waits for a ``next`` signal before each part."""
    total = 0
    for index in range(1, parts + 1):
        if paced:
            fluxo.wait_for_signal("next")
        total += part(index)
        fluxo.set_event("progress", {"done": index, "of": parts})
    fluxo.set_event("total", total)
    return total


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[report])
