"""Month-end reconciliation of Epicor -> Procore over real HTTP (sandboxes, PostgreSQL, the
engine): AP invoices and direct costs of a synced month, with planted differences."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.test_reconcile_support import by_kind, entity, harness_fixture, put, record, report_via_cli, rows, sync_all

PERIOD = "2019-11"  # years before anything a sandbox seeds (its last 180 days): only what a test plants is in it
EPICOR, PROCORE = "epicor", "procore"


harness = harness_fixture("epicor-procore", as_demo=True)


def _line_total(invoice: dict[str, Any]) -> Decimal:
    return sum((Decimal(str(line["ExtCost"])) for line in invoice["APInvDtls"]), Decimal(0)).quantize(Decimal("0.01"))


def test_a_synced_month_with_planted_differences(harness: Any) -> None:
    from mlconnector.demo_stage import DemoStage

    epicor, procore = harness.sandboxes.url(EPICOR), harness.sandboxes.url(PROCORE)
    invoices = sorted(rows(epicor, "ap_invoices"), key=lambda i: (i["VendorNum"], i["InvoiceNum"]))
    for day, invoice in enumerate(invoices, start=2):  # the month's invoices
        put(epicor, "ap_invoices", {"VendorNum": invoice["VendorNum"], "InvoiceNum": invoice["InvoiceNum"],
                                    "InvoiceDate": f"2019-11-{day:02d}"})
    # One invoice's GL account is left out of the cost-code map: it is held naming the account.
    from mappings import epicor_values as ev

    unmapped = ev.gl_account(invoices[0]["APInvDtls"][0]["GLAccount"])
    DemoStage(harness).change_config({"cost_codes": {"by_account": {unmapped: None}}}, "an account left unmapped")
    sync_all("acme", harness.pair)
    source_id = lambda invoice: f"{invoice['VendorNum']}/{invoice['InvoiceNum']}"  # noqa: E731
    statuses = {source_id(i): record("acme", "ap_invoices", source_id(i)).status for i in invoices}
    held_ids = sorted(k for k, v in statuses.items() if v == "held")
    written_ids = sorted(k for k, v in statuses.items() if v == "written")
    assert held_ids and len(written_ids) >= 2, statuses
    # After the writes: a line is added to one direct cost in Procore, one is entered there by
    # hand, and a new invoice is entered in Epicor that no poll has read yet.
    changed = record("acme", "ap_invoices", written_ids[0])
    project = changed.target_key["project_id"]
    cost = next(c for c in rows(procore, "direct_costs") if str(c["id"]) == changed.target_id)
    line = {k: v for k, v in cost["line_items"][0].items() if k in ("description", "quantity", "unit_cost", "amount",
                                                                      "cost_code_id", "line_item_type_id", "uom")}
    put(procore, "direct_costs", {"id": cost["id"], "line_items": [{**line, "description": "freight by hand",
                                                                     "quantity": "1", "unit_cost": "25.00", "amount": "25.00"}]})
    after = Decimal(str(next(c for c in rows(procore, "direct_costs") if c["id"] == cost["id"])["grand_total"]))
    by_hand = put(procore, "direct_costs", {"project_id": project, "direct_cost_type": "invoice", "invoice_number": "HAND-9",
                                            "vendor_id": cost["vendor_id"], "direct_cost_date": "2019-11-18",
                                            "status": cost["status"], "line_items": [{**line, "amount": "310.00",
                                                                                      "quantity": "1", "unit_cost": "310.00"}]})
    template = next(i for i in invoices if source_id(i) in written_ids)
    late = put(epicor, "ap_invoices", {"VendorNum": template["VendorNum"], "InvoiceNum": "LATE-1", "InvoiceDate": "2019-11-29",
                                       "GroupID": template.get("GroupID") or "", "InvoiceAmt": template["InvoiceAmt"],
                                       "APInvDtls": [{k: v for k, v in l.items() if k not in ("SysRevID", "SysRowID", "InvoiceNum")}
                                                     for l in template["APInvDtls"]]})

    report = report_via_cli("acme", PERIOD)
    costs = entity(report, "ap_invoices")
    assert costs["source_date"] == "Epicor InvoiceDate" and costs["target_date"] == "Procore direct_cost_date"
    totals = {source_id(i): _line_total(i) for i in invoices}
    assert costs["source_count"] == len(invoices) + 1
    assert Decimal(costs["source_total"]) == sum(totals.values(), Decimal(0)) + _line_total(late)
    kinds = by_kind(costs)
    assert sorted(kinds) == ["amount_differs", "held", "missing_in_target", "not_from_us"]
    assert [(d["source_ref"], d["target_ref"], Decimal(d["target_amount"]), d["record_id"]) for d in kinds["amount_differs"]] \
        == [(changed.source_id, changed.target_id, after, changed.id)]
    assert after == totals[changed.source_id] + Decimal("25.00")
    assert sorted(d["source_ref"] for d in kinds["held"]) == held_ids
    assert all(f"GL account(s) {unmapped}" in d["detail"] and d["record_id"] for d in kinds["held"])
    assert [(d["source_ref"], d["record_id"]) for d in kinds["missing_in_target"]] == \
        [(f"{template['VendorNum']}/LATE-1", None)]
    assert [(d["target_ref"], Decimal(d["target_amount"])) for d in kinds["not_from_us"]] == \
        [(str(by_hand["id"]), Decimal("310.00"))]
    assert costs["ledger_count"] == len(written_ids)
    assert Decimal(costs["target_total"]) == sum((totals[i] for i in written_ids), Decimal(0)) + Decimal("25.00") + \
        Decimal("310.00")
