"""Procore's two rate windows as the connector paces for them: the hourly and the spike
window both given to the shared limiter, the X-Rate-Limit-* headers read, Retry-After honoured."""

from __future__ import annotations

import time
from typing import Any

import responses

from connectors.procore import ProcoreConnector
from mlconnector.http.runtime import build_runtime

API = "https://api.procore.test"
TOKEN_URL = "https://login.procore.test/oauth/token"


def connector(**config: Any) -> ProcoreConnector:
    settings = {"api_base": API, "token_url": TOKEN_URL, "company_id": 42, "project_ids": [7],
                "retry": {"base": 0.01, "max_wait": 3}, **config}
    return ProcoreConnector.create(settings, {"client_id": "app", "client_secret": "secret"}, build_runtime(""))


def _token(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, json={"access_token": "tok", "token_type": "bearer", "expires_in": 5400,
                                              "created_at": int(time.time())})


def test_both_windows_are_handed_to_the_shared_limiter() -> None:
    made = connector(rate_limit_per_hour=3600, spike_limit=25)
    windows = {(w.requests, w.per_seconds) for w in made.client.rate_limit}
    assert windows == {(3600, 3600), (25, 10.0)}
    assert connector(spike_limit=0, rate_limit_per_hour=None).client.rate_limit is None


@responses.activate
def test_calls_past_the_spike_window_wait_for_it() -> None:
    _token(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/companies", json=[{"id": 42}])
    made = connector(spike_limit=3, spike_window_seconds=0.5, spike_margin=0)
    started = time.monotonic()
    for _ in range(6):
        made.client.get_json("/rest/v1.0/companies")
    assert time.monotonic() - started >= 0.5  # the fourth call waited for the window


@responses.activate
def test_a_spent_window_reported_in_the_headers_pauses_the_next_call() -> None:
    _token(responses.mock)
    reset = int(time.time()) + 2
    responses.add(responses.GET, f"{API}/rest/v1.0/companies", json=[{"id": 42}],
                  headers={"X-Rate-Limit-Limit": "25", "X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": str(reset)})
    responses.add(responses.GET, f"{API}/rest/v1.0/companies", json=[{"id": 42}])
    made = connector()
    made.client.get_json("/rest/v1.0/companies")
    made.client.get_json("/rest/v1.0/companies")
    assert time.time() >= reset - 0.05  # the second call went only once the window had reset


@responses.activate
def test_a_429_is_retried_after_its_retry_after() -> None:
    _token(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/companies", status=429, body="slow down", headers={"Retry-After": "1"})
    responses.add(responses.GET, f"{API}/rest/v1.0/companies", json=[{"id": 42}])
    made = connector()
    started = time.monotonic()
    assert made.client.get_json("/rest/v1.0/companies") == [{"id": 42}]
    assert time.monotonic() - started >= 0.95
