"""The shop's tests, with Flask's test client: ``pytest examples/flask_shop``.

One test drives the app over HTTP with a worker thread, as ``flask fluxo worker``
would run; the others use ``fluxo.testing``'s environment, where a day passes in
milliseconds: for the workflow alone, and for the views with the environment as
the app's store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

pytest.importorskip(
    "flask_sqlalchemy", reason="the shop needs: pip install 'fluxo[flask]' flask-sqlalchemy"
)

from flask import Flask

from flask_shop.app import create_app, fluxo
from flask_shop.models import Order, db
from flask_shop.workflows import charge, checkout
from fluxo.testing import WorkflowEnvironment


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shop.db'}"})
    with app.app_context():
        db.create_all()
    yield app
    fluxo.close(app)


def test_an_order_is_paid_once_the_payment_webhook_arrives(app: Flask) -> None:
    client = app.test_client()
    engine = fluxo.get_engine(app)
    with engine.worker():  # in the background, as `flask fluxo worker` does
        order = client.post("/orders", json={"cents": 4200}).get_json()
        assert order == {"id": 1, "status": "pending"}

        assert client.post("/orders/1/paid").status_code == 200
        assert engine.handle("order-1").result(timeout=30) == "paid"

    assert client.get("/orders/1").get_json() == {"id": 1, "cents": 4200, "status": "paid"}
    with app.app_context():
        assert db.session.get(Order, 1).times_paid == 1


def test_an_order_not_paid_within_a_day_expires(app: Flask) -> None:
    with WorkflowEnvironment() as env, app.app_context():  # steps use db.session
        order = Order(cents=990)
        db.session.add(order)
        db.session.commit()
        env.stub(charge, returns="pay-test")  # no provider in tests

        assert env.run(checkout, order.id, order.cents) == "expired"  # the day passes at once
        assert order.status == "expired"


def test_the_views_with_the_environment_as_the_store(tmp_path: Path) -> None:
    with WorkflowEnvironment() as env:
        # The app's engine takes the environment's store and virtual clock, and the
        # environment executes the runs the views start, when the test says so.
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'shop.db'}", "FLUXO_STORE": env}
        )
        env.stub(charge, returns="pay-test")
        client = app.test_client()
        with app.app_context():  # the environment runs the steps here: they use db.session
            db.create_all()
            client.post("/orders", json={"cents": 990})  # order 1: never paid
            client.post("/orders", json={"cents": 4200})  # order 2
            env.advance(0)  # runs what the views started, until each run waits
            client.post("/orders/2/paid")
            env.advance(timedelta(days=1))  # runs the signalled run; then a day passes

        assert client.get("/orders/1").get_json()["status"] == "expired"
        assert client.get("/orders/2").get_json()["status"] == "paid"
        fluxo.close(app)
