"""security events counted per window

Revision ID: 0004
Revises: 0003

Refused webhooks (bad or missing signatures, impossible integration ids) were one audit row
each, so a storm grew the append-only audit table without limit. `security_events` keeps one
row per (integration, source address, kind, window) with a counter; the first event of each
window still writes one audit row for alerts.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "security_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("integration_id", sa.String(64), nullable=False, server_default=""),
        sa.Column("source_address", sa.String(64), nullable=False, server_default=""),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
        sa.UniqueConstraint("integration_id", "source_address", "kind", "window_start",
                            name="uq_security_events_window"),
    )
    op.create_index("ix_security_events_window", "security_events", ["window_start"])


def downgrade() -> None:
    op.drop_index("ix_security_events_window", table_name="security_events")
    op.drop_table("security_events")
