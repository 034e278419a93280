"""Store conformance: ``wait_for_change`` wake-ups, ``close``, and durability across instances.

Blocking calls get generous bounds only: a wake-up must come well before the
waiter's own timeout, which is far longer than any change takes to make.
"""

from __future__ import annotations

import threading
import time

import pytest

from fluxo import history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

WAKE_TIMEOUT = 10.0
"""How long a waiter waits; returning ``False`` after it means the wake-up was lost."""

SETTLE = 0.2
"""How long to let a waiter block before making the change it waits for."""


class Waiter:
    """Calls ``store.wait_for_change`` in a thread and reports what it returned."""

    def __init__(self, store, run_id, timeout=WAKE_TIMEOUT, ignoring=()):
        self.result = None
        self.error = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._body, args=(store, run_id, timeout, ignoring))
        self._thread.daemon = True
        self._thread.start()
        assert self._ready.wait(WAKE_TIMEOUT)
        time.sleep(SETTLE)  # let it block before the change is made

    def _body(self, store, run_id, timeout, ignoring):
        self._ready.set()
        try:
            self.result = store.wait_for_change(run_id, timeout, ignoring=ignoring)
        except BaseException as exc:  # reported by outcome()
            self.error = exc

    def outcome(self):
        self._thread.join(WAKE_TIMEOUT + 10)
        assert not self._thread.is_alive(), "wait_for_change did not return after its timeout"
        if self.error is not None:
            raise self.error
        return self.result


# -- wait_for_change --------------------------------------------------------------


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_wait_for_change_returns_false_when_nothing_happens(store, runs, run_id):
    runs.start("r1")
    started = time.monotonic()

    assert store.wait_for_change(run_id, 0.2) is False

    assert time.monotonic() - started < 5


def test_wait_for_change_with_no_timeout_left_returns_at_once(store):
    started = time.monotonic()

    assert store.wait_for_change(None, 0) is False

    assert time.monotonic() - started < 5


def test_a_new_run_wakes_a_waiter_on_any_run(store):
    waiter = Waiter(store, None)

    store.create_run("r1", "wf", b"[]", now=T0)

    assert waiter.outcome() is True


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_a_status_change_wakes_a_waiter(store, runs, run_id):
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    waiter = Waiter(store, run_id)

    store.append(
        "r1", 1, [history.WorkflowCompleted("", b"1")], now=T0 + 1, status=RunStatus.COMPLETED
    )

    assert waiter.outcome() is True


def test_a_cancellation_request_wakes_a_waiter(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    waiter = Waiter(store, "r1")

    store.request_cancel("r1", now=T0 + 1)

    assert waiter.outcome() is True


def test_a_cancellation_request_to_a_running_run_wakes_a_waiter(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    waiter = Waiter(store, "r1")

    store.request_cancel("r1", now=T0 + 1)

    assert waiter.outcome() is True


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_a_signal_wakes_a_waiter(store, runs, run_id):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    waiter = Waiter(store, run_id)

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    assert waiter.outcome() is True


def test_a_signal_to_a_running_run_wakes_a_waiter(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    waiter = Waiter(store, "r1")

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    assert waiter.outcome() is True


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_a_signal_through_another_instance_wakes_a_waiter(store, runs, open_store, run_id):
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    store.send_signal("r1", "first", b"1", now=T0 + 1)
    other = open_store()
    waiter = Waiter(other, run_id)

    # The run's row stays as it was (already flagged, same clock): only the signal is new.
    store.send_signal("r1", "second", b"2", now=T0 + 1)

    assert waiter.outcome() is True


def test_reopening_a_run_wakes_a_waiter(store, runs):
    runs.start("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0)
    waiter = Waiter(store, None)

    store.reopen("r1", now=T0 + 1)

    assert waiter.outcome() is True


def test_a_wait_on_any_run_ignoring_one_is_woken_by_a_change_of_another(store, runs):
    runs.start("r1")
    runs.start("r2")
    runs.wait("r2", ready_at=None)
    waiter = Waiter(store, None, ignoring={"r1"})

    store.send_signal("r2", "go", b"1", now=T0 + 1)

    assert waiter.outcome() is True


IGNORED_TIMEOUT = 0.6
"""A wait that must not be ended by a change it ignores: shorter than any store's polls."""


def test_a_change_of_an_ignored_run_does_not_end_a_wait_on_any_run(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    waiter = Waiter(store, None, timeout=IGNORED_TIMEOUT, ignoring={"r1"})

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    assert waiter.outcome() is False


class LiveView:
    """The runs a wait ignores, read each time it checks (as a worker passes its held runs)."""

    def __init__(self, *run_ids):
        self.run_ids = set(run_ids)

    def __contains__(self, run_id):
        return run_id in self.run_ids


def test_a_wait_ignoring_a_live_view_counts_a_change_once_the_run_left_it(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    held = LiveView("r1")
    waiter = Waiter(store, None, ignoring=held)
    store.send_signal("r1", "go", b"1", now=T0 + 1)  # ignored
    time.sleep(SETTLE)

    held.run_ids.clear()
    store.send_signal("r1", "go", b"2", now=T0 + 2)

    assert waiter.outcome() is True


def test_releasing_a_run_wakes_a_waiter(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    waiter = Waiter(store, None)

    store.release("w1", "r1", now=T0 + 1)

    assert waiter.outcome() is True


def test_one_change_wakes_every_waiter(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    waiters = [Waiter(store, run_id) for run_id in ("r1", "r1", None)]

    store.append("r1", 1, [history.WorkflowFailed("", b"{}")], now=T0 + 1, status=RunStatus.FAILED)

    assert [waiter.outcome() for waiter in waiters] == [True, True, True]


def test_a_change_made_through_another_instance_wakes_a_waiter(store, runs, open_store):
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    other = open_store()
    waiter = Waiter(other, "r1")

    store.append(
        "r1", 1, [history.WorkflowCompleted("", b"1")], now=T0 + 1, status=RunStatus.COMPLETED
    )

    assert waiter.outcome() is True


def test_a_run_created_through_another_instance_wakes_a_waiter(store, open_store):
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    other = open_store()
    waiter = Waiter(other, None)

    store.create_run("r1", "wf", b"[]", now=T0)

    assert waiter.outcome() is True


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_a_change_after_the_token_wakes_a_later_wait_at_once(store, runs, run_id):
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    token = store.change_token(run_id)
    store.append(
        "r1", 1, [history.WorkflowCompleted("", b"1")], now=T0 + 1, status=RunStatus.COMPLETED
    )
    started = time.monotonic()
    assert store.wait_for_change(run_id, WAKE_TIMEOUT, since=token) is True
    assert time.monotonic() - started < WAKE_TIMEOUT / 2


def test_a_token_with_no_change_since_still_waits(store, runs):
    runs.start("r1")
    token = store.change_token("r1")
    assert store.wait_for_change("r1", 0.2, since=token) is False


@pytest.mark.parametrize("run_id", [None, "r1"])
def test_a_change_through_another_instance_after_the_token_is_not_missed(
    store, runs, open_store, run_id
):
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    runs.start("r1")
    runs.claim_one("r1", now=T0)
    other = open_store()
    token = other.change_token(run_id)
    store.append(
        "r1", 1, [history.WorkflowCompleted("", b"1")], now=T0 + 1, status=RunStatus.COMPLETED
    )
    assert other.wait_for_change(run_id, WAKE_TIMEOUT, since=token) is True


@pytest.mark.parametrize("change", ["create", "finish"])
def test_a_change_stamped_by_a_slower_clock_wakes_a_waiter_on_another_instance(
    store, runs, open_store, change
):
    """Machines' clocks differ: a change must wake waiters even if its ``now`` is older."""
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    runs.start("old", now=T0)
    runs.start("new", now=T0 + 100)
    other = open_store()
    waiter = Waiter(other, None)

    if change == "create":
        store.create_run("r1", "wf", b"[]", now=T0 + 50)
    else:
        runs.finish("old", RunStatus.COMPLETED, now=T0 + 50)

    assert waiter.outcome() is True


# -- close and durability -------------------------------------------------------


def test_close_is_idempotent(store, runs):
    runs.start("r1")

    store.close()
    store.close()


def test_close_of_an_unused_store_is_fine(open_store):
    fresh = open_store()

    fresh.close()
    fresh.close()


def test_runs_outlive_the_store_instance_that_wrote_them(store, runs, open_store):
    if open_store.shares_instances:
        pytest.skip("the memory store keeps nothing once closed")
    runs.start("r1", input=b"\x00in")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    runs.record("r1", history.StepCompleted("s", b"\xff"), now=T0 + 1)
    store.request_cancel("r1", now=T0 + 2)
    before = store.load("r1")
    store.close()

    again = open_store()

    assert again.load("r1") == before
