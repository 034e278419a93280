"""Store conformance: signals and wake-ups. ``send_signal``, ``claim_run``, ``next_wake``.

A signal is stored before its run is woken, in one atomic write, and kept until
the run's history consumes it. ``wake_requested`` carries a wake-up that arrives
while a run is being worked on: the next ``append(status=WAITING)`` makes the run
ready at once instead of suspending it with nobody left to wake it.
"""

from __future__ import annotations

import threading

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

TERMINAL = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]


def signals_of(store, run_id):
    return [(s.name, s.payload) for s in store.load(run_id).signals]


def claimable(store, *, now, workflows=("wf",)):
    claimed = store.claim("probe", list(workflows), now=now, lease_until=now + 30, limit=100)
    return sorted(run.id for run in claimed)


# -- send_signal ------------------------------------------------------------------


def test_send_signal_stores_the_signal(store, runs):
    runs.start("r1")

    assert store.send_signal("r1", "approved", b'{"ok": true}', now=T0 + 5) is True

    (signal,) = store.load("r1").signals
    assert (signal.name, signal.payload, signal.sent_at) == ("approved", b'{"ok": true}', T0 + 5)
    assert isinstance(signal.id, int)


def test_signals_are_kept_in_the_order_sent_with_increasing_ids(store, runs):
    runs.start("r1")
    sent = [("a", b"1"), ("b", b"2"), ("a", b"3"), ("c", b""), ("a", b"5")]

    for i, (name, payload) in enumerate(sent):
        assert store.send_signal("r1", name, payload, now=T0 + i) is True

    signals = store.load("r1").signals
    assert [(s.name, s.payload) for s in signals] == sent
    assert [s.sent_at for s in signals] == [T0 + i for i in range(len(sent))]
    ids = [s.id for s in signals]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_signal_ids_order_the_signals_of_every_run(store, runs):
    runs.start("r1")
    runs.start("r2")

    for i in range(6):
        store.send_signal(f"r{i % 2 + 1}", "s", str(i).encode(), now=T0)

    r1, r2 = store.load("r1").signals, store.load("r2").signals
    assert [s.payload for s in r1] == [b"0", b"2", b"4"]
    assert [s.payload for s in r2] == [b"1", b"3", b"5"]
    by_id = sorted([*r1, *r2], key=lambda s: s.id)
    assert [s.payload for s in by_id] == [str(i).encode() for i in range(6)]


def test_a_run_without_signals_loads_none(store, runs):
    runs.start("r1")

    assert store.load("r1").signals == ()


def test_runs_do_not_share_signals(store, runs):
    runs.start("r1")
    runs.start("r2")
    runs.start("R1")

    store.send_signal("r1", "go", b"1", now=T0)

    assert signals_of(store, "r1") == [("go", b"1")]
    assert store.load("r2").signals == ()
    assert store.load("R1").signals == ()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00", bytes(range(256)), b"\xff\xfe" * 50_000],
    ids=["empty", "nul", "every-byte", "100kB"],
)
def test_signal_payloads_round_trip_exactly(store, runs, payload):
    runs.start("r1")

    store.send_signal("r1", "s", payload, now=T0)

    (signal,) = store.load("r1").signals
    assert signal.payload == payload
    assert type(signal.payload) is bytes


@pytest.mark.parametrize("name", ["", "approved", "ünïcödé ✓", "x" * 300, "a/b c"])
def test_signal_names_round_trip_exactly(store, runs, name):
    runs.start("r1")

    store.send_signal("r1", name, b"1", now=T0)

    assert [s.name for s in store.load("r1").signals] == [name]


def test_send_signal_leaves_the_history_alone(store, runs):
    runs.start("r1")
    runs.record("r1", history.StepCompleted("a", b"1"))
    events = store.load("r1").events

    store.send_signal("r1", "s", b"1", now=T0 + 1)

    assert store.load("r1").events == events


def test_send_signal_to_an_unknown_run_raises_and_stores_nothing(store, runs):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.send_signal("nope", "s", b"1", now=T0)

    assert info.value.run_id == "nope"
    runs.start("nope")
    assert store.load("nope").signals == ()


@pytest.mark.parametrize("status", TERMINAL)
@pytest.mark.parametrize("key", [None, "k1"])
def test_send_signal_to_a_finished_run_raises_and_changes_nothing(store, runs, status, key):
    runs.start("r1")
    runs.finish("r1", status, now=T0 + 1)
    before = store.load("r1")

    with pytest.raises(_errors.RunStateError):
        store.send_signal("r1", "s", b"1", now=T0 + 2, key=key)

    assert store.load("r1") == before
    assert before.signals == ()
    assert before.run.wake_requested is False


def test_a_signal_sent_before_the_run_finished_stays_after_it(store, runs):
    runs.start("r1")
    store.send_signal("r1", "s", b"1", now=T0)
    runs.finish("r1", RunStatus.COMPLETED, now=T0 + 1)

    assert signals_of(store, "r1") == [("s", b"1")]


# -- keys -----------------------------------------------------------------------


def test_a_second_signal_with_the_same_key_is_dropped(store, runs):
    runs.start("r1")
    assert store.send_signal("r1", "pay", b"1", now=T0 + 1, key="k1") is True
    runs.claim_one("r1", now=T0 + 2)  # clears wake_requested
    before = store.load("r1")

    assert store.send_signal("r1", "pay", b"2", now=T0 + 3, key="k1") is False
    assert store.send_signal("r1", "other", b"3", now=T0 + 4, key="k1") is False

    assert store.load("r1") == before  # nothing changed: no signal, no flag, no updated_at
    assert signals_of(store, "r1") == [("pay", b"1")]


def test_a_dropped_duplicate_does_not_wake_a_waiting_run(store, runs):
    runs.start("r1")
    store.send_signal("r1", "s", b"1", now=T0, key="k1")
    runs.claim_one("r1", now=T0 + 1)  # the run sees the signal, and waits for another
    runs.wait("r1", now=T0 + 4, ready_at=None)
    before = store.get_run("r1")
    assert before.status is RunStatus.WAITING

    assert store.send_signal("r1", "s", b"1", now=T0 + 5, key="k1") is False

    assert store.get_run("r1") == before
    assert claimable(store, now=T0 + 6) == []


def test_keys_are_per_run(store, runs):
    runs.start("r1")
    runs.start("r2")

    assert store.send_signal("r1", "s", b"1", now=T0, key="k") is True
    assert store.send_signal("r2", "s", b"2", now=T0, key="k") is True

    assert signals_of(store, "r1") == [("s", b"1")]
    assert signals_of(store, "r2") == [("s", b"2")]


def test_signals_without_a_key_are_never_dropped(store, runs):
    runs.start("r1")

    results = [store.send_signal("r1", "s", b"1", now=T0) for _ in range(3)]

    assert results == [True, True, True]
    assert signals_of(store, "r1") == [("s", b"1")] * 3


def test_keys_compare_exactly(store, runs):
    runs.start("r1")
    keys = ["k", "K", "k ", " k", "ķ", "k" * 255]

    assert [store.send_signal("r1", "s", k.encode(), now=T0, key=k) for k in keys] == [True] * 6
    assert [store.send_signal("r1", "s", b"again", now=T0, key=k) for k in keys] == [False] * 6

    assert [s.payload for s in store.load("r1").signals] == [k.encode() for k in keys]


def test_keys_of_a_run_id_and_a_position_fit(store, runs):
    """The executor's keys are ``<sending run id>:<position>``: up to 255 + 21 characters."""
    runs.start("r1")
    keys = [f"{'ü' * 255}:{2**63}", "€" * 512]

    assert [store.send_signal("r1", "s", k.encode(), now=T0, key=k) for k in keys] == [True] * 2
    assert [store.send_signal("r1", "s", b"again", now=T0, key=k) for k in keys] == [False] * 2

    assert [s.payload for s in store.load("r1").signals] == [k.encode() for k in keys]


def test_a_key_and_no_key_are_independent(store, runs):
    runs.start("r1")

    assert store.send_signal("r1", "s", b"1", now=T0) is True
    assert store.send_signal("r1", "s", b"2", now=T0, key="k") is True
    assert store.send_signal("r1", "s", b"3", now=T0) is True
    assert store.send_signal("r1", "s", b"4", now=T0, key="k") is False

    assert [s.payload for s in store.load("r1").signals] == [b"1", b"2", b"3"]


# -- waking the run -----------------------------------------------------------------


def test_a_signal_wakes_a_run_waiting_for_it(store, runs):
    runs.start("r1")
    runs.wait("r1", now=T0, ready_at=None)
    assert claimable(store, now=T0 + 100) == []

    store.send_signal("r1", "go", b"1", now=T0 + 7)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.updated_at) == (RunStatus.PENDING, T0 + 7, T0 + 7)
    assert run.wake_requested is True
    assert claimable(store, now=T0 + 7) == ["r1"]


def test_a_signal_wakes_a_run_sleeping_on_a_timer(store, runs):
    runs.start("r1")
    runs.wait("r1", now=T0, ready_at=T0 + 86_400)

    store.send_signal("r1", "go", b"1", now=T0 + 7)

    run = store.get_run("r1")
    assert (run.status, run.ready_at) == (RunStatus.PENDING, T0 + 7)
    assert claimable(store, now=T0 + 7) == ["r1"]


def test_a_signal_to_a_pending_run_keeps_its_ready_at(store, runs):
    runs.start("r1", now=T0)

    store.send_signal("r1", "go", b"1", now=T0 + 7)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.wake_requested) == (RunStatus.PENDING, T0, True)
    assert run.updated_at == T0 + 7


def test_a_signal_to_a_running_run_keeps_its_lease(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    run = store.get_run("r1")
    assert (run.status, run.lease_owner, run.lease_until) == (RunStatus.RUNNING, "w1", T0 + 30)
    assert run.wake_requested is True
    assert store.claim("w2", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5) == []
    assert store.renew("w1", ["r1"], lease_until=T0 + 40) == {"r1": False}


# -- wake_requested -------------------------------------------------------------------


def test_a_new_run_has_no_wake_requested(store, runs):
    assert runs.start("r1").wake_requested is False
    assert store.get_run("r1").wake_requested is False


def test_claim_clears_wake_requested(store, runs):
    runs.start("r1")
    store.send_signal("r1", "s", b"1", now=T0 + 1)

    (claimed,) = store.claim("w1", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=1)

    assert claimed.wake_requested is False
    assert store.get_run("r1") == claimed


def test_claim_run_clears_wake_requested(store, runs):
    runs.start("r1")
    store.send_signal("r1", "s", b"1", now=T0 + 1)

    claimed = store.claim_run("w1", "r1", now=T0 + 2, lease_until=T0 + 32)

    assert claimed is not None
    assert claimed.wake_requested is False
    assert store.get_run("r1") == claimed


@pytest.mark.parametrize("start", ["pending", "running", "waiting"])
def test_request_cancel_sets_wake_requested(store, runs, start):
    runs.start("r1")
    runs.put("r1", RunStatus(start), now=T0)

    run = store.request_cancel("r1", now=T0 + 1)

    assert (run.cancel_requested, run.wake_requested) == (True, True)
    assert store.get_run("r1").wake_requested is True


def test_wake_requested_survives_appends_until_a_claim(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.send_signal("r1", "s", b"1", now=T0 + 1)

    runs.record("r1", history.StepCompleted("a", b"1"), now=T0 + 2)

    assert store.get_run("r1").wake_requested is True


# -- append(status=WAITING) after a wake-up: no lost wake-ups -----------------------------

EVENT_COUNTS = [0, 1, 3]
"""Status-only, single-event and batch appends: each is a path of its own in SQL stores."""


def suspend(store, run_id, count, *, now, ready_at):
    seq = store.load(run_id).next_seq
    events = [history.ValueRecorded(f"wait{i}", b"{}") for i in range(count)]
    store.append(run_id, seq, events, now=now, status=RunStatus.WAITING, ready_at=ready_at)
    return seq + count


@pytest.mark.parametrize("count", EVENT_COUNTS)
@pytest.mark.parametrize("ready_at", [None, T0 + 3600])
def test_suspending_after_a_signal_arrived_makes_the_run_ready_now(store, runs, count, ready_at):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.send_signal("r1", "go", b"1", now=T0 + 1)  # while the worker runs the workflow

    next_seq = suspend(store, "r1", count, now=T0 + 2, ready_at=ready_at)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.updated_at) == (RunStatus.PENDING, T0 + 2, T0 + 2)
    assert (run.lease_owner, run.lease_until) == (None, None)
    assert store.load("r1").next_seq == next_seq  # the events were written all the same
    (claimed,) = store.claim("w2", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5)
    assert (claimed.id, claimed.wake_requested) == ("r1", False)


@pytest.mark.parametrize("count", EVENT_COUNTS)
def test_suspending_after_a_cancellation_request_makes_the_run_ready_now(store, runs, count):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.request_cancel("r1", now=T0 + 1)

    suspend(store, "r1", count, now=T0 + 2, ready_at=None)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.cancel_requested) == (RunStatus.PENDING, T0 + 2, True)
    assert claimable(store, now=T0 + 2) == ["r1"]


@pytest.mark.parametrize("count", EVENT_COUNTS)
def test_a_cancellation_request_wakes_a_run_until_a_claim_takes_it(store, runs, count):
    """A cancelled run that waits in its cleanup (after the claim told it) does wait."""
    runs.start("r1")
    store.request_cancel("r1", now=T0)
    claimed = runs.claim_one("r1", "w1", now=T0 + 1)  # clears wake_requested, not cancel_requested
    assert claimed.cancel_requested is True

    suspend(store, "r1", count, now=T0 + 2, ready_at=None)

    run = store.get_run("r1")
    assert (run.status, run.ready_at, run.cancel_requested) == (RunStatus.WAITING, None, True)
    assert claimable(store, now=T0 + 2) == []
    store.send_signal("r1", "go", b"1", now=T0 + 3)  # what the cleanup waits for
    assert store.get_run("r1").status is RunStatus.PENDING


@pytest.mark.parametrize("count", EVENT_COUNTS)
def test_suspending_with_nothing_arrived_suspends(store, runs, count):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)

    suspend(store, "r1", count, now=T0 + 2, ready_at=T0 + 3600)

    run = store.get_run("r1")
    assert (run.status, run.ready_at) == (RunStatus.WAITING, T0 + 3600)


@pytest.mark.parametrize("count", EVENT_COUNTS)
def test_a_wake_up_taken_by_a_claim_does_not_wake_the_next_suspension(store, runs, count):
    runs.start("r1")
    store.send_signal("r1", "go", b"1", now=T0)
    runs.claim_one("r1", "w1", now=T0 + 1)  # the run will see the signal in its load

    suspend(store, "r1", count, now=T0 + 2, ready_at=None)

    assert store.get_run("r1").status is RunStatus.WAITING


@pytest.mark.parametrize("status", [*TERMINAL, RunStatus.PENDING])
def test_only_waiting_yields_to_a_wake_up(store, runs, status):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.send_signal("r1", "go", b"1", now=T0 + 1)

    store.append("r1", 1, [history.WorkflowCompleted()], now=T0 + 2, status=status, ready_at=None)

    run = store.get_run("r1")
    assert (run.status, run.ready_at) == (status, None)


def test_a_fenced_out_suspension_changes_nothing(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0)
    store.send_signal("r1", "go", b"1", now=T0 + 1)
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append(
            "r1", 0, [history.ValueRecorded("w", b"{}")], now=T0 + 2, status=RunStatus.WAITING
        )

    assert store.load("r1") == before


# -- claim_run ------------------------------------------------------------------------


@pytest.mark.parametrize("ready_at", [None, T0 - 10, T0 + 3600])
def test_claim_run_takes_a_waiting_run_whatever_its_ready_at(store, runs, ready_at):
    runs.start("r1")
    runs.wait("r1", now=T0 - 20, ready_at=ready_at)

    claimed = store.claim_run("w1", "r1", now=T0, lease_until=T0 + 30)

    assert claimed is not None
    assert (claimed.id, claimed.workflow, claimed.status) == ("r1", "wf", RunStatus.RUNNING)
    assert (claimed.lease_owner, claimed.lease_until, claimed.updated_at) == ("w1", T0 + 30, T0)
    assert store.get_run("r1") == claimed
    assert store.claim("w2", ["wf"], now=T0 + 20, lease_until=T0 + 50, limit=5) == []


def test_claim_run_takes_a_pending_run(store, runs):
    runs.start("r1")

    claimed = store.claim_run("w1", "r1", now=T0, lease_until=T0 + 30)

    assert claimed is not None
    assert (claimed.status, claimed.lease_owner) == (RunStatus.RUNNING, "w1")
    assert claimed.created_at == T0


def test_claim_run_reports_a_requested_cancellation(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    store.request_cancel("r1", now=T0 + 1)

    claimed = store.claim_run("w1", "r1", now=T0 + 2, lease_until=T0 + 32)

    assert claimed is not None
    assert (claimed.cancel_requested, claimed.wake_requested) == (True, False)


@pytest.mark.parametrize("now", [T0 + 1, T0 + 30])
def test_claim_run_leaves_a_live_lease_of_another_worker_alone(store, runs, now):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    store.send_signal("r1", "s", b"1", now=T0)
    before = store.get_run("r1")

    assert store.claim_run("w2", "r1", now=now, lease_until=now + 30) is None

    assert store.get_run("r1") == before  # lease_until = now is still live, as for claim


def test_claim_run_takes_over_an_expired_lease(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    claimed = store.claim_run("w2", "r1", now=T0 + 31, lease_until=T0 + 61)

    assert claimed is not None
    assert (claimed.lease_owner, claimed.lease_until) == ("w2", T0 + 61)
    assert store.renew("w1", ["r1"], lease_until=T0 + 90) == {}


def test_claim_run_of_the_workers_own_live_lease_renews_it(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    store.send_signal("r1", "s", b"1", now=T0 + 1)

    claimed = store.claim_run("w1", "r1", now=T0 + 2, lease_until=T0 + 60)

    assert claimed is not None
    assert (claimed.lease_owner, claimed.lease_until, claimed.updated_at) == ("w1", T0 + 60, T0 + 2)
    assert claimed.wake_requested is False


@pytest.mark.parametrize("status", TERMINAL)
def test_claim_run_of_a_finished_run_returns_none(store, runs, status):
    runs.start("r1")
    runs.finish("r1", status, now=T0)
    before = store.load("r1")

    assert store.claim_run("w1", "r1", now=T0 + 1, lease_until=T0 + 31) is None

    assert store.load("r1") == before


def test_claim_run_of_an_unknown_run_returns_none(store):
    assert store.claim_run("w1", "nope", now=T0, lease_until=T0 + 30) is None
    assert store.list_runs() == []


def test_claim_run_leaves_the_history_alone(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    before = store.load("r1")

    store.claim_run("w1", "r1", now=T0 + 1, lease_until=T0 + 31)

    assert store.load("r1").events == before.events


def test_concurrent_claim_runs_lease_the_run_once(store, runs, open_store, race, unexpected):
    runs.start("r1")
    runs.wait("r1", ready_at=None)
    stores = [store] + [open_store() for _ in range(5)]

    outcomes = race(6, lambda i: stores[i].claim_run(f"w{i}", "r1", now=T0, lease_until=T0 + 30))

    assert unexpected(outcomes) == []
    winners = [o.value for o in outcomes if o.value is not None]
    assert len(winners) == 1
    assert store.get_run("r1").lease_owner == winners[0].lease_owner


def test_claim_and_claim_run_racing_lease_the_run_once(store, runs, open_store, race, unexpected):
    runs.start("r1")
    other = open_store()

    def take(i):
        if i == 0:
            found = store.claim("w0", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
            return found[0] if found else None
        return other.claim_run("w1", "r1", now=T0, lease_until=T0 + 30)

    outcomes = race(2, take)

    assert unexpected(outcomes) == []
    assert len([o.value for o in outcomes if o.value is not None]) == 1


# -- next_wake ------------------------------------------------------------------------


def test_next_wake_of_an_empty_store_is_none(store):
    assert store.next_wake(["wf"], now=T0) is None


def test_next_wake_of_a_ready_run_is_its_ready_at(store, runs):
    runs.start("r1", now=T0)

    assert store.next_wake(["wf"], now=T0 + 5) == T0


def test_next_wake_is_the_earliest_timer(store, runs):
    for run_id, ready_at in [("r1", T0 + 60), ("r2", T0 + 10), ("r3", T0 + 3600)]:
        runs.start(run_id)
        runs.wait(run_id, ready_at=ready_at)

    assert store.next_wake(["wf"], now=T0) == T0 + 10


def test_next_wake_ignores_runs_waiting_for_a_signal(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=None)

    assert store.next_wake(["wf"], now=T0) is None


@pytest.mark.parametrize("status", TERMINAL)
def test_next_wake_ignores_finished_runs(store, runs, status):
    runs.start("r1")
    # Even if a buggy caller leaves a ready_at on a finished run.
    store.append("r1", 1, [history.WorkflowCompleted()], now=T0, status=status, ready_at=T0)

    assert store.next_wake(["wf"], now=T0) is None


def test_next_wake_of_a_leased_run_is_when_its_lease_ends(store, runs):
    runs.start("r1", now=T0)
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert store.next_wake(["wf"], now=T0 + 1) == T0 + 30


def test_next_wake_of_a_leased_run_ready_later_is_its_ready_at(store, runs):
    runs.start("r1")
    runs.wait("r1", ready_at=T0 + 100)
    store.claim_run("w1", "r1", now=T0, lease_until=T0 + 30)

    assert store.next_wake(["wf"], now=T0 + 1) == T0 + 100


def test_next_wake_of_an_expired_lease_is_the_ready_at(store, runs):
    runs.start("r1", now=T0)
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)

    assert store.next_wake(["wf"], now=T0 + 31) == T0


@pytest.mark.parametrize(
    ("lease_until", "timer", "expected"),
    [
        (T0 + 30, T0 + 60, T0 + 30),  # the lease ends first
        (T0 + 90, T0 + 60, T0 + 60),  # the timer fires first
        (T0 + 60, T0 + 60, T0 + 60),
    ],
)
def test_next_wake_weighs_leases_and_timers(store, runs, lease_until, timer, expected):
    runs.start("leased", now=T0)
    runs.claim_one("leased", "w1", now=T0, lease_until=lease_until)
    runs.start("sleeping", now=T0)
    runs.wait("sleeping", now=T0, ready_at=timer)

    assert store.next_wake(["wf"], now=T0 + 1) == expected


def test_next_wake_looks_past_many_leased_runs(store, runs):
    for i in range(20):
        runs.start(f"leased{i:02}", now=T0 + i)
        runs.claim_one(f"leased{i:02}", "w1", now=T0 + i, lease_until=T0 + 500 - i)
    runs.start("sleeping", now=T0)
    runs.wait("sleeping", now=T0, ready_at=T0 + 1000)

    assert store.next_wake(["wf"], now=T0 + 100) == T0 + 481


def test_next_wake_takes_only_the_given_workflows(store, runs):
    runs.start("a1", "shop.a", now=T0)
    runs.start("b1", "shop.b", now=T0)
    runs.wait("b1", now=T0, ready_at=T0 + 50)
    runs.wait("a1", now=T0, ready_at=T0 + 70)

    assert store.next_wake(["shop.a"], now=T0) == T0 + 70
    assert store.next_wake(("shop.b", "shop.c"), now=T0) == T0 + 50
    assert store.next_wake({"SHOP.A"}, now=T0) is None
    assert store.next_wake([], now=T0) is None


def test_next_wake_changes_nothing(store, runs):
    runs.start("r1")
    before = store.load("r1")

    store.next_wake(["wf"], now=T0 + 100)

    assert store.load("r1") == before


@pytest.mark.parametrize("scenario", ["ready", "timer", "leased", "signalled", "expired"])
def test_a_claim_at_next_wake_finds_a_run_and_none_before(store, runs, scenario):
    runs.start("r1", now=T0 - 200)
    if scenario == "timer":
        runs.wait("r1", now=T0, ready_at=T0 + 40)
    elif scenario == "leased":
        runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 40)
    elif scenario == "signalled":
        runs.wait("r1", now=T0, ready_at=None)
        store.send_signal("r1", "s", b"1", now=T0 + 40)
    elif scenario == "expired":
        runs.claim_one("r1", "w1", now=T0 - 100, lease_until=T0 - 70)
    now = T0 + 1

    wake = store.next_wake(["wf"], now=now)

    assert wake is not None
    if wake > now:
        # lease_until < now is expired; the instant it ends is still live
        assert claimable(store, now=wake - 0.5) == []
        assert claimable(store, now=wake + 0.001) == ["r1"]
    else:
        assert claimable(store, now=now) == ["r1"]


# -- racing ---------------------------------------------------------------------------

SENDERS = 8
PER_SENDER = 6
"""Signals each sender sends of each kind: 24 keys sent twice at once, 48 without a key."""


@pytest.mark.parametrize("instances", ["one-instance", "instance-per-sender"])
def test_concurrent_signals_lose_nothing_and_drop_duplicates(
    store, runs, open_store, race, unexpected, instances
):
    if instances == "one-instance":
        stores = [store] * SENDERS
    elif open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    else:
        stores = [store] + [open_store() for _ in range(SENDERS - 1)]
    runs.start("r1")
    runs.wait("r1", ready_at=None)

    def send_all(i):
        results = {}
        for j in range(PER_SENDER):
            # Senders i and i + 4 use the same keys: each key is sent twice, concurrently.
            key = f"k{i % (SENDERS // 2)}-{j}"
            results[key] = stores[i].send_signal("r1", "s", f"{i}:{j}".encode(), now=T0, key=key)
            stores[i].send_signal("r1", "free", f"{i}:{j}".encode(), now=T0)  # no key
        return results

    outcomes = race(SENDERS, send_all)

    assert unexpected(outcomes) == []
    keys = {key for outcome in outcomes for key in outcome.value}
    assert len(keys) == SENDERS // 2 * PER_SENDER
    for key in keys:
        won = [o.value[key] for o in outcomes if key in o.value]
        assert sorted(won) == [False, True], key  # exactly one send of each key counted
    signals = store.load("r1").signals
    keyed = [s for s in signals if s.name == "s"]
    free = [s for s in signals if s.name == "free"]
    assert len(keyed) == len(keys)
    assert sorted(s.payload for s in free) == sorted(
        f"{i}:{j}".encode() for i in range(SENDERS) for j in range(PER_SENDER)
    )
    ids = [s.id for s in signals]
    assert ids == sorted(set(ids))  # oldest first, no id twice
    for i in range(SENDERS):  # each sender's signals in the order it sent them
        mine = [s.payload for s in free if s.payload.startswith(f"{i}:".encode())]
        assert mine == [f"{i}:{j}".encode() for j in range(PER_SENDER)]
    run = store.get_run("r1")
    assert (run.status, run.wake_requested) == (RunStatus.PENDING, True)


def test_a_signal_racing_a_suspension_is_never_lost(store, runs, open_store, race, unexpected):
    """Whichever lands first, the run ends up ready: the lost wake-up cannot happen."""
    other = open_store()
    for attempt in range(15):
        run_id = f"r{attempt}"
        runs.start(run_id)
        runs.claim_one(run_id, "w1", now=T0)

        def act(i, run_id=run_id):
            if i == 0:
                store.append(
                    run_id,
                    1,
                    [history.ValueRecorded("wait", b"{}")],
                    now=T0 + 1,
                    status=RunStatus.WAITING,
                    ready_at=None,
                )
            else:
                other.send_signal(run_id, "go", b"1", now=T0 + 2)

        outcomes = race(2, act)

        assert unexpected(outcomes) == []
        run = store.get_run(run_id)
        assert run.status is RunStatus.PENDING, run
        assert run.ready_at is not None
        assert run.ready_at <= T0 + 2
        assert signals_of(store, run_id) == [("go", b"1")]


def test_a_signal_racing_the_end_of_the_run_is_stored_or_refused(
    store, runs, open_store, race, unexpected
):
    other = open_store()
    for attempt in range(15):
        run_id = f"r{attempt}"
        runs.start(run_id)
        runs.claim_one(run_id, "w1", now=T0)

        def act(i, run_id=run_id):
            if i == 0:
                runs.finish(run_id, RunStatus.COMPLETED, now=T0 + 1)
                return None
            return other.send_signal(run_id, "go", b"1", now=T0 + 1)

        outcomes = race(2, act)

        assert unexpected(outcomes, _errors.RunStateError) == []
        signals = signals_of(store, run_id)
        if outcomes[1].error is None:
            assert outcomes[1].value is True
            assert signals == [("go", b"1")]
        else:
            assert signals == []
        assert store.get_run(run_id).status is RunStatus.COMPLETED


def test_load_sees_signals_and_the_wake_they_caused_together(store, runs, open_store):
    """One read: a signal is never loaded without its wake-up, nor the reverse.

    The k-th signal is sent at ``T0 + k``, so a run loaded with k signals must have
    ``updated_at == T0 + k`` and ``wake_requested == (k > 0)``.
    """
    runs.start("r1", now=T0)
    reader = open_store()
    sends = 120
    done = threading.Event()
    seen = []

    def read():
        while not done.is_set():
            seen.append(reader.load("r1"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        for k in range(1, sends + 1):
            store.send_signal("r1", "s", str(k).encode(), now=T0 + k)
    finally:
        done.set()
        thread.join(30)
    assert not thread.is_alive()

    seen.append(reader.load("r1"))
    for state in seen:
        k = len(state.signals)
        assert (state.run.updated_at, state.run.wake_requested) == (T0 + k, k > 0), (
            f"{k} signals loaded with a run from another write"
        )
        assert [s.payload for s in state.signals] == [str(i).encode() for i in range(1, k + 1)]
    assert len(seen[-1].signals) == sends
