"""The runs and events tables.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")
TABLE_OPTIONS = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def key() -> sa.types.TypeEngine:
    # identifiers compare byte for byte: VARBINARY on MySQL/MariaDB (255 chars * 4 bytes)
    return sa.String(255).with_variant(mysql.VARBINARY(1020), *MYSQL)


def upgrade() -> None:
    op.create_table(
        "fluxo_runs",
        sa.Column("id", key(), nullable=False),
        sa.Column("workflow", key(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("ready_at", sa.Double(), nullable=True),
        sa.Column("lease_owner", key(), nullable=True),
        sa.Column("lease_until", sa.Double(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fluxo_runs"),
        **TABLE_OPTIONS,
    )
    op.create_index("ix_fluxo_runs_ready_at", "fluxo_runs", ["ready_at"])
    op.create_index("ix_fluxo_runs_created_at", "fluxo_runs", ["created_at"])
    op.create_index("ix_fluxo_runs_workflow_created_at", "fluxo_runs", ["workflow", "created_at"])
    op.create_index("ix_fluxo_runs_status_created_at", "fluxo_runs", ["status", "created_at"])
    op.create_table(
        "fluxo_events",
        sa.Column("run_id", key(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data", sa.LargeBinary().with_variant(mysql.LONGBLOB(), *MYSQL), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "seq", name="pk_fluxo_events"),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("fluxo_events")
    op.drop_index("ix_fluxo_runs_status_created_at", table_name="fluxo_runs")
    op.drop_index("ix_fluxo_runs_workflow_created_at", table_name="fluxo_runs")
    op.drop_index("ix_fluxo_runs_created_at", table_name="fluxo_runs")
    op.drop_index("ix_fluxo_runs_ready_at", table_name="fluxo_runs")
    op.drop_table("fluxo_runs")
