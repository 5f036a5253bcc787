"""SYSPRO connector: exact request shapes (`responses`) and contracts against the sandbox."""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from connectors.syspro import SysproConnector
from mlconnector.http import AuthError, FatalError, RetriableError
from mlconnector.http.runtime import build_runtime
from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.syspro import SysproSandbox

BASE = "https://erp.example.com:20003/SYSPROWCFService/Rest"
ODATA = "https://erp.example.com/SYSPROOData/EDU1"
SESSION = "3EA613166FE4BF47925DF1CEA14E910100"
SECRET = "Op-Secret-991"
COMPANY_SECRET = "Co-Secret-552"
FAST_RETRY = {"base": 0.05, "max_wait": 2, "max_tries": 4}
SINCE = datetime(2025, 5, 1, 10, 0, tzinfo=timezone.utc)
UNTIL = datetime(2025, 5, 1, 10, 15, tzinfo=timezone.utc)
ROOT = "Language='05' Language2='EN' CssStyle='' DecFormat='1' DateFormat='01' Role='01' Version='8.0.000' OperatorPrimaryRole='   '"


def connector(**config: Any) -> SysproConnector:
    return SysproConnector.create(
        {"api_base": BASE, "retry": FAST_RETRY, **config},
        {"operator": "ADMIN", "operator_password": SECRET, "company_id": "EDU1", "company_password": COMPANY_SECRET},
        build_runtime(""),
    )


def query_of(call: Any) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(call.request.url).query, keep_blank_values=True)


def xml_param(call: Any, name: str) -> ET.Element:
    return ET.fromstring(dict(query_of(call))[name])


def expressions(call: Any) -> list[tuple[str, str, str, str, str, str]]:
    where = xml_param(call, "XmlIn").find("Where")
    assert where is not None
    return [(e.findtext("OpenBracket") or "", e.findtext("AndOr") or "", e.findtext("Column") or "",
             e.findtext("Condition") or "", e.findtext("Value") or "", e.findtext("CloseBracket") or "")
            for e in where.findall("Expression")]


def table(name: str, rows: list[dict[str, str]]) -> str:
    body = "".join("<Row>" + "".join(f"<{k}>{v}</{k}>" for k, v in row.items()) + "</Row>" for row in rows)
    return (f'<?xml version="1.0" encoding="Windows-1252"?>\n<{name} {ROOT}><HeaderDetails><TableName>{name}</TableName>'
            f"</HeaderDetails>{body}<RowsReturned>{len(rows):>7}</RowsReturned></{name}>")


def supplier_row(code: str, changed: str) -> dict[str, str]:
    return {"Supplier": code, "SupplierName": f"Supplier {code}   ", "OnHold": "N", "DateSuppAdded": "",
            "LastChangeDate": changed}


def on(method_path: str, *bodies: Any) -> None:
    for body in bodies:
        if isinstance(body, Exception):
            responses.add(responses.GET, f"{BASE}/{method_path}", body=body)
        else:
            responses.add(responses.GET, f"{BASE}/{method_path}", body=body, content_type="application/octet-stream")


def session_calls() -> None:
    on("Logon", SESSION + "  ")
    on("Logoff", "0")


# ---- request shapes (responses) ------------------------------------------------------------------


@responses.activate
def test_logon_comfnd_and_logoff_request_shapes() -> None:
    session_calls()
    on("Query/Query", table("ApSupplier", [supplier_row("S1", "2025-05-01T10:01:02.500")]))
    records = list(connector().iter_changed("suppliers", SINCE, UNTIL))
    assert [r.supplier for r in records] == ["S1"] and records[0].name == "Supplier S1"
    assert records[0].changed_at == datetime(2025, 5, 1, 10, 1, 2, 500000, tzinfo=timezone.utc)
    logon, query, logoff = responses.calls
    assert all(c.request.method == "GET" and "Authorization" not in c.request.headers for c in responses.calls)
    assert urlsplit(logon.request.url).path.endswith("/Logon")
    assert query_of(logon) == [("Operator", "ADMIN"), ("OperatorPassword", SECRET), ("CompanyId", "EDU1"),
                               ("CompanyPassword", COMPANY_SECRET)]
    params = query_of(query)
    assert [k for k, _ in params] == ["UserId", "BusinessObject", "XmlIn"]
    assert dict(params)["UserId"] == SESSION and dict(params)["BusinessObject"] == "COMFND"
    document = xml_param(query, "XmlIn")
    assert document.tag == "Query" and document.findtext("TableName") == "ApSupplier"
    assert document.findtext("ReturnRows") == "500"
    assert [c.text for c in document.findall("OrderBy/Column")] == ["LastChangeDate", "Supplier"]
    assert expressions(query) == [
        ("(", "", "LastChangeDate", "GE", "2025-05-01T10:00:00.000", ""),
        ("", "And", "LastChangeDate", "LT", "2025-05-01T10:15:00.000", ")"),
    ]
    assert dict(query_of(logoff)) == {"UserId": SESSION}


@responses.activate
def test_watermarks_are_sent_in_the_servers_local_time() -> None:
    session_calls()
    on("Query/Query", table("ApSupplier", [supplier_row("S1", "2025-05-01T05:01:00.000")]))
    records = list(connector(server_timezone="America/Chicago").iter_changed("suppliers", SINCE, UNTIL))
    assert expressions(responses.calls[1])[0][4] == "2025-05-01T05:00:00.000"  # CDT is UTC-5
    assert records[0].changed_at == datetime(2025, 5, 1, 10, 1, tzinfo=timezone.utc)


@responses.activate
def test_keyset_continuation_is_one_level_of_brackets() -> None:
    session_calls()
    on("Query/Query",
       table("ApSupplier", [supplier_row("S1", "2025-05-01T10:01:00.000"), supplier_row("S2", "2025-05-01T10:02:00.000")]),
       table("ApSupplier", []))
    records = list(connector(page_size=2).iter_changed("suppliers", SINCE, UNTIL))
    assert [r.supplier for r in records] == ["S1", "S2"]
    since, until, last = "2025-05-01T10:00:00.000", "2025-05-01T10:15:00.000", "2025-05-01T10:02:00.000"
    assert expressions(responses.calls[2]) == [
        ("(", "", "LastChangeDate", "GE", since, ""),
        ("", "And", "LastChangeDate", "LT", until, ""),
        ("", "And", "LastChangeDate", "GT", last, ")"),
        ("(", "Or", "LastChangeDate", "GE", since, ""),
        ("", "And", "LastChangeDate", "LT", until, ""),
        ("", "And", "LastChangeDate", "EQ", last, ""),
        ("", "And", "Supplier", "GT", "S2", ")"),
    ]


@responses.activate
def test_purchase_order_lines_are_fetched_per_batch_of_orders() -> None:
    session_calls()
    headers = [{"PurchaseOrder": f"P{i}", "Supplier": "S1", "OrderStatus": "1", "LastChangeDate": f"2025-05-01T10:0{i}:00.000"}
               for i in (1, 2, 3)]
    lines = [{"PurchaseOrder": "P1", "Line": "1", "MStockCode": "A", "MOrderQty": "2.000000", "MPrice": "1.50000"},
             {"PurchaseOrder": "P3", "Line": "1", "MStockCode": "B", "MOrderQty": "1.000000", "MPrice": "9.00000"},
             {"PurchaseOrder": "P3", "Line": "2", "MStockCode": "C", "MOrderQty": "4.000000", "MPrice": "2.00000"}]
    on("Query/Query", table("PorMasterHdr", headers), table("PorMasterDetail", lines))
    orders = list(connector(detail_batch_size=5).iter_changed("purchase_orders", None, UNTIL))
    assert [len(o.lines) for o in orders] == [1, 0, 2] and orders[2].lines[1].order_qty == Decimal("4")
    detail = responses.calls[2]
    assert xml_param(detail, "XmlIn").findtext("TableName") == "PorMasterDetail"
    assert expressions(detail) == [("(", "", "PurchaseOrder", "EQ", "P1", ")"), ("(", "Or", "PurchaseOrder", "EQ", "P2", ")"),
                                   ("(", "Or", "PurchaseOrder", "EQ", "P3", ")")]
    assert [c.text for c in xml_param(detail, "XmlIn").findall("OrderBy/Column")] == ["PurchaseOrder", "Line"]


@responses.activate
def test_apstin_request_shape() -> None:
    session_calls()
    on("Query/Query", table("ApInvoice", []))
    on("Transaction/Post", f"<?xml version='1.0' encoding='Windows-1252'?><postapinvoice {ROOT}><Item><Key><Supplier>SUP0042</Supplier>"
       "<Invoice>INV-77812</Invoice></Key><Journal>31</Journal><EntryNumber>1</EntryNumber><ItemNumber>000001</ItemNumber></Item>"
       "<StatusOfItems><ItemsProcessed>000001</ItemsProcessed><ItemsInvalid>000000</ItemsInvalid></StatusOfItems></postapinvoice>")
    result = connector().post_ap_invoice({
        "supplier": "SUP0042", "invoice": "INV-77812", "value": "1150", "invoice_date": "2025-05-14",
        "notation": "Concrete May", "tax_code": "A",
        "distribution": [{"ledger_code": "10-5500", "value": "1000", "notation": "Materials"}],
    })
    assert result.keys == {"Supplier": "SUP0042", "Invoice": "INV-77812", "Journal": "31", "EntryNumber": "1"}
    assert result.items_processed == 1 and not result.already_existed
    lookup = responses.calls[1]
    assert expressions(lookup) == [("(", "", "Supplier", "EQ", "SUP0042", ""), ("", "And", "Invoice", "EQ", "INV-77812", ")")]
    post = responses.calls[2]
    assert [k for k, _ in query_of(post)] == ["UserId", "BusinessObject", "XmlParameters", "XmlIn"]
    raw = dict(query_of(post))
    assert raw["XmlIn"].startswith('<?xml version="1.0" encoding="Windows-1252"?><PostApInvoice')
    parameters = {e.tag: e.text for e in xml_param(post, "XmlParameters").find("Parameters")}
    assert parameters == {"PostingPeriod": "C", "IgnoreWarnings": "N", "ApplyIfEntireDocumentValid": "Y", "ValidateOnly": "N",
                          "PostZeroAdjustments": "N", "LedgerDistributionCurrency": "L", "AutomaticTaxCalculation": "Y"}
    item = xml_param(post, "XmlIn").find("Item")
    assert [c.tag for c in item][:12] == ["Supplier", "TransactionCode", "Branch", "Invoice", "EntryNumber", "TransactionValue",
                                         "Notation", "TransactionReference", "InvoiceDate", "DueDate", "DiscountDate", "TaxCode"]
    assert item.findtext("TransactionValue") == "1150.00" and item.findtext("InvoiceDate") == "2025-05-14"
    assert item.findtext("LedgerDistribution/LedgerValue") == "1000.00"


@responses.activate
def test_portoi_invtma_and_apsssp_request_shapes() -> None:
    session_calls()
    on("Query/Query", table("PorMasterHdr", []), table("InvMovements", []), table("ApSupplier", []))
    status = "<StatusOfItems><ItemsProcessed>000001</ItemsProcessed><ItemsInvalid>000000</ItemsInvalid></StatusOfItems>"
    on("Transaction/Post",
       f"<postpurchaseorders {ROOT}><Order><Key><PurchaseOrder>P01308</PurchaseOrder></Key></Order>{status}</postpurchaseorders>",
       f"<postinvadjustments {ROOT}><Item><Journal>7</Journal><JournalEntry>1</JournalEntry></Item>{status}</postinvadjustments>")
    on("Setup/Add", f"<setupapsupplier {ROOT}><item><key><supplier>NEW1</supplier></key></item>"
       "<StatusOfItems><RecordsRead>1</RecordsRead><RecordsInvalid>0</RecordsInvalid></StatusOfItems></setupapsupplier>")
    c = connector()
    po = c.post_purchase_order({"supplier": "S1", "reference": "ST-PO-9", "warehouse": "WH01",
                                "lines": [{"stock_code": "CAP-1", "quantity": "2", "price": "12.5"}], "comments": ["Dock 2"]})
    adjustment = c.post_inventory_adjustment({"stock_code": "CAP-1", "warehouse": "VAN1", "quantity": "-2", "reference": "ADJ-1"})
    supplier = c.add_supplier({"supplier": "NEW1", "name": "New One", "address": ["1 Main St", "Springfield"], "on_hold": False})
    assert po.keys["PurchaseOrder"] == "P01308" and adjustment.keys["Journal"] == "7" and supplier.items_processed == 1
    posts = [c for c in responses.calls if "/Transaction/Post" in c.request.url or "/Setup/" in c.request.url]
    order = xml_param(posts[0], "XmlIn").find("Orders")
    assert order.findtext("OrderHeader/OrderActionType") == "A" and order.findtext("OrderHeader/CustomerPoNumber") == "ST-PO-9"
    assert [(l.findtext("LineActionType"), l.findtext("StockCode"), l.findtext("OrderQty"), l.findtext("Price"))
            for l in order.findall("OrderDetails/StockLine")] == [("A", "CAP-1", "2", "12.5")]
    assert order.findtext("OrderDetails/CommentLine/Comment") == "Dock 2"
    assert xml_param(posts[0], "XmlParameters").findtext("Parameters/AllowNonStockItems") == "N"
    item = xml_param(posts[1], "XmlIn").find("Item")
    assert (item.findtext("Warehouse"), item.findtext("StockCode"), item.findtext("Quantity"), item.findtext("Reference")) == \
           ("VAN1", "CAP-1", "-2", "ADJ-1")
    assert xml_param(posts[1], "XmlParameters").findtext("Parameters/PhysicalCount") == "N"
    assert urlsplit(posts[2].request.url).path.endswith("/Setup/Add")
    setup = xml_param(posts[2], "XmlIn").find("Item")
    assert setup.findtext("Key/Supplier") == "NEW1"
    assert [c.tag for c in setup][1:] == ["SupplierName", "SupAddr1", "SupAddr2", "SupAddr3", "SupAddr4", "SupAddr5", "OnHold"]


@responses.activate
def test_business_errors_in_the_xml_become_fatal_errors_with_the_vendors_text() -> None:
    session_calls()
    on("Query/Query", table("ApInvoice", []), table("ApInvoice", []))
    on("Transaction/Post", f"<postapinvoice {ROOT}><Item><Key><Supplier>NOPE</Supplier><Invoice>I-1</Invoice></Key>"
       "<Supplier><Value>NOPE</Value><ErrorNumber>110402</ErrorNumber><ErrorDescription>Supplier 'NOPE' not found</ErrorDescription>"
       "</Supplier><ItemNumber>000001</ItemNumber></Item><StatusOfItems><ItemsProcessed>000000</ItemsProcessed>"
       "<ItemsInvalid>000001</ItemsInvalid></StatusOfItems></postapinvoice>")
    with pytest.raises(FatalError) as caught:
        connector().post_ap_invoice({"supplier": "NOPE", "invoice": "I-1", "value": "10", "invoice_date": "2025-05-14"})
    assert caught.value.message == "APSTIN: Supplier 'NOPE' not found (Supplier)"
    assert caught.value.details["errors"] == [{"field": "Supplier", "value": "NOPE", "number": "110402",
                                               "description": "Supplier 'NOPE' not found"}]
    assert urlsplit(responses.calls[-1].request.url).path.endswith("/Logoff")  # logged off after the failure


@responses.activate
def test_logon_refusals_map_to_the_taxonomy() -> None:
    on("Logon", "ERROR: Invalid operator password")
    with pytest.raises(AuthError) as caught:
        connector().find_supplier("S1")
    assert caught.value.message == "ERROR: Invalid operator password" and SECRET not in str(caught.value)
    responses.reset()
    on("Logon", *["ERROR: e.net licence limit reached - all 5 of 5 licences are in use"] * 3)
    with pytest.raises(RetriableError) as seats:
        connector(logon_attempts=3).find_supplier("S1")
    assert "licence" in seats.value.message and len(responses.calls) == 3


@responses.activate
def test_an_expired_session_is_replaced_once_and_never_named() -> None:
    on("Logon", SESSION + "  ", "NEWSESSION0000000000000000000000AB  ")
    on("Query/Query", f"ERROR: Session '{SESSION}' is invalid or has expired - please log on again",
       table("ApSupplier", [supplier_row("S1", "2025-05-01T10:01:00.000")]))
    on("Logoff", "0")
    assert connector().find_supplier("S1").supplier == "S1"
    paths = [urlsplit(c.request.url).path.rsplit("/", 1)[-1] for c in responses.calls]
    assert paths == ["Logon", "Query", "Logon", "Query", "Logoff"]
    assert dict(query_of(responses.calls[3]))["UserId"] == "NEWSESSION0000000000000000000000AB"
    assert dict(query_of(responses.calls[4]))["UserId"] == "NEWSESSION0000000000000000000000AB"


@responses.activate
def test_a_second_stale_session_is_fatal_without_the_session_id() -> None:
    on("Logon", SESSION + "  ", SESSION + "  ")
    on("Query/Query", *[f"ERROR: Session '{SESSION}' is invalid or has expired"] * 2)
    on("Logoff", "ERROR: Session not found")
    with pytest.raises(FatalError) as caught:
        connector().find_supplier("S1")
    assert SESSION not in str(caught.value) and "***" in caught.value.message


@responses.activate
@pytest.mark.parametrize("wrapped", [f"<string xmlns=\"http://schemas.microsoft.com/2003/10/Serialization/\">{SESSION}  </string>",
                                     f'"{SESSION}  "'])
def test_wrapped_logon_answers_are_unwrapped(wrapped: str) -> None:
    on("Logon", wrapped)
    on("Query/Query", table("ApSupplier", []))
    on("Logoff", "0")
    assert connector().find_supplier("S1") is None
    assert dict(query_of(responses.calls[1]))["UserId"] == SESSION


@responses.activate
def test_a_post_whose_answer_was_lost_is_not_sent_twice() -> None:
    session_calls()
    invoice_row = {"Supplier": "S1", "Invoice": "I-9", "OrigInvValue": "10.00", "LastChangeDate": "2025-05-01T10:00:00.000"}
    on("Query/Query", table("ApInvoice", []), table("ApInvoice", [invoice_row]))
    on("Transaction/Post", requests.ConnectionError("connection reset by peer"))
    result = connector().post_ap_invoice({"supplier": "S1", "invoice": "I-9", "value": "10", "invoice_date": "2025-05-14"})
    assert result.already_existed
    assert sum(1 for c in responses.calls if "/Transaction/Post" in c.request.url) == 1


@responses.activate
def test_odata_read_request_shape() -> None:
    responses.add(responses.GET, f"{ODATA}/ApSupplier", json={"value": [
        {"Supplier": "S1", "SupplierName": "One", "OnHold": "N", "LastChangeDate": "2025-05-01T10:01:00.000Z"}]})
    records = list(connector(read_via="odata", odata_base=ODATA).iter_changed("suppliers", SINCE, UNTIL))
    assert [r.supplier for r in records] == ["S1"] and records[0].changed_at == datetime(2025, 5, 1, 10, 1, tzinfo=timezone.utc)
    (call,) = responses.calls  # no Logon: OData reads hold no licence seat
    assert call.request.headers["Authorization"].startswith("Basic ")
    assert dict(query_of(call)) == {
        "$top": "500", "$orderby": "LastChangeDate,Supplier",
        "$filter": "(LastChangeDate ge 2025-05-01T10:00:00.000Z and LastChangeDate lt 2025-05-01T10:15:00.000Z)",
    }


# ---- contracts against the sandbox --------------------------------------------------------------


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    sandbox = SysproSandbox(SandboxOptions(seed=3, records=200))
    with start_sandbox(sandbox) as run:
        yield run


@pytest.fixture
def sb(running: Any) -> Iterator[SysproSandbox]:
    requests.post(f"{running.url}/_sandbox/reset", json={"records": 200}, timeout=10)
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"seats": 10, "session_idle_seconds": 1200}, timeout=5)
    yield running.sandbox


def live(sb: SysproSandbox, **config: Any) -> SysproConnector:
    settings, credentials = SysproConnector.settings_from_sandbox_info(sb.info())
    return SysproConnector.create({**settings, "retry": FAST_RETRY, **config}, credentials, build_runtime(""))


def sandbox_stats(sb: SysproSandbox) -> dict[str, Any]:
    return sb.stats.snapshot()


def now() -> datetime:
    return datetime.now(timezone.utc) + timedelta(seconds=1)


def test_full_pagination_of_thousands_in_constant_pages(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/reset", json={"records": 2500}, timeout=30)
    c = live(sb)
    records = iter(c.iter_changed("suppliers", None, now()))
    first = next(records)
    assert c.call_count == 2  # Logon + one page: the iterator is lazy
    keys = [first.supplier] + [r.supplier for r in records]
    assert len(keys) == len(set(keys)) == 2500
    assert set(keys) == {s["Supplier"] for s in sb.get_entities("suppliers")}
    stats = sandbox_stats(sb)
    assert stats["bo_COMFND"] == 6 and stats["logons"] == stats["logoffs"] == 1 and stats["open_sessions"] == 0
    orders = {o.purchase_order: o for o in c.iter_changed("purchase_orders", None, now())}
    stored = {p["PurchaseOrder"]: p for p in sb.get_entities("purchase_orders")}
    assert len(orders) == 2500
    assert all(len(orders[n].lines) == len(stored[n]["lines"]) for n in stored)


KEYS = {
    "suppliers": ("ApSupplier", lambda r: r.supplier),
    "ap_invoices": ("ApInvoice", lambda r: (r.supplier, r.invoice)),
    "inventory_movements": ("InvMovements", lambda r: (r.journal, r.journal_entry)),
}


@pytest.mark.parametrize("entity", list(KEYS))
def test_small_pages_cross_equal_change_dates_without_loss(sb: SysproSandbox, entity: str) -> None:
    table, key = KEYS[entity]
    stamps = [r[sb.tables[table].change] for r in sb.tables[table].rows.values()]
    assert len(set(stamps)) < len(stamps)  # the seed has ties, some of them across page boundaries
    keys = [key(r) for r in live(sb, page_size=7).iter_changed(entity, None, now())]
    assert len(keys) == len(set(keys)) == len(sb.tables[table].rows)


def test_change_window_is_since_inclusive_and_capped_at_until(running: Any, sb: SysproSandbox) -> None:
    c = live(sb)
    since = datetime.now(timezone.utc) - timedelta(milliseconds=5)
    requests.post(f"{running.url}/_sandbox/entities/suppliers", json={"Supplier": "NEW1", "SupplierName": "New"}, timeout=5)
    ticked = requests.post(f"{running.url}/_sandbox/tick", json={"count": 1}, timeout=5).json()["changed"][0]["key"][0]
    time.sleep(0.01)
    until = datetime.now(timezone.utc)
    time.sleep(0.01)
    requests.post(f"{running.url}/_sandbox/entities/suppliers", json={"Supplier": "LATE", "SupplierName": "Late"}, timeout=5)
    changed = [r.supplier for r in c.iter_changed("suppliers", since, until)]
    assert changed == ["NEW1", ticked]
    assert [r.supplier for r in c.iter_changed("suppliers", until, now())] == ["LATE"]


def test_a_session_expiring_mid_pagination_is_replaced(running: Any, sb: SysproSandbox) -> None:
    c = live(sb, page_size=50)
    records = c.iter_changed("suppliers", None, now())
    keys = [next(records).supplier for _ in range(50)]
    requests.post(f"{running.url}/_sandbox/expire-tokens", timeout=5)
    keys += [r.supplier for r in records]
    assert len(keys) == len(set(keys)) == 200
    stats = sandbox_stats(sb)
    assert stats["logons"] == 2 and stats["logoffs"] == 1 and stats["sessions_expired"] == 1
    assert stats["open_sessions"] == 0


def test_429_with_retry_after_is_waited_out(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"burst_429": 1, "retry_after": 1}, timeout=5)
    started = time.monotonic()
    assert live(sb).find_supplier("S00001") is not None
    assert time.monotonic() - started >= 0.95
    assert sandbox_stats(sb)["rate_limited"] == 1


def test_5xx_then_success(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"fail_next": 2, "error_status": 503}, timeout=5)
    assert len(list(live(sb).iter_changed("stock_items", None, now()))) == 200
    assert sandbox_stats(sb)["by_status"]["503"] == 2


def test_5xx_past_the_retries_surfaces_the_hosts_message(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"fail_next": 10, "error_status": 502}, timeout=5)
    with pytest.raises(RetriableError) as caught:
        live(sb, retry={"base": 0.01, "max_wait": 0.05, "max_tries": 2}).find_supplier("S00001")
    assert caught.value.status == 502 and caught.value.message == "Injected fault"


@pytest.mark.parametrize("invoice, message", [
    ({"supplier": "NOPE"}, "APSTIN: Supplier 'NOPE' not found (Supplier)"),
    ({"value": "-5"}, "APSTIN: Invalid transaction value '-5.00' (TransactionValue)"),
    ({"distribution": [{"ledger_code": "10-5500", "value": "200"}]},
     "APSTIN: Distribution total 200.00 does not balance to invoice value 115.00 (TransactionValue)"),
    ({"distribution": [{"ledger_code": "99-9999", "value": "100"}]}, "APSTIN: Ledger code '99-9999' not found (LedgerCode)"),
])
def test_validation_errors_surface_the_vendors_message(sb: SysproSandbox, invoice: dict[str, Any], message: str) -> None:
    payload = {"supplier": "S00001", "invoice": "VAL-1", "value": "115", "invoice_date": "2025-05-14", **invoice}
    with pytest.raises(FatalError) as caught:
        live(sb).post_ap_invoice(payload)
    assert caught.value.message == message and caught.value.status is None
    assert not any(i["Invoice"] == "VAL-1" for i in sb.get_entities("ap_invoices"))
    assert sandbox_stats(sb)["open_sessions"] == 0


def test_ap_invoice_end_to_end_and_idempotent(sb: SysproSandbox) -> None:
    c = live(sb)
    invoice = {"supplier": "S00002", "invoice": "ST-INV-1", "value": "1150.00", "invoice_date": "2025-05-14",
               "reference": "ST-1001", "distribution": [{"ledger_code": "10-5500", "value": "1000"}]}
    assert c.post_ap_invoice(invoice, validate_only=True).validate_only
    assert c.find_ap_invoice("S00002", "ST-INV-1") is None
    posted = c.post_ap_invoice(invoice)
    assert posted.items_processed == 1 and posted.keys["Journal"]
    found = c.find_ap_invoice("s00002", "st-inv-1")
    assert found is not None and found.original_value == Decimal("1150.00") and found.tax_value == Decimal("150.00")
    assert c.post_ap_invoice(invoice).already_existed
    assert c.post_ap_invoice(invoice, skip_existing=False).already_existed  # SYSPRO's duplicate answer, then the look-up
    assert sum(1 for i in sb.get_entities("ap_invoices") if i["Invoice"] == "ST-INV-1") == 1
    stats = sandbox_stats(sb)
    assert stats["logons"] == stats["logoffs"] and stats["open_sessions"] == 0


def test_suppliers_by_code_and_name_add_and_update(sb: SysproSandbox) -> None:
    c = live(sb)
    twin = sb.get_entities("suppliers")[6]  # every seventh seeded supplier is a near-duplicate of another
    assert c.find_supplier(name=twin["SupplierName"].upper()).supplier == twin["Supplier"]
    assert c.find_supplier("S00003").supplier == "S00003" and c.find_supplier("ZZZ") is None
    added = c.add_supplier({"supplier": "ST-V-77", "name": "Acme Concrete Supply", "address": ["12 Main Street"],
                            "telephone": "555-1000", "currency": "$"})
    assert added.items_processed == 1 and not added.already_existed
    assert c.add_supplier({"supplier": "ST-V-77", "name": "Acme Concrete Supply"}).already_existed
    c.update_supplier("ST-V-77", {"name": "Acme Concrete Supply Inc.", "on_hold": True})
    found = c.find_supplier("ST-V-77")
    assert found.name == "Acme Concrete Supply Inc." and found.on_hold and found.address_1 == "12 Main Street"
    with pytest.raises(FatalError) as caught:
        c.update_supplier("GHOST", {"name": "x"})
    assert caught.value.message == "APSSSP: Supplier 'GHOST' not found (supplier)"


def test_purchase_orders_both_ways(sb: SysproSandbox) -> None:
    c = live(sb)
    order = {"supplier": "S00004", "reference": "ST-PO-777", "warehouse": "WH01", "comments": ["Job 4411"], "freight": "25",
             "lines": [{"stock_code": "CAP-00001", "quantity": "3", "price": "45.10"},
                       {"stock_code": "THM-00004", "quantity": "1", "price": "120"}]}
    posted = c.post_purchase_order(order)
    number = posted.keys["PurchaseOrder"]
    found = c.find_purchase_order(reference="ST-PO-777")
    assert found.purchase_order == number and found.is_open
    assert [(l.stock_code, l.order_qty, l.line_type) for l in found.lines][:2] == [
        ("CAP-00001", Decimal("3"), "1"), ("THM-00004", Decimal("1"), "1")]
    assert [l.line_type for l in found.lines][2:] == ["6", "4"]
    assert c.post_purchase_order(order).already_existed
    changed = c.post_purchase_order({**order, "lines": [{"stock_code": "FLT-00002", "quantity": "5", "price": "3"}],
                                     "comments": [], "freight": None}, update_existing=True)
    assert changed.keys == {"PurchaseOrder": number, "Action": "C"}
    assert len(c.find_purchase_order(number).lines) == 5
    changed_since = [o.purchase_order for o in c.iter_changed("purchase_orders", datetime.now(timezone.utc) - timedelta(seconds=30), now())]
    assert changed_since == [number]
    c.cancel_purchase_order(number)
    assert c.find_purchase_order(number).status == "*"
    with pytest.raises(FatalError) as caught:
        c.post_purchase_order({**order, "lines": []}, update_existing=True)
    assert "is cancelled and cannot be maintained" in caught.value.message
    with pytest.raises(FatalError) as bad:
        c.post_purchase_order({"supplier": "S00004", "lines": [{"stock_code": "NOPE", "quantity": "1", "price": "1"}]})
    assert bad.value.message == "PORTOI: Stock code 'NOPE' not found (StockCode)"


def test_inventory_adjustments_both_ways(sb: SysproSandbox) -> None:
    c = live(sb)
    before = {w.warehouse: w.qty_on_hand for w in c.get_stock_levels("CAP-00001").warehouses}
    since = datetime.now(timezone.utc) - timedelta(milliseconds=5)
    posted = c.post_inventory_adjustment({"stock_code": "CAP-00001", "warehouse": "VAN1", "quantity": "3",
                                          "reference": "ST-ADJ-5", "notation": "Truck restock"})
    assert posted.keys["Journal"] and posted.items_processed == 1
    after = c.get_stock_levels("CAP-00001", "VAN1")
    assert [w.warehouse for w in after.warehouses] == ["VAN1"] and after.warehouses[0].qty_on_hand == before["VAN1"] + 3
    movements = list(c.iter_changed("inventory_movements", since, now()))
    assert [(m.reference, m.quantity, m.transaction_type) for m in movements] == [("ST-ADJ-5", Decimal("3"), "A")]
    again = c.post_inventory_adjustment({"stock_code": "CAP-00001", "warehouse": "VAN1", "quantity": "3", "reference": "ST-ADJ-5"})
    assert again.already_existed and again.keys["Journal"] == posted.keys["Journal"]
    assert c.get_stock_levels("CAP-00001", "VAN1").warehouses[0].qty_on_hand == before["VAN1"] + 3
    with pytest.raises(FatalError) as caught:
        c.post_inventory_adjustment({"stock_code": "CAP-00001", "warehouse": "VAN1", "quantity": "-100000", "reference": "X"})
    assert "would make quantity on hand negative" in caught.value.message


def test_every_session_is_logged_off_even_after_errors(sb: SysproSandbox) -> None:
    c = live(sb)
    with pytest.raises(FatalError):
        with c.session():
            assert c.find_supplier("S00001") is not None
            with c.session():  # nested blocks share the session
                c.post_ap_invoice({"supplier": "NOPE", "invoice": "E-1", "value": "1", "invoice_date": "2025-05-14"})
    list(c.iter_changed("suppliers", None, now()))
    abandoned = c.iter_changed("ap_invoices", None, now())
    next(abandoned)
    abandoned.close()  # a consumer that stops early still logs off
    stats = sandbox_stats(sb)
    assert stats["logons"] == stats["logoffs"] == 3 and stats["open_sessions"] == 0


def test_concurrent_work_stays_within_the_seats_allowed(sb: SysproSandbox) -> None:
    c = live(sb, max_sessions=1)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                assert c.find_supplier("S00005") is not None
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sandbox_stats(sb)
    assert not failures and stats["peak_open_sessions"] == 1 and stats["logons"] == stats["logoffs"] == 12


def test_two_workers_share_the_licence_seats_through_redis(sb: SysproSandbox, redis_url: str) -> None:
    """Two connectors with runtimes of their own (as two worker processes have) and one
    Redis: together they never hold more sessions than `max_sessions`, and every session
    they opened is logged off."""
    import redis

    redis.Redis.from_url(redis_url).delete("mlconnector:slots:syspro:" + sb.info()["api_base"].split("/")[2] + ":EDU1")
    settings, credentials = SysproConnector.settings_from_sandbox_info(sb.info())
    workers = [SysproConnector.create({**settings, "retry": FAST_RETRY, "max_sessions": 2}, credentials,
                                      build_runtime(redis_url)) for _ in range(2)]
    failures: list[BaseException] = []

    def work(connector: SysproConnector) -> None:
        try:
            for _ in range(3):
                with connector.session():
                    assert connector.find_supplier("S00005") is not None
                    time.sleep(0.05)
        except BaseException as exc:  # collected for the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = sandbox_stats(sb)
    assert not failures, failures
    assert stats["peak_open_sessions"] == 2 and stats["logons"] == stats["logoffs"] == 18 and stats["open_sessions"] == 0


def test_a_host_out_of_licences_is_retriable(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"seats": 1}, timeout=5)
    credentials = sb.info()["credentials"]
    holder = requests.get(f"{sb.info()['api_base']}/Logon", timeout=5, params={
        "Operator": credentials["operator"], "OperatorPassword": credentials["operator_password"],
        "CompanyId": credentials["company_id"], "CompanyPassword": credentials["company_password"]}).text
    with pytest.raises(RetriableError) as caught:
        live(sb, logon_attempts=2).find_supplier("S00001")
    assert "licence" in caught.value.message and sandbox_stats(sb)["seat_refusals"] == 2
    requests.get(f"{sb.info()['api_base']}/Logoff", params={"UserId": holder}, timeout=5)
    assert live(sb).find_supplier("S00001") is not None


def test_no_secret_or_session_id_in_any_message(running: Any, sb: SysproSandbox) -> None:
    settings, credentials = SysproConnector.settings_from_sandbox_info(sb.info())
    secrets = [credentials["operator_password"], credentials["company_password"]]
    wrong = SysproConnector.create({**settings, "retry": FAST_RETRY},
                                   {**credentials, "company_password": "Wrong-Co-Pass-4"}, build_runtime(""))
    with pytest.raises(AuthError) as refused:
        wrong.find_supplier("S00001")
    assert refused.value.message == "ERROR: Invalid company password"
    unreachable = SysproConnector.create({"api_base": "http://127.0.0.1:9/SYSPROWCFService/Rest",
                                          "retry": {"max_tries": 1}, "connect_timeout": 0.5}, credentials, build_runtime(""))
    with pytest.raises(RetriableError) as down:
        unreachable.find_supplier("S00001")
    assert "Logon" in str(down.value) or "Connection" in str(down.value)
    stale = live(sb, session_error_pattern="(?!)")  # never recognise a stale session: surface it instead
    with pytest.raises(FatalError) as expired:
        with stale.session():
            user_id = stale._local.session.user_id
            requests.post(f"{running.url}/_sandbox/expire-tokens", timeout=5)
            stale.find_supplier("S00001")
    assert "is invalid or has expired" in expired.value.message and "***" in expired.value.message
    for error in (refused.value, down.value, expired.value):
        text = f"{error} {error.to_dict()}"
        assert not any(secret in text for secret in secrets + ["Wrong-Co-Pass-4", user_id.strip()])


def test_check_reports_each_step(running: Any, sb: SysproSandbox) -> None:
    steps = live(sb).check()
    assert [s.step for s in steps] == ["GetVersion", "logon", "read suppliers", "read ap_invoices", "read purchase_orders",
                                       "read stock_items", "read inventory_movements", "object APSTIN", "object PORTOI",
                                       "object INVTMA", "object APSSSP", "logoff"]
    assert all(s.ok for s in steps), steps
    assert "ApSupplier.LastChangeDate answers" in steps[2].detail and "8.0.0.31" in steps[0].detail
    # The unconfirmed facts are each a verdict: a site without the supplier object, a change
    # column this site lacks. Both are named; nothing else fails, and the session is closed.
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"unlicensed_objects": ["APSSSP"]}, timeout=5)
    try:
        steps = {s.step: s for s in live(sb, change_columns={"suppliers": "TimeStamp"}).check()}
    finally:
        requests.post(f"{running.url}/_sandbox/syspro/settings", json={"unlicensed_objects": []}, timeout=5)
    failed = sorted(name for name, step in steps.items() if not step.ok)
    assert failed == ["object APSSSP", "read suppliers"], steps
    assert "APSSSP not confirmed" in steps["object APSSSP"].detail and "TimeStamp" in steps["read suppliers"].detail
    assert steps["logoff"].ok and sb.sessions.open_count() == 0
    settings, credentials = SysproConnector.settings_from_sandbox_info(sb.info())
    bad = SysproConnector.create(settings, {**credentials, "operator_password": "Not-The-Password"}, build_runtime(""))
    (version, step) = bad.check()
    assert version.ok and not step.ok and "Invalid operator password" in step.detail and "Not-The-Password" not in step.detail


def test_odata_reads_match_enet_reads_without_a_seat(sb: SysproSandbox) -> None:
    enet = sorted(r.supplier for r in live(sb).iter_changed("suppliers", None, now()))
    before = sandbox_stats(sb)["logons"]
    odata = live(sb, read_via="odata", odata_base=sb.odata_base(), page_size=30)
    assert sorted(r.supplier for r in odata.iter_changed("suppliers", None, now())) == enet
    orders = list(odata.iter_changed("purchase_orders", None, now()))
    assert len(orders) == 200 and sum(len(o.lines) for o in orders) == len(sb.tables["PorMasterDetail"].rows)
    assert odata.find_supplier("S00007").supplier == "S00007"
    assert sandbox_stats(sb)["logons"] == before


def test_new_ap_invoices_are_read_by_invoice_date_or_post_date(running: Any, sb: SysproSandbox) -> None:
    from datetime import date

    c = live(sb, page_size=7)
    rows = sb.tables["ApInvoice"].rows.values()
    since = sorted(r["InvoiceDate"] for r in rows)[len(rows) // 2]
    old = next(r for r in rows if r["InvoiceDate"] < since)
    requests.post(f"{running.url}/_sandbox/entities/ap_invoices", json={
        "Supplier": old["Supplier"], "Invoice": old["Invoice"], "PostDate": "2026-12-07"}, timeout=5)
    found = {(i.supplier, i.invoice) for i in c.iter_new_ap_invoices(since)}
    wanted = {(r["Supplier"], r["Invoice"]) for r in sb.tables["ApInvoice"].rows.values()
              if r["InvoiceDate"] >= since or (r["PostDate"] and r["PostDate"] >= since)}
    assert found == wanted and (old["Supplier"], old["Invoice"]) in found  # dated before, posted after
    assert len(found) < len(rows)
    assert len(list(c.iter_new_ap_invoices(None))) == len(rows)
    assert len(list(c.iter_new_ap_invoices(date(2100, 1, 1)))) == 0
