"""Store conformance: ``count_runs``, the number of runs per workflow and status.

Every run counts once, under its workflow and the status its record reads; pairs
without runs are left out; a run whose record is damaged counts as ``FAILED``.
"""

from __future__ import annotations

import pytest

from fluxo import history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def claimed(store, run_id, *, now=T0):
    """Lease this very run (whatever else is ready), so it is ``RUNNING``."""
    run = store.claim_run("w1", run_id, now=now, lease_until=now + 30)
    assert run is not None
    assert run.status is RunStatus.RUNNING


def test_an_empty_store_counts_nothing(store):
    assert store.count_runs() == {}


def test_runs_are_counted_by_workflow_and_status(store, runs):
    statuses = {
        "shop.checkout": [
            RunStatus.PENDING,
            RunStatus.PENDING,
            RunStatus.RUNNING,
            RunStatus.WAITING,
            RunStatus.COMPLETED,
            RunStatus.COMPLETED,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
        ],
        "shop.refund": [RunStatus.WAITING, RunStatus.FAILED, RunStatus.FAILED],
    }
    for workflow, wanted in statuses.items():
        for i, status in enumerate(wanted):
            run_id = f"{workflow}-{i}"
            runs.start(run_id, workflow, now=T0 + i)
            if status is RunStatus.RUNNING:
                claimed(store, run_id)
            else:
                runs.put(run_id, status)
    # a run created leased (engine.run) is running too
    store.create_run("inline", "shop.refund", b"[]", now=T0, owner="w2", lease_until=T0 + 30)

    assert store.count_runs() == {
        ("shop.checkout", RunStatus.PENDING): 2,
        ("shop.checkout", RunStatus.RUNNING): 1,
        ("shop.checkout", RunStatus.WAITING): 1,
        ("shop.checkout", RunStatus.COMPLETED): 3,
        ("shop.checkout", RunStatus.FAILED): 1,
        ("shop.checkout", RunStatus.CANCELLED): 1,
        ("shop.refund", RunStatus.RUNNING): 1,
        ("shop.refund", RunStatus.WAITING): 1,
        ("shop.refund", RunStatus.FAILED): 2,
    }


def test_workflow_names_count_apart_byte_for_byte(store, runs):
    for run_id, workflow in (("a", "wf"), ("b", "WF"), ("c", "wf "), ("d", "wf"), ("e", "订单")):
        runs.start(run_id, workflow)

    counts = store.count_runs()

    assert counts == {
        ("wf", RunStatus.PENDING): 2,
        ("WF", RunStatus.PENDING): 1,
        ("wf ", RunStatus.PENDING): 1,
        ("订单", RunStatus.PENDING): 1,
    }
    assert {(type(name), type(status), type(n)) for (name, status), n in counts.items()} == {
        (str, RunStatus, int)
    }


def test_counts_follow_every_change_of_status(store, runs):
    runs.start("r1")
    claimed(store, "r1")
    assert store.count_runs() == {("wf", RunStatus.RUNNING): 1}

    runs.wait("r1", now=T0 + 1)
    assert store.count_runs() == {("wf", RunStatus.WAITING): 1}

    store.send_signal("r1", "go", b"1", now=T0 + 2)
    assert store.count_runs() == {("wf", RunStatus.PENDING): 1}

    runs.finish("r1", RunStatus.FAILED, now=T0 + 3)
    assert store.count_runs() == {("wf", RunStatus.FAILED): 1}

    store.reopen("r1", now=T0 + 4)
    assert store.count_runs() == {("wf", RunStatus.PENDING): 1}

    runs.finish("r1", RunStatus.COMPLETED, now=T0 + 5)
    assert store.count_runs() == {("wf", RunStatus.COMPLETED): 1}


def test_purged_runs_are_no_longer_counted(store, runs):
    runs.start("old")
    runs.finish("old", RunStatus.COMPLETED)
    runs.start("new", now=T0 + 100)
    runs.finish("new", RunStatus.COMPLETED, now=T0 + 100)

    deleted = store.purge(finished_before=T0 + 50, statuses=[RunStatus.COMPLETED], limit=10)

    assert deleted == 1
    assert store.count_runs() == {("wf", RunStatus.COMPLETED): 1}


def test_counting_changes_nothing(store, runs):
    runs.start("r1")
    before = store.get_run("r1")

    store.count_runs()

    assert store.get_run("r1") == before
    taken = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=9)
    assert [run.id for run in taken] == ["r1"]


def test_a_run_with_a_damaged_status_counts_as_failed(store, runs, damage):
    if not damage.keeps_status_text:
        pytest.skip("this store keeps statuses as RunStatus objects")
    for run_id in ("bad", "worse", "failed", "good"):
        runs.start(run_id)
    runs.finish("failed", RunStatus.FAILED)
    damage.set_status("bad", "exploded")
    damage.set_status("worse", "zombie")

    assert store.count_runs() == {("wf", RunStatus.FAILED): 3, ("wf", RunStatus.PENDING): 1}
    assert store.get_run("bad").status is RunStatus.FAILED  # as the record reads


def test_a_run_with_a_damaged_history_counts_under_its_status(store, runs, damage):
    runs.start("r1")
    runs.record("r1", history.StepCompleted("a", b"1"))
    damage.set_kind("r1", 1, "from_the_future")

    assert store.count_runs() == {("wf", RunStatus.PENDING): 1}
