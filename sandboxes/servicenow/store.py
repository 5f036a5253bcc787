"""The instance's dictionary (what tables and columns exist) and its tables in memory.

Every stored value is a string, as on the real instance; rows are replaced, never mutated,
so they can be rendered outside the lock. Declared tables drop unknown columns on writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sandboxes.kit.store import Row, Table as KitTable, exact, hex_ids

from .query import Query, sort_key

_BOUNDS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
QUERY_CACHE_SIZE = 32  # matched-id lists kept per table, so paging through a poll costs O(page)
SYS_FIELDS = ("sys_id", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count")
IMPORT_ROW_FIELDS = (
    "sys_import_set", "sys_import_row", "sys_import_state", "sys_import_state_comment",
    "sys_target_sys_id", "sys_target_table", "sys_transform_map", "sys_row_error",
)


@dataclass(frozen=True)
class TableDef:
    """What the instance's dictionary says about one table."""

    columns: tuple[str, ...]
    references: dict[str, str] = field(default_factory=dict)  # column -> referenced table
    display: str = "name"  # the display column (reference display values, import results)
    mandatory: tuple[str, ...] = ()  # enforced by a data policy on insert and update
    number_prefix: str = ""  # auto-numbered tables ("PO0010001")


def _cols(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_SUPPLIER = _cols("name legal_name company tax_id street city state zip country phone email website currency "
                  "payment_term active erp_source u_correlation_id")
# A supplier's bank account (payment details); staging names are snake_case labels (unconfirmed).
_SUPPLIER_PAYMENT = _cols("supplier bank_name account_name bank_account_number routing_number iban swift_code "
                          "currency primary active u_correlation_id")
_PO_STAGING = _cols("erp_po_number erp_source legal_entity order_type po_amount po_amount_currency po_status "
                    "supplier_company_name payment_term cost_center order_date u_correlation_id")
_PO_LINE_STAGING = _cols("purchase_order line_number description quantity unit_price line_amount cost_center "
                         "u_correlation_id")
# Invoice staging column names are snake_case forms of the documented labels (unconfirmed).
_INVOICE_STAGING = _cols(
    "external_invoice_number external_invoice_source erp_source invoice_date other_charges amount_invoiced currency "
    "discounts final_tax invoice_type legal_entity purchase_order erp_number payment_terms invoice_line_count "
    "supplier due_date remit_to_street remit_to_city remit_to_state remit_to_zip remit_to_country u_correlation_id")
_INVOICE_LINE_STAGING = _cols("invoice line_number description quantity unit_price line_amount cost_center "
                              "gl_account u_correlation_id")

TABLES: dict[str, TableDef] = {
    "sys_user": TableDef(_cols("user_name first_name last_name name email active")),
    "core_company": TableDef(
        _cols("name vendor customer manufacturer vendor_type street city state zip country phone fax website notes "
              "parent u_correlation_id"), references={"parent": "core_company"}, mandatory=("name",)),
    "sn_fin_supplier": TableDef(_SUPPLIER, references={"company": "core_company"}, mandatory=("name",)),
    "sn_fin_supplier_payment": TableDef(_SUPPLIER_PAYMENT, references={"supplier": "sn_fin_supplier"},
                                        display="bank_name", mandatory=("supplier",)),
    "cmn_cost_center": TableDef(
        _cols("name account_number manager parent valid_from valid_to location u_correlation_id"),
        references={"manager": "sys_user", "parent": "cmn_cost_center"}, mandatory=("name",)),
    "sn_fin_gl_account": TableDef(_cols("name account_number account_type active"), mandatory=("name",)),
    "sn_shop_purchase_order": TableDef(
        _cols("number erp_number supplier legal_entity order_type total_amount currency status payment_term "
              "cost_center erp_source order_date u_correlation_id"),
        references={"supplier": "sn_fin_supplier", "cost_center": "cmn_cost_center"},
        display="number", number_prefix="PO"),
    "sn_shop_purchase_order_line": TableDef(
        _cols("purchase_order line_number description quantity unit_price amount cost_center u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("purchase_order",)),
    "sn_shop_invoice": TableDef(
        _cols("number external_invoice_number external_invoice_source erp_source invoice_date due_date other_charges "
              "total_amount currency discounts tax_amount invoice_type legal_entity purchase_order supplier "
              "erp_number payment_terms status u_correlation_id"),
        references={"purchase_order": "sn_shop_purchase_order", "supplier": "sn_fin_supplier"},
        display="number", number_prefix="INV"),
    "sn_shop_invoice_line": TableDef(
        _cols("invoice line_number description quantity unit_price amount cost_center gl_account u_correlation_id"),
        references={"invoice": "sn_shop_invoice", "cost_center": "cmn_cost_center"},
        display="description", mandatory=("invoice",)),
    "proc_po": TableDef(_cols("number vendor short_description status total_cost po_date u_correlation_id"),
                        references={"vendor": "core_company"}, display="number", number_prefix="PO"),
    "proc_po_item": TableDef(_cols("purchase_order short_description ordered_quantity cost total_cost status"),
                             references={"purchase_order": "proc_po"}, display="short_description"),
    "sys_import_set": TableDef(_cols("number table_name state mode multi_import_set"), display="number"),
    "sys_multi_import_set": TableDef(_cols("number state"), display="number"),
    "sn_fcms_intg_imp_supplier": TableDef(_SUPPLIER + IMPORT_ROW_FIELDS),
    "sn_fcms_intg_supplier_payment_inbound_stage": TableDef(_SUPPLIER_PAYMENT + IMPORT_ROW_FIELDS, display="bank_name"),
    "sn_fcms_intg_imp_order": TableDef(_PO_STAGING + IMPORT_ROW_FIELDS, display="erp_po_number"),
    "sn_fcms_intg_imp_order_line": TableDef(_PO_LINE_STAGING + IMPORT_ROW_FIELDS, display="description"),
    "sn_fcms_intg_imp_receipt": TableDef(_cols("erp_receipt_number purchase_order u_correlation_id") + IMPORT_ROW_FIELDS),
    "sn_spend_intg_imp_invoice": TableDef(_INVOICE_STAGING + IMPORT_ROW_FIELDS, display="external_invoice_number"),
    "sn_spend_intg_imp_invoice_line": TableDef(_INVOICE_LINE_STAGING + IMPORT_ROW_FIELDS, display="description"),
}



class Table(KitTable):
    """One table: rows keyed by sys_id in insertion order (the kit store), with what the
    dictionary says about it and the columns it has now. Rows are replaced, never mutated."""

    def __init__(self, name: str, definition: TableDef | None) -> None:
        self.definition = definition or TableDef(())
        self.declared = definition is not None  # declared tables drop unknown columns on writes
        self.columns: set[str] = set(SYS_FIELDS) | set(self.definition.columns)
        super().__init__("sys_id", normalise=exact, ids=hex_ids(), order="insertion", cache_size=QUERY_CACHE_SIZE, name=name)

    def put(self, row: Row) -> Row:
        self.columns.update(row)
        return super().put(row)

    def find(self, column: str, value: str) -> list[Row]:
        """Rows whose `column` equals `value`, oldest first."""
        if column == "sys_id":
            row = self.get(value)
            return [row] if row is not None else []
        if value == "":  # a row without the column counts as blank
            return [row for row in self.rows() if row.get(column, "") == ""]
        return self.lookup(column, value)

    def select(self, query: Query) -> list[Row]:
        """Matching rows in the query's order, kept until the table next changes (paging a
        poll re-asks the same question)."""
        return self.cached((repr(query.branches), tuple(query.order)), lambda: self._select(query))

    def _select(self, query: Query) -> list[Row]:
        conditions = query.and_conditions()
        equality = next((c for c in conditions if c.op == "="), None)
        bounds: dict[str, str] = {}
        for c in conditions:
            if c.field == "sys_updated_on" and c.op in _BOUNDS:
                name = _BOUNDS[c.op]
                tighter = max if name in ("gt", "ge") else min
                bounds[name] = tighter(bounds[name], c.value) if name in bounds else c.value
        by_updated = query.order[:1] == [("sys_updated_on", False)] and query.order[1:] in ([], [("sys_id", False)])
        if equality is not None:
            candidates = self.find(equality.field, equality.value)
        elif bounds or by_updated:
            candidates = self.range("sys_updated_on", **bounds)  # type: ignore[arg-type]
        else:
            candidates = self.rows()
        match = query.matcher()
        matched = [row for row in candidates if match is None or match(row)]
        if equality is None and by_updated:
            matched.sort(key=lambda row: (row["sys_updated_on"], row["sys_id"]))
        elif query.order:
            for column, desc in reversed(query.order):
                matched.sort(key=lambda row: sort_key(row.get(column, "")), reverse=desc)
        elif equality is None and bounds:
            position = self.cached("positions", lambda: {row["sys_id"]: i for i, row in enumerate(self.rows())})
            matched.sort(key=lambda row: position[row["sys_id"]])
        return matched
