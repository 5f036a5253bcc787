"""Epicor connector: exact request shapes (responses) and behaviour against the sandbox."""

from __future__ import annotations

import base64
import json
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from connectors.epicor import (
    EpicorApInvoice,
    EpicorConnector,
    EpicorGlAccount,
    EpicorPurchaseOrder,
    EpicorVendor,
    compare_ap_invoice,
    jsonable,
    odata_key,
    wanted_invoice_lines,
)
from mlconnector.http import AuthError, FatalError, NotFoundError, RetriableError
from mlconnector.http.runtime import build_runtime
from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.epicor import EpicorSandbox, EpicorSandboxSettings

API = "https://erp.example.com/KineticLive"
ODATA = f"{API}/api/v2/odata/EPIC06"
TOKEN_URL = f"{API}/TokenResource.svc/"
PASSWORD = "P@ss-word-Secret-77"
API_KEY = "ek_live_key_0123456789abcdef"
FAST = {"retry": {"base": 0.05, "max_wait": 2, "max_tries": 4}}
RECORDS = 2500
NOW = datetime(2024, 5, 2, tzinfo=timezone.utc)


def unit_connector(**overrides: Any) -> EpicorConnector:
    config = {"api_base": API, "company": "EPIC06", "instance": "KineticLive", **FAST, **overrides}
    return EpicorConnector.create(config, {"username": "svc", "password": PASSWORD, "api_key": API_KEY},
                                  build_runtime(""))


def query(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def add_token(rsps: responses.RequestsMock, token: str = "tok-1", ttl: int = 3600) -> None:
    rsps.add(responses.POST, TOKEN_URL, json={"AccessToken": token, "ExpiresIn": ttl, "TokenType": "Bearer"})


def invoice_row(n: int, change: str = "2024-05-01T10:00:00.000") -> dict[str, Any]:
    return {"Company": "EPIC06", "VendorNum": 7, "InvoiceNum": f"INV-{n:04d}", "InvoiceAmt": 10.5,
            "InvoiceBal": 10.5, "InvoiceDate": "2024-05-01T00:00:00", "ChangeDate": change, "SysRevID": 100 + n,
            "APInvDtls": [{"VendorNum": 7, "InvoiceNum": f"INV-{n:04d}", "InvoiceLine": 1, "ExtCost": 10.5,
                           "GLAccount": "6000|100"}]}


# ---- request shapes (responses) ------------------------------------------------------------------

@responses.activate
def test_token_request_and_v2_headers() -> None:
    add_token(responses)
    responses.add(responses.GET, f"{ODATA}/Erp.BO.VendorSvc/Vendors", json={"value": []})
    connector = unit_connector()
    assert connector.find_vendors(vendor_id="ACME") == []
    token_call, read = responses.calls
    assert parse_qs(token_call.request.body) == {"grant_type": ["password"], "username": ["svc"],
                                                 "password": [PASSWORD]}
    assert token_call.request.headers["x-api-key"] == API_KEY
    assert read.request.headers["Authorization"] == "Bearer tok-1"
    assert read.request.headers["x-api-key"] == API_KEY
    assert read.request.headers["Accept"] == "application/json"
    assert query(read) == {"$filter": "VendorID eq 'ACME'", "$orderby": "VendorNum", "$top": "100", "$skip": "0"}
    assert connector.call_count == 2


@responses.activate
def test_method_bodies_carry_amounts_as_numbers_and_dates_zone_less() -> None:
    add_token(responses)
    responses.add(responses.POST, f"{ODATA}/Erp.BO.APInvoiceSvc/ChangeInvoiceDateEx", json={"parameters": {"ds": {}}})
    connector = unit_connector()
    connector._ds("Erp.BO.APInvoiceSvc", "ChangeInvoiceDateEx", {
        "ds": {"APInvHed": [{"InvoiceAmt": Decimal("437.50"), "DueDate": date(2024, 6, 15)}]},
        "ProposedInvoiceDate": datetime(2024, 5, 1, 8, 30), "recalcAmts": ""})
    call = responses.calls[-1]
    assert call.request.headers["Content-Type"] == "application/json"
    assert json.loads(call.request.body) == {
        "ds": {"APInvHed": [{"InvoiceAmt": 437.5, "DueDate": "2024-06-15T00:00:00"}]},
        "ProposedInvoiceDate": "2024-05-01T08:30:00", "recalcAmts": ""}


@responses.activate
def test_basic_mode_sends_basic_auth_and_call_settings_without_a_token_call() -> None:
    responses.add(responses.GET, f"{ODATA}/Erp.BO.APInvGrpSvc/APInvGrps", json={"value": [{"GroupID": "AP0501"}]})
    connector = unit_connector(auth_mode="basic", plant="MfgSys", license_type="00000003-b615-4300-957b-34956697f040")
    group = connector.get_group("AP0501")
    assert group is not None and group.GroupID == "AP0501"
    (call,) = responses.calls
    assert call.request.headers["Authorization"] == "Basic " + base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
    assert call.request.headers["x-api-key"] == API_KEY
    assert json.loads(call.request.headers["CallSettings"]) == {"Company": "EPIC06", "Plant": "MfgSys"}
    assert json.loads(call.request.headers["License"])["ClaimedLicense"].startswith("00000003")
    assert query(call)["$filter"] == "GroupID eq 'AP0501'"


@responses.activate
def test_change_date_scan_uses_watermark_cap_and_keyset_pages() -> None:
    add_token(responses)
    url = f"{ODATA}/Erp.BO.APInvoiceSvc/APInvoices"
    responses.add(responses.GET, url, json={"value": [invoice_row(n) for n in range(100)]})
    responses.add(responses.GET, url, json={"value": [invoice_row(100, "2024-05-01T11:00:00.250")]})
    connector = unit_connector()
    since = datetime(2024, 5, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    rows = list(connector.iter_changed("ap_invoices", since, NOW))
    assert len(rows) == 101 and isinstance(rows[0], EpicorApInvoice)
    assert rows[0].lines[0].GLAccount == "6000|100" and rows[0].InvoiceAmt == Decimal("10.5")
    assert rows[-1].ChangeDate == datetime(2024, 5, 1, 11, 0, 0, 250000, tzinfo=timezone.utc)
    first, second = (query(c) for c in responses.calls[1:])
    assert first == {"$orderby": "ChangeDate,VendorNum,InvoiceNum", "$expand": "APInvDtls", "$top": "100",
                     "$filter": "ChangeDate ge 2024-05-01T00:00:00.123Z and ChangeDate lt 2024-05-02T00:00:00.000Z"}
    assert second["$filter"] == (
        "ChangeDate ge 2024-05-01T10:00:00.000Z and ChangeDate lt 2024-05-02T00:00:00.000Z and "
        "(ChangeDate gt 2024-05-01T10:00:00.000Z or (ChangeDate eq 2024-05-01T10:00:00.000Z and "
        "(VendorNum gt 7 or (VendorNum eq 7 and (InvoiceNum gt 'INV-0099')))))")


@responses.activate
def test_base_find_and_get_use_the_declared_keys() -> None:
    add_token(responses)
    url = f"{ODATA}/Erp.BO.VendorSvc/Vendors"
    responses.add(responses.GET, url, json={"value": [{"VendorNum": 7, "VendorID": "ACME"}]})
    responses.add(responses.GET, f"{url}('EPIC06',7)", json={"VendorNum": 7, "VendorID": "ACME"})
    connector = unit_connector()
    assert connector.find("vendors", VendorID="ACME").VendorNum == 7  # type: ignore[union-attr]
    assert connector.get("vendors", "7").VendorID == "ACME"  # type: ignore[attr-defined]
    assert query(responses.calls[1]) == {"$filter": "VendorID eq 'ACME'", "$orderby": "VendorNum", "$top": "100",
                                         "$skip": "0"}
    with pytest.raises(ValueError):
        connector.find("ap_invoices", VendorNum=7)  # half of the VendorNum + InvoiceNum key


def test_an_unknown_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="page_sise"):
        unit_connector(page_sise=50)


@responses.activate
def test_skip_paging_and_datetime_literal_style_are_settings() -> None:
    add_token(responses)
    url = f"{ODATA}/Erp.BO.POSvc/POes"
    responses.add(responses.GET, url, json={"value": [{"PONum": n, "ChangeDate": "2024-05-01T00:00:00.000"}
                                                      for n in range(100)]})
    responses.add(responses.GET, url, json={"value": []})
    connector = unit_connector(change_paging="skip", filter_datetime_style="datetime")
    rows = list(connector.iter_changed("purchase_orders", None, NOW))
    assert len(rows) == 100 and isinstance(rows[0], EpicorPurchaseOrder)
    first, second = (query(c) for c in responses.calls[1:])
    assert first["$filter"] == "ChangeDate lt datetime'2024-05-02T00:00:00.000'"
    assert (first["$skip"], second["$skip"]) == ("0", "100") and first["$expand"] == "PODetails"


@responses.activate
def test_server_time_zone_converts_literals_and_change_dates() -> None:
    add_token(responses)
    responses.add(responses.GET, f"{ODATA}/Erp.BO.APInvoiceSvc/APInvoices", json={"value": [invoice_row(1)]})
    connector = unit_connector(server_timezone="America/Chicago")
    (row,) = connector.iter_changed("ap_invoices", None, NOW)
    assert query(responses.calls[1])["$filter"] == "ChangeDate lt 2024-05-01T19:00:00.000-05:00"
    assert row.ChangeDate == datetime(2024, 5, 1, 15, 0, tzinfo=timezone.utc)  # 10:00 CDT


@responses.activate
def test_sysrevid_entities_page_by_revision_from_a_noted_mark() -> None:
    add_token(responses)
    marks_api = "https://erp-marks.example.com/KineticLive"  # rev marks are per server; keep this test's own
    url = f"{marks_api}/api/v2/odata/EPIC06/Erp.BO.VendorSvc/Vendors"
    page = [{"VendorNum": n, "VendorID": f"V{n}", "SysRevID": 1000 + n} for n in range(100)]
    responses.add(responses.GET, url, json={"value": [{"SysRevID": 4242}]})  # the mark: highest SysRevID now
    responses.add(responses.GET, url, json={"value": page})
    responses.add(responses.GET, url, json={"value": [{"VendorNum": 500, "VendorID": "V500", "SysRevID": 5000}]})
    responses.add(responses.GET, url, json={"value": [{"SysRevID": 5000}]})
    responses.add(responses.GET, url, json={"value": []})
    connector = unit_connector(api_base=marks_api, token_url=TOKEN_URL)
    until = datetime.now(timezone.utc)
    rows = list(connector.iter_changed("vendors", until - timedelta(days=1), until))
    assert len(rows) == 101 and isinstance(rows[0], EpicorVendor)
    mark, first, second = (query(c) for c in responses.calls[1:4])
    assert mark == {"$orderby": "SysRevID desc", "$top": "1", "$select": "SysRevID"}
    assert (first["$filter"], second["$filter"]) == ("SysRevID gt 0", "SysRevID gt 1099")
    assert first["$orderby"] == "SysRevID" and first["$top"] == "100"
    later = until + timedelta(minutes=1)  # past the mark plus the skew margin
    assert list(connector.iter_changed("vendors", later, later + timedelta(minutes=1))) == []
    assert query(responses.calls[5])["$filter"] == "SysRevID gt 4242"
    assert connector.version_of(rows[0]) == "1000"


@responses.activate
def test_create_ap_invoice_drives_the_screen_sequence_with_exact_parameters() -> None:
    add_token(responses)
    svc = f"{ODATA}/Erp.BO.APInvoiceSvc"
    bodies: dict[str, list[dict[str, Any]]] = {}

    def echo(name: str, mutate: Any = None) -> Any:
        def callback(request: Any) -> tuple[int, dict[str, str], str]:
            body = json.loads(request.body)
            bodies.setdefault(name, []).append(body)
            ds = body.get("ds") or {"APInvHed": [], "APInvDtl": []}
            if mutate:
                mutate(ds, body)
            return 200, {}, json.dumps({"parameters": {"ds": ds}})
        return callback

    def new_header(ds: dict[str, Any], body: dict[str, Any]) -> None:
        ds.setdefault("APInvHed", []).append({"GroupID": body["cGroupID"], "RowMod": "A", "SysRowID": "h-1"})

    def set_vendor(ds: dict[str, Any], body: dict[str, Any]) -> None:
        ds["APInvHed"][-1].update({"VendorNum": 7, "VendorNumVendorID": body["ProposedVendorID"]})

    def save(ds: dict[str, Any], body: dict[str, Any]) -> None:
        for table in ("APInvHed", "APInvDtl"):
            for row in ds.get(table) or []:
                row["RowMod"] = ""

    def new_line(ds: dict[str, Any], body: dict[str, Any]) -> None:
        ds.setdefault("APInvDtl", []).append({"VendorNum": body["iVendorNum"], "InvoiceNum": body["cInvoiceNum"],
                                              "InvoiceLine": 1, "RowMod": "A", "SysRowID": "l-1"})

    responses.add(responses.GET, f"{ODATA}/Erp.BO.VendorSvc/Vendors('EPIC06',7)", json={"VendorNum": 7,
                                                                                      "VendorID": "ACME"})
    responses.add(responses.GET, f"{ODATA}/Erp.BO.APInvGrpSvc/APInvGrps", json={"value": [{"GroupID": "AP0501"}]})
    responses.add_callback(responses.POST, f"{svc}/GetNewAPInvHedInvoice", callback=echo("new", new_header))
    responses.add_callback(responses.POST, f"{svc}/ChangeVendorID", callback=echo("vendor", set_vendor))
    responses.add_callback(responses.POST, f"{svc}/ChangeInvoiceDateEx", callback=echo("date"))
    responses.add_callback(responses.POST, f"{svc}/ChangeInvoiceVendorAmt", callback=echo("amount"))
    responses.add_callback(responses.POST, f"{svc}/UpdateMaster", callback=echo("save", save))
    responses.add_callback(responses.POST, f"{svc}/GetNewAPInvDtlMiscellaneous", callback=echo("line", new_line))
    responses.add_callback(responses.POST, f"{svc}/ChangeVendorQty", callback=echo("qty"))
    responses.add_callback(responses.POST, f"{svc}/ChangeUnitCost", callback=echo("cost"))
    responses.add(responses.POST, f"{ODATA}/Erp.BO.APInvGrpSvc/UnlockGroup", json={})

    invoice = unit_connector().create_ap_invoice("AP0501", {
        "VendorNum": 7, "InvoiceNum": "ST-88", "InvoiceDate": date(2024, 5, 1), "Description": "Job 42",
        "InvoiceAmt": Decimal("250.00")}, [{"Description": "Parts", "VendorQty": 2, "UnitCost": Decimal("125.00"),
                                             "GLAccount": "6000|100"}])
    assert bodies["new"] == [{"ds": {}, "cGroupID": "AP0501"}]
    assert {k: v for k, v in bodies["vendor"][0].items() if k != "ds"} == {
        "ProposedVendorID": "ACME", "confirmCheck": False}  # every declared input, nothing else
    assert {k: v for k, v in bodies["date"][0].items() if k != "ds"} == {
        "ProposedInvoiceDate": "2024-05-01T00:00:00", "recalcAmts": ""}  # cMessageText is an output
    assert bodies["amount"][0]["ProposedInvoiceVendorAmt"] == 250.0
    header_save, line_save = bodies["save"]
    assert {k: v for k, v in header_save.items() if k != "ds"} == {
        "cGroupID": "AP0501", "cTableName": "APInvHed", "runChkCPay": True, "runChkBankRef": True,
        "runChkRevChrg": True, "suppressUserPrompts": True}
    assert header_save["ds"]["APInvHed"][0]["InvoiceNum"] == "ST-88"
    assert header_save["ds"]["APInvHed"][0]["Description"] == "Job 42"
    assert bodies["line"][0]["iVendorNum"] == 7 and bodies["line"][0]["cInvoiceNum"] == "ST-88"
    assert bodies["qty"][0]["ProposedVendorQty"] == 2 and bodies["cost"][0]["ProposedUnitCost"] == 125.0
    assert line_save["ds"]["APInvDtl"][0]["GLAccount"] == "6000|100"
    assert json.loads(responses.calls[-1].request.body) == {"InGroupID": "AP0501"}
    assert invoice.InvoiceNum == "ST-88" and len(invoice.lines) == 1


@responses.activate
def test_vendor_error_body_becomes_a_fatal_error_with_the_vendor_message() -> None:
    add_token(responses)
    responses.add(responses.POST, f"{ODATA}/Erp.BO.VendorSvc/Vendors", status=400, json={
        "HttpStatus": 400, "ReasonPhrase": "REST API Exception", "ErrorMessage": "Supplier name is required.",
        "ErrorType": "Ice.Common.BusinessObjectException", "CorrelationId": "c-1",
        "ErrorDetails": [{"Message": "Supplier name is required.", "Type": "Error", "Table": "Vendor"},
                         {"Message": "Terms code XYZ is not valid.", "Type": "Error", "Field": "TermsCode"}]})
    with pytest.raises(FatalError) as caught:
        unit_connector().create_vendor({"VendorID": "X1"})
    error = caught.value
    assert error.status == 400
    assert error.message == "Supplier name is required.; Terms code XYZ is not valid."
    assert error.details["ErrorType"] == "Ice.Common.BusinessObjectException"
    assert error.details["CorrelationId"] == "c-1"


@responses.activate
def test_record_not_found_is_none_but_an_unknown_service_is_an_error() -> None:
    add_token(responses)
    responses.add(responses.GET, f"{ODATA}/Erp.BO.VendorSvc/Vendors('EPIC06',9)", status=404,
                  json={"HttpStatus": 404, "ErrorMessage": "Record not found.",
                        "ErrorType": "Ice.Common.RecordNotFoundException", "ErrorDetails": []})
    responses.add(responses.GET, f"{ODATA}/Erp.BO.VendorSvc/Vendors('EPIC06',10)", status=404,
                  json={"HttpStatus": 404, "ErrorMessage": "Service 'Erp.BO.VendorSvc' was not found.",
                        "ErrorType": "Epicor.RESTApi.ErrorHandling.ApiException", "ErrorDetails": []})
    connector = unit_connector()
    assert connector.get_vendor(9) is None
    with pytest.raises(NotFoundError, match="was not found"):
        connector.get_vendor(10)


@responses.activate
def test_no_secret_reaches_an_error_message_even_when_the_vendor_echoes_it() -> None:
    add_token(responses, token="tok-SECRET-abc123")
    echo = f"bad request for user svc password {PASSWORD} key {API_KEY} token tok-SECRET-abc123"
    responses.add(responses.GET, f"{ODATA}/Erp.BO.POSvc/POes", status=400,
                  json={"HttpStatus": 400, "ErrorMessage": echo, "ErrorType": "ODataException",
                        "ErrorDetails": [{"Message": f"Authorization: Bearer tok-SECRET-abc123 / {PASSWORD}"}]})
    with pytest.raises(FatalError) as caught:
        list(unit_connector().iter_changed("purchase_orders", None, NOW))
    text = " ".join([str(caught.value), json.dumps(caught.value.to_dict())])
    for secret in (PASSWORD, API_KEY, "tok-SECRET-abc123"):
        assert secret not in text
    assert "bad request for user svc" in text


@responses.activate
def test_get_ap_invoice_reads_the_business_object_with_get_by_id() -> None:
    add_token(responses)
    url = f"{ODATA}/Erp.BO.APInvoiceSvc/GetByID"
    head = {"Company": "EPIC06", "VendorNum": 7, "InvoiceNum": "INV-1", "GroupID": "AP0501", "InvoiceVendorAmt": 30.0,
            "InvoiceAmt": 30.0, "Posted": False, "SysRevID": 41, "SysRowID": "h-1", "RowMod": ""}
    line = {"VendorNum": 7, "InvoiceNum": "INV-1", "Description": "Parts", "VendorQty": 1, "UnitCost": 10.0,
            "GLAccount": "6000|100", "RowMod": ""}
    responses.add(responses.GET, url, json={"returnObj": {"APInvHed": [head], "APInvDtl": [
        {**line, "InvoiceLine": 1, "ExtCost": 10.0}, {**line, "InvoiceLine": 2, "ExtCost": 20.0}], "APInvMsc": []}})
    responses.add(responses.GET, url, status=404, json={
        "HttpStatus": 404, "ErrorMessage": "Record not found.", "ErrorType": "Ice.Common.RecordNotFoundException",
        "ErrorDetails": [{"Message": "Record not found."}]})
    connector = unit_connector()
    invoice = connector.get_ap_invoice(7, "INV-1")
    call = responses.calls[1]
    assert call.request.method == "GET" and not call.request.body
    assert query(call) == {"vendorNum": "7", "invoiceNum": "INV-1"}
    assert invoice is not None and (invoice.InvoiceNum, invoice.InvoiceVendorAmt, invoice.SysRowID) == (
        "INV-1", Decimal("30"), "h-1")
    assert [(l.InvoiceLine, l.ExtCost) for l in invoice.lines] == [(1, Decimal("10")), (2, Decimal("20"))]
    assert connector.find_ap_invoice(7, "INV-2") is None
    assert responses.calls[2].request.method == "GET" and query(responses.calls[2])["invoiceNum"] == "INV-2"


def test_invoice_comparison_reads_accounts_amounts_and_rounding_the_epicor_way() -> None:
    stored = EpicorApInvoice.model_validate({"VendorNum": 7, "InvoiceNum": "INV-1", "InvoiceVendorAmt": 50.37,
                                             "APInvDtl": [
        {"InvoiceLine": 1, "Description": "Filter", "VendorQty": 3, "UnitCost": 0.125, "ExtCost": 0.37,
         "GLAccount": "6000|100"},
        {"InvoiceLine": 2, "Description": "Freight", "VendorQty": 1, "UnitCost": 50, "ExtCost": 50,
         "GLAccount": "6500|100"}]})
    # quantity x unit cost rounded the other way at the half cent, and a GL account in display form
    same = wanted_invoice_lines([
        {"Description": "Filter", "VendorQty": "3", "UnitCost": "0.125", "ExtCost": "0.38", "GLAccount": "6000-100"},
        {"Description": "Freight ", "ExtCost": "50.00", "GLAccount": "6500|100"}])
    assert not compare_ap_invoice(stored, 7, Decimal("50.37"), same)
    differs = compare_ap_invoice(stored, 8, Decimal("50.38"), wanted_invoice_lines([
        {"Description": "Filter", "VendorQty": "3", "UnitCost": "0.125", "ExtCost": "0.38", "GLAccount": "6000-200"},
        {"InvoiceLine": 3, "Description": "Disposal", "ExtCost": "5"}]))
    assert differs.vendor == (7, 8) and differs.amount == (Decimal("50.37"), Decimal("50.38"))
    assert differs.changed == {1: {"GLAccount": ("6000|100", "6000-200")}}
    assert (differs.missing, differs.extra, differs.only_missing_lines) == ((3,), (2,), False)
    assert "line 1 GLAccount '6000|100' (wanted '6000-200')" in differs.describe()
    assert "line 3 missing" in differs.describe() and "line 2 not wanted" in differs.describe()
    exact = compare_ap_invoice(stored, 7, Decimal("50.37"), wanted_invoice_lines([
        {"Description": "Filter", "VendorQty": "3", "UnitCost": "0.125", "GLAccount": "6000|100"},
        {"Description": "Freight", "ExtCost": "50.01"}]))  # no unit cost: the extended cost is exact
    assert exact.changed == {2: {"ExtCost": ("50.00", "50.01")}}
    with pytest.raises(ValueError, match="distinct numbers"):
        wanted_invoice_lines([{"InvoiceLine": 2}, {"Description": "second"}])


def test_keys_and_bodies_are_encoded_the_epicor_way() -> None:
    assert odata_key("EPIC06", (233, "O'Brien 7/A")) == "('EPIC06',233,'O''Brien%207%2FA')"
    assert jsonable({"a": Decimal("12.50"), "d": date(2024, 5, 1), "l": [datetime(2024, 5, 1, 8, 30)]}) == {
        "a": 12.5, "d": "2024-05-01T00:00:00", "l": ["2024-05-01T08:30:00"]}


# ---- contract tests against the sandbox ---------------------------------------------------------------

@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    server = start_sandbox(EpicorSandbox(SandboxOptions(seed=5, records=RECORDS)))
    yield server
    server.stop()


@pytest.fixture()
def sandbox(running: Any) -> Iterator[EpicorSandbox]:
    yield running.sandbox
    requests.post(f"{running.url}/_sandbox/faults", json={"replace": True}, timeout=5)
    requests.post(f"{running.url}/_sandbox/epicor/update-master-holds", json={"count": 0}, timeout=5)
    requests.post(f"{running.url}/_sandbox/epicor/lost-answers", json={"count": 0}, timeout=5)


def live(running: Any, **overrides: Any) -> EpicorConnector:
    config, credentials = EpicorConnector.settings_from_sandbox_info(running.info())
    return EpicorConnector.create({**config, **FAST, **overrides}, credentials, build_runtime(""))


def faults(running: Any, **values: Any) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json=values, timeout=5).raise_for_status()


def stats(running: Any) -> dict[str, Any]:
    return requests.get(f"{running.url}/_sandbox/stats", timeout=5).json()


def a_vendor(sandbox: EpicorSandbox, n: int = 0) -> dict[str, Any]:
    return [v for v in sandbox.get_entities("vendors") if not v["Inactive"]][n]


def test_full_pagination_of_thousands_with_constant_pages(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    stream = connector.iter_changed("ap_invoices", None, until)
    first = next(stream)
    assert isinstance(first, EpicorApInvoice) and connector.call_count == 2  # token + one page, lazily
    invoices = [first, *stream]
    keys = {(i.VendorNum, i.InvoiceNum.casefold()) for i in invoices}
    assert len(invoices) == len(keys) >= RECORDS
    assert sum(len(i.lines) for i in invoices) == sum(len(r["APInvDtls"]) for r in sandbox.get_entities("ap_invoices"))
    changes = [i.ChangeDate for i in invoices]
    assert changes == sorted(changes)
    assert connector.call_count == 1 + (len(invoices) // 100 + 1)
    vendors = list(connector.iter_changed("vendors", None, until))
    assert {v.VendorNum for v in vendors} == {v["VendorNum"] for v in sandbox.get_entities("vendors")}
    skip_mode = live(running, change_paging="skip")
    assert {(p.PONum, p.SysRevID) for p in skip_mode.iter_changed("purchase_orders", None, until)} == {
        (p["PONum"], p["SysRevID"]) for p in sandbox.get_entities("purchase_orders")}
    accounts = list(connector.iter_changed("gl_accounts", None, until))
    assert accounts and all(isinstance(a, EpicorGlAccount) and a.segments for a in accounts)


def test_change_window_is_since_inclusive_and_until_exclusive(running: Any, sandbox: EpicorSandbox) -> None:
    vendor = a_vendor(sandbox, 3)
    base = datetime(2031, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    stamps = {"W-AT-SINCE": "2031-01-01T12:00:00.000", "W-INSIDE": "2031-01-01T12:00:05.500",
              "W-AT-UNTIL": "2031-01-01T12:00:10.000", "W-AFTER": "2031-01-01T12:00:11.000"}
    for number, stamp in stamps.items():
        sandbox.put_entity("ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": number,
                                           "GroupID": "AP0101", "ChangeDate": stamp,
                                           "lines": [{"Description": "x", "ExtCost": 1, "GLAccount": "5100|100"}]})
    found = live(running).iter_changed("ap_invoices", base, base + timedelta(seconds=10))
    assert sorted(i.InvoiceNum for i in found) == ["W-AT-SINCE", "W-INSIDE"]


def test_equal_change_dates_across_a_page_boundary_are_neither_lost_nor_repeated(running: Any,
                                                                                sandbox: EpicorSandbox) -> None:
    vendor = a_vendor(sandbox, 4)
    stamp = "2032-02-02T02:02:02.202"
    for n in range(230):
        sandbox.put_entity("ap_invoices", {"VendorNum": vendor["VendorNum"] + n % 3, "InvoiceNum": f"TIE-{n:03d}",
                                           "GroupID": "AP0101", "ChangeDate": stamp})
    since = datetime(2032, 2, 2, 2, 2, 2, 202000, tzinfo=timezone.utc)
    connector = live(running)
    found = [i.InvoiceNum for i in connector.iter_changed("ap_invoices", since, since + timedelta(seconds=1))]
    assert sorted(found) == [f"TIE-{n:03d}" for n in range(230)]
    assert connector.call_count == 1 + 3


def test_sysrevid_polls_read_only_what_changed_after_a_complete_scan(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running, rev_mark_skew_seconds=0)
    first_until = datetime.now(timezone.utc)
    everything = list(connector.iter_changed("vendors", first_until - timedelta(days=1), first_until))
    assert len(everything) >= RECORDS  # no mark yet: every row
    second_since = datetime.now(timezone.utc)  # after the first poll noted its mark
    vendor = a_vendor(sandbox, 7)
    sandbox.put_entity("vendors", {"VendorNum": vendor["VendorNum"], "PhoneNum": "(555) 000-1111"})
    calls = connector.call_count
    changed = list(connector.iter_changed("vendors", second_since, datetime.now(timezone.utc)))
    assert [v.VendorNum for v in changed] == [vendor["VendorNum"]] and changed[0].PhoneNum == "(555) 000-1111"
    assert connector.call_count == calls + 2  # the new mark and one page
    cautious = live(running, rev_mark_skew_seconds=3600)  # a mark younger than the margin is not trusted
    assert len(list(cautious.iter_changed("vendors", second_since, datetime.now(timezone.utc)))) >= RECORDS
    by_rev = list(connector.iter_changed_since_rev("vendors", changed[0].SysRevID - 1))
    assert [v.VendorNum for v in by_rev] == [vendor["VendorNum"]]


def test_token_expiring_mid_pagination_is_refreshed_once(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    before = stats(running)["tokens_issued"]
    stream = connector.iter_changed("purchase_orders", None, datetime.now(timezone.utc))
    taken = [next(stream) for _ in range(150)]  # two pages read
    requests.post(f"{running.url}/_sandbox/expire-tokens", timeout=5).raise_for_status()
    rest = list(stream)
    assert len({p.PONum for p in taken + rest}) == len(sandbox.get_entities("purchase_orders"))
    assert stats(running)["tokens_issued"] - before == 2


def test_429_waits_for_retry_after_then_succeeds(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    connector.get_group("AP0101")  # token fetched before the burst
    faults(running, burst_429=1, retry_after=1)
    limited_before = stats(running)["rate_limited"]
    started = time.perf_counter()
    group = connector.get_group("AP0101")
    assert group is not None and group.GroupID == "AP0101"
    assert time.perf_counter() - started >= 0.95
    assert stats(running)["rate_limited"] == limited_before + 1


def test_5xx_then_success_is_retried(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 1)
    connector.get_vendor(vendor["VendorNum"])
    calls = connector.call_count
    faults(running, fail_next=2, error_status=503)
    assert connector.get_vendor(vendor["VendorNum"]).VendorID == vendor["VendorID"]
    assert connector.call_count == calls + 3


def test_permanent_error_surfaces_the_vendor_message(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    with pytest.raises(FatalError) as caught:
        connector.create_vendor({"VendorID": "NONAME1"})
    assert caught.value.status == 400 and caught.value.message == "Supplier name is required."
    assert caught.value.details["ErrorType"] == "Ice.Common.BusinessObjectException"
    with pytest.raises(FatalError, match="Could not find a property named 'Nope'"):
        connector._get("Erp.BO.VendorSvc/Vendors", {"$filter": "Nope eq 1"})


def test_vendor_create_find_update_and_duplicates(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    created = connector.create_vendor({"VendorID": "MLV001", "Name": "Metro Lift Rentals", "Address1": "9 Dock Rd",
                                       "City": "Tampa", "State": "FL", "ZIP": "33601", "Country": "USA",
                                       "PhoneNum": "(813) 555-0101", "EMailAddress": "ap@metrolift.example"})
    assert isinstance(created, EpicorVendor) and created.VendorNum > RECORDS and created.SysRevID > 0
    assert [v.VendorNum for v in connector.find_vendors(vendor_id="mlv001")] == [created.VendorNum]
    assert [v.VendorNum for v in connector.find_vendors(name="METRO LIFT RENTALS")] == [created.VendorNum]
    assert created.VendorNum in {v.VendorNum for v in connector.find_vendors(name_contains="lift rent")}
    updated = connector.update_vendor(created.VendorNum, {"Address2": "Suite 4", "VendorNum": 1})
    assert updated.Address2 == "Suite 4" and updated.VendorNum == created.VendorNum
    assert updated.SysRevID > created.SysRevID
    again = connector.create_vendor({"VendorID": "MLV001", "Name": "Metro  Lift Rentals"})
    assert again.VendorNum == created.VendorNum  # same supplier: the duplicate is ours
    with pytest.raises(FatalError) as caught:
        connector.create_vendor({"VendorID": "MLV001", "Name": "Someone Else Inc"})
    assert caught.value.status == 409 and "already exists" in caught.value.message
    assert connector.get_vendor(999_999) is None
    assert sum(1 for _ in connector.iter_vendors()) == len(sandbox.get_entities("vendors"))


def _group(sandbox: EpicorSandbox, group_id: str) -> dict[str, Any] | None:
    return next((g for g in sandbox.get_entities("ap_invoice_groups") if g["GroupID"] == group_id), None)


def test_ap_invoice_full_pattern_end_to_end(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 10)
    assert _group(sandbox, "STAP01") is None
    invoice = connector.create_ap_invoice("STAP01", {
        "VendorNum": vendor["VendorNum"], "InvoiceNum": "ST-INV-1001", "InvoiceDate": date(2024, 5, 1),
        "DueDate": date(2024, 6, 15), "Description": "ServiceTitan bill 1001", "InvoiceAmt": Decimal("437.50")}, [
        {"Description": "Condenser fan motor", "VendorQty": 1, "UnitCost": Decimal("312.50"), "GLAccount": "5100|100",
         "PartNum": "MTR-1"},
        {"Description": "Freight", "ExtCost": Decimal("125.00"), "GLAccount": "6500-100"}])
    assert invoice.GroupID == "STAP01" and invoice.InvoiceNum == "ST-INV-1001"
    assert invoice.InvoiceAmt == Decimal("437.50") == invoice.InvoiceBal and invoice.OpenPayable and not invoice.Posted
    assert invoice.DueDate == date(2024, 6, 15) and invoice.Description == "ServiceTitan bill 1001"
    assert [(l.InvoiceLine, l.ExtCost, l.GLAccount) for l in invoice.lines] == [
        (1, Decimal("312.5"), "5100|100"), (2, Decimal("125"), "6500|100")]
    group = _group(sandbox, "STAP01")
    assert group is not None and group["ActiveUserID"] == ""  # created, then unlocked
    found = connector.find_ap_invoice(vendor["VendorNum"], "st-inv-1001")
    assert found is not None and found.SysRevID == invoice.SysRevID and len(found.lines) == 2
    assert connector.find_ap_invoice(vendor["VendorNum"], "NOPE") is None


def test_duplicate_invoice_is_409_fatal_and_leaves_the_original_and_group_alone(running: Any,
                                                                              sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 11)
    header = {"VendorNum": vendor["VendorNum"], "InvoiceNum": "DUP-1", "InvoiceDate": date(2024, 5, 3)}
    line = [{"Description": "Service call", "ExtCost": Decimal("99.00"), "GLAccount": "6000|100"}]
    original = connector.create_ap_invoice("AP0102", header, line)
    with pytest.raises(FatalError) as caught:
        connector.create_ap_invoice("AP0102", header, line)
    assert caught.value.status == 409 and "already exists" in caught.value.message
    assert caught.value.details["ErrorType"] == "Ice.Common.DuplicateRecordException"
    kept = connector.find_ap_invoice(vendor["VendorNum"], "DUP-1")
    assert kept is not None and kept.SysRevID == original.SysRevID
    assert _group(sandbox, "AP0102")["ActiveUserID"] == ""


def test_failure_mid_pattern_unlocks_the_group_and_removes_the_partial_invoice(running: Any,
                                                                             sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 12)
    with pytest.raises(FatalError) as caught:
        connector.create_ap_invoice("AP0101", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "HALF-1",
                                               "InvoiceDate": date(2024, 5, 4)}, [
            {"Description": "ok line", "ExtCost": Decimal("10"), "GLAccount": "6000|100"},
            {"Description": "bad line", "ExtCost": Decimal("5"), "GLAccount": "9999|999"}])
    assert caught.value.status == 400 and "GL account 9999|999" in caught.value.message
    assert _group(sandbox, "AP0101")["ActiveUserID"] == ""
    assert connector.find_ap_invoice(vendor["VendorNum"], "HALF-1") is None
    # a replay with the mapping fixed goes through from a clean slate
    fixed = connector.create_ap_invoice("AP0101", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "HALF-1",
                                                   "InvoiceDate": date(2024, 5, 4)}, [
        {"Description": "ok line", "ExtCost": Decimal("10"), "GLAccount": "6000|100"},
        {"Description": "fixed line", "ExtCost": Decimal("5"), "GLAccount": "6000|200"}])
    assert [l.InvoiceLine for l in fixed.lines] == [1, 2]


def test_group_locked_by_a_person_is_refused_and_not_unlocked_behind_them(running: Any,
                                                                        sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 13)
    assert _group(sandbox, "APJS01")["ActiveUserID"] == "jsmith"
    with pytest.raises(FatalError) as caught:
        connector.create_ap_invoice("APJS01", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "LOCKED-1",
                                               "InvoiceDate": date(2024, 5, 5)},
                                    [{"Description": "x", "ExtCost": Decimal("1"), "GLAccount": "6000|100"}])
    assert caught.value.status == 400 and "in use by jsmith" in caught.value.message
    assert _group(sandbox, "APJS01")["ActiveUserID"] == "jsmith"
    assert connector.find_ap_invoice(vendor["VendorNum"], "LOCKED-1") is None


def test_lost_answer_retry_of_a_save_is_recognised_by_its_row_ids(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 14)
    ds = connector._ds("Erp.BO.APInvoiceSvc", "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": "AP0102"})
    ds = connector._ds("Erp.BO.APInvoiceSvc", "ChangeVendorID", {"ds": ds, "ProposedVendorID": vendor["VendorID"],
                                                                 "confirmCheck": False})
    ds["APInvHed"][-1]["InvoiceNum"] = "LOST-1"
    ds = connector._ds("Erp.BO.APInvoiceSvc", "ChangeInvoiceVendorAmt", {"ds": ds, "ProposedInvoiceVendorAmt": 12})
    first = connector._save_invoice(ds, "AP0102")  # the save whose answer the caller never saw
    again = connector._save_invoice(ds, "AP0102")  # the retry: 409, recognised as our own row
    assert again["APInvHed"][0]["SysRowID"] == first["APInvHed"][0]["SysRowID"] == ds["APInvHed"][-1]["SysRowID"]
    other = dict(ds, APInvHed=[dict(ds["APInvHed"][-1], SysRowID="00000000-0000-0000-0000-000000000001")])
    with pytest.raises(FatalError) as caught:
        connector._save_invoice(other, "AP0102")
    assert caught.value.status == 409
    connector.unlock_group("AP0102")


def test_payment_matched_by_vendor_and_amount_end_to_end(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 15)
    sandbox.put_entity("ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "PAYME-1", "Posted": True,
                                       "GroupID": "", "InvoiceDate": "2024-05-01",
                                       "lines": [{"Description": "Parts", "ExtCost": 731.25,
                                                  "GLAccount": "5100|100"}]})
    matches = connector.find_open_invoices(vendor["VendorNum"], Decimal("731.25"))
    assert [i.InvoiceNum for i in matches] == ["PAYME-1"]
    assert connector.find_ap_payment(vendor["VendorNum"], "ST-PMT-77") is None
    payment = connector.create_ap_payment(vendor["VendorNum"], "PAYME-1", Decimal("731.25"), date(2024, 6, 1),
                                          "ST-PMT-77")
    assert payment["XRefCheckNum"] == "ST-PMT-77" and payment["CheckAmt"] == 731.25
    assert payment["GroupID"] == "MLPAY" and payment["CheckDate"] == "2024-06-01T00:00:00"
    assert [(t["InvoiceNum"], t["DocTranAmt"]) for t in payment["APTrans"]] == [("PAYME-1", 731.25)]
    found = connector.find_ap_payment(vendor["VendorNum"], "ST-PMT-77")
    assert found is not None and found["HeadNum"] == payment["HeadNum"]
    paid = connector.find_ap_invoice(vendor["VendorNum"], "PAYME-1")
    assert paid is not None and paid.InvoiceBal == 0 and paid.OpenPayable is False
    assert connector.find_open_invoices(vendor["VendorNum"], Decimal("731.25")) == []
    with pytest.raises(FatalError, match="fully paid"):
        connector.create_ap_payment(vendor["VendorNum"], "PAYME-1", Decimal("1"), date(2024, 6, 2), "ST-PMT-78")
    changed = [p for p in connector.iter_changed("ap_payments", None, datetime.now(timezone.utc))
               if p.HeadNum == payment["HeadNum"]]
    assert changed and changed[0].lines[0].InvoiceNum == "PAYME-1"


def test_check_reports_each_step(running: Any, sandbox: EpicorSandbox) -> None:
    steps = live(running).check()
    assert [s.step for s in steps] == ["token", "vendors", "ap_invoices", "ap_invoice_groups", "purchase_orders"]
    assert all(s.ok for s in steps), steps
    basic = live(running, auth_mode="basic").check()
    assert [s.step for s in basic] == ["vendors", "ap_invoices", "ap_invoice_groups", "purchase_orders"]
    assert all(s.ok for s in basic)
    config, credentials = EpicorConnector.settings_from_sandbox_info(running.info())
    wrong = EpicorConnector.create({**config, **FAST}, {**credentials, "password": "Wrong-Pass-987"}, build_runtime(""))
    failed = wrong.check()
    assert not failed[0].ok and "incorrect" in failed[0].detail
    assert [s.ok for s in failed] == [False] * 5 and "not attempted" in failed[1].detail
    assert all("Wrong-Pass-987" not in s.detail for s in failed)


def test_no_secret_in_errors_against_the_sandbox(running: Any, sandbox: EpicorSandbox) -> None:
    config, credentials = EpicorConnector.settings_from_sandbox_info(running.info())
    bad_key = {**credentials, "api_key": "ek_wrong_key_55555"}
    connector = EpicorConnector.create({**config, **FAST}, bad_key, build_runtime(""))
    with pytest.raises(AuthError) as caught:
        connector.get_group("AP0101")
    token = connector.token_cache.peek(connector.token_provider).access_token  # type: ignore[arg-type]
    text = " ".join([str(caught.value), json.dumps(caught.value.to_dict())])
    assert caught.value.status == 401 and "API key" in text
    for secret in (credentials["password"], "ek_wrong_key_55555", token):
        assert secret and secret not in text


def test_concurrent_writers_share_a_group_and_leave_it_unlocked(running: Any, sandbox: EpicorSandbox) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vendor = a_vendor(sandbox, 16)

    def write(n: int) -> str:
        connector = live(running)
        invoice = connector.create_ap_invoice("PAR01", {"VendorNum": vendor["VendorNum"], "InvoiceNum": f"PAR-{n}",
                                                        "InvoiceDate": date(2024, 5, 6)},
                                              [{"Description": f"line {n}", "ExtCost": Decimal(n + 1),
                                                "GLAccount": "6000|100"}])
        return invoice.InvoiceNum

    with ThreadPoolExecutor(max_workers=8) as pool:
        written = sorted(pool.map(write, range(16)))
    assert written == sorted(f"PAR-{n}" for n in range(16))
    assert _group(sandbox, "PAR01")["ActiveUserID"] == ""
    stored = [r for r in sandbox.get_entities("ap_invoices") if r["InvoiceNum"].startswith("PAR-")]
    assert len(stored) == 16 and all(len(r["APInvDtls"]) == 1 for r in stored)


def _recorded(connector: EpicorConnector) -> list[str]:
    """`METHOD path` of every call the connector sends from now on."""
    sent: list[str] = []
    session = connector.client.session
    original = session.request

    def request(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(f"{method} {urlsplit(url).path}")
        return original(method, url, *args, **kwargs)

    session.request = request  # type: ignore[method-assign]
    return sent


def _count(sent: list[str], part: str, method: str = "") -> int:
    return sum(1 for call in sent if part in call and call.startswith(method))


def _invoice(vendor: dict[str, Any], number: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return ({"VendorNum": vendor["VendorNum"], "InvoiceNum": number, "InvoiceDate": date(2024, 5, 6)},
            [{"Description": "Service call", "ExtCost": Decimal("40.00"), "GLAccount": "6000|100"}])


def test_a_second_invoice_skips_the_group_and_vendor_lookups(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 14)
    sent = _recorded(connector)
    connector.create_ap_invoice("APC01", *_invoice(vendor, "SEEN-1"))
    assert _count(sent, "APInvGrps", "GET") == 1 and _count(sent, "/Vendors(", "GET") == 1
    sent.clear()
    connector.create_ap_invoice("APC01", *_invoice(vendor, "SEEN-2"))
    assert _count(sent, "APInvGrps") == 0 and _count(sent, "/Vendors") == 0
    assert _count(sent, "GetNewAPInvHedInvoice") == 1 and _count(sent, "UnlockGroup") == 1
    assert len(sent) == 5 + 3 + 1  # header pattern, one ExtCost line, unlock: nothing else
    assert _group(sandbox, "APC01")["ActiveUserID"] == ""
    assert connector.find_ap_invoice(vendor["VendorNum"], "SEEN-2") is not None


def test_a_group_gone_since_it_was_seen_is_looked_up_and_made_again(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 15)
    connector.create_ap_invoice("APC02", *_invoice(vendor, "GONE-1"))
    sandbox.tables["APInvGrp"].delete(_group(sandbox, "APC02"))  # posted and removed, as Epicor does
    sent = _recorded(connector)
    invoice = connector.create_ap_invoice("APC02", *_invoice(vendor, "GONE-2"))
    assert _count(sent, "GetNewAPInvHedInvoice") == 2 and _count(sent, "APInvGrps", "POST") == 1
    assert invoice.GroupID == "APC02" and _group(sandbox, "APC02")["ActiveUserID"] == ""


def test_a_group_taken_by_a_person_since_it_was_seen_is_refused_and_left_to_them(
        running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 16)
    connector.create_ap_invoice("APC03", *_invoice(vendor, "TAKEN-1"))
    group = _group(sandbox, "APC03")
    group["ActiveUserID"] = "jsmith"
    sandbox.write("APInvGrp", group, user="jsmith")
    with pytest.raises(FatalError) as caught:
        connector.create_ap_invoice("APC03", *_invoice(vendor, "TAKEN-2"))
    assert caught.value.status == 400 and "in use by jsmith" in caught.value.message
    assert _group(sandbox, "APC03")["ActiveUserID"] == "jsmith"
    assert connector.find_ap_invoice(vendor["VendorNum"], "TAKEN-2") is None


def test_a_vendor_id_moved_to_another_supplier_never_lands_the_invoice_there(
        running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    ours, other = a_vendor(sandbox, 17), a_vendor(sandbox, 18)
    connector.create_ap_invoice("APC04", *_invoice(ours, "MOVED-1"))  # VendorID remembered
    old_id = ours["VendorID"]
    ours["VendorID"], other["VendorID"] = "RENAMED1", "PARK0001"
    sandbox.write("Vendor", ours)
    sandbox.write("Vendor", other)
    other["VendorID"] = old_id  # the remembered VendorID now names another supplier
    sandbox.write("Vendor", other)
    with pytest.raises(RetriableError) as caught:
        connector.create_ap_invoice("APC04", *_invoice(ours, "MOVED-2"))
    assert f"now belongs to supplier {other['VendorNum']}" in caught.value.message
    assert connector.find_ap_invoice(other["VendorNum"], "MOVED-2") is None
    assert _group(sandbox, "APC04")["ActiveUserID"] == ""
    invoice = connector.create_ap_invoice("APC04", *_invoice(ours, "MOVED-2"))  # VendorID read afresh
    assert invoice.VendorNum == ours["VendorNum"]


def test_a_page_size_above_what_the_server_serves_still_reads_every_row(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running, page_size=250)  # the sandbox, like Epicor by default, serves 100 rows a page
    assert sum(1 for _ in connector.iter_vendors()) == len(sandbox.get_entities("vendors"))
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    orders = {p.PONum for p in connector.iter_changed("purchase_orders", None, until)}
    assert orders == {p["PONum"] for p in sandbox.get_entities("purchase_orders")}
    assert live(running).config.page_size == 100


# ---- an AP invoice lands whole, or is made whole on the next delivery ------------------------------

INVOICES = "Erp.BO.APInvoiceSvc"


def _bill(vendor: dict[str, Any], number: str, freight: str = "125.00") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An invoice as the ServiceTitan mapping hands it over (numbers as strings)."""
    total = str(Decimal("312.50") + Decimal(freight))
    header = {"VendorNum": vendor["VendorNum"], "InvoiceNum": number, "InvoiceDate": date(2024, 5, 7),
              "Description": "ServiceTitan bill", "InvoiceAmt": total}
    lines = [{"InvoiceLine": 1, "Description": "Condenser fan motor", "VendorQty": "1", "UnitCost": "312.50",
              "ExtCost": "312.50", "GLAccount": "5100|100"},
             {"InvoiceLine": 2, "Description": "Freight", "VendorQty": "1", "UnitCost": freight, "ExtCost": freight,
              "GLAccount": "6500|100"}]
    return header, lines


def _stored(running: Any, vendor_num: int, number: str) -> dict[str, Any] | None:
    """The invoice as the sandbox holds it, read through its own control API."""
    rows = requests.get(f"{running.url}/_sandbox/entities/ap_invoices", timeout=10).json()
    return next((r for r in rows if r["VendorNum"] == vendor_num and r["InvoiceNum"] == number), None)


def _lines(stored: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(d["InvoiceLine"], d["Description"], d["VendorQty"], d["UnitCost"], d["ExtCost"], d["GLAccount"])
            for d in stored["APInvDtls"]]


def _header_only(connector: EpicorConnector, vendor: dict[str, Any], group_id: str, number: str,
                 amount: Decimal) -> dict[str, Any]:
    """What a worker killed between the header and its lines leaves behind: the header saved
    through the business object, no lines, and the group still locked to us."""
    connector.ensure_group(group_id)
    ds = connector._ds(INVOICES, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": group_id})
    ds = connector._ds(INVOICES, "ChangeVendorID", {"ds": ds, "ProposedVendorID": vendor["VendorID"],
                                                    "confirmCheck": False})
    ds["APInvHed"][-1]["InvoiceNum"] = number
    ds = connector._ds(INVOICES, "ChangeInvoiceDateEx", {"ds": ds, "ProposedInvoiceDate": date(2024, 5, 7),
                                                         "recalcAmts": ""})
    ds = connector._ds(INVOICES, "ChangeInvoiceVendorAmt", {"ds": ds, "ProposedInvoiceVendorAmt": amount})
    return connector._save_invoice(ds, group_id)


WHOLE = [(1, "Condenser fan motor", 1.0, 312.5, 312.5, "5100|100"), (2, "Freight", 1.0, 125.0, 125.0, "6500|100")]


def test_a_partial_invoice_is_completed_on_the_next_delivery(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 20)
    header, lines = _bill(vendor, "PART-1")
    _header_only(connector, vendor, "PART01", "PART-1", Decimal("437.50"))
    partial = _stored(running, vendor["VendorNum"], "PART-1")
    assert partial is not None and partial["APInvDtls"] == [] and partial["InvoiceAmt"] == 0
    assert _group(sandbox, "PART01")["ActiveUserID"] == running.info()["credentials"]["username"]
    sent = _recorded(connector)
    invoice, action = connector.ensure_ap_invoice("PART01", header, lines)
    assert action == "completed"
    stored = _stored(running, vendor["VendorNum"], "PART-1")
    assert stored is not None and _lines(stored) == WHOLE
    assert stored["InvoiceAmt"] == stored["InvoiceVendorAmt"] == 437.5
    assert stored["SysRowID"] == partial["SysRowID"]  # the header saved before, now whole
    assert _count(sent, "GetNewAPInvHedInvoice") == 0 and _count(sent, "GetNewAPInvDtlMiscellaneous") == 2
    assert _group(sandbox, "PART01")["ActiveUserID"] == ""  # the stopped attempt's lock is released
    assert [(l.InvoiceLine, l.ExtCost) for l in invoice.lines] == [(1, Decimal("312.5")), (2, Decimal("125"))]


def test_an_equal_invoice_is_unchanged_without_a_write(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 21)
    header, lines = _bill(vendor, "SAME-1")
    created, action = connector.ensure_ap_invoice("SAME01", header, lines)
    assert action == "created" and len(created.lines) == 2
    before = _stored(running, vendor["VendorNum"], "SAME-1")
    sent = _recorded(connector)
    invoice, action = connector.ensure_ap_invoice("SAME01", header, lines)
    assert action == "unchanged" and invoice.SysRevID == created.SysRevID
    assert sent == ["GET /KineticLive/api/v2/odata/EPIC06/Erp.BO.APInvoiceSvc/GetByID"]
    assert _stored(running, vendor["VendorNum"], "SAME-1") == before
    by_vendor_id = {k: v for k, v in header.items() if k != "VendorNum"} | {"VendorID": vendor["VendorID"].lower()}
    sent.clear()
    assert connector.ensure_ap_invoice("SAME01", by_vendor_id, lines)[1] == "unchanged"
    assert [call.split("/")[-1] for call in sent] == ["Vendors", "GetByID"]  # the key found from the VendorID
    assert _stored(running, vendor["VendorNum"], "SAME-1") == before


def test_differing_lines_and_amount_are_corrected_through_the_business_object(running: Any,
                                                                             sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 22)
    header, lines = _bill(vendor, "CORR-1")
    connector.ensure_ap_invoice("CORR01", header, lines)
    first = _stored(running, vendor["VendorNum"], "CORR-1")
    assert first is not None
    twice = dict(first["APInvDtls"][1], InvoiceLine=3, SysRowID="")  # a line an earlier attempt added twice
    sandbox.write("APInvDtl", sandbox.new_row("APInvDtl", twice))
    revised_header, revised = _bill(vendor, "CORR-1", freight="140.00")
    revised[1].update({"Description": "Freight (revised)", "GLAccount": "6500-200"})
    sent = _recorded(connector)
    invoice, action = connector.ensure_ap_invoice("CORR01", revised_header, revised)
    assert action == "corrected"
    stored = _stored(running, vendor["VendorNum"], "CORR-1")
    assert stored is not None and _lines(stored) == [WHOLE[0], (2, "Freight (revised)", 1.0, 140.0, 140.0, "6500|200")]
    assert stored["InvoiceVendorAmt"] == stored["InvoiceAmt"] == 452.5
    assert stored["APInvDtls"][0]["SysRevID"] == first["APInvDtls"][0]["SysRevID"]  # the equal line left alone
    assert stored["SysRowID"] == first["SysRowID"]
    # amount, line 2, line 3 removed: one save each, no new header, no new line
    assert _count(sent, "UpdateMaster") == 3 and _count(sent, "GetNewAP") == 0
    assert _count(sent, "ChangeUnitCost") == 1 and _count(sent, "ChangeInvoiceVendorAmt") == 1
    assert [l.InvoiceLine for l in invoice.lines] == [1, 2]
    assert connector.ensure_ap_invoice("CORR01", revised_header, revised)[1] == "unchanged"


def test_a_posted_invoice_is_never_edited(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 23)
    header, lines = _bill(vendor, "POSTED-1")
    sandbox.put_entity("ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "POSTED-1", "Posted": True,
                                       "GroupID": "", "InvoiceDate": "2024-05-07", "InvoiceVendorAmt": 437.5,
                                       "lines": [{"Description": "Condenser fan motor", "VendorQty": 1,
                                                  "UnitCost": 312.5, "GLAccount": "5100|100"}]})
    before = _stored(running, vendor["VendorNum"], "POSTED-1")
    with pytest.raises(FatalError) as caught:
        connector.ensure_ap_invoice("POST01", header, lines)
    assert "is posted" in caught.value.message and "line 2 missing" in caught.value.message
    assert caught.value.details["differences"] == "line 2 missing"
    assert _stored(running, vendor["VendorNum"], "POSTED-1") == before
    equal_header = {**header, "InvoiceAmt": "437.50"}
    invoice, action = connector.ensure_ap_invoice("POST01", equal_header, lines[:1])
    assert action == "unchanged" and invoice.Posted


def test_an_update_master_that_did_not_run_is_refused_not_written(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 24)
    header, lines = _bill(vendor, "HELD-1")
    requests.post(f"{running.url}/_sandbox/epicor/update-master-holds", json={
        "invoice_num": "HELD-1", "op_message": "Supplier bank reference changed. Continue?"}, timeout=5)
    with pytest.raises(FatalError) as caught:
        connector.ensure_ap_invoice("HELD01", header, lines)
    assert "Supplier bank reference changed" in caught.value.message
    assert caught.value.details["lUpdateRan"] is False and caught.value.details["requiresUserInput"] is True
    assert _stored(running, vendor["VendorNum"], "HELD-1") is None
    assert _group(sandbox, "HELD01")["ActiveUserID"] == ""
    # a completion whose line save stops for a person: refused too, even with lUpdateRan true
    _header_only(connector, vendor, "HELD01", "HELD-2", Decimal("437.50"))
    requests.post(f"{running.url}/_sandbox/epicor/update-master-holds", json={
        "invoice_num": "HELD-2", "update_ran": True, "op_message": "Reverse charge applies. Continue?"}, timeout=5)
    with pytest.raises(FatalError, match="Reverse charge applies"):
        connector.ensure_ap_invoice("HELD01", *_bill(vendor, "HELD-2"))
    assert _stored(running, vendor["VendorNum"], "HELD-2")["APInvDtls"] == []
    invoice, action = connector.ensure_ap_invoice("HELD01", *_bill(vendor, "HELD-2"))
    assert action == "completed" and len(invoice.lines) == 2


def test_a_group_someone_holds_stops_a_completion_before_any_write(running: Any, sandbox: EpicorSandbox) -> None:
    connector = live(running)
    vendor = a_vendor(sandbox, 25)
    _header_only(connector, vendor, "PARTJS", "PARTJS-1", Decimal("437.50"))
    group = _group(sandbox, "PARTJS")
    group["ActiveUserID"] = "jsmith"
    sandbox.write("APInvGrp", group, user="jsmith")
    sent = _recorded(connector)
    with pytest.raises(FatalError, match="in use by jsmith"):
        connector.ensure_ap_invoice("PARTJS", *_bill(vendor, "PARTJS-1"))
    assert all(call.startswith("GET ") for call in sent)
    assert _group(sandbox, "PARTJS")["ActiveUserID"] == "jsmith"
    assert _stored(running, vendor["VendorNum"], "PARTJS-1")["APInvDtls"] == []


def test_a_lost_answer_on_create_is_recovered_by_looking_the_invoice_up() -> None:
    settings = EpicorSandboxSettings(duplicate_status=400)  # a duplicate is a 400 BLException: no 409 to wait for
    with start_sandbox(EpicorSandbox(SandboxOptions(seed=9, records=30), settings)) as server:
        connector = live(server, timeout=0.5)
        vendor = a_vendor(server.sandbox, 2)
        header, lines = _bill(vendor, "LOSTC-1")
        # the header's save is carried out, and its answer never arrives (the read times out)
        requests.post(f"{server.url}/_sandbox/epicor/lost-answers",
                      json={"path_contains": "UpdateMaster", "count": 1, "delay_seconds": 1.5}, timeout=5)
        sent = _recorded(connector)
        invoice, action = connector.ensure_ap_invoice("LOST01", header, lines)
        assert action == "created" and [l.InvoiceLine for l in invoice.lines] == [1, 2]
        assert _count(sent, "UpdateMaster") == 3  # the header once, never resent; then one per line
        assert _count(sent, "GetByID") == 2  # the look-up before writing, and the one after the lost answer
        stored = _stored(server, vendor["VendorNum"], "LOSTC-1")
        assert stored is not None and _lines(stored) == WHOLE
        # the first line's answer lost (a gateway error after the server acted): found by its row id too
        requests.post(f"{server.url}/_sandbox/epicor/lost-answers",
                      json={"path_contains": "UpdateMaster", "skip": 1, "count": 1, "status": 502}, timeout=5)
        sent.clear()
        _, action = connector.ensure_ap_invoice("LOST01", *_bill(vendor, "LOSTC-2"))
        assert action == "created" and _count(sent, "UpdateMaster") == 3 and _count(sent, "GetByID") == 2
        assert _lines(_stored(server, vendor["VendorNum"], "LOSTC-2")) == WHOLE
        # another invoice already holding the key is refused (400), never taken for ours
        with pytest.raises(FatalError) as caught:
            connector.create_ap_invoice("LOST01", header, lines)
        assert caught.value.status == 400 and "already exists" in caught.value.message
        assert caught.value.details["ErrorType"] == "Ice.BLException"
        assert _stored(server, vendor["VendorNum"], "LOSTC-1")["SysRowID"] == stored["SysRowID"]
        assert _group(server.sandbox, "LOST01")["ActiveUserID"] == ""


def test_every_method_call_sends_exactly_the_declared_inputs(running: Any, sandbox: EpicorSandbox,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the sandbox's one declaration table: nothing missing, nothing undeclared."""
    from sandboxes.epicor.methods import BoMethod

    calls: list[tuple[str, set[str], set[str]]] = []
    call = BoMethod.call

    def spy(method: BoMethod, sb: Any, tables: tuple[str, ...], params: dict[str, Any]) -> dict[str, Any]:
        calls.append((method.handler.__name__, set(method.inputs) - set(params), set(params) - set(method.inputs)))
        return call(method, sb, tables, params)

    monkeypatch.setattr(BoMethod, "call", spy)
    connector = live(running)
    vendor = a_vendor(sandbox, 26)
    connector.ensure_ap_invoice("DECL01", *_bill(vendor, "DECL-1"))
    sandbox.put_entity("ap_invoices", {"VendorNum": vendor["VendorNum"], "InvoiceNum": "DECL-PAY", "Posted": True,
                                       "GroupID": "", "InvoiceDate": "2024-05-01",
                                       "lines": [{"Description": "Parts", "ExtCost": 40, "GLAccount": "5100|100"}]})
    connector.create_ap_payment(vendor["VendorNum"], "DECL-PAY", Decimal("40"), date(2024, 6, 1), "DECL-PMT")
    names = {name for name, _, _ in calls}
    assert {"m_update_master", "m_change_vendor_id", "m_change_invoice_date_ex", "m_get_new_ap_tran"} <= names
    assert [(name, missing, extra) for name, missing, extra in calls if missing or extra] == []


def test_an_update_master_whose_update_did_not_run_is_refused_with_its_message(running: Any,
                                                                                sandbox: EpicorSandbox) -> None:
    """`lUpdateRan` false alone (no question asked) is a refusal too, `opMessage` its reason."""
    connector = live(running)
    vendor = a_vendor(sandbox, 27)
    requests.post(f"{running.url}/_sandbox/epicor/update-master-holds", json={
        "invoice_num": "NORUN-1", "requires_user_input": False, "update_ran": False,
        "op_message": "Legal number generation failed."}, timeout=5).raise_for_status()
    with pytest.raises(FatalError, match="Legal number generation failed") as caught:
        connector.ensure_ap_invoice("NORUN01", *_bill(vendor, "NORUN-1"))
    assert caught.value.details["lUpdateRan"] is False and caught.value.details["requiresUserInput"] is False
    assert _stored(running, vendor["VendorNum"], "NORUN-1") is None
