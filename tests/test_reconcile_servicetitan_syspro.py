"""Month-end reconciliation of ServiceTitan -> SYSPRO over real HTTP (sandboxes, PostgreSQL, the
engine): job invoices and the AP invoices posted for them, with planted differences."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.test_reconcile_support import (ST_INVOICE_FIELDS, by_kind, entity, harness_fixture, put, record,
                                          report_via_cli, rows, sync_all)

PERIOD = "2026-11"
ST, SY = "servicetitan", "syspro"


harness = harness_fixture("servicetitan-syspro")


def _cost(invoice: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(i.get("totalCost") or 0)) for i in invoice["items"]), Decimal(0)).quantize(Decimal("0.01"))


def _invoice(st: str, template: dict[str, Any], number: str, day: str) -> dict[str, Any]:
    fields = {k: template[k] for k in ST_INVOICE_FIELDS if k in template}
    return put(st, "invoices", {**fields, "referenceNumber": number, "invoiceDate": f"{day}T16:00:00Z"})


def test_a_synced_month_with_planted_differences(harness: Any) -> None:
    st, sy = harness.sandboxes.url(ST), harness.sandboxes.url(SY)
    jobs_with_vendor = {po.get("jobId") for po in rows(st, "purchase_orders") if po.get("vendorId")}
    costly = [i for i in rows(st, "invoices") if _cost(i) > 0]
    with_vendor = next(i for i in costly if (i.get("job") or {}).get("id") in jobs_with_vendor)
    without = next(i for i in costly if (i.get("job") or {}).get("id") not in jobs_with_vendor)
    before = [i for i in rows(sy, "ap_invoices") if str(i.get("InvoiceDate") or "").startswith(PERIOD)]
    kept = _invoice(st, with_vendor, "N1001", "2026-11-04")
    changed = _invoice(st, with_vendor, "N1002", "2026-11-11")
    held = _invoice(st, without, "N1003", "2026-11-19")  # its job has no PO naming a vendor: a person decides
    sync_all("acme", harness.pair, only=("vendors", "invoices"))  # what the invoices need
    assert record("acme", "invoices", kept["id"]).status == "written"
    held_record = record("acme", "invoices", held["id"])
    assert held_record.status == "held"
    written = record("acme", "invoices", changed["id"])
    supplier, _, number = written.target_id.partition("/")
    put(sy, "ap_invoices", {"Supplier": supplier, "Invoice": number, "OrigInvValue": "9.99"})
    put(sy, "ap_invoices", {"Supplier": supplier, "Invoice": "HAND-3", "InvoiceDate": "2026-11-14", "OrigInvValue": "500.00"})
    late = _invoice(st, with_vendor, "N1004", "2026-11-30")

    report = report_via_cli("acme", PERIOD)
    found = entity(report, "invoices")
    assert found["source_date"] == "ServiceTitan invoiceDate" and found["target_date"] == "SYSPRO InvoiceDate"
    cost, other = _cost(with_vendor), _cost(without)
    assert (found["source_count"], Decimal(found["source_total"])) == (4, 3 * cost + other)
    earlier = sum((Decimal(str(i.get("OrigInvValue") or 0)) for i in before), Decimal(0))
    assert (found["target_count"], Decimal(found["target_total"])) == \
        (3 + len(before), cost + Decimal("9.99") + Decimal("500.00") + earlier)
    assert (found["ledger_count"], Decimal(found["ledger_total"])) == (2, 2 * cost)
    kinds = by_kind(found)
    assert sorted(kinds) == ["amount_differs", "held", "missing_in_target", "not_from_us"]
    assert [(d["source_ref"], d["target_ref"], d["target_amount"], d["record_id"]) for d in kinds["amount_differs"]] == \
        [(str(changed["id"]), written.target_id, "9.99", written.id)]
    assert [(d["source_ref"], d["record_id"]) for d in kinds["held"]] == [(str(held["id"]), held_record.id)]
    assert "no purchase order" in kinds["held"][0]["detail"]
    assert [(d["source_ref"], d["number"]) for d in kinds["missing_in_target"]] == [(str(late["id"]), "STN1004")]
    assert sorted(d["target_ref"] for d in kinds["not_from_us"]) == \
        sorted([f"{supplier}/HAND-3"] + [f"{i['Supplier']}/{i['Invoice']}" for i in before])
