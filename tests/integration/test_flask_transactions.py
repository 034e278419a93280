"""fluxo.contrib.flask: starts inside a Flask-SQLAlchemy session's transaction.

On the store's own database a start joins the transaction of ``db.session``: the
run exists once the session commits, and never if it rolls back (an explicit
rollback, or a request that fails and whose session is removed). On another
store, ``FLUXO_JOIN_SESSION = "on_commit"`` starts the run after the commit.
On SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask_sqlalchemy")

import sqlalchemy as sa
from flask import Flask

import fluxo
from tests.integration import flaskapp
from tests.integration.flaskapp import Note, db, ext, see


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url


@contextlib.contextmanager
def made_app(database: str, **config: Any) -> Iterator[Flask]:
    """The test app on ``database``, its tables made; its engines closed afterwards."""
    app = flaskapp.create_app({"SQLALCHEMY_DATABASE_URI": database, **config})
    with app.app_context():
        db.create_all()
    # As the first request does: Fluxo's tables exist before a session transaction opens
    # (SQLite cannot create them, nor switch to WAL, while a transaction writes).
    ext.get_engine(app).store.migrate()  # type: ignore[attr-defined]
    try:
        yield app
    finally:
        ext.close(app)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(database: str) -> Iterator[Flask]:
    with made_app(database) as app:
        yield app


def notes(app: Flask) -> list[tuple[int, int]]:
    with app.app_context():
        return [(n.id, n.seen) for n in db.session.query(Note).order_by(Note.id)]


def run_ids(app: Flask) -> list[str]:
    return sorted(run.id for run in ext.get_engine(app).list_runs())


def test_the_store_shares_the_apps_database_and_joins_its_session(app: Flask) -> None:
    assert app.extensions["fluxo"].engine() is ext.get_engine(app)
    assert app.extensions["fluxo"].join_session == "join"


def test_a_run_started_in_a_committed_request_runs(app: Flask) -> None:
    engine = ext.get_engine(app)
    with engine.worker():  # idle, waiting: the commit's wake-up reaches it
        answer = app.test_client().post("/notes", json={"text": "hello"})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        run_id = answer.get_json()["run"]
        assert engine.handle(run_id).result(timeout=30) == answer.get_json()["id"]
    assert notes(app) == [(answer.get_json()["id"], 1)]


def test_a_run_started_in_a_failed_request_never_exists_nor_runs(app: Flask) -> None:
    answer = app.test_client().post("/notes?fail=1", json={"text": "lost"})
    assert answer.status_code == 500  # Failure: Flask-SQLAlchemy removes the session, rolled back
    engine = ext.get_engine(app)
    assert run_ids(app) == []
    assert notes(app) == []
    with pytest.raises(fluxo.RunNotFoundError):
        engine.get_run("note-1")
    assert engine.worker().process_one() == 0  # nothing for a worker either


def test_an_explicit_rollback_drops_the_run(app: Flask) -> None:
    with app.app_context():
        note = Note(text="draft")
        db.session.add(note)
        db.session.flush()
        handle = ext.engine.start(see.options(id="rolled-back"), note.id)
        assert handle.id == "rolled-back"
        db.session.rollback()
        with pytest.raises(fluxo.RunNotFoundError):
            ext.engine.get_run("rolled-back")
    assert run_ids(app) == []


def test_a_run_joined_to_the_session_appears_only_at_the_commit(app: Flask) -> None:
    with app.app_context():
        note = Note(text="kept")
        db.session.add(note)
        db.session.flush()
        note_id = note.id
        ext.engine.start(see.options(id="kept"), note_id)
        assert run_ids(app) == []  # another connection: not committed yet
        db.session.commit()
        assert run_ids(app) == ["kept"]
        assert ext.engine.worker().process_one() == 1
        assert ext.engine.get_run("kept").status is fluxo.RunStatus.COMPLETED
    assert notes(app) == [(note_id, 1)]


def test_waiting_for_a_joined_run_before_the_commit_says_why_it_is_not_found(app: Flask) -> None:
    with app.app_context():
        note = Note(text="waited for")
        db.session.add(note)
        db.session.flush()
        handle = ext.engine.start(see.options(id="too-soon"), note.id)
        with pytest.raises(fluxo.RunNotFoundError, match="exists once that transaction commits"):
            handle.result(timeout=1)
        db.session.commit()
        assert handle.status() is fluxo.RunStatus.PENDING


def test_a_start_without_a_session_transaction_is_a_plain_start(app: Flask) -> None:
    with app.app_context():
        db.session.commit()  # nothing pending: no transaction
        ext.engine.start(flaskapp.greet.options(id="plain"), "ana")
        db.session.rollback()  # has nothing of the run's
    assert run_ids(app) == ["plain"]


# -- a transaction that only read: a plain start -----------------------------------------


def add_note(app: Flask, text: str = "note") -> int:
    with app.app_context():
        note = Note(text=text)
        db.session.add(note)
        db.session.commit()
        return note.id


def test_a_view_that_reads_then_starts_without_a_commit_starts_the_run(app: Flask) -> None:
    note_id = add_note(app)
    answer = app.test_client().post(f"/notes/{note_id}/see")
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert run_ids(app) == [f"see-{note_id}"]  # the request's session was rolled back
    engine = ext.get_engine(app)
    assert engine.worker().process_one() == 1
    assert notes(app) == [(note_id, 1)]


def test_a_step_that_reads_then_starts_starts_the_run(app: Flask) -> None:
    note_id = add_note(app)
    engine = ext.get_engine(app)
    assert engine.run(flaskapp.relay, note_id) == f"seen-by-step-{note_id}"
    assert f"seen-by-step-{note_id}" in run_ids(app)


def test_what_counts_as_a_write_in_the_sessions_transaction(app: Flask) -> None:
    note_id = add_note(app)
    writes = {
        "added": lambda: db.session.add(Note(text="new")),
        "changed": lambda: setattr(db.session.get(Note, note_id), "text", "changed"),
        "deleted": lambda: db.session.delete(db.session.get(Note, note_id)),
        "flushed": lambda: (db.session.add(Note(text="flushed")), db.session.flush()),
        "updated": lambda: db.session.execute(
            sa.update(Note).where(Note.id == note_id).values(text="updated")
        ),
        "text": lambda: db.session.execute(sa.text("UPDATE notes SET seen = seen")),
    }
    reads = {
        "got": lambda: db.session.get(Note, note_id),
        "queried": lambda: db.session.query(Note).count(),
        "selected": lambda: db.session.execute(sa.text("SELECT count(*) FROM notes")),
        "committed": lambda: (db.session.add(Note(text="kept")), db.session.commit()),
    }
    with app.app_context():
        for name, act in {**writes, **reads}.items():
            act()
            ext.engine.start(flaskapp.greet.options(id=name), name)
            db.session.rollback()
            db.session.remove()
    assert run_ids(app) == sorted(reads)


def test_on_commit_after_a_read_only_transaction_is_a_plain_start(
    database: str, tmp_path: Path
) -> None:
    with made_app(
        database,
        FLUXO_STORE=f"sqlite:///{tmp_path / 'elsewhere.db'}",
        FLUXO_JOIN_SESSION="on_commit",
    ) as app:
        note_id = add_note(app)
        answer = app.test_client().post(f"/notes/{note_id}/see")
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert run_ids(app) == [f"see-{note_id}"]


def test_in_transaction_joins_the_session_explicitly(database: str) -> None:
    with made_app(database, FLUXO_JOIN_SESSION=False) as app:
        with app.app_context():
            for text, keep in [("dropped", False), ("kept", True)]:
                note = Note(text=text)
                db.session.add(note)
                db.session.flush()
                ext.engine.in_transaction(db.session).start(see.options(id=text), note.id)
                if keep:
                    db.session.commit()
                else:
                    db.session.rollback()
            # without joining, an ambient start is a plain one, even in a transaction
            db.session.add(Note(text="plain"))
            ext.engine.start(flaskapp.greet.options(id="plain"), "ana")
            db.session.rollback()
        assert run_ids(app) == ["kept", "plain"]


def test_on_commit_starts_the_run_on_another_store_after_the_commit(
    database: str, tmp_path: Path
) -> None:
    with made_app(
        database,
        FLUXO_STORE=f"sqlite:///{tmp_path / 'elsewhere.db'}",
        FLUXO_JOIN_SESSION="on_commit",
    ) as app:
        with app.app_context():
            for text, keep in [("dropped", False), ("kept", True)]:
                note = Note(text=text)
                db.session.add(note)
                db.session.flush()
                handle = ext.engine.start(see.options(id=text), note.id)
                assert handle.id == text
                assert run_ids(app) == []  # not before the commit
                if keep:
                    db.session.commit()
                else:
                    db.session.rollback()
        assert run_ids(app) == ["kept"]
        answer = app.test_client().post("/notes?fail=1", json={"text": "lost"})
        assert answer.status_code == 500
        assert run_ids(app) == ["kept"]
