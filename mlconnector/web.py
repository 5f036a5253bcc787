"""The Flask app: webhook receiver, health, readiness, Prometheus metrics and the console.

Only the health checks answer anyone. Webhooks answer a valid signature, /metrics a bearer
token when MLCONNECTOR_METRICS_TOKEN is set, and every console page a signed-in user.

Production: gunicorn 'mlconnector.web:create_app()'. Embedded: `mlconnector serve`.
"""

from __future__ import annotations

from typing import Any

import hmac

from flask import Flask, Response, jsonify, request
from sqlalchemy import text
from werkzeug.exceptions import HTTPException

from mlconnector.receiver import blueprint as webhooks


def create_app() -> Flask:
    from mlconnector.logging import configure_from_settings

    configure_from_settings()
    app = Flask("mlconnector")
    # A sender's path is taken as sent: '//' is no route (a JSON 404), not an HTML redirect.
    app.url_map.merge_slashes = False
    app.register_blueprint(webhooks)
    from mlconnector.console import init_console
    from mlconnector.console.security import csrf

    init_console(app)
    csrf.exempt(webhooks)  # a webhook proves itself by its HMAC signature, not a browser's token

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response | tuple[Response, int] | Any:
        """Routing and method errors (a path with a slash in the id, a GET) answer in JSON too;
        a console page answers with a page saying what to do next."""
        if error.code is None or error.code < 400:
            return error.get_response()
        if request.path == "/console" or request.path.startswith("/console/"):
            from mlconnector.console.errors import http_error as console_error

            return console_error(error)
        return jsonify({"error": error.description or error.name}), error.code

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        checks = {"database": _check_database(), "broker": _check_broker(), **_check_shared_redis()}
        ready = all(c == "ok" for c in checks.values())
        return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503

    @app.get("/metrics")
    def metrics() -> Response:
        """Every process's counts on this host and the fleet's gauges (see fleet_metrics)."""
        from mlconnector.fleet_metrics import render
        from mlconnector.settings import get_settings

        token = get_settings().metrics_token
        if token:
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), token.encode()):
                return Response("metrics need the bearer token (MLCONNECTOR_METRICS_TOKEN)\n", status=401,
                                headers={"WWW-Authenticate": "Bearer"}, content_type="text/plain")
        body, content_type = render()
        return Response(body, content_type=content_type)

    return app


def _check_database() -> str:
    from mlconnector.db.session import get_engine

    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return "ok"
    except Exception as error:
        return f"error: {type(error).__name__}"


def _check_shared_redis() -> dict[str, str]:
    """The Redis the fleet shares its rate limiter and tokens through, when it is not the
    broker (a RabbitMQ fleet): without it no worker may call a vendor, so the host is not ready."""
    from mlconnector.settings import get_settings

    settings = get_settings()
    url = settings.effective_redis_url
    if not url or url == settings.celery_broker_url:
        return {}
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        return {"redis": "ok"}
    except Exception as error:
        return {"redis": f"error: {type(error).__name__}"}
    finally:
        client.close()


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
