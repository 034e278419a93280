"""Worker liveness: fluxo_workers.

Revision ID: 0005
Revises: 0004
Create Date: 2025-05-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
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
    # Starts empty: running workers add themselves with their next beat.
    op.create_table(
        "fluxo_workers",
        sa.Column("id", key(), nullable=False),
        sa.Column("alive_until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_fluxo_workers"),
        **TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("fluxo_workers")
