"""The pure ServiceTitan -> Acumatica mapping functions: documents, decisions and holds."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from mappings import servicetitan_acumatica as m
from mlconnector.errors import MappingError
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold, TargetCondition

CUSTOMER = m.AcumaticaRef("C000042", "Harriet Okafor", "created")
VENDOR = m.AcumaticaRef("V000007", "Acme Supply", "matched_by_name")
REFERENCE = m.GlReference(accounts={"40000": True, "51000": True, "23000": True, "69900": False},
                          subaccounts={"100-100": True, "200-100": True, "999-999": False})


def _config(**overrides: Any) -> m.ServiceTitanAcumaticaConfig:
    body: dict[str, Any] = {
        "systems": {},
        "business_units": {"7": {"subaccount": "100-100", "branch": "EAST"},
                           "Plumbing - Service": {"subaccount": "200-100", "income_account": "40000"}},
        "gl": {"income_account": "40000", "expense_account": "51000", "sales_tax_account": "23000"},
    }
    body.update(overrides)
    return m.ServiceTitanAcumaticaConfig.model_validate(body)


def _invoice(**overrides: Any) -> dict[str, Any]:
    invoice = {
        "id": 30001, "referenceNumber": "20001", "invoiceDate": "2026-05-02T10:00:00Z", "dueDate": "2026-06-01T00:00:00Z",
        "subTotal": "329.00", "salesTax": "0.00", "total": "329.00", "syncStatus": "Pending",
        "customer": {"id": 88, "name": "Harriet Okafor"}, "businessUnit": {"id": 7, "name": "HVAC - Residential Service"},
        "items": [{"id": 2, "order": 2, "description": "Labor - repair", "quantity": "2.00", "price": "120.00"},
                  {"id": 1, "order": 1, "description": "Diagnostic service call", "quantity": "1.00", "price": "89.00"}],
    }
    invoice.update(overrides)
    return invoice


def _bill(**overrides: Any) -> dict[str, Any]:
    bill = {
        "id": 70001, "referenceNumber": "INV-1042", "billDate": "2026-05-02T00:00:00Z", "dueDate": "2026-06-01T00:00:00Z",
        "summary": "Coil stock", "billAmount": "412.50", "taxAmount": "32.50", "shippingAmount": "0.00",
        "syncStatus": "Pending", "businessUnit": {"id": 7, "name": "HVAC - Residential Service"},
        "vendor": {"id": 511, "name": "Acme Supply"},
        "items": [{"id": 1, "order": 1, "description": "3/8 copper", "quantity": "10.00", "cost": "38.00"}],
    }
    bill.update(overrides)
    return bill


def _payment(**overrides: Any) -> dict[str, Any]:
    payment = {"id": 60001, "total": "329.00", "date": "2026-05-03T00:00:00Z", "checkNumber": "1207", "memo": None,
               "customer": {"id": 88, "name": "Harriet Okafor"}, "syncStatus": "Pending",
               "appliedTo": [{"appliedId": 1, "appliedTo": 30001, "appliedAmount": "329.00",
                              "appliedToReferenceNumber": "20001"}]}
    payment.update(overrides)
    return payment


# ---- AR invoices ------------------------------------------------------------------------------


def test_invoice_lines_land_on_the_business_units_account_subaccount_and_branch() -> None:
    mapped = m.map_invoice(_invoice(), _config(), CUSTOMER, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    document: m.AcumaticaDocument = mapped.document  # type: ignore[assignment]
    fields: m.ArInvoice = document.fields  # type: ignore[assignment]
    assert [(l.TransactionDescription, l.Qty, l.UnitPrice, l.Account, l.Subaccount, l.Branch) for l in fields.Details] == [
        ("Diagnostic service call", 1.0, 89.0, "40000", "100-100", "EAST"), ("Labor - repair", 2.0, 120.0, "40000", "100-100", "EAST")]
    assert (fields.Customer, fields.CustomerOrder, fields.Date, fields.LinkBranch) == ("C000042", "20001", "2026-05-02", "EAST")
    assert fields.Hold is True and document.release is False and document.total == "329.00"
    assert mapped.external_key == {"Type": "Invoice", "CustomerOrder": "20001"}
    why = {d.field: d.reason for d in mapped.decisions}
    assert "business unit 'HVAC - Residential Service'" in why["subaccount"] and why["account"] == "gl.income_account"
    assert "created in Acumatica" in why["customer"]


def test_a_business_unit_found_by_name_may_name_its_own_account() -> None:
    mapped = m.map_invoice(_invoice(businessUnit={"id": 9, "name": "Plumbing - Service"}), _config(), CUSTOMER, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    assert {(l.Account, l.Subaccount, l.Branch) for l in mapped.document.fields.Details} == {("40000", "200-100", None)}  # type: ignore[union-attr]
    assert {d.field: d.reason for d in mapped.decisions}["account"] == "business_units.Plumbing - Service.income_account"


def test_release_configured_writes_off_hold_and_says_so() -> None:
    mapped = m.map_invoice(_invoice(), _config(release_documents=True, mark_exported=True), CUSTOMER, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    assert mapped.document.fields.Hold is False and mapped.document.release is True  # type: ignore[union-attr]
    assert mapped.document.mark_exported is True  # type: ignore[union-attr]
    exported = m.map_invoice(_invoice(syncStatus="Exported"), _config(mark_exported=True), CUSTOMER, REFERENCE, "acme")
    assert isinstance(exported, MappedRecord) and exported.document.mark_exported is False  # type: ignore[union-attr]


def test_an_unmapped_business_unit_is_a_hold_a_config_key_releases() -> None:
    held = m.map_invoice(_invoice(businessUnit={"id": 12, "name": "Drains & Sewer"}), _config(), CUSTOMER, REFERENCE, "acme")
    assert isinstance(held, Hold)
    assert "business unit 'Drains & Sewer' of invoice 20001 has no Acumatica subaccount" in held.reason
    assert "mlconnector integrations set-config acme" in held.reason
    assert set(held.releases) == {ConfigNeeded("business_units.12"), ConfigNeeded("business_units.Drains & Sewer")}


def test_an_inactive_subaccount_is_a_hold_naming_it() -> None:
    config = _config(business_units={"7": {"subaccount": "999-999"}})
    held = m.map_invoice(_invoice(), config, CUSTOMER, REFERENCE, "acme")
    assert isinstance(held, Hold)
    assert held.reason.startswith("subaccount 999-999 is inactive in Acumatica (business_units.7.subaccount")
    assert held.releases == (ConfigNeeded("business_units.7.subaccount"),
                             TargetCondition("acumatica", "subaccount", "999-999", "active"))


def test_an_unknown_or_inactive_account_is_a_hold_naming_it() -> None:
    unknown = m.map_invoice(_invoice(), _config(gl={"income_account": "48888"}), CUSTOMER, REFERENCE, "acme")
    assert isinstance(unknown, Hold) and "GL account 48888 does not exist in Acumatica (gl.income_account" in unknown.reason
    inactive = m.map_bill(_bill(), _config(gl={"expense_account": "69900"}), VENDOR, REFERENCE, "acme")
    assert isinstance(inactive, Hold) and "GL account 69900 is inactive" in inactive.reason
    assert ConfigNeeded("gl.expense_account") in inactive.releases
    none = m.map_invoice(_invoice(), _config(gl={}), CUSTOMER, REFERENCE, "acme")
    assert isinstance(none, Hold) and none.releases == (ConfigNeeded("gl.income_account"),)


def test_sales_tax_is_a_line_on_its_own_account_or_a_hold() -> None:
    taxed = _invoice(salesTax="26.25", total="355.25")
    mapped = m.map_invoice(taxed, _config(), CUSTOMER, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    tax_line = mapped.document.fields.Details[-1]  # type: ignore[union-attr]
    assert (tax_line.TransactionDescription, tax_line.UnitPrice, tax_line.Account) == ("Sales tax", 26.25, "23000")
    assert not any(d.field == "total" for d in mapped.decisions)  # the lines add up to the total
    held = m.map_invoice(taxed, _config(gl={"income_account": "40000"}), CUSTOMER, REFERENCE, "acme")
    assert isinstance(held, Hold) and held.releases == (ConfigNeeded("gl.sales_tax_account"),)


def test_a_total_that_differs_from_the_lines_is_said() -> None:
    mapped = m.map_invoice(_invoice(total="330.00"), _config(), CUSTOMER, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    assert {d.field: d.reason for d in mapped.decisions}["total"] == "the invoice total differs from its lines (329.00)"


def test_a_bad_amount_is_a_mapping_error() -> None:
    with pytest.raises(MappingError):
        m.map_invoice(_invoice(items=[{"id": 1, "description": "x", "quantity": "1", "price": "twelve"}]), _config(),
                      CUSTOMER, REFERENCE, "acme")


# ---- AP bills ---------------------------------------------------------------------------------


def test_inventory_bill_becomes_an_ap_bill_against_the_linked_vendor() -> None:
    mapped = m.map_bill(_bill(), _config(gl={"expense_account": "51000", "tax_account": "23000"}), VENDOR, REFERENCE, "acme")
    assert isinstance(mapped, MappedRecord)
    fields: m.ApBill = mapped.document.fields  # type: ignore[assignment]
    assert (fields.Vendor, fields.VendorRef, fields.BranchID, fields.Hold) == ("V000007", "INV-1042", "EAST", True)
    assert [(l.TransactionDescription, l.Qty, l.UnitCost, l.Account, l.Subaccount) for l in fields.Details] == [
        ("3/8 copper", 10.0, 38.0, "51000", "100-100"), ("Tax", 1.0, 32.5, "23000", "100-100")]
    assert mapped.external_key == {"Vendor": "V000007", "VendorRef": "INV-1042"}
    assert m.bill_reference({"id": 5, "referenceNumber": " "}) == "ST-5"


# ---- payments ---------------------------------------------------------------------------------


def test_a_payment_is_applied_to_its_released_invoice() -> None:
    states = {"30001": m.InvoiceState("AR000005", "Open", Decimal("329.00"))}
    mapped = m.map_payment(_payment(), _config(), CUSTOMER, states)
    assert isinstance(mapped, MappedRecord)
    fields: m.ArPayment = mapped.document.fields  # type: ignore[assignment]
    assert (fields.CustomerID, fields.ExternalRef, fields.PaymentRef, fields.PaymentAmount, fields.Hold) == \
        ("C000042", "ST-PAY-60001", "1207", 329.0, True)
    assert [(a.DocType, a.ReferenceNbr, a.AmountPaid) for a in fields.DocumentsToApply] == [("Invoice", "AR000005", 329.0)]


def test_a_payment_whose_invoice_is_not_written_waits_for_the_write() -> None:
    held = m.map_payment(_payment(), _config(), CUSTOMER, {"30001": None})
    assert isinstance(held, Hold) and "not in Acumatica yet" in held.reason
    assert held.releases == (m.invoice_written(30001),)
    assert held.releases[0].key == "target:acumatica:ar_invoice:written:st-30001"


def test_a_payment_whose_invoice_is_on_hold_waits_for_its_release() -> None:
    held = m.map_payment(_payment(), _config(), CUSTOMER, {"30001": m.InvoiceState("AR000005", "On Hold", Decimal("329"))})
    assert isinstance(held, Hold) and "AR000005 (On Hold) not released" in held.reason
    assert held.releases == (TargetCondition("acumatica", "ar_invoice", "AR000005", "released"),)
    # Once the payment is in Acumatica, a redelivery maps it as it is: no hold.
    again = m.map_payment(_payment(), _config(), CUSTOMER, {"30001": m.InvoiceState("AR000005", "Balanced", Decimal("329"))},
                          existing="Payment/PM000001")
    assert isinstance(again, MappedRecord)


def test_a_payment_applying_more_than_it_has_is_held_for_a_person() -> None:
    over = _payment(total="100.00")
    held = m.map_payment(over, _config(), CUSTOMER, {"30001": m.InvoiceState("AR000005", "Open", Decimal("329"))})
    assert isinstance(held, Hold) and held.releases == () and "more than its 100.00" in held.reason


# ---- customers and vendors ----------------------------------------------------------------------


def test_customers_and_vendors_are_created_with_ids_from_their_servicetitan_ids() -> None:
    customer = m.map_customer({"id": 88, "name": " Harriet Okafor ", "address": {"street": "40 Orchard Ln", "unit": "B",
                                                                                 "city": "Clovis", "country": "USA"}},
                              _config())
    assert (customer.CustomerID, customer.CustomerName) == ("ST88", "Harriet Okafor")
    assert customer.MainContact["Address"]["AddressLine1"] == "40 Orchard Ln B"
    assert customer.MainContact["Address"]["Country"] == "US"
    vendor = m.map_vendor({"id": 511, "name": "Acme Supply", "contactInfo": {"email": "ap@acme.test"}}, _config())
    assert (vendor.VendorID, vendor.MainContact["Email"]) == ("STV511", "ap@acme.test")


def test_name_matching_is_normalized_and_skips_inactive_records() -> None:
    rows = [{"CustomerID": "C1", "CustomerName": "ACME SUPPLY COMPANY", "Status": "Active"},
            {"CustomerID": "C2", "CustomerName": "Acme Supply, Inc.", "Status": "Inactive"},
            {"CustomerID": "C3", "CustomerName": "Acme Supplies", "Status": "Active"}]
    assert [r["CustomerID"] for r in m.match_by_name("Acme Supply Co.", rows, "CustomerName")] == ["C1"]
