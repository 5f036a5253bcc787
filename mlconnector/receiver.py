"""The webhook receiver: verify, validate, store durably, answer, and only then enqueue.

`POST /webhooks/servicetitan/<integration>`:
413 body over the configured size; 404 unknown integration (an id no integration can have
is also a security event); 401 bad or missing signature (a security event); 400 not a JSON
event (malformed, NaN or Infinity, a number Python cannot hold, no eventType); 422 an event
that could not be stored or processed later (ids too long or not printable text, a NUL or a
lone surrogate anywhere, nesting deeper than MAX_NESTING, data not an object); 200 for a
duplicate delivery (noted, not processed again); 202 for a new event, enqueued after the
response is sent.

Whatever a client sends is checked before the database sees it, so client input never
causes a 5xx. Security events are counted per (integration, source address, kind) and
window in `security_events`; the window's first one also writes an audit row for alerts.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from mlconnector import audit, metrics
from mlconnector.db.models import EventStatus, InboundEvent, Integration, SecurityEvent, SyncRecord, utcnow
from mlconnector.db.session import session_scope, upsert_into
from mlconnector.flows import all_pairs
from mlconnector.redaction import redact_text
from mlconnector.webhook_signature import SignatureError, verify

blueprint = Blueprint("webhooks", __name__)
VENDOR = "servicetitan"


def _json_error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


# Limits read from the columns the values go into, so a schema change moves them too.
INTEGRATION_ID_MAX = Integration.__table__.c.id.type.length  # 64
EVENT_ID_MAX = InboundEvent.__table__.c.source_event_id.type.length  # 200
EVENT_TYPE_MAX = InboundEvent.__table__.c.event_type.type.length  # 100
RECORD_ID_MAX = SyncRecord.__table__.c.source_id.type.length  # 200: data.id becomes a ledger row's source id
SOURCE_ADDRESS_MAX = SecurityEvent.__table__.c.source_address.type.length  # 64: an IPv6 address is at most 45
MAX_NESTING = 32  # a webhook event nests about 5 levels; the JSON parser, driver and redaction recurse
SECURITY_WINDOW_SECONDS = 300  # a storm adds one audit row per source and kind per 5 minutes, not one per request
SECURITY_DETAIL_MAX = 500  # the window's first event is kept as an example, not a body


class Refused(Exception):
    """A delivery answered with a 4xx before anything is stored: the status and what is wrong."""

    def __init__(self, status: int, problem: str, field: str | None = None) -> None:
        super().__init__(problem)
        self.status = status
        self.problem = problem
        self.field = field

    def answer(self) -> tuple[Response, int]:
        return _json_error(self.status, self.problem, **({"field": self.field} if self.field else {}))


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
        keys=_signing_keys(session, integration_id),
        header=webhook.signature_header,
        encoding=webhook.signature_encoding,
    )
    with _settings_lock:
        _settings[integration_id] = (now, loaded)
    return loaded


def _signing_keys(session: Session, integration_id: str) -> tuple[str, ...]:
    """The integration's webhook keys, sealed in the vault (current first; none: every delivery is refused)."""
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS

    sealed = vault.ciphertexts(session, integration_id).get(WEBHOOK_SECRETS)
    if sealed is None:
        return ()
    secrets = vault.open_sealed(sealed, integration_id, WEBHOOK_SECRETS)
    return tuple(k for k in (secrets.get("hmac_key"), secrets.get("previous_hmac_key")) if k)


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
    body = _read_body(limit)
    if len(body) > limit:
        metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="too_large").inc()
        return _json_error(413, f"body over {limit} bytes")

    with session_scope() as session:
        if not _is_id_text(integration_id, INTEGRATION_ID_MAX):
            # No integration can have this id; asking the database would only fail on it (a NUL).
            record_security_event(session, "malformed_integration_id", integration_id="", http_status=404,
                                  message=f"rejected webhook for impossible integration id {ascii(integration_id[:80])}")
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="unknown_integration").inc()
            return _json_error(404, "no ServiceTitan integration with that id")
        settings = webhook_settings(session, integration_id)
        if settings is None:
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="unknown_integration").inc()
            return _json_error(404, f"no ServiceTitan integration {integration_id!r}")
        try:
            settings = _verified(session, integration_id, settings, body)
        except SignatureError as error:
            missing = request.headers.get(settings.header) is None
            record_security_event(
                session, "missing_signature" if missing else "bad_signature", integration_id=integration_id,
                message=f"rejected webhook: {error}", http_status=401,
                detail=f"header={settings.header} bytes={len(body)}",
            )
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="bad_signature").inc()
            return _json_error(401, "invalid signature")
        try:
            payload = parse_event(body)
            event_id, event_type = event_keys(payload)
        except Refused as refused:
            audit.append(session, "rejected", f"refused event: {refused.problem}", integration_id=integration_id,
                         http_status=refused.status)
            metrics.WEBHOOKS.labels(vendor=VENDOR, outcome="malformed" if refused.status == 400 else "invalid").inc()
            return refused.answer()
        event_id = event_id or _derived_event_id(payload, body)
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


def _read_body(limit: int) -> bytes:
    """At most `limit` + 1 bytes: enough to tell an oversized body without holding all of it."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = request.stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


# ---- the event at the door ---------------------------------------------------------------

# PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded for any database
# or vendor API; either would fail the event later, so it is refused now.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, found without parsing it (the parser
    recurses, so a body nested thousands deep would raise RecursionError). Exact for valid JSON."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _finite(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):  # 1e999: JSON columns cannot hold Infinity
        raise ValueError(f"number {number[:40]} is out of range")
    return value


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def parse_event(body: bytes) -> Any:
    """The body as JSON that every column and later step can hold; Refused (400/422) otherwise."""
    try:
        text = body.decode("utf-8")  # RFC 8259: JSON between systems is UTF-8
    except UnicodeDecodeError as error:
        raise Refused(400, f"malformed JSON: body is not UTF-8 (byte {error.start})") from None
    depth = nesting_depth(text)
    if depth > MAX_NESTING:
        raise Refused(422, f"event nested deeper than {MAX_NESTING} levels ({depth})")
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_not_json)
    except json.JSONDecodeError as error:
        raise Refused(400, f"malformed JSON: {error.msg} at position {error.pos}") from None
    except ValueError as error:  # NaN, Infinity, out-of-range floats, integers past Python's digit limit
        raise Refused(400, f"malformed JSON: {str(error)[:200]}") from None


def event_keys(payload: Any) -> tuple[str | None, str]:
    """The event's id (None: the sender gave none) and type, once the whole event is known to
    be storable and processable; Refused (400/422) naming the field otherwise."""
    if not isinstance(payload, dict) or not payload.get("eventType"):
        raise Refused(400, "event must be a JSON object with eventType")
    where = _unstorable_at(payload)
    if where is not None:
        raise Refused(422, f"{where} holds a NUL or a lone surrogate, which cannot be stored", where)
    if not isinstance(payload["eventType"], str):
        raise Refused(422, "eventType must be a string", "eventType")
    event_type = _id_text(payload["eventType"], "eventType", EVENT_TYPE_MAX)
    event_id = _id_text(payload["eventId"], "eventId", EVENT_ID_MAX) if payload.get("eventId") else None
    data = payload.get("data")
    if not isinstance(data, dict):
        raise Refused(422, "data must be a JSON object (the record the event is about)", "data")
    if data.get("id") is not None:
        _id_text(data["id"], "data.id", RECORD_ID_MAX)
    return event_id, event_type


def _is_id_text(value: str, most: int) -> bool:
    """Printable (no NUL, control character or lone surrogate), non-empty, fits its column."""
    return 0 < len(value) <= most and value.isprintable()


def _id_text(value: Any, field: str, most: int) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Refused(422, f"{field} must be a string or an integer", field)
    text = str(value)
    if not _is_id_text(text, most):
        raise Refused(422, f"{field} must be printable text of 1 to {most} characters", field)
    return text


FIELD_PATH_MAX = 200  # a field named in an answer is cut here: it is the client's own text


def _unstorable_at(event: dict[str, Any]) -> str | None:
    """The path of the first string (or key) in the event the database cannot store, or None."""
    pending: list[tuple[str, Any]] = [("", event)]
    while pending:  # iterative: depth is bounded already, but a walk need not recurse at all
        path, value = pending.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return path[:FIELD_PATH_MAX]
        elif isinstance(value, dict):
            for key, child in value.items():
                if _UNSTORABLE.search(key):
                    return (path or "event")[:FIELD_PATH_MAX]
                pending.append((f"{path}.{key}" if path else key, child))
        elif isinstance(value, list):
            pending.extend((f"{path}[{index}]", child) for index, child in enumerate(value))
    return None


# ---- security events ---------------------------------------------------------------------

_SECURITY_KEY = ["integration_id", "source_address", "kind", "window_start"]


def record_security_event(session: Session, kind: str, *, integration_id: str, message: str, http_status: int,
                          detail: str = "") -> int:
    """Count a refused delivery in its window's row; the window's first also gets an audit row.

    A storm from one source is one row whose counter rises, so an attacker cannot grow the
    append-only audit table without limit. Concurrent firsts are settled by the unique key:
    exactly one of them sees the count 1. Returns the count so far in this window.
    """
    now = utcnow()
    window = _window_start(now)
    source = (request.remote_addr or "")[:SOURCE_ADDRESS_MAX]
    table = SecurityEvent.__table__
    insert = upsert_into(session, table).values(
        integration_id=integration_id, source_address=source, kind=kind, window_start=window, occurrences=1,
        first_at=now, last_at=now, http_status=http_status,
        detail=redact_text(f"{message}; {detail}" if detail else message)[:SECURITY_DETAIL_MAX],
    )
    statement = insert.on_conflict_do_update(
        index_elements=_SECURITY_KEY,
        set_={"occurrences": table.c.occurrences + 1, "last_at": insert.excluded.last_at},
    ).returning(table.c.occurrences)
    occurrences = int(session.scalar(statement) or 0)
    if occurrences == 1:
        until = window + timedelta(seconds=SECURITY_WINDOW_SECONDS)
        audit.append(session, "security",
                     f"{message} ({kind}; more from this source until {until:%H:%M:%S}Z are counted in security_events)",
                     integration_id=integration_id or None, http_status=http_status,
                     error=f"remote={source} {detail}".strip())
    return occurrences


def _window_start(at: datetime) -> datetime:
    seconds = int(at.timestamp()) // SECURITY_WINDOW_SECONDS * SECURITY_WINDOW_SECONDS
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


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
