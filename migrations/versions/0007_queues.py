"""Queues: fluxo_runs.queue, .priority, .partition and .start_at, and fluxo_queues.

Revision ID: 0007
Revises: 0006
Create Date: 2025-07-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
PARTIAL = ("postgresql", "sqlite")  # the databases with partial indexes
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def key(length: int = 255) -> sa.types.TypeEngine[str]:
    # identifiers compare byte for byte: VARBINARY on MySQL/MariaDB (4 bytes a character)
    return sa.String(length).with_variant(mysql.VARBINARY(length * 4), *MYSQL)


def upgrade() -> None:
    # Existing runs are in the default queue (''), ready as they were: none awaits admission.
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.add_column(sa.Column("queue", key(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
        batch.add_column(sa.Column("partition", key(), nullable=True))
        batch.add_column(sa.Column("start_at", sa.Double(), nullable=True))
    awaiting = sa.column("start_at").is_not(None)
    op.create_index(
        "ix_fluxo_runs_queue_start_at",
        "fluxo_runs",
        ["queue", "start_at"],
        postgresql_where=awaiting,
        sqlite_where=awaiting,
    )
    if op.get_bind().dialect.name in PARTIAL:  # elsewhere it would hold every run
        op.create_index(
            "ix_fluxo_runs_admission",
            "fluxo_runs",
            ["queue", sa.text("priority DESC"), "start_at", "created_at", "id"],
            postgresql_where=awaiting,
            sqlite_where=awaiting,
        )
    op.create_table(
        "fluxo_queues",
        sa.Column("name", key(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_fluxo_queues"),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("fluxo_queues")
    if op.get_bind().dialect.name in PARTIAL:
        op.drop_index("ix_fluxo_runs_admission", table_name="fluxo_runs")
    op.drop_index("ix_fluxo_runs_queue_start_at", table_name="fluxo_runs")
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.drop_column("start_at")
        batch.drop_column("partition")
        batch.drop_column("priority")
        batch.drop_column("queue")
