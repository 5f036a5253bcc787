"""The webhook receiver's defined outcomes for every kind of input."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from sqlalchemy import select

from mlconnector.webhook_signature import sign_for_tests

KEY = "k" * 40
OLD_KEY = "o" * 40


@pytest.fixture
def client(configure, fresh_pg: str, redis_url: str):  # type: ignore[no-untyped-def]
    return _client(configure, fresh_pg, redis_url, max_bytes=4096)


@pytest.fixture
def roomy_client(configure, fresh_pg: str, redis_url: str):  # type: ignore[no-untyped-def]
    """Bodies up to 64 KiB: room for numbers and nesting the 4 KiB client would refuse as too large."""
    return _client(configure, fresh_pg, redis_url, max_bytes=65536)


def _client(configure, fresh_pg: str, redis_url: str, max_bytes: int):  # type: ignore[no-untyped-def]
    from mlconnector.db.session import session_scope
    from mlconnector.db.models import Integration
    from mlconnector.web import create_app

    redis.Redis.from_url(redis_url).flushdb()
    configure(fresh_pg, redis_url, MLCONNECTOR_WEBHOOK_MAX_BYTES=str(max_bytes))
    with session_scope() as session:
        session.add(Integration(id="acme", pair="servicetitan-epicor", name="acme", config={"systems": {}}))
        session.add(Integration(id="b64", pair="servicetitan-epicor", name="b64",
                                config={"systems": {}, "webhook": {"signature_encoding": "base64",
                                                                   "signature_header": "X-Sig"}}))
        session.flush()
    _set_webhook("acme", {"hmac_key": KEY, "previous_hmac_key": OLD_KEY})
    _set_webhook("b64", {"hmac_key": KEY})
    return create_app().test_client()


def _event(event_type: str = "inventory-bill.created", event_id: str | None = None) -> bytes:
    return json.dumps({"eventId": event_id or str(uuid.uuid4()), "eventType": event_type, "tenantId": 1,
                       "data": {"id": 42}}).encode()


def _post(client, body: bytes, key: str = KEY, integration: str = "acme", header: str = "X-ServiceTitan-Signature",
          encoding: str = "hex"):  # type: ignore[no-untyped-def]
    response = client.post(f"/webhooks/servicetitan/{integration}", data=body, content_type="application/json",
                           headers={header: sign_for_tests(body, key, encoding)})  # type: ignore[arg-type]
    response.close()  # what a WSGI server does once the answer is sent: runs the enqueue
    return response


def _rows(model):  # type: ignore[no-untyped-def]
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return list(session.scalars(select(model)))


def test_good_event_is_stored_then_answered_202_and_enqueued(client, redis_url: str) -> None:
    from mlconnector.db.models import InboundEvent

    response = _post(client, _event())
    assert response.status_code == 202
    events = _rows(InboundEvent)
    assert len(events) == 1 and events[0].status == "pending" and events[0].event_type == "inventory-bill.created"
    assert events[0].payload["data"] == {"id": 42} and events[0].received_at is not None
    queued = redis.Redis.from_url(redis_url).lrange("mlconnector", 0, -1)
    assert len(queued) == 1 and b"mlconnector.process_event" in queued[0]


def test_duplicate_deliveries_are_noted_not_processed_again(client, redis_url: str) -> None:
    from mlconnector.db.models import AuditEvent, InboundEvent

    body = _event(event_id="evt-1")
    statuses = [_post(client, body).status_code for _ in range(3)]
    assert statuses == [202, 200, 200]
    events = _rows(InboundEvent)
    assert len(events) == 1 and events[0].duplicates == 2
    assert len(redis.Redis.from_url(redis_url).lrange("mlconnector", 0, -1)) == 1
    assert [a.kind for a in _rows(AuditEvent)].count("duplicate") == 2


def test_bad_or_missing_signature_is_401_with_a_security_audit_row(client) -> None:
    from mlconnector.db.models import AuditEvent, InboundEvent

    assert _post(client, _event(), key="x" * 40).status_code == 401
    missing = client.post("/webhooks/servicetitan/acme", data=_event(), content_type="application/json")
    assert missing.status_code == 401
    assert _rows(InboundEvent) == []
    security = [a for a in _rows(AuditEvent) if a.kind == "security"]
    assert len(security) == 2 and security[0].http_status == 401 and security[0].integration_id == "acme"
    assert KEY not in json.dumps([a.message + (a.error or "") for a in security])


def test_previous_key_accepted_during_rotation_and_base64_encoding(client) -> None:
    assert _post(client, _event(), key=OLD_KEY).status_code == 202
    assert _post(client, _event(), integration="b64", header="X-Sig", encoding="base64").status_code == 202
    assert _post(client, _event(), integration="b64", header="X-Sig", encoding="hex").status_code == 401


def test_malformed_oversized_and_unknown(client) -> None:
    from mlconnector.db.models import InboundEvent

    assert _post(client, b"{not json").status_code == 400
    assert _post(client, json.dumps({"data": {}}).encode()).status_code == 400  # no eventType
    assert _post(client, b"x" * 5000).status_code == 413
    assert _post(client, _event(), integration="nobody").status_code == 404
    assert _rows(InboundEvent) == []


def _set_webhook(integration_id: str, keys: dict[str, str]) -> None:
    """The integration's signing keys, sealed in the vault as `credentials set <id> webhook` does."""
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        vault.store(session, integration_id, WEBHOOK_SECRETS, keys)


def test_a_rotated_key_works_at_once_and_a_removed_one_stops_within_seconds(client, monkeypatch) -> None:
    from mlconnector import receiver

    new_key = "n" * 40
    assert _post(client, _event()).status_code == 202  # the settings are now kept in this process
    _set_webhook("acme", {"hmac_key": new_key, "previous_hmac_key": KEY})
    assert _post(client, _event(), key=new_key).status_code == 202  # no wait for the kept copy to age
    assert _post(client, _event(), key=KEY).status_code == 202  # the previous key, during the rotation
    _set_webhook("acme", {"hmac_key": new_key})
    monkeypatch.setattr(receiver, "SETTINGS_TTL_SECONDS", 0.0)  # as if the kept copy had aged
    assert _post(client, _event(), key=KEY).status_code == 401
    assert _post(client, _event(), key=new_key).status_code == 202


def _post_signed(client, body: bytes, path: str = "/webhooks/servicetitan/acme", remote: str = "127.0.0.1",
                 signature: str | None = None):  # type: ignore[no-untyped-def]
    """A delivery with any signature header value (the correct one by default) from `remote`."""
    response = client.post(path, data=body, content_type="application/json",
                           headers={"X-ServiceTitan-Signature": signature or sign_for_tests(body, KEY)},
                           environ_base={"REMOTE_ADDR": remote})
    response.close()
    return response


@pytest.mark.parametrize("signature", ["é" * 64, "\u2603" * 64, "\ud800" + "a" * 63, "sha256=\udcff\x00"])
def test_a_signature_header_with_any_characters_is_401_not_500(client, signature: str) -> None:
    from mlconnector.db.models import InboundEvent

    response = _post_signed(client, _event(), signature=signature)
    assert response.status_code == 401 and response.get_json() == {"error": "invalid signature"}
    assert _rows(InboundEvent) == []


@pytest.mark.parametrize("integration", ["ac%00me", "%00", "a" * 65, "acme%0A"])
def test_an_integration_id_that_cannot_exist_is_404_with_a_security_record(client, integration: str) -> None:
    from mlconnector.db.models import AuditEvent, SecurityEvent

    response = _post_signed(client, _event(), path=f"/webhooks/servicetitan/{integration}")
    assert response.status_code == 404 and "no ServiceTitan integration" in response.get_json()["error"]
    [security] = _rows(SecurityEvent)
    assert security.kind == "malformed_integration_id" and security.integration_id == "" and security.occurrences == 1
    [row] = [a for a in _rows(AuditEvent) if a.kind == "security"]
    assert row.http_status == 404 and "\x00" not in row.message


def _with(**fields: object) -> bytes:
    event: dict[str, object] = {"eventId": str(uuid.uuid4()), "eventType": "inventory-bill.created", "tenantId": 1,
                                "data": {"id": 42}}
    event.update(fields)
    return json.dumps(event).encode()


@pytest.mark.parametrize(("body", "field"), [
    (_with(eventId="e" * 201), "eventId"),  # inbound_events.source_event_id is String(200)
    (_with(eventId="evt\x00-1"), "eventId"),  # PostgreSQL text cannot hold NUL
    (_with(eventId="evt-\ud800"), "eventId"),  # a lone surrogate cannot be encoded for the database
    (_with(eventId="evt\n1"), "eventId"),
    (_with(eventId={"nested": 1}), "eventId"),
    (_with(eventId=True), "eventId"),
    (_with(eventType="t" * 101), "eventType"),  # inbound_events.event_type is String(100)
    (_with(eventType="bill.\udfff"), "eventType"),
    (_with(eventType=["inventory-bill.created"]), "eventType"),
    (_with(data={"id": "9" * 201}), "data.id"),  # sync_records.source_id is String(200)
    (_with(data={"id": "4\x002"}), "data.id"),
    (_with(data={"id": 4.2}), "data.id"),
    (_with(data={"id": {"a": 1}}), "data.id"),
    (_with(data=[42]), "data"),  # the engine needs a data object to find the event's records
    (_with(data={"id": 42, "vendor": {"name": "Acme\x00Supply"}}), "data.vendor.name"),
    (_with(data={"id": 42, "lines": [{"note": "\udc80"}]}), "data.lines[0].note"),
    (_with(data={"id": 42, "bad\x00key": 1}), "data"),
])
def test_event_values_that_cannot_be_stored_or_processed_are_refused_with_422(client, body: bytes, field: str) -> None:
    from mlconnector.db.models import InboundEvent

    response = _post_signed(client, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["field"] == field and field in answer["error"]
    assert _rows(InboundEvent) == []


@pytest.mark.parametrize("body", [b'{"eventType": "x.created", "data": {"id": NaN}}',
                                  b'{"eventType": "x.created", "data": {"id": 1, "total": Infinity}}',
                                  b'{"eventType": "x.created", "data": {"id": 1, "total": 1e999}}',
                                  b'{"eventType": "x.created", "data": {"id": ' + b"9" * 5000 + b"}}"])
def test_numbers_json_cannot_carry_are_400(roomy_client, body: bytes) -> None:
    from mlconnector.db.models import InboundEvent

    response = _post_signed(roomy_client, body)
    assert response.status_code == 400 and "malformed JSON" in response.get_json()["error"]
    assert _rows(InboundEvent) == []


def test_json_nested_thousands_deep_is_refused_before_it_is_parsed(roomy_client) -> None:
    from mlconnector import receiver
    from mlconnector.db.models import InboundEvent

    deep = b'{"eventType": "x.created", "data": {"id": 1, "n": ' + b"[" * 3000 + b"]" * 3000 + b"}}"
    response = _post_signed(roomy_client, deep)
    assert response.status_code == 422 and "nested deeper than" in response.get_json()["error"]
    unterminated = b"[" * 3000  # not JSON at all, and still no RecursionError
    assert _post_signed(roomy_client, unterminated).status_code == 422
    depth = receiver.MAX_NESTING - 2  # the envelope and data take two levels
    fits = b'{"eventType": "x.created", "data": {"id": 1, "n": ' + b"[" * depth + b"]" * depth + b"}}"
    assert _post_signed(roomy_client, fits).status_code == 202
    assert len(_rows(InboundEvent)) == 1


def test_printable_non_ascii_ids_at_the_column_limits_are_accepted(client) -> None:
    from mlconnector.db.models import InboundEvent

    body = _with(eventId="é" * 200, eventType="ü" * 100, data={"id": "☃" * 200, "note": "line\nbreak\ttab"})
    assert _post_signed(client, body).status_code == 202
    assert _post_signed(client, _with(eventId=7, data={"id": 42})).status_code == 202
    stored = sorted(e.source_event_id for e in _rows(InboundEvent))
    assert stored == ["7", "é" * 200]


def test_a_storm_of_bad_signatures_is_counted_not_appended_row_by_row(client, monkeypatch) -> None:
    from datetime import datetime, timedelta, timezone

    from mlconnector import receiver
    from mlconnector.db.models import AuditEvent, SecurityEvent

    start = datetime(2030, 1, 1, 12, 0, 30, tzinfo=timezone.utc)
    monkeypatch.setattr(receiver, "utcnow", lambda: start)
    storm = 300
    for _ in range(storm):
        assert _post_signed(client, _event(), remote="203.0.113.7", signature="0" * 64).status_code == 401
    assert _post_signed(client, _event(), remote="198.51.100.2", signature="0" * 64).status_code == 401
    rows = {(s.source_address, s.kind): s for s in _rows(SecurityEvent)}
    assert len(rows) == 2
    storm_row = rows[("203.0.113.7", "bad_signature")]
    assert storm_row.occurrences == storm and storm_row.integration_id == "acme"
    assert rows[("198.51.100.2", "bad_signature")].occurrences == 1
    security = [a for a in _rows(AuditEvent) if a.kind == "security"]
    assert len(security) == 2  # one per (integration, address, kind) and window: alerts still fire

    later = start + timedelta(seconds=receiver.SECURITY_WINDOW_SECONDS)
    monkeypatch.setattr(receiver, "utcnow", lambda: later)
    for _ in range(5):
        _post_signed(client, _event(), remote="203.0.113.7", signature="0" * 64)
    assert len(_rows(SecurityEvent)) == 3 and len([a for a in _rows(AuditEvent) if a.kind == "security"]) == 3
    assert sum(s.occurrences for s in _rows(SecurityEvent)) == storm + 1 + 5


@pytest.mark.parametrize("path", ["/webhooks/servicetitan//acme", "/webhooks//servicetitan/acme", "/webhooks/servicetitan/acme/x"])
def test_a_path_that_names_no_integration_is_a_json_404_never_a_redirect(client, path: str) -> None:
    response = _post_signed(client, _event(), path=path)
    assert response.status_code == 404 and isinstance(response.get_json(), dict), response.get_data(as_text=True)
