"""transient retries counted apart from deliveries

Revision ID: 0003
Revises: 0002

A record that meets a vendor outage keeps retrying for a time window instead of spending
its delivery budget: `transient_failures` counts consecutive transient errors (for the
backoff) and `retrying_since` says when the current outage began for this record.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: SQLite's batch mode would rebuild sync_records, and
    # dropping the old table would cascade into hold_releases.
    op.add_column("sync_records", sa.Column("transient_failures", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("sync_records", sa.Column("retrying_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("sync_records", "retrying_since")
    op.drop_column("sync_records", "transient_failures")
