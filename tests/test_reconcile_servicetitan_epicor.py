"""Month-end reconciliation of ServiceTitan -> Epicor over real HTTP (sandboxes, PostgreSQL,
the engine): a synced period with planted differences, each classified; and the demo's own
planted cases showing up in the report of the demo's sandboxes."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from click.testing import CliRunner

from tests.test_reconcile_support import (assert_totals_add_up, by_kind, entity, harness_fixture, put, record,
                                          report_via_cli, rows, sync_all)

PERIOD = "2026-11"
DEMO_SEED, DEMO_RECORDS = 5, 4  # a seed whose data has AP payments, so the demo's payment plant has cases
ST, EPICOR = "servicetitan", "epicor"


harness = harness_fixture("servicetitan-epicor")


def _bill(st: str, template: dict[str, Any], reference: str, day: str, vendor: dict[str, Any]) -> dict[str, Any]:
    fields = {k: template[k] for k in ("items", "billAmount", "taxAmount", "shippingAmount", "businessUnit", "summary")
              if k in template}
    return put(st, "inventory_bills", {**fields, "referenceNumber": reference, "billDate": f"{day}T15:00:00Z",
                                       "vendor": vendor, "syncStatus": "Pending"})


def test_a_synced_month_with_planted_differences(harness: Any) -> None:
    st, epicor = harness.sandboxes.url(ST), harness.sandboxes.url(EPICOR)
    seeded = rows(st, "inventory_bills")[0]
    good_vendor = seeded["vendor"]
    held_vendor = next(v for v in rows(st, "vendors") if v["name"] == "W.W. Grainger Inc")  # a look-alike: held
    kept = _bill(st, seeded, "NOV-001", "2026-11-03", good_vendor)
    changed = _bill(st, seeded, "NOV-002", "2026-11-12", good_vendor)
    held = _bill(st, seeded, "NOV-003", "2026-11-20", {"id": held_vendor["id"], "name": held_vendor["name"]})
    _bill(st, seeded, "DEC-001", "2026-12-01", good_vendor)  # the next period: not in November's report
    sync_all("acme", harness.pair)
    assert record("acme", "inventory_bills", kept["id"]).status == "written"
    held_record = record("acme", "inventory_bills", held["id"])
    assert held_record.status == "held"
    written = record("acme", "inventory_bills", changed["id"])
    vendor_num, _, invoice_num = written.target_id.partition("/")
    # After the write: AP changes the amount in Epicor, keys an invoice by hand into the group,
    # and a bill is entered in ServiceTitan that no poll has read yet.
    put(epicor, "ap_invoices", {"VendorNum": int(vendor_num), "InvoiceNum": invoice_num, "InvoiceAmt": "100.01"})
    put(epicor, "ap_invoices", {"VendorNum": int(vendor_num), "InvoiceNum": "HAND-77", "GroupID": "STDEMO",
                                "InvoiceDate": "2026-11-25", "InvoiceAmt": "410.00"})
    late = _bill(st, seeded, "NOV-004", "2026-11-28", good_vendor)

    report = report_via_cli("acme", PERIOD)
    assert report["period"] == PERIOD and report["pair"] == "servicetitan-epicor"
    bills = entity(report, "inventory_bills")
    assert bills["source_date"] == "ServiceTitan billDate" and bills["target_date"] == "Epicor InvoiceDate"
    amount = Decimal(str(seeded["billAmount"]))
    assert (bills["source_count"], Decimal(bills["source_total"])) == (4, 4 * amount)
    assert (bills["target_count"], Decimal(bills["target_total"])) == (3, amount + Decimal("100.01") + Decimal("410.00"))
    assert (bills["ledger_count"], Decimal(bills["ledger_total"])) == (2, 2 * amount)
    kinds = by_kind(bills)
    assert sorted(kinds) == ["amount_differs", "held", "missing_in_target", "not_from_us"]
    assert [(d["source_ref"], d["target_ref"], Decimal(d["source_amount"]), Decimal(d["target_amount"]), d["record_id"])
            for d in kinds["amount_differs"]] == [(str(changed["id"]), written.target_id, amount, Decimal("100.01"),
                                                    written.id)]
    assert [(d["source_ref"], d["record_id"]) for d in kinds["held"]] == [(str(held["id"]), held_record.id)]
    assert "looks like" in kinds["held"][0]["detail"]
    assert [(d["source_ref"], d["record_id"], d["number"]) for d in kinds["missing_in_target"]] == \
        [(str(late["id"]), None, "NOV-004")]
    assert [(d["target_ref"], Decimal(d["target_amount"])) for d in kinds["not_from_us"]] == \
        [(f"{vendor_num}/HAND-77", Decimal("410.00"))]
    # The record named is the one whose trail explains it.
    from mlconnector.cli import main

    trail = CliRunner().invoke(main, ["records", "show", str(held_record.id)])
    assert trail.exit_code == 0 and "looks like" in trail.output


def test_json_is_stable_and_known_failures_are_one_line(harness: Any) -> None:
    from mlconnector.cli import main

    runner = CliRunner()
    first = json.loads(runner.invoke(main, ["reconcile", "acme", "--period", PERIOD, "--json"]).output)
    second = json.loads(runner.invoke(main, ["reconcile", "acme", "--from", "2026-11-01", "--to", "2026-11-30",
                                             "--json"]).output)
    for document in (first, second):
        document.pop("generated_at"), document.pop("period")
    assert first == second
    assert list(first) == ["integration", "pair", "entities", "start", "end"]
    for args, words in ((["nobody", "--period", PERIOD], "no integration 'nobody'"),
                        (["acme", "--period", "2026-13"], "month 13"),
                        (["acme", "--period", "November"], "is not YYYY-MM")):
        result = runner.invoke(main, ["reconcile", *args])
        assert result.exit_code == 1 and words in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    harness.sandboxes.running[EPICOR].stop()  # the ERP goes away
    result = runner.invoke(main, ["reconcile", "acme", "--period", PERIOD])
    assert result.exit_code == 1 and "mlconnector check acme" in result.output and "Traceback" not in result.output


def test_the_demos_planted_cases_show_up(fresh_pg: str, configure: Any) -> None:
    """The demo's own run of this pair (its 429 burst, expiring token, webhooks, look-alike vendors
    and payments waiting for posting), then the report of the demo's sandboxes: each held record
    the demo left is a `held` difference naming it, and what it wrote ties out."""
    from rich.console import Console
    from sqlalchemy import select

    from mlconnector import demo
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair

    configure(database_url=fresh_pg)
    pair = get_pair("servicetitan-epicor")
    with demo._sandboxes([pair], DEMO_SEED, DEMO_RECORDS) as sandboxes, demo._receiver() as receiver:
        story = demo._run_pair(pair, sandboxes, receiver, Console(quiet=True))
        assert story.ok, story
        dates = [b["billDate"][:10] for b in rows(sandboxes.url(ST), "inventory_bills")]
        dates += [p["date"][:10] for p in rows(sandboxes.url(ST), "ap_payments")]
        from mlconnector.cli import main

        result = CliRunner().invoke(main, ["reconcile", story.integration, "--from", min(dates), "--to", max(dates),
                                           "--json"])
        assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    with session_scope() as session:
        held = {(r.flow, r.source_id): r.id for r in session.scalars(select(SyncRecord).where(
            SyncRecord.integration_id == story.integration, SyncRecord.status == "held",
            SyncRecord.flow.in_(("inventory_bills", "ap_payments"))))}
    assert any(flow == "ap_payments" for flow, _ in held), "the demo plants payments waiting for posting"
    shown = {(e["flow"], d["source_ref"]): d for e in report["entities"] for d in e["differences"] if d["kind"] == "held"}
    assert {key: d["record_id"] for key, d in shown.items()} == held
    assert all("not posted" in d["detail"] for (flow, _), d in shown.items() if flow == "ap_payments")
    for found in report["entities"]:
        assert_totals_add_up(found)
    bills = entity(report, "inventory_bills")  # everything the demo wrote is in Epicor as written
    assert bills["matched_count"] == bills["ledger_count"] > 0
    assert bills["ledger_total"] == bills["target_total"]
    assert not [d for d in bills["differences"] if d["kind"] in ("amount_differs", "missing_in_target", "failed")]
