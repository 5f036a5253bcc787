"""links of every kind; typed hold releases

Revision ID: 0002
Revises: 0001

`vendor_links` becomes `links` with a `kind` (every existing row is a vendor link, kept with
its ids, names, how and date). Held records get `hold_releases`: the keys that release
them (a link, a config key, a target-side condition), carried over from the old hold keys.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "links",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("integration_id", sa.String(64), sa.ForeignKey("integrations.id"), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("source_system", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(100), nullable=False),
        sa.Column("source_name", sa.String(300), nullable=False, server_default=""),
        sa.Column("target_system", sa.String(32), nullable=False),
        sa.Column("target_id", sa.String(100), nullable=False),
        sa.Column("target_name", sa.String(300), nullable=False, server_default=""),
        sa.Column("how", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("integration_id", "kind", "source_system", "source_id", name="uq_links_source"),
    )
    op.create_index("ix_links_target", "links", ["integration_id", "kind", "target_system", "target_id"])
    op.execute(
        "INSERT INTO links (integration_id, kind, source_system, source_id, source_name, target_system, target_id, "
        "target_name, how, created_at) SELECT integration_id, 'vendor', source_system, source_vendor_id, "
        "source_vendor_name, target_system, target_vendor_id, target_vendor_name, how, created_at FROM vendor_links"
    )
    op.drop_table("vendor_links")

    with op.batch_alter_table("sync_records") as batch:
        batch.add_column(sa.Column("target_key", sa.JSON(), nullable=True))
    op.create_table(
        "hold_releases",
        sa.Column("sync_record_id", BigId, sa.ForeignKey("sync_records.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("release_key", sa.String(300), primary_key=True),
        sa.Column("integration_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_hold_releases_key", "hold_releases", ["integration_id", "release_key"])
    # Old hold keys: 'vendor:<system>:<id>' waited for a vendor link, 'gl:business_unit:<id>'
    # for the GL map; both become typed releases. Others waited for a person only.
    op.execute(
        "INSERT INTO hold_releases (sync_record_id, release_key, integration_id) "
        "SELECT id, 'link:vendor:' || substr(hold_key, 8), integration_id FROM sync_records "
        "WHERE status = 'held' AND hold_key LIKE 'vendor:%'"
    )
    op.execute(
        "INSERT INTO hold_releases (sync_record_id, release_key, integration_id) "
        "SELECT id, 'config:gl', integration_id FROM sync_records WHERE status = 'held' AND hold_key LIKE 'gl:%'"
    )
    op.execute("UPDATE sync_records SET hold_key = 'link:vendor:' || substr(hold_key, 8) WHERE hold_key LIKE 'vendor:%'")


def downgrade() -> None:
    with op.batch_alter_table("sync_records") as batch:
        batch.drop_column("target_key")
    op.drop_index("ix_hold_releases_key", table_name="hold_releases")
    op.drop_table("hold_releases")
    op.create_table(
        "vendor_links",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("integration_id", sa.String(64), sa.ForeignKey("integrations.id"), nullable=False),
        sa.Column("source_system", sa.String(32), nullable=False),
        sa.Column("source_vendor_id", sa.String(100), nullable=False),
        sa.Column("source_vendor_name", sa.String(300), nullable=False),
        sa.Column("target_system", sa.String(32), nullable=False),
        sa.Column("target_vendor_id", sa.String(100), nullable=False),
        sa.Column("target_vendor_name", sa.String(300), nullable=False),
        sa.Column("how", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("integration_id", "source_system", "source_vendor_id", name="uq_vendor_links_source"),
    )
    op.execute(
        "INSERT INTO vendor_links (integration_id, source_system, source_vendor_id, source_vendor_name, target_system, "
        "target_vendor_id, target_vendor_name, how, created_at) SELECT integration_id, source_system, source_id, "
        "source_name, target_system, target_id, target_name, how, created_at FROM links WHERE kind = 'vendor'"
    )
    op.drop_index("ix_links_target", table_name="links")
    op.drop_table("links")
