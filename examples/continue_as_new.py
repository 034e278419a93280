"""continue_as_new: a workflow that loops for ever, with a history that does not grow.

Run it with ``python examples/continue_as_new.py``.
"""

from __future__ import annotations

import fluxo


@fluxo.step
def fetch_page(cursor: int) -> list[int]:
    return list(range(cursor, cursor + 10)) if cursor < 30 else []


@fluxo.step
def store_rows(rows: list[int]) -> None:
    print(f"stored rows {rows[0]}..{rows[-1]}")


@fluxo.workflow
def sync(cursor: int) -> int:
    rows = fetch_page(cursor)
    if not rows:
        return cursor  # caught up: the chain ends here
    store_rows(rows)
    fluxo.continue_as_new(cursor + len(rows))  # this run ends; a fresh one starts


with fluxo.Engine("memory://", workflows=[sync]) as engine, engine.worker():
    handle = engine.start(sync.options(id="sync"), 0)
    print(handle.result(timeout=30))  # a handle follows the chain to its end
    # prints: stored rows 0..9
    # prints: stored rows 10..19
    # prints: stored rows 20..29
    # prints: 30
    print(engine.get_run("sync").id, engine.get_run("sync", follow=False).status)
    # prints: sync~3 completed
    print(len(engine.history("sync~3")), "events in the last run")
    # prints: 3 events in the last run
