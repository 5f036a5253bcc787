"""Epicor -> ServiceNow mapping: pure functions, no I/O."""

from __future__ import annotations

from typing import Any

import pytest

from mappings import epicor_servicenow as m
from mlconnector.flows import MappedRecord
from mlconnector.holds import ConfigNeeded, Hold

SUPPLIER = m.SupplierRef("a" * 32, "Valley Steel", "linked")


def config(**overrides: Any) -> m.EpicorServiceNowConfig:
    base = {"systems": {}, "cost_centers": {"by_account": {"5100-100": "6000-01", "6500-200": "6100-01"}}}
    return m.EpicorServiceNowConfig.model_validate({**base, **overrides})


def vendor(**fields: Any) -> dict[str, Any]:
    return {"VendorNum": 7, "VendorID": "VALSTL", "Name": "Valley Steel", "Address1": "12 Mill Rd", "Address2": "Unit 4",
            "City": "Fresno", "State": "CA", "ZIP": "93701", "Country": "USA", "PhoneNum": "559-555-0100",
            "EMailAddress": "ap@valley.example", "TermsCode": "N30", "CurrencyCode": "USD", "Inactive": False,
            "SysRevID": 12, **fields}


def po(**fields: Any) -> dict[str, Any]:
    return {"PONum": 1042, "VendorNum": 7, "VendorName": "Valley Steel", "OrderDate": "2026-11-02", "OpenOrder": True,
            "VoidOrder": False, "CurrencyCode": "USD", "TermsCode": "N30", "TotalOrder": "0.0", "DocTotalOrder": "0.0",
            "lines": [{"POLine": 2, "LineDesc": "Elbow", "OrderQty": "10.0", "UnitCost": "1.25000", "DocUnitCost": "0.0",
                       "ExtCost": "12.5", "DocExtCost": "0.0"},
                      {"POLine": 1, "LineDesc": "Pipe", "OrderQty": "4", "UnitCost": "12.5", "ExtCost": "50"}], **fields}


def invoice(**fields: Any) -> dict[str, Any]:
    return {"VendorNum": 7, "VendorNumVendorID": "VALSTL", "InvoiceNum": "INV-88", "InvoiceDate": "2026-11-03",
            "DueDate": "2026-12-03", "InvoiceAmt": "230.0", "DocInvoiceAmt": "0.0", "Posted": False, "TermsCode": "N30",
            "CurrencyCode": "USD", "REFPONum": 1042,
            "lines": [{"InvoiceLine": 1, "Description": "Pipe", "VendorQty": "4", "UnitCost": "50", "ExtCost": "200",
                       "GLAccount": "5100|100"},
                      {"InvoiceLine": 2, "Description": "Freight", "VendorQty": "1", "UnitCost": "30", "ExtCost": "30",
                       "GLAccount": "6500|200"}], **fields}


def centers(**missing: bool) -> dict[str, m.CostCenterRef]:
    wanted = {"5100-100": "6000-01", "6500-200": "6100-01"}
    return {a: m.CostCenterRef(v, None if missing.get(v.replace("-", "_")) else f"cc-{v}") for a, v in wanted.items()}


def test_a_vendor_is_a_supplier_found_again_by_name_with_contact_and_payment_details() -> None:
    mapped = m.map_supplier(vendor(), config())
    document: m.StagedDocument = mapped.document  # type: ignore[assignment]
    assert document.header.keys == {"name": "Valley Steel"}
    assert document.header.staging["street"] == "12 Mill Rd, Unit 4"
    assert document.header.staging["erp_source"] == "Epicor Kinetic"
    assert {document.header.target[k] for k in ("payment_term", "currency", "email")} == {"N30", "USD", "ap@valley.example"}
    assert document.header.target["active"] == "true"
    assert m.map_supplier(vendor(Inactive=True), config()).document.header.target["active"] == "false"  # type: ignore[attr-defined]
    assert mapped.external_key == {"VendorNum": 7}


def test_a_po_keeps_its_lines_in_order_and_falls_back_to_base_currency_amounts() -> None:
    mapped = m.map_purchase_order(po(), config(), SUPPLIER)
    assert isinstance(mapped, MappedRecord)
    document: m.StagedDocument = mapped.document  # type: ignore[assignment]
    assert document.header.keys == {"erp_number": "1042", "erp_source": "Epicor Kinetic"}
    assert document.header.staging["supplier_company_name"] == SUPPLIER.sys_id
    assert document.header.staging["po_amount"] == "62.50"  # the lines' sum when the header has no total
    assert document.header.staging["order_date"] == "2026-11-02"
    assert [l.keys["line_number"] for l in document.lines] == ["1", "2"]
    assert document.lines[1].staging == {"line_number": "2", "description": "Elbow", "quantity": "10", "unit_price": "1.25",
                                         "line_amount": "12.50"}
    assert document.lines[1].target["amount"] == "12.50"


@pytest.mark.parametrize("flags,status", [({}, "ordered"), ({"OpenOrder": False}, "closed"),
                                          ({"OpenOrder": False, "VoidOrder": True}, "canceled")])
def test_po_status_follows_epicor(flags: dict[str, Any], status: str) -> None:
    document = m.map_purchase_order(po(**flags), config(), SUPPLIER).document
    assert document.header.staging["po_status"] == status and document.header.target["status"] == status  # type: ignore[attr-defined]


def test_an_invoice_lands_every_line_on_its_mapped_cost_center() -> None:
    mapped = m.map_ap_invoice(invoice(), config(), SUPPLIER, centers())
    assert isinstance(mapped, MappedRecord)
    document: m.StagedDocument = mapped.document  # type: ignore[assignment]
    assert document.header.keys == {"external_invoice_number": "INV-88", "erp_source": "Epicor Kinetic",
                                    "supplier": SUPPLIER.sys_id}
    header = document.header.staging
    assert (header["amount_invoiced"], header["invoice_date"], header["purchase_order"], header["other_charges"]) == \
        ("230.00", "2026-11-03", "1042", "0.00")
    assert header["invoice_line_count"] == "2"
    assert [(l.staging["gl_account"], l.staging["cost_center"]) for l in document.lines] == \
        [("5100-100", "cc-6000-01"), ("6500-200", "cc-6100-01")]
    assert any(d.field == "line 2 cost center" and d.value == "6100-01" for d in mapped.decisions)
    assert document.header.target["status"] == "pending"
    posted = m.map_ap_invoice(invoice(Posted=True), config(), SUPPLIER, centers())
    assert posted.document.header.target["status"] == "approved"  # type: ignore[union-attr]


def test_an_unmapped_gl_account_is_a_hold_naming_it_released_by_its_config_key() -> None:
    narrow = config(cost_centers={"by_account": {"5100-100": "6000-01"}})
    held = m.map_ap_invoice(invoice(), narrow, SUPPLIER, {"5100-100": m.CostCenterRef("6000-01", "cc")})
    assert isinstance(held, Hold)
    assert "6500-200" in held.reason and "cost_centers.by_account" in held.reason
    assert ConfigNeeded("cost_centers.by_account.6500-200") in held.releases
    assert ConfigNeeded("cost_centers.default") in held.releases
    # A default cost center covers any account the map leaves out.
    defaulted = config(cost_centers={"by_account": {}, "default": "6000-01"})
    refs = {a: m.CostCenterRef("6000-01", "cc") for a in ("5100-100", "6500-200")}
    assert isinstance(m.map_ap_invoice(invoice(), defaulted, SUPPLIER, refs), MappedRecord)


def test_a_cost_center_missing_in_servicenow_is_a_hold_too() -> None:
    held = m.map_ap_invoice(invoice(), config(), SUPPLIER, centers(**{"6100_01": True}))
    assert isinstance(held, Hold)
    assert "6100-01 (for GL account 6500-200) are not in ServiceNow" in held.reason
    assert ConfigNeeded("cost_centers.by_account.6500-200") in held.releases


def test_differences_ignore_columns_the_instance_lacks_and_read_reference_values() -> None:
    current = {"status": "ordered", "total_amount": "62.50", "supplier": {"value": "s1", "link": "https://x"}}
    wanted = {"status": "closed", "total_amount": "62.50", "supplier": "s1", "u_erp_id": "1042"}
    assert m.differences(current, wanted) == {"status": ("ordered", "closed")}


def test_values_are_written_the_way_servicenow_stores_them() -> None:
    assert (m.money("12.5"), m.money(None), m.number("40.0"), m.number("2.50000")) == ("12.50", "0.00", "40", "2.5")
    assert (m.day("2026-11-03T00:00:00"), m.day(None), m.gl_account("5100|100")) == ("2026-11-03", "", "5100-100")
    assert m.amount({"DocExtCost": "0.0", "ExtCost": "30"}, "ExtCost") == m.amount({"DocExtCost": "30"}, "ExtCost")
    with pytest.raises(ValueError):
        m.money("twelve")


def test_a_vendors_bank_accounts_are_payment_details_named_without_the_account_number() -> None:
    banks = [{"BankID": "B1", "BankName": "PNC Bank", "NameOnAccount": "Valley Steel", "BankAcctNumber": "4400998877",
              "BankIdentifier": "043000096", "CurrencyCode": "USD", "PrimaryBank": True},
             {"BankID": "B2", "BankName": "Old Bank", "BankAcctNumber": "1234", "Inactive": True},
             {"BankID": "B3", "BankName": "No account yet", "BankAcctNumber": " "}]
    document = m.map_supplier(vendor(VendBanks=banks), config()).document
    assert [l.keys for l in document.lines] == [{"bank_account_number": "4400998877"}, {"bank_account_number": "1234"}]
    first, closed = document.lines
    assert first.target["routing_number"] == "043000096" and first.target["primary"] == "true"
    assert first.label == "PNC Bank account ****8877" and "4400998877" not in first.label
    assert first.create and not closed.create and closed.target["active"] == "false"


def test_bank_account_numbers_are_masked_in_audit_structures_even_as_a_change() -> None:
    from mlconnector.redaction import redact

    changes = {"PNC Bank account ****8877 bank_account_number": ["4400998877", "5500998877"],
               "PNC Bank account ****8877 routing_number": ("043000096", "071000013"), "bank_name": "PNC Bank",
               "VendBanks": [{"BankAcctNumber": "4400998877", "IBANCode": "DE89370400440532013000", "BankName": "PNC"}]}
    redacted = redact(changes)
    text = str(redacted)
    assert "4400998877" not in text and "5500998877" not in text and "043000096" not in text and "DE8937" not in text
    assert redacted["bank_name"] == "PNC Bank" and redacted["VendBanks"][0]["BankName"] == "PNC"
    change = {"field": "PNC Bank account ****8877 routing_number", "value": "071000013", "reason": "was '043000096'"}
    assert redact(change) == {"field": change["field"], "value": "***", "reason": "***"}
    assert redact({"field": "phone", "value": "559", "reason": "was '558'"})["value"] == "559"
