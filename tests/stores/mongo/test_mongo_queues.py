"""The MongoDB store's queues on documents and plans only it has (the contract: conformance/)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from fluxo import _errors, history

mongo = pytest.importorskip("fluxo.stores.mongo")

pytestmark = pytest.mark.mongo

RunStatus = history.RunStatus

T0 = 1_700_000_000.0
QUEUE_FIELDS = {"queue": 1, "priority": 1, "partition": 1, "start_at": 1}


@pytest.fixture
def store(clean_mongo_url: str) -> Iterator[mongo.MongoStore]:
    opened = mongo.MongoStore(clean_mongo_url)
    try:
        yield opened
    finally:
        opened.close()


class Recording:
    """The ``runs`` collection, noting the filter and sort of every ``find`` and ``find_one``."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.queries: list[tuple[dict[str, Any], Any]] = []

    def find(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.queries.append((filter, kwargs.get("sort")))
        return self._collection.find(filter, *args, **kwargs)

    def find_one(self, filter: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.queries.append((filter, kwargs.get("sort")))
        return self._collection.find_one(filter, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)


def stages(plan: Any) -> Iterator[Mapping[str, Any]]:
    """Every stage of an explained plan, however the server nests them."""
    if isinstance(plan, Mapping):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from stages(item)


def finish(store: mongo.MongoStore, run_id: str, status: RunStatus = RunStatus.COMPLETED) -> None:
    store.admit([run_id], now=T0)
    assert store.claim_run("w1", run_id, now=T0, lease_until=T0 + 30) is not None
    event: history.Event = (
        history.WorkflowCompleted("", b'"ok"')
        if status is RunStatus.COMPLETED
        else history.WorkflowFailed("", b'{"type": "ValueError"}')
    )
    store.append(run_id, 1, [event], now=T0, status=status)


def test_queued_runs_reads_only_the_runs_awaiting_admission(store: mongo.MongoStore) -> None:
    for i in range(20):  # a queue's finished runs, which no admission reads again
        store.create_run(f"done{i:02}", "wf", b"[]", now=T0, queue="q")
        finish(store, f"done{i:02}")
    store.create_run("due", "wf", b"[]", now=T0, queue="q", priority=2)
    store.create_run("later", "wf", b"[]", now=T0, queue="q", start_at=T0 + 60)
    recording = Recording(store._runs)
    store._queues._runs = recording

    found, next_start = store.queued_runs("q", now=T0 + 1, limit=10)

    assert [run.id for run in found] == ["due"]
    assert next_start == T0 + 60
    assert len(recording.queries) == 2
    database = store._runs.database
    for filter, sort in recording.queries:
        explained = database.command(
            "explain",
            {"find": "runs", "filter": filter, "sort": dict(sort), "limit": 10},
            verbosity="executionStats",
        )
        plan = list(stages(explained["queryPlanner"]["winningPlan"]))
        assert "COLLSCAN" not in {stage["stage"] for stage in plan}, filter
        assert {stage.get("indexName") for stage in plan if stage["stage"] == "IXSCAN"} <= {
            "queue_admission",
            "queue_start",
        }
        assert explained["executionStats"]["totalDocsExamined"] <= 2, filter


def test_the_queue_indexes_hold_only_the_runs_awaiting_admission(store: mongo.MongoStore) -> None:
    store.create_run("r1", "wf", b"[]", now=T0)

    indexes = store._runs.index_information()

    for name in ("queue_admission", "queue_start"):
        assert indexes[name]["partialFilterExpression"] == {"start_at": {"$gte": float("-inf")}}
    assert [key for key, _ in indexes["queue_admission"]["key"]] == [
        "queue",
        "priority",
        "start_at",
        "created_at",
        "_id",
    ]


def test_only_a_run_awaiting_admission_has_a_start_at(store: mongo.MongoStore) -> None:
    store.create_run("default", "wf", b"[]", now=T0, start_at=T0 + 5)
    store.create_run("queued", "wf", b"[]", now=T0, queue="q")
    store.create_run("admitted", "wf", b"[]", now=T0, queue="q")
    store.admit(["admitted"], now=T0)

    docs = {doc["_id"]: doc for doc in store._runs.find({}, {"start_at": 1, "ready_at": 1})}

    assert (docs["default"]["start_at"], docs["default"]["ready_at"]) == (None, T0 + 5)
    assert (docs["queued"]["start_at"], docs["queued"]["ready_at"]) == (T0, None)
    assert (docs["admitted"]["start_at"], docs["admitted"]["ready_at"]) == (None, T0)


def test_a_run_written_before_queues_is_in_the_default_queue(store: mongo.MongoStore) -> None:
    store.create_run("old", "wf", b"[]", now=T0)
    store._runs.update_one({"_id": "old"}, {"$unset": QUEUE_FIELDS})

    run = store.get_run("old")

    assert (run.queue, run.priority, run.partition, run.start_at) == ("", 0, None, None)
    assert run.damage is None
    assert [r.id for r in store.list_runs(queues=[""])] == ["old"]
    assert store.list_runs(queues=["q"]) == []
    assert store.next_wake(["wf"], now=T0, queues=[""]) == T0
    assert store.queued_runs("", now=T0, limit=10) == ([], None)
    claimed = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=5, queues=["", "q"])
    assert [r.id for r in claimed] == ["old"]
    store.append("old", 1, [history.WorkflowFailed("", b"{}")], now=T0, status=RunStatus.FAILED)

    reopened = store.reopen("old", now=T0 + 5)

    assert (reopened.ready_at, reopened.start_at) == (T0 + 5, None)


def test_damaged_queue_fields_are_named_not_raised(store: mongo.MongoStore) -> None:
    store.create_run("r1", "wf", b"[]", now=T0, queue="q")
    store._runs.update_one(
        {"_id": "r1"}, {"$set": {"priority": "high", "queue": 7, "start_at": "soon"}}
    )

    run = store.get_run("r1")

    assert (run.queue, run.priority, run.start_at) == ("7", 0, None)
    assert run.damage is not None
    for field in ("priority", "queue", "start_at"):
        assert field in run.damage


def test_a_priority_wider_than_64_bits_is_refused_and_nothing_written(
    store: mongo.MongoStore,
) -> None:
    with pytest.raises(_errors.StoreRejectedError, match="MongoDB cannot store"):
        store.create_run("r1", "wf", b"[]", now=T0, queue="q", priority=2**70)

    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("r1")


def test_reading_queues_creates_nothing(store: mongo.MongoStore) -> None:
    assert store.read_queue("q") == (0, b"")
    assert store.queued_runs("q", now=T0, limit=5) == ([], None)

    assert store._runs.database.list_collection_names() == []


def test_a_queue_record_is_one_document_of_the_queues_collection(store: mongo.MongoStore) -> None:
    assert store.write_queue("payments", 0, b"state") is True

    [doc] = store._runs.database["queues"].find()

    assert doc == {"_id": "payments", "version": 1, "state": b"state"}
