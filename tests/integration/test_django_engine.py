"""fluxo.contrib.django's engine: one per process, its workflows, transactional starts, hygiene."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.test import override_settings

import fluxo
from fluxo.contrib.django import _process, close_engine, current_settings, get_engine
from fluxo.stores import memory, sql
from tests.integration._django import Site

pytestmark = pytest.mark.usefixtures("django_site")

NOTES = "tests.integration.django_site.notes.workflows"

CALLS: list[str] = []
"""What the ``traced`` workflow's step and the hygiene around it did, in order."""


@fluxo.step
def traced_step() -> bool:
    from tests.integration.django_site.notes.models import Note

    CALLS.append("step")
    Note.objects.count()  # opens this thread's connection to the default database
    return connections["default"].connection is not None


@fluxo.workflow
def traced() -> bool:
    return traced_step()


TRACED = f"{__name__}.traced"


class Boom(Exception):
    pass


@pytest.fixture(autouse=True)
def fresh_engine() -> Iterator[None]:
    close_engine()
    yield
    close_engine()


def note_texts(alias: str = "default") -> list[str]:
    from tests.integration.django_site.notes.models import Note

    return list(Note.objects.using(alias).values_list("text", flat=True))


def notes_workflow(name: str) -> Any:
    from django.utils.module_loading import import_string

    return import_string(f"{NOTES}.{name}")


# -- one engine per process ----------------------------------------------------------------


def test_the_engine_is_made_once_on_first_use_and_shared_by_threads() -> None:
    engine = get_engine()
    seen: list[fluxo.Engine] = []
    threads = [threading.Thread(target=lambda: seen.append(get_engine())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert seen == [engine] * 4
    assert get_engine() is engine


def test_the_store_is_the_default_database_and_not_migrated_by_the_engine() -> None:
    store = get_engine().store
    assert isinstance(store, sql.SQLStore)
    assert store.engine.url.database == connections["default"].settings_dict["NAME"]


def test_the_workflows_are_those_of_the_apps_workflows_modules() -> None:
    names = {workflow.name for workflow in get_engine().workflows}
    assert names == {f"{NOTES}.note", f"{NOTES}.wait_for_go", f"{NOTES}.fails"}


def test_listed_workflows_are_added_and_autodiscovery_can_be_turned_off() -> None:
    with override_settings(FLUXO={"WORKFLOWS": [TRACED]}):
        assert TRACED in get_engine().workflow_names
        assert f"{NOTES}.note" in get_engine().workflow_names
    with override_settings(FLUXO={"WORKFLOWS": [TRACED], "AUTODISCOVER": False}):
        assert get_engine().workflow_names == {TRACED}


def test_a_forked_child_makes_an_engine_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    parent = get_engine()
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as in a child gunicorn forked

    child = get_engine()

    assert child is not parent
    assert get_engine() is child
    close_engine()  # the child's, in the child
    with pytest.raises(fluxo.RunStateError, match="closed"):
        child.list_runs(limit=1)
    parent.list_runs(limit=1)  # the parent's engine is left open for the parent
    parent.close()


def test_close_engine_closes_it_and_the_next_call_makes_another() -> None:
    first = get_engine()
    close_engine()
    close_engine()  # twice: harmless

    with pytest.raises(fluxo.RunStateError, match="closed"):
        first.list_runs(limit=1)
    assert get_engine() is not first


def test_changing_the_settings_in_a_test_makes_a_new_engine() -> None:
    first = get_engine()
    with override_settings(FLUXO={"STORE": "memory://"}):
        assert isinstance(get_engine().store, memory.MemoryStore)
    assert get_engine() is not first
    assert isinstance(get_engine().store, sql.SQLStore)


def test_an_unusable_setting_is_refused_when_the_engine_is_made() -> None:
    with (
        override_settings(FLUXO={"DATABASE": "orders"}),
        pytest.raises(ImproperlyConfigured, match="'orders', which is not in DATABASES"),
    ):
        get_engine()
    with (
        override_settings(FLUXO={"WORKFLOWS": [f"{NOTES}.write_note"]}),
        pytest.raises(ImproperlyConfigured, match="is a Step, not a workflow"),
    ):
        get_engine()


def test_current_settings_reads_the_setting() -> None:
    with override_settings(FLUXO={"START": "on_commit"}):
        assert current_settings().start_mode == "on_commit"


# -- transactional starts ------------------------------------------------------------------


ALIASES = ["default", pytest.param("pg", marks=pytest.mark.postgres)]


@pytest.fixture(params=ALIASES)
def alias(request: pytest.FixtureRequest, django_site: Site) -> Iterator[str]:
    """The Fluxo database of the test: the SQLite ``default``, or PostgreSQL's ``pg``."""
    if request.param == "pg":
        django_site.require_postgres()
    with override_settings(FLUXO={"DATABASE": request.param}):
        yield request.param


def start_note(alias: str, run_id: str, text: str, *, fail: bool) -> None:
    """Write a note and start a run that writes another, in one atomic block."""
    from tests.integration.django_site.notes.models import Note

    with transaction.atomic(using=alias):
        Note.objects.using(alias).create(text=f"{text} (the row)")
        get_engine().start(notes_workflow("note").options(id=run_id), f"{text} (the run)")
        with pytest.raises(fluxo.RunNotFoundError):
            get_engine().get_run(run_id)  # the workers' connections do not see it yet
        if fail:
            raise Boom


def test_a_run_started_in_a_rolled_back_block_never_exists(alias: str) -> None:
    run_id, text = f"note-{uuid.uuid4().hex}", f"rolled back {uuid.uuid4().hex}"
    with pytest.raises(Boom):
        start_note(alias, run_id, text, fail=True)

    with pytest.raises(fluxo.RunNotFoundError):
        get_engine().get_run(run_id)
    assert run_id not in {run.id for run in get_engine().list_runs(limit=10_000)}
    assert not [t for t in note_texts(alias) if t.startswith(text)]


def test_a_run_started_in_a_committed_block_runs(alias: str) -> None:
    run_id, text = f"note-{uuid.uuid4().hex}", f"committed {uuid.uuid4().hex}"
    start_note(alias, run_id, text, fail=False)

    engine = get_engine()
    assert engine.get_run(run_id).status is fluxo.RunStatus.PENDING
    with engine.worker():
        engine.handle(run_id).result(timeout=30)
    assert sorted(t for t in note_texts(alias) if t.startswith(text)) == [
        f"{text} (the row)",
        f"{text} (the run)",
    ]


def test_outside_a_block_a_start_is_a_plain_start(alias: str) -> None:
    run_id = f"plain-{uuid.uuid4().hex}"
    assert not connections[alias].in_atomic_block
    get_engine().start(notes_workflow("note").options(id=run_id), "plain")
    assert get_engine().get_run(run_id).status is fluxo.RunStatus.PENDING


def test_on_commit_starts_the_run_after_the_commit_and_never_on_rollback(alias: str) -> None:
    with override_settings(FLUXO={"DATABASE": alias, "START": "on_commit"}):
        engine = get_engine()
        kept, dropped = f"kept-{uuid.uuid4().hex}", f"dropped-{uuid.uuid4().hex}"
        with transaction.atomic(using=alias):
            handle = engine.start(notes_workflow("note").options(id=kept), "on commit")
            assert handle.id == kept
            with pytest.raises(fluxo.RunNotFoundError):
                engine.get_run(kept)
        assert engine.get_run(kept).status is fluxo.RunStatus.PENDING

        with pytest.raises(Boom), transaction.atomic(using=alias):  # noqa: PT012
            engine.start(notes_workflow("note").options(id=dropped), "never")
            raise Boom
        with pytest.raises(fluxo.RunNotFoundError):
            engine.get_run(dropped)


def test_with_another_store_starts_wait_for_the_commit() -> None:
    with override_settings(FLUXO={"STORE": "memory://"}):
        engine = get_engine()
        with transaction.atomic():
            handle = engine.start(notes_workflow("note"), "in memory")
            with pytest.raises(fluxo.RunNotFoundError):
                engine.get_run(handle.id)
        assert engine.get_run(handle.id).status is fluxo.RunStatus.PENDING


# -- connection hygiene --------------------------------------------------------------------


def test_old_connections_are_closed_before_and_after_each_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _process.close_old_connections

    def close_old_connections() -> None:
        CALLS.append("close")
        real()

    monkeypatch.setattr(_process, "close_old_connections", close_old_connections)
    CALLS.clear()
    with override_settings(FLUXO={"WORKFLOWS": [TRACED]}):
        assert get_engine().run(traced) is True  # the step had its connection open

    assert CALLS == ["close", "step", "close"]
    assert connections["default"].connection is None  # CONN_MAX_AGE = 0: closed after it


def test_a_worker_runs_steps_with_the_same_hygiene(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = _process.close_old_connections

    def close_old_connections() -> None:
        threads.append(threading.current_thread().name)
        real()

    monkeypatch.setattr(_process, "close_old_connections", close_old_connections)
    with override_settings(FLUXO={"WORKFLOWS": [TRACED], "AUTODISCOVER": False}):
        engine = get_engine()  # its worker runs the traced runs only
        handle = engine.start(traced)
        with engine.worker():
            assert handle.result(timeout=30) is True

    assert len(threads) == 2
    assert threads[0] == threads[1] != threading.current_thread().name
