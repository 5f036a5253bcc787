"""Health, readiness, metrics, and alert summaries grouped so a storm is one message."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request

from tests.conftest import serve_wsgi


def test_health_ready_and_metrics(configure, fresh_pg: str, redis_url: str) -> None:
    from mlconnector.web import create_app

    configure(fresh_pg, redis_url)
    client = create_app().test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "broker": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "text/plain" in metrics.content_type
    assert b"mlconnector_http_requests_total" in metrics.data or b"# HELP" in metrics.data


def test_readyz_reports_an_unreachable_broker(configure, fresh_pg: str) -> None:
    from mlconnector.web import create_app

    configure(fresh_pg, "redis://127.0.0.1:1/0")
    response = create_app().test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "ok"
    assert response.get_json()["checks"]["broker"].startswith("error")


def test_readyz_on_rabbitmq_checks_the_shared_redis_too(configure, fresh_pg: str, redis_url: str,
                                                        rabbitmq_url: str) -> None:
    from mlconnector.web import create_app

    configure(fresh_pg, rabbitmq_url, REDIS_URL=redis_url)
    ready = create_app().test_client().get("/readyz")
    assert (ready.status_code, ready.get_json()["checks"]) == (200, {"database": "ok", "broker": "ok", "redis": "ok"})
    configure(fresh_pg, rabbitmq_url, REDIS_URL="redis://127.0.0.1:1/0")  # the limiter's Redis is away
    away = create_app().test_client().get("/readyz")
    assert away.status_code == 503
    assert away.get_json()["checks"]["broker"] == "ok" and away.get_json()["checks"]["redis"].startswith("error")


def test_alert_storm_becomes_one_summary(configure, fresh_pg: str, monkeypatch) -> None:
    from mlconnector import alerts, audit
    from mlconnector.db.session import session_scope

    received: list[dict[str, Any]] = []
    sink = Flask("sink")

    @sink.post("/hook")
    def hook():  # type: ignore[no-untyped-def]
        received.append(request.get_json())
        return jsonify({"ok": True})

    url, server = serve_wsgi(sink)
    try:
        configure(fresh_pg, MLCONNECTOR_ALERT_WEBHOOK_URL=f"{url}/hook")
        with session_scope() as session:
            for i in range(500):
                audit.append(session, "security", f"rejected webhook: signature does not match ({i})", integration_id="acme")
            audit.append(session, "held", "vendor 'Acme Supply Co' has no Epicor vendor", integration_id="acme", sync_record_id=7)
            audit.append(session, "written", "not an alert", integration_id="acme")
        first = alerts.send_pending()
        again = alerts.send_pending()
    finally:
        server.shutdown()
    assert first == {"sent": 1, "rows": 501}
    assert again == {"sent": 0}
    assert len(received) == 1
    assert received[0]["counts"] == {"security": 500, "held": 1}
    assert "500 security" in received[0]["text"] and "Acme Supply Co" in received[0]["text"]
