"""The shop's Flask app: POST /orders, the payment webhook, GET /orders/<id>.

flask --app flask_shop.app init-db       # the shop's tables
flask --app flask_shop.app run           # the web app
flask --app flask_shop.app fluxo worker  # and a worker, which runs the workflows
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from flask_shop.models import Order, db
from flask_shop.workflows import checkout
from fluxo.contrib.flask import Fluxo

# --8<-- [start:setup]
fluxo = Fluxo(workflows=[checkout])  # its store: Flask-SQLAlchemy's database
# --8<-- [end:setup]


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///shop.db"
    app.config["FLUXO_ERROR_HANDLERS"] = True  # an unknown or finished run: 404, 409
    app.config.from_prefixed_env()  # FLASK_SQLALCHEMY_DATABASE_URI=postgresql+psycopg://...
    app.config.update(config or {})
    db.init_app(app)
    fluxo.init_app(app)

    # --8<-- [start:start]
    @app.post("/orders")
    def create_order() -> tuple[dict[str, Any], int]:
        order = Order(cents=int(request.get_json()["cents"]))
        db.session.add(order)
        db.session.flush()  # gives the order its id
        fluxo.engine.start(checkout.options(id=f"order-{order.id}"), order.id, order.cents)
        db.session.commit()  # the order and its run exist from here on, both or neither
        return {"id": order.id, "status": order.status}, 201

    # --8<-- [end:start]

    @app.post("/orders/<int:order_id>/paid")
    def payment_webhook(order_id: int) -> dict[str, Any]:
        order = db.get_or_404(Order, order_id)
        if order.status == "pending":
            fluxo.engine.signal(f"order-{order_id}", "paid")
        return {"id": order_id}

    @app.get("/orders/<int:order_id>")
    def show_order(order_id: int) -> dict[str, Any]:
        order = db.get_or_404(Order, order_id)
        return {"id": order.id, "cents": order.cents, "status": order.status}

    @app.cli.command("init-db")
    def init_db() -> None:
        """Create the shop's tables (Fluxo creates its own on first use)."""
        db.create_all()

    return app
