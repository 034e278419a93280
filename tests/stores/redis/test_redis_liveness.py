"""The Redis store's worker liveness: one round trip per beat, dead workers' runs freed safely.

Each test runs on a single Redis server and on a Redis Cluster. Crashes of a
reaper are simulated by calling the store's scripts the way a beat does, and
stopping half way.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fluxo import history
from fluxo.stores import redis as redis_store
from fluxo.stores.redis import _codec

redis_cluster = pytest.importorskip("redis.cluster")

T0 = 1_700_000_000.0

pytestmark = pytest.mark.redis


@pytest.fixture(params=["redis", "redis-cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh prefix on a single server, then on a cluster."""
    value: str = request.getfixturevalue(f"clean_{request.param.replace('-', '_')}_url")
    return value


@pytest.fixture
def store(url: str) -> Iterator[redis_store.RedisStore]:
    opened = redis_store.RedisStore(url)
    try:
        yield opened
    finally:
        opened.close()


def claim_ids(store: redis_store.RedisStore, worker: str, now: float) -> list[str]:
    claimed = store.claim(worker, ["wf"], now=now, lease_until=now + 30, limit=100)
    return sorted(run.id for run in claimed)


def raw_beat(store: redis_store.RedisStore, worker: str, now: float, until: float) -> Any:
    """A beat's script alone, as a reaper that dies before freeing anything leaves it."""
    args = [worker, _codec.num(now), _codec.num(until), "1"]
    return store._conn.call("beat", [store._keys.workers], args)


def alive(store: redis_store.RedisStore) -> dict[str, float]:
    client = store._conn.connected()
    rows = client.zrange(store._keys.workers, 0, -1, withscores=True)
    return {_codec.text(member): score for member, score in rows}


class Recorder:
    """Wraps the store's calls to Redis and keeps each one's name and keys."""

    def __init__(self, store: redis_store.RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        call, call_many, commands = store._conn.call, store._conn.call_many, store._conn.commands

        def recording_call(name: str, keys: Any, args: Any) -> Any:
            self.calls.append((name, list(keys)))
            return call(name, keys, args)

        def recording_many(calls: Any, **options: Any) -> list[Any]:
            self.calls.extend((name, list(keys)) for name, keys, _ in calls)
            return call_many(calls, **options)

        def recording_commands(build: Any) -> list[Any]:
            self.calls.append(("commands", []))
            return commands(build)

        monkeypatch.setattr(store._conn, "call", recording_call)
        monkeypatch.setattr(store._conn, "call_many", recording_many)
        monkeypatch.setattr(store._conn, "commands", recording_commands)


def test_a_beat_while_nobody_is_dead_is_one_script_call(store, monkeypatch):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("r1", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    recorder = Recorder(store, monkeypatch)

    assert store.beat_worker("w2", now=T0 + 1, alive_until=T0 + 3) == []
    assert store.beat_worker("w1", now=T0 + 1, alive_until=T0 + 3, reap=False) == []

    assert [name for name, _ in recorder.calls] == ["beat", "beat"]


def test_every_script_call_of_a_reap_touches_one_slot(store, monkeypatch):
    ids = [f"run-{i}" for i in range(20)] + ["odd}id", ""]
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.beat_worker("w3", now=T0, alive_until=T0 + 2)
    for run_id in ids:
        store.create_run(run_id, "wf", b"[]", now=T0)
    assert len(claim_ids(store, "w1", T0)) == len(ids)
    recorder = Recorder(store, monkeypatch)

    freed = store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)
    store.forget_worker("w2")

    assert sorted(freed) == sorted(ids)
    names = {name for name, _ in recorder.calls}
    assert {"beat", "mark", "free", "settle", "bury"} <= names
    for name, keys in recorder.calls:
        slots = {redis_cluster.key_slot(key.encode("utf-8")) for key in keys}
        assert len(slots) <= 1, f"{name} touches the slots {sorted(slots)} with {keys}"
    assert alive(store) == {}
    assert claim_ids(store, "w2", T0 + 3.1) == sorted(ids)


def test_a_reaper_that_dies_before_freeing_leaves_the_dead_to_the_next_beat(store):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("r1", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)

    assert [_codec.text(v) for v in raw_beat(store, "w2", T0 + 3, T0 + 5)] == ["w1", "1700000002"]
    assert "w1" in alive(store)

    assert store.beat_worker("w3", now=T0 + 3.5, alive_until=T0 + 5.5) == ["r1"]
    assert "w1" not in alive(store)
    assert store.get_run("r1").lease_until == T0 + 3.5


def test_a_reaper_that_dies_before_removing_the_dead_frees_nothing_twice(store, monkeypatch):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("r1", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    call = store._conn.call

    def dying(name: str, keys: Any, args: Any) -> Any:
        if name == "bury":
            raise RuntimeError("the reaper died")
        return call(name, keys, args)

    monkeypatch.setattr(store._conn, "call", dying)
    with pytest.raises(RuntimeError):
        store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)
    monkeypatch.undo()

    assert store.get_run("r1").lease_until == T0 + 3
    assert "w1" in alive(store)
    assert store.beat_worker("w3", now=T0 + 3.2, alive_until=T0 + 5.2) == []
    assert "w1" not in alive(store)
    assert claim_ids(store, "w3", T0 + 3.3) == ["r1"]


def test_a_worker_that_beats_while_it_is_reaped_keeps_its_record(store):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    dead = raw_beat(store, "w2", T0 + 3, T0 + 5)
    store.beat_worker("w1", now=T0 + 3.1, alive_until=T0 + 5.1, reap=False)

    store._conn.call("bury", [store._keys.workers], dead)

    assert alive(store) == {"w1": T0 + 5.1, "w2": T0 + 5}


def test_a_run_leased_by_a_claim_whose_settle_was_lost_is_freed_once_a_claim_met_it(store):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("r1", "wf", b"[]", now=T0)
    # w1's claim: the run script, then the worker died before the settle.
    gen = store._index.generations(["r1"])["r1"]
    args = [store._keys.channel, "w1", _codec.num(T0), _codec.num(T0 + 30), gen, "1"]
    assert _codec.text(store._conn.call("claim_one", store._keys.run("r1"), args)[0]) == "claimed"

    assert claim_ids(store, "w2", T0 + 1) == []  # meets the early entry and settles it
    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["r1"]
    assert claim_ids(store, "w2", T0 + 3.1) == ["r1"]


def test_a_run_freed_without_its_settle_is_claimable(store):
    store.create_run("r1", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    # A reaper's mark and free, then it died before the settle.
    gens = store._index.mark_many(["r1"], _codec.num(T0 + 3))
    args = [store._keys.channel, _codec.num(T0 + 3), gens["r1"], "w1", "r1"]
    assert _codec.text(store._conn.call("free", store._keys.run("r1"), args)[0]) == "freed"

    assert store.next_wake(["wf"], now=T0 + 3) == T0 + 3
    assert claim_ids(store, "w2", T0 + 3.1) == ["r1"]


def test_a_free_refused_by_a_fence_is_tried_again(store, monkeypatch):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("r1", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    mark_many = store._index.mark_many
    marks: list[dict[str, str]] = []

    def racing(run_ids: Any, lowest: str) -> dict[str, str]:
        gens = mark_many(run_ids, lowest)
        if not marks:
            # Another change marks the run and runs its script before the free: the
            # fence rises above the free's generation, whose hint a settle may remove.
            later, _ = store._index.mark("r1", lowest)
            args = [store._keys.channel, "someone", _codec.num(T0 + 60), later, "0"]
            assert _codec.text(store._conn.call("renew", store._keys.run("r1"), args)[0]) == "no"
        marks.append(gens)
        return gens

    monkeypatch.setattr(store._index, "mark_many", racing)

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["r1"]
    assert len(marks) == 2
    assert claim_ids(store, "w2", T0 + 3.1) == ["r1"]


def test_runs_of_other_owners_and_finished_runs_are_left_alone(store):
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.create_run("mine", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    store.create_run("theirs", "wf", b"[]", now=T0, owner="w9", lease_until=T0 + 30)
    store.create_run("done", "wf", b"[]", now=T0, owner="w1", lease_until=T0 + 30)
    store.append(
        "done", 1, [history.WorkflowCompleted()], now=T0 + 1, status=history.RunStatus.COMPLETED
    )

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["mine"]
    assert store.get_run("theirs").lease_until == T0 + 30
    assert store.get_run("done").status is history.RunStatus.COMPLETED
