"""An app whose factory uses its Fluxo engine, for gunicorn --preload (test_flask_gunicorn.py).

The engine is built in gunicorn's master process, before it forks its workers;
``GET /engine`` reports which engine the worker answering uses, and starts a run
with it.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from tests.integration import flaskapp


def create_app() -> Flask:
    """The test app (``FLASKAPP_DATABASE``), its engine built before any fork."""
    app = flaskapp.create_app()
    with app.app_context():
        flaskapp.db.create_all()
        flaskapp.db.engine.dispose()  # SQLAlchemy's pool is not for sharing with forked children
    parent = flaskapp.ext.get_engine(app).instance_id  # built here, in the master

    @app.get("/engine")
    def engine() -> dict[str, Any]:
        mine = flaskapp.ext.engine
        run = mine.start(flaskapp.greet, "preloaded")
        return {"pid": os.getpid(), "engine": mine.instance_id, "parent": parent, "run": run.id}

    return app
