"""Store conformance: leases. ``claim`` hands out runnable runs, ``renew`` and ``release``.

Runnable means: an active status, ``ready_at <= now``, no lease or an expired one
(``lease_until < now``), and a workflow the claiming worker knows.
"""

from __future__ import annotations

import pytest

from fluxo import history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def claim_ids(store, worker="w1", workflows=("wf",), *, now=T0, lease_until=None, limit=10):
    lease_until = now + 30 if lease_until is None else lease_until
    claimed = store.claim(worker, list(workflows), now=now, lease_until=lease_until, limit=limit)
    return [run.id for run in claimed]


# -- claim ----------------------------------------------------------------------


def test_claim_leases_a_ready_run(store, runs):
    runs.start("r1", now=T0)

    claimed = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=10)

    assert len(claimed) == 1
    run = claimed[0]
    assert (run.id, run.workflow, run.status) == ("r1", "wf", RunStatus.RUNNING)
    assert (run.lease_owner, run.lease_until) == ("w1", T0 + 31)
    assert run.created_at == T0
    assert store.get_run("r1") == run


def test_claim_leaves_the_history_alone(store, runs):
    runs.start("r1")
    before = store.load("r1").events

    claim_ids(store)

    assert store.load("r1").events == before


def test_claim_of_nothing_returns_an_empty_list(store):
    assert store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=10) == []


def test_a_run_is_claimable_from_its_ready_at_on(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=T0 + 60)

    assert claim_ids(store, now=T0 + 59.5) == []
    assert claim_ids(store, now=T0 + 60) == ["r1"]


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.WAITING])
def test_a_run_without_ready_at_is_never_claimed(store, runs, status):
    runs.start("r1")
    store.append("r1", 1, [history.ValueRecorded("signal", b"{}")], now=T0, status=status)

    assert claim_ids(store, now=T0 + 10**7) == []


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_a_finished_run_is_never_claimed(store, runs, status):
    runs.start("r1")
    # Even if a buggy caller leaves a ready_at on a finished run.
    store.append("r1", 1, [history.WorkflowCompleted()], now=T0, status=status, ready_at=T0)

    assert claim_ids(store, now=T0 + 10**7) == []
    assert store.get_run("r1").status is status


def test_a_waiting_run_whose_time_has_come_is_claimed(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=T0 + 5)

    claimed = store.claim("w1", ["wf"], now=T0 + 6, lease_until=T0 + 36, limit=1)

    assert [(run.id, run.status) for run in claimed] == [("r1", RunStatus.RUNNING)]


def test_claim_takes_only_the_given_workflows(store, runs):
    runs.start("a1", "shop.a")
    runs.start("b1", "shop.b")
    runs.start("c1", "shop.c")
    runs.start("A1", "Shop.A")

    assert sorted(claim_ids(store, workflows=["shop.a", "shop.c", "unknown"])) == ["a1", "c1"]
    assert claim_ids(store, workflows=["shop.b"]) == ["b1"]
    assert claim_ids(store, workflows=["SHOP.A", "shop.A"]) == []
    assert claim_ids(store, workflows=["Shop.A"]) == ["A1"]


def test_claim_with_no_workflows_takes_nothing(store, runs):
    runs.start("r1")

    assert claim_ids(store, workflows=[]) == []
    assert store.get_run("r1").status is RunStatus.PENDING


def test_claim_accepts_any_collection_of_workflows(store, runs):
    runs.start("a1", "a")
    runs.start("b1", "b")
    runs.start("c1", "c")

    assert claim_ids(store, workflows=("a",)) == ["a1"]
    assert claim_ids(store, workflows={"b"}) == ["b1"]
    assert claim_ids(store, workflows=frozenset({"c"})) == ["c1"]


def test_claim_respects_the_limit(store, runs):
    for i in range(5):
        runs.start(f"r{i}", now=T0 + i)

    first = claim_ids(store, now=T0 + 10, limit=2)
    second = claim_ids(store, now=T0 + 10, limit=2)
    third = claim_ids(store, now=T0 + 10, limit=2)

    assert (len(first), len(second), len(third)) == (2, 2, 1)
    assert sorted(first + second + third) == [f"r{i}" for i in range(5)]
    assert claim_ids(store, now=T0 + 10, limit=2) == []


def test_claim_with_a_limit_of_zero_takes_nothing(store, runs):
    runs.start("r1")

    assert claim_ids(store, limit=0) == []
    assert store.get_run("r1").lease_owner is None


def test_claim_takes_the_oldest_ready_at_first(store, runs):
    ready = {"r-late": 40.0, "r-first": 10.0, "r-mid": 20.0, "r-mid-plus": 20.001, "r-early": 15.5}
    for i, (run_id, offset) in enumerate(ready.items()):
        runs.start(run_id, now=T0 + i)
        runs.wait(run_id, now=T0 + i, ready_at=T0 + offset)

    order = [claim_ids(store, now=T0 + 100, limit=1)[0] for _ in ready]

    assert order == sorted(ready, key=ready.__getitem__)


def test_claim_prefers_older_runs_within_its_limit(store, runs):
    for i in range(6):
        runs.start(f"r{i}", now=T0 + 10 - i)  # r5 is the oldest

    assert sorted(claim_ids(store, now=T0 + 20, limit=3)) == ["r3", "r4", "r5"]


def test_a_live_lease_is_not_taken(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert claim_ids(store, "w2", now=T0 + 10) == []
    assert claim_ids(store, "w2", now=T0 + 30) == []  # lease_until < now is expired; = is not
    assert store.get_run("r1").lease_owner == "w1"


def test_an_expired_lease_is_taken_over(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    claimed = store.claim("w2", ["wf"], now=T0 + 31, lease_until=T0 + 61, limit=5)

    assert [(run.id, run.lease_owner, run.lease_until) for run in claimed] == [
        ("r1", "w2", T0 + 61)
    ]
    assert store.renew("w1", ["r1"], lease_until=T0 + 90) == {}
    assert store.get_run("r1").lease_owner == "w2"


def test_the_same_worker_does_not_claim_its_own_live_lease_twice(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert claim_ids(store, "w1", now=T0 + 1) == []


def test_claim_reports_a_requested_cancellation(store, runs):
    runs.start("r1")
    store.request_cancel("r1", now=T0 + 1)

    (run,) = store.claim("w1", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=1)

    assert run.cancel_requested is True


CLAIMERS = 8


@pytest.mark.parametrize("instances", ["one-instance", "instance-per-claimer"])
def test_concurrent_claims_never_hand_out_a_run_twice(
    store, runs, open_store, race, unexpected, instances
):
    if instances == "one-instance":
        stores = [store] * CLAIMERS
    elif open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    else:
        stores = [store] + [open_store() for _ in range(CLAIMERS - 1)]
    total = 40
    for i in range(total):
        runs.start(f"r{i:02}", now=T0 + i / 1000)

    def claim_until_empty(i):
        mine = []
        while True:
            got = stores[i].claim(f"w{i}", ["wf"], now=T0 + 1, lease_until=T0 + 60, limit=3)
            if not got:
                return mine
            assert all(run.lease_owner == f"w{i}" for run in got)
            mine.extend(run.id for run in got)

    outcomes = race(CLAIMERS, claim_until_empty)

    assert unexpected(outcomes) == []
    claimed = [run_id for outcome in outcomes for run_id in outcome.value]
    assert sorted(claimed) == [f"r{i:02}" for i in range(total)]  # each exactly once
    owners = {run.id: run.lease_owner for run in store.list_runs()}
    for i, outcome in enumerate(outcomes):
        assert all(owners[run_id] == f"w{i}" for run_id in outcome.value)


# -- renew ----------------------------------------------------------------------


def test_renew_extends_the_leases_held(store, runs):
    runs.start("r1")
    runs.start("r2")
    store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=2)

    held = store.renew("w1", ["r1", "r2"], lease_until=T0 + 45)

    assert held == {"r1": False, "r2": False}
    assert store.get_run("r1").lease_until == T0 + 45
    assert store.get_run("r2").lease_until == T0 + 45
    assert claim_ids(store, "w2", now=T0 + 40) == []


def test_renew_delivers_cancellation_requests(store, runs):
    runs.start("r1")
    runs.start("r2")
    store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=2)
    store.request_cancel("r2", now=T0 + 1)

    assert store.renew("w1", ["r1", "r2"], lease_until=T0 + 45) == {"r1": False, "r2": True}


def test_renew_does_not_touch_someone_elses_lease(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert store.renew("w2", ["r1"], lease_until=T0 + 999) == {}

    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_until) == ("w1", T0 + 30)
    assert claim_ids(store, "w3", now=T0 + 31) == ["r1"]


def test_renew_returns_only_the_runs_still_held(store, runs):
    runs.start("mine")
    runs.claim_one("mine", "w1", now=T0)
    runs.start("theirs")
    runs.claim_one("theirs", "w2", now=T0)
    runs.start("done")
    runs.claim_one("done", "w1", now=T0)
    runs.finish("done", RunStatus.COMPLETED, now=T0 + 1)
    runs.start("unclaimed")

    held = store.renew(
        "w1", ["mine", "theirs", "done", "unclaimed", "unknown"], lease_until=T0 + 60
    )

    assert held == {"mine": False}


def test_renew_of_nothing_returns_nothing(store):
    assert store.renew("w1", [], lease_until=T0 + 30) == {}


def test_renew_keeps_an_expired_lease_nobody_took(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert store.renew("w1", ["r1"], lease_until=T0 + 100) == {"r1": False}
    assert claim_ids(store, "w2", now=T0 + 50) == []


def test_renew_after_the_run_suspended_holds_nothing(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    runs.wait("r1", now=T0 + 1, ready_at=T0 + 100)

    assert store.renew("w1", ["r1"], lease_until=T0 + 60) == {}
    assert store.get_run("r1").lease_owner is None


def test_claim_and_renew_with_many_workflows_and_runs(store, runs):
    workflows = [f"app.workflow_{i}" for i in range(600)]
    for i in range(0, 600, 3):
        runs.start(f"r{i}", workflows[i], now=T0 + i)

    claimed = store.claim("w1", workflows, now=T0 + 600, lease_until=T0 + 630, limit=1000)
    ids = [run.id for run in claimed]
    held = store.renew("w1", [*ids, *(f"unknown-{i}" for i in range(400))], lease_until=T0 + 700)

    assert ids == [f"r{i}" for i in range(0, 600, 3)]
    assert held == dict.fromkeys(ids, False)
    assert len(store.list_runs(workflows=workflows, limit=1000)) == 200


# -- release --------------------------------------------------------------------


def test_release_makes_the_run_claimable_again(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    store.release("w1", "r1", now=T0 + 1)

    run = store.get_run("r1")
    assert run.status is RunStatus.PENDING
    assert (run.lease_owner, run.lease_until) == (None, None)
    assert run.ready_at is not None
    assert run.ready_at <= T0 + 1
    assert store.load("r1").next_seq == 1
    assert claim_ids(store, "w2", now=T0 + 1) == ["r1"]


def test_release_by_another_worker_is_ignored(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    before = store.get_run("r1")

    store.release("w2", "r1", now=T0 + 1)

    assert store.get_run("r1") == before
    assert claim_ids(store, "w2", now=T0 + 2) == []


def test_release_of_an_unleased_run_changes_nothing_that_matters(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=T0 + 100)

    store.release("w1", "r1", now=T0 + 1)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.lease_owner) == (RunStatus.WAITING, T0 + 100, None)
    assert claim_ids(store, now=T0 + 2) == []


def test_release_by_a_worker_that_lost_its_lease_leaves_the_new_holder_alone(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    runs.claim_one("r1", "w2", now=T0 + 31, lease_until=T0 + 61)

    store.release("w1", "r1", now=T0 + 32)

    run = store.get_run("r1")
    assert (run.status, run.lease_owner, run.lease_until) == (RunStatus.RUNNING, "w2", T0 + 61)
    assert claim_ids(store, "w3", now=T0 + 33) == []
