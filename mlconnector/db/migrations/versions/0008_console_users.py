"""console users, and the indexes the exceptions queue pages by

Revision ID: 0008
Revises: 0007

The browser console signs people in with a name and an argon2 hash, each with a role
(viewer or operator). Its exceptions queue pages through held and failed records by
(updated_at, id): two partial indexes keep each page an index range scan at any ledger
size, with or without an integration filter.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

OPEN = "status IN ('held', 'failed')"


def upgrade() -> None:
    op.create_table(
        "console_users",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(100), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_signin_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sync_records_open", "sync_records", ["updated_at", "id"],
                    postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))
    op.create_index("ix_sync_records_open_integration", "sync_records", ["integration_id", "updated_at", "id"],
                    postgresql_where=sa.text(OPEN), sqlite_where=sa.text(OPEN))


def downgrade() -> None:
    op.drop_index("ix_sync_records_open_integration", table_name="sync_records")
    op.drop_index("ix_sync_records_open", table_name="sync_records")
    op.drop_table("console_users")
