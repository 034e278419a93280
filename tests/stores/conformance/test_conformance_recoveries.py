"""Store conformance: recoveries, and the ``dead`` status.

A claim that takes a run over from an execution that never ended cleanly (the
run is still ``RUNNING``: its lease ran out, or ``beat_worker`` freed it) counts
one recovery in ``RunInfo.recoveries``, in the claim itself. A clean end of an
execution (a release, a suspension, an end) leaves the run ``PENDING``,
``WAITING`` or finished, so the next claim does not count. ``reopen`` sets the
count back to 0. ``dead`` is a finished status like ``failed``: listed, counted,
purged and reopened the same way.
"""

from __future__ import annotations

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def claim(store, worker, *, now, limit=10):
    return store.claim(worker, ["wf"], now=now, lease_until=now + 30, limit=limit)


def test_a_new_run_has_no_recoveries(store, runs):
    run = runs.start("r1")

    assert run.recoveries == 0
    assert store.get_run("r1").recoveries == 0
    assert runs.claim_one("r1", now=T0).recoveries == 0


def test_a_claim_after_a_lease_ran_out_counts_a_recovery(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    [again] = claim(store, "w2", now=T0 + 31)

    assert (again.id, again.lease_owner, again.recoveries) == ("r1", "w2", 1)
    assert store.get_run("r1").recoveries == 1
    assert store.load("r1").run.recoveries == 1
    assert store.get_runs(["r1"])["r1"].recoveries == 1
    assert [run.recoveries for run in store.list_runs()] == [1]
    [third] = claim(store, "w3", now=T0 + 62)
    assert third.recoveries == 2


def test_a_claim_of_a_run_freed_from_a_dead_worker_counts_a_recovery(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["r1"]
    [again] = claim(store, "w2", now=T0 + 3.1)

    assert (again.lease_owner, again.recoveries) == ("w2", 1)


def test_a_claim_after_a_restarted_worker_freed_its_own_leases_counts(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    store.beat_worker("w1", now=T0 + 1, alive_until=T0 + 3, restarted=True)
    [again] = claim(store, "w1", now=T0 + 1.1)

    assert (again.lease_owner, again.recoveries) == ("w1", 1)


@pytest.mark.parametrize("end", ["release", "suspend", "pending"])
def test_a_claim_after_a_clean_end_of_an_execution_does_not_count(store, runs, end):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    if end == "release":
        store.release("w1", "r1", now=T0 + 1)
    elif end == "suspend":
        runs.wait("r1", now=T0 + 1, ready_at=T0 + 2)
    else:
        runs.record(
            "r1",
            history.ValueRecorded("v", b"1"),
            now=T0 + 1,
            status=RunStatus.PENDING,
            ready_at=T0 + 1,
        )

    [again] = claim(store, "w2", now=T0 + 3)

    assert again.recoveries == 0


def test_a_run_that_completes_keeps_its_count(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    claim(store, "w2", now=T0 + 31)

    runs.finish("r1", RunStatus.COMPLETED, now=T0 + 32)

    run = store.get_run("r1")
    assert (run.status, run.recoveries) == (RunStatus.COMPLETED, 1)


def test_claim_run_taking_back_its_own_lease_does_not_count(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    live = store.claim_run("w1", "r1", now=T0 + 10, lease_until=T0 + 40)
    expired = store.claim_run("w1", "r1", now=T0 + 50, lease_until=T0 + 80)

    assert live is not None
    assert live.recoveries == 0
    assert expired is not None
    assert expired.recoveries == 0


def test_claim_run_taking_a_run_over_from_another_owner_counts(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert store.claim_run("w2", "r1", now=T0 + 10, lease_until=T0 + 40) is None
    taken = store.claim_run("w2", "r1", now=T0 + 31, lease_until=T0 + 61)

    assert taken is not None
    assert (taken.lease_owner, taken.recoveries) == ("w2", 1)
    assert store.get_run("r1").recoveries == 1


def test_claim_run_of_a_waiting_run_does_not_count(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    runs.wait("r1", now=T0 + 1, ready_at=None)

    taken = store.claim_run("w2", "r1", now=T0 + 2, lease_until=T0 + 32)

    assert taken is not None
    assert taken.recoveries == 0


def test_dead_is_a_finished_status(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    runs.finish("r1", RunStatus.DEAD, now=T0 + 1)

    run = store.get_run("r1")
    assert run.status is RunStatus.DEAD
    assert (run.lease_owner, run.lease_until) == (None, None)
    assert claim(store, "w2", now=T0 + 100) == []
    assert store.claim_run("w2", "r1", now=T0 + 100, lease_until=T0 + 130) is None
    assert store.next_wake(["wf"], now=T0 + 100) is None
    with pytest.raises(_errors.RunStateError):
        store.send_signal("r1", "go", b"1", now=T0 + 2)
    assert store.request_cancel("r1", now=T0 + 2).status is RunStatus.DEAD


def test_dead_runs_are_listed_and_counted(store, runs):
    for number, status in enumerate([RunStatus.DEAD, RunStatus.FAILED, RunStatus.DEAD]):
        runs.start(f"r{number}", now=T0 + number)
        runs.put(f"r{number}", status, now=T0 + number)
    runs.start("r3", now=T0 + 3)

    dead = store.list_runs(statuses=[RunStatus.DEAD])

    assert [run.id for run in dead] == ["r2", "r0"]
    assert [run.id for run in store.list_runs(statuses=[RunStatus.DEAD, RunStatus.PENDING])] == [
        "r3",
        "r2",
        "r0",
    ]
    assert store.count_runs() == {
        ("wf", RunStatus.DEAD): 2,
        ("wf", RunStatus.FAILED): 1,
        ("wf", RunStatus.PENDING): 1,
    }


def test_dead_runs_are_purged_as_finished_runs(store, runs):
    runs.start("r1", now=T0)
    runs.put("r1", RunStatus.DEAD, now=T0)
    runs.start("r2", now=T0)
    runs.put("r2", RunStatus.FAILED, now=T0)

    assert store.purge(finished_before=T0 + 10, statuses=[RunStatus.FAILED], limit=10) == 1
    assert store.get_run("r1").status is RunStatus.DEAD
    assert store.purge(finished_before=T0 + 10, statuses=[RunStatus.DEAD], limit=10) == 1
    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")


def test_a_dead_parent_keeps_its_children_from_purge(store, runs):
    runs.start("p1", now=T0)
    runs.start("c1", now=T0, parent="p1")
    runs.put("c1", RunStatus.COMPLETED, now=T0)
    runs.put("p1", RunStatus.DEAD, now=T0)

    assert store.purge(finished_before=T0 + 10, statuses=[RunStatus.COMPLETED], limit=10) == 0
    assert store.get_run("c1").status is RunStatus.COMPLETED


def test_reopen_resumes_a_dead_run_with_no_recoveries(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    claim(store, "w2", now=T0 + 31)
    claim(store, "w3", now=T0 + 62)
    runs.finish("r1", RunStatus.DEAD, now=T0 + 63)
    assert store.get_run("r1").recoveries == 2

    run = store.reopen("r1", now=T0 + 64)

    assert (run.status, run.recoveries, run.ready_at) == (RunStatus.PENDING, 0, T0 + 64)
    state = store.load("r1")
    assert state.run.recoveries == 0
    assert [type(e) for e in state.events[-2:]] == [history.RunDied, history.RunRetried]
    [again] = claim(store, "w4", now=T0 + 65)
    assert again.recoveries == 0


def test_reopen_of_a_failed_run_sets_its_recoveries_back_to_0(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    claim(store, "w2", now=T0 + 31)
    runs.finish("r1", RunStatus.FAILED, now=T0 + 32)

    assert store.reopen("r1", now=T0 + 33).recoveries == 0
    assert store.get_run("r1").recoveries == 0
