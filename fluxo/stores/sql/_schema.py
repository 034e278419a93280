"""The tables of the SQL store, as SQLAlchemy Core metadata.

``migrations/versions`` mirrors this module exactly; ``tests/migrations`` proves
that ``upgrade head`` leaves no difference between the two. A change here needs
a new migration and a new :data:`HEAD_REVISION`.

Three tables keyed by run id, so that every operation on a run touches one key
range (the property that lets them be partitioned or distributed by ``run_id``),
and two small tables, of workers and of queues:

* ``fluxo_runs``: one row per run, the projection the engine claims and lists by.
* ``fluxo_events``: the history. Its primary key ``(run_id, seq)`` is the fencing
  invariant: a position is written once, and a second writer gets a unique
  violation instead of overwriting.
* ``fluxo_signals``: the signals sent to runs, never deleted (the history tells
  which ones a run consumed). ``id`` orders them; ``(run_id, dedupe_key)`` is
  unique, so a signal sent twice with one key is stored once.
* ``fluxo_workers``: one row per running worker, with the time it is alive
  until (``beat_worker``); a row per process, not per run, so it stays tiny.
* ``fluxo_queues``: one row per named queue whose record was written
  (``write_queue``): a version and the admission state, compared and set.

Times are seconds since the epoch (UTC) in double precision, as
:class:`fluxo.history.RunInfo` carries them.

On MySQL and MariaDB the identifier columns are ``VARBINARY``: every text
collation there either folds case or ignores trailing spaces, and run ids,
workflow names and worker ids must compare byte for byte, as on every other store.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

HEAD_REVISION = "0007"
"""The alembic revision this code's tables correspond to (``migrations/versions``)."""

VERSION_TABLE = "fluxo_alembic_version"
"""Fluxo's alembic version table, named so it never collides with the host app's."""

KEY_LENGTH = 255
"""The longest run id, workflow name or worker id, in characters."""

SIGNAL_KEY_LENGTH = 512
"""The longest ``send_signal`` key, in characters: room for a run id and a position.

On MySQL the unique ``(run_id, dedupe_key)`` index then takes 1020 + 2048 bytes, just
within InnoDB's 3072.
"""

_MYSQL = ("mysql", "mariadb")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    }
)


def _key(length: int = KEY_LENGTH) -> sa.types.TypeEngine[str]:
    """An identifier column: compared byte for byte on every database."""
    # 4 bytes per character is the most UTF-8 needs.
    return sa.String(length).with_variant(mysql.VARBINARY(length * 4), *_MYSQL)


def _time() -> sa.types.TypeEngine[float]:
    return sa.Double()


def _blob() -> sa.types.TypeEngine[bytes]:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), *_MYSQL)


runs = sa.Table(
    "fluxo_runs",
    metadata,
    sa.Column("id", _key(), primary_key=True),
    sa.Column("workflow", _key(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", _time(), nullable=False),
    sa.Column("updated_at", _time(), nullable=False),
    sa.Column("ready_at", _time(), nullable=True),
    sa.Column("lease_owner", _key(), nullable=True),
    sa.Column("lease_until", _time(), nullable=True),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    sa.Column("wake_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    # when the run is cancelled if it has not finished (NULL: never); set at creation
    sa.Column("deadline", _time(), nullable=True),
    # the run that started this one as its child (NULL: none); set at creation
    sa.Column("parent", _key(), nullable=True),
    # the run's headers as the text of a JSON object (NULL: none); set at creation
    sa.Column("headers", sa.Text(), nullable=True),
    # claims that took the run over from an execution that never ended (max_recoveries)
    sa.Column("recoveries", sa.Integer(), nullable=False, server_default=sa.text("0")),
    # the run's queue ('': the default one), admission priority and partition; set at creation
    sa.Column("queue", _key(), nullable=False, server_default=""),
    sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
    sa.Column("partition", _key(), nullable=True),
    # when the run may be admitted to its queue; NULL unless it awaits admission
    sa.Column("start_at", _time(), nullable=True),
    # claim: runnable runs in ready_at order (NULL, i.e. not ready, sorts out of range)
    sa.Index(None, "ready_at"),
    # list_runs: newest first, optionally by workflow or by status
    sa.Index(None, "created_at"),
    sa.Index(None, "workflow", "created_at"),
    sa.Index(None, "status", "created_at"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

# queued_runs. Only the runs awaiting admission have a start_at, so on PostgreSQL
# and SQLite both indexes are partial and hold those runs alone. (queue, start_at)
# finds the next start, and on MySQL, whose indexes cannot be partial, the due runs
# (every other run's entry has a NULL start_at, out of the range read), which it
# then sorts. On PostgreSQL and SQLite the admission index gives the due runs in
# admission order, so a queue's first runs are read without reading its backlog.
sa.Index(
    None,
    runs.c.queue,
    runs.c.start_at,
    postgresql_where=runs.c.start_at.is_not(None),
    sqlite_where=runs.c.start_at.is_not(None),
)
PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")
"""The databases with partial indexes: the only ones :data:`PARTIAL_ONLY` are made on."""
PARTIAL_ONLY = frozenset({"ix_fluxo_runs_admission"})
"""Indexes made only where they can be partial: elsewhere they would hold every run."""


def _partial_indexes(
    ddl: Any,
    target: Any,
    bind: Any,
    tables: Any = None,
    state: Any = None,
    *,
    dialect: Any,
    compiler: Any = None,
    checkfirst: bool = False,
) -> bool:
    """Whether the database has partial indexes (``metadata.create_all`` asks)."""
    return dialect.name in PARTIAL_INDEX_DIALECTS


sa.Index(
    "ix_fluxo_runs_admission",
    runs.c.queue,
    runs.c.priority.desc(),
    runs.c.start_at,
    runs.c.created_at,
    runs.c.id,
    postgresql_where=runs.c.start_at.is_not(None),
    sqlite_where=runs.c.start_at.is_not(None),
).ddl_if(callable_=_partial_indexes)

events = sa.Table(
    "fluxo_events",
    metadata,
    sa.Column("run_id", _key(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("data", _blob(), nullable=True),
    sa.Column("created_at", _time(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

signals = sa.Table(
    "fluxo_signals",
    metadata,
    # INTEGER PRIMARY KEY is what makes SQLite number rows itself.
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("run_id", _key(), nullable=False),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("payload", _blob(), nullable=False),
    sa.Column("sent_at", _time(), nullable=False),
    sa.Column("dedupe_key", _key(SIGNAL_KEY_LENGTH), nullable=True),
    # send_signal with a key: a second signal with the same key is refused (NULLs differ)
    sa.UniqueConstraint("run_id", "dedupe_key"),
    # load: a run's signals, oldest first
    sa.Index(None, "run_id", "id"),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

workers = sa.Table(
    "fluxo_workers",
    metadata,
    sa.Column("id", _key(), primary_key=True),
    # the worker is dead once this has passed: its runs are freed by the next beat
    sa.Column("alive_until", _time(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)

queues = sa.Table(
    "fluxo_queues",
    metadata,
    sa.Column("name", _key(), primary_key=True),
    # 1 for the first state written, one more for each state written after it
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("state", _blob(), nullable=False),
    mysql_engine="InnoDB",
    mysql_charset="utf8mb4",
    mysql_collate="utf8mb4_bin",
)
