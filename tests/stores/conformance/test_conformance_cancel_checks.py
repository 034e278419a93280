"""Store conformance: what lets a running run honour a cancellation promptly and for sure.

``get_runs`` is the cheap batched read a worker's heartbeat makes about twice a
second to see the cancellations (and lost leases) of the runs it executes.
``append(unless_cancel_requested=True)`` records a run's end only if no
cancellation is pending, in the same atomic write, so one accepted just before
the end is never lost.
"""

from __future__ import annotations

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def completed():
    return history.WorkflowCompleted("", b'"ok"')


def end(store, run_id, *, seq=1, now=T0 + 2):
    """Record the run's completion the way the executor does: unless a cancel is pending."""
    events = [completed()]
    status = RunStatus.COMPLETED
    store.append(run_id, seq, events, now=now, status=status, unless_cancel_requested=True)


# -- get_runs -------------------------------------------------------------------


def test_get_runs_returns_each_run_as_get_run_does(store, runs):
    runs.start("r1")
    runs.start("r2", "wf2", now=T0 + 1)
    runs.claim_one("r2", "w1", now=T0 + 2, lease_until=T0 + 32)
    runs.start("r3", now=T0 + 3)
    store.request_cancel("r3", now=T0 + 4)

    found = store.get_runs(["r1", "r2", "r3"])

    assert found == {run_id: store.get_run(run_id) for run_id in ("r1", "r2", "r3")}
    assert (found["r2"].lease_owner, found["r2"].lease_until) == ("w1", T0 + 32)
    assert found["r3"].cancel_requested is True
    assert found["r1"].cancel_requested is False


def test_get_runs_leaves_out_unknown_ids_and_repeats(store, runs):
    runs.start("r1")

    assert store.get_runs(["nope", "r1", "r1", "also-nope"]) == {"r1": store.get_run("r1")}
    assert store.get_runs(["nope"]) == {}
    assert store.get_runs([]) == {}


def test_get_runs_reads_many_runs_at_once(store, runs):
    ids = [f"run-{i:03d}" for i in range(150)]
    for i, run_id in enumerate(ids):
        runs.start(run_id, now=T0 + i)

    found = store.get_runs(ids[::-1])

    assert sorted(found) == ids
    assert all(found[run_id].id == run_id for run_id in ids)


def test_get_runs_sees_a_cancellation_made_through_another_instance(store, runs, open_store):
    runs.start("r1")
    runs.claim_one("r1", "w1")
    other = open_store()

    other.request_cancel("r1", now=T0 + 1)

    assert store.get_runs(["r1"])["r1"].cancel_requested is True


# -- append(unless_cancel_requested=True) --------------------------------------------


def test_an_end_with_no_cancellation_pending_is_recorded(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1")

    end(store, "r1")

    state = store.load("r1")
    assert state.events[1:] == (completed(),)
    assert (state.run.status, state.run.lease_owner) == (RunStatus.COMPLETED, None)


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([completed()], RunStatus.COMPLETED),  # a run's end: the case the executor makes
        ([history.StepCompleted("a", b"1"), completed()], RunStatus.COMPLETED),
        ([history.StepCompleted("a", b"1")], None),
        ([], RunStatus.PENDING),
    ],
    ids=["end", "several-events", "no-status", "status-only"],
)
def test_a_pending_cancellation_refuses_the_write_and_changes_nothing(store, runs, events, status):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    store.request_cancel("r1", now=T0 + 1)
    before = store.load("r1")

    with pytest.raises(_errors.CancelPendingError) as info:
        store.append(
            "r1", 1, events, now=T0 + 2, status=status, ready_at=None, unless_cancel_requested=True
        )

    assert info.value.run_id == "r1"
    assert store.load("r1") == before
    assert before.run.status is RunStatus.RUNNING
    assert store.renew("w1", ["r1"], lease_until=T0 + 40) == {"r1": True}  # still leased


def test_the_cancellation_can_be_recorded_after_a_refused_end(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1")
    store.request_cancel("r1", now=T0 + 1)
    with pytest.raises(_errors.CancelPendingError):
        end(store, "r1")

    cancelled = [history.CancelRequested("cancelled"), history.WorkflowCancelled("cancelled")]
    store.append("r1", 1, cancelled, now=T0 + 3, status=RunStatus.CANCELLED)

    state = store.load("r1")
    assert state.events[1:] == tuple(cancelled)
    assert state.run.status is RunStatus.CANCELLED


def test_without_the_option_a_pending_cancellation_does_not_refuse(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1")
    store.request_cancel("r1", now=T0 + 1)

    store.append("r1", 1, [completed()], now=T0 + 2, status=RunStatus.COMPLETED)

    assert store.get_run("r1").status is RunStatus.COMPLETED


def test_a_taken_position_is_reported_before_a_pending_cancellation(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1")
    runs.record("r1", history.StepCompleted("a", b"1"))
    store.request_cancel("r1", now=T0 + 1)
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        end(store, "r1")

    assert store.load("r1") == before


def test_an_unknown_run_is_reported_as_unknown(store):
    with pytest.raises(_errors.RunNotFoundError):
        end(store, "nope")


@pytest.fixture(params=["one-instance", "two-instances"])
def two_stores(request, store, open_store):
    if request.param == "one-instance":
        return [store, store]
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    return [store, open_store()]


def test_a_racing_cancellation_is_either_refused_or_finds_the_run_finished(
    store, runs, two_stores, race
):
    """Never both: an end recorded while the cancellation was accepted for a running run."""
    for i in range(20):
        run_id = f"r{i}"
        runs.start(run_id)
        runs.claim_one(run_id, "w1")

        def act(who, run_id=run_id):
            if who == 0:
                return two_stores[0].request_cancel(run_id, now=T0 + 1)
            return end(two_stores[1], run_id, now=T0 + 1)

        cancel, ending = race(2, act)

        assert cancel.error is None
        refused = isinstance(ending.error, _errors.CancelPendingError)
        assert refused or ending.error is None, ending.error
        accepted_while_running = cancel.value.status is RunStatus.RUNNING
        assert refused == accepted_while_running, (run_id, cancel.value, ending.error)
        final = store.get_run(run_id)
        assert final.status is (RunStatus.RUNNING if refused else RunStatus.COMPLETED)
