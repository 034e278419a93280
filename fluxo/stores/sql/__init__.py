"""The SQL store: SQLite (the embedded default), PostgreSQL and MySQL/MariaDB.

Statements are built once per database dialect with SQLAlchemy Core and compiled
to the driver's SQL; each operation then runs them on a pooled DB-API connection
in autocommit mode, opening a transaction (``BEGIN``, ``BEGIN IMMEDIATE`` on
SQLite) only when it writes more than one statement. That keeps a durable step
at its floor: ``append`` of one event is a single ``INSERT`` and its implicit
commit, one round trip on a server database, with no read before it.

Fencing: ``fluxo_events`` has the primary key ``(run_id, seq)``. An append
inserts its first event only if the position before it exists (in the same
statement), so a history has neither duplicates nor gaps; a unique violation
becomes :class:`~fluxo._errors.SequenceConflictError`.

Signals: ``send_signal`` stores the signal and wakes its run in one transaction
(one statement on PostgreSQL) that holds the run's row lock, so the signals of a
run take ids in the order they commit, and ``load`` reads the run, its history
and its signals in one statement. An ``append`` that suspends a run (``WAITING``)
yields to a wake-up that arrived meanwhile within its own ``UPDATE`` (a ``CASE``
on ``wake_requested`` and ``cancel_requested``): still no read before the write.

Drivers: ``psycopg`` 3 for PostgreSQL (``pip install 'fluxo[postgres]'``),
``pymysql`` for MySQL and MariaDB (``pip install 'fluxo[mysql]'``) and the
standard library's ``sqlite3``. A driver is imported when the store is built,
never by ``import fluxo``.
"""

from __future__ import annotations

from fluxo.stores.sql._engine import make_engine, normalize_url
from fluxo.stores.sql._store import SQLStore

__all__ = ["SQLStore", "make_engine", "normalize_url"]

# Shown where users find them: fluxo.stores.sql.SQLStore, not the private module.
for _value in (SQLStore, make_engine, normalize_url):
    _value.__module__ = __name__
del _value
