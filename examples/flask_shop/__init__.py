"""A shop on Flask whose orders are paid through a durable workflow (docs/flask.md).

* ``app.py``: the app factory and its views (``flask --app flask_shop.app ...``);
* ``models.py``: the ``Order`` table, on Flask-SQLAlchemy;
* ``workflows.py``: charge the order, wait for the payment webhook, mark it paid;
* ``test_shop.py``: its tests, with Flask's test client (``pytest examples/flask_shop``).
"""
