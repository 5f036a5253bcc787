"""What every vendor sandbox shares: a Flask app, state under one lock, the control API
under `/_sandbox/`, fault injection, request statistics, a token store and a rate window.

A vendor sandbox subclasses `Sandbox`, registers its own vendor routes in
`register_vendor_routes`, seeds its state in `seed`, and describes itself in `info`.
Everything under `/_sandbox/` is plainly not part of any vendor API.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

from flask import Flask, Response, g, jsonify, request
from pydantic import BaseModel, Field
from waitress.server import create_server

from sandboxes.kit.routes import BodyError, body_as, json_object
from sandboxes.kit.tokens import TokenStore


class SandboxOptions(BaseModel):
    """Start-up options; the same names as `mlconnector sandbox run` flags."""

    seed: int = 7
    records: int = 50
    rate_limit: float | None = None  # None: the vendor's documented default
    token_ttl: int | None = None  # None: the vendor's documented default (seconds)
    fault_rate: float = 0.0
    latency_ms: int = 0


class Faults(BaseModel):
    """Faults on demand, changed at run time through `POST /_sandbox/faults`."""

    error_rate: float = Field(0.0, ge=0, le=1)
    error_status: int = 503
    latency_ms: int = Field(0, ge=0)
    timeout_rate: float = Field(0.0, ge=0, le=1)
    timeout_seconds: float = Field(30.0, ge=0)
    burst_429: int = Field(0, ge=0)  # the next N vendor calls answer 429
    retry_after: int = Field(1, ge=0)
    fail_next: int = Field(0, ge=0)  # the next N vendor calls answer error_status
    path_contains: str = ""  # restrict faults to paths containing this text
    webhook_duplicate_rate: float = Field(0.0, ge=0, le=1)
    webhook_drop_rate: float = Field(0.0, ge=0, le=1)


class Stats:
    """Requests by endpoint and status, 429s sent, tokens issued."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "_lock", threading.Lock()):
            self.requests: collections.Counter[str] = collections.Counter()
            self.by_endpoint: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
            self.rate_limited = 0
            self.tokens_issued = 0
            self.timestamps: collections.deque[float] = collections.deque(maxlen=100_000)
            self.extra: collections.Counter[str] = collections.Counter()

    def record(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[str(status)] += 1
            self.by_endpoint[endpoint][str(status)] += 1
            if status == 429:
                self.rate_limited += 1
            self.timestamps.append(time.time())

    def token_issued(self) -> None:
        with self._lock:
            self.tokens_issued += 1

    def bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.extra[name] += amount

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total": sum(self.requests.values()),
                "by_status": dict(self.requests),
                "by_endpoint": {k: dict(v) for k, v in self.by_endpoint.items()},
                "rate_limited": self.rate_limited,
                "tokens_issued": self.tokens_issued,
                "first_request_at": self.timestamps[0] if self.timestamps else None,
                "last_request_at": self.timestamps[-1] if self.timestamps else None,
                **{k: v for k, v in self.extra.items()},
            }


class RateWindow:
    """A sliding one-window limiter: at most `limit` calls per `window` seconds per key."""

    def __init__(self, limit: float | None, window: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._calls: dict[str, collections.deque[float]] = collections.defaultdict(collections.deque)

    def hit(self, key: str) -> tuple[bool, float, int]:
        """(allowed, seconds until a slot frees, remaining) for one call now."""
        if not self.limit:
            return True, 0.0, 0
        now = time.monotonic()
        with self._lock:
            calls = self._calls[key]
            while calls and calls[0] <= now - self.window:
                calls.popleft()
            if len(calls) >= self.limit:
                return False, max(0.0, calls[0] + self.window - now), 0
            calls.append(now)
            return True, 0.0, int(self.limit - len(calls))

    def reset(self) -> None:
        with self._lock:
            self._calls.clear()


SERVER_THREADS = 16  # concurrent requests a sandbox serves; above a benchmark's worker count


def _make_server(app: Flask, host: str, port: int) -> Any:
    """waitress: a threaded server with HTTP/1.1 keep-alive, as the vendors' APIs serve.

    (Werkzeug's development server closes every connection, which would make each call in a
    benchmark pay for a new TCP connection that no real vendor charges.)
    """
    return create_server(app, host=host, port=port, threads=SERVER_THREADS, ident=None,
                         connection_limit=1000, channel_timeout=120, expose_tracebacks=False)


class Sandbox(ABC):
    """Base of the vendor simulators. State is guarded by `self.lock`."""

    vendor: str = ""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        self.lock = threading.RLock()
        self.stats = Stats()
        self.tokens = TokenStore()
        self.faults = Faults(error_rate=self.options.fault_rate, latency_ms=self.options.latency_ms)
        self.base_url = "http://127.0.0.1:0"
        self._fault_rng = random.Random(self.options.seed + 1)
        self.app = Flask(f"sandbox-{self.vendor}")
        self.app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024
        self._register_control_routes()
        self.app.before_request(self._before)
        self.app.after_request(self._after)
        self.register_vendor_routes(self.app)
        self.reset_state()

    # ---- what a vendor sandbox provides -------------------------------------------------

    @abstractmethod
    def register_vendor_routes(self, app: Flask) -> None:
        """Add the vendor's own endpoints to `app`."""

    @abstractmethod
    def seed(self, rng: random.Random, records: int) -> None:
        """Fill state deterministically from `rng` (called under the lock on reset)."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """`{"vendor", "api_base", "token_url", "credentials"}` for `GET /_sandbox/info`."""

    @abstractmethod
    def tick(self, count: int) -> list[dict[str, Any]]:
        """Change `count` records so a poll sees updates; returns what changed."""

    @abstractmethod
    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or change one record of `entity` (control API); returns it as stored."""

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        """All records of `entity` as stored (control API, for tests and the demo)."""
        raise KeyError(entity)

    def clear_state(self) -> None:
        """Drop vendor state before a reseed; subclasses reset their stores here."""

    # ---- shared machinery -----------------------------------------------------------------

    def reset_state(self) -> None:
        with self.lock:
            self.clear_state()
            self.tokens.revoke_all()
            self.stats.reset()
            self.seed(random.Random(self.options.seed), self.options.records)

    def _register_control_routes(self) -> None:
        app = self.app

        @app.get("/_sandbox/info")
        def _info() -> Response:
            return jsonify(self.info())

        @app.get("/_sandbox/stats")
        def _stats() -> Response:
            return jsonify(self.stats.snapshot())

        @app.post("/_sandbox/stats/reset")
        def _stats_reset() -> Response:
            self.stats.reset()
            return jsonify({"ok": True})

        @app.get("/_sandbox/faults")
        def _faults_get() -> Response:
            return jsonify(self.faults.model_dump())

        @app.post("/_sandbox/faults")
        def _faults() -> tuple[Response, int] | Response:
            try:
                body = json_object()
                self.faults = body_as(Faults, over=None if body.pop("replace", False) else self.faults, body=body)
            except BodyError as exc:
                return jsonify({"error": str(exc)}), 400
            return jsonify(self.faults.model_dump())

        @app.post("/_sandbox/revoke-tokens")
        def _revoke() -> Response:
            self.tokens.revoke_all()
            return jsonify({"ok": True})

        @app.post("/_sandbox/expire-tokens")
        def _expire() -> Response:
            self.tokens.expire_all()
            return jsonify({"ok": True})

        @app.post("/_sandbox/reset")
        def _reset() -> Response:
            body = request.get_json(silent=True) or {}
            if "seed" in body or "records" in body:
                self.options = self.options.model_copy(update={k: body[k] for k in ("seed", "records") if k in body})
            self.faults = Faults()
            self.reset_state()
            return jsonify({"ok": True})

        @app.post("/_sandbox/tick")
        def _tick() -> Response:
            body = request.get_json(silent=True) or {}
            count = int(body.get("count", request.args.get("count", 1)))
            with self.lock:
                changed = self.tick(count)
            return jsonify({"changed": changed})

        @app.get("/_sandbox/entities/<entity>")
        def _entities(entity: str) -> tuple[Response, int] | Response:
            try:
                with self.lock:
                    rows = self.get_entities(entity)
            except KeyError:
                return jsonify({"error": f"unknown entity {entity}"}), 404
            return jsonify(rows)

        @app.post("/_sandbox/entities/<entity>")
        def _put_entity(entity: str) -> tuple[Response, int] | Response:
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                return jsonify({"error": "JSON object body required"}), 400
            try:
                with self.lock:
                    stored = self.put_entity(entity, body)
            except KeyError as exc:
                return jsonify({"error": f"unknown entity {exc}"}), 404
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
            return jsonify(stored)

    def _before(self) -> Response | tuple[Response, int] | None:
        if request.path.startswith("/_sandbox/"):
            return None
        g.started = time.perf_counter()
        faults = self.faults
        if faults.path_contains and faults.path_contains not in request.path:
            return None
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.timeout_rate and self._fault_rng.random() < faults.timeout_rate:
            time.sleep(faults.timeout_seconds)
        with self.lock:
            if faults.burst_429 > 0:
                faults.burst_429 -= 1
                return self.rate_limited_response(faults.retry_after)
            if faults.fail_next > 0:
                faults.fail_next -= 1
                return self.error_response(faults.error_status, "Injected fault")
        if faults.error_rate and self._fault_rng.random() < faults.error_rate:
            return self.error_response(faults.error_status, "Injected fault")
        return None

    def _after(self, response: Response) -> Response:
        if not request.path.startswith("/_sandbox/"):
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            self.stats.record(f"{request.method} {rule}", response.status_code)
        return response

    def rate_limited_response(self, retry_after: float) -> Response:
        """The vendor's 429; subclasses override for the vendor's body and headers."""
        response = jsonify({"error": "Too Many Requests"})
        response.status_code = 429
        response.headers["Retry-After"] = str(max(1, int(round(retry_after + 0.499))))
        return response

    def error_response(self, status: int, message: str) -> Response:
        """The vendor's generic error; subclasses override for the vendor's error shape."""
        response = jsonify({"error": message})
        response.status_code = status
        return response


@dataclass
class RunningSandbox:
    sandbox: Sandbox
    server: Any
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.effective_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def info(self) -> dict[str, Any]:
        return self.sandbox.info()

    def stop(self) -> None:
        """Close the listener and every kept-alive client connection, so the loop ends now."""
        self.server.close()
        for channel in list(getattr(self.server, "_map", {}).values()):
            try:
                channel.close()
            except OSError:
                pass
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=2)
        self.thread.join(timeout=5)

    def __enter__(self) -> "RunningSandbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sandbox(sandbox: Sandbox, port: int = 0, host: str = "127.0.0.1") -> RunningSandbox:
    """Serve `sandbox` in a daemon thread (port 0: a free one); `.url` says where."""
    server = _make_server(sandbox.app, host, port)
    sandbox.base_url = f"http://{host}:{server.effective_port}"
    thread = threading.Thread(target=_run_quietly, args=(server,), name=f"sandbox-{sandbox.vendor}", daemon=True)
    thread.start()
    return RunningSandbox(sandbox, server, thread)


def _run_quietly(server: Any) -> None:
    try:
        server.run()
    except (OSError, ValueError):  # closed while polling: the sandbox was stopped
        pass


def serve_forever(sandbox: Sandbox, port: int, host: str = "127.0.0.1", on_ready: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground (`mlconnector sandbox run`)."""
    server = _make_server(sandbox.app, host, port)
    sandbox.base_url = f"http://{host}:{server.effective_port}"
    if on_ready:
        on_ready(sandbox.base_url)
    try:
        server.run()
    finally:
        server.close()
