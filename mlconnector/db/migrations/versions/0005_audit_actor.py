"""who did it: an actor on audit rows

Revision ID: 0005
Revises: 0004

Actions a person takes (resolve, replay, an edited replay, a link) name who took them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN: SQLite's batch mode would rebuild audit_events without its append-only triggers.
    op.add_column("audit_events", sa.Column("actor", sa.String(100), nullable=True))


def downgrade() -> None:
    op.drop_column("audit_events", "actor")
