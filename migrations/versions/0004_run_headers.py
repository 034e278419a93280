"""Run headers: fluxo_runs.headers.

Revision ID: 0004
Revises: 0003
Create Date: 2025-04-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The text of a JSON object; existing runs get none (NULL reads as no headers).
    op.add_column("fluxo_runs", sa.Column("headers", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.drop_column("headers")
