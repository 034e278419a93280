"""The Redis store's named queues: one slot per script, and an index safe from crashes and races.

Each test runs on a single Redis server and on a Redis Cluster (see
``tests/_redis_fixtures.py``). Crashes between the steps are simulated by calling
the store's internals the way an operation does, and stopping half way.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from fluxo import _errors, history
from fluxo.stores import _queue_rules
from fluxo.stores import redis as redis_store
from fluxo.stores.redis import _codec, _queues

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


def make(store: redis_store.RedisStore, run_id: str, queue: str = "q", **options: Any) -> None:
    options.setdefault("now", T0)
    _, created = store.create_run(run_id, "wf", b"[]", queue=queue, **options)
    assert created


def entries(store: redis_store.RedisStore, queue: str = "q") -> list[str]:
    """The run ids of the entries in the queue's index, in order."""
    client = store._conn.connected()
    found = client.zrange(store._keys.queue(queue)["queued"], 0, -1)
    return [_queues.entry_run(entry)[0] for entry in found]


def queued_ids(store: redis_store.RedisStore, now: float = T0) -> tuple[list[str], float | None]:
    runs, next_start = store.queued_runs("q", now=now, limit=100)
    return [run.id for run in runs], next_start


def enqueue(store: redis_store.RedisStore, run_id: str, start_at: float = T0) -> str:
    """The first step of a create in a named queue alone: the entry made."""
    _, entry, _ = store._queues.enqueue("q", _queues.entry_head(run_id, 0, start_at, T0))
    return entry


# -- the entries' order -----------------------------------------------------------------


def test_entries_sort_in_admission_order() -> None:
    rng = random.Random(17)
    runs = [
        history.RunInfo(
            id=rng.choice(["a", "b", "ab", "é", "z9", "Z"]) + str(i),
            workflow="wf",
            status=RunStatus.PENDING,
            created_at=rng.choice([T0, T0 + 0.5, -3.25, 0.0]),
            updated_at=T0,
            priority=rng.choice([0, 1, -1, 2**63 - 1, -(2**63), 10**12]),
            start_at=rng.choice([T0, T0 + 1e-6, -1.5, 0.0, 1e12]),
        )
        for i in range(300)
    ]

    def head(run: history.RunInfo) -> str:
        assert run.start_at is not None
        return _queues.entry_head(run.id, run.priority, run.start_at, run.created_at)

    by_entry = sorted(runs, key=lambda run: head(run).encode("utf-8"))
    assert by_entry == sorted(runs, key=_queue_rules.admission_order)


def test_a_priority_beyond_64_bits_is_refused_before_anything_is_written(store):
    with pytest.raises(_errors.StoreRejectedError, match="priority"):
        make(store, "r1", priority=2**63)

    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")
    assert entries(store) == []


# -- one slot per script call ---------------------------------------------------------


def test_every_queue_script_touches_one_slot(store, monkeypatch):
    calls: list[tuple[str, list[str]]] = []
    call, call_many = store._conn.call, store._conn.call_many

    def recording_call(name: str, keys: Any, args: Any) -> Any:
        calls.append((name, list(keys)))
        return call(name, keys, args)

    def recording_many(batch: Any, **options: Any) -> list[Any]:
        calls.extend((name, list(keys)) for name, keys, _ in batch)
        return call_many(batch, **options)

    monkeypatch.setattr(store._conn, "call", recording_call)
    monkeypatch.setattr(store._conn, "call_many", recording_many)
    for queue in ("q", "odd}name", "{tagged}", "é"):
        for i in range(6):
            make(store, f"{queue}-{i}", queue, priority=i % 2)
        store.queued_runs(queue, now=T0, limit=3)
        store.admit([f"{queue}-{i}" for i in range(3)], now=T0)
        store.write_queue(queue, 0, b"state")
    claimed = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=2, queues=["q"])
    store.append(claimed[0].id, 1, [history.WorkflowFailed()], now=T0, status=RunStatus.FAILED)
    store.reopen(claimed[0].id, now=T0 + 1)
    store.next_wake(["wf"], now=T0, queues=["q"])

    names = {name for name, _ in calls}
    assert {"enqueue", "queued", "admit", "write_queue", "reopen", "wake_list"} <= names
    for name, keys in calls:
        slots = {redis_cluster.key_slot(key.encode("utf-8")) for key in keys}
        assert len(slots) == 1, (name, keys)


def test_queues_with_similar_names_keep_apart(store):
    for queue in ("q", "q}", "}", "{q}", "Q"):
        make(store, f"run-{queue}", queue)

    for queue in ("q", "q}", "}", "{q}", "Q"):
        assert entries(store, queue) == [f"run-{queue}"]
        runs, _ = store.queued_runs(queue, now=T0, limit=10)
        assert [run.id for run in runs] == [f"run-{queue}"]


# -- crashes between the steps --------------------------------------------------------


def test_an_entry_of_a_create_that_never_ran_is_dropped_by_a_reader(store):
    enqueue(store, "ghost", start_at=T0 - 5)  # then the client died
    enqueue(store, "later-ghost", start_at=T0 + 50)
    make(store, "r1", start_at=T0 + 10)

    assert queued_ids(store) == ([], T0 + 10)
    assert entries(store) == ["r1", "later-ghost"]  # not met yet: behind r1
    assert queued_ids(store, now=T0 + 60) == (["r1"], None)
    assert entries(store) == ["r1"]


def test_a_create_whose_entry_a_reader_dropped_is_made_again(store, monkeypatch):
    enqueue_once = store._queues.enqueue
    made: list[str] = []

    def racing(queue: str, head: str, **options: Any) -> tuple[int, str, Any]:
        clock, entry, more = enqueue_once(queue, head, **options)
        made.append(entry)
        if len(made) == 1:
            # A reader meets the entry before the run script, and drops it.
            assert queued_ids(store) == ([], None)
            assert entries(store) == []
        return clock, entry, more

    monkeypatch.setattr(store._queues, "enqueue", racing)

    make(store, "r1")

    assert len(made) == 2  # the first entry was fenced: the create took a fresh one
    assert store.get_run("r1").start_at == T0
    assert queued_ids(store) == (["r1"], None)
    assert entries(store) == ["r1"]


def test_the_run_script_of_a_create_with_a_fenced_entry_is_refused(store):
    entry = enqueue(store, "r1")
    assert queued_ids(store) == ([], None)  # fences the entry of the run not made yet
    store._conn.call("queue_check", store._keys.run("r1"), [store._keys.channel, "q", entry, 1])
    gen, clock = store._index.mark("r1", "")
    number = entry.rsplit("\x00", 1)[1]
    first = redis_store.encode_event(history.WorkflowStarted("wf", b"[]"))
    args = [store._keys.channel, gen, clock, "wf", first, _codec.num(T0), "", "", "", "r1", ""]
    args += ["", "q", "", "0", "", _codec.num(T0), entry, number]

    assert store._conn.call("create_run", store._keys.run("r1"), args) == [b"retry"]
    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")


def test_an_admission_whose_entry_removal_was_lost_admits_nothing_twice(store):
    make(store, "r1")
    make(store, "r2", start_at=T0 + 30)
    # admit's run script alone (after its mark), then a crash: the entries stay.
    gens = store._index.mark_many(["r1", "r2"], _codec.num(T0))
    for run_id in ("r1", "r2"):
        args = [store._keys.channel, _codec.num(T0), gens[run_id], run_id]
        assert store._conn.call("admit", store._keys.run(run_id), args)[0] == 1
    assert entries(store) == ["r1", "r2"]

    assert queued_ids(store) == ([], None)  # the reader checks them against the records
    assert entries(store) == []
    assert store.admit(["r1", "r2"], now=T0 + 1) == []
    # the mark's hints lead a claim to them although no settle ran
    claimed = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 30, limit=5)
    assert sorted(run.id for run in claimed) == ["r1", "r2"]


def test_a_run_ended_while_awaiting_admission_leaves_the_index(store):
    make(store, "r1")
    make(store, "r2")

    store.append("r1", 1, [history.WorkflowCancelled()], now=T0 + 1, status=RunStatus.CANCELLED)

    assert entries(store) == ["r2"]
    assert store.get_run("r1").start_at is None


def test_a_run_ended_without_its_entry_removal_is_not_queued(store):
    make(store, "r1")
    # the run script of a cancelling append alone, then a crash
    event = redis_store.encode_event(history.WorkflowCancelled())
    args = [store._keys.channel, 1, _codec.num(T0), "cancelled", "", "", "0", "r1", "0"]
    reply = store._conn.call("append", store._keys.run("r1"), [*args, _codec.stamp(T0) + event])
    assert reply[0] == 0
    assert entries(store) == ["r1"]

    assert queued_ids(store) == ([], None)
    assert entries(store) == []
    assert store.admit(["r1"], now=T0) == []


def test_a_run_purged_and_made_again_is_queued_once(store):
    make(store, "r1")
    # the run script of a cancelling append alone, then a crash: its entry stays
    event = redis_store.encode_event(history.WorkflowCancelled())
    args = [store._keys.channel, 1, _codec.num(T0), "cancelled", "", "", "0", "r1", "0"]
    store._conn.call("append", store._keys.run("r1"), [*args, _codec.stamp(T0) + event])
    assert store.purge(finished_before=T0 + 10, statuses=[RunStatus.CANCELLED], limit=10) == 1

    make(store, "r1", now=T0 + 20)

    assert queued_ids(store, now=T0 + 20) == (["r1"], None)
    assert entries(store) == ["r1"]
    assert store.admit(["r1"], now=T0 + 21) == ["r1"]
    assert entries(store) == []


def test_a_retry_whose_entry_a_reader_dropped_is_made_again(store, monkeypatch):
    make(store, "r1")
    store.admit(["r1"], now=T0)
    store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    store.append("r1", 1, [history.WorkflowFailed()], now=T0, status=RunStatus.FAILED)
    enqueue_once = store._queues.enqueue
    made: list[str] = []

    def racing(queue: str, head: str, **options: Any) -> tuple[int, str, Any]:
        clock, entry, more = enqueue_once(queue, head, **options)
        made.append(entry)
        if len(made) == 1:
            assert queued_ids(store, now=T0 + 5) == ([], None)  # drops it, fenced
        return clock, entry, more

    monkeypatch.setattr(store._queues, "enqueue", racing)

    run = store.reopen("r1", now=T0 + 5)

    assert len(made) == 2
    assert (run.status, run.ready_at, run.start_at) == (RunStatus.PENDING, None, T0 + 5)
    assert queued_ids(store, now=T0 + 5) == (["r1"], None)
    assert entries(store) == ["r1"]


# -- queue filters past the runs of other queues ---------------------------------------


def test_a_claim_for_one_queue_reaches_past_older_runs_of_others(store):
    for i in range(40):
        store.create_run(f"d{i}", "wf", b"[]", now=T0 - 100 + i)
    make(store, "a1", "a")
    store.admit(["a1"], now=T0)

    claimed = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1, queues=["a"])

    assert [run.id for run in claimed] == ["a1"]
    assert len(store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=100)) == 40


def test_next_wake_for_one_queue_reaches_past_earlier_runs_of_others(store):
    for i in range(300):
        store.create_run(f"d{i}", "wf", b"[]", now=T0 + i)
    make(store, "a1", "a")
    store.admit(["a1"], now=T0 + 500)

    assert store.next_wake(["wf"], now=T0, queues=["a"]) == T0 + 500
    assert store.next_wake(["wf"], now=T0, queues=[""]) == T0
    assert store.next_wake(["wf"], now=T0, queues=["b"]) is None


def ids_in_bucket(bucket: int, count: int) -> list[str]:
    found = (f"id-{i}" for i in range(10_000))
    return [run_id for run_id in found if redis_store.bucket_of(run_id) == bucket][:count]


def test_next_wake_for_queues_never_answers_later_than_a_run_left_unread(store, monkeypatch):
    monkeypatch.setattr(_queues, "_WAKE_PAGE", 2)  # each set read two entries at a time
    d1, d2, d3, early = ids_in_bucket(0, 4)
    (late,) = ids_in_bucket(1, 1)
    for i, run_id in enumerate((d1, d2, d3), start=1):
        store.create_run(run_id, "wf", b"[]", now=T0 + i)
    for run_id, at in ((early, T0 + 4), (late, T0 + 10)):
        make(store, run_id, "a", now=at)
        store.admit([run_id], now=at)

    # bucket 0's first page ends at T0 + 2: a run of "a" may follow, before T0 + 10
    assert store.next_wake(["wf"], now=T0, queues=["a"]) == T0 + 4
    assert store.next_wake(["wf"], now=T0, queues=[""]) == T0 + 1
    assert store.next_wake(["wf"], now=T0, queues=["b"]) is None


def test_readers_racing_creates_retries_and_admissions_lose_no_waiting_run(url, store):
    import threading

    stores = [redis_store.RedisStore(url) for _ in range(4)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def read(reader: redis_store.RedisStore) -> None:
        try:
            while not stop.is_set():
                reader.queued_runs("q", now=T0 + 100, limit=5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    def write(writer: redis_store.RedisStore, first: int) -> None:
        try:
            for i in range(first, first + 20):
                run_id = f"r{i:03}"
                make(writer, run_id, priority=i % 3)
                if i % 4 == 0:  # admitted, failed and retried: it awaits admission again
                    assert writer.admit([run_id], now=T0) == [run_id]
                    writer.claim_run("w", run_id, now=T0, lease_until=T0 + 30)
                    writer.append(
                        run_id, 1, [history.WorkflowFailed()], now=T0, status=RunStatus.FAILED
                    )
                    writer.reopen(run_id, now=T0 + 1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(s,)) for s in stores[:2]]
    writers = [threading.Thread(target=write, args=(s, 20 * i)) for i, s in enumerate(stores[2:])]
    try:
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join(60)
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
        for opened in stores:
            opened.close()

    assert errors == []
    expected = sorted(f"r{i:03}" for i in range(40))
    runs, _ = store.queued_runs("q", now=T0 + 100, limit=100)
    assert sorted(run.id for run in runs) == expected
    assert sorted(entries(store)) == expected
    assert sorted(store.admit(expected, now=T0 + 2)) == expected
    assert entries(store) == []
