"""Fleet-wide mutual exclusion for the rare steps that must not run twice at once."""

from __future__ import annotations

import hashlib

from sqlalchemy import text
from sqlalchemy.orm import Session

NAMED_LOCKS = 0x6D6C  # the advisory-lock namespace of named locks, apart from per-record locks


def hold_until_commit(session: Session, name: str) -> None:
    """Wait for, then hold until this transaction ends, the lock called `name`.

    A PostgreSQL transaction-scoped advisory lock: released by commit, rollback or the
    death of the worker's connection, so it can never be left behind. The embedded
    default (SQLite) runs one task at a time and needs none.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": NAMED_LOCKS, "key": key})
