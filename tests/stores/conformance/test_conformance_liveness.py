"""Store conformance: worker liveness. ``beat_worker`` frees the runs of dead workers.

A worker beats about every half second with ``alive_until`` a little ahead; once a
worker's ``alive_until`` has passed, the next beat of another worker ends the
leases of its active runs, so they are claimed again at once instead of after
their (long) leases.
"""

from __future__ import annotations

from fluxo import history
from tests.stores.conformance.test_conformance_lifecycle import Waiter

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def claim_ids(store, worker="w2", *, now):
    return [run.id for run in store.claim(worker, ["wf"], now=now, lease_until=now + 30, limit=10)]


def test_a_beat_frees_the_runs_of_a_worker_whose_beats_stopped(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.start("r2")
    runs.claim_one("r1", "w1", now=T0)
    runs.claim_one("r2", "w1", now=T0)

    freed = store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    assert sorted(freed) == ["r1", "r2"]
    run = store.get_run("r1")
    assert (run.status, run.lease_owner, run.lease_until) == (RunStatus.RUNNING, "w1", T0 + 3)
    assert sorted(claim_ids(store, now=T0 + 3.1)) == ["r1", "r2"]
    assert store.get_run("r1").lease_owner == "w2"


def test_a_live_worker_keeps_its_runs(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    assert store.beat_worker("w2", now=T0 + 1.5, alive_until=T0 + 3.5) == []
    assert store.beat_worker("w1", now=T0 + 1.9, alive_until=T0 + 3.9) == []
    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == []

    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_until) == ("w1", T0 + 30)
    assert claim_ids(store, now=T0 + 3) == []


def test_owners_that_never_beat_keep_their_leases(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "engine-run", now=T0)
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)

    assert store.beat_worker("w2", now=T0 + 10, alive_until=T0 + 12) == []
    assert store.get_run("r1").lease_until == T0 + 30


def test_without_reap_a_beat_frees_nothing(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5, reap=False) == []
    assert store.get_run("r1").lease_until == T0 + 30
    # the dead worker is still known: the next beat that reaps frees its run
    assert store.beat_worker("w2", now=T0 + 3.5, alive_until=T0 + 5.5) == ["r1"]


def test_a_dead_worker_is_freed_once(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["r1"]
    assert store.beat_worker("w3", now=T0 + 3.2, alive_until=T0 + 5.2) == []
    assert store.beat_worker("w2", now=T0 + 3.4, alive_until=T0 + 5.4) == []


def test_a_dead_worker_that_beats_again_is_alive_again(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)
    store.beat_worker("w1", now=T0 + 3.1, alive_until=T0 + 5.1)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0 + 3.1, lease_until=T0 + 33)

    assert store.beat_worker("w2", now=T0 + 4, alive_until=T0 + 6) == []
    assert store.get_run("r1").lease_until == T0 + 33


def test_only_active_runs_with_a_live_lease_are_freed(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("done")
    runs.claim_one("done", "w1", now=T0)
    runs.finish("done", RunStatus.COMPLETED, now=T0 + 1)
    runs.start("expired")
    runs.claim_one("expired", "w1", now=T0, lease_until=T0 + 1)
    runs.start("theirs")
    runs.claim_one("theirs", "w9", now=T0)
    runs.start("released")
    runs.claim_one("released", "w1", now=T0)
    store.release("w1", "released", now=T0 + 1)

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == []
    assert store.get_run("done").status is RunStatus.COMPLETED
    assert store.get_run("expired").lease_until == T0 + 1
    assert store.get_run("theirs").lease_until == T0 + 30


def test_a_restarted_worker_frees_the_runs_held_under_its_own_id(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    # the same id beats again at once, before its old record expired: a new process
    freed = store.beat_worker("w1", now=T0 + 0.5, alive_until=T0 + 2.5, restarted=True)

    assert freed == ["r1"]
    assert claim_ids(store, "w1", now=T0 + 0.6) == ["r1"]
    # and it is alive: another worker's beat does not free what it claimed again
    assert store.beat_worker("w2", now=T0 + 1, alive_until=T0 + 3) == []


def test_a_forgotten_worker_is_never_freed(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.forget_worker("w1")
    store.forget_worker("never-beat")

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == []
    assert store.get_run("r1").lease_until == T0 + 30


def test_a_freed_run_wakes_a_waiter(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    waiter = Waiter(store, None)

    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    assert waiter.outcome() is True


def test_a_freed_run_keeps_its_history_and_fence(store, runs):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    runs.record("r1", history.StepCompleted("a", b"1"), now=T0 + 1)
    before = store.load("r1")

    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    after = store.load("r1")
    assert after.events == before.events
    assert after.next_seq == before.next_seq
