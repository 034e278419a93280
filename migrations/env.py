"""Alembic environment of Fluxo's SQL store.

Fluxo builds the alembic configuration in code (``fluxo.stores.sql._migrate``)
and passes an open connection in ``config.attributes["connection"]``; with no
connection, ``sqlalchemy.url`` is used. The version table is
``fluxo_alembic_version`` and only ``fluxo_*`` tables are ever compared, so the
application sharing the database keeps its own migrations.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from fluxo.stores.sql import _migrate, _schema

config = context.config


def _configure(**options: object) -> None:
    context.configure(
        target_metadata=_schema.metadata,
        version_table=_schema.VERSION_TABLE,
        include_name=_migrate.include_name,
        compare_type=True,
        **options,
    )


def run_offline() -> None:
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: sa.Connection) -> None:
    _configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=_migrate.include_object(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    from fluxo.stores import sql

    engine = sql.make_engine(
        config.get_main_option("sqlalchemy.url") or "", poolclass=sa.pool.NullPool
    )
    try:
        with engine.connect() as connection:
            _run_on(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
