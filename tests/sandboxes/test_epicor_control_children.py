"""The Epicor sandbox's control API (`put_entity`) stores children given under a navigation
property (the first one also as `lines`): numbered from 1, linked to their parent, replacing
the children the parent had."""

from __future__ import annotations

from sandboxes.base import SandboxOptions
from sandboxes.epicor import EpicorSandbox


def sandbox() -> EpicorSandbox:
    return EpicorSandbox(SandboxOptions(seed=3, records=5))


def test_banks_are_numbered_bank1_bank2_and_replace_the_old_ones() -> None:
    sb = sandbox()
    vendor = sb.put_entity("vendors", {"VendorID": "KIDS01", "Name": "Kids", "VendBanks": [
        {"BankName": "First"}, {"BankName": "Second", "BankID": "OWN"}]})
    assert [(b["BankID"], b["BankName"], b["VendorNum"]) for b in vendor["VendBanks"]] == [
        ("BANK1", "First", vendor["VendorNum"]), ("OWN", "Second", vendor["VendorNum"])]
    again = sb.put_entity("vendors", {"VendorID": "kids01", "Name": "Kids", "lines": [{"BankName": "Only"}]})
    assert again["VendorNum"] == vendor["VendorNum"]
    assert [b["BankID"] for b in again["VendBanks"]] == ["BANK1"]


def test_a_po_takes_lines_and_releases_for_its_first_line_by_default() -> None:
    sb = sandbox()
    po = sb.put_entity("purchase_orders", {"VendorNum": 2, "lines": [{"PartNum": "P1", "OrderQty": 2}],
                                           "PORels": [{"RelQty": 2, "JobNum": "J-1"}, {"POLine": 2, "RelQty": 1}]})
    assert [(d["PONUM"], d["POLine"], d["VendorNum"]) for d in po["PODetails"]] == [(po["PONum"], 1, 2)]
    assert [(r["PONum"], r["POLine"], r["PORelNum"], r["JobNum"]) for r in po["PORels"]] == [
        (po["PONum"], 1, 1, "J-1"), (po["PONum"], 2, 2, "")]


def test_invoice_lines_get_their_extended_cost_and_set_the_total() -> None:
    sb = sandbox()
    invoice = sb.put_entity("ap_invoices", {"VendorNum": 2, "InvoiceNum": "KID-1", "lines": [
        {"Description": "a", "VendorQty": 3, "UnitCost": 2.5}, {"Description": "b", "ExtCost": 4}]})
    assert [(line["InvoiceLine"], line["ExtCost"]) for line in invoice["APInvDtls"]] == [(1, 7.5), (2, 4.0)]
    assert invoice["InvoiceAmt"] == 11.5 and invoice["InvoiceBal"] == 11.5
    payment = sb.put_entity("ap_payments", {"VendorNum": 2, "GroupID": "CHK01", "APTrans": [
        {"InvoiceNum": "KID-1", "TranAmt": 5}]})
    assert [(t["HeadNum"], t["APTranNo"], t["VendorNum"], t["GroupID"]) for t in payment["APTrans"]] == [
        (payment["HeadNum"], 1, 2, "CHK01")]
