"""Contract tests of the Epicor Kinetic sandbox over raw HTTP (no connector code).

Facts the vendor notes mark unconfirmed and the sandbox therefore treats as settings:
token lifetime (3600 s), the status of a missing API key (401), the accepted date/time
literal forms, VendorID's length (8), and that Payment Entry pays posted invoices only.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Iterator

import pytest
import requests

from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.epicor import EpicorSandbox, EpicorSandboxSettings

RECORDS = 250
INVOICES = "Erp.BO.APInvoiceSvc"


class Api:
    """Raw-HTTP helper: URLs, a bearer token, and the two headers v2 wants."""

    def __init__(self, running: Any) -> None:
        self.root = running.url
        self.info = requests.get(f"{self.root}/_sandbox/info", timeout=5).json()
        self.creds = self.info["credentials"]
        self.base = f"{self.info['api_base']}/api/v2/odata/{self.creds['company']}"
        self._token: str | None = None

    def token(self, username: str | None = None, password: str | None = None) -> str:
        response = requests.post(self.info["token_url"], data={
            "grant_type": "password", "username": username or self.creds["username"],
            "password": password or self.creds["password"]}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["AccessToken"]

    def headers(self, token: str | None = None) -> dict[str, str]:
        if token is None:
            self._token = self._token or self.token()
            token = self._token
        return {"Authorization": f"Bearer {token}", "x-api-key": self.creds["api_key"]}

    def get(self, path: str, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.get(f"{self.base}/{path}", params=params, headers=headers or self.headers(), timeout=10)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.post(f"{self.base}/{path}", json=body, headers=headers or self.headers(), timeout=10)

    def method(self, service: str, name: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.post(f"{service}/{name}", body, headers)
        assert response.status_code == 200, response.text
        return response.json()

    def control(self, path: str, body: Any = None) -> Any:
        response = requests.post(f"{self.root}/_sandbox/{path}", json=body if body is not None else {}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def entities(self, entity: str) -> list[dict[str, Any]]:
        return requests.get(f"{self.root}/_sandbox/entities/{entity}", timeout=10).json()

    def group(self, group_id: str) -> dict[str, Any]:
        return next(g for g in self.entities("ap_invoice_groups") if g["GroupID"] == group_id)


def assert_epicor_error(response: requests.Response, status: int, error_type: str | None = None,
                        contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"HttpStatus", "ReasonPhrase", "ErrorMessage", "ErrorType", "ErrorDetails", "CorrelationId"}
    assert body["HttpStatus"] == status
    assert isinstance(body["ErrorDetails"], list) and body["ErrorDetails"][0]["Message"]
    if error_type is not None:
        assert body["ErrorType"] == error_type
    assert contains in body["ErrorMessage"]
    return body


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    server = start_sandbox(EpicorSandbox(SandboxOptions(seed=11, records=RECORDS)))
    yield server
    server.stop()


@pytest.fixture()
def api(running: Any) -> Api:
    requests.post(f"{running.url}/_sandbox/reset", json={}, timeout=30).raise_for_status()
    return Api(running)


def new_invoice_ds(api: Api, group_id: str, vendor_id: str, invoice_num: str, amount: float,
                   headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The screen's header sequence, as a client must drive it."""
    ds = api.method(INVOICES, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": group_id}, headers)["parameters"]["ds"]
    ds = api.method(INVOICES, "ChangeVendorID", {"ds": ds, "ProposedVendorID": vendor_id, "confirmCheck": False},
                    headers)["parameters"]["ds"]
    ds["APInvHed"][-1]["InvoiceNum"] = invoice_num
    ds = api.method(INVOICES, "ChangeInvoiceDateEx", {"ds": ds, "ProposedInvoiceDate": "2024-05-01T00:00:00",
                                                      "recalcAmts": ""}, headers)["parameters"]["ds"]
    ds = api.method(INVOICES, "ChangeInvoiceVendorAmt", {"ds": ds, "ProposedInvoiceVendorAmt": amount},
                    headers)["parameters"]["ds"]
    return ds


def update_master(ds: dict[str, Any], group_id: str) -> dict[str, Any]:
    return {"ds": ds, "cGroupID": group_id, "cTableName": "APInvHed", "runChkCPay": True, "runChkBankRef": True,
            "runChkRevChrg": True, "suppressUserPrompts": True}


def active_vendor(api: Api) -> dict[str, Any]:
    return next(v for v in api.entities("vendors") if not v["Inactive"])


# ---- auth --------------------------------------------------------------------------------------

def test_token_resource_issues_bearer_token_with_documented_shape(api: Api) -> None:
    response = requests.post(api.info["token_url"], data={
        "grant_type": "password", "username": api.creds["username"], "password": api.creds["password"]}, timeout=5)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"AccessToken", "ExpiresIn", "TokenType"}
    assert body["ExpiresIn"] == 3600 and body["TokenType"] == "Bearer"  # 3600: unconfirmed default
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, api.headers(body["AccessToken"])).status_code == 200
    assert requests.get(f"{api.root}/_sandbox/stats", timeout=5).json()["tokens_issued"] == 1


def test_token_resource_accepts_basic_and_header_credentials_and_xml(api: Api) -> None:
    basic = base64.b64encode(f"{api.creds['username']}:{api.creds['password']}".encode()).decode()
    by_basic = requests.post(api.info["token_url"], headers={"Authorization": f"Basic {basic}"}, timeout=5)
    by_headers = requests.post(api.info["token_url"], headers={"username": api.creds["username"],
                                                               "password": api.creds["password"]}, timeout=5)
    assert by_basic.status_code == 200 and by_basic.json()["AccessToken"]
    assert by_headers.status_code == 200 and by_headers.json()["AccessToken"]
    xml = requests.post(api.info["token_url"], headers={"Authorization": f"Basic {basic}", "Accept": "application/xml"},
                        timeout=5)
    assert xml.status_code == 200 and "<Token><AccessToken>" in xml.text


def test_token_resource_refuses_bad_password_without_echoing_it(api: Api) -> None:
    response = requests.post(api.info["token_url"], data={"username": api.creds["username"],
                                                          "password": "wrong-Secret-123"}, timeout=5)
    body = assert_epicor_error(response, 401)
    assert "wrong-Secret-123" not in response.text and body["ErrorType"] is None
    unknown_instance = requests.post(api.info["token_url"].replace("KineticLive", "Nope"),
                                     data={"username": "x", "password": "y"}, timeout=5)
    assert_epicor_error(unknown_instance, 404)


def test_v2_requires_the_api_key_header_or_query_parameter(api: Api) -> None:
    token = api.token()
    no_key = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, {"Authorization": f"Bearer {token}"})
    assert_epicor_error(no_key, 401, contains="API key")
    wrong_key = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1},
                        {"Authorization": f"Bearer {token}", "x-api-key": "nope"})
    assert_epicor_error(wrong_key, 401)
    by_query = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1, "api-key": api.creds["api_key"]},
                       {"Authorization": f"Bearer {token}"})
    assert by_query.status_code == 200


def test_v2_requires_an_identity_bearer_or_basic(api: Api) -> None:
    key_only = {"x-api-key": api.creds["api_key"]}
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", None, key_only), 401)
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", None, {**key_only, "Authorization": "Bearer forged"}), 401)
    good = base64.b64encode(f"{api.creds['username']}:{api.creds['password']}".encode()).decode()
    bad = base64.b64encode(f"{api.creds['username']}:nope".encode()).decode()
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, {**key_only, "Authorization": f"Basic {good}"}).status_code == 200
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", None, {**key_only, "Authorization": f"Basic {bad}"}), 401)


def test_expired_tokens_are_refused_until_a_new_one_is_fetched(api: Api) -> None:
    headers = api.headers(api.token())
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers).status_code == 200
    api.control("expire-tokens")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers), 401, contains="expired")
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, api.headers(api.token())).status_code == 200


def test_token_lifetime_is_a_setting() -> None:
    with start_sandbox(EpicorSandbox(SandboxOptions(records=3, token_ttl=1))) as server:
        api = Api(server)
        token = api.token()
        assert requests.post(api.info["token_url"], data={"username": api.creds["username"],
                                                          "password": api.creds["password"]},
                             timeout=5).json()["ExpiresIn"] == 1
        assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, api.headers(token)).status_code == 200
        time.sleep(1.1)
        assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, api.headers(token)), 401)


def test_unknown_company_service_set_and_method_answer_404(api: Api) -> None:
    wrong_company = requests.get(api.base.replace("/EPIC06", "/NOPE") + "/Erp.BO.VendorSvc/Vendors",
                                 headers=api.headers(), timeout=5)
    assert_epicor_error(wrong_company, 404, "Epicor.RESTApi.ErrorHandling.ApiException", "NOPE")
    assert_epicor_error(api.get("Erp.BO.NoSuchSvc/Things"), 404, "Epicor.RESTApi.ErrorHandling.ApiException")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendorz"), 404)
    assert_epicor_error(api.post(f"{INVOICES}/NoSuchMethod", {}), 404)
    # names of services and sets resolve without regard to case, as Epicor's do
    assert api.get("erp.bo.vendorsvc/vendors", {"$top": 1}).status_code == 200


def test_post_needs_a_json_body_and_every_method_parameter(api: Api) -> None:
    not_json = requests.post(f"{api.base}/{INVOICES}/GetNewAPInvHedInvoice", data="ds=1",
                             headers={**api.headers(), "Content-Type": "application/x-www-form-urlencoded"}, timeout=5)
    assert_epicor_error(not_json, 400, contains="Unable to deserialize")
    missing = api.post(f"{INVOICES}/GetNewAPInvHedInvoice", {"ds": {}})
    assert_epicor_error(missing, 400, contains="Parameter cGroupID is not found in the input object")
    assert_epicor_error(api.get(f"{INVOICES}/UpdateMaster"), 405)  # only classic reads answer GET


# ---- OData reads --------------------------------------------------------------------------------

def test_entity_set_envelope_and_100_row_cap(api: Api) -> None:
    body = api.get("Erp.BO.VendorSvc/Vendors").json()
    assert body["@odata.context"].endswith("/$metadata#Vendors")
    assert len(body["value"]) == 100  # no $top: capped at 100
    assert len(api.get("Erp.BO.VendorSvc/Vendors", {"$top": 500}).json()["value"]) == 100
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 0}).json()["value"] == []
    row = body["value"][0]
    assert {"VendorNum", "VendorID", "Name", "Address1", "ZIP", "Inactive", "SysRevID", "SysRowID", "RowMod"} <= set(row)
    assert isinstance(row["VendorNum"], int) and isinstance(row["Inactive"], bool)
    assert "ChangeDate" not in row  # not on the Vendor row


def test_paging_edges_empty_exact_and_last_page(api: Api) -> None:
    total = api.get("Erp.BO.VendorSvc/Vendors", {"$count": "true", "$top": 1}).json()["@odata.count"]
    assert total == RECORDS
    seen: list[int] = []
    skip = 0
    sizes = []
    while True:
        page = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 60, "$skip": skip}).json()["value"]
        sizes.append(len(page))
        seen.extend(r["VendorNum"] for r in page)
        if len(page) < 60:
            break
        skip += 60
    assert sizes == [60, 60, 60, 60, 10] and len(set(seen)) == RECORDS and seen == sorted(seen)
    exact = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 50, "$skip": 200}).json()["value"]
    assert len(exact) == 50
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 50, "$skip": 250}).json()["value"] == []
    empty = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "VendorID eq 'NO-SUCH'"}).json()
    assert empty["value"] == []


def test_filter_grammar_and_case_insensitive_strings(api: Api) -> None:
    vendor = active_vendor(api)
    by_id = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": f"VendorID eq '{vendor['VendorID'].lower()}'"}).json()
    assert [r["VendorNum"] for r in by_id["value"]] == [vendor["VendorNum"]]
    window = api.get("Erp.BO.VendorSvc/Vendors", {
        "$filter": "(VendorNum gt 10 and VendorNum le 20) or VendorNum eq 3", "$top": 100}).json()["value"]
    assert sorted(r["VendorNum"] for r in window) == [3, *range(11, 21)]
    stem = vendor["Name"].split()[0]
    contains = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": f"contains(Name,'{stem.upper()}')", "$top": 100}).json()
    assert contains["value"] and all(stem.casefold() in r["Name"].casefold() for r in contains["value"])
    starts = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": f"startswith(tolower(Name),'{stem.lower()}')"}).json()
    assert {r["VendorNum"] for r in starts["value"]} <= {r["VendorNum"] for r in contains["value"]}
    inactive = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "not (Inactive eq false)", "$top": 100}).json()["value"]
    assert inactive and all(r["Inactive"] for r in inactive)
    part = api.entities("po_lines")[0]["PartNum"]
    with_part = api.get("Erp.BO.POSvc/POes", {"$filter": f"PODetails/any(d: d/PartNum eq '{part}')",
                                              "$expand": "PODetails", "$top": 100}).json()["value"]
    assert with_part and all(any(d["PartNum"] == part for d in po["PODetails"]) for po in with_part)


def test_filter_errors_are_odata_exceptions(api: Api) -> None:
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "Nope eq 1"}), 400, "ODataException",
                        "Could not find a property named 'Nope' on type 'Erp.Tablesets.VendorRow'")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "Name eq 5"}), 400, "ODataException",
                        "incompatible types")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "VendorNum eq"}), 400, "ODataException")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "VendorNum EQ 1"}), 400, "ODataException")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$select": "Bogus"}), 400, "ODataException")
    assert_epicor_error(api.get("Erp.BO.VendorSvc/Vendors", {"$top": "-1"}), 400, "ODataException")
    assert_epicor_error(api.get(f"{INVOICES}/APInvoices", {"$expand": "Lines"}), 400, "ODataException")


def test_select_expand_orderby_and_count(api: Api) -> None:
    body = api.get(f"{INVOICES}/APInvoices", {"$select": "VendorNum,InvoiceNum,InvoiceAmt", "$expand": "APInvDtls",
                                              "$orderby": "InvoiceAmt desc", "$top": 5, "$count": "true"}).json()
    assert body["@odata.count"] == RECORDS
    rows = body["value"]
    assert all(set(r) == {"VendorNum", "InvoiceNum", "InvoiceAmt", "APInvDtls"} for r in rows)
    assert [r["InvoiceAmt"] for r in rows] == sorted((r["InvoiceAmt"] for r in rows), reverse=True)
    for row in rows:
        assert row["APInvDtls"] and round(sum(d["ExtCost"] for d in row["APInvDtls"]), 2) == row["InvoiceAmt"]
        assert all(d["InvoiceNum"] == row["InvoiceNum"] for d in row["APInvDtls"])


def test_single_entity_by_composite_key_and_navigation(api: Api) -> None:
    invoice = api.entities("ap_invoices")[0]
    key = f"('EPIC06',{invoice['VendorNum']},'{invoice['InvoiceNum']}')"
    one = api.get(f"{INVOICES}/APInvoices{key}").json()
    assert one["InvoiceNum"] == invoice["InvoiceNum"] and "value" not in one  # unwrapped
    assert one["@odata.context"].endswith("#APInvoices/$entity")
    lines = api.get(f"{INVOICES}/APInvoices{key}/APInvDtls").json()["value"]
    assert [line["InvoiceLine"] for line in lines] == list(range(1, len(invoice["APInvDtls"]) + 1))
    assert_epicor_error(api.get(f"{INVOICES}/APInvoices('EPIC06',{invoice['VendorNum']},'NOPE')"), 404,
                        "Ice.Common.RecordNotFoundException")
    assert_epicor_error(api.get(f"{INVOICES}/APInvoices('EPIC06','x','y')"), 400, "ODataException")
    named = api.get("Erp.BO.POSvc/POes(Company='EPIC06',PONum=1001)", {"$expand": "PODetails"}).json()
    assert named["PONum"] == 1001 and named["PODetails"] and named["PODetails"][0]["PONUM"] == 1001


def test_change_filters_accept_every_literal_form(api: Api) -> None:
    invoices = sorted(api.entities("ap_invoices"), key=lambda r: r["ChangeDate"])
    pivot = invoices[len(invoices) // 2]["ChangeDate"]  # e.g. 2024-05-01T12:34:56.789
    expected = sum(1 for r in invoices if r["ChangeDate"] >= pivot)
    forms = [f"{pivot}Z", f"datetime'{pivot}'", f"'{pivot}'", f"{pivot}+00:00", f"datetimeoffset'{pivot}Z'"]
    for literal in forms:
        body = api.get(f"{INVOICES}/APInvoices", {"$filter": f"ChangeDate ge {literal}", "$count": "true",
                                                  "$top": 1}).json()
        assert body["@odata.count"] == expected, literal
    # an offset is converted: 05:00 at -05:00 is 10:00 UTC
    assert api.get(f"{INVOICES}/APInvoices", {"$filter": "ChangeDate ge 2000-01-01T05:00:00-05:00"}).status_code == 200
    assert_epicor_error(api.get(f"{INVOICES}/APInvoices", {"$filter": "ChangeDate ge datetime'yesterday'"}), 400,
                        "ODataException")


def test_tick_moves_change_date_and_sysrevid_forward(api: Api) -> None:
    before = api.get(f"{INVOICES}/APInvoices", {"$orderby": "ChangeDate desc", "$top": 1}).json()["value"][0]
    max_rev = max(r["SysRevID"] for r in api.entities("vendors"))
    changed = api.control("tick", {"count": 12})["changed"]
    assert len(changed) == 12
    invoices_changed = {(c["key"]["VendorNum"], c["key"]["InvoiceNum"]) for c in changed if c["entity"] == "ap_invoices"}
    vendors_changed = {c["key"]["VendorNum"] for c in changed if c["entity"] == "vendors"}
    after = api.get(f"{INVOICES}/APInvoices", {"$filter": f"ChangeDate gt {before['ChangeDate']}Z", "$top": 100}).json()
    assert {(r["VendorNum"], r["InvoiceNum"]) for r in after["value"]} == invoices_changed
    by_rev = api.get("Erp.BO.VendorSvc/Vendors", {"$filter": f"SysRevID gt {max_rev}", "$orderby": "SysRevID"}).json()
    assert {r["VendorNum"] for r in by_rev["value"]} == vendors_changed
    revs = [r["SysRevID"] for r in by_rev["value"]]
    assert revs == sorted(revs)


# ---- writes and business rules ---------------------------------------------------------------------

def test_vendor_create_update_and_duplicate(api: Api) -> None:
    created = api.post("Erp.BO.VendorSvc/Vendors", {"Company": "EPIC06", "VendorID": "NEWCO1", "Name": "New Co",
                                                    "Address1": "1 Elm St", "City": "Austin", "State": "TX"})
    assert created.status_code == 201
    row = created.json()
    assert row["VendorNum"] == RECORDS + 1 and row["TermsCode"] == "N30" and row["SysRevID"] > 0
    duplicate = api.post("Erp.BO.VendorSvc/Vendors", {"VendorID": "newco1", "Name": "Other"})
    assert_epicor_error(duplicate, 409, "Ice.Common.DuplicateRecordException", "NEWCO1")
    assert_epicor_error(api.post("Erp.BO.VendorSvc/Vendors", {"VendorID": "X1"}), 400, contains="name is required")
    assert_epicor_error(api.post("Erp.BO.VendorSvc/Vendors", {"VendorID": "TOOLONGID9", "Name": "x"}), 400,
                        contains="longer than 8")
    path = f"{api.base}/Erp.BO.VendorSvc/Vendors('EPIC06',{row['VendorNum']})"
    patched = requests.patch(path, json={"PhoneNum": "555-0100"}, headers=api.headers(), timeout=5)
    assert patched.status_code == 204 and not patched.content
    again = requests.get(path, headers=api.headers(), timeout=5).json()
    assert again["PhoneNum"] == "555-0100" and again["SysRevID"] > row["SysRevID"]
    taken = active_vendor(api)["VendorID"]
    assert_epicor_error(requests.patch(path, json={"VendorID": taken}, headers=api.headers(), timeout=5), 409)
    by_id = api.method("Erp.BO.VendorSvc", "GetByVendID", {"vendorID": "NEWCO1"})
    assert by_id["returnObj"]["Vendor"][0]["VendorNum"] == row["VendorNum"]


def test_invoice_group_create_and_duplicate(api: Api) -> None:
    created = api.post("Erp.BO.APInvGrpSvc/APInvGrps", {"Company": "EPIC06", "GroupID": "AP0501"})
    assert created.status_code == 201 and created.json()["ActiveUserID"] == ""
    assert_epicor_error(api.post("Erp.BO.APInvGrpSvc/APInvGrps", {"Company": "EPIC06", "GroupID": "ap0501"}), 409)
    found = api.get("Erp.BO.APInvGrpSvc/APInvGrps", {"$filter": "GroupID eq 'AP0501'"}).json()["value"]
    assert [g["GroupID"] for g in found] == ["AP0501"]


def test_full_invoice_pattern_locks_saves_and_unlocks(api: Api) -> None:
    vendor = active_vendor(api)
    api.post("Erp.BO.APInvGrpSvc/APInvGrps", {"Company": "EPIC06", "GroupID": "AP0501"})
    ds = new_invoice_ds(api, "AP0501", vendor["VendorID"], "ST-1001", 180.0)
    header = ds["APInvHed"][-1]
    assert header["RowMod"] == "A" and header["GroupID"] == "AP0501" and header["VendorNum"] == vendor["VendorNum"]
    assert header["TermsCode"] == vendor["TermsCode"] and header["DueDate"] > header["InvoiceDate"]
    assert api.group("AP0501")["ActiveUserID"] == api.creds["username"]  # locked while entering
    saved = api.method(INVOICES, "UpdateMaster", update_master(ds, "AP0501"))["parameters"]
    assert saved["lUpdateRan"] is True and saved["ds"]["APInvHed"][0]["RowMod"] == ""
    ds = saved["ds"]
    ds = api.method(INVOICES, "GetNewAPInvDtlMiscellaneous", {"ds": ds, "iVendorNum": vendor["VendorNum"],
                                                              "cInvoiceNum": "ST-1001"})["parameters"]["ds"]
    line = ds["APInvDtl"][-1]
    assert line["InvoiceLine"] == 1 and line["RowMod"] == "A"
    line.update({"Description": "Freight", "GLAccount": "6500-100"})
    ds = api.method(INVOICES, "ChangeVendorQty", {"ds": ds, "ProposedVendorQty": 3})["parameters"]["ds"]
    ds = api.method(INVOICES, "ChangeUnitCost", {"ds": ds, "ProposedUnitCost": 60})["parameters"]["ds"]
    assert ds["APInvDtl"][-1]["ExtCost"] == 180.0
    first_rev = saved["ds"]["APInvHed"][0]["SysRevID"]
    ds = api.method(INVOICES, "Update", {"ds": ds})["parameters"]["ds"]
    head = ds["APInvHed"][0]
    assert head["InvoiceAmt"] == 180.0 and head["InvoiceBal"] == 180.0 and head["OpenPayable"] is True
    assert head["SysRevID"] > first_rev and head["ChangedBy"] == api.creds["username"] and head["ChangeDate"]
    assert ds["APInvDtl"][0]["GLAccount"] == "6500|100"
    assert api.method("Erp.BO.APInvGrpSvc", "UnlockGroup", {"InGroupID": "AP0501"}) == {}
    assert api.group("AP0501")["ActiveUserID"] == ""
    by_id = requests.get(f"{api.base}/{INVOICES}/GetByID", params={"vendorNum": vendor["VendorNum"],
                                                                   "invoiceNum": "ST-1001"},
                         headers=api.headers(), timeout=5).json()
    assert [r["InvoiceLine"] for r in by_id["returnObj"]["APInvDtl"]] == [1]


def test_invoice_business_rules(api: Api) -> None:
    vendor = active_vendor(api)
    assert_epicor_error(api.post(f"{INVOICES}/GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": "NOGRP"}), 400,
                        contains="'NOGRP' was not found")
    ds = new_invoice_ds(api, "AP0101", vendor["VendorID"], "R-1", 0.0)
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": ds}), 400, contains="Invoice amount is required")
    ds = api.method(INVOICES, "ChangeInvoiceVendorAmt", {"ds": ds, "ProposedInvoiceVendorAmt": 10})["parameters"]["ds"]
    assert_epicor_error(api.post(f"{INVOICES}/UpdateMaster", {"ds": ds, "cGroupID": "AP0101"}), 400,
                        contains="Parameter cTableName is not found")
    saved = api.method(INVOICES, "UpdateMaster", update_master(ds, "AP0101"))["parameters"]["ds"]
    again = new_invoice_ds(api, "AP0101", vendor["VendorID"], "r-1", 10.0)  # same key, other case
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": again}), 409, "Ice.Common.DuplicateRecordException")
    line_ds = api.method(INVOICES, "GetNewAPInvDtlMiscellaneous", {"ds": saved, "iVendorNum": vendor["VendorNum"],
                                                                   "cInvoiceNum": "R-1"})["parameters"]["ds"]
    line_ds["APInvDtl"][-1].update({"Description": "x", "GLAccount": "9999|999", "ExtCost": 10})
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": line_ds}), 400, contains="GL account 9999|999")
    line_ds["APInvDtl"][-1]["GLAccount"] = ""
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": line_ds}), 400, contains="GL account is required")
    stale = dict(saved["APInvHed"][0], RowMod="U", Description="late edit", SysRevID=1)
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": {"APInvHed": [stale]}}), 400,
                        contains="modified by another user")
    assert_epicor_error(api.post(f"{INVOICES}/GetNewAPInvDtlMiscellaneous", {
        "ds": {}, "iVendorNum": vendor["VendorNum"], "cInvoiceNum": "NOT-SAVED"}), 400,
        contains="must be saved before lines")
    assert_epicor_error(api.post(f"{INVOICES}/ChangeVendorID", {"ds": ds, "ProposedVendorID": "NOSUCH",
                                                                "confirmCheck": False}), 400,
                        contains="Supplier 'NOSUCH' is not valid")


UPDATE_MASTER_OUTPUTS = {"ds", "grpTotalInvAmt", "requiresUserInput", "opMessage", "opMsgChkBankRef", "opChkRevMsg",
                         "lEnableGenLegalNum", "lUpdateRan", "opDUAMsg"}


def stored_invoice(api: Api, vendor_num: int, invoice_num: str) -> dict[str, Any] | None:
    return next((r for r in api.entities("ap_invoices")
                 if r["VendorNum"] == vendor_num and r["InvoiceNum"] == invoice_num), None)


def test_methods_refuse_a_missing_declared_input(api: Api) -> None:
    vendor = active_vendor(api)
    po = next(p for p in api.entities("purchase_orders") if p["VendorNum"] == vendor["VendorNum"])
    ds = api.method(INVOICES, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": "AP0101"})["parameters"]["ds"]
    refused = {
        "ChangeVendorID": ({"ds": ds, "ProposedVendorID": vendor["VendorID"]}, "confirmCheck"),
        "ChangeRefPONum": ({"ds": ds, "ProposedRefPONum": po["PONum"]}, "confirmCheck"),
        "ChangeInvoiceDateEx": ({"ds": ds, "ProposedInvoiceDate": "2024-05-01T00:00:00", "cMessageText": ""},
                                "recalcAmts"),
        "ChangeInvoiceVendorAmt": ({"ProposedInvoiceVendorAmt": 5}, "ds"),
    }
    for method, (body, missing) in refused.items():
        assert_epicor_error(api.post(f"{INVOICES}/{method}", body), 400,
                            contains=f"Parameter {missing} is not found in the input object")
    by_vendor = api.method(INVOICES, "ChangeVendorID", {"ds": ds, "ProposedVendorID": vendor["VendorID"],
                                                        "confirmCheck": True})["parameters"]
    assert set(by_vendor) == {"ds", "confirmMsg"}
    assert by_vendor["ds"]["APInvHed"][-1]["VendorNum"] == vendor["VendorNum"]
    by_po = api.method(INVOICES, "ChangeRefPONum", {"ds": by_vendor["ds"], "ProposedRefPONum": po["PONum"],
                                                    "confirmCheck": False})["parameters"]
    assert set(by_po) == {"ds", "confirmMsg"} and by_po["ds"]["APInvHed"][-1]["REFPONum"] == po["PONum"]
    dated = api.method(INVOICES, "ChangeInvoiceDateEx", {"ds": by_po["ds"], "recalcAmts": "",
                                                         "ProposedInvoiceDate": "2024-05-01T00:00:00"})["parameters"]
    assert set(dated) == {"ds", "cMessageText"}  # cMessageText is an output only
    assert_epicor_error(api.post("Erp.BO.APInvGrpSvc/UnlockGroup", {}), 400,
                        contains="Parameter InGroupID is not found")


def test_update_master_answers_its_documented_outputs(api: Api) -> None:
    vendor = active_vendor(api)
    ds = new_invoice_ds(api, "AP0101", vendor["VendorID"], "OUT-1", 25.0)
    saved = api.method(INVOICES, "UpdateMaster", update_master(ds, "AP0101"))["parameters"]
    assert set(saved) == UPDATE_MASTER_OUTPUTS
    assert saved["lUpdateRan"] is True and saved["requiresUserInput"] is False and saved["opMessage"] == ""
    assert saved["grpTotalInvAmt"] >= 25.0 and saved["ds"]["APInvHed"][0]["InvoiceNum"] == "OUT-1"


def test_update_master_hold_answers_200_without_saving(api: Api) -> None:
    vendor = active_vendor(api)
    hold = api.control("epicor/update-master-holds", {"invoice_num": "HOLD-1", "op_message": "Bank reference?"})
    assert hold["count"] == 1 and hold["requires_user_input"] is True and hold["update_ran"] is False
    other = new_invoice_ds(api, "AP0101", vendor["VendorID"], "NOT-HELD-1", 5.0)
    assert api.method(INVOICES, "UpdateMaster", update_master(other, "AP0101"))["parameters"]["lUpdateRan"] is True
    ds = new_invoice_ds(api, "AP0101", vendor["VendorID"], "HOLD-1", 12.0)
    held = api.method(INVOICES, "UpdateMaster", update_master(ds, "AP0101"))["parameters"]
    assert set(held) == UPDATE_MASTER_OUTPUTS
    assert (held["lUpdateRan"], held["requiresUserInput"], held["opMessage"]) == (False, True, "Bank reference?")
    assert held["ds"]["APInvHed"][-1]["RowMod"] == "A"  # handed back unsaved
    assert stored_invoice(api, vendor["VendorNum"], "HOLD-1") is None
    again = api.method(INVOICES, "UpdateMaster", update_master(ds, "AP0101"))["parameters"]  # the hold is spent
    assert again["lUpdateRan"] is True and stored_invoice(api, vendor["VendorNum"], "HOLD-1") is not None
    bad = requests.post(f"{api.root}/_sandbox/epicor/update-master-holds", json={"count": -1}, timeout=5)
    assert bad.status_code == 400



def test_the_method_table_declares_the_confirmed_inputs_and_outputs() -> None:
    from sandboxes.epicor.methods import METHODS

    invoices = METHODS[INVOICES]
    declared = {name: (set(invoices[name.casefold()].inputs), set(invoices[name.casefold()].outputs))
                for name in ("ChangeVendorID", "ChangeRefPONum", "ChangeInvoiceDateEx", "UpdateMaster")}
    assert declared["ChangeVendorID"] == ({"ds", "ProposedVendorID", "confirmCheck"}, {"ds", "confirmMsg"})
    assert declared["ChangeRefPONum"] == ({"ds", "ProposedRefPONum", "confirmCheck"}, {"ds", "confirmMsg"})
    assert declared["ChangeInvoiceDateEx"] == ({"ds", "ProposedInvoiceDate", "recalcAmts"}, {"ds", "cMessageText"})
    assert declared["UpdateMaster"][1] == UPDATE_MASTER_OUTPUTS
    by_id = invoices["getbyid"]
    assert by_id.inputs == ("vendorNum", "invoiceNum") and by_id.read and by_id.returns and not by_id.outputs


def test_an_undeclared_input_is_ignored_and_never_echoed(api: Api) -> None:
    vendor = active_vendor(api)
    ds = api.method(INVOICES, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": "AP0101", "extra": 1})["parameters"]
    assert set(ds) == {"ds"}
    ds = api.method(INVOICES, "ChangeVendorID", {"ds": ds["ds"], "ProposedVendorID": vendor["VendorID"],
                                                 "confirmCheck": False, "confirmMsg": "asked?"})["parameters"]
    assert set(ds) == {"ds", "confirmMsg"} and ds["confirmMsg"] == ""  # an output, not the input sent
    dated = api.method(INVOICES, "ChangeInvoiceDateEx", {"ds": ds["ds"], "ProposedInvoiceDate": "2024-05-01T00:00:00",
                                                         "recalcAmts": "", "cMessageText": "sent"})["parameters"]
    assert dated["cMessageText"] == "" and dated["ds"]["APInvHed"][-1]["InvoiceDate"] == "2024-05-01T00:00:00"
    assert api.method("Erp.BO.APInvGrpSvc", "UnlockGroup", {"InGroupID": "AP0101", "force": True}) == {}


def test_page_size_when_top_is_absent_is_a_setting_under_the_cap() -> None:
    settings = EpicorSandboxSettings(page_size=30, max_top=60)
    with start_sandbox(EpicorSandbox(SandboxOptions(seed=3, records=90), settings)) as server:
        api = Api(server)
        assert len(api.get("Erp.BO.VendorSvc/Vendors").json()["value"]) == 30  # no $top: the page size
        assert len(api.get("Erp.BO.VendorSvc/Vendors", {"$top": 45}).json()["value"]) == 45
        assert len(api.get("Erp.BO.VendorSvc/Vendors", {"$top": 500}).json()["value"]) == 60  # capped
        assert EpicorSandboxSettings().page_size == 100 == EpicorSandboxSettings().max_top


def test_get_by_id_answers_get_with_the_tableset(api: Api) -> None:
    invoice = next(r for r in api.entities("ap_invoices") if len(r["APInvDtls"]) > 1)
    url = f"{api.base}/{INVOICES}/GetByID"
    keys = {"vendorNum": invoice["VendorNum"], "invoiceNum": invoice["InvoiceNum"].lower()}
    body = requests.get(url, params=keys, headers=api.headers(), timeout=5).json()
    (head,) = body["returnObj"]["APInvHed"]
    assert (head["VendorNum"], head["InvoiceNum"]) == (invoice["VendorNum"], invoice["InvoiceNum"])
    assert [d["InvoiceLine"] for d in body["returnObj"]["APInvDtl"]] == [d["InvoiceLine"] for d in invoice["APInvDtls"]]
    missing = requests.get(url, params={**keys, "invoiceNum": "NO-SUCH"}, headers=api.headers(), timeout=5)
    assert_epicor_error(missing, 404, "Ice.Common.RecordNotFoundException")
    no_keys = requests.get(url, params={"vendorNum": invoice["VendorNum"]}, headers=api.headers(), timeout=5)
    assert_epicor_error(no_keys, 400, contains="Parameter invoiceNum is not found")


def test_lost_answers_are_acted_on_then_fail(api: Api) -> None:
    vendor = active_vendor(api)
    ds = new_invoice_ds(api, "AP0101", vendor["VendorID"], "LOST-ANS-1", 9.0)
    api.control("epicor/lost-answers", {"path_contains": "UpdateMaster", "skip": 1, "count": 1, "status": 504})
    first = new_invoice_ds(api, "AP0101", vendor["VendorID"], "LOST-ANS-0", 9.0)
    assert api.post(f"{INVOICES}/UpdateMaster", update_master(first, "AP0101")).status_code == 200  # skipped
    lost = api.post(f"{INVOICES}/UpdateMaster", update_master(ds, "AP0101"))
    assert_epicor_error(lost, 504)
    assert stored_invoice(api, vendor["VendorNum"], "LOST-ANS-1") is not None  # the server acted
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}).status_code == 200  # only once, only there


def test_duplicate_status_is_a_setting() -> None:
    settings = EpicorSandboxSettings(duplicate_status=400)
    with start_sandbox(EpicorSandbox(SandboxOptions(records=5), settings)) as server:
        api = Api(server)
        vendor = active_vendor(api)
        saved = api.method(INVOICES, "UpdateMaster", update_master(
            new_invoice_ds(api, "AP0101", vendor["VendorID"], "TWICE-1", 3.0), "AP0101"))["parameters"]
        assert saved["lUpdateRan"] is True
        again = new_invoice_ds(api, "AP0101", vendor["VendorID"], "TWICE-1", 3.0)
        assert_epicor_error(api.post(f"{INVOICES}/UpdateMaster", update_master(again, "AP0101")), 400,
                            "Ice.BLException", "already exists")
        assert_epicor_error(api.post("Erp.BO.APInvGrpSvc/APInvGrps", {"GroupID": "AP0101"}), 400, "Ice.BLException")


def test_group_locked_by_another_user_refuses_writes(api: Api) -> None:
    vendor = active_vendor(api)
    assert api.group("APJS01")["ActiveUserID"] == "jsmith"
    assert_epicor_error(api.post(f"{INVOICES}/GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": "APJS01"}), 400,
                        contains="in use by jsmith")
    # a tableset aimed at the locked group is refused at save time too
    ds = new_invoice_ds(api, "AP0101", vendor["VendorID"], "LOCK-1", 5.0)
    ds["APInvHed"][-1]["GroupID"] = "APJS01"
    assert_epicor_error(api.post(f"{INVOICES}/Update", {"ds": ds}), 400, contains="in use by jsmith")
    # the holder may work in it
    jsmith = base64.b64encode(b"jsmith:jsmith-pass-2").decode()
    as_jsmith = {"Authorization": f"Basic {jsmith}", "x-api-key": api.creds["api_key"]}
    mine = new_invoice_ds(api, "APJS01", vendor["VendorID"], "JS-1", 5.0, as_jsmith)
    assert api.post(f"{INVOICES}/Update", {"ds": mine}, as_jsmith).status_code == 200
    assert api.group("APJS01")["ActiveUserID"] == "jsmith"


def test_odata_delete_of_unposted_invoice(api: Api) -> None:
    unposted = next(r for r in api.entities("ap_invoices") if not r["Posted"])
    posted = next(r for r in api.entities("ap_invoices") if r["Posted"])
    path = f"{api.base}/{INVOICES}/APInvoices('EPIC06',{unposted['VendorNum']},'{unposted['InvoiceNum']}')"
    assert requests.delete(path, headers=api.headers(), timeout=5).status_code == 204
    assert requests.get(path, headers=api.headers(), timeout=5).status_code == 404
    posted_path = f"{api.base}/{INVOICES}/APInvoices('EPIC06',{posted['VendorNum']},'{posted['InvoiceNum']}')"
    assert_epicor_error(requests.delete(posted_path, headers=api.headers(), timeout=5), 400, contains="posted")


def test_payment_entry_applies_to_a_posted_invoice(api: Api) -> None:
    vendor = active_vendor(api)
    api.control("entities/ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "PAY-1", "Posted": True,
                                         "GroupID": "", "InvoiceDate": "2024-05-01", "lines": [
                                             {"Description": "Parts", "VendorQty": 2, "UnitCost": 50,
                                              "GLAccount": "5100|100"}]})
    api.control("entities/ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "UNPOSTED-1",
                                         "Posted": False, "GroupID": "AP0101", "InvoiceDate": "2024-05-01",
                                         "lines": [{"Description": "x", "ExtCost": 10, "GLAccount": "5100|100"}]})
    pay = "Erp.BO.PaymentEntrySvc"
    ds = api.method(pay, "GetNewCheckHed", {"ds": {}})["parameters"]["ds"]
    head = ds["CheckHed"][-1]
    head.update({"GroupID": "CHK01", "XRefCheckNum": "ST-PMT-9"})
    ds = api.method(pay, "OnChangeVendor", {"pcVendorID": vendor["VendorID"], "ds": ds})["parameters"]["ds"]
    ds = api.method(pay, "OnChangeCheckDate", {"pdtCheckDate": "2024-06-01T00:00:00", "ds": ds})["parameters"]["ds"]
    ds = api.method(pay, "GetNewAPTran", {"ds": ds, "headNum": head["HeadNum"], "apTranNo": 0,
                                          "invoiceNum": "PAY-1"})["parameters"]["ds"]
    assert_epicor_error(api.post(f"{pay}/OnChangeInvoiceNum", {"pcInvoiceNum": "UNPOSTED-1",
                                                               "pcChangeExchangeRateResponse": "?", "ds": ds}), 400,
                        contains="has not been posted")
    ds = api.method(pay, "OnChangeInvoiceNum", {"pcInvoiceNum": "PAY-1", "pcChangeExchangeRateResponse": "?",
                                                "ds": ds})["parameters"]["ds"]
    assert ds["APTran"][-1]["DocTranAmt"] == 100.0  # defaults to the open balance
    over = api.method(pay, "OnChangeDocTranAmt", {"pdDocTranAmt": 150, "ds": ds})["parameters"]["ds"]
    assert_epicor_error(api.post(f"{pay}/Update", {"ds": over}), 400, contains="exceeds the balance")
    ds = api.method(pay, "OnChangeDocTranAmt", {"pdDocTranAmt": 40, "ds": ds})["parameters"]["ds"]
    saved = api.method(pay, "Update", {"ds": ds})["parameters"]["ds"]
    assert saved["CheckHed"][0]["CheckAmt"] == 40.0 and saved["APTran"][0]["InvoiceNum"] == "PAY-1"
    assert_epicor_error(api.post(f"{pay}/Update", {"ds": ds}), 409)  # same HeadNum twice
    invoice = next(r for r in api.entities("ap_invoices") if r["InvoiceNum"] == "PAY-1")
    assert invoice["InvoiceBal"] == 60.0 and invoice["OpenPayable"] is True
    found = api.get(f"{pay}/PaymentEntries", {"$filter": f"VendorNum eq {vendor['VendorNum']} and "
                                                         "XRefCheckNum eq 'ST-PMT-9'", "$expand": "APTrans"}).json()
    assert found["value"][0]["APTrans"][0]["DocTranAmt"] == 40.0
    no_group = api.method(pay, "GetNewCheckHed", {"ds": {}})["parameters"]["ds"]
    no_group = api.method(pay, "OnChangeVendor", {"pcVendorID": vendor["VendorID"], "ds": no_group})["parameters"]["ds"]
    assert_epicor_error(api.post(f"{pay}/Update", {"ds": no_group}), 400, contains="payment group")


# ---- limits and faults ----------------------------------------------------------------------------

def test_no_rate_limit_by_default(api: Api) -> None:
    statuses = {api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}).status_code for _ in range(40)}
    assert statuses == {200}


def test_rate_limit_option_answers_epicor_429() -> None:
    with start_sandbox(EpicorSandbox(SandboxOptions(records=3, rate_limit=5))) as server:
        api = Api(server)
        headers = api.headers()
        responses_ = [api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers) for _ in range(12)]
        limited = [r for r in responses_ if r.status_code == 429]
        assert limited and len(limited) <= 8
        assert int(limited[0].headers["Retry-After"]) >= 1
        assert_epicor_error(limited[0], 429)


def test_burst_429_then_recovery(api: Api) -> None:
    headers = api.headers()
    api.control("faults", {"burst_429": 2, "retry_after": 3})
    first, second, third = (api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers) for _ in range(3))
    assert first.status_code == second.status_code == 429 and first.headers["Retry-After"] == "3"
    assert_epicor_error(first, 429)
    assert third.status_code == 200
    assert requests.get(f"{api.root}/_sandbox/stats", timeout=5).json()["rate_limited"] == 2


def test_fail_next_and_error_rate_use_epicor_shape(api: Api) -> None:
    headers = api.headers()
    api.control("faults", {"fail_next": 1, "error_status": 500})
    failed = api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers)
    body = assert_epicor_error(failed, 500)
    assert body["CorrelationId"] in body["ErrorMessage"]
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers).status_code == 200
    api.control("faults", {"error_rate": 1.0, "error_status": 503, "path_contains": "POSvc"})
    assert_epicor_error(api.get("Erp.BO.POSvc/POes", {"$top": 1}, headers), 503, contains="Server not ready")
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers).status_code == 200
    api.control("faults", {"replace": True})
    assert api.get("Erp.BO.POSvc/POes", {"$top": 1}, headers).status_code == 200


def test_latency_fault(api: Api) -> None:
    headers = api.headers()
    api.control("faults", {"latency_ms": 150})
    started = time.perf_counter()
    assert api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers).status_code == 200
    assert time.perf_counter() - started >= 0.15


# ---- control API ----------------------------------------------------------------------------------

def test_info_shape(api: Api) -> None:
    info = api.info
    assert set(info) == {"vendor", "api_base", "token_url", "credentials"}
    assert info["vendor"] == "epicor"
    assert info["api_base"] == f"{api.root}/KineticLive"
    assert info["token_url"] == f"{api.root}/KineticLive/TokenResource.svc/"
    assert set(info["credentials"]) == {"username", "password", "api_key", "company", "instance"}


def test_stats_count_requests_tokens_and_calls(api: Api) -> None:
    headers = api.headers(api.token())
    api.get("Erp.BO.VendorSvc/Vendors", {"$top": 1}, headers)
    api.get("Erp.BO.VendorSvc/Vendors", {"$filter": "Bad eq 1"}, headers)
    stats = requests.get(f"{api.root}/_sandbox/stats", timeout=5).json()
    assert stats["tokens_issued"] == 1
    assert stats["by_status"]["200"] >= 2 and stats["by_status"]["400"] == 1
    assert stats["calls:Erp.BO.VendorSvc/Vendors"] == 2


def test_reset_restores_the_deterministic_seed(api: Api) -> None:
    names = [v["Name"] for v in api.entities("vendors")]
    api.control("entities/vendors", {"VendorID": "TEMP1", "Name": "Temporary"})
    assert len(api.entities("vendors")) == RECORDS + 1
    api.control("reset")
    assert [v["Name"] for v in api.entities("vendors")] == names
    twin = EpicorSandbox(SandboxOptions(seed=11, records=RECORDS))
    assert [v["Name"] for v in twin.get_entities("vendors")] == names
    other = EpicorSandbox(SandboxOptions(seed=12, records=RECORDS))
    assert [v["Name"] for v in other.get_entities("vendors")] != names


def test_seed_has_near_duplicate_vendors_and_multi_line_documents(api: Api) -> None:
    vendors = api.entities("vendors")
    normalized: dict[str, int] = {}
    for vendor in vendors:
        key = "".join(ch for ch in vendor["Name"].casefold() if ch.isalnum())[:10]
        normalized[key] = normalized.get(key, 0) + 1
    assert any(count > 1 for count in normalized.values())
    assert len({v["VendorID"].casefold() for v in vendors}) == len(vendors)
    assert any(len(po["PODetails"]) > 1 for po in api.entities("purchase_orders"))
    assert any(len(inv["APInvDtls"]) > 1 for inv in api.entities("ap_invoices"))
    assert any(p["APTrans"] for p in api.entities("ap_payments"))


def test_put_entity_creates_and_changes_with_children(api: Api) -> None:
    vendor = active_vendor(api)
    stored = api.control("entities/ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "CTL-1",
                                                  "GroupID": "AP0101", "InvoiceDate": "2024-05-01", "lines": [
                                                      {"Description": "a", "VendorQty": 2, "UnitCost": 5,
                                                       "GLAccount": "5100|100"},
                                                      {"Description": "b", "ExtCost": 7.5, "GLAccount": "5100|100"}]})
    assert stored["InvoiceAmt"] == 17.5 and [d["InvoiceLine"] for d in stored["APInvDtls"]] == [1, 2]
    changed = api.control("entities/ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "CTL-1",
                                                   "Description": "changed", "ChangeDate": "2030-01-01T00:00:00.000"})
    assert changed["Description"] == "changed" and changed["ChangeDate"] == "2030-01-01T00:00:00.000"
    assert changed["SysRevID"] > stored["SysRevID"] and len(changed["APInvDtls"]) == 2
    po = api.control("entities/purchase_orders", {"VendorNum": vendor["VendorNum"], "lines": [
        {"PartNum": "P1", "LineDesc": "d", "OrderQty": 1, "UnitCost": 3}]})
    assert po["PONum"] > 1000 and po["PODetails"][0]["PONUM"] == po["PONum"]
    assert requests.post(f"{api.root}/_sandbox/entities/nonsense", json={}, timeout=5).status_code == 404
    assert requests.post(f"{api.root}/_sandbox/entities/ap_invoices", json={"Description": "no key"},
                         timeout=5).status_code == 400
    assert requests.get(f"{api.root}/_sandbox/entities/nonsense", timeout=5).status_code == 404
