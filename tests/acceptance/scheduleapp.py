"""Two every-second schedules for the schedule acceptance test, run by real ``fluxo worker``s.

``beat_all`` catches up every tick it missed; ``beat_latest`` only the most recent.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import fluxo


@fluxo.schedule(every=timedelta(seconds=1), catch_up="all")
@fluxo.workflow(name="beat-all")
def beat_all(tick: datetime) -> str:
    return tick.isoformat()


@fluxo.schedule(every=timedelta(seconds=1), catch_up="latest")
@fluxo.workflow(name="beat-latest")
def beat_latest(tick: datetime) -> str:
    return tick.isoformat()


def make_engine() -> fluxo.Engine:
    """Build the engine from the store URL the test hands over in the environment."""
    return fluxo.Engine(os.environ["FLUXO_CRASH_URL"], workflows=[beat_all, beat_latest])
