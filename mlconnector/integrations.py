"""Integrations: one customer's instance of a pair, with its config and credentials."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connectors import build_connector
from connectors.base import Connector
from mlconnector import vault
from mlconnector.db.models import Credential, Integration
from mlconnector.flows import Pair, get_pair


class IntegrationNotFound(LookupError):
    pass


def get_integration(session: Session, integration_id: str) -> Integration:
    integration = session.get(Integration, integration_id)
    if integration is None:
        raise IntegrationNotFound(f"no integration {integration_id!r}; see: mlconnector integrations list")
    return integration


_SEALED = "mlconnector.integrations.sealed"


def load_for_work(session: Session, integration_id: str) -> Integration:
    """The integration and its sealed credentials in one statement, for the record path: the
    credentials are kept with the session, so building its connectors asks nothing more."""
    rows = session.execute(
        select(Integration, Credential.system, Credential.ciphertext)
        .outerjoin(Credential, Credential.integration_id == Integration.id)
        .where(Integration.id == integration_id)
    ).all()
    if not rows:
        raise IntegrationNotFound(f"no integration {integration_id!r}; see: mlconnector integrations list")
    sealed = {system: bytes(ciphertext) for _, system, ciphertext in rows if system is not None}
    session.info.setdefault(_SEALED, {})[integration_id] = sealed
    return rows[0][0]


def _sealed(session: Session, integration_id: str) -> dict[str, bytes]:
    kept = session.info.get(_SEALED, {}).get(integration_id)
    return kept if kept is not None else vault.ciphertexts(session, integration_id)


def list_integrations(session: Session, *, enabled_only: bool = False) -> list[Integration]:
    query = select(Integration).order_by(Integration.id)
    if enabled_only:
        query = query.where(Integration.enabled.is_(True))
    return list(session.scalars(query))


def create_integration(
    session: Session, integration_id: str, pair_name: str, config: dict[str, Any], name: str = ""
) -> Integration:
    from mlconnector.config import validate_config

    pair = get_pair(pair_name)
    validate_config(pair, config)
    if session.get(Integration, integration_id) is not None:
        raise ValueError(f"integration {integration_id!r} already exists")
    integration = Integration(id=integration_id, pair=pair.name, name=name or integration_id, config=config, enabled=True)
    session.add(integration)
    return integration


_connector_cache: dict[tuple[str, str, str], Connector] = {}
_cache_lock = threading.Lock()


def _connector(integration: Integration, system: str, ciphertext: bytes | None) -> Connector:
    """Built once per (config, sealed credentials): a record whose integration has not changed
    reuses the connector, its pooled session and its remembered lookups, with no decryption."""
    if ciphertext is None:
        raise vault.missing(integration.id, system)
    config = (integration.config or {}).get("systems", {}).get(system, {})
    fingerprint = hashlib.sha256(
        json.dumps(config, sort_keys=True, default=str).encode() + b"\0" + ciphertext
    ).hexdigest()
    key = (integration.id, system, fingerprint)
    with _cache_lock:
        connector = _connector_cache.get(key)
    if connector is not None:
        return connector
    built = build_connector(system, config, vault.open_sealed(ciphertext, integration.id, system))
    with _cache_lock:
        for stale in [k for k in _connector_cache if k[:2] == key[:2] and k != key]:
            del _connector_cache[stale]  # config or credentials changed: the old one goes
        return _connector_cache.setdefault(key, built)


def connector_for(session: Session, integration: Integration, system: str) -> Connector:
    """A connector for one system of an integration, reused across records in this process."""
    return _connector(integration, system, _sealed(session, integration.id).get(system))


def connectors_for(session: Session, integration: Integration) -> dict[str, Connector]:
    pair: Pair = get_pair(integration.pair)
    sealed = _sealed(session, integration.id)
    return {system: _connector(integration, system, sealed.get(system)) for system in pair.systems()}


def clear_connector_cache() -> None:
    with _cache_lock:
        _connector_cache.clear()
