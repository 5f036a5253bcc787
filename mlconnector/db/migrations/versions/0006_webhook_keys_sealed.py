"""webhook signing keys move from the integration config into the vault

Revision ID: 0006
Revises: 0005

`integrations.config.webhook.hmac_key` (and `previous_hmac_key`) sat in plain text. Each is
sealed into `credentials` (system 'webhook') with the configured keys and removed from the
config. Downgrading puts them back in the config.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SECRET_FIELDS = ("hmac_key", "previous_hmac_key")


def _config(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def upgrade() -> None:
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS

    session = Session(bind=op.get_bind())
    rows = session.execute(sa.text("SELECT id, config FROM integrations")).all()
    for integration_id, raw in rows:
        config = _config(raw)
        webhook = dict(config.get("webhook") or {})
        secrets = {k: webhook.pop(k) for k in SECRET_FIELDS if webhook.get(k)}
        if not secrets and not any(k in webhook for k in SECRET_FIELDS):
            continue
        for key in SECRET_FIELDS:
            webhook.pop(key, None)
        if secrets:
            vault.store(session, integration_id, WEBHOOK_SECRETS, secrets)
        config["webhook"] = webhook
        session.execute(sa.text("UPDATE integrations SET config = :config WHERE id = :id"),
                        {"config": json.dumps(config), "id": integration_id})
    session.flush()


def downgrade() -> None:
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS

    session = Session(bind=op.get_bind())
    rows = session.execute(sa.text("SELECT c.integration_id, i.config FROM credentials c JOIN integrations i "
                                   "ON i.id = c.integration_id WHERE c.system = :system"), {"system": WEBHOOK_SECRETS}).all()
    for integration_id, raw in rows:
        config = _config(raw)
        config["webhook"] = {**(config.get("webhook") or {}), **vault.load(session, integration_id, WEBHOOK_SECRETS)}
        session.execute(sa.text("UPDATE integrations SET config = :config WHERE id = :id"),
                        {"config": json.dumps(config), "id": integration_id})
    session.execute(sa.text("DELETE FROM credentials WHERE system = :system"), {"system": WEBHOOK_SECRETS})
    session.flush()
