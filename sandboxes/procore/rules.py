"""Procore's resources: for each, how it is written (writable fields, defaults, and the business
rules: required fields, references, uniqueness within a project, numbering, status moves and
line pricing; each rule adds to a field error map) and its JSON shape (string money, nested
references, derived totals)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Callable, Mapping

from flask import request

from .store import ANY
from .values import (COST_CODE_FIELDS, DC_FIELDS, DC_TYPES, LINE_FIELDS, LINE_ITEM_TYPE_FIELDS, PO_FIELDS,
                     PO_LOCKED_FROM_DRAFT, PROJECT_FIELDS, VENDOR_FIELDS, Fields, iso, money)

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]
Errors = dict[str, list[str]]
PO_SHORT_DROPS = ("bill_to_address", "ship_to_address", "ship_via", "origin_data", "letter_of_intent_date",
                  "approval_letter_date", "returned_date", "signed_contract_received_date")


def _add(errors: Errors, name: str, message: str) -> None:
    errors.setdefault(name, []).append(message)


def _required(row: Mapping[str, Any], errors: Errors, *names: str) -> None:
    for name in names:
        if row.get(name) is None or (isinstance(row.get(name), str) and not row[name].strip()):
            _add(errors, name, "can't be blank")


def _reference(sb: "ProcoreSandbox", row: Row, errors: Errors, name: str, table: str, scope: Any = ANY) -> None:
    """`name`, when given, must be the id of a live record of `table` (in `scope`)."""
    if row.get(name) is not None and sb.tables[table].live(row[name], scope) is None:
        _add(errors, name, "is invalid")


def _taken(sb: "ProcoreSandbox", table: str, scope: int | None, current: Row | None,
           same: Callable[[Row], bool]) -> bool:
    """Whether another live row of the scope matches `same`."""
    return any(same(other) and (current is None or other["id"] != current["id"])
               for other in sb.tables[table].children(scope))


def validate_vendor(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, errors, "name")
    if row.get("name") and len(row["name"]) > 255:
        _add(errors, "name", "is too long (maximum is 255 characters)")
    if row.get("country_code") and not re.fullmatch(r"[A-Za-z]{2}", row["country_code"]):
        _add(errors, "country_code", "is invalid")
    if row.get("email_address") and "@" not in row["email_address"]:
        _add(errors, "email_address", "is invalid")
    _reference(sb, row, errors, "parent_id", "vendors")


def validate_project(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, errors, "name")


def validate_po(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _reference(sb, row, errors, "vendor_id", "vendors")
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


def validate_line(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors, *,
                  holder_table: str) -> None:
    holder = sb.tables[holder_table].row(scope)
    _reference(sb, row, errors, "cost_code_id", "cost_codes", holder["_scope"] if holder else None)
    _reference(sb, row, errors, "line_item_type_id", "line_item_types")
    if row.get("wbs_code_id") is not None:
        _add(errors, "wbs_code_id", "is invalid")  # no WBS codes are configured here
    if current is None and holder_table == "direct_costs" and row.get("wbs_code_id") is None:
        # Direct cost lines need a WBS code, or a cost code and a line item type.
        _required(row, errors, "cost_code_id", "line_item_type_id")
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
        _required(row, errors, "direct_cost_type")
        if row.get("direct_cost_type") and row["direct_cost_type"] not in kinds:
            _add(errors, "direct_cost_type", "is not included in the list")
    if row.get("direct_cost_type") in ("invoice", "subcontractor_invoice"):
        _required(row, errors, "invoice_number", "vendor_id")
    _reference(sb, row, errors, "vendor_id", "vendors")
    if row.get("invoice_number") and row.get("vendor_id") is not None and _taken(
            sb, "direct_costs", scope, current,
            lambda o: o["invoice_number"] == row["invoice_number"] and o["vendor_id"] == row["vendor_id"]):
        _add(errors, "invoice_number", "has already been taken for this vendor")


def validate_cost_code(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None, errors: Errors) -> None:
    _required(row, errors, "name", "code")
    _reference(sb, row, errors, "parent_id", "cost_codes", scope)
    if _taken(sb, "cost_codes", scope, current,
              lambda o: o["code"] == row.get("code") and o.get("parent_id") == row.get("parent_id")):
        _add(errors, "code", "has already been taken")


def validate_line_item_type(sb: "ProcoreSandbox", row: Row, current: Row | None, scope: int | None,
                            errors: Errors) -> None:
    """(Round 2) A company's own list: any code, a base_type from the documented set."""
    _required(row, errors, "code", "name", "base_type")
    if row.get("code") and _taken(sb, "line_item_types", None, current, lambda o: o["code"] == row["code"]):
        _add(errors, "code", "has already been taken")


@dataclass(frozen=True)
class Kind:
    """How one resource type is written: its table, writable fields, defaults and rules."""

    table: str
    fields: Fields
    defaults: dict[str, Any]
    validate: Callable[..., None]
    model: str = ""  # the name in a 404's message
    filled: dict[str, Any] = field(default_factory=dict)  # values that replace a None once the rules pass
    in_project: bool = False  # records of a project (else of the company, or of their holder)
    parent_table: str | None = None  # line items touch their holder when they change
    parent_key: str = ""  # the attribute naming a line's holder
    lines: str = ""  # the kind of a holder's line items


KINDS: dict[str, Kind] = {
    "vendor": Kind("vendors", VENDOR_FIELDS, {"is_active": True, "trade_ids": [], "standard_cost_code_ids": []},
                   validate_vendor, "Vendor", {"is_active": True}),
    "project": Kind("projects", PROJECT_FIELDS, {"active": True, "country_code": "US"}, validate_project, "Project",
                    {"active": True}),
    "po": Kind("purchase_order_contracts", PO_FIELDS,
               {"executed": False, "private": False, "accounting_method": "amount"}, validate_po,
               "PurchaseOrderContract", {"status": "Draft"}, in_project=True, lines="po_line"),
    "po_line": Kind("purchase_order_line_items", LINE_FIELDS, {},
                    functools.partial(validate_line, holder_table="purchase_order_contracts"),
                    parent_table="purchase_order_contracts", parent_key="purchase_order_contract_id"),
    "dc": Kind("direct_costs", DC_FIELDS, {}, validate_dc, "DirectCostItem", {"status": "draft"}, in_project=True,
               lines="dc_line"),
    "dc_line": Kind("direct_cost_line_items", LINE_FIELDS, {},
                    functools.partial(validate_line, holder_table="direct_costs"),
                    parent_table="direct_costs", parent_key="direct_cost_id"),
    "line_item_type": Kind("line_item_types", LINE_ITEM_TYPE_FIELDS, {}, validate_line_item_type, "LineItemType"),
    "cost_code": Kind("cost_codes", COST_CODE_FIELDS, {}, validate_cost_code, "CostCode", in_project=True),
}
CONTROL_ENTITIES: dict[str, str] = {kind.table: name for name, kind in KINDS.items()}


class Renderer:
    """The answers of one sandbox (they name its company and follow its settings)."""

    def __init__(self, sb: "ProcoreSandbox") -> None:
        self.sb = sb

    def ref(self, table: str, rid: Any) -> Row | None:
        """The record (soft-deleted or not) a row's `rid` names, if it names one."""
        return self.sb.tables[table].row(rid) if rid else None

    def public(self, row: Row, fields: Fields, hidden: tuple[str, ...] = ()) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"]}
        for name in fields:
            if name not in hidden:
                value = row.get(name)
                out[name] = money(value) if isinstance(value, Decimal) else value
        out["created_at"] = iso(row["_created"])
        out["updated_at"] = iso(row["_updated"])
        return out

    def company(self) -> dict[str, Any]:
        return {**self.company_ref(), "is_active": True}

    def company_ref(self) -> dict[str, Any]:
        return {"id": self.sb.company_id, "name": self.sb.company_name}

    def vendor(self, row: Row) -> dict[str, Any]:
        return {**self.public(row, VENDOR_FIELDS), "synced_to_erp": bool(row.get("origin_id")),
                "company": self.company_ref(), "primary_contact": None, "vendor_group": None,
                "business_register": None, "attachments": [], "erp_custom_fields": {}}

    def project(self, row: Row) -> dict[str, Any]:
        return {**self.public(row, PROJECT_FIELDS),
                "display_name": f"{row.get('project_number') or ''} - {row['name']}".strip(" -"),
                "company": self.company_ref(), "project_stage": {"id": 3, "name": "Course of Construction"}}

    def cost_code(self, row: Row) -> dict[str, Any]:
        parent, full = self.ref("cost_codes", row.get("parent_id")), self.full_code(row)
        return {**self.public(row, COST_CODE_FIELDS, ("parent_id",)),
                "parent": {"id": parent["id"]} if parent else None, "full_code": full, "sortable_code": full,
                "biller": "Project", "biller_id": row["_scope"], "biller_type": "Project", "budgeted": False,
                "line_item_types": [], "deleted_at": iso(row["_deleted"])}

    def full_code(self, row: Row) -> str:
        parts, seen, parent_id = [str(row["code"])], {row["id"]}, row.get("parent_id")
        while parent_id and parent_id not in seen:
            parent = self.sb.tables["cost_codes"].row(parent_id)
            if parent is None:
                break
            parts.append(str(parent["code"]))
            seen.add(parent_id)
            parent_id = parent.get("parent_id")
        return "-".join(reversed(parts))

    def line_item_type(self, row: Row) -> dict[str, Any]:
        return {"id": row["id"], "code": row["code"], "name": row["name"], "base_type": row["base_type"],
                "origin_id": row.get("origin_id"), "origin_data": row.get("origin_data")}

    def line(self, row: Row) -> dict[str, Any]:
        amount = money(row.get("amount") or Decimal(0))
        code = self.ref("cost_codes", row.get("cost_code_id"))
        kind = self.ref("line_item_types", row.get("line_item_type_id"))
        return {**self.public(row, LINE_FIELDS), "total_amount": amount, "extended_amount": amount,
                "position": row.get("position"),
                "cost_code": {"id": code["id"], "name": code["name"], "full_code": self.full_code(code)}
                if code else None,
                "line_item_type": self.line_item_type(kind) if kind else None, "wbs_code": None}

    def lines(self, table: str, row: Row) -> tuple[list[Row], str | None]:
        """A holder's line items and the money total of their amounts."""
        lines = self.sb.tables[table].children(row["id"])
        return lines, money(sum((line.get("amount") or Decimal(0) for line in lines), Decimal(0)))

    def po(self, row: Row, extended: bool = True) -> dict[str, Any]:
        vendor, project = self.ref("vendors", row.get("vendor_id")), self.sb.tables["projects"].row(row["_scope"])
        lines, total = self.lines("purchase_order_line_items", row)
        out = {
            **self.public(row, PO_FIELDS, ("vendor_id", "assignee_id") + (() if extended else PO_SHORT_DROPS)),
            "vendor": {"id": vendor["id"], "company": vendor["name"]} if vendor else None,
            "project": {"id": project["id"], "name": project["name"]},
            "assignee": {"id": row["assignee_id"]} if row.get("assignee_id") else None,
            "grand_total": total, "revised_contract": total, "pending_change_orders": "0.0",
            "approved_change_orders": "0.0", "draft_change_orders_amount": "0.0", "pending_revised_contract": total,
            "total_payments": "0.0", "remaining_balance_outstanding": total, "percentage_paid": "0.0",
            "deleted_at": iso(row["_deleted"]),
        }
        if self.sb.settings.po_status_style == "snake" and out.get("status"):
            out["status"] = out["status"].lower().replace(" ", "_")
        return {**out, "line_items": [self.line(line) for line in lines]} if extended else out

    def dc(self, row: Row, extended: bool = True) -> dict[str, Any]:
        vendor = self.ref("vendors", row.get("vendor_id"))
        lines, total = self.lines("direct_cost_line_items", row)
        out = {
            **self.public(row, DC_FIELDS), "vendor": {"id": vendor["id"], "name": vendor["name"]} if vendor else None,
            "vendor_name": vendor["name"] if vendor else None, "employee": None, "grand_total": total,
            "line_items_count": len(lines), "attachments": [], "attachments_count": 0,
            "currency_configuration": {"currency_iso_code": row.get("currency_iso_code") or "USD"},
            "deleted_at": iso(row["_deleted"]),
        }
        return {**out, "line_items": [self.line(line) for line in lines]} if extended else out

    def answer(self, kind_name: str, row: Row, *, listed: bool = False) -> dict[str, Any]:
        """A record as a write or a show answers it, or (`listed`) as a list shows it: there a
        commitment or direct cost has its lines only in the extended view, and a line no holder id."""
        kind = KINDS[kind_name]
        if kind.parent_key:
            return self.line(row) if listed else {**self.line(row), kind.parent_key: row["_scope"]}
        if kind.lines:
            return getattr(self, kind_name)(row, not listed or request.args.get("view") == "extended")
        return getattr(self, kind_name)(row)  # type: ignore[no-any-return]

    def control(self, entity: str, row: Row) -> dict[str, Any]:
        """A record as the control API shows it: its scope and deletion always named."""
        kind_name = CONTROL_ENTITIES[entity]
        if kind_name == "line_item_type":
            return self.line_item_type(row)
        out = self.answer(kind_name, row)
        if KINDS[kind_name].in_project:
            out["project_id"] = row["_scope"]
        out.setdefault("deleted_at", iso(row["_deleted"]))
        return out
