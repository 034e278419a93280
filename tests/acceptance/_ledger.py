"""The ledger file and release files through which the crash apps and their tests talk.

An app's step appends a line to ``ledger.txt`` in ``FLUXO_CRASH_DIR`` each time it
runs (:func:`write`), so a test counts executions across worker processes
(:func:`read`). A held step waits until the test creates its release file
(:func:`hold`, :func:`hold_async`), so a worker can be killed while inside it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

WORKDIR = Path(os.environ.get("FLUXO_CRASH_DIR", "."))
"""Where the app of a worker process writes its ledger and looks for release files."""

HOLD_SECONDS = 60
"""How long a held step waits for its release file before it fails."""


def write(line: str) -> None:
    """Append ``line`` to the ledger, on disk before the step goes on (a kill may follow)."""
    with (WORKDIR / "ledger.txt").open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def hold(release: str, what: str) -> None:
    """Wait, sleeping, until the test creates the file ``release``; ``what`` is held."""
    deadline = time.monotonic() + HOLD_SECONDS
    while not (WORKDIR / release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never released {what}")
        time.sleep(0.02)


async def hold_async(release: str, what: str) -> None:
    """Await (on Fluxo's step loop) until the test creates the file ``release``."""
    deadline = time.monotonic() + HOLD_SECONDS
    while not (WORKDIR / release).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never released {what}")
        await asyncio.sleep(0.02)


def read(workdir: Path) -> list[str]:
    """The ledger the workers wrote in ``workdir``, split on whitespace; empty before any."""
    path = workdir / "ledger.txt"
    return path.read_text().split() if path.exists() else []
