"""Procore connector: exact request shapes (responses) and contracts against the sandbox."""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers

from connectors import connector_class
from connectors.procore import (
    ProcoreConnector,
    ProcoreCostCode,
    ProcoreDirectCost,
    ProcorePurchaseOrderContract,
    ProcoreVendor,
    _retry_after_from_reset,
)
from mlconnector.http import AuthError, FatalError, RetriableError
from mlconnector.http.runtime import build_runtime
from sandboxes.base import RunningSandbox, SandboxOptions, start_sandbox
from sandboxes.procore import ProcoreSandbox

FAST_RETRY = {"base": 0.05, "max_wait": 2, "max_time": 10}
API = "https://api.procore.test"
TOKEN_URL = "https://login.procore.test/oauth/token"
COMPANY, PROJECT = 4264807, 562949953425123
SECRET = "s3cr3t-client-secret-value"


def unit_connector(**overrides: Any) -> ProcoreConnector:
    config = {"api_base": API, "token_url": TOKEN_URL, "company_id": COMPANY, "project_ids": [PROJECT],
              "retry": FAST_RETRY, "rate_limit_per_hour": None, "conflict_wait_seconds": 0.01}
    credentials = {"client_id": "app-1", "client_secret": SECRET}
    for key, value in overrides.items():
        (credentials if key in ("refresh_token", "client_secret") else config)[key] = value
    return ProcoreConnector.create(config, credentials, build_runtime(""))


def token_ok(rsps: responses.RequestsMock, access: str = "tok-1", refresh: str | None = None) -> None:
    body = {"access_token": access, "token_type": "bearer", "expires_in": 5400, "created_at": int(time.time())}
    if refresh:
        body["refresh_token"] = refresh
    rsps.add(responses.POST, TOKEN_URL, json=body)


def form(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(call.request.body).items()}


def query(call: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(call.request.url).query)


def vendor(vid: int, stamp: str = "2025-05-10T10:00:00Z", **extra: Any) -> dict[str, Any]:
    return {"id": vid, "name": f"Vendor {vid}", "origin_id": None, "created_at": "2025-01-01T00:00:00Z",
            "updated_at": stamp, **extra}


# ---- request shapes (responses) ----------------------------------------------------------------


@responses.activate
def test_token_and_change_window_request_shapes() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/vendors", json=[], headers={"Total": "0", "Per-Page": "100"})
    since = datetime(2025, 5, 1, 0, 0, 0, 700000, tzinfo=timezone.utc)
    until = datetime(2025, 5, 15, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert list(unit_connector().iter_changed("vendors", since, until)) == []
    token_call, list_call = responses.calls
    assert form(token_call) == {"grant_type": "client_credentials", "client_id": "app-1", "client_secret": SECRET}
    headers = list_call.request.headers
    assert headers["Authorization"] == "Bearer tok-1"
    assert headers["Procore-Company-Id"] == str(COMPANY)
    assert query(list_call) == {
        "company_id": [str(COMPANY)], "page": ["1"], "per_page": ["100"],
        # since floored to the second; the range runs a day past until so pages never shift
        "filters[updated_at]": ["2025-05-01T00:00:00Z...2025-05-16T12:00:00Z"],
    }


@responses.activate
def test_pages_are_followed_by_link_and_until_is_exclusive() -> None:
    token_ok(responses.mock)
    url = f"{API}/rest/v1.0/vendors"
    link = '<{u}?page=2&per_page=2>; rel="next", <{u}?page=3&per_page=2>; rel="last"'.format(u=url)
    responses.add(responses.GET, url, json=[vendor(1), vendor(2, "2025-05-01T00:00:00Z")],
                  headers={"Total": "5", "Per-Page": "2", "Link": link},
                  match=[matchers.query_param_matcher({"company_id": str(COMPANY), "page": "1", "per_page": "2"},
                                                       strict_match=False)])
    responses.add(responses.GET, url, json=[vendor(3, "2025-05-15T12:00:00Z"), vendor(4, "2025-04-30T23:59:59Z")],
                  headers={"Total": "5", "Per-Page": "2", "Link": link.replace("?page=2", "?page=3")},
                  match=[matchers.query_param_matcher({"company_id": str(COMPANY), "page": "2", "per_page": "2"},
                                                       strict_match=False)])
    responses.add(responses.GET, url, json=[vendor(5, "2025-05-15T11:59:59Z")],
                  headers={"Total": "5", "Per-Page": "2", "Link": f'<{url}?page=1&per_page=2>; rel="first"'},
                  match=[matchers.query_param_matcher({"company_id": str(COMPANY), "page": "3", "per_page": "2"},
                                                       strict_match=False)])
    connector = unit_connector(page_size=2)
    since = datetime(2025, 5, 1, tzinfo=timezone.utc)
    until = datetime(2025, 5, 15, 12, 0, 0, tzinfo=timezone.utc)
    records = list(connector.iter_changed("vendors", None, until))
    assert [r.id for r in records] == [1, 2, 4, 5]  # 3 is stamped at until: the next poll takes it
    assert all(isinstance(r, ProcoreVendor) for r in records)
    responses.calls.reset()
    with_since = [r.id for r in connector.iter_changed("vendors", since, until)]
    assert with_since == [1, 2, 5]  # 4 predates since
    assert connector.call_count == 7  # one token + three pages, twice


@responses.activate
def test_a_record_stamped_in_the_watermark_second_is_read_again() -> None:
    # Procore stamps whole seconds: a change at 10:00:00.9 shows as 10:00:00, after a poll
    # that ended at 10:00:00.7. The next poll (since=10:00:00.7) must still take it.
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/vendors", json=[vendor(1, "2025-05-10T10:00:00Z"),
                                                                   vendor(2, "2025-05-10T09:59:59Z")])
    since = datetime(2025, 5, 10, 10, 0, 0, 700000, tzinfo=timezone.utc)
    records = list(unit_connector().iter_changed("vendors", since, since + timedelta(minutes=5)))
    assert [r.id for r in records] == [1]


@responses.activate
def test_project_entities_use_their_scope_and_fixed_params() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/purchase_order_contracts", json=[], headers={"Total": "0"})
    responses.add(responses.GET, f"{API}/rest/v1.0/projects/{PROJECT}/direct_costs", json=[], headers={"Total": "0"})
    responses.add(responses.GET, f"{API}/rest/v1.0/cost_codes", json=[
        {"id": 1, "name": "Old", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"},
        {"id": 2, "name": "New", "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-05-02T00:00:00Z"},
    ], headers={"Total": "2"})
    connector = unit_connector()
    since, until = datetime(2025, 5, 1, tzinfo=timezone.utc), datetime(2025, 6, 1, tzinfo=timezone.utc)
    list(connector.iter_changed("purchase_order_contracts", since, until))
    list(connector.iter_changed("direct_costs", since, until))
    codes = list(connector.iter_changed("cost_codes", since, until))
    _, pos, dcs, cost_codes = responses.calls
    assert query(pos)["project_id"] == [str(PROJECT)] and query(pos)["view"] == ["extended"]
    assert query(pos)["filters[include_deleted]"] == ["with"]
    assert "project_id" not in query(dcs) and "filters[updated_at]" in query(dcs)
    assert "filters[updated_at]" not in query(cost_codes)  # no such filter on cost codes: done here
    assert [(c.id, c.project_id) for c in codes] == [(2, PROJECT)]


@responses.activate
def test_refresh_token_grant_stores_each_rotated_token() -> None:
    responses.add(responses.POST, TOKEN_URL, json={"access_token": "a-1", "refresh_token": "r-2", "expires_in": 5400},
                  match=[matchers.urlencoded_params_matcher({
                      "grant_type": "refresh_token", "refresh_token": "r-1", "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
                      "client_id": "app-1", "client_secret": SECRET})])
    responses.add(responses.POST, TOKEN_URL, json={"access_token": "a-2", "refresh_token": "r-3", "expires_in": 5400},
                  match=[matchers.urlencoded_params_matcher({
                      "grant_type": "refresh_token", "refresh_token": "r-2", "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
                      "client_id": "app-1", "client_secret": SECRET})])
    responses.add(responses.GET, f"{API}/rest/v1.0/me", json={"error": "The access token is invalid"}, status=401)
    responses.add(responses.GET, f"{API}/rest/v1.0/me", json={"id": 1})
    connector = unit_connector(refresh_token="r-1")
    assert connector.client.get_json("/rest/v1.0/me") == {"id": 1}
    assert [c.request.headers.get("Authorization") for c in responses.calls if "/me" in c.request.url] == [
        "Bearer a-1", "Bearer a-2"]
    cached = connector.runtime.token_cache.peek(connector.provider)
    assert cached is not None and cached.refresh_token == "r-3"


@responses.activate
def test_a_refused_refresh_token_falls_back_to_client_credentials() -> None:
    responses.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "The refresh token is invalid"})
    token_ok(responses.mock, "cc-1")
    responses.add(responses.GET, f"{API}/rest/v1.0/me", json={"id": 1})
    connector = unit_connector(refresh_token="used-already")
    connector.client.get_json("/rest/v1.0/me")
    assert [form(c)["grant_type"] for c in responses.calls[:2]] == ["refresh_token", "client_credentials"]
    assert responses.calls[2].request.headers["Authorization"] == "Bearer cc-1"


@responses.activate
def test_refused_refresh_without_fallback_is_an_error() -> None:
    responses.add(responses.POST, TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "The refresh token is invalid"})
    connector = unit_connector(refresh_token="used-already", client_credentials_fallback=False)
    with pytest.raises(AuthError, match="token request refused: The refresh token is invalid"):
        connector.client.get_json("/rest/v1.0/me")


@responses.activate
def test_vendor_create_request_shape() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/vendors", json=[], headers={"Total": "0"},
                  match=[matchers.query_param_matcher({"company_id": str(COMPANY), "filters[origin_id]": "V1",
                                                       "page": "1", "per_page": "100"})])
    responses.add(responses.POST, f"{API}/rest/v1.0/vendors", status=201, json=vendor(77, origin_id="V1"),
                  match=[matchers.json_params_matcher({"company_id": COMPANY, "vendor": {"name": "Acme", "origin_id": "V1"}})])
    result = unit_connector().upsert_vendor({"name": "Acme"}, "V1")
    assert (result.action, result.record.id) == ("created", 77)
    post = responses.calls[2].request
    assert re.fullmatch(r"[0-9a-f]{32}", post.headers["Idempotency-Token"])
    assert post.headers["Content-Type"] == "application/json"


@responses.activate
def test_vendor_update_request_shape() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/vendors", json=[vendor(77, origin_id="V1")], headers={"Total": "1"})
    responses.add(responses.PATCH, f"{API}/rest/v1.0/vendors/77", json=vendor(77, origin_id="V1", city="Omaha"),
                  match=[matchers.json_params_matcher({"company_id": COMPANY, "vendor": {"city": "Omaha", "origin_id": "V1"}})])
    result = unit_connector().upsert_vendor({"city": "Omaha"}, "V1")
    assert (result.action, result.matched_by, result.record.city) == ("updated", "origin_id", "Omaha")


@responses.activate
def test_purchase_order_upsert_request_shapes() -> None:
    token_ok(responses.mock)
    url = f"{API}/rest/v1.0/purchase_order_contracts"
    existing = {"id": 31, "number": "po-7 ", "vendor": {"id": 9, "company": "Acme"}, "created_at": "2025-01-01T00:00:00Z",
                "updated_at": "2025-01-01T00:00:00Z", "line_items": [{"id": 500, "amount": "5.0", "total_amount": "5.0"}]}
    responses.add(responses.GET, url, json=[], headers={"Total": "0"},
                  match=[matchers.query_param_matcher({"project_id": str(PROJECT), "view": "extended",
                                                       "filters[include_deleted]": "with", "filters[origin_id]": "EPO-7",
                                                       "page": "1", "per_page": "100"})])
    responses.add(responses.GET, url, json=[{**existing, "id": 30, "vendor": {"id": 8}}, existing], headers={"Total": "2"},
                  match=[matchers.query_param_matcher({"project_id": str(PROJECT), "page": "1", "per_page": "1000"})])
    responses.add(responses.PATCH, f"{url}/31", json=existing,
                  match=[matchers.query_param_matcher({"project_id": str(PROJECT)}),
                         matchers.json_params_matcher({"project_id": PROJECT, "purchase_order_contract": {
                             "number": "PO-7", "vendor_id": 9, "title": "Steel", "origin_id": "EPO-7"}})])
    responses.add(responses.PATCH, f"{url}/31/line_items/sync", json={"entities": [
        {"id": 600, "amount": "12.0", "total_amount": "12.0", "origin_id": "EPO-7:1"}], "errors": []},
                  match=[matchers.query_param_matcher({"project_id": str(PROJECT)}),  # a query parameter (Round 2)
                         matchers.json_params_matcher({"updates": [
                      {"description": "Beam", "quantity": 3, "unit_cost": "4", "cost_code_id": 11, "origin_id": "EPO-7:1"}]})])
    result = unit_connector().upsert_purchase_order_contract(
        PROJECT, {"number": "PO-7", "vendor_id": 9, "title": "Steel"},
        [{"description": "Beam", "quantity": 3, "unit_cost": "4", "cost_code_id": 11}], "EPO-7")
    assert (result.action, result.matched_by, result.record.id) == ("updated", "vendor+number", 31)
    assert sorted(line.id for line in result.record.line_items) == [500, 600]
    assert result.record.grand_total == Decimal("17.0") and result.record.project_id == PROJECT


@responses.activate
def test_direct_cost_create_request_shapes() -> None:
    token_ok(responses.mock)
    base = f"{API}/rest/v1.0/projects/{PROJECT}/direct_costs"
    responses.add(responses.GET, base, json=[], headers={"Total": "0"},
                  # (Round 2) no filters[include_deleted]: it is documented for PO contracts only
                  match=[matchers.query_param_matcher({"filters[origin_id]": "AP-9", "page": "1", "per_page": "100"})])
    responses.add(responses.GET, base, json=[{"id": 2, "vendor_id": 4, "invoice_number": "INV-9",
                                              "created_at": "2025-01-01T00:00:00Z", "updated_at": "2025-01-01T00:00:00Z"}],
                  match=[matchers.query_param_matcher({"filters[invoice_number]": "INV-9", "page": "1", "per_page": "100"})])
    responses.add(responses.POST, base, status=201, json={"id": 70, "created_at": "2025-05-14T09:12:44Z",
                                                          "updated_at": "2025-05-14T09:12:44Z", "grand_total": "0.0"},
                  match=[matchers.json_params_matcher({"item": {"direct_cost_type": "invoice", "invoice_number": "INV-9",
                                                                "vendor_id": 3, "origin_id": "AP-9"}})])
    responses.add(responses.GET, f"{API}/rest/v1.0/line_item_types", json=[{"id": 41, "code": "L"}, {"id": 42, "code": "M"}],
                  match=[matchers.query_param_matcher({"company_id": str(COMPANY), "page": "1", "per_page": "100"})])
    responses.add(responses.PATCH, f"{base}/line_items/sync", json={"entities": [
        {"id": 800, "amount": "10.5", "total_amount": "10.5"}], "errors": []},
                  match=[matchers.json_params_matcher({"updates": [
                      {"amount": "10.5", "cost_code_id": 11, "direct_cost_id": 70, "origin_id": "AP-9:1", "line_item_type_id": 42},
                      {"amount": 1, "cost_code_id": 11, "line_item_type_id": 41, "origin_id": "L-2", "direct_cost_id": 70}]})])
    result = unit_connector().create_or_update_direct_cost(
        PROJECT, {"direct_cost_type": "invoice", "invoice_number": "INV-9", "vendor_id": 3},
        [{"amount": "10.5", "cost_code_id": 11}, {"amount": 1, "cost_code_id": 11, "line_item_type_id": 41, "origin_id": "L-2"}],
        "AP-9")
    assert (result.action, result.record.id, result.record.grand_total) == ("created", 70, Decimal("10.5"))
    assert isinstance(result.record, ProcoreDirectCost)


@responses.activate
def test_direct_cost_update_never_sends_the_type() -> None:
    token_ok(responses.mock)
    base = f"{API}/rest/v1.0/projects/{PROJECT}/direct_costs"
    found = {"id": 70, "created_at": "2025-05-14T09:12:44Z", "updated_at": "2025-05-14T09:12:44Z", "origin_id": "AP-9"}
    responses.add(responses.GET, base, json=[found], headers={"Total": "1"})
    responses.add(responses.PATCH, f"{base}/70", json=found,
                  match=[matchers.json_params_matcher({"item": {"status": "approved", "origin_id": "AP-9"}})])
    result = unit_connector().create_or_update_direct_cost(
        PROJECT, {"direct_cost_type": "invoice", "status": "approved"}, [], "AP-9")
    assert (result.action, result.matched_by) == ("updated", "origin_id")
    assert len(responses.calls) == 3  # no line call when there are no lines


@responses.activate
def test_sync_vendors_sends_at_most_1000_per_call() -> None:
    token_ok(responses.mock)
    sizes: list[int] = []

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body)
        sizes.append(len(body["updates"]))
        assert body["company_id"] == COMPANY
        entities = [vendor(i) for i, item in enumerate(body["updates"]) if item["name"] != "bad"]
        errors = [{**item, "errors": {"name": ["is invalid"]}} for item in body["updates"] if item["name"] == "bad"]
        return 200, {}, json.dumps({"entities": entities, "errors": errors})

    responses.add_callback(responses.PATCH, f"{API}/rest/v1.0/vendors/sync", callback=answer)
    batch = [{"origin_id": f"V{i}", "name": "bad" if i == 2400 else f"N{i}"} for i in range(2500)]
    result = unit_connector().sync_vendors(batch)
    assert sizes == [1000, 1000, 500]
    assert len(result.entities) == 2499 and not result.ok
    assert result.errors[0].message == "name is invalid" and result.errors[0].model_extra["origin_id"] == "V2400"


@responses.activate
def test_field_errors_are_fatal_with_procore_words() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/vendors", json=[], headers={"Total": "0"})
    responses.add(responses.POST, f"{API}/rest/v1.0/vendors", status=422,
                  json={"errors": {"name": ["can't be blank"], "country_code": ["is invalid"]}})
    with pytest.raises(FatalError) as caught:
        unit_connector().upsert_vendor({"name": ""}, "V1")
    assert caught.value.status == 422
    assert caught.value.message == "name can't be blank; country_code is invalid"


@responses.activate
def test_429_waits_until_the_reported_reset() -> None:
    token_ok(responses.mock)
    responses.add(responses.GET, f"{API}/rest/v1.0/me", status=429, body="You have surpassed the max number of requests",
                  headers={"X-Rate-Limit-Limit": "3600", "X-Rate-Limit-Remaining": "0",
                           "X-Rate-Limit-Reset": str(int(time.time()) + 1)})
    responses.add(responses.GET, f"{API}/rest/v1.0/me", json={"id": 1})
    started = time.monotonic()
    assert unit_connector().client.get_json("/rest/v1.0/me") == {"id": 1}
    assert time.monotonic() - started >= 0.9


def test_reset_header_becomes_retry_after_only_when_missing() -> None:
    def response(status: int, headers: dict[str, str]) -> requests.Response:
        made = requests.Response()
        made.status_code = status
        made.headers.update(headers)
        return made

    soon = response(429, {"X-Rate-Limit-Reset": str(int(time.time()) + 30)})
    assert 29 <= int(_retry_after_from_reset(soon).headers["Retry-After"]) <= 31
    given = response(429, {"X-Rate-Limit-Reset": str(int(time.time()) + 30), "Retry-After": "2"})
    assert _retry_after_from_reset(given).headers["Retry-After"] == "2"
    ok = response(200, {"X-Rate-Limit-Reset": str(int(time.time()) + 30)})
    assert "Retry-After" not in _retry_after_from_reset(ok).headers


@responses.activate
def test_409_on_direct_cost_lines_retries_then_hands_back_a_retriable_error() -> None:
    token_ok(responses.mock)
    base = f"{API}/rest/v1.0/projects/{PROJECT}/direct_costs"
    found = {"id": 70, "created_at": "2025-05-14T09:12:44Z", "updated_at": "2025-05-14T09:12:44Z", "origin_id": "AP-9"}
    responses.add(responses.GET, base, json=[found], headers={"Total": "1"})
    responses.add(responses.PATCH, f"{base}/70", json=found)
    responses.add(responses.PATCH, f"{base}/line_items/sync", status=409, json={"error": "Direct Cost is being updated"})
    with pytest.raises(RetriableError) as caught:
        unit_connector().create_or_update_direct_cost(PROJECT, {}, [{"amount": 1, "line_item_type_id": 1}], "AP-9")
    assert caught.value.status == 409 and "being updated" in caught.value.message
    assert sum(1 for c in responses.calls if c.request.url.endswith("line_items/sync")) == 3


@responses.activate
def test_secrets_echoed_by_the_vendor_never_reach_a_message() -> None:
    responses.add(responses.POST, TOKEN_URL, status=401, json={
        "error": "invalid_client", "error_description": f"unknown client app-1 with secret {SECRET}"})
    with pytest.raises(AuthError) as caught:
        unit_connector().client.get_json("/rest/v1.0/me")
    text = json.dumps(caught.value.to_dict()) + str(caught.value)
    assert SECRET not in text and "invalid_client" in text
    responses.reset()
    token_ok(responses.mock, "tok-abcdef")
    responses.add(responses.GET, f"{API}/rest/v1.0/me", status=400, json={"error": "bad token tok-abcdef for app"})
    with pytest.raises(FatalError) as second:
        unit_connector().client.get_json("/rest/v1.0/me")
    assert "tok-abcdef" not in str(second.value) and "tok-abcdef" not in json.dumps(second.value.to_dict())


def test_config_validation_and_registry() -> None:
    assert connector_class("procore") is ProcoreConnector
    with pytest.raises(Exception):
        ProcoreConnector.create({"company_id": 1, "page_size": 20_000}, {"client_id": "a", "client_secret": "b"}, build_runtime(""))
    with pytest.raises(Exception):
        ProcoreConnector.create({"company_id": 1, "sync_batch_size": 1001}, {"client_id": "a", "client_secret": "b"}, build_runtime(""))
    connector = unit_connector()
    assert SECRET not in repr(connector.__dict__)  # the secret stays a SecretStr
    with pytest.raises(ValueError, match="no entity"):
        list(connector.iter_changed("invoices", None, datetime.now(timezone.utc)))
    with pytest.raises(ValueError, match="origin_id"):
        connector.upsert_vendor({"name": "x", "origin_id": "A"}, "B")


# ---- contracts against the sandbox --------------------------------------------------------------


def sandbox_connector(running: RunningSandbox, **overrides: Any) -> ProcoreConnector:
    config, credentials = ProcoreConnector.settings_from_sandbox_info(running.info())
    config = {**config, "retry": FAST_RETRY, "conflict_wait_seconds": 0.05, **overrides}
    for key in ("refresh_token", "client_secret"):
        if key in config:
            credentials[key] = config.pop(key)
    return ProcoreConnector.create(config, credentials, build_runtime(""))


def control(running: RunningSandbox, method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, f"{running.url}/_sandbox/{path}", json=body)
    response.raise_for_status()
    return response.json()


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture(scope="module")
def big() -> Iterator[RunningSandbox]:
    # Thousands of records: an app on a plan without a spike window (the windows' own tests
    # are in test_procore_pacing.py and the fleet tests), so paging is measured, not pacing.
    with start_sandbox(ProcoreSandbox(SandboxOptions(seed=3, records=2500), spike_limit=None)) as run:
        yield run


@pytest.fixture(scope="module")
def small_server() -> Iterator[RunningSandbox]:
    with start_sandbox(ProcoreSandbox(SandboxOptions(seed=4, records=40))) as run:
        yield run


@pytest.fixture()
def small(small_server: RunningSandbox) -> RunningSandbox:
    control(small_server, "POST", "reset")
    return small_server


def live_active_projects(running: RunningSandbox) -> set[int]:
    return {p["id"] for p in control(running, "GET", "entities/projects") if p["active"]}


def test_full_pagination_of_thousands_of_records(big: RunningSandbox) -> None:
    control(big, "POST", "stats/reset")
    connector = sandbox_connector(big, spike_limit=0)
    vendors = list(connector.iter_changed("vendors", None, now()))
    expected = {v["id"] for v in control(big, "GET", "entities/vendors") if v["is_active"]}
    assert len(expected) > 2000
    assert [v.id for v in vendors] == sorted(expected)
    assert connector.call_count == 1 + math.ceil(len(expected) / 100)
    projects = live_active_projects(big)
    pos = list(connector.iter_changed("purchase_order_contracts", None, now()))
    stored = [p for p in control(big, "GET", "entities/purchase_order_contracts") if p["project_id"] in projects]
    assert sorted(p.id for p in pos) == sorted(p["id"] for p in stored)
    assert all(isinstance(p, ProcorePurchaseOrderContract) and p.line_items for p in pos[:50])
    assert sum(p.grand_total for p in pos) == sum(Decimal(p["grand_total"]) for p in stored)


def test_a_token_expiring_mid_pagination_is_refreshed_once(big: RunningSandbox) -> None:
    connector = sandbox_connector(big, spike_limit=0)
    control(big, "POST", "stats/reset")
    seen: list[int] = []
    for record in connector.iter_changed("vendors", None, now()):
        seen.append(record.id)
        if len(seen) == 150:
            control(big, "POST", "expire-tokens")
    assert len(seen) == len(set(seen)) == sum(1 for v in control(big, "GET", "entities/vendors") if v["is_active"])
    stats = control(big, "GET", "stats")
    assert stats["tokens_issued"] == 2
    assert stats["by_endpoint"]["GET /rest/v1.0/vendors"]["401"] == 1


def test_pages_do_not_shift_when_records_change_during_a_poll(small: RunningSandbox) -> None:
    connector = sandbox_connector(small, page_size=5)
    until = now() - timedelta(seconds=3)  # records touched below are stamped after the poll's start
    before = {v["id"] for v in control(small, "GET", "entities/vendors") if v["is_active"]}
    touched: list[int] = []
    seen: list[int] = []
    for record in connector.iter_changed("vendors", datetime(2000, 1, 1, tzinfo=timezone.utc), until):
        seen.append(record.id)
        if len(seen) == 5:  # page one read: move two of its records out of the window
            for vid in seen[:2]:
                control(small, "POST", "entities/vendors", {"id": vid, "city": "Elsewhere"})
                touched.append(vid)
    assert set(seen) == before  # nothing skipped; the touched ones were read before they moved
    later = list(connector.iter_changed("vendors", until, now() + timedelta(seconds=1)))
    assert set(touched) <= {v.id for v in later}


def test_watermark_is_inclusive_below_and_capped_at_until(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    start = now()
    changed = control(small, "POST", "tick", {"count": 9})["changed"]
    active = {v["id"] for v in control(small, "GET", "entities/vendors") if v["is_active"]}
    until = now() + timedelta(seconds=1)
    ticked = {c["id"] for c in changed if c["entity"] == "vendors"} & active
    assert {v.id for v in connector.iter_changed("vendors", start, until)} == ticked
    ticked_dcs = {c["id"] for c in changed if c["entity"] == "direct_costs"}
    assert ticked_dcs <= {d.id for d in connector.iter_changed("direct_costs", start, until)} | _in_inactive_projects(small, ticked_dcs)
    stamp = datetime.fromisoformat(changed[0]["updated_at"].replace("Z", "+00:00"))
    assert changed[0]["id"] not in {v.id for v in connector.iter_changed("vendors", start, stamp)}  # < until
    at_since = {v.id for v in connector.iter_changed("vendors", stamp, until)}  # >= since
    assert changed[0]["id"] in at_since or changed[0]["id"] not in active


def _in_inactive_projects(running: RunningSandbox, ids: set[int]) -> set[int]:
    projects = live_active_projects(running)
    return {d["id"] for d in control(running, "GET", "entities/direct_costs") if d["id"] in ids and d["project_id"] not in projects}


def test_429_with_retry_after_is_waited_out(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    connector.list_projects()
    control(small, "POST", "faults", {"burst_429": 1, "retry_after": 1})
    started = time.monotonic()
    assert connector.find_vendor_by_origin_id("nobody", include_inactive=False) is None
    assert time.monotonic() - started >= 1.0
    assert control(small, "GET", "stats")["rate_limited"] == 1


def test_5xx_then_success(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    connector.list_projects()
    calls = connector.call_count
    control(small, "POST", "faults", {"fail_next": 2, "error_status": 502})
    assert len(connector.list_projects()) >= 2
    assert connector.call_count == calls + 3


def test_5xx_past_the_retry_budget_is_retriable(small: RunningSandbox) -> None:
    connector = sandbox_connector(small, retry={**FAST_RETRY, "max_tries": 2})
    connector.list_projects()
    control(small, "POST", "faults", {"fail_next": 5, "error_status": 500})
    with pytest.raises(RetriableError) as caught:
        connector.list_projects()
    assert caught.value.status == 500 and caught.value.message == "Injected fault"


def test_permanent_validation_errors_surface_procore_message(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    with pytest.raises(FatalError) as blank:
        connector.upsert_vendor({"name": ""}, "EPI-BLANK")
    assert blank.value.status == 422 and blank.value.message == "name can't be blank"
    project = connector.project_ids()[0]
    with pytest.raises(FatalError) as status:
        connector.upsert_purchase_order_contract(project, {"status": "Lost"}, [], "EPO-BAD")
    assert status.value.message == "status is not included in the list"
    with pytest.raises(FatalError) as unknown:
        connector.upsert_vendor({"name": "A", "vendor_name": "B"}, "EPI-UNKNOWN")
    assert unknown.value.status == 406 and "vendor_name" in unknown.value.message


def test_vendor_upsert_end_to_end(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    created = connector.upsert_vendor({"name": "Zed Supply", "city": "Austin"}, "EPI-100")
    again = connector.upsert_vendor({"name": "Zed Supply Inc"}, "EPI-100")
    assert (created.action, again.action, again.matched_by) == ("created", "updated", "origin_id")
    assert again.record.id == created.record.id and again.record.name == "Zed Supply Inc"
    stored = [v for v in control(small, "GET", "entities/vendors") if v["origin_id"] == "EPI-100"]
    assert len(stored) == 1 and stored[0]["city"] == "Austin"
    found = connector.find_vendor_by_origin_id("EPI-100")
    assert found is not None and found.id == created.record.id


def test_inactive_vendor_is_updated_not_duplicated(small: RunningSandbox) -> None:
    hidden = control(small, "POST", "entities/vendors", {"name": "Dormant Co", "origin_id": "EPI-200", "is_active": False})
    connector = sandbox_connector(small)
    result = connector.upsert_vendor({"name": "Dormant Company"}, "EPI-200")
    assert (result.action, result.record.id) == ("updated", hidden["id"])
    assert [v["name"] for v in control(small, "GET", "entities/vendors") if v["origin_id"] == "EPI-200"] == ["Dormant Company"]


def test_sync_vendors_end_to_end(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    result = connector.sync_vendors([{"origin_id": "S-1", "name": "One"}, {"origin_id": "S-2", "name": "Two"},
                                     {"id": 1, "name": "Ghost"}])
    assert [v.origin_id for v in result.entities] == ["S-1", "S-2"]
    assert [e.message for e in result.errors] == ["id Entity with this ID not found"]
    renamed = connector.sync_vendors([{"origin_id": "S-1", "name": "Uno"}])
    assert renamed.ok and renamed.entities[0].id == result.entities[0].id


def test_purchase_order_upsert_end_to_end(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    project = connector.project_ids()[0]
    codes = [c for c in connector.list_cost_codes(project) if c.parent is not None]
    vendor_id = connector.upsert_vendor({"name": "PO Vendor"}, "EPI-PO").record.id
    lines = [{"description": "Rebar", "quantity": 10, "unit_cost": "12.5", "cost_code_id": codes[0].id},
             {"description": "Forms", "amount": "300", "cost_code_id": codes[1].id}]
    first = connector.upsert_purchase_order_contract(project, {"number": "E-1001", "vendor_id": vendor_id, "title": "Rebar"}, lines, "EPO-1001")
    lines[0]["quantity"] = 12
    second = connector.upsert_purchase_order_contract(project, {"number": "E-1001", "vendor_id": vendor_id, "title": "Rebar rev"}, lines, "EPO-1001")
    assert (first.action, second.action) == ("created", "updated") and second.record.id == first.record.id
    stored = [p for p in control(small, "GET", "entities/purchase_order_contracts") if p["origin_id"] == "EPO-1001"]
    assert len(stored) == 1 and len(stored[0]["line_items"]) == 2
    assert stored[0]["grand_total"] == "450.0" and stored[0]["title"] == "Rebar rev"
    assert second.record.grand_total == Decimal("450.0")


def test_purchase_order_found_by_vendor_and_number(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    project = connector.project_ids()[0]
    vendor_id = control(small, "GET", "entities/vendors")[0]["id"]
    by_hand = control(small, "POST", "entities/purchase_order_contracts",
                      {"project_id": project, "vendor_id": vendor_id, "number": "HAND-7", "title": "Typed in Procore"})
    found = connector.find_commitment(vendor_id, " hand-7", project)
    assert found is not None and found.id == by_hand["id"] and found.vendor_id == vendor_id
    result = connector.upsert_purchase_order_contract(project, {"number": "HAND-7", "vendor_id": vendor_id}, [], "EPO-HAND-7")
    assert (result.action, result.matched_by, result.record.id) == ("updated", "vendor+number", by_hand["id"])
    assert connector.find_commitment_by_origin_id("EPO-HAND-7", project).id == by_hand["id"]
    assert connector.find_commitment(vendor_id + 1, "HAND-7", project) is None


def test_direct_cost_end_to_end(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    project = connector.project_ids()[0]
    code = [c for c in connector.list_cost_codes(project) if c.parent is not None][0]
    vendor_id = connector.upsert_vendor({"name": "AP Vendor"}, "EPI-AP").record.id
    fields = {"direct_cost_type": "invoice", "invoice_number": "INV-77", "vendor_id": vendor_id, "status": "pending"}
    first = connector.create_or_update_direct_cost(project, fields, [{"amount": "99.95", "cost_code_id": code.id}], "EAP-77")
    second = connector.create_or_update_direct_cost(project, {**fields, "status": "approved"},
                                                    [{"amount": "120.00", "cost_code_id": code.id}], "EAP-77")
    assert (first.action, second.action) == ("created", "updated") and first.record.id == second.record.id
    stored = [d for d in control(small, "GET", "entities/direct_costs") if d["origin_id"] == "EAP-77"]
    assert len(stored) == 1 and stored[0]["status"] == "approved" and stored[0]["grand_total"] == "120.0"
    assert [line["line_item_type"]["code"] for line in stored[0]["line_items"]] == ["M"]
    by_invoice = control(small, "POST", "entities/direct_costs", {"project_id": project, "direct_cost_type": "invoice",
                                                                  "invoice_number": "INV-88", "vendor_id": vendor_id})
    matched = connector.create_or_update_direct_cost(project, {**fields, "invoice_number": "INV-88"}, [], "EAP-88")
    assert (matched.action, matched.matched_by, matched.record.id) == ("updated", "vendor+invoice_number", by_invoice["id"])


def test_refused_line_items_fail_the_write_with_procore_words(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    project = connector.project_ids()[0]
    with pytest.raises(FatalError) as caught:
        connector.upsert_purchase_order_contract(project, {"title": "x"}, [{"amount": 1, "cost_code_id": 1}], "EPO-LINES")
    assert "cost_code_id is invalid" in caught.value.message and "EPO-LINES:1" in caught.value.message


def test_cost_codes_lookups_and_get(small: RunningSandbox) -> None:
    connector = sandbox_connector(small)
    project = connector.project_ids()[0]
    codes = connector.list_cost_codes(project)
    assert len(codes) == sum(1 for c in control(small, "GET", "entities/cost_codes") if c["project_id"] == project)
    assert all(isinstance(c, ProcoreCostCode) and c.project_id == project for c in codes)
    division = next(c for c in codes if c.parent is None)
    control(small, "POST", "entities/cost_codes", {"project_id": project, "code": "990", "name": "GL 6100",
                                                  "parent_id": division.id, "origin_id": "GL-6100"})
    found = connector.find_cost_code(project, "GL-6100")
    assert found is not None and found.full_code == f"{division.code}-990"
    assert connector.find_cost_code(project, "GL-0000") is None
    vendor = connector.get("vendors", control(small, "GET", "entities/vendors")[0]["id"])
    assert isinstance(vendor, ProcoreVendor)
    po_id = next(p["id"] for p in control(small, "GET", "entities/purchase_order_contracts") if p["project_id"] == project)
    assert connector.get("purchase_order_contracts", po_id, project).id == po_id
    assert {t.code for t in connector.list_line_item_types()} == {"L", "M", "E", "S", "O"}


def test_check_passes_against_the_sandbox(small: RunningSandbox) -> None:
    steps = sandbox_connector(small).check()
    assert [s.step for s in steps] == ["token", "companies", "vendors", "projects", "line_item_types", "project_scope",
                                       "cost_codes", "purchase_order_contracts", "direct_costs"]
    assert all(s.ok for s in steps), steps
    assert "M" in next(s for s in steps if s.step == "line_item_types").detail


def test_check_names_a_configured_project_the_app_cannot_reach(small: RunningSandbox) -> None:
    visible = control(small, "GET", "entities/projects")[0]["id"]
    steps = sandbox_connector(small, project_ids=[visible, 999]).check()
    scope = next(s for s in steps if s.step == "project_scope")
    assert not scope.ok and "configured project(s) 999 are not visible" in scope.detail


def test_check_with_a_wrong_secret_fails_without_leaking_it(small: RunningSandbox) -> None:
    wrong = "definitely-not-the-secret-123"
    steps = sandbox_connector(small, client_secret=wrong).check()
    assert not steps[0].ok and "invalid_client" in steps[0].detail
    assert all(not s.ok for s in steps)
    assert wrong not in repr(steps)


def test_no_secret_in_any_error_message(small: RunningSandbox) -> None:
    secret = small.info()["credentials"]["client_secret"]
    connector = sandbox_connector(small)
    token = requests.post(small.info()["token_url"], data={"grant_type": "client_credentials",
                                                            "client_id": small.info()["credentials"]["client_id"],
                                                            "client_secret": secret}).json()["access_token"]
    errors: list[Exception] = []
    for call in (lambda: connector.upsert_vendor({"name": ""}, "X"),
                 lambda: connector.get("vendors", 1),
                 lambda: sandbox_connector(small, client_secret=secret[::-1]).list_projects()):
        try:
            call()
        except Exception as exc:  # collected and inspected below
            errors.append(exc)
    assert len(errors) == 3
    cached = connector.runtime.token_cache.peek(connector.provider)
    for exc in errors:
        text = f"{exc!s} {exc!r} {json.dumps(getattr(exc, 'to_dict', dict)(), default=str)}"
        for value in (secret, secret[::-1], token, cached.access_token if cached else "-"):
            assert value not in text


def test_refresh_token_flow_rotates_through_the_sandbox(small: RunningSandbox) -> None:
    info = small.info()
    creds = info["credentials"]
    location = requests.get(f"{small.url}/oauth/authorize", allow_redirects=False, params={
        "response_type": "code", "client_id": creds["client_id"], "redirect_uri": "urn:ietf:wg:oauth:2.0:oob"}).headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    issued = requests.post(info["token_url"], data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
                                                     "client_id": creds["client_id"], "client_secret": creds["client_secret"]}).json()
    connector = sandbox_connector(small, refresh_token=issued["refresh_token"], client_credentials_fallback=False, page_size=10)
    seen = 0
    for _ in connector.iter_changed("vendors", None, now()):
        seen += 1
        if seen in (5, 25):
            control(small, "POST", "expire-tokens")
    rotated = connector.runtime.token_cache.peek(connector.provider)
    assert rotated is not None and rotated.refresh_token not in (None, issued["refresh_token"])
    reused = requests.post(info["token_url"], data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"],
                                                     "client_id": creds["client_id"], "client_secret": creds["client_secret"]})
    assert reused.status_code == 400  # the original was consumed by the connector's first refresh
    assert control(small, "GET", "stats")["tokens_issued"] == 4  # the code exchange + three refreshes
