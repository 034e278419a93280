"""Run recoveries: fluxo_runs.recoveries.

Revision ID: 0006
Revises: 0005
Create Date: 2025-06-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing runs start from none: the takeovers they had before are not known.
    op.add_column(
        "fluxo_runs",
        sa.Column("recoveries", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("fluxo_runs") as batch:
        batch.drop_column("recoveries")
