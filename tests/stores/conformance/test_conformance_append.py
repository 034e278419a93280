"""Store conformance: ``append``, the fenced, atomic write every durable call makes.

A history has no gaps and no duplicates: a position is written once, by one writer,
and the run's status changes in the same write as the events it reflects.
"""

from __future__ import annotations

import threading

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def step(name, data=b"null"):
    return history.StepCompleted(name, data)


def test_append_records_events_at_the_next_positions(store, runs):
    runs.start("r1")

    store.append("r1", 1, [step("a")], now=T0 + 1)
    store.append("r1", 2, [step("b"), step("c"), history.ValueRecorded("uuid", b"u")], now=T0 + 2)

    assert store.load("r1").events == (
        history.WorkflowStarted("wf", b"[]"),
        step("a"),
        step("b"),
        step("c"),
        history.ValueRecorded("uuid", b"u"),
    )


@pytest.mark.parametrize("expected_seq", [0, 1, 2])
def test_append_at_a_taken_position_raises_and_writes_nothing(store, runs, expected_seq):
    runs.start("r1")
    runs.record("r1", step("a"), step("b"))
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError) as info:
        store.append("r1", expected_seq, [step("intruder")], now=T0 + 1)

    assert info.value.run_id == "r1"
    assert store.load("r1") == before


def test_an_append_overlapping_the_end_writes_none_of_its_events(store, runs):
    runs.start("r1")
    runs.record("r1", step("a"), step("b"))  # positions 1 and 2
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        # positions 2 (taken), 3 and 4 (free)
        store.append("r1", 2, [step("x"), step("y"), step("z")], now=T0 + 1)

    assert store.load("r1") == before


@pytest.mark.parametrize("gap", [1, 10])
def test_append_past_the_end_raises_and_writes_nothing(store, runs, gap):
    runs.start("r1")
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append("r1", before.next_seq + gap, [step("a")], now=T0 + 1)

    assert store.load("r1") == before
    store.append("r1", before.next_seq, [step("a")], now=T0 + 1)  # the end is still free


def test_append_at_a_negative_position_raises_and_writes_nothing(store, runs):
    runs.start("r1")
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append("r1", -1, [step("a")], now=T0 + 1)

    assert store.load("r1") == before


def test_a_conflicting_append_does_not_change_the_run(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append(
            "r1",
            0,
            [history.WorkflowCompleted("", b"1")],
            now=T0 + 5,
            status=RunStatus.COMPLETED,
        )

    assert store.load("r1") == before


@pytest.mark.parametrize("status", [None, RunStatus.COMPLETED])
def test_append_to_an_unknown_run_raises_and_creates_nothing(store, status):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.append("nope", 0, [history.WorkflowStarted("wf", b"[]")], now=T0, status=status)

    assert info.value.run_id == "nope"
    with pytest.raises(_errors.RunNotFoundError):
        store.load("nope")
    assert store.list_runs() == []


# -- the run's projection, written with the events ------------------------------


def test_append_with_a_status_sets_status_ready_at_updated_at_and_clears_the_lease(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0 + 1, lease_until=T0 + 31)

    store.append(
        "r1",
        1,
        [history.ValueRecorded("timer", b"{}")],
        now=T0 + 2,
        status=RunStatus.WAITING,
        ready_at=T0 + 3600,
    )

    run = store.get_run("r1")
    assert run.status is RunStatus.WAITING
    assert run.ready_at == T0 + 3600
    assert run.updated_at == T0 + 2
    assert (run.lease_owner, run.lease_until) == (None, None)
    assert run.created_at == T0
    assert store.load("r1").events[1] == history.ValueRecorded("timer", b"{}")


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_append_can_finish_a_run(store, runs, status):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1)

    store.append("r1", 1, [history.WorkflowCompleted("", b"1")], now=T0 + 2, status=status)

    run = store.get_run("r1")
    assert run.status is status
    assert run.updated_at == T0 + 2
    assert run.ready_at is None
    assert (run.lease_owner, run.lease_until) == (None, None)


def test_append_with_a_status_and_no_ready_at_leaves_the_run_unready(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1)

    store.append(
        "r1", 1, [history.ValueRecorded("signal", b"{}")], now=T0 + 2, status=RunStatus.WAITING
    )

    assert store.get_run("r1").ready_at is None
    assert store.claim("w2", ["wf"], now=T0 + 10**6, lease_until=T0 + 10**6 + 30, limit=10) == []


def test_append_without_a_status_leaves_the_run_as_it_is(store, runs):
    runs.start("r1")
    claimed = runs.claim_one("r1", "w1", now=T0 + 1, lease_until=T0 + 31)

    store.append("r1", 1, [step("a")], now=T0 + 2, ready_at=T0 + 999)

    run = store.get_run("r1")
    assert run.status is RunStatus.RUNNING
    assert (run.lease_owner, run.lease_until) == ("w1", T0 + 31)
    assert run.ready_at == claimed.ready_at
    assert store.claim("w2", ["wf"], now=T0 + 3, lease_until=T0 + 33, limit=10) == []
    assert store.renew("w1", ["r1"], lease_until=T0 + 40) == {"r1": False}


def test_append_of_no_events_with_a_status_changes_only_the_run(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1)
    events = store.load("r1").events

    store.append("r1", 1, [], now=T0 + 2, status=RunStatus.PENDING, ready_at=T0 + 60)

    state = store.load("r1")
    assert state.events == events
    assert (state.run.status, state.run.ready_at, state.run.lease_owner) == (
        RunStatus.PENDING,
        T0 + 60,
        None,
    )


def test_a_stale_status_only_append_is_fenced(store, runs):
    runs.start("r1")
    runs.record("r1", step("a"))
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append("r1", 1, [], now=T0 + 2, status=RunStatus.COMPLETED)

    assert store.load("r1") == before


def test_a_worker_whose_lease_was_taken_over_cannot_write(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0, lease_until=T0 + 30)
    seq = runs.next_seq("r1")
    runs.claim_one("r1", "w2", now=T0 + 31, lease_until=T0 + 61)  # w1's lease expired
    store.append("r1", seq, [step("charge", b"w2")], now=T0 + 32)
    before = store.load("r1")

    with pytest.raises(_errors.SequenceConflictError):
        store.append(
            "r1", seq, [history.WorkflowFailed("", b"w1")], now=T0 + 33, status=RunStatus.FAILED
        )

    assert store.load("r1") == before
    assert before.run.lease_owner == "w2"


# -- when each event was recorded ---------------------------------------------


@pytest.mark.parametrize("owner", [None, "inline-1"])
def test_recorded_at_of_a_new_run_is_its_creation_time(store, owner):
    now = T0 + 0.123456789
    store.create_run("r1", "wf", b"[]", now=now, owner=owner, lease_until=now + 30)

    state = store.load("r1")

    assert state.recorded_at == (now,)


def test_recorded_at_is_the_now_of_each_append(store, runs):
    runs.start("r1")

    store.append("r1", 1, [step("a")], now=T0 + 1.5)
    store.append("r1", 2, [step("b"), step("c"), history.ValueRecorded("uuid", b"u")], now=T0 + 2)
    store.append("r1", 5, [step("d")], now=T0 + 2.000001)

    state = store.load("r1")
    assert state.recorded_at == (T0, T0 + 1.5, T0 + 2, T0 + 2, T0 + 2, T0 + 2.000001)
    assert len(state.recorded_at) == len(state.events)


@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize(
    "status", [RunStatus.PENDING, RunStatus.WAITING, RunStatus.COMPLETED, RunStatus.FAILED]
)
def test_recorded_at_of_an_append_that_changes_the_status(store, runs, status, count):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1)

    store.append(
        "r1", 1, [step(str(i)) for i in range(count)], now=T0 + 7.25, status=status, ready_at=T0 + 9
    )

    state = store.load("r1")
    assert state.run.status is status
    assert state.recorded_at == (T0,) + (T0 + 7.25,) * count


def test_recorded_at_of_a_wait_that_a_signal_turned_into_a_wake_up(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1)
    store.send_signal("r1", "go", b"1", now=T0 + 2)

    runs.wait("r1", now=T0 + 3)

    state = store.load("r1")
    assert state.run.status is RunStatus.PENDING
    assert state.recorded_at == (T0, T0 + 3)


def test_recorded_at_of_a_status_only_append_adds_nothing(store, runs):
    runs.start("r1")
    runs.record("r1", step("a"), now=T0 + 1)

    store.append("r1", 2, [], now=T0 + 2, status=RunStatus.PENDING, ready_at=T0 + 60)

    assert store.load("r1").recorded_at == (T0, T0 + 1)


def test_recorded_at_of_a_retried_run_is_the_time_of_reopen(store, runs):
    runs.start("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0 + 1)

    store.reopen("r1", now=T0 + 50)
    runs.record("r1", step("a"), now=T0 + 51)

    state = store.load("r1")
    assert [type(event) for event in state.events] == [
        history.WorkflowStarted,
        history.WorkflowFailed,
        history.RunRetried,
        history.StepCompleted,
    ]
    assert state.recorded_at == (T0, T0 + 1, T0 + 50, T0 + 51)


def test_recorded_at_is_the_callers_now_even_from_a_clock_behind(store, runs):
    runs.start("r1", now=T0 + 10)

    runs.record("r1", step("a"), now=T0 + 4)  # another worker's clock, a little behind

    assert store.load("r1").recorded_at == (T0 + 10, T0 + 4)


def test_recorded_at_of_a_refused_append_is_not_kept(store, runs):
    runs.start("r1")
    runs.record("r1", step("a"), now=T0 + 1)

    with pytest.raises(_errors.SequenceConflictError):
        store.append("r1", 1, [step("x"), step("y")], now=T0 + 2, status=RunStatus.COMPLETED)
    runs.record("r1", step("b"), now=T0 + 3)

    assert store.load("r1").recorded_at == (T0, T0 + 1, T0 + 3)


def test_recorded_at_of_a_long_history_matches_every_event(store, runs, open_store):
    """Long enough that stores which move old events elsewhere have done so."""
    runs.start("r1")
    expected = [T0]
    seq = 1
    for k in range(1, 101):
        batch = [step(f"{k}.{i}") for i in range(1 + k % 3)]
        status = RunStatus.WAITING if k % 10 == 0 else None
        store.append("r1", seq, batch, now=T0 + k / 8, status=status, ready_at=T0 + k)
        seq += len(batch)
        expected += [T0 + k / 8] * len(batch)

    for reader in (store, open_store()):
        state = reader.load("r1")
        assert len(state.events) == len(state.recorded_at) == seq
        assert state.recorded_at == tuple(expected)


def test_recorded_at_survives_another_store_instance(store, runs, open_store):
    runs.start("r1", now=T0 + 0.5)
    runs.record("r1", step("a"), step("b"), now=T0 + 1.25)
    runs.finish("r1", RunStatus.COMPLETED, now=T0 + 2.125)
    written = store.load("r1")

    reread = open_store().load("r1")

    assert reread.recorded_at == (T0 + 0.5, T0 + 1.25, T0 + 1.25, T0 + 2.125)
    assert reread == written


# -- races --------------------------------------------------------------------

WRITERS = 8


@pytest.fixture(params=["one-instance", "instance-per-writer"])
def writer_stores(request, store, open_store):
    if request.param == "one-instance":
        return [store] * WRITERS
    if open_store.shares_instances:
        pytest.skip("this store has a single instance per data set")
    return [store] + [open_store() for _ in range(WRITERS - 1)]


def test_racing_appenders_each_position_is_won_once(store, runs, writer_stores, race, unexpected):
    runs.start("r1")

    for seq in range(1, 11):
        outcomes = race(
            WRITERS, lambda i, seq=seq: writer_stores[i].append("r1", seq, [step(f"w{i}")], now=T0)
        )

        assert unexpected(outcomes, _errors.SequenceConflictError) == []
        winners = [i for i, outcome in enumerate(outcomes) if outcome.error is None]
        assert len(winners) == 1, f"position {seq} won by writers {winners}"
        events = store.load("r1").events
        assert len(events) == seq + 1
        assert events[seq] == step(f"w{winners[0]}")


def test_racing_batches_never_interleave(store, runs, writer_stores, race, unexpected):
    runs.start("r1")

    for round_ in range(5):
        seq = 1 + 3 * round_
        batches = [[step(f"w{i}-{k}") for k in range(3)] for i in range(WRITERS)]
        outcomes = race(
            WRITERS,
            lambda i, seq=seq, batches=batches: writer_stores[i].append(
                "r1", seq, batches[i], now=T0
            ),
        )

        assert unexpected(outcomes, _errors.SequenceConflictError) == []
        winners = [i for i, outcome in enumerate(outcomes) if outcome.error is None]
        assert len(winners) == 1
        events = store.load("r1").events
        assert len(events) == seq + 3
        assert list(events[seq:]) == batches[winners[0]]


def test_appenders_retrying_after_conflicts_lose_nothing(store, runs, writer_stores, race):
    runs.start("r1")
    per_writer = 6

    def write_all(i):
        conflicts = 0
        for k in range(per_writer):
            while True:
                seq = writer_stores[i].load("r1").next_seq
                try:
                    writer_stores[i].append("r1", seq, [step(f"w{i}", str(k).encode())], now=T0)
                    break
                except _errors.SequenceConflictError:
                    conflicts += 1
        return conflicts

    outcomes = race(WRITERS, write_all)

    assert [o.error for o in outcomes] == [None] * WRITERS
    events = store.load("r1").events[1:]
    assert len(events) == WRITERS * per_writer
    for i in range(WRITERS):
        mine = [e.data for e in events if e.name == f"w{i}"]
        assert mine == [str(k).encode() for k in range(per_writer)]


def test_load_sees_events_and_their_status_together(store, runs, open_store):
    """A reader never sees a status without the events written with it, or the reverse.

    Writer: after its k-th append the history has 1 + k events, the status is WAITING
    for odd k and PENDING for even k, and ``ready_at`` is ``T0 + k``.
    """
    runs.start("r1")
    store.append("r1", 1, [], now=T0, status=RunStatus.PENDING, ready_at=T0)
    reader = open_store()
    appends = 150
    done = threading.Event()
    seen = []

    def read():
        while not done.is_set():
            seen.append(reader.load("r1"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    try:
        for k in range(1, appends + 1):
            status = RunStatus.WAITING if k % 2 else RunStatus.PENDING
            store.append("r1", k, [step(str(k))], now=T0 + k, status=status, ready_at=T0 + k)
    finally:
        done.set()
        thread.join(30)
    assert not thread.is_alive()

    seen.append(reader.load("r1"))
    for state in seen:
        k = len(state.events) - 1
        expected = RunStatus.WAITING if k % 2 else RunStatus.PENDING
        assert (state.run.status, state.run.ready_at, state.run.updated_at) == (
            expected,
            T0 + k,
            T0 + k,
        ), f"history of {k + 1} events loaded with a run from another write"
    assert len(seen[-1].events) == appends + 1
