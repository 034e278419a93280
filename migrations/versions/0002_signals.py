"""Signals and deadlines: fluxo_signals, fluxo_runs.wake_requested and fluxo_runs.deadline.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def key(length: int = 255) -> sa.types.TypeEngine[str]:
    # identifiers compare byte for byte: VARBINARY on MySQL/MariaDB (4 bytes a character)
    return sa.String(length).with_variant(mysql.VARBINARY(length * 4), *MYSQL)


def upgrade() -> None:
    # Existing runs get false: nothing has asked to wake them.
    op.add_column(
        "fluxo_runs",
        sa.Column("wake_requested", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # Existing runs get none: they were started without one.
    op.add_column("fluxo_runs", sa.Column("deadline", sa.Double(), nullable=True))
    op.create_table(
        "fluxo_signals",
        # INTEGER PRIMARY KEY is what makes SQLite number rows itself.
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("run_id", key(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "payload", sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL), nullable=False
        ),
        sa.Column("sent_at", sa.Double(), nullable=False),
        sa.Column("dedupe_key", key(512), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_fluxo_signals"),
        sa.UniqueConstraint("run_id", "dedupe_key", name="uq_fluxo_signals_run_id_dedupe_key"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_fluxo_signals_run_id_id", "fluxo_signals", ["run_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_fluxo_signals_run_id_id", table_name="fluxo_signals")
    op.drop_table("fluxo_signals")
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.drop_column("deadline")
        batch.drop_column("wake_requested")
