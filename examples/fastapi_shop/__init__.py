"""A shop on FastAPI whose orders are paid through a durable workflow (docs/fastapi.md).

* ``app.py``: the app, its lifespan-managed ``fluxo.AsyncEngine`` and its endpoints
  (``uvicorn fastapi_shop.app:app``, with ``fluxo worker fastapi_shop.app:make_engine``);
* ``workflows.py``: charge the order, wait for the payment webhook, say how it ended;
* ``test_shop.py``: its tests, with httpx's ASGI transport (``pytest examples/fastapi_shop``).
"""
