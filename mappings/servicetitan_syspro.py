"""ServiceTitan <-> SYSPRO: pure mapping functions and the pair's config model.

Inputs are ServiceTitan records in the vendor's JSON shape, SYSPRO rows as the connector's
models dump them (SQL column names), the integration config and the lookups the task
gathered. Outputs are the connector's write models (`ApInvoiceIn`, `SupplierIn`,
`PurchaseOrderIn`, `InventoryAdjustmentIn`) or ServiceTitan write bodies, with every choice
returned as a decision. No I/O happens here.

Where an AP invoice's vendor and cost come from. A ServiceTitan invoice is the bill to the
customer: it names the customer, the job, the business unit and the items sold, and no
vendor at all. Its items carry both prices: `price`/`total` are what the customer pays
(revenue, the AR side) and `cost`/`totalCost` are what the goods and work cost the company.
So the AP invoice's amounts are each item's `totalCost` (quantity x `cost`), never its
`total`. The vendor is the one ServiceTitan records on the purchase orders raised for the
same job (`purchase-orders?jobId=` -> `vendorId`): the supplier the materials were bought
from. A job with no PO uses `default_supplier`; a job whose POs name several vendors, or
none and no default, is held naming them, released by `set-config`.

Shared fields of the records that move both ways (vendors, purchase orders) are put in one
comparable shape from either side (`vendor_fields`, `supplier_fields`, `st_po_fields`,
`syspro_po_fields`), so `mlconnector.echoes` can tell a change from our own write coming back.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Iterable, Mapping

from pydantic import BaseModel, Field

from connectors.syspro import (ApInvoiceIn, InventoryAdjustmentIn, LedgerLine, PurchaseOrderIn, PurchaseOrderLineIn,
                               SupplierIn)
from mappings.servicetitan_values import money, named, quantity
from mlconnector.config import IntegrationConfig, StrictModel
from mlconnector.decisions import Decision
from mlconnector.echoes import TwoWayRule
from mlconnector.flows import MappedRecord, Nothing
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded

ST, SYSPRO = "servicetitan", "syspro"
INVOICE_NUMBER_MAX = 20  # SYSPRO's AP invoice number length
NOTATION_MAX = 50  # (unconfirmed) SYSPRO notation columns; longer text is cut, never refused
CANCELED_PO = "Canceled"


class StPurchaseOrderDefaults(StrictModel):
    """What ServiceTitan requires on a PO that SYSPRO does not know."""

    type_id: int | None = Field(None, description="ServiceTitan PO type for POs made from SYSPRO (unset: held).")
    business_unit_id: int | None = Field(None, description="ServiceTitan business unit for POs made from SYSPRO.")
    inventory_location_id: int | None = Field(
        None, description="ServiceTitan inventory location when the SYSPRO warehouse is not in `warehouses`.")


class ServiceTitanSysproConfig(IntegrationConfig):
    items: dict[str, str] = Field(
        default_factory=dict,
        description="ServiceTitan SKU id (or SKU name) -> SYSPRO stock code; links of kind `item` are used too. An item "
                    "in neither is held, naming it.")
    ledger_codes: dict[str, str] = Field(
        default_factory=dict,
        description="SYSPRO GL account per ServiceTitan item type (Service, Material, Equipment, ...) and 'default'.")
    branches: dict[str, str] = Field(
        default_factory=dict, description="ServiceTitan business unit id (or name) -> SYSPRO AP branch.")
    default_supplier: str | None = Field(
        None, description="SYSPRO supplier for invoices whose job has no purchase order naming a vendor (unset: held).")
    invoice_prefix: str = Field("ST", description="Prefix of the SYSPRO AP invoice number (then the ServiceTitan "
                                                  "invoice number), 20 characters in all.")
    supplier_code_format: str = Field("ST{id}", description="SYSPRO supplier code made for a ServiceTitan vendor.")
    warehouses: dict[str, str] = Field(
        default_factory=dict, description="ServiceTitan inventory location id -> SYSPRO warehouse (both ways).")
    default_warehouse: str = Field("WH01", description="SYSPRO warehouse for locations not in `warehouses`.")
    st_purchase_orders: StPurchaseOrderDefaults = Field(
        default_factory=StPurchaseOrderDefaults, description="ServiceTitan fields of POs made from SYSPRO.")
    two_way: dict[str, TwoWayRule] = Field(
        default_factory=lambda: {"vendors": TwoWayRule(default="hold"), "purchase_orders": TwoWayRule(default="hold")},
        description="Per two-way entity (vendors, purchase_orders): who wins a field changed on both sides between "
                    "polls: a system (servicetitan, syspro) or 'hold'; `fields` per field.")

    def rule(self, entity: str) -> TwoWayRule:
        return self.two_way.get(entity) or TwoWayRule()


# ---- shared lookups ---------------------------------------------------------------------------


def stock_code(item: Mapping[str, Any], config: ServiceTitanSysproConfig,
               linked: Mapping[str, str]) -> tuple[str | None, str]:
    """The SYSPRO stock code of a ServiceTitan item (by SKU id, then SKU name) and how it was found."""
    sku_id = str(item.get("skuId") or "")
    name = str(item.get("skuName") or item.get("name") or "").strip()
    if sku_id and sku_id in linked:
        return linked[sku_id], f"item link for SKU {sku_id}"
    if sku_id and sku_id in config.items:
        return config.items[sku_id], f"items.{sku_id}"
    if name and name in config.items:
        return config.items[name], f"items['{name}']"
    return None, ""


def unmapped_items_hold(noun: str, items: Iterable[Mapping[str, Any]]) -> Hold:
    missing = list(items)
    named_items = ", ".join(f"SKU {i.get('skuId')} '{i.get('skuName') or i.get('name') or ''}'" for i in missing)
    releases: list[Any] = []
    for item in missing:
        releases += [ConfigNeeded(f"items.{item.get('skuId')}"), LinkNeeded("item", ST, str(item.get("skuId")))]
        if item.get("skuName") or item.get("name"):
            releases.append(ConfigNeeded(f"items.{item.get('skuName') or item.get('name')}"))
    return Hold(reason=f"{noun} has item(s) with no SYSPRO stock code: {named_items}; add them to `items` "
                       f"(mlconnector integrations set-config) or link them (--kind item)",
                releases=tuple(releases),
                decisions=[Decision("item", str(i.get("skuId")), "no SYSPRO stock code") for i in missing])


def _day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).date()


def _cut(text: str, limit: int = NOTATION_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "~"


# ---- invoices -> AP invoices -------------------------------------------------------------------


class SupplierChoice(BaseModel):
    """The SYSPRO supplier an invoice posts to, and why."""

    code: str
    reason: str


def invoice_vendor(invoice: Mapping[str, Any], purchase_orders: Iterable[Mapping[str, Any]]) -> tuple[list[int], str]:
    """The ServiceTitan vendor ids of the job's purchase orders (canceled ones aside)."""
    job = named(invoice.get("job"))
    vendors = sorted({int(po["vendorId"]) for po in purchase_orders
                      if po.get("vendorId") and po.get("status") != CANCELED_PO
                      and (not job.get("id") or po.get("jobId") == job.get("id"))})
    return vendors, f"job {job.get('number') or job.get('id')}"


def technician_of(invoice: Mapping[str, Any], purchase_orders: Iterable[Mapping[str, Any]]) -> str:
    """The technician on the job: the invoice items' technician, else the job PO's."""
    for item in invoice.get("items") or []:
        if item.get("technicianId"):
            return f"tech {item['technicianId']}"
    employee = named(invoice.get("employeeInfo"))
    if employee.get("name"):
        return str(employee["name"])
    for po in purchase_orders:
        if po.get("technicianId"):
            return f"tech {po['technicianId']}"
    return ""


def invoice_number(invoice: Mapping[str, Any], config: ServiceTitanSysproConfig) -> str:
    return f"{config.invoice_prefix}{invoice.get('referenceNumber') or invoice.get('id')}"[:INVOICE_NUMBER_MAX]


def map_invoice(invoice: Mapping[str, Any], config: ServiceTitanSysproConfig, supplier: SupplierChoice,
                linked_items: Mapping[str, str], technician: str) -> MappedRecord | Hold | Nothing:
    """A ServiceTitan job invoice -> one SYSPRO AP invoice (APSTIN) on `supplier`: each item's
    cost (`totalCost`) on the GL account of its item type, its stock code and quantity in the
    line's notation; the business unit's branch and the job and technician on the document."""
    number = invoice_number(invoice, config)
    label = f"invoice {invoice.get('referenceNumber') or invoice.get('id')}"
    decisions = [Decision("supplier", supplier.code, supplier.reason)]
    unit = named(invoice.get("businessUnit"))
    branch = config.branches.get(str(unit.get("id"))) or config.branches.get(str(unit.get("name") or ""))
    if branch is None:
        return Hold(reason=f"{label}: business unit {unit.get('id')} '{unit.get('name') or ''}' has no SYSPRO branch in "
                           f"`branches`", releases=(ConfigNeeded(f"branches.{unit.get('id')}"),
                                                    ConfigNeeded(f"branches.{unit.get('name')}")))
    decisions.append(Decision("branch", branch, f"business unit {unit.get('id')} '{unit.get('name') or ''}'"))
    lines: list[LedgerLine] = []
    missing: list[Mapping[str, Any]] = []
    ledgers_missing: list[str] = []
    for item in invoice.get("items") or []:
        code, how = stock_code(item, config, linked_items)
        if code is None:
            missing.append(item)
            continue
        cost = money(item.get("totalCost")) if item.get("totalCost") not in (None, "") else \
            money(quantity(item.get("quantity")) * money(item.get("cost")))
        kind = str(item.get("type") or "Unspecified")
        ledger = config.ledger_codes.get(kind) or config.ledger_codes.get("default")
        if ledger is None:
            ledgers_missing.append(kind)
            continue
        decisions.append(Decision(f"item {item.get('skuId')}", code,
                                  f"{how}; cost {cost} = totalCost; GL {ledger} for {kind}"))
        if cost == 0:
            continue  # a line that cost nothing owes nothing
        qty = quantity(item.get("quantity"))
        lines.append(LedgerLine(ledger_code=ledger, value=cost,
                                notation=_cut(f"{code} x{qty.normalize():f} {item.get('skuName') or ''}".strip())))
    if missing:
        return unmapped_items_hold(label, missing)
    if ledgers_missing:
        kinds = sorted(set(ledgers_missing))
        return Hold(reason=f"{label}: no SYSPRO GL account for item type(s) {', '.join(kinds)} in `ledger_codes`",
                    releases=tuple(ConfigNeeded(f"ledger_codes.{k}") for k in kinds) + (ConfigNeeded("ledger_codes.default"),))
    total = sum((line.value for line in lines), Decimal("0.00"))
    if total <= 0:
        return Nothing(f"{label} carries no cost to post (its items' totalCost is zero)", decisions)
    job = named(invoice.get("job"))
    notation = _cut(" ".join(p for p in (f"Job {job.get('number')}" if job.get("number") else "", technician,
                                           f"BU {unit.get('name') or unit.get('id')}") if p))
    document = ApInvoiceIn(supplier=supplier.code, invoice=number, value=total, invoice_date=_day(invoice.get("invoiceDate")),
                           due_date=_day(invoice.get("dueDate")), reference=_cut(f"ST {invoice.get('referenceNumber')}", 30),
                           notation=notation, branch=branch, distribution=lines)
    return MappedRecord(document, {"Supplier": supplier.code, "Invoice": number}, decisions)


# ---- vendors <-> suppliers (two-way) ----------------------------------------------------------


VENDOR_FIELDS = ("name", "phone", "email", "street", "city", "state", "zip")


def vendor_fields(vendor: Mapping[str, Any]) -> dict[str, str]:
    """A ServiceTitan vendor's shared fields."""
    address = named(vendor.get("address"))
    contact = named(vendor.get("contactInfo"))
    return {"name": str(vendor.get("name") or "").strip(), "phone": str(contact.get("phone") or "").strip(),
            "email": str(contact.get("email") or "").strip(), "street": str(address.get("street") or "").strip(),
            "city": str(address.get("city") or "").strip(), "state": str(address.get("state") or "").strip(),
            "zip": str(address.get("zip") or "").strip()}


def supplier_fields(supplier: Mapping[str, Any]) -> dict[str, str]:
    """A SYSPRO supplier's shared fields (SupAddr1 street, SupAddr3 city, SupAddr4 state)."""
    def text(name: str) -> str:
        return str(supplier.get(name) or "").strip()

    return {"name": text("SupplierName"), "phone": text("Telephone"), "email": text("Email"),
            "street": text("SupAddr1"), "city": text("SupAddr3"), "state": text("SupAddr4"), "zip": text("SupPostalCode")}


def supplier_in(code: str, fields: Mapping[str, Any]) -> SupplierIn:
    """SYSPRO supplier setup (APSSSP) for the shared fields given; others stay as SYSPRO has them."""
    values: dict[str, Any] = {"supplier": code}
    for ours, theirs in (("name", "name"), ("phone", "telephone"), ("email", "email"), ("zip", "postal_code")):
        if ours in fields:
            values[theirs] = str(fields[ours] or "")[:50]
    if any(k in fields for k in ("street", "city", "state")):
        values["address"] = [str(fields.get("street") or ""), "", str(fields.get("city") or ""),
                             str(fields.get("state") or ""), "USA"]
    return SupplierIn.model_validate(values)


def vendor_body(fields: Mapping[str, Any], current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A ServiceTitan vendor create or PATCH body for the shared fields given."""
    body: dict[str, Any] = {}
    if "name" in fields:
        body["name"] = fields["name"]
    contact = {k: fields[k] for k in ("phone", "email") if k in fields}
    if contact:
        body["contactInfo"] = contact
    address = {k: fields[k] for k in ("street", "city", "state", "zip") if k in fields}
    if address or current is None:
        base = {k: "" for k in ("street", "unit", "city", "state", "zip")} | {"country": "USA"}
        body["address"] = {**base, **named((current or {}).get("address")), **address}
    return body


def supplier_code(vendor_id: Any, config: ServiceTitanSysproConfig) -> str:
    return config.supplier_code_format.format(id=vendor_id)[:15]


# ---- purchase orders (two-way) ----------------------------------------------------------------


def _po_line(code: str, qty: Any, price: Any) -> list[str]:
    return [code.upper(), format(Decimal(str(qty or 0)).normalize(), "f"), format(money(price), "f")]


def st_po_fields(po: Mapping[str, Any], supplier: str, config: ServiceTitanSysproConfig,
                 linked_items: Mapping[str, str]) -> dict[str, Any] | Hold:
    """A ServiceTitan PO's shared fields: its supplier and its lines (stock code, quantity, cost)."""
    lines, missing = [], []
    for item in po.get("items") or []:
        code, _ = stock_code(item, config, linked_items)
        if code is None:
            missing.append(item)
        else:
            lines.append(_po_line(code, item.get("quantity"), item.get("cost")))
    if missing:
        return unmapped_items_hold(f"purchase order {po.get('number')}", missing)
    return {"supplier": supplier, "lines": sorted(lines)}


def syspro_po_fields(po: Mapping[str, Any]) -> dict[str, Any]:
    """A SYSPRO PO's shared fields: its supplier and its stocked lines."""
    lines = [_po_line(str(l.get("MStockCode") or ""), l.get("MOrderQty"), l.get("MPrice"))
             for l in po.get("lines") or [] if l.get("MStockCode")]
    return {"supplier": str(po.get("Supplier") or "").strip(), "lines": sorted(lines)}


def warehouse_for(location_id: Any, config: ServiceTitanSysproConfig) -> str:
    return config.warehouses.get(str(location_id)) or config.default_warehouse


def syspro_po_in(po: Mapping[str, Any], fields: Mapping[str, Any], config: ServiceTitanSysproConfig) -> PurchaseOrderIn:
    """PORTOI for a ServiceTitan PO: found again by its ServiceTitan number (the reference)."""
    warehouse = warehouse_for(po.get("inventoryLocationId"), config)
    return PurchaseOrderIn(
        supplier=fields["supplier"], reference=str(po.get("number") or po.get("id")), order_date=_day(po.get("date")),
        due_date=_day(po.get("requiredOn")), warehouse=warehouse,
        lines=[PurchaseOrderLineIn(stock_code=code, quantity=Decimal(qty), price=Decimal(price), warehouse=warehouse)
               for code, qty, price in fields["lines"]])


def st_po_body(po: Mapping[str, Any], vendor_id: int, config: ServiceTitanSysproConfig) -> dict[str, Any] | Hold:
    """A ServiceTitan PO create body for a SYSPRO PO; SKUs by the item map read backwards."""
    defaults = config.st_purchase_orders
    label = f"SYSPRO PO {po.get('PurchaseOrder')}"
    if defaults.type_id is None or defaults.business_unit_id is None:
        return Hold(reason=f"{label}: set st_purchase_orders.type_id and business_unit_id to make ServiceTitan POs",
                    releases=(ConfigNeeded("st_purchase_orders.type_id"), ConfigNeeded("st_purchase_orders.business_unit_id")))
    by_code = {}
    for key, code in config.items.items():
        if key.isdigit():
            by_code.setdefault(code.upper(), int(key))
    locations = {w.upper(): int(k) for k, w in config.warehouses.items() if k.isdigit()}
    location = locations.get(str(po.get("Warehouse") or "").upper(), defaults.inventory_location_id)
    if location is None:
        return Hold(reason=f"{label}: warehouse {po.get('Warehouse')} has no ServiceTitan inventory location",
                    releases=(ConfigNeeded("warehouses"), ConfigNeeded("st_purchase_orders.inventory_location_id")))
    items, missing = [], []
    for line in po.get("lines") or []:
        code = str(line.get("MStockCode") or "").strip()
        if not code:
            continue
        if code.upper() not in by_code:
            missing.append(code)
            continue
        items.append({"skuId": by_code[code.upper()], "description": str(line.get("MStockDes") or code),
                      "vendorPartNumber": "", "quantity": float(Decimal(str(line.get("MOrderQty") or 0))),
                      "cost": float(money(line.get("MPrice")))})
    if missing:
        return Hold(reason=f"{label}: stock code(s) {', '.join(missing)} have no ServiceTitan SKU in `items`",
                    releases=tuple(ConfigNeeded(f"items.{c}") for c in missing) + (ConfigNeeded("items"),))
    when = (_day(po.get("OrderEntryDate")) or date.today()).isoformat() + "T00:00:00Z"
    due = (_day(po.get("OrderDueDate")) or _day(po.get("OrderEntryDate")) or date.today()).isoformat() + "T00:00:00Z"
    return {"vendorId": vendor_id, "typeId": defaults.type_id, "businessUnitId": defaults.business_unit_id,
            "inventoryLocationId": location, "date": when, "requiredOn": due, "impactsTechnicianPayroll": False,
            "tax": 0, "shipping": 0, "memo": f"SYSPRO PO {po.get('PurchaseOrder')}",
            "shipTo": {"description": str(po.get("Warehouse") or ""),
                       "address": {"street": "", "unit": "", "city": "", "state": "", "zip": "", "country": "USA"}},
            "items": items}


# ---- inventory adjustments --------------------------------------------------------------------


def adjustment_reference(adjustment_id: Any, item_id: Any) -> str:
    """The reference a posted movement carries: found again by it, never posted twice."""
    return f"STADJ{adjustment_id}/{item_id}"


def map_adjustment(adjustment: Mapping[str, Any], config: ServiceTitanSysproConfig,
                   linked_items: Mapping[str, str]) -> list[InventoryAdjustmentIn] | Hold | Nothing:
    """A ServiceTitan inventory adjustment -> one SYSPRO stock adjustment per item, in the
    warehouse its inventory location maps to."""
    label = f"adjustment {adjustment.get('number') or adjustment.get('id')}"
    if adjustment.get("active") is False:
        return Nothing(f"{label} is canceled in ServiceTitan")
    warehouse = warehouse_for(adjustment.get("inventoryLocationId"), config)
    posts, missing = [], []
    for item in adjustment.get("items") or []:
        code, _ = stock_code({"skuId": item.get("skuId"), "skuName": item.get("name")}, config, linked_items)
        if code is None:
            missing.append({"skuId": item.get("skuId"), "skuName": item.get("name")})
            continue
        qty = quantity(item.get("quantity"))
        if qty == 0:
            continue
        posts.append(InventoryAdjustmentIn(stock_code=code, warehouse=warehouse, quantity=qty,
                                           reference=adjustment_reference(adjustment.get("id"), item.get("id")),
                                           notation=_cut(f"ST {label} {adjustment.get('memo') or ''}".strip()),
                                           transaction_date=_day(adjustment.get("date"))))
    if missing:
        return unmapped_items_hold(label, missing)
    if not posts:
        return Nothing(f"{label} changes no quantity")
    return posts
