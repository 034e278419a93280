"""The smallest Flask app with Fluxo, in three lines: ``python examples/flask_quickstart.py``.

With Flask-SQLAlchemy set up, the ``FLUXO_STORE`` line goes too: Fluxo keeps its
tables in the app's database (see examples/flask_shop/).
"""

from __future__ import annotations

from flask import Flask

import fluxo
from fluxo.contrib.flask import Fluxo  # 1


@fluxo.step
def send_welcome(name: str) -> str:
    return f"welcome, {name}"  # send the e-mail here


@fluxo.workflow
def onboard(name: str) -> str:
    return send_welcome(name)


app = Flask(__name__)
app.config["FLUXO_STORE"] = "sqlite:///flask_quickstart.db"  # 2 (in the instance folder)
flows = Fluxo(app, workflows=[onboard])  # 3


@app.post("/users/<name>")
def sign_up(name: str) -> dict[str, str]:
    handle = flows.engine.start(onboard.options(id=f"onboard-{name}"), name)
    return {"run": handle.id}


if __name__ == "__main__":
    run = app.test_client().post("/users/ana").get_json()["run"]
    with flows.engine.worker():  # `flask --app flask_quickstart fluxo worker` in production
        print(flows.engine.handle(run).result(timeout=30))  # prints: welcome, ana
