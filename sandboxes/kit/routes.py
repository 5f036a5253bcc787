"""Request and response plumbing the sandboxes share: JSON answers and pydantic-checked bodies.

A sandbox's settings, licence limits and injected faults are pydantic models changed at run
time through `/_sandbox/...`; every such route reads a JSON object, lays it over the current
model, validates, and answers the model or a 400 with the reason. That is written once here.
"""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from flask import Flask, Response, request
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class BodyError(ValueError):
    """A request body that is not what the route takes; answered 400 with this message."""


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None,
                  default: Callable[[Any], Any] | None = None) -> Response:
    """Compact JSON, as the vendors' servers send it (no pretty-printing, keys in given order)."""
    response = Response(json.dumps(data, separators=(",", ":"), default=default), status=status,
                        mimetype="application/json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def json_object() -> dict[str, Any]:
    """The request's JSON object; an empty or unreadable body counts as `{}`."""
    body = request.get_json(silent=True) or {}
    if not isinstance(body, dict):
        raise BodyError("JSON object body required")
    return body


def body_as(model: type[M], *, over: M | None = None, body: dict[str, Any] | None = None) -> M:
    """`body` (default: the request's JSON object) as `model`, laid over `over` when given."""
    data = json_object() if body is None else body
    try:
        return model.model_validate({**(over.model_dump() if over is not None else {}), **data})
    except ValidationError as exc:
        raise BodyError(str(exc)) from None


def model_route(app: Flask, path: str, model: type[M], read: Callable[[], M], write: Callable[[M], None]) -> None:
    """GET answers the current model; POST merges the body over it, validates and stores it."""

    def handle() -> Response:
        if request.method == "POST":
            try:
                write(body_as(model, over=read()))
            except BodyError as exc:
                return json_response({"error": str(exc)}, 400)
        return json_response(read().model_dump())

    app.add_url_rule(path, f"model_route:{path}", handle, methods=["GET", "POST"])
