"""Contract tests of the SYSPRO sandbox, with raw `requests` (no connector code).

Facts the vendor notes mark unconfirmed and these tests pin to the sandbox's defaults:
the wording of session-expiry and licence-seat errors, error numbers, idle expiry, the
change-date columns (`LastChangeDate`, `InvMovements.EntryDate`), the OData URL layout and
a 429 from the host. Everything else follows the notes' [C1]/[C2] facts.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

import pytest
import requests

from sandboxes.base import SandboxOptions, start_sandbox
from sandboxes.syspro import SysproSandbox, SysproSettings

ID_PATTERN = re.compile(r"^[0-9A-F]{34}  $")


@pytest.fixture(scope="module")
def running() -> Iterator[Any]:
    sandbox = SysproSandbox(SandboxOptions(seed=11, records=60))
    with start_sandbox(sandbox) as run:
        yield run


@pytest.fixture(autouse=True)
def fresh(running: Any) -> Iterator[None]:
    requests.post(f"{running.url}/_sandbox/reset", json={"records": 60}, timeout=5)
    requests.post(f"{running.url}/_sandbox/syspro/settings", json=SysproSettings().model_dump(), timeout=5)
    yield


@pytest.fixture
def sb(running: Any) -> SysproSandbox:
    return running.sandbox


@pytest.fixture
def base(running: Any) -> str:
    return running.info()["api_base"]


def creds(sb: SysproSandbox) -> dict[str, str]:
    c = sb.info()["credentials"]
    return {"Operator": c["operator"], "OperatorPassword": c["operator_password"],
            "CompanyId": c["company_id"], "CompanyPassword": c["company_password"]}


def logon(base: str, sb: SysproSandbox, **override: str) -> str:
    response = requests.get(f"{base}/Logon", params={**creds(sb), **override}, timeout=5)
    assert response.status_code == 200
    return response.text


def call(base: str, user_id: str, path: str, bo: str, xml_in: str, xml_params: str | None = None) -> requests.Response:
    params = {"UserId": user_id, "BusinessObject": bo, "XmlIn": xml_in}
    if xml_params is not None:
        params["XmlParameters"] = xml_params
    return requests.get(f"{base}/{path}", params=params, timeout=10)


def xml(response: requests.Response) -> ET.Element:
    assert response.status_code == 200, response.text
    assert not response.text.startswith("ERROR"), response.text
    return ET.fromstring(response.content)


def stats(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/_sandbox/stats", timeout=5).json()


def comfnd(table: str, *, rows: int | None = None, columns: tuple[str, ...] = (), where: str = "",
           order: tuple[str, ...] = ()) -> str:
    parts = [f"<Query><TableName>{table}</TableName>"]
    if rows is not None:
        parts.append(f"<ReturnRows>{rows}</ReturnRows>")
    if columns:
        parts.append("<Columns>" + "".join(f"<Column>{c}</Column>" for c in columns) + "</Columns>")
    if where:
        parts.append(f"<Where>{where}</Where>")
    if order:
        parts.append("<OrderBy>" + "".join(f"<Column>{c}</Column>" for c in order) + "</OrderBy>")
    return "".join(parts) + "</Query>"


def expr(column: str, condition: str, value: str, *, open_: str = "", and_or: str = "", close: str = "") -> str:
    return (f"<Expression><OpenBracket>{open_}</OpenBracket>" + (f"<AndOr>{and_or}</AndOr>" if and_or else "")
            + f"<Column>{column}</Column><Condition>{condition}</Condition><Value>{value}</Value>"
            f"<CloseBracket>{close}</CloseBracket></Expression>")


def apstin_params(validate_only: str = "N", whole: str = "Y") -> str:
    return ('<?xml version="1.0" encoding="Windows-1252"?><PostApInvoice><Parameters><PostingPeriod>C</PostingPeriod>'
            f"<IgnoreWarnings>N</IgnoreWarnings><ApplyIfEntireDocumentValid>{whole}</ApplyIfEntireDocumentValid>"
            f"<ValidateOnly>{validate_only}</ValidateOnly><AutomaticTaxCalculation>Y</AutomaticTaxCalculation>"
            "</Parameters></PostApInvoice>")


def ap_item(supplier: str, invoice: str, value: str = "1150.00", ledger: str = "1000.00") -> str:
    return (f"<Item><Supplier>{supplier}</Supplier><TransactionCode>I</TransactionCode><Invoice>{invoice}</Invoice>"
            f"<TransactionValue>{value}</TransactionValue><Notation>Concrete May</Notation>"
            f"<TransactionReference>{invoice}</TransactionReference><InvoiceDate>2025-05-14</InvoiceDate>"
            f"<LedgerDistribution><LedgerCode>10-5500</LedgerCode><LedgerValue>{ledger}</LedgerValue>"
            "<LedgerNotation>Materials</LedgerNotation></LedgerDistribution></Item>")


def errors_of(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter("ErrorDescription")]


# ---- control API --------------------------------------------------------------------------------


def test_info_has_exactly_the_documented_shape(running: Any, sb: SysproSandbox) -> None:
    info = requests.get(f"{running.url}/_sandbox/info", timeout=5).json()
    assert set(info) == {"vendor", "api_base", "token_url", "credentials"}
    assert info["vendor"] == "syspro"
    assert info["api_base"] == f"{running.url}/SYSPROWCFService/Rest"
    assert info["token_url"] is None
    assert set(info["credentials"]) == {"operator", "operator_password", "company_id", "company_password"}


def test_seed_is_deterministic_and_has_near_duplicate_suppliers() -> None:
    first = SysproSandbox(SandboxOptions(seed=5, records=40)).get_entities("suppliers")
    second = SysproSandbox(SandboxOptions(seed=5, records=40)).get_entities("suppliers")
    assert first == second
    names = [s["SupplierName"] for s in first]
    normalized = [re.sub(r"[^a-z]", "", n.lower().replace("inc", "")) for n in names]
    assert len(set(normalized)) < len(normalized)  # twins exist once punctuation and case are ignored
    stamps = [s["LastChangeDate"] for s in first]
    assert len(set(stamps)) < len(stamps)  # equal change dates exist, so paging must handle ties


def test_entities_put_get_and_errors(running: Any) -> None:
    url = running.url
    stored = requests.post(f"{url}/_sandbox/entities/suppliers", timeout=5,
                           json={"Supplier": "ZZTOP", "SupplierName": "Zed Top Supply", "OnHold": "N"}).json()
    assert stored["Supplier"] == "ZZTOP" and stored["LastChangeDate"].endswith("Z")
    rows = requests.get(f"{url}/_sandbox/entities/suppliers", timeout=5).json()
    assert any(r["Supplier"] == "ZZTOP" for r in rows)
    assert requests.get(f"{url}/_sandbox/entities/nothing", timeout=5).status_code == 404
    bad = requests.post(f"{url}/_sandbox/entities/suppliers", json={"Supplier": "X", "Colour": "red"}, timeout=5)
    assert bad.status_code == 400 and "Colour" in bad.json()["error"]
    po = requests.post(f"{url}/_sandbox/entities/purchase_orders", timeout=5, json={
        "Supplier": "S00001", "OrderStatus": "1", "Warehouse": "WH01",
        "lines": [{"MStockCode": "CAP-00001", "MOrderQty": 2, "MPrice": "10.5"}, {"MStockCode": "FLT-00002", "MOrderQty": 1, "MPrice": 3}],
    }).json()
    assert po["PurchaseOrder"].startswith("P") and [line["Line"] for line in po["lines"]] == [1, 2]


def test_tick_changes_records_and_moves_their_change_date(running: Any, sb: SysproSandbox) -> None:
    before = time.time()
    changed = requests.post(f"{running.url}/_sandbox/tick", json={"count": 5}, timeout=5).json()["changed"]
    assert len(changed) == 5
    assert {c["entity"] for c in changed} == {"ApSupplier", "ApInvoice", "PorMasterHdr", "InvMaster"}
    for item in changed:
        stamp = datetime.fromisoformat(item["changed_at"].rstrip("Z"))
        assert stamp >= datetime.fromtimestamp(before, timezone.utc).replace(tzinfo=None) - timedelta(seconds=1)


def test_stats_reset_and_reset_drop_sessions(running: Any, sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    assert stats(running.url)["by_endpoint"]["GET /SYSPROWCFService/Rest/Logon"] == {"200": 1}
    requests.post(f"{running.url}/_sandbox/stats/reset", timeout=5)
    snapshot = stats(running.url)
    assert snapshot["total"] == 0 and snapshot["open_sessions"] == 1  # the gauge is live, not a counter
    requests.post(f"{running.url}/_sandbox/reset", json={}, timeout=5)
    assert requests.get(f"{base}/Logoff", params={"UserId": user_id}, timeout=5).text.startswith("ERROR")


def test_settings_endpoint_validates(running: Any) -> None:
    url = f"{running.url}/_sandbox/syspro/settings"
    assert requests.get(url, timeout=5).json()["seats"] == 10
    assert requests.post(url, json={"seats": 0}, timeout=5).status_code == 400
    assert requests.post(url, json={"seats": 3}, timeout=5).json()["seats"] == 3


# ---- Logon / Logoff / sessions ---------------------------------------------------------------------


def test_get_version_answers_without_a_session(running: Any, sb: SysproSandbox, base: str) -> None:
    """Round 2: a live SYSPRO 7 host answered GetVersion as plain text with no UserId at all."""
    response = requests.get(f"{base}/GetVersion", timeout=5)
    assert response.status_code == 200
    assert response.text == sb.settings.host_version
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", response.text)
    assert stats(running.url).get("logons", 0) == 0


def test_logon_answers_34_hex_and_two_spaces_as_octet_stream(running: Any, sb: SysproSandbox, base: str) -> None:
    response = requests.get(f"{base}/Logon", params=creds(sb), timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert ID_PATTERN.match(response.text) and len(response.content) == 36
    snapshot = stats(running.url)
    assert snapshot["logons"] == 1 and snapshot["open_sessions"] == 1 and snapshot["tokens_issued"] == 1


@pytest.mark.parametrize("override, expected", [
    ({"OperatorPassword": "wrong"}, "ERROR: Invalid operator password"),
    ({"Operator": "NOBODY"}, "ERROR: Operator 'NOBODY' not found"),
    ({"CompanyId": "XYZ"}, "ERROR: Company 'XYZ' not found"),
    ({"CompanyPassword": "nope"}, "ERROR: Invalid company password"),
    ({"OperatorPassword": ""}, "ERROR: Invalid operator password"),
])
def test_logon_failures_are_error_text_at_200(running: Any, sb: SysproSandbox, base: str,
                                             override: dict[str, str], expected: str) -> None:
    assert logon(base, sb, **override) == expected
    snapshot = stats(running.url)
    assert snapshot["logon_failures"] == 1 and snapshot["open_sessions"] == 0


def test_paths_are_case_insensitive_and_get_only(running: Any, sb: SysproSandbox, base: str) -> None:
    lower = base.lower()
    user_id = requests.get(f"{lower}/logon", params=creds(sb), timeout=5).text
    assert ID_PATTERN.match(user_id)
    assert requests.get(f"{base.upper()}/LOGOFF", params={"UserId": user_id}, timeout=5).text == "0"
    assert requests.post(f"{base}/Logon", params=creds(sb), timeout=5).status_code == 405
    assert stats(running.url)["by_endpoint"]["GET /SYSPROWCFService/Rest/Logon"] == {"200": 1}


def test_user_id_works_with_or_without_trailing_spaces(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    for candidate in (user_id, user_id.strip(), user_id.strip().lower()):
        assert xml(call(base, candidate, "Query/Query", "COMFND", comfnd("ApSupplier", rows=1))).tag == "ApSupplier"


def test_logoff_answers_zero_once_then_error(running: Any, sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    assert requests.get(f"{base}/Logoff", params={"UserId": user_id}, timeout=5).text == "0"
    again = requests.get(f"{base}/Logoff", params={"UserId": user_id}, timeout=5)
    assert again.status_code == 200 and again.text.startswith("ERROR: ")
    snapshot = stats(running.url)
    assert snapshot["logoffs"] == 1 and snapshot["open_sessions"] == 0 and snapshot["stale_session_calls"] == 1


def test_missing_or_unknown_user_id_is_an_error(sb: SysproSandbox, base: str) -> None:
    for user_id in ("", "0123456789ABCDEF0123456789ABCDEF01"):
        response = call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier"))
        assert response.status_code == 200 and response.text.startswith("ERROR: ")


def test_expire_tokens_expires_sessions(running: Any, sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    requests.post(f"{running.url}/_sandbox/expire-tokens", timeout=5)
    response = call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier"))
    assert response.text.startswith("ERROR: ") and "expired" in response.text
    assert ID_PATTERN.match(logon(base, sb))
    snapshot = stats(running.url)
    assert snapshot["sessions_expired"] == 1 and snapshot["open_sessions"] == 1


def test_idle_sessions_expire_after_the_configured_time(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"session_idle_seconds": 0.3}, timeout=5)
    user_id = logon(base, sb)
    assert xml(call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier", rows=1)))  # use refreshes idle time
    time.sleep(0.45)
    assert call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier")).text.startswith("ERROR: ")


def test_token_ttl_option_sets_idle_expiry() -> None:
    assert SysproSandbox(SandboxOptions(records=1, token_ttl=7)).settings.session_idle_seconds == 7


def test_licence_seats_limit_concurrent_sessions(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"seats": 2}, timeout=5)
    first, second = logon(base, sb), logon(base, sb)
    refused = logon(base, sb)
    assert refused.startswith("ERROR: ") and "licence" in refused
    requests.get(f"{base}/Logoff", params={"UserId": first}, timeout=5)
    assert ID_PATTERN.match(logon(base, sb))
    snapshot = stats(running.url)
    assert snapshot["seat_refusals"] == 1 and snapshot["peak_open_sessions"] == 2 and snapshot["open_sessions"] == 2
    sessions = requests.get(f"{running.url}/_sandbox/syspro/sessions", timeout=5).json()
    assert sessions["open"] == 2 and all(len(s["user_id_prefix"]) == 4 for s in sessions["sessions"])
    assert second


def test_unknown_business_object_and_wrong_method(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    assert call(base, user_id, "Query/Query", "XXXQRY", "<Query/>").text.startswith("ERROR: Business object 'XXXQRY'")
    wrong = call(base, user_id, "Query/Query", "APSTIN", "<PostApInvoice/>")
    assert wrong.text.startswith("ERROR: ") and "Query.Query" in wrong.text
    assert call(base, user_id, "Query/Query", "COMFND", "<Query><TableName>").text.startswith("ERROR: XmlIn is not well formed")


# ---- COMFND ----------------------------------------------------------------------------------------


def test_comfnd_answer_shape(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    response = call(base, user_id, "Query/Query", "COMFND",
                    comfnd("ApSupplier", rows=3, columns=("Supplier", "SupplierName"), order=("Supplier",)))
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.text.startswith('<?xml version="1.0" encoding="Windows-1252"?>')
    assert "Language='05'" in response.text and "Version='8.0.000'" in response.text
    assert "<RowsReturned>      3</RowsReturned>" in response.text
    root = xml(response)
    assert root.tag == "ApSupplier" and root.findtext("HeaderDetails/TableName") == "ApSupplier"
    rows = root.findall("Row")
    assert [r.findtext("Supplier") for r in rows] == ["S00001", "S00002", "S00003"]
    assert [child.tag for child in rows[0]] == ["Supplier", "SupplierName"]


def test_comfnd_empty_exact_and_last_pages(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    empty = xml(call(base, user_id, "Query/Query", "COMFND",
                     comfnd("ApSupplier", where=expr("Supplier", "EQ", "NOPE"))))
    assert empty.findall("Row") == [] and empty.findtext("RowsReturned").strip() == "0"
    exact = xml(call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier", rows=60, order=("Supplier",))))
    assert len(exact.findall("Row")) == 60
    last = xml(call(base, user_id, "Query/Query", "COMFND", comfnd(
        "ApSupplier", rows=25, order=("Supplier",), where=expr("Supplier", "GT", "S00050"))))
    assert [r.findtext("Supplier") for r in last.findall("Row")] == [f"S{i:05d}" for i in range(51, 61)]


def test_comfnd_keyset_pages_cover_ties_once(sb: SysproSandbox, base: str) -> None:
    """Ordered by (LastChangeDate, Supplier) and continued by keyset, ties included, nothing repeats."""
    user_id = logon(base, sb)
    seen: list[str] = []
    last: tuple[str, str] | None = None
    while True:
        where = ""
        if last:
            where = (expr("LastChangeDate", "GT", last[0], open_="(", close=")")
                     + expr("LastChangeDate", "EQ", last[0], open_="(", and_or="Or")
                     + expr("Supplier", "GT", last[1], and_or="And", close=")"))
        root = xml(call(base, user_id, "Query/Query", "COMFND", comfnd(
            "ApSupplier", rows=7, columns=("Supplier", "LastChangeDate"), where=where, order=("LastChangeDate", "Supplier"))))
        rows = root.findall("Row")
        seen += [r.findtext("Supplier") or "" for r in rows]
        if len(rows) < 7:
            break
        last = (rows[-1].findtext("LastChangeDate") or "", rows[-1].findtext("Supplier") or "")
    assert sorted(seen) == sorted(s["Supplier"] for s in sb.get_entities("suppliers"))
    assert len(seen) == len(set(seen)) == 60


def test_comfnd_brackets_or_like_and_case_insensitive_text(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    where = (expr("Supplier", "EQ", "s00002", open_="((") + expr("Supplier", "EQ", "S00004", and_or="Or", close=")")
             + expr("OnHold", "EQ", "N", and_or="And", close=")"))
    root = xml(call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier", where=where, order=("Supplier",))))
    assert [r.findtext("Supplier") for r in root.findall("Row")] == ["S00002", "S00004"]
    like = xml(call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier", where=expr("SupplierName", "LIKE", "acme%"))))
    assert all(r.findtext("SupplierName", "").lower().startswith("acme") for r in like.findall("Row"))


@pytest.mark.parametrize("query, message", [
    (comfnd("NoSuchTable"), "Table 'NoSuchTable' not found"),
    (comfnd("ApSupplier", columns=("Colour",)), "Column 'Colour' not found"),
    (comfnd("ApSupplier", where=expr("LastChangeDate", "GE", "yesterday")), "Invalid value 'yesterday'"),
    (comfnd("ApSupplier", where=expr("Supplier", "EQ", "A", open_="(")), "Unbalanced brackets"),
    (comfnd("ApInvoice", where=expr("Journal", "EQ", "abc")), "Invalid value 'abc' for column 'Journal'"),
])
def test_comfnd_errors_are_error_text(sb: SysproSandbox, base: str, query: str, message: str) -> None:
    response = call(base, logon(base, sb), "Query/Query", "COMFND", query)
    assert response.status_code == 200 and response.text.startswith("ERROR: ") and message in response.text


def test_comfnd_change_filter_sees_put_and_tick(running: Any, sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    start = requests.post(f"{running.url}/_sandbox/entities/suppliers", timeout=5,
                          json={"Supplier": "NEW01", "SupplierName": "New One"}).json()["LastChangeDate"].rstrip("Z")
    ticked = requests.post(f"{running.url}/_sandbox/tick", json={"count": 1}, timeout=5).json()["changed"]
    root = xml(call(base, user_id, "Query/Query", "COMFND", comfnd(
        "ApSupplier", where=expr("LastChangeDate", "GE", start), order=("LastChangeDate", "Supplier"))))
    assert [r.findtext("Supplier") for r in root.findall("Row")] == ["NEW01", ticked[0]["key"][0]]
    before = xml(call(base, user_id, "Query/Query", "COMFND", comfnd(
        "ApSupplier", rows=1000, where=expr("LastChangeDate", "LT", start))))
    assert len(before.findall("Row")) == 59


def test_long_query_strings_are_accepted(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    where = "".join(expr("Supplier", "EQ", f"S{i:05d}", open_="(", close=")", and_or="Or" if i > 1 else "")
                    for i in range(1, 61))
    query = comfnd("ApSupplier", rows=100, where=where)
    assert len(requests.Request("GET", f"{base}/Query/Query", params={"XmlIn": query}).prepare().url) > 8000
    assert len(xml(call(base, user_id, "Query/Query", "COMFND", query)).findall("Row")) == 60


def test_windows_1252_text_round_trips(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/entities/suppliers", json={"Supplier": "CAFE", "SupplierName": "Café Supply"}, timeout=5)
    response = call(base, logon(base, sb), "Query/Query", "COMFND",
                    comfnd("ApSupplier", columns=("SupplierName",), where=expr("Supplier", "EQ", "CAFE")))
    assert "Caf\xe9 Supply".encode("cp1252") in response.content
    assert xml(response).findtext("Row/SupplierName") == "Café Supply"


# ---- INVQRY ----------------------------------------------------------------------------------------


def test_invqry_returns_item_and_warehouses(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    root = xml(call(base, user_id, "Query/Query", "INVQRY", "<Query><Key><StockCode>CAP-00001</StockCode></Key></Query>"))
    assert root.tag == "InvQuery" and root.findtext("StockItem/StockCode") == "CAP-00001"
    assert {w.findtext("Warehouse") for w in root.iter("WarehouseItem")} == {"WH01", "WH02", "VAN1"}
    one = xml(call(base, user_id, "Query/Query", "INVQRY", '<Query><Key><StockCode>CAP-00001</StockCode></Key>'
                   '<Filter><Warehouse FilterType="S" FilterValue="VAN1"/></Filter></Query>'))
    assert [w.findtext("Warehouse") for w in one.iter("WarehouseItem")] == ["VAN1"]
    missing = call(base, user_id, "Query/Query", "INVQRY", "<Query><Key><StockCode>NOPE</StockCode></Key></Query>")
    assert missing.text == "ERROR: Stock code 'NOPE' not found"


# ---- APSTIN ----------------------------------------------------------------------------------------


def test_apstin_posts_an_invoice(sb: SysproSandbox, base: str) -> None:
    response = call(base, logon(base, sb), "Transaction/Post", "APSTIN",
                    f"<PostApInvoice>{ap_item('S00001', 'INV-77812')}</PostApInvoice>", apstin_params())
    root = xml(response)
    assert root.tag == "postapinvoice" and "Language='05'" in response.text
    assert root.findtext("StatusOfItems/ItemsProcessed") == "000001"
    assert root.findtext("StatusOfItems/ItemsInvalid") == "000000"
    assert root.findtext("Item/Key/Invoice") == "INV-77812" and root.findtext("Item/Journal")
    stored = [i for i in sb.get_entities("ap_invoices") if i["Invoice"] == "INV-77812"]
    assert len(stored) == 1 and stored[0]["OrigInvValue"] == 1150.0 and stored[0]["TaxValue"] == 150.0
    assert stored[0]["LedgerDistribution"][0]["LedgerCode"] == "10-5500"


@pytest.mark.parametrize("item, field, message", [
    (ap_item("NOPE", "INV-1"), "Supplier", "Supplier 'NOPE' not found"),
    (ap_item("S00001", "INV-1", value="abc"), "TransactionValue", "Invalid transaction value 'abc'"),
    (ap_item("S00001", "INV-1", value="-5.00"), "TransactionValue", "Invalid transaction value '-5.00'"),
    (ap_item("S00001", "INV-1", value="10.005"), "TransactionValue", "Invalid transaction value '10.005'"),
    (ap_item("S00001", "INV-1", value="100.00", ledger="120.00"), "TransactionValue", "does not balance"),
])
def test_apstin_validation_errors_sit_in_the_xml(sb: SysproSandbox, base: str, item: str, field: str, message: str) -> None:
    root = xml(call(base, logon(base, sb), "Transaction/Post", "APSTIN", f"<PostApInvoice>{item}</PostApInvoice>", apstin_params()))
    container = root.find(f"Item/{field}")
    assert container is not None and message in (container.findtext("ErrorDescription") or "")
    assert container.findtext("ErrorNumber", "").isdigit()
    assert root.findtext("StatusOfItems/ItemsInvalid") == "000001"
    assert not any(i["Invoice"] == "INV-1" for i in sb.get_entities("ap_invoices"))


def test_apstin_rejects_a_duplicate_supplier_invoice(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    document = f"<PostApInvoice>{ap_item('S00002', 'DUP-1')}</PostApInvoice>"
    xml(call(base, user_id, "Transaction/Post", "APSTIN", document, apstin_params()))
    root = xml(call(base, user_id, "Transaction/Post", "APSTIN", document, apstin_params()))
    assert errors_of(root) == ["Invoice 'DUP-1' already exists for supplier 'S00002'"]
    assert sum(1 for i in sb.get_entities("ap_invoices") if i["Invoice"] == "DUP-1") == 1


def test_apstin_validate_only_and_whole_document_rules(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    good_and_bad = f"<PostApInvoice>{ap_item('S00003', 'OK-1')}{ap_item('NOPE', 'BAD-1')}</PostApInvoice>"
    root = xml(call(base, user_id, "Transaction/Post", "APSTIN", f"<PostApInvoice>{ap_item('S00003', 'VO-1')}</PostApInvoice>",
                    apstin_params(validate_only="Y")))
    assert errors_of(root) == [] and root.findtext("StatusOfItems/ItemsProcessed") == "000000"
    root = xml(call(base, user_id, "Transaction/Post", "APSTIN", good_and_bad, apstin_params(whole="Y")))
    assert root.findtext("StatusOfItems/ItemsProcessed") == "000000"
    root = xml(call(base, user_id, "Transaction/Post", "APSTIN", good_and_bad, apstin_params(whole="N")))
    assert root.findtext("StatusOfItems/ItemsProcessed") == "000001"
    invoices = {i["Invoice"] for i in sb.get_entities("ap_invoices")}
    assert "OK-1" in invoices and "VO-1" not in invoices and "BAD-1" not in invoices


# ---- PORTOI ----------------------------------------------------------------------------------------

PORTOI_PARAMS = ("<PostPurchaseOrders><Parameters><ValidateOnly>N</ValidateOnly><IgnoreWarnings>N</IgnoreWarnings>"
                 "<AllowNonStockItems>N</AllowNonStockItems><AllowZeroPrice>N</AllowZeroPrice><Status>1</Status>"
                 "</Parameters></PostPurchaseOrders>")


def po_doc(header: str, lines: str) -> str:
    return f"<PostPurchaseOrders><Orders><OrderHeader>{header}</OrderHeader><OrderDetails>{lines}</OrderDetails></Orders></PostPurchaseOrders>"


def stock_line(code: str, qty: str, price: str, *, line: str = "", action: str = "A") -> str:
    return (f"<StockLine><PurchaseOrderLine>{line}</PurchaseOrderLine><LineActionType>{action}</LineActionType>"
            f"<StockCode>{code}</StockCode><Warehouse>WH01</Warehouse><OrderQty>{qty}</OrderQty><Price>{price}</Price></StockLine>")


def test_portoi_adds_changes_and_cancels_a_multi_line_order(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    header = "<OrderActionType>A</OrderActionType><Supplier>S00001</Supplier><Warehouse>WH01</Warehouse><CustomerPoNumber>ST-PO-1</CustomerPoNumber>"
    root = xml(call(base, user_id, "Transaction/Post", "PORTOI", po_doc(
        header, stock_line("CAP-00001", "4", "12.50") + stock_line("FLT-00002", "10", "3.25")
        + "<CommentLine><Comment>Deliver to dock 2</Comment></CommentLine>"), PORTOI_PARAMS))
    assert root.tag == "postpurchaseorders" and root.findtext("StatusOfItems/ItemsProcessed") == "000001"
    number = root.findtext("Order/Key/PurchaseOrder") or ""
    stored = next(p for p in sb.get_entities("purchase_orders") if p["PurchaseOrder"] == number)
    assert stored["CustomerPoNumber"] == "ST-PO-1" and [l["LineType"] for l in stored["lines"]] == ["1", "1", "6"]
    change = po_doc(f"<OrderActionType>C</OrderActionType><PurchaseOrder>{number}</PurchaseOrder>",
                    stock_line("CAP-00001", "6", "12.50", line="1", action="C") + stock_line("THM-00004", "1", "99"))
    xml(call(base, user_id, "Transaction/Post", "PORTOI", change, PORTOI_PARAMS))
    stored = next(p for p in sb.get_entities("purchase_orders") if p["PurchaseOrder"] == number)
    assert stored["lines"][0]["MOrderQty"] == 6 and len(stored["lines"]) == 4
    dropped = xml(call(base, user_id, "Transaction/Post", "PORTOI", po_doc(
        f"<OrderActionType>C</OrderActionType><PurchaseOrder>{number}</PurchaseOrder>",
        stock_line("FLT-00002", "10", "3.25", line="2", action="D")), PORTOI_PARAMS))
    assert dropped.findtext("StatusOfItems/ItemsInvalid") == "000000" and not errors_of(dropped)
    stored = next(p for p in sb.get_entities("purchase_orders") if p["PurchaseOrder"] == number)
    assert [line["Line"] for line in stored["lines"]] == [1, 3, 4]
    cancelled = xml(call(base, user_id, "Transaction/Post", "PORTOI",
                         po_doc(f"<OrderActionType>D</OrderActionType><PurchaseOrder>{number}</PurchaseOrder>", ""),
                         PORTOI_PARAMS))
    assert not (cancelled.find("Order/Key").tail or "").strip()  # the key and item number, no stored row after them
    assert cancelled.findtext("Order/Key/PurchaseOrder") == number
    again = xml(call(base, user_id, "Transaction/Post", "PORTOI", change, PORTOI_PARAMS))
    assert errors_of(again) == [f"Purchase order '{number}' is cancelled and cannot be maintained"]


@pytest.mark.parametrize("line, message", [
    (stock_line("NOPE", "1", "1"), "Stock code 'NOPE' not found"),
    (stock_line("CAP-00001", "0", "1"), "Invalid order quantity '0'"),
    (stock_line("CAP-00001", "1", "0"), "Price may not be zero"),
])
def test_portoi_line_validation(sb: SysproSandbox, base: str, line: str, message: str) -> None:
    before = len(sb.get_entities("purchase_orders"))
    root = xml(call(base, logon(base, sb), "Transaction/Post", "PORTOI",
                    po_doc("<OrderActionType>A</OrderActionType><Supplier>S00001</Supplier>", line), PORTOI_PARAMS))
    assert message in errors_of(root)[0]
    assert root.find("Order/StockLine/PurchaseOrderLine") is not None
    assert len(sb.get_entities("purchase_orders")) == before


def test_portoi_rejects_unknown_supplier_and_existing_number(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    root = xml(call(base, user_id, "Transaction/Post", "PORTOI",
                    po_doc("<OrderActionType>A</OrderActionType><Supplier>NOPE</Supplier>", stock_line("CAP-00001", "1", "1")), PORTOI_PARAMS))
    assert errors_of(root) == ["Supplier 'NOPE' not found"]
    root = xml(call(base, user_id, "Transaction/Post", "PORTOI", po_doc(
        "<OrderActionType>A</OrderActionType><Supplier>S00001</Supplier><PurchaseOrder>P00001</PurchaseOrder>",
        stock_line("CAP-00001", "1", "1")), PORTOI_PARAMS))
    assert errors_of(root) == ["Purchase order 'P00001' already exists"]


# ---- INVTMA ----------------------------------------------------------------------------------------

INVTMA_PARAMS = ("<PostInvAdjustments><Parameters><PhysicalCount>{pc}</PhysicalCount><PostingPeriod>C</PostingPeriod>"
                 "<IgnoreWarnings>N</IgnoreWarnings><ApplyIfEntireDocumentValid>Y</ApplyIfEntireDocumentValid>"
                 "<ValidateOnly>N</ValidateOnly></Parameters></PostInvAdjustments>")


def adjustment(code: str, warehouse: str, qty: str, reference: str = "ADJ-T") -> str:
    return (f"<PostInvAdjustments><Item><Journal/><Warehouse>{warehouse}</Warehouse><StockCode>{code}</StockCode>"
            f"<Quantity>{qty}</Quantity><Reference>{reference}</Reference><Notation>Van count</Notation></Item></PostInvAdjustments>")


def on_hand(sb: SysproSandbox, code: str, warehouse: str) -> float:
    return next(r["QtyOnHand"] for r in sb.get_entities("warehouse_stock") if r["StockCode"] == code and r["Warehouse"] == warehouse)


def test_invtma_adjusts_and_counts(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    start = on_hand(sb, "CAP-00001", "VAN1")
    root = xml(call(base, user_id, "Transaction/Post", "INVTMA", adjustment("CAP-00001", "VAN1", "5"), INVTMA_PARAMS.format(pc="N")))
    assert root.tag == "postinvadjustments" and root.findtext("Item/Journal")
    assert on_hand(sb, "CAP-00001", "VAN1") == start + 5
    movement = [m for m in sb.get_entities("inventory_movements") if m["Reference"] == "ADJ-T"]
    assert len(movement) == 1 and movement[0]["TrnQty"] == 5 and movement[0]["TrnType"] == "A"
    xml(call(base, user_id, "Transaction/Post", "INVTMA", adjustment("CAP-00001", "VAN1", "7", "CNT-1"), INVTMA_PARAMS.format(pc="Y")))
    assert on_hand(sb, "CAP-00001", "VAN1") == 7


@pytest.mark.parametrize("code, warehouse, qty, message", [
    ("CAP-00001", "VAN1", "-100000", "would make quantity on hand negative"),
    ("FLT-00002", "WH02", "1", "is not stocked in warehouse 'WH02'"),
    ("NOPE", "WH01", "1", "Stock code 'NOPE' not found"),
    ("CAP-00001", "ZZ", "1", "Warehouse 'ZZ' not found"),
    ("CAP-00001", "WH01", "x", "Invalid quantity 'x'"),
])
def test_invtma_validation(sb: SysproSandbox, base: str, code: str, warehouse: str, qty: str, message: str) -> None:
    root = xml(call(base, logon(base, sb), "Transaction/Post", "INVTMA", adjustment(code, warehouse, qty), INVTMA_PARAMS.format(pc="N")))
    assert any(message in e for e in errors_of(root))
    assert not any(m["Reference"] == "ADJ-T" for m in sb.get_entities("inventory_movements"))


# ---- APSSSP ----------------------------------------------------------------------------------------

SETUP_PARAMS = ("<SetupApSupplier><Parameters><IgnoreWarnings>N</IgnoreWarnings>"
                "<ApplyIfEntireDocumentValid>Y</ApplyIfEntireDocumentValid><ValidateOnly>N</ValidateOnly></Parameters></SetupApSupplier>")


def supplier_doc(code: str, fields: str = "") -> str:
    return f"<SetupApSupplier><Item><Key><Supplier>{code}</Supplier></Key>{fields}</Item></SetupApSupplier>"


def test_apsssp_add_update_delete(sb: SysproSandbox, base: str) -> None:
    user_id = logon(base, sb)
    response = call(base, user_id, "Setup/Add", "APSSSP", supplier_doc("ACME9", "<SupplierName>Acme Nine</SupplierName><Currency>$</Currency>"), SETUP_PARAMS)
    root = xml(response)
    assert root.tag == "setupapsupplier" and root.findtext("item/key/supplier") == "ACME9"
    assert root.findtext("StatusOfItems/RecordsRead") == "1" and root.findtext("StatusOfItems/RecordsInvalid") == "0"
    duplicate = xml(call(base, user_id, "Setup/Add", "APSSSP", supplier_doc("ACME9", "<SupplierName>Again</SupplierName>"), SETUP_PARAMS))
    assert duplicate.findtext("item/supplier/ErrorDescription") == "Supplier 'ACME9' already exists"
    xml(call(base, user_id, "Setup/Update", "APSSSP", supplier_doc("ACME9", "<SupplierName>Acme Nine Ltd</SupplierName>"), SETUP_PARAMS))
    stored = next(s for s in sb.get_entities("suppliers") if s["Supplier"] == "ACME9")
    assert stored["SupplierName"] == "Acme Nine Ltd" and stored["Currency"] == "$"
    missing = xml(call(base, user_id, "Setup/Update", "APSSSP", supplier_doc("GHOST", "<SupplierName>x</SupplierName>"), SETUP_PARAMS))
    assert missing.findtext("item/supplier/ErrorDescription") == "Supplier 'GHOST' not found"
    xml(call(base, user_id, "Setup/Delete", "APSSSP", supplier_doc("ACME9"), SETUP_PARAMS))
    assert not any(s["Supplier"] == "ACME9" for s in sb.get_entities("suppliers"))


def test_apsssp_refuses_to_delete_a_supplier_with_transactions(sb: SysproSandbox, base: str) -> None:
    busy = sb.get_entities("ap_invoices")[0]["Supplier"]
    root = xml(call(base, logon(base, sb), "Setup/Delete", "APSSSP", supplier_doc(busy), SETUP_PARAMS))
    assert "has transactions" in (root.findtext("item/supplier/ErrorDescription") or "")


def test_apsssp_requires_a_name(sb: SysproSandbox, base: str) -> None:
    root = xml(call(base, logon(base, sb), "Setup/Add", "APSSSP", supplier_doc("NONAME"), SETUP_PARAMS))
    assert root.findtext("item/suppliername/ErrorDescription") == "Supplier name is required"


# ---- rate limit and faults -------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"rate_limit": 3}, timeout=5)
    answers = [requests.get(f"{base}/Logoff", params={"UserId": "x"}, timeout=5) for _ in range(6)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited and int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].text == "ERROR: Too many requests"
    assert stats(running.url)["rate_limited"] == len(limited)


def test_no_rate_limit_by_default(sb: SysproSandbox, base: str) -> None:
    assert all(requests.get(f"{base}/Logoff", params={"UserId": "x"}, timeout=5).status_code == 200 for _ in range(30))


def test_burst_429_fault_carries_retry_after(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"burst_429": 2, "retry_after": 3}, timeout=5)
    codes = [requests.get(f"{base}/Logon", params=creds(sb), timeout=5) for _ in range(3)]
    assert [c.status_code for c in codes] == [429, 429, 200]
    assert codes[0].headers["Retry-After"] == "3"


def test_fail_next_answers_the_wcf_error_page_then_recovers(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"fail_next": 2, "error_status": 503}, timeout=5)
    first = requests.get(f"{base}/Logon", params=creds(sb), timeout=5)
    assert first.status_code == 503 and "text/html" in first.headers["Content-Type"] and "Injected fault" in first.text
    assert requests.get(f"{base}/Logon", params=creds(sb), timeout=5).status_code == 503
    assert ID_PATTERN.match(requests.get(f"{base}/Logon", params=creds(sb), timeout=5).text)


def test_error_rate_latency_and_path_filter(running: Any, sb: SysproSandbox, base: str) -> None:
    requests.post(f"{running.url}/_sandbox/faults", json={"error_rate": 1.0, "path_contains": "Query"}, timeout=5)
    user_id = logon(base, sb)  # Logon is outside the fault's path filter
    assert ID_PATTERN.match(user_id)
    assert call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier")).status_code == 503
    requests.post(f"{running.url}/_sandbox/faults", json={"replace": True, "latency_ms": 200}, timeout=5)
    started = time.perf_counter()
    assert call(base, user_id, "Query/Query", "COMFND", comfnd("ApSupplier", rows=1)).status_code == 200
    assert time.perf_counter() - started >= 0.2


# ---- OData -------------------------------------------------------------------------------------------


def odata(running: Any, sb: SysproSandbox, entity_set: str, auth: Any = "default", company: str = "EDU1",
          **params: str) -> requests.Response:
    c = sb.info()["credentials"]
    credentials = (c["operator"], c["operator_password"]) if auth == "default" else auth
    return requests.get(f"{running.url}/SYSPROOData/{company}/{entity_set}", params=params, auth=credentials, timeout=5)


def test_odata_needs_basic_auth(running: Any, sb: SysproSandbox) -> None:
    for auth in (None, ("ADMIN", "wrong")):
        refused = odata(running, sb, "ApSupplier", auth=auth)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert odata(running, sb, "ApSupplier", company="XYZ").status_code == 404
    assert odata(running, sb, "NoSuchSet").status_code == 404


def test_odata_filter_order_top_skip_count(running: Any, sb: SysproSandbox) -> None:
    body = odata(running, sb, "ApSupplier", **{"$top": "5", "$skip": "5", "$orderby": "Supplier", "$count": "true",
                                                "$select": "Supplier,OnHold"}).json()
    assert [r["Supplier"] for r in body["value"]] == [f"S{i:05d}" for i in range(6, 11)]
    assert body["@odata.count"] == 60 and set(body["value"][0]) == {"Supplier", "OnHold"}
    cut = sorted(s["LastChangeDate"] for s in sb.get_entities("suppliers"))[30]
    later = odata(running, sb, "ApSupplier", **{"$filter": f"LastChangeDate ge {cut} and OnHold eq 'N'",
                                                "$orderby": "LastChangeDate,Supplier", "$top": "100"}).json()["value"]
    assert later and all(r["LastChangeDate"] >= cut and r["OnHold"] == "N" for r in later)
    assert odata(running, sb, "ApSupplier", **{"$filter": "Colour eq 'red'"}).status_code == 400
    for literal in ("'abc'", "'Infinity'"):  # not a number for an integer column: a 400, never a 500
        assert odata(running, sb, "ApInvoice", **{"$filter": f"Journal eq {literal}"}).status_code == 400


def test_odata_server_paging_next_link(running: Any, sb: SysproSandbox) -> None:
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"odata_max_page_size": 25}, timeout=5)
    body = odata(running, sb, "ApSupplier", **{"$orderby": "Supplier"}).json()
    collected = [r["Supplier"] for r in body["value"]]
    c = sb.info()["credentials"]
    while "@odata.nextLink" in body:
        body = requests.get(body["@odata.nextLink"], auth=(c["operator"], c["operator_password"]), timeout=5).json()
        collected += [r["Supplier"] for r in body["value"]]
    assert collected == [f"S{i:05d}" for i in range(1, 61)]


# ---- Round 2 facts -----------------------------------------------------------------------------------


def test_logon_profile_carries_what_clients_read(running: Any, sb: SysproSandbox, base: str) -> None:
    """Round 2 [C1]: clients read //CompanyName, //OperatorCode, //OperatorGroup, //AccountingDate."""
    response = requests.get(f"{base}/GetLogonProfile", params={"UserId": logon(base, sb)}, timeout=5)
    assert response.headers["Content-Type"] == "application/octet-stream"
    root = xml(response)
    assert root.tag == "LogonProfile" and root.findtext(".//CompanyName") == sb.COMPANY_NAME
    assert root.findtext(".//OperatorCode") == sb.info()["credentials"]["operator"]
    assert root.findtext(".//OperatorGroup") == sb.OPERATOR_GROUP
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", root.findtext(".//AccountingDate") or "")
    stale = requests.get(f"{base}/GetLogonProfile", params={"UserId": "0" * 34}, timeout=5)
    assert stale.status_code == 200 and "is invalid or has expired" in stale.text


def test_unconfirmed_business_objects_are_settings(running: Any, sb: SysproSandbox, base: str) -> None:
    """Round 2: APSSSP (root SetupApSupplier) and INVTMA are unconfirmed, so a sandbox can be a
    site that names them otherwise, and `check` can be tested against it."""
    requests.post(f"{running.url}/_sandbox/syspro/settings", timeout=5, json={
        "supplier_setup_object": "APSSS2", "supplier_setup_root": "SetupSupplier", "adjustment_object": "INVTMB"})
    user_id = logon(base, sb)
    supplier = "<Item><Key><Supplier>ACME9</Supplier></Key><SupplierName>Acme Nine</SupplierName></Item>"
    count = adjustment("CAP-00001", "VAN1", "5"), INVTMA_PARAMS.format(pc="N")
    for path, business_object, document, params in (
            ("Setup/Add", "APSSSP", f"<SetupApSupplier>{supplier}</SetupApSupplier>", SETUP_PARAMS),
            ("Transaction/Post", "INVTMA", *count)):
        refused = call(base, user_id, path, business_object, document, params)
        assert refused.text == f"ERROR: Business object '{business_object}' could not be found or is not licensed"
    wrong_root = call(base, user_id, "Setup/Add", "APSSS2", f"<SetupApSupplier>{supplier}</SetupApSupplier>", SETUP_PARAMS)
    assert wrong_root.text.startswith("ERROR:") and "'SetupSupplier'" in wrong_root.text
    added = xml(call(base, user_id, "Setup/Add", "APSSS2", f"<SetupSupplier>{supplier}</SetupSupplier>", SETUP_PARAMS))
    assert added.tag == "setupsupplier" and added.findtext("StatusOfItems/RecordsInvalid") == "0"
    assert any(s["Supplier"] == "ACME9" for s in sb.get_entities("suppliers"))
    adjusted = xml(call(base, user_id, "Transaction/Post", "INVTMB", *count))
    assert adjusted.tag == "postinvadjustments" and adjusted.findtext("StatusOfItems/ItemsProcessed") == "000001"


def test_change_column_is_a_setting(running: Any, sb: SysproSandbox, base: str) -> None:
    """Round 2: `LastChangeDate` on ApSupplier, ApInvoice, PorMasterHdr and InvMaster is unconfirmed;
    a site that calls it otherwise refuses queries naming it, over e.net and OData alike."""
    assert requests.get(f"{running.url}/_sandbox/syspro/settings", timeout=5).json()["change_column"] == "LastChangeDate"
    requests.post(f"{running.url}/_sandbox/syspro/settings", json={"change_column": "ChangeStamp"}, timeout=5)
    user_id = logon(base, sb)
    for table in ("ApSupplier", "ApInvoice", "PorMasterHdr", "InvMaster"):
        refused = call(base, user_id, "Query/Query", "COMFND",
                       comfnd(table, rows=1, where=expr("LastChangeDate", "GE", "2000-01-01")))
        assert refused.text == f"ERROR: Column 'LastChangeDate' not found in table '{table}'"
        root = xml(call(base, user_id, "Query/Query", "COMFND", comfnd(
            table, rows=2, where=expr("ChangeStamp", "GE", "2000-01-01"), order=("ChangeStamp",))))
        stamps = [r.findtext("ChangeStamp") or "" for r in root.findall("Row")]
        assert len(stamps) == 2 and stamps == sorted(stamps) and root.find("Row/LastChangeDate") is None
    other = xml(call(base, user_id, "Query/Query", "COMFND", comfnd("InvWarehouse", rows=1, columns=("LastChangeDate",))))
    assert other.findtext("Row/LastChangeDate")  # tables outside the fact keep their column
    assert odata(running, sb, "ApSupplier", **{"$filter": "LastChangeDate ge 2000-01-01"}).status_code == 400
    rows = odata(running, sb, "ApSupplier", **{"$filter": "ChangeStamp ge 2000-01-01", "$top": "1"}).json()["value"]
    assert "ChangeStamp" in rows[0] and "LastChangeDate" not in rows[0]
