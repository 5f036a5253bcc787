"""Month-end reconciliation of ServiceTitan -> Acumatica over real HTTP (sandboxes, PostgreSQL,
the engine): job invoices and payments of a synced month, with planted differences."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.test_reconcile_support import (ST_INVOICE_FIELDS, by_kind, entity, harness_fixture, put, record,
                                          report_via_cli, rows, sync_all)

PERIOD = "2026-11"
ST, ACU = "servicetitan", "acumatica"


harness = harness_fixture("servicetitan-acumatica")


def _invoice(st: str, template: dict[str, Any], number: str, day: str) -> dict[str, Any]:
    fields = {k: template[k] for k in ST_INVOICE_FIELDS if k in template}
    return put(st, "invoices", {**fields, "referenceNumber": number, "invoiceDate": f"{day}T16:00:00Z"})


def test_a_synced_month_with_planted_differences(harness: Any) -> None:
    st, acu = harness.sandboxes.url(ST), harness.sandboxes.url(ACU)
    before = [i for i in rows(acu, "invoices") if i["Type"] == "Invoice" and i["Date"].startswith(PERIOD)]  # keyed before us
    template = next(i for i in rows(st, "invoices") if Decimal(str(i["total"])) > 0)
    total = Decimal(str(template["total"]))
    kept = _invoice(st, template, "NOV-A1", "2026-11-02")
    changed = _invoice(st, template, "NOV-A2", "2026-11-09")
    payment = next(p for p in rows(st, "payments") if p.get("appliedTo"))
    applied = {**payment["appliedTo"][0], "appliedTo": kept["id"], "appliedAmount": str(total)}
    paid = put(st, "payments", {**{k: payment[k] for k in ("customer", "type", "typeId", "businessUnit") if k in payment},
                                "total": str(total), "date": "2026-11-10T12:00:00Z", "appliedTo": [applied]})
    sync_all("acme", harness.pair)
    assert record("acme", "invoices", kept["id"]).status == "written"
    written = record("acme", "invoices", changed["id"])
    held = record("acme", "payments", paid["id"])
    assert held.status == "held"  # its invoice is written on hold in Acumatica, not released
    doc_type, _, number = written.target_id.partition("/")
    stored = next(i for i in rows(acu, "invoices") if i["ReferenceNbr"] == number)
    line = stored["Details"][0]
    put(acu, "invoices", {"Type": doc_type, "ReferenceNbr": number, "Details": [{"id": line["id"], "UnitPrice": 1.0}]})
    changed_amount = Decimal(str(next(i for i in rows(acu, "invoices") if i["ReferenceNbr"] == number)["Amount"]))
    assert changed_amount != total
    by_hand = put(acu, "invoices", {"Type": "Invoice", "Customer": stored["Customer"], "Date": "2026-11-21T00:00:00+00:00",
                                    "Details": [{"InventoryID": "SERVICE", "Qty": 1, "UnitPrice": 75.0}]})
    late = _invoice(st, template, "NOV-A3", "2026-11-29")

    report = report_via_cli("acme", PERIOD)
    invoices = entity(report, "invoices")
    assert invoices["source_date"] == "ServiceTitan invoiceDate" and invoices["target_date"] == "Acumatica Date"
    assert (invoices["source_count"], Decimal(invoices["source_total"])) == (3, 3 * total)
    earlier = sum((Decimal(str(i["Amount"])) for i in before), Decimal(0))
    assert (invoices["target_count"], Decimal(invoices["target_total"])) == \
        (3 + len(before), total + changed_amount + Decimal("75.00") + earlier)
    assert (invoices["ledger_count"], Decimal(invoices["ledger_total"])) == (2, 2 * total)
    kinds = by_kind(invoices)
    assert sorted(kinds) == ["amount_differs", "missing_in_target", "not_from_us"]
    assert [(d["source_ref"], d["target_ref"], Decimal(d["target_amount"]), d["record_id"])
            for d in kinds["amount_differs"]] == [(str(changed["id"]), written.target_id, changed_amount, written.id)]
    assert [(d["source_ref"], d["record_id"]) for d in kinds["missing_in_target"]] == [(str(late["id"]), None)]
    assert sorted(d["target_ref"] for d in kinds["not_from_us"]) == \
        sorted([f"Invoice/{by_hand['ReferenceNbr']}"] + [f"Invoice/{i['ReferenceNbr']}" for i in before])
    payments = entity(report, "payments")
    assert [(d["kind"], d["source_ref"], d["record_id"]) for d in payments["differences"]] == \
        [("held", str(paid["id"]), held.id)]
    assert "not released" in payments["differences"][0]["detail"]
    assert (payments["source_count"], payments["target_count"], payments["ledger_count"]) == (1, 0, 0)
