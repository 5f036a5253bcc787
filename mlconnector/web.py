"""The Flask app: webhook receiver, health, readiness and Prometheus metrics.

Production: gunicorn 'mlconnector.web:create_app()'. Embedded: `mlconnector serve`.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from sqlalchemy import text

from mlconnector.receiver import blueprint as webhooks


def _ledger_registry() -> CollectorRegistry:
    """Fleet-wide gauges read from PostgreSQL: true for all workers, not one process."""
    from mlconnector import ledger
    from mlconnector.db.session import session_scope

    registry = CollectorRegistry()
    records = Gauge("mlconnector_sync_records", "Sync records by state", ["integration", "flow", "status"], registry=registry)
    with session_scope() as session:
        for integration, flow, status, count in ledger.counts_by_status(session):
            records.labels(integration=integration, flow=flow, status=status).set(count)
        events = Gauge("mlconnector_inbound_events", "Inbound events by state", ["status"], registry=registry)
        for status, count in session.execute(text("SELECT status, count(*) FROM inbound_events GROUP BY status")):
            events.labels(status=status).set(count)
    return registry


def create_app() -> Flask:
    from mlconnector.logging import configure_from_settings

    configure_from_settings()
    app = Flask("mlconnector")
    app.register_blueprint(webhooks)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks = {"database": _check_database(), "broker": _check_broker()}
        ready = all(c == "ok" for c in checks.values())
        return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503

    @app.get("/metrics")
    def metrics() -> Response:
        body = generate_latest(DEFAULT_REGISTRY)
        try:
            body += generate_latest(_ledger_registry())
        except Exception:  # metrics must answer even when the database is down
            pass
        return Response(body, mimetype=CONTENT_TYPE_LATEST)

    return app


def _check_database() -> str:
    from mlconnector.db.session import get_engine

    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except Exception as error:
        return f"error: {type(error).__name__}"


def _check_broker() -> str:
    from mlconnector.settings import get_settings

    settings = get_settings()
    if settings.embedded:
        return "ok"
    try:
        from mlconnector.celery_app import app as celery_app

        with celery_app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as error:
        return f"error: {type(error).__name__}"
