"""Month-end reconciliation of Epicor -> ServiceNow over real HTTP (sandboxes, PostgreSQL, the
engine): AP invoices and S2P invoices of a synced month, with planted differences."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.test_reconcile_support import by_kind, entity, harness_fixture, put, record, report_via_cli, rows, sync_all

PERIOD = "2019-11"  # years before anything a sandbox seeds (its last 180 days): only what a test plants is in it
EPICOR, SN = "epicor", "servicenow"


harness = harness_fixture("epicor-servicenow", as_demo=True)


def test_a_synced_month_with_planted_differences(harness: Any) -> None:
    from mappings import epicor_servicenow as m
    from mlconnector.demo_stage import DemoStage

    epicor, sn = harness.sandboxes.url(EPICOR), harness.sandboxes.url(SN)
    before = [i for i in rows(sn, "sn_shop_invoice") if str(i.get("invoice_date", "")).startswith(PERIOD)
              and i.get("erp_source") == harness.config.get("erp_source", "Epicor Kinetic")]
    invoices = sorted(rows(epicor, "ap_invoices"), key=lambda i: (i["VendorNum"], i["InvoiceNum"]))
    for day, invoice in enumerate(invoices, start=2):
        put(epicor, "ap_invoices", {"VendorNum": invoice["VendorNum"], "InvoiceNum": invoice["InvoiceNum"],
                                    "InvoiceDate": f"2019-11-{day:02d}"})
    unmapped = m.gl_account(invoices[0]["APInvDtls"][0]["GLAccount"])
    DemoStage(harness).change_config({"cost_centers": {"by_account": {unmapped: None}}}, "an account left unmapped")
    sync_all("acme", harness.pair)
    source_id = lambda invoice: f"{invoice['VendorNum']}/{invoice['InvoiceNum']}"  # noqa: E731
    statuses = {source_id(i): record("acme", "ap_invoices", source_id(i)).status for i in invoices}
    held_ids = sorted(k for k, v in statuses.items() if v == "held")
    written_ids = sorted(k for k, v in statuses.items() if v == "written")
    assert held_ids and len(written_ids) >= 2, statuses
    # After the writes: AP changes one invoice's total in ServiceNow, keys one there by hand,
    # and a new invoice is entered in Epicor that no poll has read yet.
    changed = record("acme", "ap_invoices", written_ids[0])
    put(sn, "sn_shop_invoice", {"sys_id": changed.target_id, "total_amount": "1.23"})
    stored = next(i for i in rows(sn, "sn_shop_invoice") if i["sys_id"] == changed.target_id)
    by_hand = put(sn, "sn_shop_invoice", {"external_invoice_number": "HAND-5", "erp_source": stored["erp_source"],
                                          "supplier": stored["supplier"], "invoice_date": "2019-11-17",
                                          "total_amount": "640.00"})
    template = next(i for i in invoices if source_id(i) in written_ids)
    late = put(epicor, "ap_invoices", {"VendorNum": template["VendorNum"], "InvoiceNum": "LATE-2", "InvoiceDate": "2019-11-29",
                                       "InvoiceAmt": "77.70"})

    report = report_via_cli("acme", PERIOD)
    found = entity(report, "ap_invoices")
    assert found["source_date"] == "Epicor InvoiceDate" and found["target_date"] == "ServiceNow invoice_date"
    amounts = {source_id(i): Decimal(str(i["InvoiceAmt"])).quantize(Decimal("0.01")) for i in invoices}
    assert (found["source_count"], Decimal(found["source_total"])) == (len(invoices) + 1,
                                                                        sum(amounts.values(), Decimal(0)) + Decimal("77.70"))
    kinds = by_kind(found)
    assert sorted(kinds) == ["amount_differs", "held", "missing_in_target", "not_from_us"]
    assert [(d["source_ref"], d["target_ref"], d["target_amount"], d["record_id"]) for d in kinds["amount_differs"]] == \
        [(changed.source_id, changed.target_id, "1.23", changed.id)]
    assert sorted(d["source_ref"] for d in kinds["held"]) == held_ids
    assert all(unmapped in d["detail"] for d in kinds["held"])
    assert [(d["source_ref"], d["record_id"]) for d in kinds["missing_in_target"]] == \
        [(f"{late['VendorNum']}/LATE-2", None)]
    assert sorted(d["target_ref"] for d in kinds["not_from_us"]) == sorted([by_hand["sys_id"]] + [i["sys_id"] for i in before])
    assert found["ledger_count"] == len(written_ids)
    earlier = sum((Decimal(str(i["total_amount"])) for i in before), Decimal(0))
    assert Decimal(found["target_total"]) == sum((amounts[i] for i in written_ids[1:]), Decimal(0)) + Decimal("1.23") + \
        Decimal("640.00") + earlier
