"""Store conformance: operator actions and reads, ``request_cancel``, ``reopen``, ``list_runs``."""

from __future__ import annotations

import itertools
import math

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

TERMINAL = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]


# -- request_cancel -------------------------------------------------------------


def test_request_cancel_flags_a_pending_run(store, runs):
    runs.start("r1")
    events = store.load("r1").events

    run = store.request_cancel("r1", now=T0 + 1)

    assert run.cancel_requested is True
    assert run.status is RunStatus.PENDING
    assert run == store.get_run("r1")
    assert store.load("r1").events == events


def test_request_cancel_wakes_a_run_waiting_for_a_signal(store, runs):
    runs.start("r1")
    runs.wait("r1", now=T0, ready_at=None)
    events = store.load("r1").events

    run = store.request_cancel("r1", now=T0 + 5)

    assert (run.status, run.cancel_requested) == (RunStatus.PENDING, True)
    assert run.ready_at is not None
    assert run.ready_at <= T0 + 5
    assert store.load("r1").events == events
    (claimed,) = store.claim("w1", ["wf"], now=T0 + 5, lease_until=T0 + 35, limit=5)
    assert (claimed.id, claimed.cancel_requested) == ("r1", True)


def test_request_cancel_wakes_a_run_sleeping_on_a_timer(store, runs):
    runs.start("r1")
    runs.wait("r1", now=T0, ready_at=T0 + 86_400)

    run = store.request_cancel("r1", now=T0 + 5)

    assert run.status is RunStatus.PENDING
    assert run.ready_at is not None
    assert run.ready_at <= T0 + 5
    assert [r.id for r in store.claim("w1", ["wf"], now=T0 + 5, lease_until=T0 + 35, limit=5)] == [
        "r1"
    ]


def test_request_cancel_of_a_running_run_keeps_its_lease(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    run = store.request_cancel("r1", now=T0 + 1)

    assert (run.status, run.lease_owner, run.lease_until) == (RunStatus.RUNNING, "w1", T0 + 30)
    assert run.cancel_requested is True
    assert store.claim("w2", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5) == []
    assert store.renew("w1", ["r1"], lease_until=T0 + 40) == {"r1": True}


def test_request_cancel_twice_is_harmless(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    store.request_cancel("r1", now=T0 + 1)

    run = store.request_cancel("r1", now=T0 + 2)

    assert (run.status, run.cancel_requested) == (RunStatus.PENDING, True)
    assert store.load("r1").next_seq == 2


@pytest.mark.parametrize("status", TERMINAL)
def test_request_cancel_of_a_finished_run_changes_nothing(store, runs, status):
    runs.start("r1")
    runs.finish("r1", status, now=T0 + 1)
    before = store.load("r1")

    run = store.request_cancel("r1", now=T0 + 2)

    assert run == before.run
    assert run.cancel_requested is False
    assert store.load("r1") == before


def test_request_cancel_of_an_unknown_run_raises(store):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.request_cancel("nope", now=T0)

    assert info.value.run_id == "nope"


# -- reopen ---------------------------------------------------------------------


def test_reopen_resumes_a_failed_run(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    runs.finish("r1", RunStatus.FAILED, now=T0 + 1)
    events = store.load("r1").events

    run = store.reopen("r1", now=T0 + 10)

    assert run.status is RunStatus.PENDING
    assert run.ready_at is not None
    assert run.ready_at <= T0 + 10
    assert (run.lease_owner, run.lease_until, run.cancel_requested) == (None, None, False)
    assert run.updated_at == T0 + 10
    state = store.load("r1")
    assert state.run == run
    assert state.events[:-1] == events
    assert type(state.events[-1]) is history.RunRetried
    (claimed,) = store.claim("w2", ["wf"], now=T0 + 10, lease_until=T0 + 40, limit=5)
    assert claimed.id == "r1"


def test_reopen_resumes_a_cancelled_run(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.request_cancel("r1", now=T0 + 1)
    store.append(
        "r1",
        runs.next_seq("r1"),
        [history.CancelRequested("cancelled"), history.WorkflowCancelled("cancelled")],
        now=T0 + 2,
        status=RunStatus.CANCELLED,
    )
    events = store.load("r1").events

    run = store.reopen("r1", now=T0 + 10)

    assert (run.status, run.ready_at, run.cancel_requested) == (RunStatus.PENDING, T0 + 10, False)
    assert (run.lease_owner, run.lease_until, run.recoveries) == (None, None, 0)
    state = store.load("r1")
    assert state.run == run
    assert state.events == (*events, history.RunRetried())
    (claimed,) = store.claim("w2", ["wf"], now=T0 + 10, lease_until=T0 + 40, limit=5)
    assert (claimed.id, claimed.cancel_requested) == ("r1", False)


def test_reopen_clears_a_cancellation_request(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.request_cancel("r1", now=T0 + 1)
    runs.finish("r1", RunStatus.FAILED, now=T0 + 2)

    assert store.reopen("r1", now=T0 + 3).cancel_requested is False
    assert store.get_run("r1").cancel_requested is False
    assert store.renew("w2", ["r1"], lease_until=T0 + 30) == {}
    (claimed,) = store.claim("w2", ["wf"], now=T0 + 3, lease_until=T0 + 33, limit=1)
    assert claimed.cancel_requested is False


def test_reopen_takes_the_next_position_so_stale_writers_are_fenced(store, runs):
    runs.start("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0 + 1)
    seq = runs.next_seq("r1")

    store.reopen("r1", now=T0 + 2)

    with pytest.raises(_errors.SequenceConflictError):
        store.append("r1", seq, [history.StepCompleted("late")], now=T0 + 3)
    store.append("r1", seq + 1, [history.StepCompleted("after")], now=T0 + 3)


def test_a_run_can_fail_and_be_reopened_again(store, runs):
    runs.start("r1")
    for attempt in range(2):
        runs.claim_one("r1", now=T0 + 10 * attempt)
        runs.finish("r1", RunStatus.FAILED, now=T0 + 10 * attempt + 1)
        store.reopen("r1", now=T0 + 10 * attempt + 2)

    kinds = [type(event) for event in store.load("r1").events]
    assert kinds == [
        history.WorkflowStarted,
        history.WorkflowFailed,
        history.RunRetried,
        history.WorkflowFailed,
        history.RunRetried,
    ]


@pytest.mark.parametrize(
    "status",
    [
        RunStatus.PENDING,
        RunStatus.RUNNING,
        RunStatus.WAITING,
        RunStatus.COMPLETED,
    ],
)
def test_reopen_of_a_run_that_has_not_failed_raises(store, runs, status):
    runs.start("r1")
    runs.put("r1", status, now=T0)
    before = store.load("r1")

    with pytest.raises(_errors.RunStateError):
        store.reopen("r1", now=T0 + 1)

    assert store.load("r1") == before


def test_reopen_of_an_unknown_run_raises(store):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.reopen("nope", now=T0)

    assert info.value.run_id == "nope"


def test_concurrent_reopens_resume_the_run_once(store, runs, open_store, race, unexpected):
    runs.start("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0 + 1)
    stores = [store] + [open_store() for _ in range(5)]

    outcomes = race(6, lambda i: stores[i].reopen("r1", now=T0 + 2))

    assert unexpected(outcomes, _errors.RunStateError) == []
    assert sum(1 for outcome in outcomes if outcome.error is None) == 1
    retried = [e for e in store.load("r1").events if isinstance(e, history.RunRetried)]
    assert len(retried) == 1


# -- list_runs ------------------------------------------------------------------


@pytest.fixture
def fleet(store, runs):
    """Six runs of two workflows, created a second apart, in various states."""
    plan = [
        ("a0", "shop.a", RunStatus.COMPLETED),
        ("b1", "shop.b", RunStatus.FAILED),
        ("a2", "shop.a", RunStatus.WAITING),
        ("b3", "shop.b", RunStatus.PENDING),
        ("a4", "shop.a", RunStatus.FAILED),
        ("b5", "shop.b", RunStatus.CANCELLED),
    ]
    for i, (run_id, workflow, status) in enumerate(plan):
        runs.start(run_id, workflow, now=T0 + i)
        runs.put(run_id, status, now=T0 + i)
    return plan


def test_list_runs_returns_every_run_newest_first(store, fleet):
    assert [run.id for run in store.list_runs()] == ["b5", "a4", "b3", "a2", "b1", "a0"]


def test_list_runs_returns_the_runs_as_they_stand(store, fleet):
    listed = store.list_runs()

    assert listed == [store.get_run(run.id) for run in listed]
    assert {run.id: run.status for run in listed} == {run_id: status for run_id, _, status in fleet}


def test_list_runs_by_status(store, fleet):
    assert [run.id for run in store.list_runs(statuses=[RunStatus.FAILED])] == ["a4", "b1"]
    assert [run.id for run in store.list_runs(statuses={RunStatus.WAITING, RunStatus.PENDING})] == [
        "b3",
        "a2",
    ]
    assert store.list_runs(statuses=[RunStatus.RUNNING]) == []


def test_list_runs_by_workflow(store, fleet):
    assert [run.id for run in store.list_runs(workflows=["shop.a"])] == ["a4", "a2", "a0"]
    assert [run.id for run in store.list_runs(workflows=("shop.a", "shop.b"))] == [
        "b5",
        "a4",
        "b3",
        "a2",
        "b1",
        "a0",
    ]
    assert store.list_runs(workflows=["shop.c", "SHOP.A"]) == []


def test_list_runs_filters_combine(store, fleet):
    listed = store.list_runs(statuses=[RunStatus.FAILED], workflows=["shop.b"])

    assert [run.id for run in listed] == ["b1"]


def test_list_runs_with_empty_filters_matches_nothing(store, fleet):
    assert store.list_runs(statuses=[]) == []
    assert store.list_runs(workflows=[]) == []


def test_list_runs_respects_the_limit(store, fleet):
    assert [run.id for run in store.list_runs(limit=2)] == ["b5", "a4"]
    assert [run.id for run in store.list_runs(workflows=["shop.a"], limit=1)] == ["a4"]
    assert store.list_runs(limit=0) == []


def test_list_runs_returns_at_most_100_runs_by_default(store, runs):
    for i in range(105):
        runs.start(f"r{i:03}", now=T0 + i)

    listed = store.list_runs()

    assert [run.id for run in listed] == [f"r{i:03}" for i in range(104, 4, -1)]


def test_list_runs_of_an_empty_store(store):
    assert store.list_runs() == []


# -- list_runs by creation time -------------------------------------------------


def ids(listed):
    return [run.id for run in listed]


def test_list_runs_created_after_is_inclusive(store, fleet):
    assert ids(store.list_runs(created_after=T0 + 3)) == ["b5", "a4", "b3"]
    assert ids(store.list_runs(created_after=T0 + 2.5)) == ["b5", "a4", "b3"]
    assert ids(store.list_runs(created_after=T0)) == ["b5", "a4", "b3", "a2", "b1", "a0"]


def test_list_runs_created_before_is_exclusive(store, fleet):
    assert ids(store.list_runs(created_before=T0 + 2)) == ["b1", "a0"]
    assert ids(store.list_runs(created_before=T0 + 2.5)) == ["a2", "b1", "a0"]
    assert ids(store.list_runs(created_before=T0 + 6)) == ["b5", "a4", "b3", "a2", "b1", "a0"]


def test_list_runs_in_a_created_range(store, fleet):
    assert ids(store.list_runs(created_after=T0 + 1, created_before=T0 + 4)) == ["b3", "a2", "b1"]


def test_consecutive_created_ranges_list_each_run_once(store, fleet):
    bounds = [T0 - 1, T0 + 1, T0 + 2, T0 + 4, T0 + 10]

    pages = [
        ids(store.list_runs(created_after=start, created_before=end))
        for start, end in itertools.pairwise(bounds)
    ]

    assert pages == [["a0"], ["b1"], ["b3", "a2"], ["b5", "a4"]]


def test_list_runs_created_range_with_the_other_filters(store, fleet):
    after, before = T0 + 1, T0 + 5
    failed = [RunStatus.FAILED]

    assert ids(store.list_runs(workflows=["shop.a"], created_after=after)) == ["a4", "a2"]
    assert ids(store.list_runs(workflows=["shop.b"], created_before=before)) == ["b3", "b1"]
    assert ids(store.list_runs(statuses=failed, created_after=T0 + 2)) == ["a4"]
    assert ids(store.list_runs(statuses=failed, created_before=T0 + 4)) == ["b1"]
    assert ids(
        store.list_runs(
            statuses=[RunStatus.FAILED, RunStatus.PENDING],
            workflows=["shop.b"],
            created_after=after,
            created_before=before,
        )
    ) == ["b3", "b1"]
    assert store.list_runs(statuses=[], created_after=after) == []
    assert store.list_runs(workflows=[], created_before=before) == []


def test_list_runs_created_range_respects_the_limit(store, fleet):
    assert ids(store.list_runs(created_after=T0 + 1, limit=2)) == ["b5", "a4"]
    assert ids(store.list_runs(created_before=T0 + 5, limit=2)) == ["a4", "b3"]
    assert ids(store.list_runs(created_after=T0 + 1, created_before=T0 + 5, limit=3)) == [
        "a4",
        "b3",
        "a2",
    ]
    assert store.list_runs(created_after=T0 + 1, limit=0) == []


def test_list_runs_in_an_empty_created_range(store, fleet):
    assert store.list_runs(created_after=T0 + 2, created_before=T0 + 2) == []
    assert store.list_runs(created_after=T0 + 4, created_before=T0 + 1) == []
    assert store.list_runs(created_after=T0 + 5.5) == []
    assert store.list_runs(created_before=T0) == []


def test_list_runs_created_bounds_are_exact_to_the_time_stored(store, runs):
    first = T0 + 0.123456789
    times = [first, math.nextafter(first, math.inf), T0 + 0.5]  # the first two: adjacent floats
    for i, now in enumerate(times):
        runs.start(f"r{i}", now=now)

    assert ids(store.list_runs(created_after=times[1])) == ["r2", "r1"]
    assert ids(store.list_runs(created_before=times[1])) == ["r0"]
    assert ids(store.list_runs(created_after=times[0], created_before=times[1])) == ["r0"]


def test_list_runs_created_range_ignores_later_changes(store, runs):
    runs.start("old", now=T0)
    runs.finish("old", RunStatus.COMPLETED, now=T0 + 100)
    runs.start("new", now=T0 + 50)

    assert ids(store.list_runs(created_after=T0 + 10)) == ["new"]
    assert ids(store.list_runs(created_before=T0 + 10)) == ["old"]
