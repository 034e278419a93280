"""Store conformance: queues. Runs of a named queue await admission; ``admit`` makes them ready.

The default queue (``""``) is as runs always were: ready at creation, or at their
``start_at``. A run of a named queue is created ``PENDING`` with ``ready_at = None`` and
``start_at`` set; ``queued_runs`` lists the ones due in admission order, ``admit``
makes them ready, and ``read_queue``/``write_queue`` keep a compare-and-set record per
queue. Claims, wake-ups and listings filter by queue.
"""

from __future__ import annotations

import pytest

from fluxo import _errors, history
from fluxo.stores import DEFAULT_QUEUE, MAX_QUEUE_STATE

RunStatus = history.RunStatus

T0 = 1_700_000_000.0
WAKE_TIMEOUT = 10.0
"""How long a waiter waits; returning ``False`` after it means the wake-up was lost."""


def make(store, run_id, queue="q", *, now=T0, workflow="wf", **options):
    """Create a new run in ``queue`` (``""``: the default queue) and return it."""
    run, created = store.create_run(run_id, workflow, b"[]", now=now, queue=queue, **options)
    assert created, f"run {run_id!r} already existed"
    return run


def claim_ids(store, *, now=T0, queues=None, limit=10):
    claimed = store.claim("w1", ["wf"], now=now, lease_until=now + 30, limit=limit, queues=queues)
    return sorted(run.id for run in claimed)


def queued_ids(store, queue="q", *, now=T0, limit=100):
    found, next_start = store.queued_runs(queue, now=now, limit=limit)
    return [run.id for run in found], next_start


def awaiting(run):
    """The fields that tell whether a run awaits admission."""
    return (run.status, run.ready_at, run.start_at)


def fields(run):
    return (run.queue, run.priority, run.partition)


def test_the_default_queue_is_the_empty_name():
    assert DEFAULT_QUEUE == "" == history.DEFAULT_QUEUE
    assert MAX_QUEUE_STATE == 1024 * 1024


# -- create_run -------------------------------------------------------------------


def test_a_run_created_without_queue_options_is_ready_in_the_default_queue(store):
    run, created = store.create_run("r1", "wf", b"[]", now=T0)

    assert created
    assert fields(run) == ("", 0, None)
    assert awaiting(run) == (RunStatus.PENDING, T0, None)
    assert store.get_run("r1") == run
    assert claim_ids(store) == ["r1"]


def test_a_start_at_in_the_default_queue_is_a_delayed_start(store):
    run = make(store, "r1", "", start_at=T0 + 60)

    assert awaiting(run) == (RunStatus.PENDING, T0 + 60, None)
    assert store.next_wake(["wf"], now=T0) == T0 + 60
    assert claim_ids(store, now=T0 + 59) == []
    assert claim_ids(store, now=T0 + 60) == ["r1"]


def test_a_run_of_the_default_queue_keeps_its_priority_and_partition(store):
    run = make(store, "r1", "", priority=7, partition="customer-1")

    assert fields(run) == ("", 7, "customer-1")
    assert awaiting(run) == (RunStatus.PENDING, T0, None)
    assert fields(store.get_run("r1")) == ("", 7, "customer-1")


def test_a_run_of_a_named_queue_awaits_admission_from_now(store):
    run = make(store, "r1", "payments", priority=3, partition="customer-1")

    assert fields(run) == ("payments", 3, "customer-1")
    assert awaiting(run) == (RunStatus.PENDING, None, T0)
    assert store.get_run("r1") == run
    assert store.load("r1").events == (history.WorkflowStarted("wf", b"[]"),)


def test_a_run_of_a_named_queue_awaits_admission_from_its_start_at(store):
    run = make(store, "r1", "payments", start_at=T0 + 60)

    assert awaiting(run) == (RunStatus.PENDING, None, T0 + 60)
    earlier = make(store, "r2", "payments", start_at=T0 - 60)
    assert awaiting(earlier) == (RunStatus.PENDING, None, T0 - 60)


def test_a_run_awaiting_admission_is_never_claimed(store):
    make(store, "r1", "q")
    make(store, "r2", "q", start_at=T0 + 5)

    for queues in (None, ["q"], ["q", ""]):
        assert claim_ids(store, now=T0 + 3600, queues=queues) == []
        assert store.next_wake(["wf"], now=T0, queues=queues) is None
    assert store.claim_run("w1", "r1", now=T0, lease_until=T0 + 30) is None
    assert awaiting(store.get_run("r1")) == (RunStatus.PENDING, None, T0)
    assert store.get_run("r1").lease_owner is None


@pytest.mark.parametrize(
    ("queue", "start_at"), [("q", None), ("q", T0 + 60), ("", T0 + 60)], ids=str
)
def test_a_run_executed_in_place_cannot_be_queued_or_start_later(store, queue, start_at):
    with pytest.raises(ValueError, match="r1"):
        store.create_run(
            "r1",
            "wf",
            b"[]",
            now=T0,
            owner="inline",
            lease_until=T0 + 30,
            queue=queue,
            start_at=start_at,
        )

    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")


def test_a_run_executed_in_place_is_in_the_default_queue(store):
    run, _ = store.create_run(
        "r1", "wf", b"[]", now=T0, owner="inline", lease_until=T0 + 30, priority=2
    )

    assert run.status is RunStatus.RUNNING
    assert (run.queue, run.priority, run.start_at) == ("", 2, None)


def test_creating_again_keeps_the_first_runs_queue_options(store):
    first = make(store, "r1", "a", priority=1, partition="p1", start_at=T0 + 5)

    again, created = store.create_run(
        "r1", "wf", b"[]", now=T0 + 1, queue="b", priority=9, partition=None, start_at=None
    )

    assert not created
    assert again == first == store.get_run("r1")
    assert fields(again) == ("a", 1, "p1")
    assert awaiting(again) == (RunStatus.PENDING, None, T0 + 5)


def test_creating_a_default_queue_run_again_in_a_named_queue_leaves_it_ready(store):
    first = make(store, "r1", "")

    again, created = store.create_run("r1", "wf", b"[]", now=T0 + 1, queue="q", priority=4)

    assert not created
    assert again == first
    assert queued_ids(store, "q", now=T0 + 10) == ([], None)
    assert claim_ids(store) == ["r1"]


# -- every read returns the queue fields ----------------------------------------------


def test_every_read_returns_the_queue_fields(store):
    make(store, "r1", "q", priority=5, partition="p")
    expected = ("q", 5, "p")

    assert fields(store.get_run("r1")) == expected
    assert fields(store.get_runs(["r1"])["r1"]) == expected
    assert [fields(run) for run in store.list_runs()] == [expected]
    assert fields(store.load("r1").run) == expected
    assert [fields(run) for run in store.queued_runs("q", now=T0, limit=10)[0]] == [expected]
    assert store.admit(["r1"], now=T0 + 1) == ["r1"]
    [claimed] = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=1)
    assert fields(claimed) == expected
    assert claimed.start_at is None
    assert fields(store.get_run("r1")) == expected


def test_the_start_at_is_read_back_by_every_read(store):
    make(store, "r1", "q", start_at=T0 + 7.25)

    assert store.get_run("r1").start_at == T0 + 7.25
    assert store.get_runs(["r1"])["r1"].start_at == T0 + 7.25
    assert store.list_runs()[0].start_at == T0 + 7.25
    assert store.load("r1").run.start_at == T0 + 7.25


# -- queued_runs --------------------------------------------------------------------


def test_queued_runs_come_in_admission_order(store):
    # priority highest first, then start_at, created_at and id lowest first
    make(store, "a", start_at=T0 + 1, now=T0)
    make(store, "b", start_at=T0 + 3, now=T0, priority=5)
    make(store, "c", start_at=T0 + 1, now=T0 - 1)
    make(store, "e", start_at=T0 + 2, now=T0)
    make(store, "d", start_at=T0 + 2, now=T0)
    make(store, "f", start_at=T0, now=T0, priority=-1)
    make(store, "g", start_at=T0 + 4, now=T0, priority=5)

    assert queued_ids(store, now=T0 + 5) == (["b", "g", "c", "a", "d", "e", "f"], None)


def test_queued_runs_returns_the_due_runs_and_the_next_start(store):
    make(store, "soon", start_at=T0 + 10)
    make(store, "later", start_at=T0 + 20, priority=9)
    make(store, "due", start_at=T0 - 5)

    assert queued_ids(store, now=T0) == (["due"], T0 + 10)
    assert queued_ids(store, now=T0 + 10) == (["due", "soon"], T0 + 20)
    assert queued_ids(store, now=T0 + 20) == (["later", "due", "soon"], None)
    assert queued_ids(store, now=T0 - 10) == ([], T0 - 5)


def test_queued_runs_returns_at_most_limit_runs_and_the_next_start_whatever_the_limit(store):
    for i in range(5):
        make(store, f"r{i}", start_at=T0 + i)
    make(store, "future", start_at=T0 + 100)

    assert queued_ids(store, now=T0 + 10, limit=2) == (["r0", "r1"], T0 + 100)
    assert queued_ids(store, now=T0 + 10, limit=1) == (["r0"], T0 + 100)
    assert queued_ids(store, now=T0 + 10, limit=0) == ([], T0 + 100)


def test_queued_runs_keeps_to_its_queue(store):
    make(store, "mine", "q")
    make(store, "other", "other-q")
    make(store, "default", "", start_at=T0 + 5)
    make(store, "Q", "Q")  # names are compared exactly

    assert queued_ids(store, "q", now=T0 + 10) == (["mine"], None)
    assert queued_ids(store, "other-q", now=T0 + 10) == (["other"], None)
    assert queued_ids(store, "nobody", now=T0 + 10) == ([], None)


def test_no_run_of_the_default_queue_awaits_admission(store):
    make(store, "r1", "")
    make(store, "r2", "", start_at=T0 + 60)

    assert queued_ids(store, "", now=T0 + 100) == ([], None)
    assert queued_ids(store, "", now=T0) == ([], None)


def test_queued_runs_returns_the_runs_as_stored(store):
    make(store, "r1", "q", priority=2, partition="p", start_at=T0 - 1)

    [found], _ = store.queued_runs("q", now=T0, limit=10)

    assert found == store.get_run("r1")


def test_a_run_stops_being_queued_once_admitted(store):
    make(store, "r1")
    make(store, "r2")

    store.admit(["r1"], now=T0)

    assert queued_ids(store, now=T0) == (["r2"], None)


def test_a_run_with_a_cancellation_requested_is_still_queued(store):
    make(store, "r1")

    run = store.request_cancel("r1", now=T0 + 1)

    assert run.cancel_requested
    assert awaiting(run) == (RunStatus.PENDING, None, T0)
    assert queued_ids(store, now=T0 + 1) == (["r1"], None)
    assert claim_ids(store, now=T0 + 1) == []


def test_a_run_awaiting_admission_keeps_awaiting_after_a_signal(store):
    make(store, "r1")

    store.send_signal("r1", "go", b"1", now=T0 + 1)

    run = store.get_run("r1")
    assert awaiting(run) == (RunStatus.PENDING, None, T0)
    assert run.wake_requested
    assert [s.name for s in store.load("r1").signals] == ["go"]
    assert claim_ids(store, now=T0 + 1) == []


# -- admit --------------------------------------------------------------------------


def test_admit_makes_a_run_ready_to_claim(store):
    make(store, "r1", "q", priority=1, partition="p")

    assert store.admit(["r1"], now=T0 + 2) == ["r1"]

    run = store.get_run("r1")
    assert awaiting(run) == (RunStatus.PENDING, T0 + 2, None)
    assert fields(run) == ("q", 1, "p")
    assert run.updated_at == T0 + 2
    assert store.next_wake(["wf"], now=T0 + 2) == T0 + 2
    assert claim_ids(store, now=T0 + 2, queues=["q"]) == ["r1"]


def test_admit_admits_a_run_whatever_its_start_at(store):
    make(store, "r1", start_at=T0 + 3600)

    assert store.admit(["r1"], now=T0) == ["r1"]

    assert awaiting(store.get_run("r1")) == (RunStatus.PENDING, T0, None)
    assert queued_ids(store, now=T0 + 7200) == ([], None)


def test_admit_is_idempotent(store):
    make(store, "r1")
    assert store.admit(["r1"], now=T0 + 1) == ["r1"]
    before = store.get_run("r1")

    assert store.admit(["r1"], now=T0 + 2) == []

    assert store.get_run("r1") == before


def test_admit_returns_each_run_admitted_once(store):
    make(store, "r1")
    make(store, "r2")

    admitted = store.admit(["r1", "r2", "r1"], now=T0)

    assert sorted(admitted) == ["r1", "r2"]
    assert claim_ids(store) == ["r1", "r2"]


def test_admit_leaves_runs_that_do_not_await_admission_alone(store, runs):
    make(store, "default", "")
    for run_id in ("running", "failed"):
        make(store, run_id)
        store.admit([run_id], now=T0)
        assert store.claim_run("w1", run_id, now=T0, lease_until=T0 + 30) is not None
    runs.finish("failed", RunStatus.FAILED)
    make(store, "queued")
    ids = ["missing", "default", "running", "failed"]
    before = store.get_runs(ids)

    assert store.admit([*ids, "queued"], now=T0 + 5) == ["queued"]

    assert store.get_runs(ids) == before


def test_admit_of_nothing_admits_nothing(store):
    assert store.admit([], now=T0) == []


def test_a_cancelled_run_awaiting_admission_is_never_admitted(store):
    make(store, "r1", start_at=T0 - 1)
    store.request_cancel("r1", now=T0)

    # The engine ends a run that has not begun at once, fenced at position 1.
    store.append(
        "r1",
        1,
        (history.CancelRequested(), history.WorkflowCancelled()),
        now=T0 + 1,
        status=RunStatus.CANCELLED,
    )

    run = store.get_run("r1")
    assert awaiting(run) == (RunStatus.CANCELLED, None, None)
    assert queued_ids(store, now=T0 + 10) == ([], None)
    assert store.admit(["r1"], now=T0 + 2) == []
    assert store.get_run("r1") == run
    assert claim_ids(store, now=T0 + 10) == []


def test_admit_wakes_a_waiter(store):
    make(store, "r1")
    token = store.change_token(None)

    store.admit(["r1"], now=T0)

    assert store.wait_for_change(None, WAKE_TIMEOUT, since=token) is True


def test_concurrent_admissions_admit_each_run_once(store, open_store, race, unexpected):
    count = 30
    for i in range(count):
        make(store, f"r{i:02}")
    ids = [f"r{i:02}" for i in range(count)]
    stores = [store] * 4 if open_store.shares_instances else [open_store() for _ in range(4)]

    outcomes = race(4, lambda i: stores[i].admit(ids if i % 2 else ids[::-1], now=T0 + i))

    assert unexpected(outcomes) == []
    admitted = [run_id for outcome in outcomes for run_id in outcome.value]
    assert sorted(admitted) == ids  # each exactly once
    assert all(run.start_at is None for run in store.get_runs(ids).values())


# -- read_queue / write_queue -------------------------------------------------------


def test_a_queue_never_written_reads_version_0_and_no_state(store):
    assert store.read_queue("q") == (0, b"")


def test_write_queue_sets_the_state_when_the_version_matches(store):
    assert store.write_queue("q", 0, b"first") is True
    assert store.read_queue("q") == (1, b"first")

    assert store.write_queue("q", 1, b"second") is True
    assert store.read_queue("q") == (2, b"second")


@pytest.mark.parametrize("stale", [0, 1, 3, -1])
def test_write_queue_with_another_version_writes_nothing(store, stale):
    store.write_queue("q", 0, b"one")
    store.write_queue("q", 1, b"two")

    assert store.write_queue("q", stale, b"lost") is False

    assert store.read_queue("q") == (2, b"two")


def test_write_queue_to_a_queue_never_written_needs_version_0(store):
    assert store.write_queue("q", 1, b"x") is False
    assert store.read_queue("q") == (0, b"")


def test_queue_records_are_kept_apart(store):
    store.write_queue("a", 0, b"of a")

    assert store.read_queue("b") == (0, b"")
    assert store.read_queue("A") == (0, b"")
    assert store.write_queue("b", 0, b"of b") is True
    assert store.read_queue("a") == (1, b"of a")
    assert store.read_queue("b") == (1, b"of b")


@pytest.mark.parametrize(
    "state", [b"", bytes(range(256)), b"\x00" * 10, b'{"active": {}}'], ids=str
)
def test_a_queue_state_is_kept_byte_for_byte(store, state):
    assert store.write_queue("q", 0, state) is True

    assert store.read_queue("q") == (1, state)


def test_a_queue_state_of_the_largest_size_is_kept(store):
    state = bytes(range(256)) * (MAX_QUEUE_STATE // 256)
    assert len(state) == MAX_QUEUE_STATE

    assert store.write_queue("q", 0, state) is True

    assert store.read_queue("q") == (1, state)


@pytest.mark.parametrize("version", [1, 0], ids=["current", "stale"])
def test_a_queue_state_too_large_is_refused_and_nothing_written(store, version):
    store.write_queue("q", 0, b"kept")

    with pytest.raises(_errors.StoreRejectedError, match="'q'"):
        store.write_queue("q", version, b"x" * (MAX_QUEUE_STATE + 1))

    assert store.read_queue("q") == (1, b"kept")


def test_a_queue_record_is_seen_by_another_instance(store, open_store):
    store.write_queue("q", 0, b"shared")

    assert open_store().read_queue("q") == (1, b"shared")


def test_concurrent_writers_of_one_version_have_one_winner(store, open_store, race, unexpected):
    writers = 6
    stores = [store] * writers if open_store.shares_instances else [store]
    while len(stores) < writers:
        stores.append(open_store())

    outcomes = race(writers, lambda i: stores[i].write_queue("q", 0, f"w{i}".encode()))

    assert unexpected(outcomes) == []
    winners = [i for i, outcome in enumerate(outcomes) if outcome.value is True]
    assert len(winners) == 1
    assert store.read_queue("q") == (1, f"w{winners[0]}".encode())


def test_compare_and_set_loses_no_update_under_contention(store, open_store, race, unexpected):
    writers, rounds = 4, 15
    stores = [store] * writers if open_store.shares_instances else [store]
    while len(stores) < writers:
        stores.append(open_store())

    def add(i):
        done = 0
        while done < rounds:
            version, state = stores[i].read_queue("counter")
            total = int(state or b"0")
            if stores[i].write_queue("counter", version, str(total + 1).encode()):
                done += 1
        return done

    outcomes = race(writers, add)

    assert unexpected(outcomes) == []
    assert store.read_queue("counter") == (writers * rounds, str(writers * rounds).encode())


# -- claim and next_wake filter by queue -------------------------------------------


@pytest.fixture
def three_queues(store):
    """Ready runs: ``d1`` in the default queue, ``a1`` in ``a``, ``b1`` in ``b``."""
    make(store, "d1", "", now=T0)
    make(store, "a1", "a", now=T0)
    make(store, "b1", "b", now=T0)
    assert sorted(store.admit(["a1", "b1"], now=T0)) == ["a1", "b1"]
    return store


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        (None, ["a1", "b1", "d1"]),
        (["a"], ["a1"]),
        ([""], ["d1"]),
        (["", "b"], ["b1", "d1"]),
        (("a", "b"), ["a1", "b1"]),
        (frozenset({"b"}), ["b1"]),
        (["default"], []),  # the default queue is stored as ""
        (["nobody"], []),
        ([], []),
    ],
    ids=str,
)
def test_claim_takes_runs_of_the_queues_given(three_queues, queues, expected):
    assert claim_ids(three_queues, queues=queues) == expected


def test_claim_with_queues_leaves_the_other_runs_ready(three_queues):
    assert claim_ids(three_queues, queues=["a"]) == ["a1"]

    assert claim_ids(three_queues, queues=None) == ["b1", "d1"]


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        (None, T0 + 10),
        (["a"], T0 + 20),
        ([""], T0 + 10),
        (["b"], T0 + 30),
        (["a", "b"], T0 + 20),
        (["nobody"], None),
        ([], None),
    ],
    ids=str,
)
def test_next_wake_looks_at_runs_of_the_queues_given(store, runs, queues, expected):
    make(store, "d1", "", start_at=T0 + 10)
    for run_id, queue, at in (("a1", "a", T0 + 20), ("b1", "b", T0 + 30)):
        make(store, run_id, queue)
        store.admit([run_id], now=T0)
        store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1, queues=[queue])
        runs.wait(run_id, ready_at=at)

    assert store.next_wake(["wf"], now=T0, queues=queues) == expected


# -- reopen -------------------------------------------------------------------------


def fail(store, runs, run_id, status=RunStatus.FAILED, *, now=T0):
    """Admit (when queued), claim and end the run ``status`` (failed, dead or cancelled)."""
    store.admit([run_id], now=now)
    store.claim("w1", ["wf"], now=now, lease_until=now + 30, limit=10)
    runs.finish(run_id, status, now=now)


@pytest.mark.parametrize("status", history.REOPENABLE_STATUSES, ids=str)
def test_reopen_puts_a_run_of_a_named_queue_back_to_awaiting_admission(store, runs, status):
    make(store, "r1", "q", priority=4, partition="p", start_at=T0 - 100)
    fail(store, runs, "r1", status)

    run = store.reopen("r1", now=T0 + 50)

    assert awaiting(run) == (RunStatus.PENDING, None, T0 + 50)
    assert fields(run) == ("q", 4, "p")
    assert store.get_run("r1") == run
    assert not run.cancel_requested
    assert run.recoveries == 0
    assert claim_ids(store, now=T0 + 100) == []
    assert store.claim_run("w1", "r1", now=T0 + 100, lease_until=T0 + 130) is None
    assert queued_ids(store, now=T0 + 50) == (["r1"], None)
    assert isinstance(store.load("r1").events[-1], history.RunRetried)

    assert store.admit(["r1"], now=T0 + 60) == ["r1"]
    assert claim_ids(store, now=T0 + 60) == ["r1"]


def test_reopen_makes_a_run_of_the_default_queue_ready_at_once(store, runs):
    make(store, "r1", "", start_at=T0 - 10, priority=2)
    fail(store, runs, "r1")

    run = store.reopen("r1", now=T0 + 50)

    assert awaiting(run) == (RunStatus.PENDING, T0 + 50, None)
    assert fields(run) == ("", 2, None)
    assert claim_ids(store, now=T0 + 50) == ["r1"]


# -- list_runs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        (None, ["a1", "a2", "b1", "d1"]),
        (["a"], ["a1", "a2"]),
        ([""], ["d1"]),
        (["", "b"], ["b1", "d1"]),
        (["nobody"], []),
        ([], []),
    ],
    ids=str,
)
def test_list_runs_keeps_the_runs_of_the_queues_given(store, queues, expected):
    make(store, "d1", "", now=T0)
    make(store, "a1", "a", now=T0 + 1)
    make(store, "a2", "a", now=T0 + 2)
    make(store, "b1", "b", now=T0 + 3)

    assert sorted(run.id for run in store.list_runs(queues=queues)) == expected


def test_list_runs_combines_the_queue_filter_with_the_others(store):
    make(store, "a1", "a", now=T0 + 1)
    make(store, "a2", "a", now=T0 + 2, workflow="other")
    make(store, "b1", "b", now=T0 + 3)
    store.admit(["a1"], now=T0 + 4)
    store.claim("w1", ["wf"], now=T0 + 4, lease_until=T0 + 30, limit=1)

    assert [r.id for r in store.list_runs(queues=["a"], statuses=[RunStatus.PENDING])] == ["a2"]
    assert [r.id for r in store.list_runs(queues=["a", "b"], workflows=["wf"])] == ["b1", "a1"]
    assert [r.id for r in store.list_runs(queues=["a"], limit=1)] == ["a2"]
