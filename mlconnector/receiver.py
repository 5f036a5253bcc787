"""The webhook receiver: verify, store durably, answer, and only then enqueue.

`POST /webhooks/servicetitan/<integration>`:
401 bad or missing signature (with a security audit row), 400 malformed JSON,
413 body over the configured size, 404 unknown integration, 200 for a duplicate delivery
(noted, not processed again), 202 for a new event, enqueued after the response is sent.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from mlconnector import audit, metrics
from mlconnector.db.models import EventStatus, InboundEvent, Integration, utcnow
from mlconnector.db.session import session_scope, upsert_into
from mlconnector.flows import all_pairs
from mlconnector.webhook_signature import SignatureError, verify

blueprint = Blueprint("webhooks", __name__)
VENDOR = "servicetitan"


def _json_error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


SETTINGS_TTL_SECONDS = 5.0  # an integration's webhook settings are re-read at least this often


@dataclass(frozen=True)
class WebhookSettings:
    keys: tuple[str, ...]
    header: str
    encoding: str


_settings: dict[str, tuple[float, WebhookSettings]] = {}
_settings_lock = threading.Lock()


def webhook_settings(session: Session, integration_id: str, *, fresh: bool = False) -> WebhookSettings | None:
    """The HMAC keys and header of a ServiceTitan integration; None when there is none.

    Kept for a few seconds per process, so a webhook costs no integration read. A key
    rotated within that time is still accepted at once: a signature that fails against
    kept settings is checked again against fresh ones before it is refused. A key removed
    stops being accepted within SETTINGS_TTL_SECONDS.
    """
    now = time.monotonic()
    with _settings_lock:
        kept = _settings.get(integration_id)
    if kept is not None and not fresh and now - kept[0] < SETTINGS_TTL_SECONDS:
        return kept[1]
    row = session.execute(select(Integration.pair, Integration.config).where(Integration.id == integration_id)).first()
    pair = all_pairs().get(row.pair) if row is not None else None
    if row is None or pair is None or pair.webhook_source != VENDOR:
        with _settings_lock:
            _settings.pop(integration_id, None)
        return None
    webhook = pair.parse_config(row.config or {}).webhook
    loaded = WebhookSettings(
        keys=tuple(k for k in (webhook.hmac_key, webhook.previous_hmac_key) if k),
        header=webhook.signature_header,
        encoding=webhook.signature_encoding,
    )
    with _settings_lock:
        _settings[integration_id] = (now, loaded)
    return loaded


def forget_webhook_settings() -> None:
    with _settings_lock:
        _settings.clear()


def _verified(session: Session, integration_id: str, settings: WebhookSettings, body: bytes) -> WebhookSettings:
    """The settings the body's signature verifies under; SignatureError when none."""
    try:
        verify(body, request.headers.get(settings.header), list(settings.keys), settings.encoding)
        return settings
    except SignatureError:
        current = webhook_settings(session, integration_id, fresh=True)
        if current is None or current == settings:
            raise
        verify(body, request.headers.get(current.header), list(current.keys), current.encoding)
        return current


_EVENT_COLUMNS = ("integration_id", "source", "source_event_id", "event_type", "payload", "status", "received_at",
                  "enqueued_at", "deliveries", "duplicates")
_event_inserts: dict[str, Any] = {}


def _store_event(session: Session, **values: Any) -> int | None:
    """Insert the event, or nothing for a repeat delivery (its id, or None). The statement is
    built once per dialect; only the values travel with each webhook."""
    dialect = session.get_bind().dialect.name
    statement = _event_inserts.get(dialect)
    if statement is None:
        statement = (upsert_into(session, InboundEvent.__table__)  # Core: no ORM bookkeeping for one row
                     .values({name: bindparam(name) for name in _EVENT_COLUMNS})
                     .on_conflict_do_nothing(index_elements=["integration_id", "source_event_id"])
                     .returning(InboundEvent.__table__.c.id))
        _event_inserts[dialect] = statement
    return session.scalar(statement, values)


@blueprint.post("/webhooks/servicetitan/<integration_id>")
def receive_servicetitan(integration_id: str) -> tuple[Response, int]:
    from mlconnector.settings import get_settings

    limit = get_settings().webhook_max_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="too_large").inc()
        return _json_error(413, f"body over {limit} bytes")
    body = request.get_data(cache=False)
    if len(body) > limit:
        metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="too_large").inc()
        return _json_error(413, f"body over {limit} bytes")

    with session_scope() as session:
        settings = webhook_settings(session, integration_id)
        if settings is None:
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="unknown_integration").inc()
            return _json_error(404, f"no ServiceTitan integration {integration_id!r}")
        try:
            settings = _verified(session, integration_id, settings, body)
        except SignatureError as error:
            audit.append(
                session, "security", f"rejected webhook: {error}", integration_id=integration_id,
                error=f"remote={request.remote_addr} header={settings.header} bytes={len(body)}",
                http_status=401,
            )
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="bad_signature").inc()
            return _json_error(401, "invalid signature")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            audit.append(session, "rejected", f"malformed JSON: {error}", integration_id=integration_id, http_status=400)
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="malformed").inc()
            return _json_error(400, f"malformed JSON: {error.__class__.__name__}")
        if not isinstance(payload, dict) or not payload.get("eventType"):
            audit.append(session, "rejected", "event without eventType", integration_id=integration_id, http_status=400)
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="malformed").inc()
            return _json_error(400, "event must be a JSON object with eventType")
        event_id = str(payload.get("eventId") or _derived_event_id(payload, body))
        event_type = str(payload["eventType"])
        # One statement stores the event or, for a repeat delivery, nothing: no exception path.
        now = utcnow()
        new_id = _store_event(session, integration_id=integration_id, source=VENDOR, source_event_id=event_id,
                              event_type=event_type, payload=payload, status=EventStatus.PENDING.value,
                              received_at=now, enqueued_at=now, deliveries=0, duplicates=0)
        if new_id is None:
            session.execute(
                update(InboundEvent)
                .where(InboundEvent.integration_id == integration_id, InboundEvent.source_event_id == event_id)
                .values(duplicates=InboundEvent.duplicates + 1)
            )
            existing = session.scalar(select(InboundEvent.id).where(
                InboundEvent.integration_id == integration_id, InboundEvent.source_event_id == event_id))
            audit.append(session, "duplicate", f"duplicate delivery of event {event_id} ({event_type}) noted, not processed again",
                         integration_id=integration_id, inbound_event_id=existing)
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="duplicate").inc()
            return jsonify({"status": "duplicate", "eventId": event_id}), 200

    metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="accepted").inc()
    response = jsonify({"status": "accepted", "eventId": event_id, "id": new_id})
    # Enqueue after the answer is on the wire; if the broker is down the sweeper re-sends it.
    response.call_on_close(lambda: _enqueue_event(new_id))
    return response, 202


def _derived_event_id(payload: dict[str, Any], body: bytes) -> str:
    """Senders without an event id: the body's own hash, so identical retries dedupe."""
    import hashlib

    return "sha256:" + hashlib.sha256(body).hexdigest()


def _enqueue_event(event_id: int) -> None:
    from mlconnector.logging import get_logger

    try:
        from mlconnector.tasks import process_event

        process_event.apply_async(args=(event_id,))
    except Exception as error:  # broker down: the event is durable, the sweeper brings it back
        get_logger(__name__).warning("enqueue failed; sweeper will retry", event_id=event_id, error=str(error))
