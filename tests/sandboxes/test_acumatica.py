"""Contract tests of the Acumatica sandbox, over raw HTTP (no connector code).

Facts the vendor notes mark unconfirmed and that these tests pin to the sandbox's defaults:
the token lifetime (3600 s), the `datetimeoffset'...'` filter literal (a plain ISO literal is
accepted too), 422 for validation errors, 412 for failed If-Match / If-None-Match, the
Retry-After header on 429, and 500 for a sign-in over the API-user limit (Round 2: "API Login
Limit", never a 429; the status is a licence setting). The Default contract has no Branch entity.
"""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from sandboxes.acumatica import AcumaticaSandbox, AcumaticaSettings, LicenseLimits
from sandboxes.base import SandboxOptions, start_sandbox

RECORDS = 60
VERSION = "23.200.001"


@pytest.fixture(scope="module")
def running():
    run = start_sandbox(AcumaticaSandbox(SandboxOptions(seed=11, records=RECORDS),
                                         settings=AcumaticaSettings(action_seconds=30)))
    yield run
    run.stop()


@pytest.fixture(autouse=True)
def fresh(running):
    requests.post(f"{running.url}/_sandbox/reset", json={"records": RECORDS}, timeout=10).raise_for_status()
    yield


@pytest.fixture
def info(running) -> dict[str, Any]:
    return requests.get(f"{running.url}/_sandbox/info", timeout=5).json()


def token_form(info: dict[str, Any], **overrides: str) -> dict[str, str]:
    c = info["credentials"]
    form = {"grant_type": "password", "client_id": c["client_id"], "client_secret": c["client_secret"],
            "username": c["username"], "password": c["password"], "scope": "api offline_access api:concurrent_access"}
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def get_token(info: dict[str, Any], **overrides: str) -> dict[str, Any]:
    response = requests.post(info["token_url"], data=token_form(info, **overrides), timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


class Api:
    """Raw requests against /entity/Default/{version}/ with a bearer token."""

    def __init__(self, url: str, token: str, version: str = VERSION) -> None:
        self.root = url
        self.base = f"{url}/entity/Default/{version}/"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.base + path, params=params or None, timeout=10)

    def put(self, path: str, body: Any, headers: dict[str, str] | None = None, **params: Any) -> requests.Response:
        return self.session.put(self.base + path, json=body, headers=headers, params=params or None, timeout=10)

    def post(self, path: str, body: Any) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=10)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.base + path, timeout=10)


@pytest.fixture
def api(running, info) -> Api:
    return Api(running.url, get_token(info)["access_token"])


def control(running, path: str, body: Any = None) -> Any:
    if body is None:
        response = requests.get(f"{running.url}/_sandbox/{path}", timeout=10)
    else:
        response = requests.post(f"{running.url}/_sandbox/{path}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def vo(**fields: Any) -> dict[str, Any]:
    return {name: {"value": value} for name, value in fields.items()}


def active_vendor(running) -> str:
    return next(v["VendorID"] for v in control(running, "entities/vendors") if v["Status"] == "Active")


def active_customer(running) -> str:
    return next(c["CustomerID"] for c in control(running, "entities/customers") if c["Status"] == "Active")


def new_bill(api: Api, vendor: str, ref: str, lines: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    lines = lines if lines is not None else [vo(Account="51000", Qty=2, UnitCost=10.0, TransactionDescription="Copper")]
    response = api.put("Bill", {**vo(Vendor=vendor, VendorRef=ref, Description="test bill", **extra), "Details": lines},
                       **{"$expand": "Details"})
    assert response.status_code == 200, response.text
    return response.json()


def release(api: Api, entity: str, action: str, key: dict[str, Any]) -> requests.Response:
    return api.post(f"{entity}/{action}", {"entity": key, "parameters": {}})


def poll_until_done(api: Api, location: str) -> list[int]:
    statuses = []
    for _ in range(10):
        status = api.session.get(api.root + location, timeout=5).status_code
        statuses.append(status)
        if status != 202:
            break
    return statuses


# ---- control API and identity -------------------------------------------------------------------


def test_info_has_exactly_the_documented_shape(running, info):
    assert set(info) == {"vendor", "api_base", "token_url", "credentials"}
    assert info["vendor"] == "acumatica"
    assert info["api_base"] == running.url
    assert info["token_url"] == f"{running.url}/identity/connect/token"
    creds = info["credentials"]
    assert set(creds) == {"client_id", "client_secret", "username", "password", "tenant", "endpoint_version"}
    assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}@MyTenant", creds["client_id"])
    assert creds["tenant"] == "MyTenant" and creds["endpoint_version"] == VERSION


def test_discovery_document_names_the_token_endpoint(running, info):
    body = requests.get(f"{running.url}/identity/.well-known/openid-configuration", timeout=5).json()
    assert body["token_endpoint"] == info["token_url"]
    assert {"api", "offline_access", "api:concurrent_access"} <= set(body["scopes_supported"])
    assert {"password", "refresh_token", "authorization_code"} <= set(body["grant_types_supported"])


def test_password_grant_issues_a_bearer_token_with_refresh(running, info):
    response = requests.post(info["token_url"], data=token_form(info), timeout=5)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600  # the usual lifetime (unconfirmed), a setting
    assert body["access_token"] and body["refresh_token"]
    assert set(body["scope"].split()) == {"api", "offline_access", "api:concurrent_access"}
    assert control(running, "stats")["tokens_issued"] == 1


def test_no_refresh_token_without_offline_access(info):
    body = get_token(info, scope="api")
    assert "refresh_token" not in body and body["scope"] == "api"


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "76E1882D-94C5-48CC-A9D3-294972913CBE@MyTenant"}, "invalid_client"),
        ({"client_id": "TENANTLESS"}, "invalid_client"),
        ({"password": "not-the-password"}, "invalid_grant"),
        ({"username": "someone-else"}, "invalid_grant"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"scope": "api payroll"}, "invalid_scope"),
        ({"scope": ""}, "invalid_scope"),
    ],
)
def test_token_request_failures_answer_oauth_errors(info, overrides, error):
    if overrides.get("client_id") == "TENANTLESS":
        overrides = {"client_id": info["credentials"]["client_id"].split("@")[0]}
    response = requests.post(info["token_url"], data=token_form(info, **overrides), timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert info["credentials"]["client_secret"] not in response.text


def test_wrong_tenant_in_client_id_is_refused(info):
    guid = info["credentials"]["client_id"].split("@")[0]
    response = requests.post(info["token_url"], data=token_form(info, client_id=f"{guid}@OtherTenant"), timeout=5)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_client")


def test_token_endpoint_needs_a_form_body(info):
    response = requests.post(info["token_url"], json=token_form(info), timeout=5)
    assert (response.status_code, response.json()["error"]) == (400, "invalid_request")


def test_refresh_token_renews_once_and_is_single_use(running, info):
    first = get_token(info)
    form = {"grant_type": "refresh_token", "client_id": info["credentials"]["client_id"],
            "client_secret": info["credentials"]["client_secret"], "refresh_token": first["refresh_token"]}
    renewed = requests.post(info["token_url"], data=form, timeout=5)
    assert renewed.status_code == 200
    assert renewed.json()["access_token"] != first["access_token"]
    assert renewed.json()["refresh_token"] != first["refresh_token"]
    again = requests.post(info["token_url"], data=form, timeout=5)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert Api(running.url, renewed.json()["access_token"]).get("Account", **{"$top": 1}).status_code == 200


def test_authorization_code_flow(running, info):
    creds = info["credentials"]
    redirect = "https://app.example.com/callback"
    response = requests.get(f"{running.url}/identity/connect/authorize", allow_redirects=False, timeout=5, params={
        "client_id": creds["client_id"], "response_type": "code", "redirect_uri": redirect,
        "scope": "api offline_access", "state": "xyz"})
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    form = {"grant_type": "authorization_code", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
            "code": query["code"][0], "redirect_uri": redirect}
    wrong_redirect = requests.post(info["token_url"], data={**form, "redirect_uri": "https://evil.example.com"}, timeout=5)
    assert wrong_redirect.json()["error"] == "invalid_grant"  # the code is spent by that attempt too
    response = requests.get(f"{running.url}/identity/connect/authorize", allow_redirects=False, timeout=5, params={
        "client_id": creds["client_id"], "response_type": "code", "redirect_uri": redirect, "scope": "api"})
    form["code"] = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
    exchanged = requests.post(info["token_url"], data=form, timeout=5)
    assert exchanged.status_code == 200 and exchanged.json()["token_type"] == "Bearer"
    reused = requests.post(info["token_url"], data=form, timeout=5)
    assert reused.json()["error"] == "invalid_grant"


def test_entity_calls_without_valid_credentials_are_401(running, info):
    anonymous = requests.get(f"{running.url}/entity/Default/{VERSION}/Vendor", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json() == {"message": "Authorization has been denied for this request."}
    assert Api(running.url, "forged-token").get("Vendor").status_code == 401


def test_token_without_api_scope_is_forbidden(running, info):
    token = get_token(info, scope="offline_access")["access_token"]
    response = Api(running.url, token).get("Vendor")
    assert response.status_code == 403
    assert "'api' scope" in response.json()["exceptionMessage"]


def test_expired_token_is_refused_until_refreshed(running, info, api):
    assert api.get("Account", **{"$top": 1}).status_code == 200
    control(running, "expire-tokens", {})
    assert api.get("Account", **{"$top": 1}).status_code == 401


def test_short_token_ttl_expires_on_its_own():
    sandbox = AcumaticaSandbox(SandboxOptions(records=5, token_ttl=1))
    client = sandbox.app.test_client()
    creds = sandbox.info()["credentials"]
    body = client.post("/identity/connect/token", data={
        "grant_type": "password", "client_id": creds["client_id"], "client_secret": creds["client_secret"],
        "username": creds["username"], "password": creds["password"], "scope": "api"}).get_json()
    assert body["expires_in"] == 1
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert client.get(f"/entity/Default/{VERSION}/Subaccount", headers=headers).status_code == 200
    time.sleep(1.05)
    assert client.get(f"/entity/Default/{VERSION}/Subaccount", headers=headers).status_code == 401


# ---- cookie sessions and the API-user limit ---------------------------------------------------------


def login(running, info, **overrides: Any) -> requests.Session:
    creds = info["credentials"]
    session = requests.Session()
    body = {"name": creds["username"], "password": creds["password"], "tenant": creds["tenant"], **overrides}
    session.login_response = session.post(f"{running.url}/entity/auth/login", json=body, timeout=5)  # type: ignore[attr-defined]
    return session


def test_cookie_login_opens_a_session_until_logout(running, info):
    session = login(running, info, branch="HQ", locale="en-US")
    assert session.login_response.status_code == 204  # type: ignore[attr-defined]
    assert {".ASPXAUTH", "ASP.NET_SessionId"} <= set(session.cookies.keys())
    assert session.get(f"{running.url}/entity/Default/{VERSION}/Subaccount", timeout=5).status_code == 200
    assert control(running, "sessions")["active"] == 1
    assert session.post(f"{running.url}/entity/auth/logout", timeout=5).status_code == 204
    assert control(running, "sessions")["active"] == 0
    assert requests.get(f"{running.url}/entity/Default/{VERSION}/Subaccount", timeout=5,
                        cookies={".ASPXAUTH": "stale"}).status_code == 401


def test_cookie_login_with_wrong_password_is_refused(running, info):
    session = login(running, info, password="wrong")
    response = session.login_response  # type: ignore[attr-defined]
    assert response.status_code == 401
    assert response.json()["exceptionMessage"] == "Invalid credentials. Please try again."
    assert "wrong" not in response.text


def test_api_user_limit_refuses_a_third_sign_in(running, info):
    first, second = login(running, info), login(running, info)
    assert first.login_response.status_code == second.login_response.status_code == 204  # type: ignore[attr-defined]
    third = login(running, info)
    refused = third.login_response  # type: ignore[attr-defined]
    assert refused.status_code == 500 and "Retry-After" not in refused.headers
    body = refused.json()
    assert body["message"] == "An error has occurred." and body["exceptionType"] == "PX.Data.PXException"
    assert body["exceptionMessage"].startswith("API Login Limit")
    first.post(f"{running.url}/entity/auth/logout", timeout=5)
    assert login(running, info).login_response.status_code == 204  # type: ignore[attr-defined]
    assert control(running, "stats")["login_limit_refused"] == 1


def test_the_login_limit_status_is_a_licence_setting_and_never_counts_as_a_rate_limit(running, info):
    control(running, "license", {"api_users": 1, "login_limit_status": 401})
    assert login(running, info).login_response.status_code == 204  # type: ignore[attr-defined]
    refused = login(running, info).login_response  # type: ignore[attr-defined]
    assert refused.status_code == 401 and "API Login Limit" in refused.json()["exceptionMessage"]
    assert control(running, "stats")["rate_limited"] == 0


# ---- routing and the value-object shape -------------------------------------------------------------


def test_unknown_endpoint_version_entity_and_name_are_404(running, api):
    wrong = Api(running.url, api.session.headers["Authorization"].split()[1], version="99.999.001")
    response = wrong.get("Vendor")
    assert response.status_code == 404
    body = response.json()
    assert body["message"] == "An error has occurred." and "99.999.001" in body["exceptionMessage"]
    assert body["exceptionType"] == "PX.Data.PXException"
    assert api.session.get(f"{running.url}/entity/MyEndpoint/{VERSION}/Vendor", timeout=5).status_code == 404
    assert api.get("Purchase").status_code == 404


def test_the_default_contract_has_no_branch_entity(running, info, api):
    """Round 2: no top-level Branch (a real instance answers 404); a branch is a setting of the
    tenant, named by PX-CbApiBranch, the sign-in's `branch` and the documents' branch fields."""
    response = api.get("Branch")
    assert response.status_code == 404 and "'Branch'" in response.json()["exceptionMessage"]
    assert api.get("Branch/HQ").status_code == 404
    assert requests.get(f"{running.url}/_sandbox/entities/branches", timeout=5).status_code == 404
    assert api.session.get(api.base + "Subaccount", headers={"PX-CbApiBranch": "east"}, timeout=5).status_code == 200
    assert login(running, info, branch="NOWHERE").login_response.status_code == 401  # type: ignore[attr-defined]
    bill = api.put("Bill", {**vo(Vendor=active_vendor(running), VendorRef="BR-1", BranchID="MARS"),
                            "Details": [vo(Account="51000", UnitCost=4, Branch="PLUTO")]})
    assert bill.status_code == 422
    assert bill.json()["BranchID"]["error"] == "Branch 'MARS' cannot be found in the system."
    control(running, "settings", {"branches": {"HQ": "Headquarters", "MARS": "Mars Office"}})
    assert new_bill(api, active_vendor(running), "BR-2", BranchID="MARS")["BranchID"]["value"] == "MARS"


def test_records_are_value_objects_with_details_only_when_expanded(api):
    bill = api.get("Bill/Bill/000001").json()
    assert re.fullmatch(r"[0-9a-f-]{36}", bill["id"]) and bill["rowNumber"] == 1
    assert bill["note"] == {"value": ""} and bill["custom"] == {}
    assert bill["Type"] == {"value": "Bill"} and bill["ReferenceNbr"] == {"value": "000001"}
    assert isinstance(bill["Amount"]["value"], float) and isinstance(bill["Hold"]["value"], bool)
    assert bill["CashAccount"] == {}  # a null value is an empty value object
    assert "Details" not in bill and "files" not in bill
    assert bill["_links"]["self"] == f"/entity/Default/{VERSION}/Bill/{bill['id']}"
    expanded = api.get("Bill/Bill/000001", **{"$expand": "Details,files"}).json()
    assert expanded["files"] == []
    rows = expanded["Details"]
    assert [r["rowNumber"] for r in rows] == list(range(1, len(rows) + 1))
    assert {"InventoryID", "Qty", "UnitCost", "ExtendedCost", "Amount", "Account", "Subaccount", "Branch"} <= set(rows[0])
    assert round(sum(r["Amount"]["value"] for r in rows), 2) == expanded["Amount"]["value"]
    vendor = api.get("Vendor", **{"$top": 1, "$expand": "MainContact/Address"}).json()[0]
    assert "Address" in vendor["MainContact"] and "AddressLine1" in vendor["MainContact"]["Address"]
    assert "RemittanceContact" not in vendor


def test_get_by_guid_equals_get_by_keys(api):
    by_key = api.get("Invoice/Invoice/AR000003", **{"$expand": "Details"}).json()
    by_id = api.get(f"Invoice/{by_key['id']}", **{"$expand": "Details"}).json()
    assert by_id == by_key
    missing = api.get("Invoice/Invoice/AR999999")
    assert missing.status_code == 404 and missing.json()["exceptionMessage"] == "No entity satisfies the condition."
    assert api.get("Invoice/AR000003/extra/segment").status_code == 400


def test_keys_joined_by_a_bar_address_the_same_record(api):
    """Round 2: `Invoice/Invoice|AR000003` is `Invoice/Invoice/AR000003`; a wrong count is still 400."""
    by_slash = api.get("Invoice/Invoice/AR000003").json()
    by_bar = api.get("Invoice/Invoice|AR000003")
    assert by_bar.status_code == 200 and by_bar.json() == by_slash
    assert api.get("Invoice/Invoice|AR999999").status_code == 404
    assert api.get("Invoice/Invoice|AR000003|extra").status_code == 400


def test_ad_hoc_schema_lists_field_types(api):
    schema = api.get("Bill/$adHocSchema").json()
    assert schema["Amount"] == {"type": "DecimalValue"} and schema["Hold"] == {"type": "BooleanValue"}
    assert isinstance(schema["Details"], list) and schema["Details"][0]["Qty"] == {"type": "DecimalValue"}


# ---- paging, $filter, $select ------------------------------------------------------------------------


def test_pagination_edges_cover_every_record_once_in_key_order(running, api):
    everything = [v["VendorID"] for v in control(running, "entities/vendors")]
    assert len(everything) == RECORDS
    for size in (20, 25, 60, 7):
        seen, skip, sizes = [], 0, []
        while True:
            page = api.get("Vendor", **{"$top": size, "$skip": skip, "$select": "VendorID"}).json()
            sizes.append(len(page))
            seen += [row["VendorID"]["value"] for row in page]
            if len(page) < size:
                break
            skip += size
        assert seen == sorted(everything), size
        assert sizes[-1] == RECORDS % size  # an exact multiple ends with an empty page
    assert api.get("Vendor", **{"$top": 5, "$skip": RECORDS}).json() == []
    assert api.get("Vendor", **{"$top": 0}).json() == []
    assert len(api.get("Vendor").json()) == RECORDS  # no $top: everything


@pytest.mark.parametrize("value", ["-1", "abc"])
def test_top_and_skip_must_be_non_negative_integers(api, value):
    response = api.get("Vendor", **{"$top": value})
    assert response.status_code == 400 and "$top" in response.json()["exceptionMessage"]


def stamps(running, collection: str) -> list[tuple[str, datetime]]:
    return [(r["id"], datetime.fromisoformat(r["LastModifiedDateTime"])) for r in control(running, f"entities/{collection}")]


def test_filter_on_last_modified_accepts_both_literals(running, api):
    records = stamps(running, "bills")
    pivot = sorted(s for _, s in records)[len(records) // 2]
    text = pivot.isoformat(timespec="milliseconds")
    expected_gt = {i for i, s in records if s > pivot}
    expected_ge = {i for i, s in records if s >= pivot}
    ids = lambda query: {r["id"] for r in api.get("Bill", **{"$filter": query, "$select": "ReferenceNbr"}).json()}
    assert ids(f"LastModifiedDateTime gt datetimeoffset'{text}'") == expected_gt
    assert ids(f"LastModifiedDateTime ge datetimeoffset'{text}'") == expected_ge
    assert len(expected_ge) == len(expected_gt) + 1
    assert ids(f"LastModifiedDateTime gt {text}") == expected_gt  # a plain ISO literal
    assert ids(f"LastModifiedDateTime gt '{text}'") == expected_gt
    assert ids(f"LastModifiedDateTime gt datetimeoffset'{text.replace('+', ' ')}'") == expected_gt  # '+' lost in a URL
    upper = pivot + timedelta(days=10)
    window = {i for i, s in records if pivot <= s < upper}
    assert ids(f"LastModifiedDateTime ge datetimeoffset'{text}' and LastModifiedDateTime lt "
               f"datetimeoffset'{upper.isoformat(timespec='milliseconds')}'") == window


def test_filter_string_operators_ignore_case(running, api):
    vendors = control(running, "entities/vendors")
    target = vendors[3]
    rows = api.get("Vendor", **{"$filter": f"VendorName eq '{target['VendorName'].upper()}'"}).json()
    assert target["id"] in {r["id"] for r in rows}
    word = target["VendorName"].split()[0].lower()
    expected = {v["id"] for v in vendors if word in v["VendorName"].lower()}
    rows = api.get("Vendor", **{"$filter": f"substringof('{word}', VendorName)"}).json()
    assert {r["id"] for r in rows} == expected and len(expected) >= 2  # near-duplicate names
    rows = api.get("Vendor", **{"$filter": "startswith(VendorID,'V00001') and (Status eq 'Active' or Status eq 'Inactive')"}).json()
    assert {r["VendorID"]["value"] for r in rows} == {v["VendorID"] for v in vendors
                                                        if v["VendorID"].startswith("V00001") and v["Status"] in ("Active", "Inactive")}
    quoted = api.get("Vendor", **{"$filter": "VendorName eq 'O''Brien Heating'"})
    assert quoted.status_code == 200 and quoted.json() == []


@pytest.mark.parametrize(("query", "fragment"), [
    ("Colour eq 'red'", "The field 'Colour' is not found"),
    ("VendorName eq", "ends unexpectedly"),
    ("VendorName eq 'x' and", "ends unexpectedly"),
    ("LastModifiedDateTime gt datetimeoffset'yesterday'", "not a valid datetimeoffset"),
])
def test_bad_filters_answer_400_with_the_reason(api, query, fragment):
    response = api.get("Vendor", **{"$filter": query})
    assert response.status_code == 400
    assert fragment in response.json()["exceptionMessage"]


def test_select_returns_only_the_named_fields(api):
    rows = api.get("Customer", **{"$top": 3, "$select": "CustomerID,CustomerName"}).json()
    for row in rows:
        fields = {k for k in row if k not in ("id", "rowNumber", "note", "custom", "_links")}
        assert fields == {"CustomerID", "CustomerName"}


# ---- PUT: upsert, insert-only, update-only, validation --------------------------------------------


def test_put_inserts_with_auto_number_then_updates_by_key_and_by_id(running, api):
    created = api.put("Vendor", vo(VendorName="Northwind HVAC Supply"))
    assert created.status_code == 200
    body = created.json()
    assert body["VendorID"]["value"] == f"V{RECORDS + 1:06d}"
    assert body["Status"]["value"] == "Active" and body["CreatedDateTime"]["value"]
    first_stamp = body["LastModifiedDateTime"]["value"]
    time.sleep(0.01)
    by_key = api.put("Vendor", vo(VendorID=body["VendorID"]["value"], VendorName="Northwind HVAC Supply Co.")).json()
    assert by_key["id"] == body["id"] and by_key["VendorName"]["value"] == "Northwind HVAC Supply Co."
    assert by_key["LastModifiedDateTime"]["value"] > first_stamp
    by_id = api.put("Vendor", {"id": body["id"], **vo(Terms="NET15")}).json()
    assert by_id["VendorID"] == body["VendorID"] and by_id["Terms"]["value"] == "NET15"
    assert len(control(running, "entities/vendors")) == RECORDS + 1


def test_if_none_match_and_if_match_variants(running, api):
    existing = {"VendorID": {"value": "V000001"}, "VendorName": {"value": "Changed"}}
    insert_only = api.put("Vendor", existing, headers={"If-None-Match": "*"})
    assert insert_only.status_code == 412 and "already exists" in insert_only.json()["exceptionMessage"]
    update_missing = api.put("Vendor", vo(VendorID="V999999", VendorName="Ghost"), headers={"If-Match": "*"})
    assert update_missing.status_code == 412
    assert api.put("Vendor", existing, headers={"If-Match": "*"}).json()["VendorName"]["value"] == "Changed"
    fresh = api.put("Vendor", vo(VendorID="VNEW01", VendorName="Brand New"), headers={"If-None-Match": "*"})
    assert fresh.status_code == 200 and fresh.json()["VendorID"]["value"] == "VNEW01"
    assert len(control(running, "entities/vendors")) == RECORDS + 1


def test_validation_errors_sit_inside_the_value_objects(running, api):
    before = len(control(running, "entities/bills"))
    response = api.put("Bill", {**vo(Vendor="V999", VendorRef="X-1"),
                                "Details": [vo(Account="99999", Qty=1, UnitCost=5), vo(Account="51000", Subaccount="999-999")]},
                       **{"$expand": "Details"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"].startswith("Inserting 'Bill' record raised at least one error.")
    assert body["Vendor"] == {"value": "V999", "error": "Vendor 'V999' cannot be found in the system."}
    assert body["ReferenceNbr"] == {"value": "<NEW>"}
    assert body["Details"][0]["Account"]["error"] == "Account '99999' cannot be found in the system."
    assert body["Details"][1]["Subaccount"]["error"] == "Subaccount '999-999' is inactive."
    assert "error" not in body["Details"][0]["Qty"]
    assert len(control(running, "entities/bills")) == before


def test_conversion_errors_stop_the_save_before_business_rules(api):
    response = api.put("Customer", vo(CustomerName="", CreditLimit="lots"))
    assert response.status_code == 422
    body = response.json()
    assert body["CreditLimit"] == {"value": "lots", "error": "The value 'lots' cannot be converted to Decimal."}
    assert "error" not in body["CustomerName"]
    required = api.put("Customer", vo(CustomerName="  ", CreditLimit=-5)).json()
    assert required["CustomerName"]["error"] == "'Customer Name' cannot be empty."
    assert required["CreditLimit"]["error"] == "The credit limit cannot be negative."


def test_plain_values_and_non_json_bodies_are_refused(api):
    plain = api.put("Vendor", {"VendorName": "No value object"})
    assert plain.status_code == 400 and "'value' property" in plain.json()["exceptionMessage"]
    text = api.session.put(api.base + "Vendor", data="VendorName=x", headers={"Content-Type": "text/plain"}, timeout=5)
    assert text.status_code == 415


def test_detail_rows_are_updated_added_and_deleted(running, api):
    vendor = active_vendor(running)
    bill = new_bill(api, vendor, "ROWS-1", [vo(Account="51000", Qty=2, UnitCost=10.0), vo(Account="52000", Qty=1, UnitCost=5.0)])
    assert bill["Amount"]["value"] == 25.0
    key = vo(Type="Bill", ReferenceNbr=bill["ReferenceNbr"]["value"])
    first, second = (row["id"] for row in bill["Details"])
    updated = api.put("Bill", {**key, "Details": [{"id": first, **vo(Qty=3)}]}, **{"$expand": "Details"}).json()
    assert [r["Qty"]["value"] for r in updated["Details"]] == [3.0, 1.0] and updated["Amount"]["value"] == 35.0
    added = api.put("Bill", {**key, "Details": [vo(Account="53000", Amount=7.5)]}, **{"$expand": "Details"}).json()
    assert len(added["Details"]) == 3 and added["Details"][2]["UnitCost"]["value"] == 7.5
    assert added["Amount"]["value"] == 42.5
    removed = api.put("Bill", {**key, "Details": [{"id": second, "delete": True}]}, **{"$expand": "Details"}).json()
    assert [r["id"] for r in removed["Details"]] == [first, added["Details"][2]["id"]]
    assert removed["Amount"]["value"] == 37.5 and removed["Balance"]["value"] == 37.5


def test_duplicate_vendor_ref_is_refused_unless_the_preference_is_off(running, api):
    vendor = active_vendor(running)
    new_bill(api, vendor, "DUP-1")
    response = api.put("Bill", {**vo(Vendor=vendor, VendorRef="dup-1"), "Details": [vo(Account="51000", UnitCost=1)]})
    assert response.status_code == 422
    assert "same vendor reference number" in response.json()["VendorRef"]["error"]
    control(running, "settings", {"duplicate_vendor_ref_error": False})
    assert new_bill(api, vendor, "DUP-1")["VendorRef"]["value"] == "DUP-1"


def test_business_headers_set_branch_and_date(running, api):
    vendor = active_vendor(running)
    headers = {"PX-CbApiBranch": "WEST", "PX-CbApiBusinessDate": "2024-05-01"}
    body = api.put("Bill", {**vo(Vendor=vendor, VendorRef="HDR-1"), "Details": [vo(Account="51000", UnitCost=4)]},
                   headers=headers, **{"$expand": "Details"}).json()
    assert body["BranchID"]["value"] == "WEST" and body["Details"][0]["Branch"]["value"] == "WEST"
    assert body["Date"]["value"].startswith("2024-05-01") and body["PostPeriod"]["value"] == "052024"
    unknown = api.put("Bill", vo(Vendor=vendor, VendorRef="HDR-2"), headers={"PX-CbApiBranch": "MARS"})
    assert unknown.status_code == 400 and "MARS" in unknown.json()["exceptionMessage"]


def test_delete_rules(running, api):
    vendor = active_vendor(running)
    bill = new_bill(api, vendor, "DEL-1")
    assert api.delete(f"Bill/Bill/{bill['ReferenceNbr']['value']}").status_code == 204
    assert api.get(f"Bill/{bill['id']}").status_code == 404
    released = next(b for b in control(running, "entities/bills") if b["Status"] == "Open")
    assert api.delete(f"Bill/Bill/{released['ReferenceNbr']}").status_code == 422
    assert api.delete(f"Vendor/{released['Vendor']}").status_code == 422  # documents refer to it


def test_files_attach_and_download(api):
    url = api.base + "Bill/Bill/000002/files/scan.pdf"
    assert api.session.put(url, data=b"%PDF-1.4 test", headers={"Content-Type": "application/pdf"}, timeout=5).status_code == 204
    files = api.get("Bill/Bill/000002", **{"$expand": "files"}).json()["files"]
    assert files[0]["filename"].endswith("\\scan.pdf")
    download = api.session.get(api.root + files[0]["href"], timeout=5)
    assert download.content == b"%PDF-1.4 test"


# ---- actions ----------------------------------------------------------------------------------------


def test_release_bill_runs_as_a_long_running_action(running, api):
    bill = new_bill(api, active_vendor(running), "REL-1")
    key = vo(Type="Bill", ReferenceNbr=bill["ReferenceNbr"]["value"])
    started = release(api, "Bill", "ReleaseBill", key)
    assert started.status_code == 202
    location = started.headers["Location"]
    assert re.fullmatch(rf"/entity/Default/{VERSION}/Bill/ReleaseBill/status/[0-9a-f-]{{36}}", location)
    assert api.get(f"Bill/{bill['id']}").json()["Status"]["value"] == "Balanced"  # still running
    assert poll_until_done(api, location) == [202, 204]
    assert api.session.get(api.root + location, timeout=5).status_code == 204
    assert api.get(f"Bill/{bill['id']}").json()["Status"]["value"] == "Open"
    again = release(api, "Bill", "ReleaseBill", {"id": bill["id"]})
    assert again.status_code == 422 and "only a Balanced document" in again.json()["exceptionMessage"]
    assert api.session.get(api.root + location.rsplit("/", 1)[0] + "/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                           timeout=5).status_code == 404
    assert api.post("Bill/ReverseEverything", {"entity": key}).status_code == 404


def test_release_refuses_a_document_on_hold(running, api):
    bill = new_bill(api, active_vendor(running), "HOLD-1", Hold=True)
    assert bill["Status"]["value"] == "On Hold"
    response = release(api, "Bill", "ReleaseBill", {"id": bill["id"]})
    assert response.status_code == 422 and "on hold" in response.json()["exceptionMessage"]


def test_actions_finish_on_their_own_after_action_seconds(running, api):
    control(running, "settings", {"action_seconds": 0})
    bill = new_bill(api, active_vendor(running), "SELF-1")
    assert release(api, "Bill", "ReleaseBill", {"id": bill["id"]}).status_code == 202
    assert api.get(f"Bill/{bill['id']}").json()["Status"]["value"] == "Open"  # nobody polled


def test_payment_release_closes_the_invoice_it_pays(running, api):
    customer = active_customer(running)
    invoice = api.put("Invoice", {**vo(Customer=customer, CustomerOrder="ST-5001", Description="Job 5001"),
                                  "Details": [vo(InventoryID="LABOR", Qty=2, UnitPrice=150.0, Account="40000")]}).json()
    assert invoice["Amount"]["value"] == 300.0 and invoice["Status"]["value"] == "Balanced"
    early = api.put("Payment", {**vo(CustomerID=customer, PaymentAmount=300.0),
                                "DocumentsToApply": [vo(DocType="Invoice", ReferenceNbr=invoice["ReferenceNbr"]["value"])]},
                    **{"$expand": "DocumentsToApply"})
    assert early.status_code == 422
    assert "not released" in early.json()["DocumentsToApply"][0]["ReferenceNbr"]["error"]
    location = release(api, "Invoice", "ReleaseInvoice", {"id": invoice["id"]}).headers["Location"]
    assert poll_until_done(api, location)[-1] == 204
    too_much = api.put("Payment", {**vo(CustomerID=customer, PaymentAmount=100.0),
                                   "DocumentsToApply": [vo(DocType="Invoice", ReferenceNbr=invoice["ReferenceNbr"]["value"],
                                                           AmountPaid=300.0)]})
    assert too_much.status_code == 422 and "exceeds the payment amount" in too_much.json()["error"]
    payment = api.put("Payment", {**vo(CustomerID=customer, PaymentAmount=300.0, ExternalRef="ST-PAY-1"),
                                  "DocumentsToApply": [vo(DocType="Invoice", ReferenceNbr=invoice["ReferenceNbr"]["value"])]},
                      **{"$expand": "DocumentsToApply"}).json()
    assert payment["DocumentsToApply"][0]["AmountPaid"]["value"] == 300.0
    assert payment["AvailableBalance"]["value"] == 0.0
    location = release(api, "Payment", "ReleasePayment", {"id": payment["id"]}).headers["Location"]
    assert poll_until_done(api, location)[-1] == 204
    paid = api.get(f"Invoice/{invoice['id']}", **{"$select": "Status,Balance"}).json()
    assert (paid["Status"]["value"], paid["Balance"]["value"]) == ("Closed", 0.0)
    assert api.get(f"Payment/{payment['id']}").json()["Status"]["value"] == "Closed"


def test_released_documents_keep_their_amounts(running, api):
    bill = new_bill(api, active_vendor(running), "LOCK-1")
    release(api, "Bill", "ReleaseBill", {"id": bill["id"]})
    control(running, "settings", {"action_seconds": 0})
    api.get("Subaccount")  # any request lets the action finish
    changed = api.put("Bill", {"id": bill["id"], **vo(VendorRef="LOCK-2")})
    assert changed.status_code == 422 and "released" in changed.json()["error"]
    described = api.put("Bill", {"id": bill["id"], **vo(Description="Paid by check 1001")})
    assert described.status_code == 200 and described.json()["Description"]["value"] == "Paid by check 1001"


# ---- license limits and faults ------------------------------------------------------------------------


def test_requests_per_minute_limit_answers_429_with_retry_after(running, api):
    control(running, "license", {"requests_per_minute": 3})
    assert [api.get("Subaccount").status_code for _ in range(3)] == [200, 200, 200]
    refused = api.get("Subaccount")
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["exceptionMessage"] == "The number of API requests exceeds the limit set by the license."
    assert control(running, "stats")["rate_limited"] == 1


def test_rate_limit_option_is_requests_per_minute():
    assert AcumaticaSandbox(SandboxOptions(records=1, rate_limit=5)).limits.requests_per_minute == 5
    assert AcumaticaSandbox(SandboxOptions(records=1)).limits == LicenseLimits()


def test_concurrent_request_limit_queues_then_refuses(running, info):
    control(running, "settings", {"processing_ms": 300})
    token = get_token(info)["access_token"]

    def two_at_once() -> list[int]:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(Api(running.url, token).get("Subaccount").status_code))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(statuses)

    control(running, "license", {"concurrent_requests": 1, "request_queue": 0})
    assert two_at_once() == [200, 429]
    control(running, "license", {"concurrent_requests": 1, "request_queue": 1})
    assert two_at_once() == [200, 200]


def test_faults_use_the_vendor_error_shape(running, api):
    control(running, "faults", {"error_rate": 1.0, "error_status": 503})
    response = api.get("Subaccount")
    assert response.status_code == 503
    assert response.json()["exceptionMessage"] == "Injected fault" and response.json()["message"] == "An error has occurred."
    control(running, "faults", {"replace": True, "fail_next": 2, "error_status": 500})
    assert [api.get("Subaccount").status_code for _ in range(3)] == [500, 500, 200]
    control(running, "faults", {"replace": True, "burst_429": 1, "retry_after": 3})
    limited = api.get("Subaccount")
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert api.get("Subaccount").status_code == 200
    control(running, "faults", {"replace": True, "latency_ms": 150, "path_contains": "/Subaccount"})
    started = time.perf_counter()
    api.get("Subaccount")
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    api.get("Account")
    assert time.perf_counter() - started < 0.15


def test_stats_reset_and_entities(running, api):
    api.get("Subaccount")
    api.get("Vendor/V000001")
    api.get("Vendor/V999999")
    stats = control(running, "stats")
    assert stats["total"] == 4 and stats["by_status"] == {"200": 3, "404": 1}  # the token request included
    assert stats["by_endpoint"]["POST /identity/connect/token"] == {"200": 1}
    assert stats["by_endpoint"]["GET /entity/<endpoint>/<version>/<path:rest>"] == {"200": 2, "404": 1}
    control(running, "stats/reset", {})
    assert control(running, "stats")["total"] == 0
    api.put("Vendor", vo(VendorName="Temporary Vendor"))
    assert len(control(running, "entities/vendors")) == RECORDS + 1
    control(running, "reset", {})
    assert len(control(running, "entities/vendors")) == RECORDS
    assert requests.get(f"{running.url}/_sandbox/entities/purchase_orders", timeout=5).status_code == 404


def test_put_entity_accepts_plain_payloads_and_validates(running, api):
    stored = control(running, "entities/customers", {"CustomerName": "Lakeside Dental Group",
                                                       "MainContact": {"Email": "ap@lakeside.example", "Address": {"City": "Tampa"}}})
    assert stored["CustomerID"] == f"C{RECORDS + 1:06d}" and stored["Email"] == "ap@lakeside.example"
    seen = api.get(f"Customer/{stored['CustomerID']}", **{"$expand": "MainContact/Address"}).json()
    assert seen["MainContact"]["Address"]["City"]["value"] == "Tampa"
    refused = requests.post(f"{running.url}/_sandbox/entities/bills", json={"Vendor": "NOBODY"}, timeout=5)
    assert refused.status_code == 400 and "Vendor 'NOBODY' cannot be found" in refused.json()["error"]


def test_tick_changes_records_a_poll_can_see(running, api):
    latest = max(s for _, s in stamps(running, "vendors") + stamps(running, "bills") + stamps(running, "invoices")
                 + stamps(running, "customers") + stamps(running, "payments") + stamps(running, "accounts"))
    changed = control(running, "tick", {"count": 6})["changed"]
    assert len(changed) == 6
    for change in changed:
        assert datetime.fromisoformat(change["LastModifiedDateTime"]) > latest
        query = f"LastModifiedDateTime gt datetimeoffset'{latest.isoformat(timespec='milliseconds')}'"
        ids = {r["id"] for r in api.get(change["entity"], **{"$filter": query, "$select": "id"}).json()}
        assert change["id"] in ids


def test_seed_is_deterministic_with_near_duplicate_vendors():
    first = AcumaticaSandbox(SandboxOptions(seed=3, records=90)).get_entities("vendors")
    second = AcumaticaSandbox(SandboxOptions(seed=3, records=90)).get_entities("vendors")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("CreatedDateTime", "LastModifiedDateTime")} for r in rows]
    assert strip(first) == strip(second)
    acme = [v["VendorName"] for v in first if "acme supply" in v["VendorName"].lower()]
    assert len(acme) == 3 and len(set(acme)) == 3  # one name, written three ways
