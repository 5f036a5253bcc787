"""The instance's business rules: how a write becomes a row (system fields, numbering, data
policies, unknown columns dropped), how rows render, and how the Import Set API stages rows
and runs the transform maps (field maps, coalesce, references, choices, script checks)."""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pydantic import BaseModel, Field

from .store import IMPORT_ROW_FIELDS, SYS_FIELDS, TABLES, Row, Table, TableDef

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_SYS_ID = re.compile(r"^[0-9a-f]{32}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DICTIONARY = TableDef(("name", "element", "internal_type", "column_label"), display="element")


class ReferenceRule(BaseModel):
    """How a transform resolves a staged value into a reference (sys_id, else a match field)."""

    table: str
    match_fields: list[str] = Field(default_factory=lambda: ["name"])
    on_missing: Literal["reject", "ignore", "create"] = "reject"


class TransformMap(BaseModel):
    """A transform map: field map, coalesce key, reference rules and the script's checks."""

    name: str
    source_table: str
    target_table: str
    field_map: dict[str, str] = Field(default_factory=dict)  # staging column -> target column
    auto_map: bool = True  # staging columns named like a target column are copied as they are
    copy_empty: bool = False  # the map's "Copy empty fields" box: off, so blanks never wipe a target
    coalesce: list[str] = Field(default_factory=list)  # target columns identifying an existing row
    references: dict[str, ReferenceRule] = Field(default_factory=dict)  # keyed by target column
    choices: dict[str, list[str]] = Field(default_factory=dict)  # target column -> allowed values
    required: list[str] = Field(default_factory=list)  # staging columns the transform script demands
    date_fields: list[str] = Field(default_factory=list)  # staging columns that must be yyyy-mm-dd
    defaults: dict[str, str] = Field(default_factory=dict)  # target values the map always sets
    order: int = 100


def default_transform_maps(coalesce_column: str | None = None) -> list[TransformMap]:
    """The Source-to-Pay inbound maps for the staging tables the pair writes.

    A stock instance has no customer column to coalesce on and its maps document none, so by
    default every staged row inserts: a re-sent record becomes a second one unless the writer
    finds the existing target first. `coalesce_column` is the option a customer turns on (a
    `u_` column they added to the tables and made the maps' coalesce key)."""
    key = [coalesce_column] if coalesce_column else []
    supplier = ReferenceRule(table="sn_fin_supplier", match_fields=["u_correlation_id", "name"])
    cost_center = ReferenceRule(table="cmn_cost_center", match_fields=["account_number", "name"], on_missing="ignore")
    order = ReferenceRule(table="sn_shop_purchase_order", match_fields=["u_correlation_id", "erp_number"])
    invoice = ReferenceRule(table="sn_shop_invoice", match_fields=["u_correlation_id", "external_invoice_number"])
    return [TransformMap(coalesce=key, **spec) for spec in (
        dict(name="Supplier Inbound", source_table="sn_fcms_intg_imp_supplier", target_table="sn_fin_supplier",
             required=["name"], references={"company": ReferenceRule(table="core_company", on_missing="ignore")}),
        dict(name="Supplier Payment Inbound", source_table="sn_fcms_intg_supplier_payment_inbound_stage",
             target_table="sn_fin_supplier_payment", required=["supplier", "bank_account_number"],
             references={"supplier": supplier}),
        dict(name="Purchase Order Inbound", source_table="sn_fcms_intg_imp_order",
             target_table="sn_shop_purchase_order",
             field_map={"erp_po_number": "erp_number", "po_amount": "total_amount", "po_amount_currency": "currency",
                        "po_status": "status", "supplier_company_name": "supplier"},
             required=["erp_po_number", "supplier_company_name"], date_fields=["order_date"],
             references={"supplier": supplier, "cost_center": cost_center},
             choices={"order_type": ["Standard", "Blanket"]}),
        dict(name="Purchase Order Line Inbound", source_table="sn_fcms_intg_imp_order_line",
             target_table="sn_shop_purchase_order_line", field_map={"line_amount": "amount"},
             required=["purchase_order", "line_number"],
             references={"purchase_order": order, "cost_center": cost_center}),
        dict(name="Invoice Inbound", source_table="sn_spend_intg_imp_invoice", target_table="sn_shop_invoice",
             field_map={"amount_invoiced": "total_amount", "final_tax": "tax_amount"},
             required=["external_invoice_number", "external_invoice_source", "erp_source", "invoice_date",
                       "other_charges"],
             date_fields=["invoice_date", "due_date"],
             references={"supplier": supplier, "purchase_order": order.model_copy(update={"on_missing": "ignore"})},
             defaults={"status": "pending"}),
        dict(name="Invoice Line Inbound", source_table="sn_spend_intg_imp_invoice_line",
             target_table="sn_shop_invoice_line", field_map={"line_amount": "amount"},
             required=["invoice", "line_number"], references={"invoice": invoice, "cost_center": cost_center}),
    )]


@dataclass
class ImportSet:
    sys_id: str
    number: str
    staging_table: str
    pending: list[str] = field(default_factory=list)  # staging row ids awaiting an async transform


def as_string(value: Any) -> str:
    """Values are stored as strings; nested JSON is flattened with ':' turned into '='."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":")).replace(":", "=")
    return str(value)


def _listed(problem: str, columns: list[str]) -> str | None:
    """`problem: a, b` when any columns are named, else None."""
    return f"{problem}: {', '.join(columns)}" if columns else None


class InstanceRules:
    """State and rules of the instance, mixed into the sandbox (which holds the state: tables,
    maps, import sets, counters); callers hold `self.lock`."""

    # ---- tables and the dictionary ----

    def _clock(self) -> str:
        """UTC 'YYYY-MM-DD HH:MM:SS' that never runs backwards; equal values are normal."""
        return time.strftime(TIME_FORMAT, time.gmtime(self.clock.now_whole_seconds()))

    def _next_number(self, prefix: str, start: int = 10001, width: int = 7) -> str:
        value = self._counters.get(prefix, start)
        self._counters[prefix] = value + 1
        return f"{prefix}{value:0{width}d}"

    def _table(self, name: str, create: bool = False) -> Table:
        """The table, made on first use; the dictionary's definition keeps customer-made `u_`
        columns only when the instance was given them (a stock instance has none)."""
        table = self._tables.get(name)
        if table is None:
            definition = TABLES.get(name)
            if definition is None and not create:
                raise KeyError(name)
            if definition is not None:
                columns = tuple(c for c in definition.columns if not c.startswith("u_") or c in self.custom_columns)
                definition = replace(definition, columns=columns)
            table = self._tables[name] = Table(name, definition)
        return table

    def _add_column(self, table_name: str, column: str) -> None:
        """A column created through the dictionary, as a customer adds a `u_` column."""
        table = self._table(table_name, create=True)
        if column not in table.definition.columns:
            table.definition = replace(table.definition, columns=table.definition.columns + (column,))
        table.columns.add(column)

    def _dictionary(self) -> Table:
        """`sys_dictionary` as the Table API reads it: one row per column of every known table
        (`name` the table, `element` the column), built from the tables as they stand now."""
        dictionary = Table("sys_dictionary", _DICTIONARY)
        for name in sorted(set(TABLES) | set(self._tables)):
            for column in sorted(self._table(name, create=True).columns):
                dictionary.put({
                    "sys_id": hashlib.md5(f"{name}.{column}".encode()).hexdigest(), "name": name, "element": column,
                    "internal_type": "string", "column_label": column.replace("_", " ").capitalize(),
                    "sys_created_on": "2025-01-06 00:00:00", "sys_created_by": "system",
                    "sys_updated_on": "2025-01-06 00:00:00", "sys_updated_by": "system", "sys_mod_count": "0"})
        return dictionary

    def _register_map(self, tmap: TransformMap) -> None:
        self._table(tmap.source_table, create=True)
        self._table(tmap.target_table, create=True)
        maps = [m for m in self._maps.get(tmap.source_table, []) if m.name != tmap.name]
        self._maps[tmap.source_table] = sorted(maps + [tmap], key=lambda m: m.order)

    # ---- writes ----

    def _insert(self, table: Table, values: Row, *, user: str, honour_sys: bool = False) -> Row:
        now = self._clock()
        row = {column: "" for column in table.definition.columns}
        row.update({k: v for k, v in values.items() if k not in SYS_FIELDS})
        sys_id = values.get("sys_id", "")
        if not (_SYS_ID.match(sys_id) and sys_id not in table):
            sys_id = table.new_id()
        row.update(sys_id=sys_id, sys_created_on=now, sys_created_by=user, sys_updated_on=now,
                   sys_updated_by=user, sys_mod_count="0")
        if honour_sys:
            row.update({k: v for k, v in values.items() if k in SYS_FIELDS and k != "sys_id" and v})
        prefix = table.definition.number_prefix
        if prefix and not row.get("number"):
            row["number"] = self._next_number(prefix)
        return table.put(row)

    def _update(self, table: Table, sys_id: str, values: Row, *, user: str,
                honour_sys: bool = False, force: bool = False) -> Row:
        """Apply changes; like GlideRecord, an update that changes nothing touches nothing."""
        old = table.get(sys_id)
        assert old is not None
        changes = {k: v for k, v in values.items() if k not in SYS_FIELDS and old.get(k) != v}
        system = {k: v for k, v in values.items() if honour_sys and k in SYS_FIELDS and k != "sys_id" and v}
        if not changes and not system and not force:
            return old
        return table.put({**old, **changes, "sys_updated_on": self._clock(), "sys_updated_by": user,
                          "sys_mod_count": str(int(old["sys_mod_count"] or 0) + 1), **system})

    def _writable(self, table: Table, body: dict[str, Any], *, input_display: bool) -> Row:
        """Request values as strings, silently dropping columns the table does not have; with
        `input_display` a reference given by its display value is resolved to the sys_id."""
        values: Row = {}
        for key, raw in body.items():
            if (key in SYS_FIELDS and key != "sys_id") or (table.declared and key not in table.columns):
                continue
            value = as_string(raw)
            ref_table = table.definition.references.get(key)
            target = self._tables.get(ref_table) if ref_table else None
            if input_display and target is not None and value:
                value = self._find_id(target, value, [target.definition.display]) or value
            values[key] = value
        return values

    @staticmethod
    def _find_id(table: Table, value: str, columns: list[str]) -> str | None:
        """`value` itself if it is a sys_id of `table`, else the first row's whose columns (in
        turn) equal it."""
        if value in table:
            return value
        return next((found[0]["sys_id"] for column in columns if (found := table.find(column, value))), None)

    @staticmethod
    def _missing_mandatory(table: Table, row: Row) -> list[str]:
        return [c for c in table.definition.mandatory if not row.get(c)]

    # ---- reads ----

    def _display_of(self, table_name: str, sys_id: str) -> str:
        target = self._tables.get(table_name)
        row = target.get(sys_id) if target else None
        return row.get(target.definition.display, "") if row and target else ""

    def _link(self, table_name: str, sys_id: str) -> str:
        return f"{self.base_url}/api/now/table/{table_name}/{sys_id}"

    def _render(self, table: Table, row: Row, fields: list[str] | None, display: str, links: bool) -> dict[str, Any]:
        """A row as the Table API answers it: `display` is "false", "true" or "all"; references
        carry their link unless `links` is off."""
        out: dict[str, Any] = {}
        for column in (c for c in (fields if fields is not None else row) if c in row):
            value, ref_table = row[column], table.definition.references.get(column)
            if not (ref_table and value):
                out[column] = {"display_value": value, "value": value} if display == "all" else value
                continue
            link = {"link": self._link(ref_table, value)} if links else {}
            shown = self._display_of(ref_table, value) if display != "false" else ""
            if display == "true":
                out[column] = {**link, "display_value": shown} if links else shown
            elif display == "all":
                out[column] = {"display_value": shown, **link, "value": value}
            else:
                out[column] = {**link, "value": value} if links else value
        return out

    # ---- import sets ----

    def _import_set(self, staging: str, mode: str, multi: str = "") -> ImportSet:
        if mode == "synchronous" and staging in self._open_sets:
            return self._import_sets[self._open_sets[staging]]
        row = self._insert(self._table("sys_import_set"), {
            "number": self._next_number("ISET"), "table_name": staging, "state": "loading", "mode": mode,
            "multi_import_set": multi}, user=self.username)
        iset = self._import_sets[row["sys_id"]] = ImportSet(row["sys_id"], row["number"], staging)
        if mode == "synchronous":
            self._open_sets[staging] = iset.sys_id
        return iset

    def _stage(self, staging: Table, iset: ImportSet, body: dict[str, Any], user: str) -> Row:
        """A staging row: columns the staging table lacks are dropped, as on the instance."""
        values = self._writable(staging, body, input_display=False)
        values.pop("sys_id", None)
        values.update(sys_import_set=iset.sys_id, sys_import_state="pending", sys_import_row=str(len(staging)))
        return self._insert(staging, values, user=user)

    def _result(self, tmap_name: str, table: str, status: str, sys_id: str, shown: str = "",
                **extra: str) -> dict[str, Any]:
        """One Import Set result: transform_map, table, display_name, display_value, record_link,
        status and sys_id (the target's; the staging row's when the transform failed)."""
        target = self._tables.get(table)
        display = target.definition.display if target else ""
        link = self._link(table, sys_id) if status != "error" and sys_id else ""
        return {"transform_map": tmap_name, "table": table, "display_name": display, "display_value": shown,
                "record_link": link, "status": status, "sys_id": sys_id, **extra}

    def _run_transforms(self, staging: Table, row: Row, user: str) -> list[dict[str, Any]]:
        results = [self._transform(tmap, row, user) for tmap in self._maps.get(staging.name, [])]
        first = results[0] if results else self._result("", "", "error", row["sys_id"],
                                                       error_message="No transform map found")
        self._update(staging, row["sys_id"], {
            "sys_import_state": first["status"],
            "sys_import_state_comment": first.get("error_message", first.get("status_message", "")),
            "sys_row_error": first.get("error_message", ""),
            "sys_target_sys_id": first["sys_id"] if first["status"] != "error" else "",
            "sys_target_table": first["table"], "sys_transform_map": first["transform_map"],
        }, user=user)
        return results or [first]

    def _transform(self, tmap: TransformMap, staged: Row, user: str) -> dict[str, Any]:
        """One map applied to a staged row: the script's checks, the field map, references,
        choices and defaults, then an update of the coalesced row or an insert."""
        target = self._table(tmap.target_table, create=True)
        values: Row = {}
        for column, value in staged.items():
            if column in SYS_FIELDS or column in IMPORT_ROW_FIELDS or (value == "" and not tmap.copy_empty):
                continue
            target_column = tmap.field_map.get(column) or (column if tmap.auto_map else None)
            if target_column and (not target.declared or target_column in target.columns):
                values[target_column] = value
        error = _listed("Mandatory field(s) missing", [c for c in tmap.required if not staged.get(c)]) or _listed(
            "Invalid date (expected yyyy-mm-dd)",
            [c for c in tmap.date_fields if staged.get(c) and not _DATE.match(staged[c])])
        for column, rule in tmap.references.items():
            if error or not values.get(column):
                continue
            resolved = self._resolve_reference(rule, values[column], user)
            if resolved is not None:
                values[column] = resolved
            elif rule.on_missing == "reject":
                error = f"Reference field value rejected: {column} '{values[column]}' not found in {rule.table}"
            else:
                values.pop(column)
        error = error or next((f"Choice field value rejected: {column} '{values[column]}'"
                               for column, allowed in tmap.choices.items()
                               if values.get(column) and values[column] not in allowed), None)
        values.update(tmap.defaults)
        existing = None if error else self._coalesce(target, tmap, values)
        if existing is None and not error:
            error = _listed("Data Policy Exception: The following fields are mandatory",
                            self._missing_mandatory(target, values))
        if error:
            return self._result(tmap.name, tmap.target_table, "error", staged["sys_id"],
                                error_message=error, status_message=error)
        if existing is not None:
            row = self._update(target, existing["sys_id"], values, user=user)
            status = "updated" if row is not existing else "ignored"
        else:
            row, status = self._insert(target, values, user=user), "inserted"
        extra = {"status_message": "No field values changed"} if status == "ignored" else {}
        return self._result(tmap.name, tmap.target_table, status, row["sys_id"],
                            row.get(target.definition.display, ""), **extra)

    @staticmethod
    def _coalesce(target: Table, tmap: TransformMap, values: Row) -> Row | None:
        if not tmap.coalesce or any(not values.get(c) for c in tmap.coalesce):
            return None
        first, *rest = tmap.coalesce
        found = target.find(first, values[first])
        return next((row for row in found if all(row.get(c, "") == values[c] for c in rest)), None)

    def _resolve_reference(self, rule: ReferenceRule, value: str, user: str) -> str | None:
        table = self._table(rule.table, create=True)
        found = self._find_id(table, value, rule.match_fields)
        if found is None and rule.on_missing == "create":
            return self._insert(table, {table.definition.display: value}, user=user)["sys_id"]
        return found

    def _process_pending(self, iset_id: str, generation: int) -> None:
        with self.lock:
            iset = self._import_sets.get(iset_id)
            if iset is None or generation != self._generation:
                return
            staging = self._tables[iset.staging_table]
            for row in filter(None, map(staging.get, iset.pending)):
                self._run_transforms(staging, row, self.username)
            iset.pending.clear()
            self._update(self._tables["sys_import_set"], iset.sys_id, {"state": "processed"}, user=self.username)

    def _staged_result(self, row: Row) -> dict[str, Any]:
        """A staging row's result as `GET /import/<staging>/<sys_id>` answers it."""
        table, target_id = row.get("sys_target_table", ""), row.get("sys_target_sys_id", "")
        result = self._result(row.get("sys_transform_map", ""), table, row.get("sys_import_state", ""), target_id,
                              self._display_of(table, target_id))
        if target_id not in self._tables.get(table, ()):
            result["record_link"] = ""
        if row.get("sys_row_error"):
            result["error_message"] = row["sys_row_error"]
        return result
