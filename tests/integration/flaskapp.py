"""A Flask app for the tests of fluxo.contrib.flask (``flask --app tests.integration.flaskapp``).

Its workflows write notes through Flask-SQLAlchemy from their steps, which run
inside the app context; ``POST /notes`` adds a note and starts a run in the same
request, and fails after both when asked to, so that its transaction rolls back;
``POST /notes/<id>/see`` only reads before its start, and never commits.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, current_app, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

import fluxo
from fluxo.contrib.flask import Fluxo


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]
    seen: Mapped[int] = mapped_column(default=0)


@fluxo.step
def whoami() -> str:
    """The app the step runs in, and how many notes its database holds."""
    return f"{current_app.name} ({db.session.query(Note).count()} notes)"


@fluxo.step
def mark_seen(note_id: int) -> None:
    """Count that a run saw the note."""
    note = db.session.get(Note, note_id)
    assert note is not None, f"note {note_id} does not exist"
    note.seen += 1
    db.session.commit()


@fluxo.workflow
def greet(name: str) -> str:
    """Say who runs the step."""
    return f"{whoami()}: hello {name}"


@fluxo.workflow
def see(note_id: int) -> int:
    """Mark a note seen; the note must exist when the run runs."""
    mark_seen(note_id)
    return note_id


@fluxo.step
def start_seeing(note_id: int) -> str:
    """Read the note, then start a run for it: the step's session only read."""
    note = db.session.get(Note, note_id)
    assert note is not None, f"note {note_id} does not exist"
    return ext.engine.start(see.options(id=f"seen-by-step-{note.id}"), note.id).id


@fluxo.workflow
def relay(note_id: int) -> str:
    """Start another run from a step."""
    return start_seeing(note_id)


ext = Fluxo(workflows=[greet])


class Failure(Exception):
    """Raised by ``POST /notes?fail=1`` after the note and its run were added."""


def create_app(config: dict[str, Any] | None = None, name: str = "flaskapp") -> Flask:
    """An app with Flask-SQLAlchemy (``SQLALCHEMY_DATABASE_URI`` from the environment)."""
    app = Flask(name)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("FLASKAPP_DATABASE", "sqlite://")
    app.config["FLUXO_WORKFLOWS"] = [
        "tests.integration.flaskapp:see",
        "tests.integration.flaskapp:relay",
    ]
    app.config.update(config or {})
    db.init_app(app)
    ext.init_app(app)

    @app.post("/notes")
    def add_note() -> dict[str, Any]:
        note = Note(text=request.get_json()["text"])
        db.session.add(note)
        db.session.flush()
        handle = ext.engine.start(see.options(id=f"note-{note.id}"), note.id)
        if request.args.get("fail"):
            raise Failure("the request failed after starting the run")
        db.session.commit()
        return {"id": note.id, "run": handle.id}

    @app.post("/notes/<int:note_id>/see")
    def see_note(note_id: int) -> tuple[dict[str, Any], int]:
        note = db.get_or_404(Note, note_id)  # a read: the session's transaction is open
        handle = ext.engine.start(see.options(id=f"see-{note.id}"), note.id)
        return {"run": handle.id}, 202  # no commit: the session is rolled back at the end

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/runs/<run_id>/signal")
    def signal(run_id: str) -> dict[str, Any]:
        ext.engine.signal(run_id, "go")
        return {"sent": run_id}

    @app.post("/runs/<run_id>/start")
    def start_twice(run_id: str) -> dict[str, Any]:
        ext.engine.start(greet.options(id=run_id), request.get_json()["name"])
        return {"started": run_id}

    return app
