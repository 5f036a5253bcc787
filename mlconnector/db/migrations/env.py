"""Alembic environment: the URL comes from the caller (mlconnector db upgrade) or settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from mlconnector.db.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    from mlconnector.db.session import database_url, normalize_url

    return normalize_url(config.get_main_option("sqlalchemy.url") or database_url())


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        {"sqlalchemy.url": _url()}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with connectable.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
