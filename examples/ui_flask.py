"""The Fluxo dashboard inside a Flask app, behind the app's own login.

    flask --app ui_flask run        # then open http://127.0.0.1:5000/fluxo/

``python examples/ui_flask.py`` walks through it with Flask's test client.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, redirect, request, session, url_for

import fluxo
from fluxo.contrib.flask import Fluxo, dashboard_blueprint


@fluxo.step
def send_welcome(name: str) -> str:
    return f"welcome, {name}"


@fluxo.workflow
def onboard(name: str) -> str:
    return send_welcome(name)


app = Flask(__name__)
app.secret_key = "change-me"  # signs the session cookie: keep yours secret
app.config["FLUXO_STORE"] = "sqlite:///ui_flask.db"  # in the instance folder
flows = Fluxo(app, workflows=[onboard])


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """The app's own guard: users who have not logged in are sent to /login."""

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if "user" not in session:
            return redirect(url_for("login", next=request.path))
        return view(*args, **kwargs)

    return guarded


@app.route("/login")
def login() -> Any:
    session["user"] = "ana"  # a real app checks a password here
    return redirect(url_for("fluxo_dashboard.page"))


# --8<-- [start:mount]
dashboard = dashboard_blueprint(decorators=[login_required])  # shows flows.engine
app.register_blueprint(dashboard, url_prefix="/fluxo")
# --8<-- [end:mount]


if __name__ == "__main__":
    flows.engine.run(onboard.options(id="onboard-ana"), "ana")
    client = app.test_client()
    refused = client.get("/fluxo/")
    print(refused.status_code, refused.location)  # prints: 302 /login?next=/fluxo/
    client.get("/login")
    page = client.get("/fluxo/").get_data(as_text=True)
    print('href="/fluxo/run?id=onboard-ana"' in page)  # prints: True
    run = client.get("/fluxo/run?id=onboard-ana")
    print(run.status_code, run.content_type)  # prints: 200 text/html; charset=utf-8
