"""The HTTP core: backoff honouring Retry-After, one refresh on 401, the error taxonomy,
the fleet-wide token cache's single flight and the rate limiter across processes."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from typing import Any

import pytest
import requests
import responses
from flask import Flask, jsonify, request

from mlconnector.http import (
    AuthError, FatalError, HttpClient, NotFoundError, RateLimit, RateLimiter, RetriableError, RetryPolicy,
    Token, TokenAuth, TokenCache, TokenProvider,
)
from tests.conftest import serve_wsgi

FAST = RetryPolicy(max_tries=4, base=0.01, max_wait=3)


class CountingProvider(TokenProvider):
    vendor = "testvendor"

    def __init__(self, token_url: str, delay: float = 0.0) -> None:
        self.token_url = token_url
        self.delay = delay

    @property
    def cache_key(self) -> str:
        return "tenant-1"

    def fetch(self, session: requests.Session, previous: Token | None) -> Token:
        body = session.post(self.token_url, data={"grant_type": "client_credentials"}, timeout=5).json()
        return Token.from_oauth(body, default_ttl=900)


def _token_server(delay: float = 0.3) -> tuple[str, Any, dict[str, int]]:
    app = Flask("tokens")
    counts = {"tokens": 0}
    lock = threading.Lock()

    @app.post("/token")
    def token():  # type: ignore[no-untyped-def]
        time.sleep(delay)
        with lock:
            counts["tokens"] += 1
            n = counts["tokens"]
        return jsonify({"access_token": f"tok-{n}-abcdef", "expires_in": 900})

    url, server = serve_wsgi(app)
    return url, server, counts


@responses.activate
def test_backoff_honours_retry_after_then_succeeds() -> None:
    responses.add(responses.GET, "https://api.example/x", status=429, headers={"Retry-After": "1"}, json={"message": "slow down"})
    responses.add(responses.GET, "https://api.example/x", status=503, json={"message": "busy"})
    responses.add(responses.GET, "https://api.example/x", status=200, json={"ok": True})
    from mlconnector.http import NoAuth

    client = HttpClient(vendor="v", base_url="https://api.example", auth=NoAuth(), session=requests.Session(), retry=FAST)
    started = time.monotonic()
    assert client.get_json("/x") == {"ok": True}
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5, elapsed  # waited the vendor's Retry-After, then a short jittered backoff
    assert client.calls == 3


@responses.activate
def test_a_retry_given_up_is_handed_on_without_an_error_log(caplog: pytest.LogCaptureFixture) -> None:
    """The caller decides what a transient failure means (the engine retries the record later
    and audits it): the retry layer's own give-up is not an error line in the operator's log."""
    import logging

    from mlconnector.http import NoAuth

    responses.add(responses.GET, "https://api.example/x", status=429, headers={"Retry-After": "0"}, json={"message": "slow"})
    client = HttpClient(vendor="v", base_url="https://api.example", auth=NoAuth(), session=requests.Session(),
                        retry=RetryPolicy(max_tries=2, base=0.01, max_wait=0.05))
    with caplog.at_level(logging.INFO, logger="backoff"), pytest.raises(RetriableError):
        client.get_json("/x")
    given_up = [r for r in caplog.records if r.name == "backoff" and "Giving up" in r.getMessage()]
    assert given_up and all(r.levelno == logging.INFO for r in given_up)


@responses.activate
def test_error_taxonomy_keeps_vendor_message() -> None:
    from mlconnector.http import NoAuth

    client = HttpClient(vendor="v", base_url="https://api.example", auth=NoAuth(), session=requests.Session(), retry=FAST)
    responses.add(responses.POST, "https://api.example/bad", status=400, json={"message": "VendorId is not valid"})
    responses.add(responses.GET, "https://api.example/missing", status=404, json={"message": "no such vendor"})
    responses.add(responses.GET, "https://api.example/down", status=502, body="bad gateway")
    with pytest.raises(FatalError, match="VendorId is not valid") as fatal:
        client.request("POST", "/bad", json={})
    assert fatal.value.status == 400 and client.calls == 1  # a permanent 4xx is not retried
    with pytest.raises(NotFoundError):
        client.get_json("/missing")
    with pytest.raises(RetriableError):
        client.get_json("/down")
    assert len([c for c in responses.calls if c.request.url.endswith("/down")]) == FAST.max_tries


def test_401_refreshes_once_and_secrets_never_leak() -> None:
    url, server, counts = _token_server(delay=0)
    app = Flask("api")
    seen: list[str] = []

    @app.get("/data")
    def data():  # type: ignore[no-untyped-def]
        seen.append(request.headers["Authorization"])
        if request.headers["Authorization"].endswith("tok-1-abcdef"):
            return jsonify({"message": "token expired"}), 401
        return jsonify({"ok": True})

    @app.get("/always401")
    def always():  # type: ignore[no-untyped-def]
        return jsonify({"message": f"bad token {request.headers['Authorization']}"}), 401

    api_url, api_server = serve_wsgi(app)
    try:
        session = requests.Session()
        auth = TokenAuth(CountingProvider(url + "/token"), TokenCache(None))
        client = HttpClient(vendor="v", base_url=api_url, auth=auth, session=session, retry=FAST)
        assert client.get_json("/data") == {"ok": True}
        assert counts["tokens"] == 2 and len(seen) == 2  # one refresh, one retry
        with pytest.raises(AuthError) as error:
            client.get_json("/always401")
        assert "tok-" not in str(error.value)  # the echoed token is redacted
        assert counts["tokens"] == 3  # refreshed once, then gave up
    finally:
        server.shutdown()
        api_server.shutdown()


def test_token_cache_single_flight_across_workers(redis_url: str) -> None:
    import redis

    url, server, counts = _token_server(delay=0.3)
    client = redis.Redis.from_url(redis_url)
    client.delete("mlconnector:token:testvendor:tenant-1")
    results: list[str] = []

    def worker() -> None:
        cache = TokenCache(redis.Redis.from_url(redis_url))  # each "worker" has its own cache object
        results.append(cache.get(CountingProvider(url + "/token"), requests.Session()).access_token)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    server.shutdown()
    assert counts["tokens"] == 1
    assert len(set(results)) == 1 and len(results) == 12
    stored = client.get("mlconnector:token:testvendor:tenant-1")
    assert stored is not None and json.loads(stored)["access_token"] == results[0]


def _hammer(redis_url: str, seconds: float, out: Any) -> None:
    limiter = RateLimiter(redis_url)
    stamps = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        limiter.acquire("testvendor:tenant-x", RateLimit(20, 1))
        stamps.append(time.time())
    out.put(stamps)


def test_rate_limiter_holds_one_rate_across_two_processes(redis_url: str) -> None:
    RateLimiter(redis_url).clear("testvendor:tenant-x", RateLimit(20, 1))
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_hammer, args=(redis_url, 2.5, queue)) for _ in range(2)]
    for process in processes:
        process.start()
    stamps = sorted(queue.get(timeout=30) + queue.get(timeout=30))
    for process in processes:
        process.join(timeout=10)
    # At most 20 calls in any one-second window over both processes (admission is decided on
    # Redis's clock; these stamps are the callers', so one call of scheduling jitter is allowed).
    # Without the shared limiter the two processes would make 40 per window.
    worst = max(sum(1 for t in stamps if s <= t < s + 1.0) for s in stamps)
    assert worst <= 21, worst
    assert len(stamps) >= 40  # and the limit is used, not starved


class _CountingRedis:
    """A Redis client that counts GETs, to see which token reads reach Redis."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.gets = 0

    def get(self, key: str) -> Any:
        self.gets += 1
        return self._client.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_fresh_token_is_reused_in_process_and_reread_once_refused(redis_url: str) -> None:
    import redis

    url, server, counts = _token_server(delay=0)
    try:
        client = redis.Redis.from_url(redis_url)
        client.delete("mlconnector:token:testvendor:tenant-1")
        counting = _CountingRedis(client)
        cache, provider, session = TokenCache(counting), CountingProvider(url + "/token"), requests.Session()  # type: ignore[arg-type]
        first = cache.get(provider, session)
        reads = counting.gets
        assert [cache.get(provider, session).access_token for _ in range(5)] == [first.access_token] * 5
        assert counting.gets == reads and counts["tokens"] == 1  # no Redis round trip per call
        other = TokenCache(redis.Redis.from_url(redis_url))  # another worker's view
        assert other.get(provider, session).access_token == first.access_token
        cache.invalidate(provider, first.access_token)  # the vendor refused it
        second = cache.get(provider, session)
        assert second.access_token != first.access_token and counts["tokens"] == 2
        assert counting.gets > reads
        assert other.peek(provider).access_token == second.access_token  # shared with the fleet
    finally:
        server.shutdown()


def test_pooled_session_reads_the_proxy_environment_once_per_host(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector.http.runtime import PooledSession

    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "erp.internal")
    pooled, plain = PooledSession(), requests.Session()
    for url in ("http://vendor.example/api/x?a=1", "http://erp.internal/odata/y"):
        assert pooled.merge_environment_settings(url, {}, None, None, None) == \
            plain.merge_environment_settings(url, {}, None, None, None)
    def proxy(url: str, proxies: Any = None) -> Any:
        return pooled.merge_environment_settings(url, proxies or {}, None, None, None)["proxies"].get("http")

    assert proxy("http://vendor.example/z") == "http://proxy.example:3128"
    assert proxy("http://erp.internal/z") is None
    monkeypatch.delenv("HTTP_PROXY")
    # Read once per host: a host already seen keeps its answer, a new host reads the environment now.
    assert proxy("http://vendor.example/other") == "http://proxy.example:3128"
    assert proxy("http://new.example/") is None
    explicit = {"http": "http://explicit:8080"}
    assert pooled.merge_environment_settings("http://vendor.example/", explicit, None, None, None)["proxies"] == explicit
