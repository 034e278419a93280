"""The MongoDB store's ``count_runs`` on documents only it can hold (the contract: conformance/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fluxo import _errors, history

mongo = pytest.importorskip("fluxo.stores.mongo")

pytestmark = pytest.mark.mongo

RunStatus = history.RunStatus

T0 = 1_700_000_000.0


@pytest.fixture
def store(clean_mongo_url: str) -> Iterator[mongo.MongoStore]:
    opened = mongo.MongoStore(clean_mongo_url)
    try:
        yield opened
    finally:
        opened.close()


def test_a_run_a_purge_left_half_way_is_not_counted(store: mongo.MongoStore) -> None:
    store.create_run("gone", "wf", b"[]", now=T0)
    store.create_run("kept", "wf", b"[]", now=T0)
    store._runs.update_one({"_id": "gone"}, {"$set": {"purging": "a-token"}})

    assert store.count_runs() == {("wf", RunStatus.PENDING): 1}
    with pytest.raises(_errors.RunNotFoundError):
        store.get_run("gone")  # gone for every reader alike


def test_a_workflow_that_is_not_text_counts_under_the_name_its_record_reads(
    store: mongo.MongoStore,
) -> None:
    store.create_run("odd", "wf", b"[]", now=T0)
    store.create_run("lost", "wf", b"[]", now=T0)
    store._runs.update_one({"_id": "odd"}, {"$set": {"workflow": 42}})
    store._runs.update_one({"_id": "lost"}, {"$unset": {"workflow": 1}})

    counts = store.count_runs()

    assert counts == {("42", RunStatus.PENDING): 1, ("", RunStatus.PENDING): 1}
    assert {store.get_run(run_id).workflow for run_id in ("odd", "lost")} == {"42", ""}
