"""Django's test databases and Fluxo's own connections.

Fluxo's store keeps a connection pool of its own beside Django's connections. Two
steps of Django's test runner (``manage.py test``, or pytest through
``django.test.utils.setup_databases``/``teardown_databases``) need the database to
themselves:

* destroying a test database: PostgreSQL refuses to drop a database that another
  session is connected to ("database ... is being accessed by other users");
* cloning one for ``--parallel``: PostgreSQL copies it as a template, which needs
  no other session either, and on SQLite Django copies the file, which misses what
  is still in the write-ahead log (Fluxo puts SQLite databases in WAL mode).

So :func:`install` (called by the app's ``ready()``) wraps
``BaseDatabaseCreation.destroy_test_db`` and ``clone_test_db``: the process's
engine is closed first (the next ``get_engine()`` builds another), and before a
clone of an SQLite database its log is written into the file
(``PRAGMA wal_checkpoint(TRUNCATE)``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db.backends.base.creation import BaseDatabaseCreation

log = logging.getLogger(__name__)

_MARK = "__fluxo_wrapped__"


def before_destroy(creation: BaseDatabaseCreation) -> None:
    """Close the process's engine, whose pool would keep the database in use."""
    from fluxo.contrib.django import _process

    _process.close_engine()


def before_clone(creation: BaseDatabaseCreation) -> None:
    """Close the engine, and on SQLite move the write-ahead log into the file to copy."""
    before_destroy(creation)
    connection = creation.connection
    if connection.vendor != "sqlite" or creation.is_in_memory_db(connection.settings_dict["NAME"]):
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy = cursor.fetchone()
    if busy and busy[0]:
        log.warning(
            "the SQLite database %s is in use: its clones may miss recent writes",
            connection.settings_dict["NAME"],
        )


def _wrap(method: Callable[..., Any], before: Callable[[BaseDatabaseCreation], None]) -> Any:
    @functools.wraps(method)
    def wrapper(self: BaseDatabaseCreation, *args: Any, **kwargs: Any) -> Any:
        before(self)
        return method(self, *args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper


def install() -> None:
    """Wrap Django's test database destruction and cloning (once, whatever the calls)."""
    for name, before in (("destroy_test_db", before_destroy), ("clone_test_db", before_clone)):
        method = getattr(BaseDatabaseCreation, name)
        if not getattr(method, _MARK, False):
            setattr(BaseDatabaseCreation, name, _wrap(method, before))
