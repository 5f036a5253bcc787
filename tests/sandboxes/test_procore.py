"""Contract tests of the Procore sandbox, over real HTTP with plain `requests`.

Facts the vendor notes mark unconfirmed, which the sandbox keeps as settings with the most
likely value: the status for a missing Procore-Company-Id (400), a duplicate origin_id on the
single-create path (422; the docs say 409 or 422), Retry-After on 429 (sent), the spike
window's size (off unless set), the PO status spelling ("Partially Received"), the default
page size (100) and the vendor list showing active vendors only. The generic 4xx body shape
({"error": text}, beside the documented {"errors": {field: [...]}} map) is also unconfirmed.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandboxes import create_sandbox
from sandboxes.base import RunningSandbox, SandboxOptions, start_sandbox
from sandboxes.procore import ProcoreSandbox

SEED, RECORDS = 11, 60
API = "/rest/v1.0"


class Api:
    """A raw client for one running sandbox: a client-credentials token and the vendor headers."""

    def __init__(self, running: RunningSandbox) -> None:
        self.url = running.url
        self.http = requests.Session()
        self.refresh()

    def refresh(self) -> None:
        self.info = self.http.get(f"{self.url}/_sandbox/info").json()
        self.creds = self.info["credentials"]
        self.company = self.creds["company_id"]
        self.token = self.issue().json()["access_token"]

    def issue(self, **form: str) -> requests.Response:
        body = {"grant_type": "client_credentials", "client_id": self.creds["client_id"],
                "client_secret": self.creds["client_secret"], **form}
        return self.http.post(self.info["token_url"], data=body)

    def headers(self, token: str | None = None, company: Any = "default") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        if company == "default":
            company = self.company
        if company is not None:
            headers["Procore-Company-Id"] = str(company)
        return headers

    def get(self, path: str, params: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
        return self.http.get(f"{self.url}{path}", params=params, headers=kw.pop("headers", self.headers()), **kw)

    def send(self, method: str, path: str, body: Any, **kw: Any) -> requests.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return self.http.request(method, f"{self.url}{path}", json=body, headers=headers, **kw)

    def control(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.http.request(method, f"{self.url}/_sandbox/{path}", json=body)

    def projects(self) -> list[dict[str, Any]]:
        return self.get(f"{API}/projects", {"company_id": self.company}).json()


@pytest.fixture(scope="module")
def running() -> Iterator[RunningSandbox]:
    sandbox = ProcoreSandbox(SandboxOptions(seed=SEED, records=RECORDS))
    with start_sandbox(sandbox) as run:
        yield run


@pytest.fixture()
def api(running: RunningSandbox) -> Iterator[Api]:
    defaults = requests.get(f"{running.url}/_sandbox/settings").json()
    requests.post(f"{running.url}/_sandbox/reset", json={"seed": SEED, "records": RECORDS})
    client = Api(running)
    yield client
    requests.post(f"{running.url}/_sandbox/settings", json=defaults)
    requests.post(f"{running.url}/_sandbox/faults", json={"replace": True})


# ---- control API -----------------------------------------------------------------------------


def test_info_has_exactly_the_documented_shape(api: Api, running: RunningSandbox) -> None:
    info = api.info
    assert set(info) == {"vendor", "api_base", "token_url", "credentials"}
    assert info["vendor"] == "procore"
    assert info["api_base"] == running.url
    assert info["token_url"] == f"{running.url}/oauth/token"
    assert set(info["credentials"]) == {"client_id", "client_secret", "company_id"}
    assert isinstance(info["credentials"]["company_id"], int)


def test_registry_builds_the_procore_sandbox() -> None:
    assert isinstance(create_sandbox("procore", SandboxOptions(records=5)), ProcoreSandbox)


def test_seed_is_deterministic_and_has_near_duplicate_vendors() -> None:
    one = ProcoreSandbox(SandboxOptions(seed=5, records=40))
    two = ProcoreSandbox(SandboxOptions(seed=5, records=40))
    other = ProcoreSandbox(SandboxOptions(seed=6, records=40))
    names = [v["name"] for v in one.get_entities("vendors")]
    assert names == [v["name"] for v in two.get_entities("vendors")]
    assert names != [v["name"] for v in other.get_entities("vendors")]
    assert one.client_secret == two.client_secret != other.client_secret
    squashed = [re.sub(r"[^a-z]", "", n.lower()) for n in names]
    near = [(a, b) for i, a in enumerate(names) for j, b in enumerate(names)
            if i < j and a != b and (squashed[i].startswith(squashed[j]) or squashed[j].startswith(squashed[i]))]
    assert near, "expected vendors whose names differ only in case, punctuation or suffix"
    pos = one.get_entities("purchase_order_contracts")
    assert any(len(po["line_items"]) > 1 for po in pos)
    assert all(po["grand_total"] == _sum(po["line_items"]) for po in pos[:20])


def _sum(lines: list[dict[str, Any]]) -> str:
    from decimal import Decimal
    total = sum((Decimal(line["total_amount"]) for line in lines), Decimal(0))
    text = format(total.normalize(), "f")
    return text if "." in text else text + ".0"


def test_settings_can_be_given_at_construction() -> None:
    sandbox = ProcoreSandbox(SandboxOptions(records=3), spike_limit=25, duplicate_origin_status=409)
    assert (sandbox.spike_limit, sandbox.duplicate_origin_status, sandbox.hourly_limit) == (25, 409, 3600)
    with pytest.raises(TypeError):
        ProcoreSandbox(SandboxOptions(records=3), hourly=5)


def test_ticks_repeat_after_a_reset(api: Api) -> None:
    first = [c["id"] for c in api.control("POST", "tick", {"count": 5}).json()["changed"]]
    api.control("POST", "reset")
    assert [c["id"] for c in api.control("POST", "tick", {"count": 5}).json()["changed"]] == first


def test_stats_count_requests_and_tokens(api: Api) -> None:
    api.get(f"{API}/vendors", {"company_id": api.company})
    api.get(f"{API}/vendors", {"company_id": api.company}, headers={"Authorization": "Bearer nope"})
    stats = api.control("GET", "stats").json()
    assert stats["tokens_issued"] == 1
    assert stats["by_endpoint"]["GET /rest/v1.0/vendors"] == {"200": 1, "401": 1}
    assert stats["by_endpoint"]["POST /oauth/token"] == {"200": 1}


def test_reset_restores_the_seed(api: Api) -> None:
    first = api.get(f"{API}/vendors", {"company_id": api.company}).json()[0]
    api.send("PATCH", f"{API}/vendors/{first['id']}", {"company_id": api.company, "vendor": {"name": "Changed"}})
    assert api.get(f"{API}/vendors/{first['id']}", {"company_id": api.company}).json()["name"] == "Changed"
    api.control("POST", "reset")
    api.refresh()
    assert api.get(f"{API}/vendors/{first['id']}", {"company_id": api.company}).json()["name"] == first["name"]


def test_reset_revokes_tokens(api: Api) -> None:
    old = api.token
    api.control("POST", "reset")
    assert api.get(f"{API}/vendors", {"company_id": api.company}, headers=api.headers(old)).status_code == 401


def test_tick_changes_records_a_poll_then_sees(api: Api) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=1)
    changed = api.control("POST", "tick", {"count": 6}).json()["changed"]
    assert len(changed) == 6
    assert {c["entity"] for c in changed} == {"vendors", "purchase_order_contracts", "direct_costs"}
    window = f"{before:%Y-%m-%dT%H:%M:%SZ}...{datetime.now(timezone.utc) + timedelta(seconds=2):%Y-%m-%dT%H:%M:%SZ}"
    seen = api.get(f"{API}/vendors", {"company_id": api.company, "filters[updated_at]": window}).json()
    ticked = {c["id"] for c in changed if c["entity"] == "vendors"}
    assert ticked and ticked <= {v["id"] for v in seen} | _inactive_ids(api)


def _inactive_ids(api: Api) -> set[int]:
    return {v["id"] for v in api.get(f"{API}/companies/{api.company}/vendors/inactive").json()}


def test_entities_control_creates_changes_and_lists(api: Api) -> None:
    created = api.control("POST", "entities/vendors", {"name": "Control Co", "origin_id": "CTL-1",
                                                         "updated_at": "2020-01-02T03:04:05Z"}).json()
    assert created["updated_at"] == "2020-01-02T03:04:05Z"
    changed = api.control("POST", "entities/vendors", {"id": created["id"], "city": "Boise"}).json()
    assert changed["city"] == "Boise" and changed["name"] == "Control Co"
    assert any(v["origin_id"] == "CTL-1" for v in api.control("GET", "entities/vendors").json())
    project = api.projects()[0]["id"]
    po = api.control("POST", "entities/purchase_order_contracts", {
        "project_id": project, "number": "C-1", "line_items": [{"amount": "10.5"}, {"amount": 2}],
    }).json()
    stored = [p for p in api.control("GET", "entities/purchase_order_contracts").json() if p["id"] == po["id"]][0]
    assert stored["project_id"] == project and stored["grand_total"] == "12.5"
    assert api.control("GET", "entities/nothing").status_code == 404
    bad = api.control("POST", "entities/vendors", {"name": ""})
    assert bad.status_code == 400 and "can't be blank" in bad.text


# ---- OAuth -----------------------------------------------------------------------------------


def test_client_credentials_token_has_no_refresh_token(api: Api) -> None:
    body = api.issue().json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 5400
    assert abs(body["created_at"] - time.time()) < 5
    assert "refresh_token" not in body


@pytest.mark.parametrize("form, status, error", [
    ({"client_secret": "wrong"}, 401, "invalid_client"),
    ({"client_id": "someone-else"}, 401, "invalid_client"),
    ({"grant_type": ""}, 400, "invalid_request"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"grant_type": "refresh_token", "refresh_token": "never-issued"}, 400, "invalid_grant"),
    ({"grant_type": "authorization_code", "code": "never-issued", "redirect_uri": "urn:ietf:wg:oauth:2.0:oob"}, 400, "invalid_grant"),
])
def test_token_endpoint_refusals_use_rfc6749_errors(api: Api, form: dict[str, str], status: int, error: str) -> None:
    response = api.issue(**form)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.json()["error_description"]
    assert api.creds["client_secret"] not in response.text


def _authorize(api: Api, redirect_uri: str = "urn:ietf:wg:oauth:2.0:oob") -> str:
    response = api.http.get(f"{api.url}/oauth/authorize", allow_redirects=False, params={
        "response_type": "code", "client_id": api.creds["client_id"], "redirect_uri": redirect_uri})
    assert response.status_code == 302
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def test_authorization_code_flow_and_single_use_rotating_refresh_tokens(api: Api) -> None:
    code = _authorize(api)
    first = api.issue(grant_type="authorization_code", code=code, redirect_uri="urn:ietf:wg:oauth:2.0:oob").json()
    assert first["refresh_token"] and first["expires_in"] == 5400
    again = api.issue(grant_type="authorization_code", code=code, redirect_uri="urn:ietf:wg:oauth:2.0:oob")
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"  # codes are single use

    second = api.issue(grant_type="refresh_token", refresh_token=first["refresh_token"]).json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    reused = api.issue(grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert reused.status_code == 400
    assert reused.json() == {"error": "invalid_grant", "error_description": "The refresh token is invalid"}
    assert api.issue(grant_type="refresh_token", refresh_token=second["refresh_token"]).status_code == 200


def test_authorization_code_needs_the_same_redirect_uri(api: Api) -> None:
    code = _authorize(api, "https://app.example.com/callback")
    wrong = api.issue(grant_type="authorization_code", code=code, redirect_uri="https://evil.example.com/")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_authorize_redirects_to_the_app_with_code_and_state(api: Api) -> None:
    response = api.http.get(f"{api.url}/oauth/authorize", allow_redirects=False, params={
        "response_type": "code", "client_id": api.creds["client_id"],
        "redirect_uri": "https://app.example.com/cb", "state": "xyz"})
    location = urlsplit(response.headers["Location"])
    assert location.netloc == "app.example.com"
    assert parse_qs(location.query)["state"] == ["xyz"]


def test_revoke_kills_access_and_its_refresh_token(api: Api) -> None:
    tokens = api.issue(grant_type="authorization_code", code=_authorize(api), redirect_uri="urn:ietf:wg:oauth:2.0:oob").json()
    assert api.get(f"{API}/me", headers=api.headers(tokens["access_token"], None)).status_code == 200
    api.http.post(f"{api.url}/oauth/revoke", data={"token": tokens["access_token"], "client_id": api.creds["client_id"],
                                                   "client_secret": api.creds["client_secret"]})
    assert api.get(f"{API}/me", headers=api.headers(tokens["access_token"], None)).status_code == 401
    assert api.issue(grant_type="refresh_token", refresh_token=tokens["refresh_token"]).status_code == 400


def test_token_info_reports_remaining_lifetime(api: Api) -> None:
    info = api.http.get(f"{api.url}/oauth/token/info", headers={"Authorization": f"Bearer {api.token}"}).json()
    assert 5390 <= info["expires_in"] <= 5400
    assert info["application"]["uid"] == api.creds["client_id"]


# ---- auth and headers on the API -------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_missing_or_unknown_token_is_401_with_procore_message(api: Api, authorization: str | None) -> None:
    headers = {"Procore-Company-Id": str(api.company)}
    if authorization:
        headers["Authorization"] = authorization
    response = api.get(f"{API}/vendors", {"company_id": api.company}, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "The access token is invalid"}
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_expired_tokens_are_refused(api: Api) -> None:
    assert api.get(f"{API}/vendors", {"company_id": api.company}).status_code == 200
    api.control("POST", "expire-tokens")
    assert api.get(f"{API}/vendors", {"company_id": api.company}).status_code == 401


def test_token_ttl_option_is_honoured() -> None:
    with start_sandbox(ProcoreSandbox(SandboxOptions(records=3, token_ttl=1))) as run:
        api = Api(run)
        assert api.issue().json()["expires_in"] == 1
        assert api.get(f"{API}/me").status_code == 200
        time.sleep(1.1)
        assert api.get(f"{API}/me").status_code == 401


def test_company_header_is_required_except_on_me_and_companies(api: Api) -> None:
    missing = api.get(f"{API}/vendors", {"company_id": api.company}, headers=api.headers(company=None))
    assert missing.status_code == 400
    assert missing.json() == {"error": "Missing Procore-Company-Id header!"}
    wrong = api.get(f"{API}/vendors", {"company_id": api.company}, headers=api.headers(company=1))
    assert wrong.status_code == 403 and wrong.json()["error"] == "App is not connected to this company"
    assert api.get(f"{API}/me", headers=api.headers(company=None)).status_code == 200
    companies = api.get(f"{API}/companies", headers=api.headers(company=None))
    assert companies.status_code == 200 and companies.json()[0]["id"] == api.company


def test_unconfirmed_shapes_are_settings(api: Api) -> None:
    api.control("POST", "settings", {"missing_company_status": 403, "po_status_style": "snake", "default_per_page": 3})
    assert api.get(f"{API}/vendors", {"company_id": api.company}, headers=api.headers(company=None)).status_code == 403
    assert len(api.get(f"{API}/vendors", {"company_id": api.company}).json()) == 3
    project = api.projects()[0]["id"]
    statuses = {p["status"] for p in api.get(f"{API}/purchase_order_contracts", {"project_id": project, "per_page": 100}).json()}
    assert statuses and all(s == s.lower() and " " not in s for s in statuses)
    created = api.send("POST", f"{API}/purchase_order_contracts", {"project_id": project, "purchase_order_contract": {
        "status": "partially_received"}})
    assert created.json()["status"] == "partially_received"


def test_company_and_project_params_are_required(api: Api) -> None:
    missing = api.get(f"{API}/vendors")
    assert missing.status_code == 400 and missing.json() == {"errors": {"company_id": ["is missing"]}}
    assert api.get(f"{API}/vendors", {"company_id": 1}).status_code == 403
    assert api.get(f"{API}/purchase_order_contracts").status_code == 400
    unknown = api.get(f"{API}/cost_codes", {"project_id": 42})
    assert unknown.status_code == 404 and "Couldn't find Project" in unknown.json()["error"]


def test_unknown_path_is_a_json_404(api: Api) -> None:
    response = api.get(f"{API}/nothing_here")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


# ---- pagination and filters ------------------------------------------------------------------


def _links(response: requests.Response) -> dict[str, int]:
    return {rel: int(parse_qs(urlsplit(link["url"]).query)["page"][0]) for rel, link in response.links.items()}


def test_pagination_headers_follow_the_guide(api: Api) -> None:
    params = {"company_id": api.company, "per_page": 5}
    total = int(api.get(f"{API}/vendors", params).headers["Total"])
    last = -(-total // 5)
    assert last >= 4
    first = api.get(f"{API}/vendors", {**params, "page": 1})
    assert first.headers["Per-Page"] == "5" and len(first.json()) == 5
    assert _links(first) == {"next": 2, "last": last}
    second = api.get(f"{API}/vendors", {**params, "page": 2})
    assert _links(second) == {"first": 1, "next": 3, "last": last}
    third = api.get(f"{API}/vendors", {**params, "page": 3})
    assert _links(third) == {"first": 1, "prev": 2, "next": 4, "last": last}
    final = api.get(f"{API}/vendors", {**params, "page": last})
    assert "next" not in final.links and len(final.json()) == total - 5 * (last - 1)
    assert "company_id" in final.links["first"]["url"]  # links keep the caller's other params
    beyond = api.get(f"{API}/vendors", {**params, "page": last + 1})
    assert beyond.status_code == 200 and beyond.json() == []


def test_pages_cover_every_record_once(api: Api) -> None:
    params = {"company_id": api.company, "per_page": 7}
    ids: list[int] = []
    page = 1
    while True:
        response = api.get(f"{API}/vendors", {**params, "page": page})
        ids.extend(v["id"] for v in response.json())
        if "next" not in response.links:
            break
        page += 1
    assert len(ids) == len(set(ids)) == int(response.headers["Total"])
    assert ids == sorted(ids)


def test_exact_page_and_empty_result(api: Api) -> None:
    total = int(api.get(f"{API}/vendors", {"company_id": api.company}).headers["Total"])
    exact = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": total})
    assert len(exact.json()) == total and "Link" not in exact.headers
    empty = api.get(f"{API}/vendors", {"company_id": api.company, "filters[origin_id]": "no-such-key"})
    assert empty.json() == [] and empty.headers["Total"] == "0" and "Link" not in empty.headers


def test_per_page_is_capped(api: Api) -> None:
    api.control("POST", "settings", {"max_per_page": 10})
    response = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 500})
    assert response.headers["Per-Page"] == "10" and len(response.json()) == 10
    assert "next" in response.links


def test_lists_are_bare_arrays_with_string_money_and_z_times(api: Api) -> None:
    project = api.projects()[0]["id"]
    pos = api.get(f"{API}/purchase_order_contracts", {"project_id": project, "view": "extended"}).json()
    assert isinstance(pos, list) and pos
    po = pos[0]
    assert isinstance(po["grand_total"], str) and float(po["grand_total"]) >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", po["updated_at"])
    assert po["line_items"] and isinstance(po["line_items"][0]["amount"], str)
    assert set(po["vendor"]) == {"id", "company"}
    compact = api.get(f"{API}/purchase_order_contracts", {"project_id": project}).json()[0]
    assert "line_items" not in compact


def test_updated_at_range_filter_is_inclusive_and_accepts_dates(api: Api) -> None:
    vendors = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1000}).json()
    stamp = sorted(v["updated_at"] for v in vendors)[len(vendors) // 2]
    exact = api.get(f"{API}/vendors", {"company_id": api.company, "filters[updated_at]": f"{stamp}...{stamp}"}).json()
    assert exact and all(v["updated_at"] == stamp for v in exact)
    later = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1000,
                                       "filters[updated_at]": f"{stamp}...2999-01-01T00:00:00Z"}).json()
    assert {v["id"] for v in later} == {v["id"] for v in vendors if v["updated_at"] >= stamp}
    day = stamp[:10]
    by_date = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1000,
                                         "filters[updated_at]": f"{day}...{day}"}).json()
    assert {v["id"] for v in by_date} == {v["id"] for v in vendors if v["updated_at"][:10] == day}
    quoted = api.get(f"{API}/vendors", {"company_id": api.company, "filters[created_at]": f'"{day}...{day}"'})
    assert quoted.status_code == 200


def test_bad_range_is_400(api: Api) -> None:
    response = api.get(f"{API}/vendors", {"company_id": api.company, "filters[updated_at]": "yesterday"})
    assert response.status_code == 400 and "filters[updated_at]" in response.json()["errors"]


def test_filters_by_id_origin_status_and_invoice_number(api: Api) -> None:
    vendors = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1000}).json()
    linked = [v for v in vendors if v["origin_id"]][:2]
    by_ids = api.get(f"{API}/vendors", [("company_id", api.company), ("filters[id][]", linked[0]["id"]),
                                         ("filters[id][]", linked[1]["id"])]).json()
    assert {v["id"] for v in by_ids} == {linked[0]["id"], linked[1]["id"]}
    by_origin = api.get(f"{API}/vendors", {"company_id": api.company, "filters[origin_id]": linked[0]["origin_id"]}).json()
    assert [v["id"] for v in by_origin] == [linked[0]["id"]]
    bracketed = api.get(f"{API}/vendors", {"company_id": api.company,
                                           "filters[origin_id]": f"[{linked[0]['origin_id']},{linked[1]['origin_id']}]"}).json()
    assert len(bracketed) == 2
    project = api.projects()[0]["id"]
    approved = api.get(f"{API}/purchase_order_contracts", {"project_id": project, "filters[status]": "Approved"}).json()
    assert approved and all(p["status"] == "Approved" for p in approved)
    dcs = api.get(f"{API}/projects/{project}/direct_costs").json()
    invoice = next(d for d in dcs if d["invoice_number"])
    found = api.get(f"{API}/projects/{project}/direct_costs", {"filters[invoice_number]": invoice["invoice_number"]}).json()
    assert [d["id"] for d in found] == [invoice["id"]]


def test_inactive_vendors_are_listed_apart(api: Api) -> None:
    active = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1000}).json()
    inactive = api.get(f"{API}/companies/{api.company}/vendors/inactive", {"per_page": 1000}).json()
    assert active and inactive
    assert all(v["is_active"] for v in active) and not any(v["is_active"] for v in inactive)
    assert len(active) + len(inactive) == RECORDS


def test_soft_delete_and_include_deleted(api: Api) -> None:
    project = api.projects()[0]["id"]
    pos = api.get(f"{API}/purchase_order_contracts", {"project_id": project}).json()
    victim = pos[0]
    deleted = api.send("DELETE", f"{API}/purchase_order_contracts/{victim['id']}?project_id={project}", None)
    assert deleted.status_code == 204
    assert api.get(f"{API}/purchase_order_contracts/{victim['id']}", {"project_id": project}).status_code == 404
    live = api.get(f"{API}/purchase_order_contracts", {"project_id": project}).json()
    assert victim["id"] not in {p["id"] for p in live}
    only = api.get(f"{API}/purchase_order_contracts", {"project_id": project, "filters[include_deleted]": "only"}).json()
    assert [p["id"] for p in only] == [victim["id"]] and only[0]["deleted_at"]
    both = api.get(f"{API}/purchase_order_contracts", {"project_id": project, "filters[include_deleted]": "with"}).json()
    assert len(both) == len(pos)


# ---- writes and business rules ---------------------------------------------------------------


def test_create_vendor_and_validation_errors(api: Api) -> None:
    created = api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {
        "name": "Fresh Lumber", "origin_id": "V-900", "country_code": "US", "is_active": True}})
    assert created.status_code == 201
    body = created.json()
    assert body["origin_id"] == "V-900" and body["created_at"] == body["updated_at"]
    blank = api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {"name": "  "}})
    assert blank.status_code == 422 and blank.json() == {"errors": {"name": ["can't be blank"]}}
    duplicate = api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {"name": "X", "origin_id": "V-900"}})
    assert duplicate.status_code == 422 and duplicate.json() == {"errors": {"origin_id": ["has already been taken"]}}
    unknown = api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {"name": "X", "vendor_name": "Y"}})
    assert unknown.status_code == 406 and "vendor_name" in unknown.json()["error"]
    wrapped = api.send("POST", f"{API}/vendors", {"company_id": api.company, "name": "No wrapper"})
    assert wrapped.status_code == 400
    not_json = api.http.post(f"{api.url}{API}/vendors", data="name=x", headers={
        **api.headers(), "Content-Type": "application/x-www-form-urlencoded"})
    assert not_json.status_code == 406


def test_duplicate_origin_status_is_a_setting(api: Api) -> None:
    api.control("POST", "settings", {"duplicate_origin_status": 409})
    api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {"name": "A", "origin_id": "DUP"}})
    again = api.send("POST", f"{API}/vendors", {"company_id": api.company, "vendor": {"name": "B", "origin_id": "DUP"}})
    assert again.status_code == 409


def test_idempotency_token_replays_the_first_create(api: Api) -> None:
    body = {"company_id": api.company, "vendor": {"name": "Once Only"}}
    first = api.send("POST", f"{API}/vendors", body, headers={"Idempotency-Token": "abc"})
    second = api.send("POST", f"{API}/vendors", body, headers={"Idempotency-Token": "abc"})
    assert first.status_code == second.status_code == 201 and first.json()["id"] == second.json()["id"]
    names = [v["name"] for v in api.control("GET", "entities/vendors").json()]
    assert names.count("Once Only") == 1


def test_vendor_sync_follows_the_id_and_origin_rules(api: Api) -> None:
    existing = api.get(f"{API}/vendors", {"company_id": api.company}).json()[0]
    response = api.send("PATCH", f"{API}/vendors/sync", {"company_id": api.company, "updates": [
        {"origin_id": "S-1", "name": "Created By Origin"},
        {"name": "Created Without Keys"},
        {"id": existing["id"], "origin_id": "S-NEW", "name": "Renamed By Id"},
        {"id": 0, "name": "Ghost"},
        {"origin_id": "S-2", "name": ""},
    ]})
    assert response.status_code == 200
    body = response.json()
    assert [e["name"] for e in body["entities"]] == ["Created By Origin", "Created Without Keys", "Renamed By Id"]
    assert body["entities"][2]["id"] == existing["id"] and body["entities"][2]["origin_id"] == "S-NEW"
    assert body["errors"] == [
        {"id": 0, "name": "Ghost", "errors": {"id": ["Entity with this ID not found"]}},
        {"origin_id": "S-2", "name": "", "errors": {"name": ["can't be blank"]}},
    ]
    update = api.send("PATCH", f"{API}/vendors/sync", {"company_id": api.company, "updates": [
        {"origin_id": "S-1", "city": "Omaha"}]}).json()
    assert update["entities"][0]["id"] == body["entities"][0]["id"] and update["entities"][0]["city"] == "Omaha"


def test_sync_takes_at_most_1000_items(api: Api) -> None:
    response = api.send("PATCH", f"{API}/vendors/sync", {"company_id": api.company,
                                                         "updates": [{"name": f"V{i}"} for i in range(1001)]})
    assert response.status_code == 400
    assert api.send("PATCH", f"{API}/vendors/sync", {"company_id": api.company}).status_code == 400


def test_purchase_order_contract_with_line_items(api: Api) -> None:
    project = api.projects()[0]["id"]
    vendor = api.get(f"{API}/vendors", {"company_id": api.company}).json()[0]["id"]
    codes = [c for c in api.get(f"{API}/cost_codes", {"project_id": project}).json() if c["parent"]]
    po = api.send("POST", f"{API}/purchase_order_contracts", {"project_id": project, "purchase_order_contract": {
        "number": "E-100", "vendor_id": vendor, "title": "Steel", "status": "approved", "origin_id": "PO-E-100"}})
    assert po.status_code == 201 and po.json()["status"] == "Approved" and po.json()["vendor"]["id"] == vendor
    po_id = po.json()["id"]
    lines = api.send("PATCH", f"{API}/purchase_order_contracts/{po_id}/line_items/sync", {"project_id": project, "updates": [
        {"origin_id": "PO-E-100:1", "quantity": 4, "unit_cost": "2.5", "cost_code_id": codes[0]["id"], "description": "Beam"},
        {"origin_id": "PO-E-100:2", "amount": 90, "cost_code_id": 1},
    ]}).json()
    assert lines["entities"][0]["amount"] == "10.0" and lines["entities"][0]["extended_type"] == "calculated"
    assert lines["errors"][0]["errors"] == {"cost_code_id": ["is invalid"]}
    shown = api.get(f"{API}/purchase_order_contracts/{po_id}", {"project_id": project}).json()
    assert shown["grand_total"] == "10.0" and len(shown["line_items"]) == 1
    assert shown["updated_at"] >= po.json()["updated_at"]
    taken = api.send("POST", f"{API}/purchase_order_contracts", {"project_id": project, "purchase_order_contract": {
        "number": "E-100", "vendor_id": vendor}})
    assert taken.status_code == 422 and taken.json()["errors"] == {"number": ["has already been taken"]}
    back = api.send("PATCH", f"{API}/purchase_order_contracts/{po_id}", {"project_id": project,
                                                                         "purchase_order_contract": {"status": "Draft"}})
    assert back.status_code == 422 and "status" in back.json()["errors"]
    bad_status = api.send("POST", f"{API}/purchase_order_contracts", {"project_id": project,
                                                                      "purchase_order_contract": {"status": "Lost"}})
    assert bad_status.json()["errors"] == {"status": ["is not included in the list"]}


def test_origin_ids_are_unique_across_projects(api: Api) -> None:
    first, second = [p["id"] for p in api.projects()[:2]]
    api.send("POST", f"{API}/purchase_order_contracts", {"project_id": first, "purchase_order_contract": {"origin_id": "SHARED"}})
    response = api.send("PATCH", f"{API}/purchase_order_contracts/sync", {"project_id": second, "updates": [
        {"origin_id": "SHARED", "title": "Other project"}]}).json()
    assert response["entities"] == []
    assert response["errors"][0]["errors"] == {"origin_id": ["has already been taken"]}


def test_direct_cost_rules_and_line_items(api: Api) -> None:
    project = api.projects()[0]["id"]
    vendor = api.get(f"{API}/vendors", {"company_id": api.company}).json()[0]["id"]
    code = [c for c in api.get(f"{API}/cost_codes", {"project_id": project}).json() if c["parent"]][0]["id"]
    kind = api.get(f"{API}/line_item_types", {"company_id": api.company}).json()[1]["id"]
    base = f"{API}/projects/{project}/direct_costs"
    missing = api.send("POST", base, {"item": {"direct_cost_type": "invoice"}})
    assert missing.status_code == 422
    assert missing.json()["errors"] == {"invoice_number": ["can't be blank"], "vendor_id": ["can't be blank"]}
    assert api.send("POST", base, {"item": {"direct_cost_type": "subcontractor_invoice", "invoice_number": "1",
                                            "vendor_id": vendor}}).status_code == 422
    created = api.send("POST", base, {"item": {"direct_cost_type": "invoice", "invoice_number": "AP-1",
                                               "vendor_id": vendor, "origin_id": "AP-1"}})
    assert created.status_code == 201 and created.json()["grand_total"] == "0.0" and created.json()["status"] == "draft"
    dc = created.json()["id"]
    lines = api.send("PATCH", f"{base}/line_items/sync", {"updates": [
        {"direct_cost_id": dc, "origin_id": "AP-1:1", "amount": "100.10", "cost_code_id": code, "line_item_type_id": kind},
        {"origin_id": "AP-1:2", "amount": 1, "cost_code_id": code, "line_item_type_id": kind},
        {"direct_cost_id": dc, "amount": 1},
    ]}).json()
    assert len(lines["entities"]) == 1
    assert lines["errors"][0]["errors"] == {"direct_cost_id": ["can't be blank"]}
    assert lines["errors"][1]["errors"] == {"cost_code_id": ["can't be blank"], "line_item_type_id": ["can't be blank"]}
    again = api.send("PATCH", f"{base}/line_items/sync", {"updates": [{"origin_id": "AP-1:1", "amount": "50"}]}).json()
    assert again["entities"][0]["id"] == lines["entities"][0]["id"]
    shown = api.get(f"{base}/{dc}").json()
    assert shown["grand_total"] == "50.0" and shown["line_items_count"] == 1
    kept = api.send("PATCH", f"{base}/{dc}", {"item": {"direct_cost_type": "expense", "status": "approved"}}).json()
    assert kept["direct_cost_type"] == "invoice" and kept["status"] == "approved"
    twin = api.send("POST", base, {"item": {"direct_cost_type": "invoice", "invoice_number": "AP-1", "vendor_id": vendor}})
    assert twin.status_code == 422 and "invoice_number" in twin.json()["errors"]


def test_concurrent_direct_cost_line_edits_get_409(api: Api) -> None:
    project = api.projects()[0]["id"]
    base = f"{API}/projects/{project}/direct_costs"
    dc = api.get(base).json()[0]
    api.control("POST", "settings", {"direct_cost_write_seconds": 0.4})
    results: list[int] = []

    def edit() -> None:
        response = api.send("PATCH", f"{base}/{dc['id']}", {"item": {"terms": "Net 10"}})
        results.append(response.status_code)

    threads = [threading.Thread(target=edit) for _ in range(2)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    assert sorted(results) == [200, 409]


def test_cost_codes_are_per_project_with_full_codes(api: Api) -> None:
    project = api.projects()[0]["id"]
    codes = api.get(f"{API}/cost_codes", {"project_id": project}).json()
    division = next(c for c in codes if c["parent"] is None)
    child = next(c for c in codes if c["parent"] and c["parent"]["id"] == division["id"])
    assert child["full_code"] == f"{division['code']}-{child['code']}"
    synced = api.send("PATCH", f"{API}/cost_codes/sync?project_id={project}", {"updates": [
        {"origin_id": "GL-6100", "code": "950", "name": "Glazing Misc", "parent_id": division["id"]},
        {"code": child["code"], "name": "Clash", "parent_id": division["id"]},
    ]}).json()
    assert synced["entities"][0]["full_code"] == f"{division['code']}-950"
    assert synced["errors"][0]["errors"] == {"code": ["has already been taken"]}
    found = api.get(f"{API}/cost_codes", {"project_id": project, "filters[origin_id]": "GL-6100"}).json()
    assert [c["name"] for c in found] == ["Glazing Misc"]


# ---- rate limits and faults ------------------------------------------------------------------


def test_rate_limit_headers_on_every_response_and_429_when_exhausted(api: Api) -> None:
    api.control("POST", "settings", {"hourly_limit": 4})
    remaining = []
    for _ in range(4):
        response = api.get(f"{API}/vendors", {"company_id": api.company, "per_page": 1})
        assert response.status_code == 200 and response.headers["X-Rate-Limit-Limit"] == "4"
        remaining.append(int(response.headers["X-Rate-Limit-Remaining"]))
    assert remaining == [3, 2, 1, 0]
    refused = api.get(f"{API}/vendors", {"company_id": api.company})
    assert refused.status_code == 429
    assert refused.text == ("You have surpassed the max number of requests for an hour. "
                            "Please wait until your limit resets.")
    assert refused.headers["X-Rate-Limit-Remaining"] == "0"
    reset = int(refused.headers["X-Rate-Limit-Reset"])
    assert time.time() + 3500 < reset <= time.time() + 3601
    assert 3500 <= int(refused.headers["Retry-After"]) <= 3601


def test_failed_requests_count_against_the_limit(api: Api) -> None:
    api.control("POST", "settings", {"hourly_limit": 2})
    assert api.get(f"{API}/vendors").status_code == 400
    assert api.get(f"{API}/vendors", {"company_id": api.company}).status_code == 200
    assert api.get(f"{API}/vendors", {"company_id": api.company}).status_code == 429


def test_spike_window_is_reported_while_it_is_closest(api: Api) -> None:
    api.control("POST", "settings", {"hourly_limit": 100, "spike_limit": 3, "spike_window": 1})
    first = api.get(f"{API}/me")
    assert first.headers["X-Rate-Limit-Limit"] == "3" and first.headers["X-Rate-Limit-Remaining"] == "2"
    api.get(f"{API}/me")
    api.get(f"{API}/me")
    assert api.get(f"{API}/me").status_code == 429
    time.sleep(1.05)
    assert api.get(f"{API}/me").status_code == 200


def test_rate_limit_option_sets_the_hourly_limit() -> None:
    with start_sandbox(ProcoreSandbox(SandboxOptions(records=3, rate_limit=2))) as run:
        api = Api(run)
        assert api.get(f"{API}/me").headers["X-Rate-Limit-Limit"] == "2"
    with start_sandbox(ProcoreSandbox(SandboxOptions(records=3, rate_limit=0))) as run:
        api = Api(run)
        response = api.get(f"{API}/me")
        assert response.status_code == 200 and "X-Rate-Limit-Limit" not in response.headers


def test_burst_429_fault_answers_like_procore(api: Api) -> None:
    api.control("POST", "faults", {"burst_429": 1, "retry_after": 2})
    refused = api.get(f"{API}/me")
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "2"
    assert refused.headers["X-Rate-Limit-Remaining"] == "0"
    assert int(refused.headers["X-Rate-Limit-Reset"]) >= int(time.time()) + 1
    assert api.get(f"{API}/me").status_code == 200


def test_fail_next_and_error_rate_faults(api: Api) -> None:
    api.control("POST", "faults", {"fail_next": 2, "error_status": 502})
    assert [api.get(f"{API}/me").status_code for _ in range(3)] == [502, 502, 200]
    api.control("POST", "faults", {"error_rate": 1.0, "error_status": 503, "retry_after": 3})
    overloaded = api.get(f"{API}/me")
    assert overloaded.status_code == 503 and overloaded.headers["Retry-After"] == "3"
    assert overloaded.json() == {"error": "Injected fault"}


def test_faults_can_target_one_path_and_add_latency(api: Api) -> None:
    api.control("POST", "faults", {"error_rate": 1.0, "path_contains": "/direct_costs"})
    assert api.get(f"{API}/me").status_code == 200
    project = api.projects()[0]["id"]
    assert api.get(f"{API}/projects/{project}/direct_costs").status_code == 503
    api.control("POST", "faults", {"replace": True, "latency_ms": 150})
    started = time.perf_counter()
    api.get(f"{API}/me")
    assert time.perf_counter() - started >= 0.15


def test_settings_endpoint_rejects_unknown_names(api: Api) -> None:
    response = api.control("POST", "settings", {"hourly": 5})
    assert response.status_code == 400
    assert api.control("GET", "settings").json()["hourly_limit"] == 3600


# ---- Round 2 facts -----------------------------------------------------------------------------

BASE_TYPES = {"equipment", "materials", "commitment", "owner_cost", "professional_services", "other"}


def test_line_item_types_have_documented_base_types_and_company_codes(api: Api) -> None:
    listed = api.get(f"{API}/line_item_types", {"company_id": api.company}).json()
    assert listed and {t["base_type"] for t in listed} <= BASE_TYPES
    added = api.control("POST", "entities/line_item_types", {"code": "MAT-01", "name": "Field materials",
                                                             "base_type": "Owner Cost"})
    assert added.status_code == 200 and added.json()["base_type"] == "owner_cost"
    kind = added.json()["id"]
    shown = api.get(f"{API}/line_item_types", {"company_id": api.company}).json()
    assert {"id": kind, "code": "MAT-01", "name": "Field materials", "base_type": "owner_cost",
            "origin_id": None, "origin_data": None} in shown
    assert api.control("POST", "entities/line_item_types", {"code": "X", "name": "X", "base_type": "labor"}).status_code == 400
    assert api.control("POST", "entities/line_item_types", {"code": "MAT-01", "name": "Again",
                                                            "base_type": "other"}).status_code == 400
    project = api.projects()[0]["id"]
    code = [c for c in api.get(f"{API}/cost_codes", {"project_id": project}).json() if c["parent"]][0]["id"]
    base = f"{API}/projects/{project}/direct_costs"
    dc = api.send("POST", base, {"item": {"direct_cost_type": "expense"}}).json()["id"]
    lines = api.send("PATCH", f"{base}/line_items/sync", {"updates": [
        {"direct_cost_id": dc, "origin_id": "R2-1", "amount": 3, "cost_code_id": code, "line_item_type_id": kind}]}).json()
    assert lines["errors"] == [] and lines["entities"][0]["line_item_type"]["code"] == "MAT-01"


def test_both_rate_windows_are_on_by_default() -> None:
    sandbox = ProcoreSandbox(SandboxOptions(records=3))
    assert (sandbox.hourly_limit, sandbox.spike_limit, sandbox.spike_window) == (3600, 25, 10.0)
    with start_sandbox(sandbox) as run:
        api = Api(run)
        answers = [api.get(f"{API}/me") for _ in range(25)]
        assert [a.status_code for a in answers] == [200] * 25
        assert answers[0].headers["X-Rate-Limit-Limit"] == "25"  # the spike window is closer to exhaustion
        assert [a.headers["X-Rate-Limit-Remaining"] for a in answers[:3]] == ["24", "23", "22"]
        refused = api.get(f"{API}/me")
        assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 11  # the window, rounded up


def test_po_line_item_sync_takes_project_id_as_a_query_parameter(api: Api) -> None:
    project = api.projects()[0]["id"]
    po = api.get(f"{API}/purchase_order_contracts", {"project_id": project}).json()[0]["id"]
    path = f"{API}/purchase_order_contracts/{po}/line_items/sync"
    updates = {"updates": [{"origin_id": "R2-PO-1", "amount": 5}]}
    missing = api.send("PATCH", path, updates)
    assert missing.status_code == 400 and missing.json() == {"errors": {"project_id": ["is missing"]}}
    synced = api.send("PATCH", path, updates, params={"project_id": project})
    assert synced.status_code == 200 and synced.json()["errors"] == []
    line = synced.json()["entities"][0]
    assert line["purchase_order_contract_id"] == po and line["amount"] == "5.0"


def test_v1_direct_cost_create_wraps_its_attributes_in_item(api: Api) -> None:
    base = f"{API}/projects/{api.projects()[0]['id']}/direct_costs"
    v11_shape = api.send("POST", base, {"direct_cost": {"direct_cost_type": "expense"}})
    assert v11_shape.status_code == 400 and v11_shape.json() == {"errors": {"item": ["is missing"]}}
    created = api.send("POST", base, {"item": {"direct_cost_type": "expense"}})
    assert created.status_code == 201 and created.json()["direct_cost_type"] == "expense"
