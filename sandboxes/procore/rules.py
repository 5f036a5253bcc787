"""Procore's business rules per resource: required fields, references, uniqueness within a
project, numbering, status moves and line pricing. Each rule adds to a field error map."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .values import (COST_CODE_FIELDS, DC_FIELDS, DC_TYPES, LINE_FIELDS, LINE_ITEM_TYPE_FIELDS, PO_FIELDS,
                     PO_LOCKED_FROM_DRAFT, PROJECT_FIELDS, VENDOR_FIELDS, Fields)

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]
Errors = dict[str, list[str]]


def _add(errors: Errors, name: str, message: str) -> None:
    errors.setdefault(name, []).append(message)


def _required(row: Mapping[str, Any], name: str, errors: Errors) -> None:
    if row.get(name) is None or (isinstance(row.get(name), str) and not row[name].strip()):
        _add(errors, name, "can't be blank")


def _taken(sb: "ProcoreSandbox", table: str, scope: int | None, current: Row | None, same: Callable[[Row], bool]) -> bool:
    """Whether another live row of the scope matches `same`."""
    return any(same(other) and (current is None or other["id"] != current["id"]) for other in sb.tables[table].children(scope))


def validate_vendor(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, "name", errors)
    if row.get("name") and len(row["name"]) > 255:
        _add(errors, "name", "is too long (maximum is 255 characters)")
    if row.get("country_code") and not re.fullmatch(r"[A-Za-z]{2}", row["country_code"]):
        _add(errors, "country_code", "is invalid")
    if row.get("email_address") and "@" not in row["email_address"]:
        _add(errors, "email_address", "is invalid")
    if row.get("parent_id") is not None and sb.tables["vendors"].live(row["parent_id"]) is None:
        _add(errors, "parent_id", "is invalid")
    if row.get("is_active") is None:
        row["is_active"] = True


def validate_project(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, "name", errors)
    if row.get("active") is None:
        row["active"] = True


def validate_po(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    if row.get("vendor_id") is not None and sb.tables["vendors"].live(row["vendor_id"]) is None:
        _add(errors, "vendor_id", "is invalid")
    if not row.get("number"):
        if current is None:  # Procore numbers a commitment itself when none is given
            taken = {s["number"] for s in sb.tables["purchase_order_contracts"].children(scope)}
            serial = len(sb.tables["purchase_order_contracts"].scan(scope)) + 1
            while str(serial) in taken:
                serial += 1
            row["number"] = str(serial)
        else:
            _add(errors, "number", "can't be blank")
    elif _taken(sb, "purchase_order_contracts", scope, current, lambda s: s["number"] == row["number"]):
        _add(errors, "number", "has already been taken")
    if current is not None and current.get("status") in PO_LOCKED_FROM_DRAFT and row.get("status") == "Draft":
        _add(errors, "status", f"cannot change from {current['status']} to Draft")
    percent = row.get("retainage_percent")
    if percent is not None and not (Decimal(0) <= percent <= Decimal(100)):
        _add(errors, "retainage_percent", "must be between 0 and 100")
    if row.get("status") is None:
        row["status"] = "Draft"


def _validate_line(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors,
                   holder_table: str) -> None:
    holder = sb.tables[holder_table].row(scope)
    project_id = holder["_scope"] if holder else None
    code_id = row.get("cost_code_id")
    if code_id is not None and sb.tables["cost_codes"].live(code_id, project_id) is None:
        _add(errors, "cost_code_id", "is invalid")
    if row.get("line_item_type_id") is not None and sb.tables["line_item_types"].live(row["line_item_type_id"]) is None:
        _add(errors, "line_item_type_id", "is invalid")
    if row.get("wbs_code_id") is not None:
        _add(errors, "wbs_code_id", "is invalid")  # no WBS codes are configured here
    if current is None and holder_table == "direct_costs" and row.get("wbs_code_id") is None:
        # Direct cost lines need a WBS code, or a cost code and a line item type.
        if code_id is None:
            _add(errors, "cost_code_id", "can't be blank")
        if row.get("line_item_type_id") is None:
            _add(errors, "line_item_type_id", "can't be blank")
    quantity, unit_cost = row.get("quantity"), row.get("unit_cost")
    changed = row.get("_changed", set())
    if "extended_type" not in changed:
        # Sending an amount alone makes a line manual; sending quantity and unit cost alone
        # makes it calculated; otherwise the line keeps what it was.
        priced = quantity is not None and unit_cost is not None
        if "amount" in changed and not {"quantity", "unit_cost"} & changed:
            row["extended_type"] = "manual"
        elif {"quantity", "unit_cost"} & changed and "amount" not in changed and priced:
            row["extended_type"] = "calculated"
        elif current is None:
            row["extended_type"] = "calculated" if priced and row.get("amount") is None else "manual"
    if row["extended_type"] == "calculated":
        if quantity is None or unit_cost is None:
            _add(errors, "extended_type", "calculated needs quantity and unit_cost")
        else:
            row["amount"] = (quantity * unit_cost).quantize(Decimal("0.01"))
    elif row.get("amount") is None:
        row["amount"] = Decimal(0)


def validate_dc(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    kinds = DC_TYPES + (("subcontractor_invoice",) if sb.settings.subcontractor_invoice_enabled else ())
    if current is None:
        _required(row, "direct_cost_type", errors)
        if row.get("direct_cost_type") and row["direct_cost_type"] not in kinds:
            _add(errors, "direct_cost_type", "is not included in the list")
    if row.get("direct_cost_type") in ("invoice", "subcontractor_invoice"):
        _required(row, "invoice_number", errors)
        _required(row, "vendor_id", errors)
    if row.get("vendor_id") is not None and sb.tables["vendors"].live(row["vendor_id"]) is None:
        _add(errors, "vendor_id", "is invalid")
    if row.get("invoice_number") and row.get("vendor_id") is not None and _taken(
            sb, "direct_costs", scope, current,
            lambda o: o["invoice_number"] == row["invoice_number"] and o["vendor_id"] == row["vendor_id"]):
        _add(errors, "invoice_number", "has already been taken for this vendor")
    if row.get("status") is None:
        row["status"] = "draft"


def validate_cost_code(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, "name", errors)
    _required(row, "code", errors)
    parent_id = row.get("parent_id")
    if parent_id is not None and sb.tables["cost_codes"].live(parent_id, scope) is None:
        _add(errors, "parent_id", "is invalid")
    if _taken(sb, "cost_codes", scope, current,
              lambda o: o["code"] == row.get("code") and o.get("parent_id") == parent_id):
        _add(errors, "code", "has already been taken")


def validate_line_item_type(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None,
                            errors: Errors) -> None:
    """(Round 2) A company's own list: any code, a base_type from the documented set."""
    for name in ("code", "name", "base_type"):
        _required(row, name, errors)
    if row.get("code") and _taken(sb, "line_item_types", None, current, lambda o: o["code"] == row["code"]):
        _add(errors, "code", "has already been taken")


@dataclass(frozen=True)
class Kind:
    """How one resource type is written: its table, writable fields, defaults and rules."""

    table: str
    fields: Fields
    defaults: dict[str, Any]
    validate: Callable[["ProcoreSandbox", Row, Row | None, int | None, Errors], None]
    parent_table: str | None = None  # line items touch their holder when they change
    model: str = ""  # the name in a 404's message


def _line_rules(holder_table: str) -> Callable[["ProcoreSandbox", Row, Row | None, int | None, Errors], None]:
    return lambda sb, row, current, scope, errors: _validate_line(sb, row, current, scope, errors, holder_table)


KINDS: dict[str, Kind] = {
    "vendor": Kind("vendors", VENDOR_FIELDS, {"is_active": True, "trade_ids": [], "standard_cost_code_ids": []},
                   validate_vendor, model="Vendor"),
    "project": Kind("projects", PROJECT_FIELDS, {"active": True, "country_code": "US"}, validate_project, model="Project"),
    "po": Kind("purchase_order_contracts", PO_FIELDS, {"executed": False, "private": False, "accounting_method": "amount"},
               validate_po, model="PurchaseOrderContract"),
    "po_line": Kind("purchase_order_line_items", LINE_FIELDS, {}, _line_rules("purchase_order_contracts"),
                    parent_table="purchase_order_contracts"),
    "dc": Kind("direct_costs", DC_FIELDS, {}, validate_dc, model="DirectCostItem"),
    "dc_line": Kind("direct_cost_line_items", LINE_FIELDS, {}, _line_rules("direct_costs"), parent_table="direct_costs"),
    "line_item_type": Kind("line_item_types", LINE_ITEM_TYPE_FIELDS, {}, validate_line_item_type, model="LineItemType"),
    "cost_code": Kind("cost_codes", COST_CODE_FIELDS, {}, validate_cost_code, model="CostCode"),
}
CONTROL_ENTITIES: dict[str, str] = {kind.table: name for name, kind in KINDS.items()}
