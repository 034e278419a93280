"""Starting a run in your own database transaction: it exists only if the transaction commits.

Run it with ``python examples/transactions.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sqlalchemy as sa

import fluxo
from fluxo.stores.sql import SQLStore


@fluxo.step
def charge(order_id: int) -> str:
    print(f"charging order {order_id}")
    return f"receipt-{order_id}"


@fluxo.workflow
def checkout(order_id: int) -> str:
    return charge(order_id)


url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'shop.db'}"  # your app's database...
app_db = sa.create_engine(url)
with app_db.begin() as conn:
    conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))

store = SQLStore(url)  # ...is the store too
store.migrate()  # Fluxo's tables, as `fluxo db upgrade` makes them

with fluxo.Engine(store, workflows=[checkout]) as engine:
    with app_db.connect() as conn:  # an order that fails: its run is never started
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
        engine.in_transaction(conn).start(checkout.options(id="order-1"), 1)
        conn.rollback()

    with app_db.connect() as conn:  # the order and its run commit together
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (2)"))
        handle = engine.in_transaction(conn).start(checkout.options(id="order-2"), 2)
        conn.commit()

    with engine.worker():
        print(handle.result(timeout=30))  # prints: receipt-2
    print([run.id for run in engine.list_runs()])  # prints: ['order-2']
