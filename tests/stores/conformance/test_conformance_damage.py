"""Store conformance: damaged data is reported, never raised raw, and the rest keeps working.

A history with a missing position, an unknown event kind or an unreadable item
makes ``load`` raise ``HistoryCorruptError`` naming the run, the position and the
problem, with ``next_seq`` where the engine appends the run's failure. A run whose
stored status is unknown is listed and read with ``damage`` set, never claimed,
and matches no status filter. Each test damages the data through the backend's
raw client (``damage.py``).
"""

from __future__ import annotations

import pytest

from fluxo import _errors, history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


def _three_events(store, runs, run_id="r1"):
    runs.start(run_id)
    store.append(
        run_id, 1, [history.StepCompleted("a", b"1"), history.StepCompleted("b", b"2")], now=T0
    )


def _corrupt(store, run_id):
    with pytest.raises(_errors.HistoryCorruptError) as caught:
        store.load(run_id)
    error = caught.value
    assert error.run_id == run_id
    assert isinstance(error, _errors.FluxoError)
    assert not isinstance(error, _errors.StoreError)  # trying again cannot help
    return error


def test_an_unknown_event_kind_is_reported_with_its_position(store, runs, damage):
    _three_events(store, runs)
    damage.set_kind("r1", 1, "from_the_future")

    error = _corrupt(store, "r1")

    assert error.seq == 1
    assert "from_the_future" in error.problem
    assert error.next_seq == 3
    assert "'r1'" in str(error)
    assert "position 1" in str(error)


def test_a_missing_position_is_reported_where_positions_are_stored(store, runs, damage):
    if not damage.positional:
        pytest.skip("a list store: a deleted item shortens the history (replay reports it)")
    _three_events(store, runs)
    damage.drop_event("r1", 1)

    error = _corrupt(store, "r1")

    assert error.seq in (1, 2)  # the gap, or the count that no longer matches
    assert error.next_seq == 3


def test_a_history_that_lost_its_start_is_reported(store, runs, damage):
    _three_events(store, runs)
    damage.drop_event("r1", 0)

    error = _corrupt(store, "r1")

    assert error.seq == 0


def test_the_failure_of_a_damaged_run_can_be_recorded_where_next_seq_says(store, runs, damage):
    _three_events(store, runs)
    damage.set_kind("r1", 2, "from_the_future")
    error = _corrupt(store, "r1")

    store.append(
        "r1",
        error.next_seq,
        [history.WorkflowFailed("", b'{"type": "fluxo.HistoryCorruptError"}')],
        now=T0,
        status=RunStatus.FAILED,
    )

    assert store.get_run("r1").status is RunStatus.FAILED
    assert _corrupt(store, "r1").seq == 2  # the damage stays; nothing is overwritten


def test_a_damaged_history_leaves_every_other_run_working(store, runs, damage):
    _three_events(store, runs, "bad")
    _three_events(store, runs, "good")
    damage.set_kind("bad", 1, "from_the_future")

    _corrupt(store, "bad")

    assert len(store.load("good").events) == 3
    assert {run.id for run in store.list_runs()} == {"bad", "good"}
    assert store.get_run("bad").damage is None  # its record is intact


def test_an_unknown_status_is_listed_as_damage_and_never_claimed(store, runs, damage):
    if not damage.keeps_status_text:
        pytest.skip("this store keeps statuses as RunStatus objects")
    runs.start("bad")
    runs.start("good", now=T0 + 1)
    damage.set_status("bad", "exploded")

    run = store.get_run("bad")
    assert run.status is RunStatus.FAILED
    assert "'exploded'" in (run.damage or "")
    listed = {run.id: run for run in store.list_runs()}
    assert listed["bad"].damage == run.damage
    assert listed["good"].damage is None
    for status in RunStatus:
        assert "bad" not in {r.id for r in store.list_runs(statuses=[status])}
    claimed = store.claim("w1", ["wf"], now=T0 + 10, lease_until=T0 + 40, limit=10)
    assert [r.id for r in claimed] == ["good"]
    assert store.claim_run("w1", "bad", now=T0 + 10, lease_until=T0 + 40) is None
    error = _corrupt(store, "bad")
    assert error.seq is None
    assert "'exploded'" in error.problem
    with pytest.raises(_errors.RunStateError):
        store.send_signal("bad", "go", b"1", now=T0)


def test_an_unreadable_history_item_is_reported(store_kind, store, runs, damage):
    if not hasattr(damage, "set_item"):
        pytest.skip("only a store of raw bytes per event can hold an unreadable one")
    _three_events(store, runs)
    damage.set_item("r1", 1, b"\x00\xff\xfe not an event")

    error = _corrupt(store, "r1")

    assert error.seq == 1
    assert error.next_seq == 3


@pytest.mark.parametrize("operation", ["retry", "signal", "cancel"])
def test_the_engine_says_a_run_with_an_unknown_status_is_damaged(store, runs, damage, operation):
    if not damage.keeps_status_text:
        pytest.skip("this store keeps statuses as RunStatus objects")
    import fluxo

    runs.start("bad")
    damage.set_status("bad", "zombie")
    engine = fluxo.Engine(store, workflows=[])
    act = {
        "retry": lambda: engine.retry("bad"),
        "signal": lambda: engine.signal("bad", "go", 1),
        "cancel": lambda: engine.cancel("bad"),
    }[operation]

    with pytest.raises(_errors.RunStateError) as caught:
        act()

    message = str(caught.value)
    assert "'bad'" in message
    assert "damaged" in message
    assert "'zombie'" in message  # the damage, as the record reads
    assert "not failed" not in message
    assert "has finished" not in message
    assert store.get_run("bad").damage is not None  # nothing was overwritten


DAMAGED_HEADERS = {
    "not-json": "{traceparent: 00-abc",
    "an-array": '["traceparent", "00-abc"]',
    "a-number": '{"traceparent": 7}',
    "null": "null",
    "empty": "",
}


@pytest.mark.parametrize("raw", DAMAGED_HEADERS.values(), ids=DAMAGED_HEADERS.keys())
def test_damaged_headers_are_reported_by_every_read(store, runs, damage, raw):
    if not damage.keeps_headers_text:
        pytest.skip("this store keeps the headers it was given as a mapping")
    runs.start("bad")
    runs.start("good", now=T0 + 1)
    damage.set_headers("bad", raw)

    run = store.get_run("bad")
    assert "headers" in (run.damage or "")
    assert run.headers == {}
    assert run.status is RunStatus.PENDING  # as stored: claimed, then failed by its worker
    found = store.get_runs(["bad", "good"])
    assert (found["bad"].damage, found["good"].damage) == (run.damage, None)
    listed = {run.id: run for run in store.list_runs()}
    assert (listed["bad"].damage, listed["good"].damage) == (run.damage, None)
    error = _corrupt(store, "bad")
    assert error.seq is None
    assert error.next_seq == 1
    assert error.problem == run.damage
    claimed = store.claim("w1", ["wf"], now=T0 + 10, lease_until=T0 + 40, limit=10)
    assert [(r.id, r.damage) for r in claimed] == [("bad", run.damage), ("good", None)]
    assert len(store.load("good").events) == 1


def test_damage_in_both_status_and_headers_names_both(store, runs, damage):
    if not (damage.keeps_headers_text and damage.keeps_status_text):
        pytest.skip("this store keeps statuses and headers as objects")
    runs.start("bad")
    damage.set_status("bad", "exploded")
    damage.set_headers("bad", "[]")

    run = store.get_run("bad")

    assert run.status is RunStatus.FAILED
    assert "'exploded'" in (run.damage or "")
    assert "headers" in (run.damage or "")


def test_a_mongo_headers_field_that_is_not_text_is_damage(store_kind, store, runs, damage):
    if store_kind != "mongo":
        pytest.skip("only MongoDB documents hold values of other types")
    runs.start("bad")
    damage.set_headers("bad", {"traceparent": "00-abc"})  # a document, not the JSON text

    assert "headers" in (store.get_run("bad").damage or "")
    assert "headers" in _corrupt(store, "bad").problem


def test_a_redis_headers_field_that_is_not_utf8_is_damage(store_kind, store, runs, damage):
    if not store_kind.startswith("redis"):
        pytest.skip("only Redis holds bytes that are not text in the field")
    runs.start("bad")
    damage.set_headers("bad", b'{"a": "\xff"}')

    assert "headers" in (store.get_run("bad").damage or "")
    assert "headers" in _corrupt(store, "bad").problem


def test_a_run_with_damaged_headers_is_failed_once_by_the_worker_that_claims_it(store, damage):
    if not damage.keeps_headers_text:
        pytest.skip("this store keeps the headers it was given as a mapping")
    import fluxo

    @fluxo.workflow(name="damage.headers")
    def flow() -> int:
        return 1

    store.create_run("bad", "damage.headers", b"[]", now=T0, headers={"traceparent": "00-a"})
    damage.set_headers("bad", '{"traceparent": ')
    engine = fluxo.Engine(store, workflows=[flow], clock=lambda: T0 + 10)
    worker = engine.worker(sticky=0)

    assert worker.process_one() == 1
    assert worker.process_one() == 0  # failed for good: nothing claims it again

    run = store.get_run("bad")
    assert run.status is RunStatus.FAILED
    assert "headers" in (run.damage or "")  # the record is left as it was found
    damage.set_headers("bad", '{"traceparent": "00-a"}')  # repaired by hand
    state = store.load("bad")
    assert state.run.headers == {"traceparent": "00-a"}
    assert [event.kind for event in state.events] == ["workflow_started", "workflow_failed"]
    assert b"HistoryCorruptError" in (state.events[-1].data or b"")
