"""Fleet-wide mutual exclusion, in named spaces so no two uses can collide.

PostgreSQL transaction-scoped advisory locks: released by commit, rollback or the death of
the worker's connection, so one can never be left behind. Every lock is taken in the
two-key form `(space, key)`: a record's lock, the alert sender's and a named lock (vendor
creation) live in different spaces, so record 7,340,001 and the alert sender never exclude
each other. The embedded default (SQLite) runs in one process; there a lock is a
`threading.Lock` per (space, key).
"""

from __future__ import annotations

import enum
import hashlib
import threading
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import text
from sqlalchemy.orm import Session


class LockSpace(enum.IntEnum):
    """The first key of every advisory lock this product takes."""

    RECORD = 0x6D6C0001  # one sync record being written
    NAMED = 0x6D6C0002  # a named step, e.g. creating one counterpart
    ALERTS = 0x6D6C0003  # the alert sender


def _int4(value: int) -> int:
    """Fold an id into PostgreSQL's signed 32-bit lock key (ids 2**32 apart share a key)."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= (1 << 31) else value


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big", signed=True)


_local: dict[tuple[int, int], threading.Lock] = {}
_local_guard = threading.Lock()


def _is_pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


@contextmanager
def try_lock(session: Session, space: LockSpace, key: int) -> Iterator[bool]:
    """Try to take (space, key) for this transaction; yields whether it was taken."""
    if _is_pg(session):
        got = session.execute(text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
                              {"space": _int4(int(space)), "key": _int4(key)}).scalar()
        yield bool(got)
        return
    with _local_guard:
        lock = _local.setdefault((int(space), key), threading.Lock())
    got = lock.acquire(blocking=False)
    try:
        yield got
    finally:
        if got:
            lock.release()


def hold_until_commit(session: Session, name: str) -> None:
    """Wait for, then hold until this transaction ends, the lock called `name`.

    The embedded default runs one task at a time and needs none.
    """
    if not _is_pg(session):
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:space, :key)"),
                    {"space": _int4(int(LockSpace.NAMED)), "key": _name_key(name)})
