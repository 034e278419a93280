"""Store conformance: creating runs, reading them back, and what a history holds.

Covers ``create_run``, ``get_run`` and ``load``, and that every event kind
round-trips byte for byte.
"""

from __future__ import annotations

import random

import pytest

from fluxo import _errors, history
from fluxo.stores import MAX_ID_LENGTH, Store

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

ODD_RUN_IDS = [
    "order-o-17",
    'it\'s "quoted"',
    "100%_off\\path",
    "spaces in the middle",
    "ünïcødé-订单-🚀",
    "x" * 200,
]


def test_every_store_is_a_store(store):
    assert isinstance(store, Store)


# -- create_run ---------------------------------------------------------------


def test_create_run_returns_a_new_pending_run_ready_now(store):
    run, created = store.create_run("r1", "shop.checkout", b'["o-17", 4200]', now=T0)

    assert created is True
    assert run == history.RunInfo(
        id="r1",
        workflow="shop.checkout",
        status=RunStatus.PENDING,
        created_at=T0,
        updated_at=T0,
        ready_at=T0,
        lease_owner=None,
        lease_until=None,
        cancel_requested=False,
    )
    assert store.get_run("r1") == run


def test_create_run_history_is_workflow_started_with_the_exact_input(store):
    store.create_run("r1", "shop.checkout", b'["o-17", 4200]', now=T0)

    state = store.load("r1")

    assert state.events == (history.WorkflowStarted("shop.checkout", b'["o-17", 4200]'),)
    assert type(state.events[0]) is history.WorkflowStarted
    assert state.next_seq == 1


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\xff\xfe\x80 not utf-8 \xc3\x28", bytes(range(256)), b"\x00" * 1024],
    ids=["empty", "binary", "all-bytes", "zeros"],
)
def test_create_run_keeps_any_input_bytes(store, payload):
    store.create_run("r1", "wf", payload, now=T0)

    (started,) = store.load("r1").events

    assert started.data == payload
    assert type(started.data) is bytes


def test_create_run_keeps_a_large_input(store):
    payload = random.Random(7).randbytes(1024 * 1024)

    store.create_run("r1", "wf", payload, now=T0)

    assert store.load("r1").events[0].data == payload


def test_create_run_is_idempotent_for_the_same_workflow(store):
    first, _ = store.create_run("r1", "wf", b"[1]", now=T0)

    again, created = store.create_run("r1", "wf", b"[2]", now=T0 + 50)

    assert created is False
    assert again == first
    assert store.get_run("r1") == first
    assert store.load("r1").events == (history.WorkflowStarted("wf", b"[1]"),)


def test_create_run_again_returns_the_run_as_it_stands_and_changes_nothing(store, runs):
    runs.start("r1")
    runs.claim_one("r1", "w1", now=T0 + 1, lease_until=T0 + 31)
    runs.record("r1", history.StepCompleted("charge", b"{}"))
    before = store.load("r1")

    again, created = store.create_run("r1", "wf", b"[]", now=T0 + 5)

    assert created is False
    assert again == before.run
    assert again.status is RunStatus.RUNNING
    assert again.lease_owner == "w1"
    assert store.load("r1") == before


DEADLINE = T0 + 3600.123456789
"""A deadline with a fraction no float32 or rounding to microseconds would keep."""


def test_a_run_created_without_a_deadline_has_none(store):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0)

    assert run.deadline is None
    assert store.get_run("r1").deadline is None
    assert store.load("r1").run.deadline is None
    assert [r.deadline for r in store.list_runs()] == [None]
    (claimed,) = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert claimed.deadline is None


def test_create_run_keeps_the_deadline_exactly(store):
    run, created = store.create_run("r1", "wf", b"[]", now=T0, deadline=DEADLINE)

    assert created is True
    assert run.deadline == DEADLINE
    assert store.get_run("r1") == run
    assert store.load("r1").run == run
    assert store.list_runs() == [run]
    assert store.list_runs(workflows=["wf"], statuses=[RunStatus.PENDING]) == [run]


def test_the_deadline_stays_with_the_run_through_every_change(store, runs):
    store.create_run("r1", "wf", b"[]", now=T0, deadline=DEADLINE)

    (claimed,) = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=1)
    assert claimed.deadline == DEADLINE
    assert claimed == store.get_run("r1")
    runs.wait("r1", now=T0 + 2, ready_at=T0 + 5)
    assert store.get_run("r1").deadline == DEADLINE
    cancelled = store.request_cancel("r1", now=T0 + 3)
    assert cancelled.deadline == DEADLINE
    assert cancelled == store.get_run("r1")
    taken = store.claim_run("w2", "r1", now=T0 + 4, lease_until=T0 + 34)
    assert taken is not None
    assert taken.deadline == DEADLINE
    assert taken == store.get_run("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0 + 5)
    reopened = store.reopen("r1", now=T0 + 6)
    assert reopened.deadline == DEADLINE
    assert reopened == store.load("r1").run
    assert [r.deadline for r in store.list_runs()] == [DEADLINE]


def test_a_run_created_leased_keeps_its_deadline(store):
    run, _ = store.create_run(
        "r1", "wf", b"[]", now=T0, owner="inline-1", lease_until=T0 + 30, deadline=DEADLINE
    )

    assert (run.status, run.lease_owner, run.deadline) == (RunStatus.RUNNING, "inline-1", DEADLINE)
    assert store.get_run("r1") == run
    assert store.load("r1").run == run


@pytest.mark.parametrize(
    ("first", "second"),
    [(DEADLINE, T0 + 60), (DEADLINE, None), (None, DEADLINE)],
    ids=["another", "none-after-one", "one-after-none"],
)
def test_create_run_again_keeps_the_first_deadline(store, first, second):
    created, _ = store.create_run("r1", "wf", b"[]", now=T0, deadline=first)

    again, was_created = store.create_run("r1", "wf", b"[]", now=T0 + 1, deadline=second)

    assert was_created is False
    assert again == created
    assert again.deadline == first
    assert store.get_run("r1").deadline == first
    assert store.load("r1").run.deadline == first


def test_runs_keep_their_own_deadlines(store):
    store.create_run("a", "wf", b"[]", now=T0, deadline=T0 + 10)
    store.create_run("b", "wf", b"[]", now=T0 + 1)
    store.create_run("c", "wf", b"[]", now=T0 + 2, deadline=T0 + 5)

    assert [(r.id, r.deadline) for r in store.list_runs()] == [
        ("c", T0 + 5),
        ("b", None),
        ("a", T0 + 10),
    ]
    claimed = store.claim("w1", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5)
    assert [(r.id, r.deadline) for r in claimed] == [("a", T0 + 10), ("b", None), ("c", T0 + 5)]
    assert claimed == [store.get_run(r.id) for r in claimed]


PARENT = "parent-run-1"


def test_a_run_created_without_a_parent_has_none(store):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0)

    assert run.parent is None
    assert store.get_run("r1").parent is None
    assert store.load("r1").run.parent is None
    assert [r.parent for r in store.list_runs()] == [None]
    (claimed,) = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert claimed.parent is None


def test_create_run_keeps_the_parent(store):
    run, created = store.create_run("r1", "wf", b"[]", now=T0, parent=PARENT)

    assert created is True
    assert run.parent == PARENT
    assert store.get_run("r1") == run
    assert store.load("r1").run == run
    assert store.list_runs() == [run]
    assert store.list_runs(workflows=["wf"], statuses=[RunStatus.PENDING]) == [run]


def test_the_parent_stays_with_the_run_through_every_change(store, runs):
    store.create_run("r1", "wf", b"[]", now=T0, parent=PARENT, deadline=DEADLINE)

    (claimed,) = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=1)
    assert claimed.parent == PARENT
    assert claimed == store.get_run("r1")
    runs.wait("r1", now=T0 + 2, ready_at=T0 + 5)
    assert store.get_run("r1").parent == PARENT
    cancelled = store.request_cancel("r1", now=T0 + 3)
    assert cancelled.parent == PARENT
    assert cancelled == store.get_run("r1")
    taken = store.claim_run("w2", "r1", now=T0 + 4, lease_until=T0 + 34)
    assert taken is not None
    assert taken.parent == PARENT
    assert taken == store.get_run("r1")
    runs.finish("r1", RunStatus.FAILED, now=T0 + 5)
    assert store.request_cancel("r1", now=T0 + 6).parent == PARENT
    reopened = store.reopen("r1", now=T0 + 7)
    assert reopened.parent == PARENT
    assert reopened == store.load("r1").run
    assert [(r.parent, r.deadline) for r in store.list_runs()] == [(PARENT, DEADLINE)]


def test_a_run_created_leased_keeps_its_parent(store):
    run, _ = store.create_run(
        "r1", "wf", b"[]", now=T0, owner="inline-1", lease_until=T0 + 30, parent=PARENT
    )

    assert (run.status, run.lease_owner, run.parent) == (RunStatus.RUNNING, "inline-1", PARENT)
    assert store.get_run("r1") == run
    assert store.load("r1").run == run


@pytest.mark.parametrize(
    ("first", "second"),
    [(PARENT, "parent-run-2"), (PARENT, None), (None, PARENT)],
    ids=["another", "none-after-one", "one-after-none"],
)
def test_create_run_again_keeps_the_first_parent(store, first, second):
    created, _ = store.create_run("r1", "wf", b"[]", now=T0, parent=first)

    again, was_created = store.create_run("r1", "wf", b"[]", now=T0 + 1, parent=second)

    assert was_created is False
    assert again == created
    assert again.parent == first
    assert store.get_run("r1").parent == first
    assert store.load("r1").run.parent == first


def test_runs_keep_their_own_parents(store):
    store.create_run("a", "wf", b"[]", now=T0)
    store.create_run("b", "wf", b"[]", now=T0 + 1, parent="a")
    store.create_run("c", "wf", b"[]", now=T0 + 2, parent="b")

    assert [(r.id, r.parent) for r in store.list_runs()] == [("c", "b"), ("b", "a"), ("a", None)]
    claimed = store.claim("w1", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5)
    assert [(r.id, r.parent) for r in claimed] == [("a", None), ("b", "a"), ("c", "b")]
    assert claimed == [store.get_run(r.id) for r in claimed]


@pytest.mark.parametrize(
    "parent",
    ["🚀" * MAX_ID_LENGTH, "é" * (MAX_ID_LENGTH - 1) + "p", "订" * MAX_ID_LENGTH],
    ids=["emoji", "latin", "cjk"],
)
def test_a_parent_id_of_255_characters_round_trips(store, parent):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0, parent=parent)

    assert run.parent == parent
    assert store.get_run("r1").parent == parent
    assert store.load("r1").run.parent == parent
    assert [r.parent for r in store.list_runs()] == [parent]
    (claimed,) = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert claimed.parent == parent


def test_parent_ids_that_differ_only_in_case_or_trailing_space_stay_distinct(store):
    parents = ["order-1", "Order-1", "order-1 "]
    for i, parent in enumerate(parents):
        store.create_run(f"r{i}", "wf", b"[]", now=T0 + i, parent=parent)

    assert [store.get_run(f"r{i}").parent for i in range(len(parents))] == parents


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
def test_create_run_does_not_restart_a_finished_run(store, runs, status):
    runs.start("r1")
    runs.finish("r1", status, now=T0 + 1)
    before = store.load("r1")

    again, created = store.create_run("r1", "wf", b"[]", now=T0 + 2)

    assert created is False
    assert again.status is status
    assert store.load("r1") == before


def test_create_run_with_an_owner_creates_it_running_and_leased(store):
    run, created = store.create_run(
        "r1", "wf", b"[1]", now=T0, owner="inline-1", lease_until=T0 + 30
    )

    assert created is True
    assert run == history.RunInfo(
        id="r1",
        workflow="wf",
        status=RunStatus.RUNNING,
        created_at=T0,
        updated_at=T0,
        ready_at=T0,
        lease_owner="inline-1",
        lease_until=T0 + 30,
        cancel_requested=False,
    )
    state = store.load("r1")
    assert (state.run, state.events, state.signals) == (
        run,
        (history.WorkflowStarted("wf", b"[1]"),),
        (),
    )


def test_a_run_created_leased_is_held_by_its_owner_until_the_lease_expires(store):
    store.create_run("r1", "wf", b"[]", now=T0, owner="inline-1", lease_until=T0 + 30)

    assert store.claim("w1", ["wf"], now=T0 + 30, lease_until=T0 + 60, limit=5) == []
    assert store.renew("inline-1", ["r1"], lease_until=T0 + 40) == {"r1": False}
    assert store.claim("w1", ["wf"], now=T0 + 40, lease_until=T0 + 70, limit=5) == []
    (taken,) = store.claim("w1", ["wf"], now=T0 + 41, lease_until=T0 + 71, limit=5)
    assert (taken.id, taken.lease_owner) == ("r1", "w1")
    assert store.renew("inline-1", ["r1"], lease_until=T0 + 99) == {}


def test_the_owner_of_a_run_created_leased_can_release_it(store):
    store.create_run("r1", "wf", b"[]", now=T0, owner="inline-1", lease_until=T0 + 30)

    store.release("inline-1", "r1", now=T0 + 1)

    assert store.get_run("r1").status is RunStatus.PENDING
    claimed = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=5)
    assert [run.id for run in claimed] == ["r1"]


@pytest.mark.parametrize("first_owner", [None, "inline-1"])
def test_create_run_again_with_an_owner_does_not_lease_the_existing_run(store, first_owner):
    first, _ = store.create_run("r1", "wf", b"[]", now=T0, owner=first_owner, lease_until=T0 + 30)

    again, created = store.create_run(
        "r1", "wf", b"[]", now=T0 + 1, owner="inline-2", lease_until=T0 + 31
    )

    assert created is False
    assert again == first
    assert store.get_run("r1") == first
    assert store.renew("inline-2", ["r1"], lease_until=T0 + 60) == {}


def test_create_run_with_an_id_taken_by_another_workflow_raises(store):
    store.create_run("r1", "shop.checkout", b"[]", now=T0)
    before = store.load("r1")

    with pytest.raises(_errors.RunIdConflictError) as info:
        store.create_run("r1", "shop.refund", b"[]", now=T0 + 1)

    assert (info.value.run_id, info.value.existing, info.value.requested) == (
        "r1",
        "shop.checkout",
        "shop.refund",
    )
    assert store.load("r1") == before


def test_workflow_names_are_case_sensitive(store):
    store.create_run("r1", "shop.Checkout", b"[]", now=T0)

    with pytest.raises(_errors.RunIdConflictError):
        store.create_run("r1", "shop.checkout", b"[]", now=T0)


def test_run_ids_that_differ_only_in_case_or_trailing_space_are_distinct(store):
    ids = ["order-1", "Order-1", "ORDER-1", "order-1 "]
    for i, run_id in enumerate(ids):
        _, created = store.create_run(run_id, "wf", str(i).encode(), now=T0 + i)
        assert created, f"{run_id!r} was taken to be an existing run"

    for i, run_id in enumerate(ids):
        state = store.load(run_id)
        assert state.run.id == run_id
        assert state.events[0].data == str(i).encode()


def test_ids_and_names_of_255_characters_round_trip(store):
    run_id, workflow, worker = "🚀" * 255, "é" * 254 + "w", "订" * 255

    store.create_run(run_id, workflow, b"[]", now=T0)
    (claimed,) = store.claim(worker, [workflow], now=T0, lease_until=T0 + 30, limit=1)

    assert (claimed.id, claimed.workflow, claimed.lease_owner) == (run_id, workflow, worker)
    assert store.renew(worker, [run_id], lease_until=T0 + 60) == {run_id: False}
    assert store.load(run_id).run == store.get_run(run_id)
    assert [run.id for run in store.list_runs(workflows=[workflow])] == [run_id]


def test_times_round_trip_exactly(store):
    now, lease_until = T0 + 0.123456789, T0 + 30.000000001

    store.create_run("r1", "wf", b"[]", now=now)
    (claimed,) = store.claim("w1", ["wf"], now=now, lease_until=lease_until, limit=1)
    run = store.get_run("r1")

    assert (run.created_at, run.ready_at, run.lease_until) == (now, now, lease_until)
    assert claimed == run


@pytest.mark.parametrize("run_id", ODD_RUN_IDS, ids=range(len(ODD_RUN_IDS)))
def test_any_reasonable_run_id_round_trips(store, runs, run_id):
    runs.start(run_id, "wf")

    assert store.get_run(run_id).id == run_id
    assert store.load(run_id).run.id == run_id
    assert [run.id for run in store.list_runs()] == [run_id]
    assert [run.id for run in store.claim("w", ["wf"], now=T0, lease_until=T0 + 1, limit=5)] == [
        run_id
    ]


def test_unicode_workflow_names_round_trip(store):
    name = "billing.Zahlung_überweisen.订单🚀"

    run, _ = store.create_run("r1", name, b"[]", now=T0)

    assert run.workflow == name
    assert store.get_run("r1").workflow == name
    assert store.load("r1").events[0].name == name
    assert [r.id for r in store.list_runs(workflows=[name])] == ["r1"]


def test_concurrent_create_run_with_one_id_creates_one_run(open_store, race, unexpected):
    stores = [open_store() for _ in range(6)]

    outcomes = race(6, lambda i: stores[i].create_run("r1", "wf", str(i).encode(), now=T0 + i))

    assert unexpected(outcomes) == []
    created = [o.value[0] for o in outcomes if o.value[1]]
    assert len(created) == 1
    assert all(o.value[0] == created[0] for o in outcomes)
    state = stores[0].load("r1")
    assert len(state.events) == 1
    assert state.events[0].data == str(int(created[0].created_at - T0)).encode()


def test_concurrent_create_run_with_owners_leases_the_run_to_the_creator(
    open_store, race, unexpected
):
    stores = [open_store() for _ in range(6)]

    outcomes = race(
        6,
        lambda i: stores[i].create_run(
            "r1", "wf", b"[]", now=T0, owner=f"inline-{i}", lease_until=T0 + 30
        ),
    )

    assert unexpected(outcomes) == []
    creators = [i for i, o in enumerate(outcomes) if o.value[1]]
    assert len(creators) == 1
    run = stores[0].get_run("r1")
    assert run.lease_owner == f"inline-{creators[0]}"
    assert all(o.value[0] == run for o in outcomes)


def test_concurrent_create_run_with_one_id_and_two_workflows(open_store, race, unexpected):
    stores = [open_store() for _ in range(6)]

    def create(i):
        return stores[i].create_run("r1", f"wf{i % 2}", b"[]", now=T0)

    outcomes = race(6, create)

    assert unexpected(outcomes, _errors.RunIdConflictError) == []
    winner = stores[0].get_run("r1").workflow
    for i, outcome in enumerate(outcomes):
        if f"wf{i % 2}" == winner:
            assert outcome.error is None
        else:
            assert isinstance(outcome.error, _errors.RunIdConflictError)
    assert sum(1 for o in outcomes if o.value is not None and o.value[1]) == 1
    assert len(stores[0].load("r1").events) == 1


# -- get_run and load ---------------------------------------------------------


def test_get_run_of_an_unknown_run_raises(store):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.get_run("nope")

    assert info.value.run_id == "nope"


def test_load_of_an_unknown_run_raises(store):
    with pytest.raises(_errors.RunNotFoundError) as info:
        store.load("nope")

    assert info.value.run_id == "nope"


def test_get_run_is_the_run_that_load_returns(store, runs):
    runs.start("r1")
    runs.claim_one("r1", now=T0 + 1, lease_until=T0 + 31)
    store.request_cancel("r1", now=T0 + 2)

    assert store.get_run("r1") == store.load("r1").run


def test_runs_do_not_share_histories(store, runs):
    runs.start("a", input=b"A")
    runs.start("b", input=b"B")
    runs.record("a", history.StepCompleted("s", b"1"))

    assert store.load("a").events == (
        history.WorkflowStarted("wf", b"A"),
        history.StepCompleted("s", b"1"),
    )
    assert store.load("b").events == (history.WorkflowStarted("wf", b"B"),)


# -- round trips of events ----------------------------------------------------

EVENT_CLASSES = [cls for kind, cls in sorted(history.EVENT_TYPES.items())]
PAYLOADS = {
    "none": None,
    "empty": b"",
    "json": b'{"id": "rcpt-1", "cents": 4200}',
    "binary": b"\x00\x01\xff\xfe\x80\xc3\x28\r\n\x1a\\'\"%_",
}


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_every_event_kind_round_trips(store, runs, payload):
    runs.start("r1")
    events = [cls(f"shop.{cls.kind}", payload) for cls in EVENT_CLASSES]

    store.append("r1", 1, events, now=T0)

    loaded = store.load("r1").events[1:]
    assert [(type(e), e.name, e.data) for e in loaded] == [
        (type(e), e.name, e.data) for e in events
    ]
    assert all(e.data is None or type(e.data) is bytes for e in loaded)


@pytest.mark.parametrize("cls", EVENT_CLASSES, ids=lambda cls: cls.kind)
def test_each_event_kind_round_trips_alone(store, runs, cls):
    runs.start("r1")

    store.append("r1", 1, [cls("x", b"\x00\xff")], now=T0)

    loaded = store.load("r1").events[1]
    assert (type(loaded), loaded.name, loaded.data) == (cls, "x", b"\x00\xff")


def test_empty_data_and_no_data_stay_distinct(store, runs):
    runs.start("r1")

    store.append("r1", 1, [history.StepCompleted("a", b""), history.StepCompleted("b")], now=T0)

    _, empty, none = store.load("r1").events
    assert empty.data == b""
    assert none.data is None


@pytest.mark.parametrize(
    "name", ["", "shop.charge", "步骤.charge 🚀", "a" * 255, "x\ty\nz"], ids=range(5)
)
def test_event_names_round_trip(store, runs, name):
    runs.start("r1")

    store.append("r1", 1, [history.ValueRecorded(name, b"0")], now=T0)

    assert store.load("r1").events[1].name == name


def test_a_large_event_round_trips(store, runs):
    runs.start("r1")
    payload = random.Random(11).randbytes(1024 * 1024)

    store.append("r1", 1, [history.StepCompleted("big", payload)], now=T0)

    assert store.load("r1").events[1].data == payload


def test_load_returns_the_whole_history_in_order(store, runs):
    runs.start("r1")
    expected = [history.WorkflowStarted("wf", b"[]")]
    for batch in range(20):
        events = [
            history.StepCompleted(f"step-{batch}-{i}", f"{batch}/{i}".encode()) for i in range(10)
        ]
        store.append("r1", len(expected), events, now=T0 + batch)
        expected.extend(events)

    state = store.load("r1")

    assert state.events == tuple(expected)
    assert state.next_seq == 201
