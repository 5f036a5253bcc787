"""The pure ServiceTitan -> Epicor mapping functions: payloads, decisions and holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from mappings import servicetitan_epicor as m
from mlconnector.errors import MappingError
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold, TargetCondition
from mlconnector.links import normalize_name

VENDOR = m.EpicorVendorRef(vendor_num=7, vendor_id="ACME01", name="ACME SUPPLY COMPANY", how="matched_by_name")


def _config(**gl: Any) -> m.ServiceTitanEpicorConfig:
    return m.ServiceTitanEpicorConfig(systems={}, invoice_group="STAP", gl=m.GlAllocation(**gl))


def _bill(**overrides: Any) -> dict[str, Any]:
    bill = {
        "id": 70001, "referenceNumber": "INV-1042", "billDate": "2026-05-02T00:00:00Z", "dueDate": "2026-06-01T00:00:00Z",
        "summary": "Coil stock", "billAmount": "412.50", "taxAmount": "32.50", "shippingAmount": "0.00",
        "businessUnit": {"id": 7, "name": "HVAC Service"}, "vendor": {"id": 511, "name": "Acme Supply Co"},
        "items": [
            {"id": 2, "order": 2, "description": "Filter 16x25", "quantity": "5.00", "cost": "12.00",
             "generalLedgerAccount": {"number": "1200"}},
            {"id": 1, "order": 1, "description": "3/8 copper", "quantity": "10.00", "cost": "32.00",
             "generalLedgerAccount": {"number": "5000"}},
        ],
    }
    bill.update(overrides)
    return bill


def test_normalized_names_match_near_duplicates() -> None:
    assert normalize_name("Acme Supply Co.") == normalize_name("ACME SUPPLY COMPANY") == normalize_name("Acme Supply, Inc.")
    assert normalize_name("Acme Supplies") != normalize_name("Acme Supply")
    assert normalize_name("The Johnstone Supply LLC") == "JOHNSTONE SUPPLY"


def test_bill_maps_to_invoice_lines_in_order_with_gl_decisions() -> None:
    config = _config(default_account="5100-100", by_st_account={"1200": "1200-000"}, tax_account="5000-000")
    mapped = m.map_inventory_bill(_bill(), config, VENDOR, "acme")
    assert isinstance(mapped, MappedRecord)
    lines = mapped.payload["lines"]
    assert [line["Description"] for line in lines] == ["3/8 copper", "Filter 16x25", "Tax"]
    assert [line["GLAccount"] for line in lines] == ["5100-100", "1200-000", "5000-000"]
    assert [line["ExtCost"] for line in lines] == ["320.00", "60.00", "32.50"]
    assert mapped.payload["header"] == {"VendorNum": 7, "VendorID": "ACME01", "InvoiceNum": "INV-1042", "InvoiceDate": "2026-05-02",
                                        "DueDate": "2026-06-01", "Description": "Coil stock", "InvoiceAmt": "412.50"}
    assert mapped.external_key == {"VendorNum": 7, "InvoiceNum": "INV-1042"}
    reasons = {d.field: d.reason for d in mapped.decisions}
    assert reasons["vendor"] == "matched by normalized name"
    assert "gl.by_st_account" in reasons["line 2 GL"] and "default_account" in reasons["line 1 GL"]


def test_business_unit_mapping_beats_the_default_and_a_missing_one_holds() -> None:
    mapped = m.map_inventory_bill(_bill(taxAmount="0"), _config(default_account="5100-100", by_business_unit={"HVAC Service": "6000-100"}), VENDOR, "acme")
    assert isinstance(mapped, MappedRecord)
    assert {line["GLAccount"] for line in mapped.payload["lines"]} == {"6000-100"}
    held = m.map_inventory_bill(_bill(), _config(), VENDOR, "acme")
    assert isinstance(held, Hold)
    assert held.key == "config:gl.by_business_unit.7" and "HVAC Service" in held.reason
    assert ConfigNeeded("gl.default_account") in held.releases
    assert ConfigNeeded("gl.by_business_unit.HVAC Service") in held.releases


def test_totals_that_disagree_are_noted_and_reference_falls_back_to_the_id() -> None:
    mapped = m.map_inventory_bill(_bill(billAmount="999.00", referenceNumber=None), _config(default_account="5100-100"), VENDOR, "acme")
    assert isinstance(mapped, MappedRecord)
    assert mapped.payload["header"]["InvoiceNum"] == "ST-70001"
    assert any(d.field == "total" and "differs" in d.reason for d in mapped.decisions)


def test_payment_matches_one_invoice_by_vendor_and_amount() -> None:
    payment = {"id": 78001, "amount": 412.5, "date": "2026-06-02T00:00:00Z", "splits": []}
    candidates = [{"InvoiceNum": "INV-1", "InvoiceBal": "100.00"}, {"InvoiceNum": "INV-1042", "InvoiceBal": "412.50"}]
    mapped = m.map_payment(payment, VENDOR, candidates, {})
    assert isinstance(mapped, MappedRecord)
    assert mapped.payload == {"vendor_num": 7, "invoice_num": "INV-1042", "amount": "412.50",
                              "payment_date": "2026-06-02", "reference": "ST-PAY-78001"}


def test_payment_with_no_or_several_matches_holds_with_candidates() -> None:
    payment = {"id": 78002, "amount": "50.00", "splits": [{"inventoryBillId": 70009}]}
    none = m.map_payment(payment, VENDOR, [{"InvoiceNum": "INV-1", "InvoiceBal": "100.00"}], {})
    assert isinstance(none, Hold) and "no open posted invoice" in none.reason and "INV-1" in none.reason
    assert none.releases == ()  # a person checks the invoice and replays
    twins = [{"InvoiceNum": "A", "InvoiceBal": "50.00"}, {"InvoiceNum": "B", "InvoiceBal": "50.00"}]
    several = m.map_payment(payment, VENDOR, twins, {})
    assert isinstance(several, Hold) and "2 open invoices" in several.reason
    split_decides = m.map_payment(payment, VENDOR, twins, {"70009": m.InvoiceState(7, "B", Decimal("50.00"), "STAP", True)})
    assert isinstance(split_decides, MappedRecord) and split_decides.payload["invoice_num"] == "B"


def test_epicor_vendor_change_patches_only_what_changed() -> None:
    st_vendor = {"id": 511, "name": "Acme Supply Co", "address": {"street": "1 Depot Rd", "city": "Fresno", "state": "CA", "zip": "93701", "country": "USA"},
                 "contactInfo": {"phone": "555-0100", "email": "ap@acme.test"}}
    same = {"Name": "Acme Supply Co", "Address1": "1 Depot Rd", "City": "Fresno", "State": "CA", "ZIP": "93701", "PhoneNum": "555-0100", "EMailAddress": "ap@acme.test"}
    assert m.map_epicor_vendor_to_servicetitan(same, st_vendor) == {}
    moved = {**same, "Address1": "400 New Depot Way", "City": "Clovis"}
    patch = m.map_epicor_vendor_to_servicetitan(moved, st_vendor)
    assert set(patch) == {"address"} and patch["address"]["street"] == "400 New Depot Way"


def test_money_parses_strings_and_refuses_garbage() -> None:
    assert m.money("412.505") == Decimal("412.51")
    assert m.money(None) == Decimal("0")
    try:
        m.money("twelve")
    except MappingError as error:  # a data problem: permanent, not retried
        assert "not an amount" in str(error)
    else:
        raise AssertionError("garbage accepted")


def test_payment_on_an_unposted_invoice_waits_for_the_posting_and_says_so() -> None:
    payment = {"id": 78003, "amount": "3309.75", "splits": [{"inventoryBillId": 70011}]}
    unposted = {"70011": m.InvoiceState(7, "INV-945838", Decimal("3309.75"), "STDEMO", False)}
    held = m.map_payment(payment, VENDOR, [], unposted)
    assert isinstance(held, Hold)
    assert ("invoice INV-945838 (3309.75) is in group STDEMO but not posted; Epicor applies payments to posted "
            "invoices only; post it and the payment follows on the next poll") in held.reason
    assert held.releases == (TargetCondition("epicor", "ap_invoice", "7/INV-945838", "posted"),)
