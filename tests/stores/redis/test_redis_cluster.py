"""The Redis store's bucketed indexes: one slot per script, two steps safe from crashes and races.

Each test runs on a single Redis server and on a Redis Cluster (see
``tests/_redis_fixtures.py``). Crashes between the steps are simulated by
calling the store's internals the way a status change does, and stopping half
way.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from fluxo import _errors, history
from fluxo.stores import redis as redis_store
from fluxo.stores.redis import _codec, _index, _listing

redis_cluster = pytest.importorskip("redis.cluster")

RunStatus = history.RunStatus

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


def mark_create(store: redis_store.RedisStore, run_id: str, now: float) -> tuple[str, str]:
    """The first step of ``create_run`` alone: returns the generation and the clock."""
    bucket = redis_store.bucket_of(run_id)
    common = store._keys.bucket(bucket)
    keys = [common[k] for k in ("gen", "seq", "created", "lready")]
    keys += store._keys.workflow(bucket, "wf")
    at = _codec.num(now)
    clock, gen, _ = store._conn.call("mark_create", keys, [run_id, at, "r", at, ""])
    return _codec.text(gen), _codec.text(clock)


def claim_ids(store: redis_store.RedisStore, now: float = T0, limit: int = 10) -> list[str]:
    claimed = store.claim("w1", ["wf"], now=now, lease_until=now + 30, limit=limit)
    return [run.id for run in claimed]


def index_members(store: redis_store.RedisStore, run_id: str) -> dict[str, float]:
    """Where the run's bucket holds it: hints, ready:wf and leased:wf, with scores."""
    bucket = redis_store.bucket_of(run_id)
    common = store._keys.bucket(bucket)
    ready, leased = store._keys.workflow(bucket, "wf")
    client = store._conn.connected()
    found = {}
    for name, key in (("hints", common["hints"]), ("ready", ready), ("leased", leased)):
        score = client.zscore(key, run_id)
        if score is not None:
            found[name] = score
    return found


# -- one slot per script call ------------------------------------------------------


class Recorder:
    """Wraps the store's script calls and keeps the keys of each."""

    def __init__(self, store: redis_store.RedisStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, list[str]]] = []
        call, call_many = store._conn.call, store._conn.call_many

        def recording_call(name: str, keys: Any, args: Any) -> Any:
            self.calls.append((name, list(keys)))
            return call(name, keys, args)

        def recording_many(calls: Any, **options: Any) -> list[Any]:
            self.calls.extend((name, list(keys)) for name, keys, _ in calls)
            return call_many(calls, **options)

        monkeypatch.setattr(store._conn, "call", recording_call)
        monkeypatch.setattr(store._conn, "call_many", recording_many)


def exercise(store: redis_store.RedisStore) -> None:
    """Every operation of the store, on runs spread over many buckets."""
    ids = [f"run-{i}" for i in range(12)] + ["odd}id", "", "{tagged}"]
    for i, run_id in enumerate(ids):
        store.create_run(run_id, "wf", b"[]", now=T0 + i / 100)
    store.create_run("leased", "wf", b"[]", now=T0, owner="w9", lease_until=T0 + 5)
    claimed = claim_ids(store, now=T0 + 1, limit=4)
    store.renew("w1", [*claimed, "unknown"], lease_until=T0 + 60)
    store.append(claimed[0], 1, [history.ValueRecorded("v", b"1")], now=T0 + 2)
    store.append(
        claimed[0], 2, [history.ValueRecorded("t", b"{}")], now=T0 + 2, status=RunStatus.WAITING
    )
    store.send_signal(claimed[0], "s", b"1", now=T0 + 3, key="k")
    store.claim_run("w2", claimed[1], now=T0 + 3, lease_until=T0 + 10)
    store.release("w1", claimed[2], now=T0 + 3)
    store.append(claimed[3], 1, [history.WorkflowFailed()], now=T0 + 4, status=RunStatus.FAILED)
    store.reopen(claimed[3], now=T0 + 5)
    store.request_cancel(ids[-1], now=T0 + 5)
    store.next_wake(["wf", "other"], now=T0 + 5)
    store.load(ids[-2])
    store.list_runs(statuses=[RunStatus.PENDING], limit=5)
    assert claim_ids(store, now=T0 + 100, limit=100)


def test_every_script_call_touches_one_slot(store: redis_store.RedisStore, monkeypatch):
    recorder = Recorder(store, monkeypatch)

    exercise(store)

    names = {name for name, _ in recorder.calls}
    assert {"create_run", "append", "mark", "settle", "peek", "claim_one", "renew"} <= names
    for name, keys in recorder.calls:
        slots = {redis_cluster.key_slot(key.encode("utf-8")) for key in keys}
        assert len(slots) == 1, f"{name} touches the slots {sorted(slots)} with {keys}"


def test_the_hot_path_is_one_script_call(store: redis_store.RedisStore, monkeypatch):
    store.create_run("r1", "wf", b"[]", now=T0)
    recorder = Recorder(store, monkeypatch)

    store.append("r1", 1, [history.ValueRecorded("v", b"1")], now=T0)

    assert [name for name, _ in recorder.calls] == ["append"]


def test_buckets_are_stable():
    assert redis_store.bucket_of("order-o-17") == zlib.crc32(b"order-o-17") % 16
    assert {redis_store.bucket_of(f"r{i}") for i in range(200)} == set(range(redis_store.BUCKETS))
    assert redis_store.bucket_of("r1") == redis_store.bucket_of("r1")


# -- crashes between the steps -----------------------------------------------------


def test_a_mark_whose_create_never_happened_is_cleaned_by_a_claim(store):
    mark_create(store, "ghost", T0)  # then the client died

    assert claim_ids(store, now=T0 + 1) == []
    assert index_members(store, "ghost") == {}
    assert store.list_runs() == []
    assert store.next_wake(["wf"], now=T0 + 1) is None
    # The id is still free, and a run made with it later is claimable.
    store.create_run("ghost", "wf", b"[]", now=T0 + 2)
    assert claim_ids(store, now=T0 + 3) == ["ghost"]


def test_a_run_made_ready_without_its_settle_is_claimed(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    store.append("r1", 1, [history.ValueRecorded("t", b"{}")], now=T0, status=RunStatus.WAITING)
    assert index_members(store, "r1") == {}  # waiting for a signal: no entry
    # A signal's first two steps, then a crash before the settle.
    gen, _ = store._index.mark("r1", _codec.num(T0 + 1))
    keys = store._keys.run("r1")
    suffix = _codec.signal_suffix("s", b"1", T0 + 1)
    args = [store._keys.channel, suffix, _codec.num(T0 + 1), "", "0", gen, "r1"]
    assert store._conn.call("send_signal", keys, args)[0] == 0

    assert store.get_run("r1").status is RunStatus.PENDING
    assert store.next_wake(["wf"], now=T0 + 1) == T0 + 1
    assert claim_ids(store, now=T0 + 2) == ["r1"]
    assert index_members(store, "r1") == {"leased": T0 + 32}


def test_a_run_finished_without_its_settle_leaves_an_entry_that_claims_clean(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    assert claim_ids(store, now=T0) == ["r1"]
    # The run script of a finishing append, then a crash before the settle.
    keys = store._keys.run("r1")
    event = redis_store.encode_event(history.WorkflowCompleted())
    args = [store._keys.channel, 1, _codec.num(T0 + 1), "completed", "", "", "0", "r1", event]
    assert store._conn.call("append", keys, args)[0] == 0
    assert index_members(store, "r1") == {"leased": T0 + 30}  # stale, early

    assert claim_ids(store, now=T0 + 31) == []
    assert index_members(store, "r1") == {}
    assert store.next_wake(["wf"], now=T0 + 31) is None
    assert store.get_run("r1").status is RunStatus.COMPLETED


def test_a_claim_after_a_lost_settle_takes_the_run_once(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    store._index.mark("r1", _codec.num(T0))  # a hint as well as the ready entry

    first = claim_ids(store, now=T0 + 1)
    second = claim_ids(store, now=T0 + 1)

    assert (first, second) == (["r1"], [])


# -- races between a settle and a change -------------------------------------------


def test_a_change_is_refused_when_a_settle_may_remove_its_hint(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    store.append("r1", 1, [history.ValueRecorded("t", b"{}")], now=T0, status=RunStatus.WAITING)
    # A signal marks the run ...
    gen, _ = store._index.mark("r1", _codec.num(T0 + 1))
    # ... a claim meets the hint and reads the (old) record: waiting, nothing to claim ...
    candidates, _ = store._index.peek(["wf"], T0 + 1, 10)
    (candidate,) = [c for c in candidates if c.run_id == "r1"]
    keys = store._keys.run("r1")
    claim_args = [store._keys.channel, "w1", _codec.num(T0 + 1), _codec.num(T0 + 31)]
    reply = store._conn.call("claim_one", keys, [*claim_args, candidate.gen, "1"])
    assert _codec.text(reply[0]) == "no"
    # ... so the signal's run script, relying on that hint, is refused,
    suffix = _codec.signal_suffix("s", b"1", T0 + 1)
    signal_args = [store._keys.channel, suffix, _codec.num(T0 + 1), "", "0", gen, "r1"]
    assert store._conn.call("send_signal", keys, signal_args) == [4]
    # ... the claim's settle removes the hint,
    need = _index.need(reply[1])
    store._index.settle([_index.Settle("r1", candidate.gen, need)])
    assert index_members(store, "r1") == {}
    # ... and the signal, retried in full, leaves the run claimable.
    assert store.send_signal("r1", "s", b"1", now=T0 + 1) is True
    assert claim_ids(store, now=T0 + 2) == ["r1"]


def test_a_settle_voided_by_a_later_mark_changes_nothing(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    store.append("r1", 1, [history.ValueRecorded("t", b"{}")], now=T0, status=RunStatus.WAITING)
    old_gen, _ = store._index.mark("r1", _codec.num(T0 + 1))
    stale = _index.Need("", "", "", "wf")  # what a claim saw before the signal
    store.send_signal("r1", "s", b"1", now=T0 + 1)  # marks again: a newer generation

    store._index.settle([_index.Settle("r1", old_gen, stale)])

    assert index_members(store, "r1") == {"ready": T0 + 1}
    assert claim_ids(store, now=T0 + 2) == ["r1"]


def test_a_create_racing_a_claim_that_cleans_its_hint_is_retried(store):
    gen, clock = mark_create(store, "r1", T0)
    # A claim meets the hint before the run exists, and cleans it up.
    assert claim_ids(store, now=T0) == []
    keys = store._keys.run("r1")
    first = redis_store.encode_event(history.WorkflowStarted("wf", b"[]"))
    args = [store._keys.channel, gen, clock, "wf", first, _codec.num(T0), "", "", "", "r1", ""]

    assert store._conn.call("create_run", keys, args) == [b"retry"]

    _, created = store.create_run("r1", "wf", b"[]", now=T0)
    assert created
    assert claim_ids(store, now=T0) == ["r1"]


def test_a_shorter_renewal_takes_the_marked_path(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    assert claim_ids(store, now=T0) == ["r1"]

    assert store.renew("w1", ["r1"], lease_until=T0 + 10) == {"r1": False}

    assert index_members(store, "r1") == {"leased": T0 + 10}
    assert store.next_wake(["wf"], now=T0 + 1) == T0 + 10
    assert claim_ids(store, now=T0 + 10.5) == ["r1"]


def test_run_ids_that_break_hash_tags_still_work(store):
    for run_id in ("odd}id", "", "}", "{a}b"):
        store.create_run(run_id, "wf", b"[]", now=T0)
        store.append(run_id, 1, [history.ValueRecorded("v", b"1")], now=T0)
        assert store.load(run_id).next_seq == 2

    assert sorted(claim_ids(store, now=T0)) == sorted(["odd}id", "", "}", "{a}b"])


# -- counting ------------------------------------------------------------------------


def test_count_runs_reads_a_large_bucket_page_by_page(store, monkeypatch):
    # More runs in one bucket than a listpack holds (128): ZSCAN then pages for real.
    ids = [f"r{i}" for i in range(4000) if redis_store.bucket_of(f"r{i}") == 5][:150]
    for i, run_id in enumerate(ids):
        store.create_run(run_id, "wf" if i % 3 else "other", b"[]", now=T0 + i)
    client = store._conn.connected()
    scans: list[int] = []
    zscan = client.zscan

    def counted_zscan(key: str, cursor: int = 0, **options: Any) -> Any:
        scans.append(cursor)
        return zscan(key, cursor, **options)

    monkeypatch.setattr(client, "zscan", counted_zscan)
    monkeypatch.setattr(_listing, "_COUNT_PAGE", 10)

    counts = store.count_runs()

    assert counts == {("wf", RunStatus.PENDING): 100, ("other", RunStatus.PENDING): 50}
    assert len(scans) > redis_store.BUCKETS  # the large bucket took several pages


def test_count_runs_skips_a_run_whose_create_never_happened(store):
    store.create_run("r1", "wf", b"[]", now=T0)
    mark_create(store, "never", T0)  # its id is in the created index, without a record

    assert store.count_runs() == {("wf", RunStatus.PENDING): 1}


# -- choosing the mode -------------------------------------------------------------


def test_the_mode_is_detected(url: str, request: pytest.FixtureRequest):
    store = redis_store.RedisStore(url)
    try:
        assert store.cluster is ("redis-cluster" in request.node.callspec.id)
    finally:
        store.close()


def test_the_url_overrides_the_mode(url: str, request: pytest.FixtureRequest):
    on_cluster = "redis-cluster" in request.node.callspec.id
    single = redis_store.RedisStore(f"{url}&cluster=false")
    forced = redis_store.RedisStore(f"{url}&cluster=true")
    try:
        assert single.cluster is False
        if on_cluster:
            assert forced.cluster is True
        else:
            with pytest.raises(_errors.StoreUnavailableError, match="drop cluster=true"):
                forced.get_run("r1")
    finally:
        single.close()
        forced.close()


def test_a_bad_cluster_value_is_refused():
    with pytest.raises(_errors.DefinitionError, match="neither true nor false"):
        redis_store.RedisStore("redis://127.0.0.1:1/0?cluster=maybe")


def test_a_prefix_with_braces_is_refused():
    with pytest.raises(_errors.DefinitionError, match="brace"):
        redis_store.RedisStore("redis://127.0.0.1:1/0?prefix=a{b}")
