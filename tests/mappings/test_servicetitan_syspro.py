"""ServiceTitan <-> SYSPRO mapping: pure functions, no I/O."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from connectors.syspro import ApInvoiceIn
from mappings import servicetitan_syspro as m
from mlconnector.flows import MappedRecord, Nothing
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded

SUPPLIER = m.SupplierChoice(code="ST511", reason="vendorId 511 of the purchase order of job 20001")


def config(**overrides: Any) -> m.ServiceTitanSysproConfig:
    base = {"systems": {}, "items": {"8801": "CU-00001", "Diagnostic Fee": "SVC-DIAG"},
            "ledger_codes": {"Material": "10-5500", "Service": "30-6100"}, "branches": {"7": "02"}}
    return m.ServiceTitanSysproConfig.model_validate({**base, **overrides})


def invoice(*items: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": 30_101, "referenceNumber": "20101", "invoiceDate": "2026-12-07T16:00:00Z", "dueDate": "2027-01-06T00:00:00Z",
            "total": "999.99", "subTotal": "950.00", "businessUnit": {"id": 7, "name": "HVAC Service"},
            "job": {"id": 20_001, "number": "20001", "type": "Service"}, "items": list(items), **fields}


MATERIAL = {"skuId": 8801, "skuName": "Copper Line Set", "type": "Material", "quantity": "2.00", "cost": "38.00",
            "totalCost": "76.00", "price": "62.70", "total": "125.40", "technicianId": 41}
LABOUR = {"skuId": 7001, "skuName": "Diagnostic Fee", "type": "Service", "quantity": "1.00", "cost": "45.00",
          "totalCost": "45.00", "price": "89.00", "total": "89.00"}


def test_the_ap_invoice_carries_item_costs_not_prices_on_gl_accounts_by_type_with_branch_job_and_technician() -> None:
    mapped = m.map_invoice(invoice(MATERIAL, LABOUR), config(), SUPPLIER, {}, "tech 41")
    assert isinstance(mapped, MappedRecord)
    document: ApInvoiceIn = mapped.document  # type: ignore[assignment]
    assert document.supplier == "ST511" and document.invoice == "ST20101"
    assert document.value == Decimal("121.00")  # 76 + 45: totalCost, never total/price (what the customer pays)
    assert [(l.ledger_code, l.value) for l in document.distribution] == [("10-5500", Decimal("76.00")),
                                                                          ("30-6100", Decimal("45.00"))]
    assert document.distribution[0].notation.startswith("CU-00001 x2 Copper")
    assert document.branch == "02" and "Job 20001" in document.notation and "tech 41" in document.notation
    assert mapped.external_key == {"Supplier": "ST511", "Invoice": "ST20101"}
    assert any(d.field == "supplier" and "vendorId 511" in d.reason for d in mapped.decisions)


def test_an_unmapped_item_is_a_hold_naming_it_released_by_its_config_key_or_an_item_link() -> None:
    leak = {**LABOUR, "skuId": 7099, "skuName": "Gas Leak Detection"}
    held = m.map_invoice(invoice(MATERIAL, leak), config(), SUPPLIER, {}, "")
    assert isinstance(held, Hold) and "SKU 7099 'Gas Leak Detection'" in held.reason
    assert ConfigNeeded("items.7099") in held.releases and LinkNeeded("item", "servicetitan", "7099") in held.releases
    linked = m.map_invoice(invoice(MATERIAL, leak), config(), SUPPLIER, {"7099": "SVC-LEAK"}, "")
    assert isinstance(linked, MappedRecord)


def test_a_business_unit_without_branch_or_an_item_type_without_gl_account_is_held() -> None:
    no_branch = m.map_invoice(invoice(MATERIAL, businessUnit={"id": 9, "name": "Plumbing"}), config(), SUPPLIER, {}, "")
    assert isinstance(no_branch, Hold) and ConfigNeeded("branches.9") in no_branch.releases
    equipment = {**MATERIAL, "type": "Equipment"}
    no_gl = m.map_invoice(invoice(equipment), config(), SUPPLIER, {}, "")
    assert isinstance(no_gl, Hold) and "Equipment" in no_gl.reason
    assert isinstance(m.map_invoice(invoice(equipment), config(ledger_codes={"default": "10-5500"}), SUPPLIER, {}, ""),
                      MappedRecord)


def test_an_invoice_that_cost_nothing_posts_nothing() -> None:
    free = {**LABOUR, "cost": "0.00", "totalCost": "0.00"}
    assert isinstance(m.map_invoice(invoice(free), config(), SUPPLIER, {}, ""), Nothing)


def test_the_vendor_is_the_job_purchase_orders_vendor() -> None:
    pos = [{"id": 1, "jobId": 20_001, "vendorId": 511, "status": "Received", "technicianId": 9},
           {"id": 2, "jobId": 20_001, "vendorId": 512, "status": "Canceled"},
           {"id": 3, "jobId": 99, "vendorId": 513, "status": "Sent"}]
    vendors, where = m.invoice_vendor(invoice(MATERIAL), pos)
    assert vendors == [511] and where == "job 20001"
    assert m.technician_of(invoice(LABOUR), pos) == "tech 9"


def test_shared_fields_read_alike_from_either_side() -> None:
    vendor = {"id": 511, "name": "Acme Supply Co", "contactInfo": {"phone": "559-555-0100", "email": "ap@acme.example"},
              "address": {"street": "100 Industrial Pkwy", "city": "Fresno", "state": "CA", "zip": "93725"}}
    fields = m.vendor_fields(vendor)
    setup = m.supplier_in("ST511", fields)
    supplier = {"Supplier": "ST511", **{tag: value for tag, value in setup.elements()}}
    assert m.supplier_fields(supplier) == fields
    body = m.vendor_body(m.supplier_fields(supplier))
    assert m.vendor_fields({"id": 1, **body}) == fields

    po = {"number": "PO-1", "vendorId": 511, "items": [{"skuId": 8801, "quantity": 4.0, "cost": 38.0}]}
    st_side = m.st_po_fields(po, "ST511", config(), {})
    sy_side = m.syspro_po_fields({"Supplier": "ST511", "lines": [{"MStockCode": "CU-00001", "MOrderQty": "4.000000",
                                                                  "MPrice": "38.00000"}]})
    assert st_side == sy_side == {"supplier": "ST511", "lines": [["CU-00001", "4", "38.00"]]}


def test_adjustments_become_one_stock_adjustment_per_item_found_again_by_reference() -> None:
    adjustment = {"id": 30_001, "number": "ADJ-1", "active": True, "inventoryLocationId": 12, "date": "2026-12-07T10:00:00Z",
                  "items": [{"id": 5, "skuId": 8801, "name": "Copper", "quantity": -3}, {"id": 6, "skuId": 8801, "quantity": 0}]}
    posts = m.map_adjustment(adjustment, config(warehouses={"12": "VAN1"}), {})
    assert isinstance(posts, list) and len(posts) == 1
    assert (posts[0].stock_code, posts[0].warehouse, posts[0].quantity, posts[0].reference) == \
        ("CU-00001", "VAN1", Decimal("-3"), "STADJ30001/5")
    assert isinstance(m.map_adjustment({**adjustment, "active": False}, config(), {}), Nothing)
