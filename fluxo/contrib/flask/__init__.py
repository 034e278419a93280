"""Fluxo in Flask apps: ``Fluxo(app)``, the ``FLUXO_*`` config keys, and ``flask fluxo``.

::

    from fluxo.contrib.flask import Fluxo

    fluxo = Fluxo(app, workflows=[checkout])   # the store: FLUXO_STORE, or Flask-SQLAlchemy's
    fluxo.engine.start(checkout.options(id=f"order-{order.id}"), order.id)

* ``fluxo.engine`` is the app's engine, one per process, built on first use (a
  forked server worker builds its own) and closed at exit.
* Steps run inside ``app.app_context()``, so they can use the app's extensions.
* With Flask-SQLAlchemy on the store's database, a start inside a ``db.session``
  transaction that has written joins it: the run exists once the session
  commits, never if it rolls back. After reads only, it is a plain start.
* ``flask fluxo worker``, ``flask fluxo runs list``... run Fluxo's command line
  with the app's engine.
* ``app.register_blueprint(dashboard_blueprint(), url_prefix="/fluxo")`` serves
  the Fluxo dashboard behind the app's own login (docs/ui-mounting.md).

See docs/flask.md for the configuration keys, transactions, deployment and tests.
"""

from fluxo.contrib.flask._config import KEYS
from fluxo.contrib.flask._dashboard import dashboard_blueprint
from fluxo.contrib.flask._extension import Fluxo, FluxoState
from fluxo.contrib.flask._http import STATUSES, register_error_handlers

__all__ = [
    "KEYS",
    "STATUSES",
    "Fluxo",
    "FluxoState",
    "dashboard_blueprint",
    "register_error_handlers",
]

# Shown where users find them: fluxo.contrib.flask.Fluxo, not the private modules.
for _value in (Fluxo, FluxoState, dashboard_blueprint, register_error_handlers):
    _value.__module__ = __name__
del _value
