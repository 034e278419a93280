"""The Redis store's Lua scripts, kept in ``lua/*.lua`` beside this module.

Each operation on a run is one script on the keys of that run: those scripts
start with ``run_prelude.lua`` (the run's keys, and the helpers that compute the
index entry the run needs and keep its fence). The scripts on the keys of one
index bucket (``mark``, ``mark_create``, ``settle``, ``peek``, ``next_wake``,
``wake_list``), those on
the workers' liveness key (``beat``, ``bury``) and ``load`` stand alone. They are
read once, as package resources, so an installed wheel carries them like any other
file of the package.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

RUN_SCRIPTS: Final = (
    "create_run",
    "append",
    "claim_one",
    "claim_run",
    "renew",
    "release",
    "send_signal",
    "request_cancel",
    "reopen",
    "purge_run",
    "free",
    "admit",
    "queue_check",
)
"""The scripts on the keys of one run, each sent after ``run_prelude.lua``."""

OTHER_SCRIPTS: Final = (
    "load",
    "mark",
    "mark_create",
    "settle",
    "peek",
    "next_wake",
    "beat",
    "bury",
    "enqueue",
    "queued",
    "write_queue",
    "wake_list",
)
"""The scripts sent as they are: ``load`` (read-only, on a run), those on a bucket, and
those on the workers' liveness key (``beat``, ``bury``) and those on a queue."""


def source(name: str) -> str:
    """The text of ``lua/<name>.lua``."""
    lua = resources.files("fluxo.stores.redis").joinpath("lua")
    return lua.joinpath(f"{name}.lua").read_text(encoding="utf-8")


def _load() -> dict[str, str]:
    prelude = source("run_prelude")
    found = {name: prelude + source(name) for name in RUN_SCRIPTS}
    found.update((name, source(name)) for name in OTHER_SCRIPTS)
    return found


SCRIPTS: Final = _load()
"""Every script's code, by the name the store calls it by."""
