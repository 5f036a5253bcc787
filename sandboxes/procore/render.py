"""Procore's JSON shapes of each resource: string money, nested references, derived totals."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .rules import CONTROL_ENTITIES
from .values import COST_CODE_FIELDS, DC_FIELDS, LINE_FIELDS, PO_FIELDS, PROJECT_FIELDS, VENDOR_FIELDS, iso, money

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = Mapping[str, Any]
PO_SHORT_DROPS = ("bill_to_address", "ship_to_address", "ship_via", "origin_data", "letter_of_intent_date",
                  "approval_letter_date", "returned_date", "signed_contract_received_date")


class Renderer:
    """The answers of one sandbox (they name its company and follow its settings)."""

    def __init__(self, sb: "ProcoreSandbox") -> None:
        self.sb = sb

    @property
    def tables(self) -> Any:
        return self.sb.tables

    def public(self, row: Row, fields: Iterable[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"id": row["id"]}
        for name in fields:
            value = row.get(name)
            out[name] = money(value) if isinstance(value, Decimal) else value
        out["created_at"] = iso(row["_created"])
        out["updated_at"] = iso(row["_updated"])
        return out

    def company(self) -> dict[str, Any]:
        return {"id": self.sb.company_id, "name": self.sb.company_name, "is_active": True}

    def vendor(self, row: Row) -> dict[str, Any]:
        return {**self.public(row, VENDOR_FIELDS), "synced_to_erp": bool(row.get("origin_id")),
                "company": {"id": self.sb.company_id, "name": self.sb.company_name}, "primary_contact": None,
                "vendor_group": None, "business_register": None, "attachments": [], "erp_custom_fields": {}}

    def project(self, row: Row) -> dict[str, Any]:
        return {**self.public(row, PROJECT_FIELDS),
                "display_name": f"{row.get('project_number') or ''} - {row['name']}".strip(" -"),
                "company": {"id": self.sb.company_id, "name": self.sb.company_name},
                "project_stage": {"id": 3, "name": "Course of Construction"}}

    def cost_code(self, row: Row) -> dict[str, Any]:
        out = self.public(row, COST_CODE_FIELDS)
        parent = self.tables["cost_codes"].row(row["parent_id"]) if row.get("parent_id") else None
        out.pop("parent_id", None)
        full = self.full_code(row)
        out.update({"parent": {"id": parent["id"]} if parent else None, "full_code": full, "sortable_code": full,
                    "biller": "Project", "biller_id": row["_scope"], "biller_type": "Project", "budgeted": False,
                    "line_item_types": [], "deleted_at": iso(row["_deleted"])})
        return out

    def full_code(self, row: Row) -> str:
        parts, seen, parent_id = [str(row["code"])], {row["id"]}, row.get("parent_id")
        while parent_id and parent_id not in seen:
            parent = self.tables["cost_codes"].row(parent_id)
            if parent is None:
                break
            parts.append(str(parent["code"]))
            seen.add(parent_id)
            parent_id = parent.get("parent_id")
        return "-".join(reversed(parts))

    def line_type(self, row: Row) -> dict[str, Any]:
        return {"id": row["id"], "code": row["code"], "name": row["name"], "base_type": row["base_type"],
                "origin_id": row.get("origin_id"), "origin_data": row.get("origin_data")}

    def line(self, row: Row) -> dict[str, Any]:
        out = self.public(row, LINE_FIELDS)
        amount = money(row.get("amount") or Decimal(0))
        code = self.tables["cost_codes"].row(row["cost_code_id"]) if row.get("cost_code_id") else None
        kind = self.tables["line_item_types"].row(row["line_item_type_id"]) if row.get("line_item_type_id") else None
        out.update({"total_amount": amount, "extended_amount": amount, "position": row.get("position"),
                    "cost_code": {"id": code["id"], "name": code["name"], "full_code": self.full_code(code)} if code else None,
                    "line_item_type": self.line_type(kind) if kind else None, "wbs_code": None})
        return out

    def po(self, row: Row, *, extended: bool = True) -> dict[str, Any]:
        out = self.public(row, PO_FIELDS)
        vendor = self.tables["vendors"].row(row["vendor_id"]) if row.get("vendor_id") else None
        project = self.tables["projects"].row(row["_scope"])
        lines = self.tables["purchase_order_line_items"].children(row["id"])
        total = money(sum((line.get("amount") or Decimal(0) for line in lines), Decimal(0)))
        out.pop("vendor_id", None)
        out.pop("assignee_id", None)
        out.update({
            "vendor": {"id": vendor["id"], "company": vendor["name"]} if vendor else None,
            "project": {"id": project["id"], "name": project["name"]},
            "assignee": {"id": row["assignee_id"]} if row.get("assignee_id") else None,
            "grand_total": total, "revised_contract": total, "pending_change_orders": "0.0",
            "approved_change_orders": "0.0", "draft_change_orders_amount": "0.0", "pending_revised_contract": total,
            "total_payments": "0.0", "remaining_balance_outstanding": total, "percentage_paid": "0.0",
            "deleted_at": iso(row["_deleted"]),
        })
        if self.sb.settings.po_status_style == "snake" and out.get("status"):
            out["status"] = out["status"].lower().replace(" ", "_")
        if extended:
            out["line_items"] = [self.line(line) for line in lines]
        else:
            for name in PO_SHORT_DROPS:
                out.pop(name, None)
        return out

    def dc(self, row: Row, *, with_lines: bool = False) -> dict[str, Any]:
        out = self.public(row, DC_FIELDS)
        vendor = self.tables["vendors"].row(row["vendor_id"]) if row.get("vendor_id") else None
        lines = self.tables["direct_cost_line_items"].children(row["id"])
        out.update({
            "vendor": {"id": vendor["id"], "name": vendor["name"]} if vendor else None,
            "vendor_name": vendor["name"] if vendor else None, "employee": None,
            "grand_total": money(sum((line.get("amount") or Decimal(0) for line in lines), Decimal(0))),
            "line_items_count": len(lines), "attachments": [], "attachments_count": 0,
            "currency_configuration": {"currency_iso_code": row.get("currency_iso_code") or "USD"},
            "deleted_at": iso(row["_deleted"]),
        })
        if with_lines:
            out["line_items"] = [self.line(line) for line in lines]
        return out

    def kind(self, kind_name: str, row: Row) -> dict[str, Any]:
        """A written record as its write action answers it."""
        if kind_name in ("po_line", "dc_line"):
            return {**self.line(row), ("purchase_order_contract_id" if kind_name == "po_line" else "direct_cost_id"): row["_scope"]}
        if kind_name == "dc":
            return self.dc(row, with_lines=True)
        return {"vendor": self.vendor, "project": self.project, "po": self.po, "cost_code": self.cost_code,
                "line_item_type": self.line_type}[kind_name](row)

    def control(self, entity: str, row: Row) -> dict[str, Any]:
        """A record as the control API shows it: its scope and deletion always named."""
        if entity == "line_item_types":
            return self.line_type(row)
        kind_name = CONTROL_ENTITIES[entity]
        out = self.kind(kind_name, row)
        if kind_name in ("po", "dc", "cost_code"):
            out["project_id"] = row["_scope"]
        out.setdefault("deleted_at", iso(row["_deleted"]))
        return out
