"""Taking back a run whose wait a worker held in its thread, on every store.

Not part of the store contract: a store may offer ``take_back`` (the SQL store
does, in one operation), and on any other ``fluxo._leases.take_back_in_steps``
makes it of ``get_run``, ``claim_run`` and ``load``. A worker's held wait relies
on either behaving as tested here.
"""

from __future__ import annotations

import functools

import pytest

from fluxo import _errors, _leases, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


@pytest.fixture
def take_back(store):
    """How a worker's held wait takes its run back from this store."""
    if isinstance(store, _leases.TakesBack):
        return store.take_back
    return functools.partial(_leases.take_back_in_steps, store)


def hold(runs, run_id="r1"):
    """A run that recorded a wait for a signal, as a held wait leaves it (no lease)."""
    runs.start(run_id)
    runs.claim_one(run_id, "w1")
    runs.wait(run_id, ready_at=None)


def test_a_held_run_with_nothing_arrived_is_left_as_it_is(store, runs, take_back):
    hold(runs)

    found = take_back(
        "w1", "r1", now=T0 + 1, lease_until=T0 + 31, cancels=True, due=False, after=-1
    )

    assert not found.taken
    assert found.run.status is RunStatus.WAITING
    assert found.run.lease_owner is None
    assert store.get_run("r1").lease_owner is None


def test_a_signal_lets_the_worker_take_the_run_back_with_its_length_and_signals(
    store, runs, take_back
):
    hold(runs)
    store.send_signal("r1", "go", b'"x"', now=T0 + 1)
    length = runs.next_seq("r1")

    found = take_back(
        "w1", "r1", now=T0 + 2, lease_until=T0 + 32, cancels=True, due=False, after=-1
    )

    assert found.taken
    assert found.length == length
    assert [(s.name, s.payload) for s in found.signals] == [("go", b'"x"')]
    run = store.get_run("r1")
    assert (run.status, run.lease_owner, run.lease_until) == (RunStatus.RUNNING, "w1", T0 + 32)
    assert not run.wake_requested
    assert found.run.lease_owner == "w1"


def test_every_signal_sent_is_read_oldest_first(store, runs, take_back):
    hold(runs)
    for i in range(3):
        store.send_signal("r1", f"s{i}", str(i).encode(), now=T0 + 1 + i)

    found = take_back(
        "w1", "r1", now=T0 + 5, lease_until=T0 + 35, cancels=True, due=False, after=-1
    )

    assert [s.name for s in found.signals] == ["s0", "s1", "s2"]


def test_only_the_signals_after_the_newest_one_known_are_read(store, runs, take_back):
    hold(runs)
    store.send_signal("r1", "seen", b"0", now=T0 + 1)
    known = store.load("r1").signals[-1].id
    store.send_signal("r1", "new", b"1", now=T0 + 2)
    store.send_signal("r1", "new", b"2", now=T0 + 3)

    found = take_back(
        "w1", "r1", now=T0 + 4, lease_until=T0 + 34, cancels=True, due=False, after=known
    )

    assert [(s.name, s.payload) for s in found.signals] == [("new", b"1"), ("new", b"2")]
    assert all(s.id > known for s in found.signals)


def test_a_wait_that_is_due_is_taken_back_with_nothing_arrived(store, runs, take_back):
    hold(runs)

    found = take_back("w1", "r1", now=T0 + 1, lease_until=T0 + 31, cancels=True, due=True, after=-1)

    assert found.taken
    assert found.signals == ()
    assert store.get_run("r1").lease_owner == "w1"


def test_a_pending_cancellation_wakes_the_run_only_until_it_is_delivered(store, runs, take_back):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    store.request_cancel("r1", now=T0 + 1)
    runs.claim_one("r1", "w1", now=T0 + 2)  # takes the wake-up; the cancellation stays
    runs.wait("r1", now=T0 + 3, ready_at=None)  # the execution knows of it already

    delivered = take_back(
        "w1", "r1", now=T0 + 4, lease_until=T0 + 34, cancels=False, due=False, after=-1
    )
    pending = take_back(
        "w1", "r1", now=T0 + 5, lease_until=T0 + 35, cancels=True, due=False, after=-1
    )

    assert not delivered.taken
    assert pending.taken
    assert pending.run.cancel_requested


def test_a_run_another_worker_holds_is_not_taken_back(store, runs, take_back):
    hold(runs)
    store.send_signal("r1", "go", b"1", now=T0 + 1)
    runs.claim_one("r1", "w2", now=T0 + 2)  # the wake-up made it claimable
    store.send_signal("r1", "go", b"2", now=T0 + 3)  # woken again, under w2's lease

    found = take_back("w1", "r1", now=T0 + 4, lease_until=T0 + 34, cancels=True, due=True, after=-1)

    assert not found.taken
    assert found.run.lease_owner == "w2"
    assert store.get_run("r1").lease_owner == "w2"


def test_a_run_its_own_worker_claimed_meanwhile_is_taken_back(store, runs, take_back):
    hold(runs)
    store.send_signal("r1", "go", b"1", now=T0 + 1)
    runs.claim_one("r1", "w1", now=T0 + 2)  # the worker's claim loop, which clears the wake-up

    found = take_back(
        "w1", "r1", now=T0 + 3, lease_until=T0 + 33, cancels=True, due=False, after=-1
    )

    assert found.taken
    assert [s.payload for s in found.signals] == [b"1"]
    assert store.get_run("r1").lease_until == T0 + 33


def test_a_finished_run_is_not_taken_back(store, runs, take_back):
    runs.start("r1")
    runs.claim_one("r1", "w1")
    runs.finish("r1", RunStatus.COMPLETED)

    found = take_back("w1", "r1", now=T0 + 1, lease_until=T0 + 31, cancels=True, due=True, after=-1)

    assert not found.taken
    assert found.run.status is RunStatus.COMPLETED


def test_an_unknown_run_is_not_found(store, take_back):
    with pytest.raises(_errors.RunNotFoundError):
        take_back("w1", "nope", now=T0, lease_until=T0 + 30, cancels=True, due=True, after=-1)
