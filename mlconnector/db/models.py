"""SQLAlchemy models. The invariants live in constraints, not only in code:

- one inbound event per (integration, source event id)
- one sync record per (integration, flow, source id)
- audit rows are append-only (a trigger refuses UPDATE and DELETE, see the migration)
- credentials hold ciphertext only
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A time read back without its zone (SQLite, a raw aggregate) taken as the UTC it was stored in."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    SQLite keeps no zone and hands back naive datetimes, which then cannot be compared
    with the aware ones the code makes; this type stores UTC and always returns it aware.
    A naive value given to it is taken to be UTC already.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


# BigInteger ids on PostgreSQL, INTEGER on SQLite (where only INTEGER PRIMARY KEY autoincrements).
BigId = BigInteger().with_variant(Integer(), "sqlite")


class RecordStatus(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    WRITTEN = "written"
    SKIPPED = "skipped"
    HELD = "held"
    FAILED = "failed"
    RESOLVED = "resolved"  # handled outside the product by a person; the trail says how


class EventStatus(str, enum.Enum):
    PENDING = "pending"
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"


class Integration(Base):
    __tablename__ = "integrations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pair: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = mapped_column(String(200), nullable=False, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class Credential(Base):
    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("integration_id", "system", name="uq_credentials_system"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), nullable=False
    )
    system: Mapped[str] = mapped_column(String(32), nullable=False)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class InboundEvent(Base):
    __tablename__ = "inbound_events"
    __table_args__ = (
        UniqueConstraint("integration_id", "source_event_id", name="uq_inbound_events_source"),
        Index("ix_inbound_events_status", "status", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    source_event_id: Mapped[str] = mapped_column(String(200), nullable=False)
    event_type: Mapped[str] = mapped_column(String(100), nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=EventStatus.PENDING.value)
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class SyncRecord(Base):
    __tablename__ = "sync_records"
    __table_args__ = (
        UniqueConstraint("integration_id", "flow", "source_id", name="uq_sync_records_source"),
        Index("ix_sync_records_status", "status", "updated_at"),
        Index("ix_sync_records_hold", "integration_id", "hold_key"),
        # The exceptions queue pages by (updated_at, id) over held and failed records only.
        Index("ix_sync_records_open", "updated_at", "id", postgresql_where=text("status IN ('held', 'failed')"),
              sqlite_where=text("status IN ('held', 'failed')")),
        Index("ix_sync_records_open_integration", "integration_id", "updated_at", "id",
              postgresql_where=text("status IN ('held', 'failed')"), sqlite_where=text("status IN ('held', 'failed')")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    flow: Mapped[str] = mapped_column(String(64), nullable=False)
    source_id: Mapped[str] = mapped_column(String(200), nullable=False)
    source_version: Mapped[str | None] = mapped_column(String(100))
    written_version: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=RecordStatus.PENDING.value)
    deliveries: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    target_id: Mapped[str | None] = mapped_column(String(200))
    target_key: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the target's key fields, as written
    hold_reason: Mapped[str | None] = mapped_column(Text)
    hold_key: Mapped[str | None] = mapped_column(String(200))
    last_error: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    edited_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    enqueued_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    transient_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    retrying_since: Mapped[datetime | None] = mapped_column(UtcDateTime())
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UtcDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )
    written_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_record", "sync_record_id", "id"),
        Index("ix_audit_events_kind", "kind", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)
    integration_id: Mapped[str | None] = mapped_column(String(64))
    flow: Mapped[str | None] = mapped_column(String(64))
    sync_record_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    inbound_event_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    source_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    mapped_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    decisions: Mapped[list[Any] | None] = mapped_column(JSON)
    http_status: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    target_id: Mapped[str | None] = mapped_column(String(200))
    duration_ms: Mapped[float | None] = mapped_column()
    actor: Mapped[str | None] = mapped_column(String(100))  # the person behind an operator's action


class Watermark(Base):
    __tablename__ = "watermarks"

    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), primary_key=True)
    flow: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[datetime | None] = mapped_column(UtcDateTime())
    cursor: Mapped[str | None] = mapped_column(Text)
    last_poll_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_poll_found: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    last_poll_error: Mapped[str | None] = mapped_column(Text)


class Link(Base):
    """One counterpart identity: this source record is that target record, and how we know.

    `kind` names what is linked (vendor, customer, item, cost_code, subaccount, ...). A link
    records an identity only; it never changes either record.
    """

    __tablename__ = "links"
    __table_args__ = (
        UniqueConstraint("integration_id", "kind", "source_system", "source_id", name="uq_links_source"),
        Index("ix_links_target", "integration_id", "kind", "target_system", "target_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    source_system: Mapped[str] = mapped_column(String(32), nullable=False)
    source_id: Mapped[str] = mapped_column(String(100), nullable=False)
    source_name: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    target_system: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str] = mapped_column(String(100), nullable=False)
    target_name: Mapped[str] = mapped_column(String(300), nullable=False, default="")
    how: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)


class HoldRelease(Base):
    """What releases a held record: one row per releasing key (a link, a config key, a
    target-side condition). A record may wait on several; any one of them re-queues it."""

    __tablename__ = "hold_releases"
    __table_args__ = (Index("ix_hold_releases_key", "integration_id", "release_key"),)

    sync_record_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sync_records.id", ondelete="CASCADE"), primary_key=True
    )
    release_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    integration_id: Mapped[str] = mapped_column(String(64), nullable=False)


class TwoWayState(Base):
    """One side of a record pair that moves in both directions (see mlconnector/echoes.py):
    its counterpart, the shared fields both sides last agreed on, and the version our own
    last write left on this side."""

    __tablename__ = "two_way_states"

    integration_id: Mapped[str] = mapped_column(ForeignKey("integrations.id"), primary_key=True)
    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    system: Mapped[str] = mapped_column(String(32), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    other_system: Mapped[str] = mapped_column(String(32), nullable=False)
    other_id: Mapped[str] = mapped_column(String(100), nullable=False)
    agreed: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    own_version: Mapped[str | None] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)


class SecurityEvent(Base):
    """Refused deliveries counted per (integration, source address, kind) and time window.

    An attacker can send bad signatures without limit; each one appended to the audit trail
    would grow an undeletable table without limit. Here a storm is one row whose counter
    rises, and only the first event of each window also writes an audit row (which alerts
    read). `integration_id` is '' when the URL named none that could exist, so the key is
    never NULL and the window's row stays unique.
    """

    __tablename__ = "security_events"
    __table_args__ = (
        UniqueConstraint("integration_id", "source_address", "kind", "window_start", name="uq_security_events_window"),
        Index("ix_security_events_window", "window_start"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    integration_id: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    source_address: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    occurrences: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    first_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    last_at: Mapped[datetime] = mapped_column(UtcDateTime(), nullable=False)
    http_status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")  # the window's first event, redacted


class ConsoleUser(Base):
    """A person who signs in to the console: a name, an argon2 hash (never the password) and a role."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), nullable=False, unique=True)
    password_hash: Mapped[str] = mapped_column(String(200), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    active: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, nullable=False)
    last_signin_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
