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
    from mlconnector.db.session import session_scope
    from mlconnector.db.models import Integration
    from mlconnector.web import create_app

    redis.Redis.from_url(redis_url).flushdb()
    configure(fresh_pg, redis_url, MLCONNECTOR_WEBHOOK_MAX_BYTES="4096")
    with session_scope() as session:
        session.add(Integration(id="acme", pair="servicetitan-epicor", name="acme",
                                config={"systems": {}, "webhook": {"hmac_key": KEY, "previous_hmac_key": OLD_KEY}}))
        session.add(Integration(id="b64", pair="servicetitan-epicor", name="b64",
                                config={"systems": {}, "webhook": {"hmac_key": KEY, "signature_encoding": "base64",
                                                                    "signature_header": "X-Sig"}}))
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


def _set_webhook(integration_id: str, webhook: dict[str, str]) -> None:
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        integration.config = {**integration.config, "webhook": webhook}


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
