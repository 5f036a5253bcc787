"""two-way states: the agreed fields and own-write versions of records synced both ways

Revision ID: 0007
Revises: 0006

One row per side of a record pair that moves in both directions: which record it is paired
with, the shared fields both sides last agreed on (the base a conflict is judged against),
and the version our own last write left on this side (so the poll that reads it back knows
it for its own write and does not send it back).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "two_way_states",
        sa.Column("integration_id", sa.String(64), sa.ForeignKey("integrations.id"), primary_key=True),
        sa.Column("entity", sa.String(32), primary_key=True),
        sa.Column("system", sa.String(32), primary_key=True),
        sa.Column("record_id", sa.String(100), primary_key=True),
        sa.Column("other_system", sa.String(32), nullable=False),
        sa.Column("other_id", sa.String(100), nullable=False),
        sa.Column("agreed", sa.JSON(), nullable=False),
        sa.Column("own_version", sa.String(100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("two_way_states")
