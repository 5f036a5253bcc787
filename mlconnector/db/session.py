"""Engine and sessions, one engine per process (rebuilt after a fork)."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator


from sqlalchemy import Engine, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}
SQLITE_BUSY_TIMEOUT_SECONDS = 30  # the embedded default shares one file across threads


def database_url() -> str:
    from mlconnector.settings import get_settings

    return get_settings().effective_database_url


def normalize_url(url: str) -> str:
    """Pin the psycopg2 driver, which the project installs, for bare postgresql:// URLs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def get_engine(url: str | None = None) -> Engine:
    url = normalize_url(url or database_url())
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _make_engine(url)
            _engines[key] = engine
        return engine


def _json(value: Any) -> str:
    """JSON columns take vendor payloads as they are: Decimals, dates and sets become text."""
    return json.dumps(value, default=str)


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
            json_serializer=_json,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # values_plus_batch: an executemany UPDATE (a poll re-queuing 500 ledger rows) goes out in
    # pages through psycopg2's execute_batch, not as one round trip per row.
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, json_serializer=_json,
                         executemany_mode="values_plus_batch")


def dispose_engines() -> None:
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _factories.clear()


_factories: dict[Engine, sessionmaker[Session]] = {}


def _factory(engine: Engine) -> sessionmaker[Session]:
    """One sessionmaker per engine: building one sets up its event dispatch, which cost more
    than the query in a webhook's transaction."""
    factory = _factories.get(engine)
    if factory is None:
        factory = _factories.setdefault(engine, sessionmaker(bind=engine, expire_on_commit=False))
    return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A unit of work: committed on success, rolled back on error."""
    session = _factory(get_engine(url))()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upsert_into(session: Session, model: Any) -> Any:
    """An INSERT that takes ON CONFLICT clauses, in the session's own dialect (PostgreSQL in
    the fleet, SQLite embedded); both spell it the same way."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(model)
