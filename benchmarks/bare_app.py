"""The smallest receiver worth comparing against: read the body, answer 202.

    gunicorn 'benchmarks.bare_app:create_app()'
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request


def create_app() -> Flask:
    app = Flask("bare")

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.post("/webhooks/servicetitan/<integration_id>")
    def receive(integration_id: str) -> tuple[Response, int]:
        request.get_data(cache=False)
        return jsonify({"status": "accepted"}), 202

    return app
