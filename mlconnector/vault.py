"""Credentials at rest: ciphertext only, under rotatable Fernet keys (newest first).

Secrets enter through `store` and leave through `load`; every value loaded is registered
with the redactor so it can never reach a log line, an error or an audit row.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlconnector.db.models import Credential
from mlconnector.redaction import SECRET_KEY_PATTERN, register_secret
from mlconnector.settings import Settings, get_settings


class VaultError(RuntimeError):
    pass


def build_cipher(settings: Settings | None = None, *, create: bool = False) -> MultiFernet:
    """The cipher of the configured keys; a local key file is made only when `create`."""
    from mlconnector.settings import MissingKeyError

    try:
        return _cipher_for(tuple((settings or get_settings()).fernet_keys(create=create)))
    except MissingKeyError as error:
        raise VaultError(str(error)) from None


def _sealing_cipher(session: Session) -> MultiFernet:
    """The cipher to seal with: a first key is made only while nothing is sealed yet."""
    from sqlalchemy import func, select

    sealed = session.scalar(select(func.count()).select_from(Credential)) or 0
    return build_cipher(create=not sealed)


@lru_cache(maxsize=4)
def _cipher_for(keys: tuple[str, ...]) -> MultiFernet:
    """One cipher per key set, not one per credential read."""
    return MultiFernet([Fernet(k.encode()) for k in keys])


def _register_all(values: dict[str, Any]) -> None:
    """Register the secret fields (not user names or tenant ids, which must stay readable)."""
    for key, value in values.items():
        if isinstance(value, str) and SECRET_KEY_PATTERN.search(key):
            register_secret(value)


def store(session: Session, integration_id: str, system: str, secrets: dict[str, Any],
          cipher: MultiFernet | None = None) -> None:
    """Encrypt and upsert the secrets of one system of one integration."""
    cipher = cipher or _sealing_cipher(session)
    _register_all(secrets)
    ciphertext = cipher.encrypt(json.dumps(secrets, sort_keys=True).encode())
    row = session.scalar(
        select(Credential).where(Credential.integration_id == integration_id, Credential.system == system)
    )
    if row is None:
        session.add(Credential(integration_id=integration_id, system=system, ciphertext=ciphertext))
    else:
        row.ciphertext = ciphertext


def load(session: Session, integration_id: str, system: str,
         cipher: MultiFernet | None = None) -> dict[str, Any]:
    row = session.scalar(
        select(Credential).where(Credential.integration_id == integration_id, Credential.system == system)
    )
    if row is None:
        raise missing(integration_id, system)
    return decrypt(row, cipher)


def ciphertexts(session: Session, integration_id: str) -> dict[str, bytes]:
    """Every system's sealed credentials for one integration, in one query, still encrypted.

    Callers that cache what they build from credentials key the cache on these bytes and
    decrypt only when they change.
    """
    rows = session.execute(
        select(Credential.system, Credential.ciphertext).where(Credential.integration_id == integration_id)
    )
    return {system: bytes(ciphertext) for system, ciphertext in rows}


def missing(integration_id: str, system: str) -> VaultError:
    return VaultError(
        f"no credentials for {system} on integration {integration_id!r}; set them with: "
        f"mlconnector credentials set {integration_id} {system}"
    )


def decrypt(row: Credential, cipher: MultiFernet | None = None) -> dict[str, Any]:
    """The secrets of one credential row, registered with the redactor."""
    return open_sealed(row.ciphertext, row.integration_id, row.system, cipher)


def open_sealed(ciphertext: bytes, integration_id: str, system: str,
                cipher: MultiFernet | None = None) -> dict[str, Any]:
    cipher = cipher or build_cipher()
    try:
        secrets = json.loads(cipher.decrypt(ciphertext))
    except InvalidToken:
        raise VaultError(
            f"credentials for {system} on {integration_id!r} cannot be decrypted with any key in "
            "MLCONNECTOR_SECRET_KEYS (was a key removed before `mlconnector keys rotate`?)"
        ) from None
    _register_all(secrets)
    return secrets


def fingerprints(keys: list[str]) -> list[str]:
    """Short, one-way names for Fernet keys (newest first), safe to print and compare across processes."""
    import hashlib

    return [hashlib.sha256(key.encode()).hexdigest()[:12] for key in keys]


def rotate(session: Session, cipher: MultiFernet | None = None) -> int:
    """Re-encrypt every credential under the newest key; returns how many rows changed."""
    cipher = cipher or build_cipher()
    count = 0
    for row in session.scalars(select(Credential)):
        try:
            row.ciphertext = cipher.rotate(row.ciphertext)
        except InvalidToken:
            raise VaultError(
                f"credential {row.system} on {row.integration_id!r} is under a key not in "
                "MLCONNECTOR_SECRET_KEYS; add the old key after the new one and rotate again"
            ) from None
        count += 1
    return count
