"""Child runs: fluxo_runs.parent.

Revision ID: 0003
Revises: 0002
Create Date: 2025-03-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MYSQL = ("mysql", "mariadb")


def key(length: int = 255) -> sa.types.TypeEngine[str]:
    # identifiers compare byte for byte: VARBINARY on MySQL/MariaDB (4 bytes a character)
    return sa.String(length).with_variant(mysql.VARBINARY(length * 4), *MYSQL)


def upgrade() -> None:
    # Existing runs get none: they were started by no other run.
    op.add_column("fluxo_runs", sa.Column("parent", key(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.drop_column("parent")
