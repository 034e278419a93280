"""The run timeline's model: replaced by the timeline builder in the next commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Timeline:
    """The rows of a run's timeline."""

    rows: tuple[Any, ...] = ()
    event_count: int = 0


def build(state: Any, codec: Any, *, now: float | None = None) -> Timeline:
    """The timeline of ``state`` (the full builder lands next)."""
    return Timeline((), len(state.events))
