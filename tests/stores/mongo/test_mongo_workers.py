"""The MongoDB store's worker liveness where only it can race (the contract: conformance/).

Without transactions a beat reads, then writes: these tests make another worker
act in between, and check that its write stands.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fluxo import history

mongo = pytest.importorskip("fluxo.stores.mongo")
from fluxo.stores.mongo import _watch  # noqa: E402 - only once pymongo is known to be there

pytestmark = pytest.mark.mongo

T0 = 1_700_000_000.0


@pytest.fixture
def store(clean_mongo_url: str) -> Iterator[mongo.MongoStore]:
    opened = mongo.MongoStore(clean_mongo_url)
    try:
        yield opened
    finally:
        opened.close()


class Meddling:
    """A collection whose ``find`` calls ``meddle`` after its documents were read."""

    def __init__(self, collection: Any, meddle: Callable[[], None]) -> None:
        self._collection = collection
        self._meddle = meddle

    def find(self, *args: Any, **kwargs: Any) -> list[Any]:
        found = list(self._collection.find(*args, **kwargs))
        self._meddle()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


def leased_run(store: mongo.MongoStore, run_id: str = "r1", owner: str = "w1") -> None:
    store.create_run(run_id, "wf", b"[]", now=T0)
    claimed = store.claim(owner, ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert [run.id for run in claimed] == [run_id]


def test_a_lease_renewed_while_a_beat_frees_it_stands(store: mongo.MongoStore) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    leased_run(store)
    workers = store._workers
    workers._runs = Meddling(workers._runs, lambda: store.renew("w1", ["r1"], lease_until=T0 + 40))

    assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == []
    assert store.get_run("r1").lease_until == T0 + 40


def test_a_claim_made_while_a_beat_frees_the_run_stands(
    store: mongo.MongoStore, clean_mongo_url: str
) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    leased_run(store)
    other = mongo.MongoStore(clean_mongo_url)

    def restart_and_claim() -> None:
        # w1 restarts and frees its run itself, and w3 claims it
        assert other.beat_worker("w1", now=T0 + 2.9, alive_until=T0 + 5, restarted=True) == ["r1"]
        other.claim("w3", ["wf"], now=T0 + 2.95, lease_until=T0 + 33, limit=1)

    workers = store._workers
    workers._runs = Meddling(workers._runs, restart_and_claim)
    try:
        assert store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == []
    finally:
        other.close()
    run = store.get_run("r1")
    assert (run.lease_owner, run.lease_until) == ("w3", T0 + 33)
    assert store._workers._workers.find_one({"_id": "w1"}) == {"_id": "w1", "alive_until": T0 + 5}


def test_a_worker_that_beats_while_it_is_reaped_stays_known(store: mongo.MongoStore) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    workers = store._workers
    real = workers._workers
    workers._workers = Meddling(
        real, lambda: real.update_one({"_id": "w1"}, {"$set": {"alive_until": T0 + 5}})
    )

    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)

    assert real.find_one({"_id": "w1"}) == {"_id": "w1", "alive_until": T0 + 5}


def test_a_freed_run_is_updated_at_the_beat_and_never_back(store: mongo.MongoStore) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    leased_run(store, "r1")
    leased_run(store, "r2")
    store._runs.update_one({"_id": "r2"}, {"$set": {"updated_at": T0 + 9}})

    assert sorted(store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)) == ["r1", "r2"]
    assert store.get_run("r1").updated_at == T0 + 3
    assert store.get_run("r2").updated_at == T0 + 9


def test_a_dead_workers_record_goes_and_a_forgotten_one_too(store: mongo.MongoStore) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5)
    store.beat_worker("w3", now=T0 + 3, alive_until=T0 + 5)
    store.forget_worker("w3")

    assert list(store._workers._workers.find()) == [{"_id": "w2", "alive_until": T0 + 5}]


def test_forgetting_a_worker_creates_nothing(clean_mongo_url: str) -> None:
    import pymongo

    store = mongo.MongoStore(clean_mongo_url)
    try:
        store.forget_worker("w1")
    finally:
        store.close()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(clean_mongo_url)
    try:
        assert client.get_default_database().list_collection_names() == []
    finally:
        client.close()


@pytest.mark.parametrize("stream", [True, False], ids=["change-stream", "poll"])
@pytest.mark.parametrize("run_id", [None, "r1"], ids=["any-run", "the-run"])
def test_a_freed_run_wakes_the_waiters_of_another_process(
    clean_mongo_url: str, monkeypatch: pytest.MonkeyPatch, stream: bool, run_id: str | None
) -> None:
    if not stream:  # as on a standalone mongod: waiters poll
        monkeypatch.setattr(_watch.Watcher, "_follow", lambda self: None)
    here = mongo.MongoStore(clean_mongo_url)
    # Another host name for the same server: a change feed of its own, as in another process.
    there = mongo.MongoStore(clean_mongo_url.replace("127.0.0.1", "localhost", 1))
    try:
        assert here._watcher._feed is not there._watcher._feed
        here.beat_worker("w1", now=T0, alive_until=T0 + 2)
        leased_run(here)
        token = there.change_token(run_id)
        time.sleep(0.5)  # the change stream, if any, is followed by now
        woken: list[bool] = []
        waiter = threading.Thread(
            target=lambda: woken.append(there.wait_for_change(run_id, 30, since=token))
        )
        waiter.start()
        time.sleep(0.2)

        assert here.beat_worker("w2", now=T0 + 3, alive_until=T0 + 5) == ["r1"]

        waiter.join(40)
        assert woken == [True]
    finally:
        there.close()
        here.close()


def test_a_restarted_worker_frees_only_its_own_runs(store: mongo.MongoStore) -> None:
    store.beat_worker("w1", now=T0, alive_until=T0 + 2)
    store.beat_worker("w2", now=T0, alive_until=T0 + 2)
    leased_run(store, "mine", "w1")
    leased_run(store, "theirs", "w2")

    freed = store.beat_worker("w1", now=T0 + 0.5, alive_until=T0 + 2.5, restarted=True)

    assert freed == ["mine"]
    assert store.get_run("theirs").lease_until == T0 + 30
    assert store.get_run("mine").status is history.RunStatus.RUNNING
