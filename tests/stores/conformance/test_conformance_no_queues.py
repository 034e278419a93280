"""Store conformance: what a store that keeps the default queue only answers meanwhile.

A store in ``WITHOUT_QUEUES`` (see ``conftest.py``) holds every run in the default
queue: it refuses the queue options of a new run and a queue record, writing
nothing, and finds no run awaiting admission. This file goes once every store
keeps queues.
"""

from __future__ import annotations

import pytest

from fluxo import _errors

pytestmark = pytest.mark.usefixtures("lacks_queues")

T0 = 1_700_000_000.0


@pytest.mark.parametrize(
    "options",
    [{"queue": "q"}, {"priority": 1}, {"partition": "p"}, {"start_at": T0 + 5}],
    ids=str,
)
def test_queue_options_are_refused_and_nothing_written(store, options):
    with pytest.raises(_errors.StoreRejectedError, match="default queue only"):
        store.create_run("r1", "wf", b"[]", now=T0, **options)

    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")


def test_runs_are_in_the_default_queue(store):
    run, created = store.create_run("r1", "wf", b"[]", now=T0, queue="", priority=0)

    assert created
    assert (run.queue, run.priority, run.partition, run.start_at) == ("", 0, None, None)
    assert store.queued_runs("", now=T0, limit=10) == ([], None)
    assert store.queued_runs("q", now=T0, limit=10) == ([], None)
    assert store.admit(["r1"], now=T0) == []
    assert store.next_wake(["wf"], now=T0, queues=["q"]) is None
    assert [r.id for r in store.list_runs(queues=["q"])] == []
    assert [r.id for r in store.list_runs(queues=[""])] == ["r1"]
    assert store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1, queues=["q"]) == []
    assert store.next_wake(["wf"], now=T0, queues=[""]) == T0
    claimed = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1, queues=[""])
    assert [r.id for r in claimed] == ["r1"]


def test_a_queue_record_is_refused(store):
    assert store.read_queue("q") == (0, b"")

    with pytest.raises(_errors.StoreRejectedError, match="'q'"):
        store.write_queue("q", 0, b"state")

    assert store.read_queue("q") == (0, b"")
