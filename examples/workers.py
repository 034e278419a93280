"""Workers sharing one store: each run is claimed under a lease and finished once.

Two engines with a worker each stand for two ``fluxo worker`` processes, on this
machine or others: they share nothing but the database.

Run it with ``python examples/workers.py``.
"""

from __future__ import annotations

import tempfile

import fluxo


@fluxo.step
def resize(image: str) -> str:
    return f"{image} -> thumbnail"


@fluxo.workflow
def thumbnail(image: str) -> str:
    return resize(image)


with tempfile.TemporaryDirectory() as folder:
    url = f"sqlite:///{folder}/fluxo.db"  # or your PostgreSQL, MySQL, Redis, MongoDB
    with (
        fluxo.Engine(url, workflows=[thumbnail]) as one,
        fluxo.Engine(url, workflows=[thumbnail]) as two,
    ):
        handles = [one.start(thumbnail, f"img-{n}.png") for n in range(20)]
        with one.worker(concurrency=2) as first, two.worker(concurrency=2) as second:
            print(handles[0].result(timeout=60))  # prints: img-0.png -> thumbnail
            results = [handle.result(timeout=60) for handle in handles]
        print(len(results), "runs,", first.completed + second.completed, "finished by the workers")
        # prints: 20 runs, 20 finished by the workers
        steps = [
            sum(event.kind == "step_completed" for event in one.history(handle.id))
            for handle in handles
        ]
        print(
            "each step recorded once:", set(steps) == {1}
        )  # prints: each step recorded once: True
