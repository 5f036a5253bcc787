"""A requests session wrapper every connector uses for every call.

It puts a timeout on each call, authenticates it, waits on the fleet's rate limiter,
retries transient failures with exponential backoff and full jitter (or exactly the
vendor's Retry-After when it sends one), refreshes a refused token once, and turns every
failure into one class of the error taxonomy with the vendor's own message.
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable, Mapping

import backoff
import requests
from pydantic import BaseModel, ConfigDict, Field

from mlconnector import metrics
from mlconnector.http.auth import Auth
from mlconnector.http.errors import (
    AuthError,
    ConnectorError,
    RetriableError,
    classify_response,
)
from mlconnector.http.ratelimit import Limits, QuotaHeaders, RateLimiter

DEFAULT_TIMEOUT = (5.0, 60.0)  # (connect, read) seconds; no call may hang a worker forever
MAX_ERROR_TEXT = 2000  # keep vendor error bodies readable in audit rows

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
NOT_ACTED_ON_STATUSES = frozenset({429, 503})

ErrorExtractor = Callable[[requests.Response], tuple[str, Any]]


@dataclass(frozen=True)
class RetryPolicy:
    """In-process retries for one call; past these the task's own retry takes over."""

    max_tries: int = 5
    max_time: float = 60.0
    base: float = 0.5
    factor: float = 2.0
    max_wait: float = 30.0


class RetrySettings(BaseModel):
    """A deployment's in-call retry tuning, validated at the config edge; `policy()` builds the RetryPolicy."""

    model_config = ConfigDict(extra="forbid")

    max_tries: int = Field(
        5, ge=1,
        description="Attempts per call, the first included, before a transient failure is handed to the task's own "
                    "retry.",
    )
    max_time: float = Field(
        60.0, gt=0,
        description="Seconds after which one call stops retrying, however many attempts remain.",
    )
    base: float = Field(
        0.5, ge=0,
        description="Seconds: the ceiling of the first backoff wait (waits are random up to base * factor^attempt).",
    )
    factor: float = Field(2.0, ge=1, description="Multiplier applied to the backoff ceiling after each attempt.")
    max_wait: float = Field(
        30.0, ge=0,
        description="Longest single wait in seconds, also capping a vendor's Retry-After.",
    )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_tries, self.max_time, self.base, self.factor, self.max_wait)


def _wait_expo_or_retry_after(
    base: float, factor: float, max_wait: float
) -> Generator[float, Any, None]:
    """Full-jitter exponential waits, replaced by the vendor's Retry-After when given."""
    attempt = 0
    error = yield  # primed by backoff
    while True:
        hint = getattr(error, "retry_after", None)
        if hint is not None:
            wait = min(float(hint), max_wait)
        else:
            wait = random.uniform(0, min(max_wait, base * factor**attempt))
        attempt += 1
        error = yield wait


def default_error_text(response: requests.Response) -> tuple[str, Any]:
    """Fallback extractor: the body text, or its JSON `message`/`error` if it has one."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:MAX_ERROR_TEXT], None
    if isinstance(body, dict):
        for key in ("message", "error_description", "error", "title", "detail"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value, body
    return str(body)[:MAX_ERROR_TEXT], body


class HttpClient:
    def __init__(
        self,
        *,
        vendor: str,
        base_url: str,
        auth: Auth,
        session: requests.Session,
        rate_limiter: RateLimiter | None = None,
        rate_limit: Limits | None = None,
        rate_key: str = "",
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        default_headers: Mapping[str, str] | None = None,
        error_extractor: ErrorExtractor = default_error_text,
        json_default: Callable[[Any], Any] | None = None,
        quota_headers: QuotaHeaders | None = None,
    ) -> None:
        self.vendor = vendor
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.session = session
        self.rate_limiter = rate_limiter
        self.rate_limit = rate_limit
        self.rate_key = rate_key or vendor
        self.timeout = timeout
        self.retry = retry
        self.default_headers = dict(default_headers or {})
        self.error_extractor = error_extractor
        # How a JSON body spells what json cannot (a vendor's Decimals and dates); encoding
        # with it beats walking every body to convert it first.
        self.json_default = json_default
        # Where the vendor reports its window's remaining calls: at zero the whole fleet pauses.
        self.quota_headers = quota_headers
        self.calls = 0  # outbound attempts made by this client, for API-economy accounting

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        if not path:
            return self.base_url
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        endpoint: str | None = None,
        ok_statuses: Iterable[int] | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """One logical call: retried on transient errors, refreshed once on 401.

        A non-idempotent call (POST and PATCH unless told otherwise) is retried here only
        when the vendor cannot have acted on it (connection refused, 429, 503); any other
        transient failure surfaces at once, so the engine looks the record up before it
        sends the write again.
        """
        label = endpoint or path.split("?")[0]
        accepted = set(ok_statuses) if ok_statuses is not None else None
        safe_to_repeat = idempotent if idempotent is not None else method.upper() in IDEMPOTENT_METHODS

        def giveup(error: Exception) -> bool:
            return not safe_to_repeat and not getattr(error, "not_acted_on", False)

        def on_backoff(details: dict[str, Any]) -> None:
            metrics.HTTP_RETRIES.labels(vendor=self.vendor).inc()

        @backoff.on_exception(
            _wait_expo_or_retry_after,
            RetriableError,
            max_tries=self.retry.max_tries,
            max_time=self.retry.max_time,
            jitter=None,
            on_backoff=on_backoff,
            giveup=giveup,
            # Giving up here hands the error to the caller, which decides (a record is retried
            # later and audited, a poll fails with its reason): not an error of its own.
            giveup_log_level=logging.INFO,
            base=self.retry.base,
            factor=self.retry.factor,
            max_wait=self.retry.max_wait,
        )
        def attempt_with_refresh() -> requests.Response:
            try:
                return self._attempt(method, path, params, json, data, headers, label, accepted)
            except AuthError as error:
                sent = getattr(error, "sent_headers", None)
                # Only the API refusing a token is worth a refresh; a refused token request is final.
                if sent is None or not self.auth.refresh(self.session, sent):
                    raise
                return self._attempt(method, path, params, json, data, headers, label, accepted)

        return attempt_with_refresh()

    def get_json(self, path: str, **kwargs: Any) -> Any:
        response = self.request("GET", path, **kwargs)
        return response.json() if response.content else None

    def send_json(self, method: str, path: str, body: Any, **kwargs: Any) -> Any:
        response = self.request(method, path, json=body, **kwargs)
        return response.json() if response.content else None

    def _note_quota(self, response: requests.Response) -> None:
        """What the vendor said of its window, shared with the fleet: a window reported spent
        (remaining 0) or a 429's Retry-After pauses every worker's calls on this key."""
        if self.rate_limiter is None:
            return
        pause = self.quota_headers.pause_seconds(response.headers) if self.quota_headers else 0.0
        if response.status_code == 429:
            hint = str(response.headers.get("Retry-After", "")).strip()
            if hint.replace(".", "", 1).isdigit():
                pause = max(pause, float(hint))
        if pause > 0:
            self.rate_limiter.pause(self.rate_key, pause)

    def _attempt(
        self,
        method: str,
        path: str,
        params: Any,
        json_body: Any,
        data: Any,
        headers: Mapping[str, str] | None,
        label: str,
        accepted: set[int] | None,
    ) -> requests.Response:
        sent_headers = {**self.default_headers, **self.auth.headers(self.session), **(headers or {})}
        if json_body is not None and self.json_default is not None:
            data = json.dumps(json_body, default=self.json_default, allow_nan=False).encode()
            json_body = None
            sent_headers.setdefault("Content-Type", "application/json")
        # The slot is taken after any token fetch, right before the call it stands for.
        if self.rate_limiter is not None and self.rate_limit is not None:
            self.rate_limiter.acquire(self.rate_key, self.rate_limit, vendor=self.vendor)
        started = time.perf_counter()
        self.calls += 1
        try:
            response = self.session.request(
                method,
                self.url(path),
                params=params,
                json=json_body,
                data=data,
                headers=sent_headers,
                timeout=self.timeout,
            )
        except (requests.Timeout, requests.ConnectionError) as exc:
            metrics.HTTP_REQUESTS.labels(vendor=self.vendor, endpoint=label, status="network").inc()
            network_error = RetriableError(
                f"{type(exc).__name__} calling {self.vendor} {label}",  # no URL: query strings may carry secrets
                vendor=self.vendor,
                endpoint=label,
            )
            network_error.not_acted_on = isinstance(exc, requests.ConnectTimeout) or (  # type: ignore[attr-defined]
                isinstance(exc, requests.ConnectionError) and not isinstance(exc, requests.ReadTimeout)
                and "Connection refused" in str(exc)
            )
            raise network_error from None
        finally:
            metrics.HTTP_LATENCY.labels(vendor=self.vendor, endpoint=label).observe(
                time.perf_counter() - started
            )
        metrics.HTTP_REQUESTS.labels(
            vendor=self.vendor, endpoint=label, status=str(response.status_code)
        ).inc()
        self._note_quota(response)
        if (accepted is not None and response.status_code in accepted) or (
            accepted is None and 200 <= response.status_code < 300
        ):
            return response
        message, details = self.error_extractor(response)
        error: ConnectorError = classify_response(
            response.status_code,
            message or response.reason or "",
            vendor=self.vendor,
            endpoint=label,
            retry_after=response.headers.get("Retry-After"),
            details=details,
        )
        if isinstance(error, AuthError):
            # Only the refused credential travels with the error (for the refresh), no other header.
            error.sent_headers = {"Authorization": sent_headers.get("Authorization", "")}  # type: ignore[attr-defined]
        if isinstance(error, RetriableError):
            # 429 and 503 mean the vendor turned the call away without acting on it.
            error.not_acted_on = response.status_code in NOT_ACTED_ON_STATUSES  # type: ignore[attr-defined]
        raise error
