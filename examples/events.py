"""Progress a web page can poll: fluxo.set_event in the workflow, engine.get_event outside.

The workflow records a value under a key after each part of its work; another
thread (in an app, another process) reads the latest value, or every value in
order as the run sets them. ``fluxo.info()`` tells the workflow which run it is.

Run it with ``python examples/events.py``.
"""

from __future__ import annotations

import threading

import fluxo


@fluxo.step
def resize(image: str) -> str:
    return f"{image} resized"


@fluxo.workflow
def thumbnails(images: list[str]) -> int:
    run = fluxo.info()  # the same on every replay: safe to branch on
    fluxo.set_event("started", {"run": run.run_id, "attempt": run.attempt})
    for done, image in enumerate(images, 1):
        fluxo.wait_for_signal("go")  # the demo paces the run, one image per signal
        resize(image)
        fluxo.set_event("progress", {"done": done, "of": len(images)})
    return len(images)


with fluxo.Engine("memory://", workflows=[thumbnails]) as engine, engine.worker():
    handle = engine.start(thumbnails.options(id="album-7"), ["a.png", "b.png", "c.png"])
    print(engine.get_event("album-7", "started", timeout=10))
    # prints: {'run': 'album-7', 'attempt': 1}

    def go() -> None:
        for _ in range(3):
            engine.signal("album-7", "go")

    threading.Thread(target=go).start()
    for value in engine.watch_event("album-7", "progress", timeout=10):  # ends with the run
        print(f"{value['done']}/{value['of']}")
    # prints: 1/3
    # prints: 2/3
    # prints: 3/3
    print(engine.get_event("album-7", "progress"))  # the latest value
    # prints: {'done': 3, 'of': 3}
    print(handle.result(timeout=10))  # prints: 3
