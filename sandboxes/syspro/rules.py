"""SYSPRO's business objects: COMFND and INVQRY queries, APSTIN, PORTOI and INVTMA posts,
APSSSP supplier maintenance; their validation rules, error numbers and output XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Callable, Iterable
from xml.sax.saxutils import escape

from .query import UNKNOWN_COLUMN, QueryError, parse_comfnd_where, resolve, run_query
from .tables import COST, MONEY, QTY, norm, render

if TYPE_CHECKING:
    from .sandbox import SysproSandbox

XML_DECLARATION = '<?xml version="1.0" encoding="Windows-1252"?>'
ROOT_ATTRIBUTES = (
    "Language='05' Language2='EN' CssStyle='' DecFormat='1' DateFormat='01' Role='01' "
    "Version='8.0.000' OperatorPrimaryRole='   '"
)

# Error numbers: (unconfirmed) SYSPRO-style six-digit codes, stable so tests can assert them.
E_REQUIRED, E_TOO_LONG, E_ACTION = 100010, 100011, 100020
E_SUPPLIER_EXISTS, E_SUPPLIER_NOT_FOUND, E_SUPPLIER_ON_HOLD, E_DUPLICATE_INVOICE = 110401, 110402, 110405, 110420
E_BAD_VALUE, E_BAD_DATE, E_BAD_TRANSACTION_CODE = 110430, 110431, 110432
E_LEDGER_NOT_FOUND, E_DISTRIBUTION, E_BAD_CURRENCY, E_HAS_TRANSACTIONS = 110440, 110441, 110450, 110460
E_PO_NOT_FOUND, E_PO_EXISTS, E_PO_CLOSED, E_PO_LINE, E_ZERO_PRICE = 210301, 210302, 210303, 210310, 210320
E_STOCK_NOT_FOUND, E_WAREHOUSE_NOT_FOUND, E_NOT_STOCKED, E_BAD_QUANTITY, E_NEGATIVE_STOCK = (
    240004, 240010, 240011, 240020, 240021)

WAREHOUSES = {"WH01": "Main warehouse", "WH02": "North branch", "VAN1": "Service van 1", "VAN2": "Service van 2"}
LEDGER_CODES = {
    "10-5500": "Materials", "10-5510": "Subcontractors", "10-5520": "Equipment rental",
    "10-5600": "Freight", "20-1400": "Inventory", "20-2100": "Accounts payable control",
    "30-6100": "Repairs and maintenance",
}
CURRENCIES = {"$", "USD", "CAD", "EUR", "GBP", "ZAR"}
SUPPLIER_FIELDS = (
    "SupplierName", "SupShortName", "SupAddr1", "SupAddr2", "SupAddr3", "SupAddr4", "SupAddr5",
    "SupPostalCode", "Telephone", "Email", "Contact", "Currency", "TermsCode", "SupplierClass",
    "Branch", "OnHold", "TaxRegnNum",
)
STOCK_ITEM_FIELDS = ("StockCode", "Description", "LongDesc", "StockUom", "ProductClass", "Supplier", "PartCategory")
# Business objects by the REST methods that reach them; the unconfirmed names come from the settings.
METHODS = {"Query": ("Query/Query",), "Transaction": ("Transaction/Post",),
           "Setup": ("Setup/Add", "Setup/Update", "Setup/Delete")}


class BusinessError(Exception):
    """A failure the REST host reports as `ERROR: ...` text (exceptions inside e.net)."""


# A post's item: its key XML (read after the commit, which may number it), whether it is
# invalid, its error XML, and the commit (given the entry number, answering extra XML).
Plan = tuple[Callable[[], str], bool, str, Callable[[int], str]]


def _text(element: ET.Element | None, name: str, default: str = "") -> str:
    found = element.find(name) if element is not None else None
    return default if found is None or found.text is None else found.text.strip()


def _flag(element: ET.Element | None, name: str, default: str) -> str:
    return (_text(element, name, default) or default).upper()[:1]


Rule = tuple[Any, str, str, int, str]  # (breached?, field, value, error number, description)


class Errors(list[tuple[str, str, int, str]]):
    """One item's field errors (field, value, number, description), in the order SYSPRO reports them."""

    def add(self, field: str, value: str, number: int, description: str) -> None:
        self.append((field, value, number, description))

    def check(self, *rules: Rule, first: bool = False) -> bool:
        """Record every breached rule (with `first`, only the first: an if/elif chain); True if any."""
        breached = [rule[1:] for rule in rules if rule[0]]
        for error in breached[:1] if first else breached:
            self.add(*error)
        return bool(breached)

    def xml(self, lowercase: bool = False) -> str:
        parts = []
        for field, value, number, description in self:
            tag = field.lower() if lowercase else field
            parts.append(f"<{tag}><Value>{escape(value)}</Value><ErrorNumber>{number}</ErrorNumber>"
                         f"<ErrorDescription>{escape(description)}</ErrorDescription></{tag}>")
        return "".join(parts)

    def number(self, field: str, raw: str, message: str, valid: Callable[[Decimal], bool] = lambda v: True,
               code: int = E_BAD_VALUE) -> Decimal | None:
        """`raw` as a finite number, or None with the error `message` (given `raw`) recorded."""
        try:
            value: Decimal | None = Decimal(raw.strip())
        except (InvalidOperation, AttributeError):
            value = None
        if value is None or not value.is_finite() or not valid(value):
            self.add(field, raw, code, message.format(raw))
            return None
        return value

    def date(self, field: str, raw: str, message: str, default: date | None = None) -> date | None:
        """`raw` as a date; `default` when it is empty, or not a date (the error `message` recorded)."""
        if not raw:
            return default
        try:
            return datetime.strptime(raw, "%Y-%m-%d").date()
        except ValueError:
            self.add(field, raw, E_BAD_DATE, message.format(raw))
            return default


def tags(pairs: Iterable[tuple[str, Any]]) -> str:
    """`<name>value</name>` for each pair, the value written as SYSPRO writes it in XML."""
    return "".join(f"<{name}>{escape(render(value))}</{name}>" for name, value in pairs)


def line_error(tag: str, line: str, errors: Errors) -> str:
    """A purchase order line's errors, under its line number ("" when it has none)."""
    return f"<{tag}><PurchaseOrderLine>{escape(line)}</PurchaseOrderLine>{errors.xml()}</{tag}>" if errors else ""


def envelope(root: str, body: str) -> str:
    return f"{XML_DECLARATION}\n<{root} {ROOT_ATTRIBUTES}>\n{body}</{root}>\n"


def parse_xml(text: str, name: str, optional: bool = False) -> ET.Element | None:
    if not text.strip():
        if optional:
            return None
        raise BusinessError(f"{name} is empty")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise BusinessError(f"{name} is not well formed: {exc}") from None


class BusinessObjects:
    """The business objects of one sandbox; mixed into `SysproSandbox`, whose state they use."""

    def business_call(self: SysproSandbox, kind: str, args: Any) -> str:
        user_id = args.get("UserId", "")
        if self.sessions.use(user_id) is None:
            return self.stale_message(user_id)
        name = args.get("BusinessObject", "").strip().upper()
        self.stats.bump(f"bo_{name or 'none'}")
        s = self.settings
        objects: dict[str, tuple[str, Callable[..., str]]] = {
            "COMFND": ("Query", self._comfnd), "INVQRY": ("Query", self._invqry),
            "APSTIN": ("Transaction", self._apstin), "PORTOI": ("Transaction", self._portoi),
            s.adjustment_object.strip().upper(): ("Transaction", self._invtma),
            s.supplier_setup_object.strip().upper(): ("Setup", self._apsssp),
        }
        if name not in objects or name in {o.upper() for o in s.unlicensed_objects}:
            return f"ERROR: Business object '{name}' could not be found or is not licensed"
        group, handler = objects[name]
        if kind not in METHODS[group]:
            return f"ERROR: Business object '{name}' cannot be called with method {kind.replace('/', '.')}"
        try:
            xml_in = parse_xml(args.get("XmlIn", ""), "XmlIn")
            params = parse_xml(args.get("XmlParameters", ""), "XmlParameters", optional=True)
            parameters = params.find("Parameters") if params is not None else None
            with self.lock:
                return handler(kind.split("/")[1], parameters, xml_in)
        except (BusinessError, QueryError) as exc:
            return f"ERROR: {exc}"

    # ---- queries ------------------------------------------------------------------------------

    def _comfnd(self: SysproSandbox, _method: str, _parameters: Any, query: ET.Element) -> str:
        table_name = _text(query, "TableName")
        table = self.tables.get(table_name)
        if table is None:
            raise QueryError(f"Table '{table_name}' not found")
        names = table.names(self.settings.change_column)

        def listed(path: str) -> list[str]:
            found = [c.text.strip() for c in query.findall(path) if c.text and c.text.strip()]
            for column in found:
                resolve(names, column, table, UNKNOWN_COLUMN)
            return found

        columns, order = listed("Columns/Column") or list(names), listed("OrderBy/Column")
        rows_text = _text(query, "ReturnRows")
        try:
            limit = int(rows_text) if rows_text else self.settings.comfnd_default_rows
        except ValueError:
            raise QueryError(f"Invalid ReturnRows '{rows_text}'") from None
        node = parse_comfnd_where(query.find("Where"), table, names)
        by = [(names[c], False) for c in order] or [(k, False) for k in table.key]
        rows, _ = run_query(table, node, by, limit=max(limit, 0))
        column_list, order_list = ("".join(f"<Column>{c}</Column>" for c in chosen) for chosen in (columns, order))
        parts = [f"<HeaderDetails><TableName>{table.name}</TableName><Columns>{column_list}</Columns>"
                 f"<OrderBy>{order_list}</OrderBy></HeaderDetails>\n"]
        parts.extend(f"<Row>{tags((c, row.get(names[c])) for c in columns)}</Row>\n" for row in rows)
        parts.append(f"<RowsReturned>{len(rows):>7}</RowsReturned>\n")
        return envelope(table.name, "".join(parts))

    def _invqry(self: SysproSandbox, _method: str, _parameters: Any, query: ET.Element) -> str:
        stock_code = _text(query.find("Key"), "StockCode")
        item = self.tables["InvMaster"].get(stock_code)
        if item is None:
            raise BusinessError(f"Stock code '{stock_code}' not found")
        selector = query.find("Filter/Warehouse")
        filter_type = (selector.get("FilterType", "A") if selector is not None else "A").upper()
        listed = selector.get("FilterValue", "") if selector is not None else ""
        wanted = {w.strip().upper() for w in listed.split(",")}
        body = [f"<QueryOptions>{tags([('StockCode', item['StockCode'])])}</QueryOptions>\n"
                f"<StockItem>{tags((c, item.get(c)) for c in STOCK_ITEM_FIELDS)}</StockItem>\n"]
        for row in self.tables["InvWarehouse"].children(stock_code):
            if filter_type in ("S", "L") and row["Warehouse"].upper() not in wanted:
                continue
            body.append(
                f"<WarehouseItem><Warehouse>{escape(row['Warehouse'])}</Warehouse>"
                f"<Description>{escape(WAREHOUSES.get(row['Warehouse'], ''))}</Description>"
                f"<QtyOnHand>{row['QtyOnHand']}</QtyOnHand>"
                f"<AvailableQty>{row['QtyOnHand'] - row['QtyAllocated']}</AvailableQty>"
                f"<QtyOnOrder>{row['QtyOnOrder']}</QtyOnOrder><UnitCost>{row['UnitCost']}</UnitCost></WarehouseItem>\n")
        return envelope("InvQuery", "".join(body))

    # ---- posting: validate every item, apply per ValidateOnly / ApplyIfEntireDocumentValid --------

    def _post(self: SysproSandbox, root: str, tag: str, parameters: ET.Element | None, plans: list[Plan],
              journal: str | None = None, setup: bool = False) -> str:
        """Setup objects answer lowercase items without numbers and count records read."""
        validate_only = _flag(parameters, "ValidateOnly", "N") == "Y"
        whole_document = _flag(parameters, "ApplyIfEntireDocumentValid", "Y") == "Y"
        invalid = sum(1 for plan in plans if plan[1])
        apply = not validate_only and not (whole_document and invalid)
        if journal and apply and invalid < len(plans):
            self.counters[journal] += 1
        body: list[str] = []
        processed = 0
        for number, (key, bad, errors, commit) in enumerate(plans, start=1):
            extra = ""
            if apply and not bad:
                processed += 1
                extra = commit(processed)
            body.append(f"<item><key>{key()}</key>{errors}</item>\n" if setup else
                        f"<{tag}><Key>{key()}</Key>{errors}{extra}<ItemNumber>{number:06d}</ItemNumber></{tag}>\n")
        body.append(f"<StatusOfItems><RecordsRead>{len(plans)}</RecordsRead><RecordsInvalid>{invalid}</RecordsInvalid>"
                    "</StatusOfItems>\n" if setup else
                    f"<StatusOfItems><ItemsProcessed>{processed:06d}</ItemsProcessed>"
                    f"<ItemsInvalid>{invalid:06d}</ItemsInvalid></StatusOfItems>\n")
        return envelope(root, "".join(body))

    @staticmethod
    def _items(document: ET.Element, tag: str = "Item", what: str = "items") -> list[ET.Element]:
        items = document.findall(tag)
        if not items:
            raise BusinessError(f"No {what} supplied in XmlIn")
        return items

    def _supplier(self: SysproSandbox, code: str, errors: Errors, on_hold: bool = True) -> dict[str, Any] | None:
        supplier = self.tables["ApSupplier"].get(code) if code else None
        if supplier is None:
            errors.add("Supplier", code, E_SUPPLIER_NOT_FOUND, f"Supplier '{code}' not found")
        elif supplier["OnHold"] == "Y" and on_hold:
            errors.add("Supplier", code, E_SUPPLIER_ON_HOLD, f"Supplier '{code}' is on hold")
        return supplier

    def _holding(self: SysproSandbox, stock_code: str, warehouse: str, errors: Errors) -> dict[str, Any] | None:
        holding = self.tables["InvWarehouse"].get(stock_code, warehouse)
        if holding is None:
            errors.add("Warehouse", warehouse, E_NOT_STOCKED,
                       f"Stock code '{stock_code}' is not stocked in warehouse '{warehouse}'")
        return holding

    # ---- APSTIN: post AP invoices -------------------------------------------------------------------

    def _apstin(self: SysproSandbox, _method: str, parameters: ET.Element | None, document: ET.Element) -> str:
        automatic_tax = _flag(parameters, "AutomaticTaxCalculation", "Y") == "Y"
        seen: set[tuple[Any, ...]] = set()
        plans: list[Plan] = []
        for item in self._items(document):
            errors = Errors()
            record = self._validate_ap_invoice(item, errors, seen, automatic_tax)
            key = tags((name, _text(item, name)) for name in ("Supplier", "Invoice"))
            plans.append((lambda key=key: key, bool(errors), errors.xml(),
                          lambda entry, record=record: self._post_ap_invoice(record, entry)))
        return self._post("postapinvoice", "Item", parameters, plans, journal="ap_journal")

    def _post_ap_invoice(self: SysproSandbox, record: dict[str, Any], entry: int) -> str:
        journal = self.counters["ap_journal"]
        record.update({"Journal": journal, "EntryNumber": entry, "PostDate": self.clock.now_datetime().date(),
                       "LastChangeDate": self.clock.now_datetime()})
        distribution = record.pop("_distribution")
        self.tables["ApInvoice"].put(record)
        self.ledger_distribution[self.tables["ApInvoice"].key_of(record)] = distribution
        return f"<Journal>{journal}</Journal><EntryNumber>{entry}</EntryNumber>"

    def _validate_ap_invoice(self: SysproSandbox, item: ET.Element, errors: Errors,
                             seen: set[tuple[Any, ...]], automatic_tax: bool) -> dict[str, Any]:
        supplier_code, invoice = _text(item, "Supplier"), _text(item, "Invoice")
        if not supplier_code:
            errors.add("Supplier", "", E_REQUIRED, "Supplier is required")
        supplier = self._supplier(supplier_code, errors) if supplier_code else None
        if not invoice:
            errors.add("Invoice", "", E_REQUIRED, "Invoice number is required")
        elif len(invoice) > 20:
            errors.add("Invoice", invoice, E_TOO_LONG, "Invoice number may not exceed 20 characters")
        elif supplier is not None:
            key = (norm(supplier["Supplier"]), norm(invoice))
            if key in self.tables["ApInvoice"].store or key in seen:
                errors.add("Invoice", invoice, E_DUPLICATE_INVOICE,
                           f"Invoice '{invoice}' already exists for supplier '{supplier['Supplier']}'")
            seen.add(key)
        code = (_text(item, "TransactionCode") or "I").upper()
        if code not in ("I", "C", "D"):
            errors.add("TransactionCode", code, E_BAD_TRANSACTION_CODE, f"Invalid transaction code '{code}'")
        raw_value = _text(item, "TransactionValue")
        value = errors.number("TransactionValue", raw_value, "Invalid transaction value '{}'",
                              lambda v: v > 0 and v == v.quantize(MONEY))
        invoice_date = errors.date("InvoiceDate", _text(item, "InvoiceDate"), "Invalid invoice date '{}'",
                                   self.clock.now_datetime().date())
        due_date = errors.date("DueDate", _text(item, "DueDate"), "Invalid due date '{}'")
        distribution: list[dict[str, Any]] = []
        for line in item.findall("LedgerDistribution"):
            ledger = _text(line, "LedgerCode")
            if ledger not in LEDGER_CODES:
                errors.add("LedgerCode", ledger, E_LEDGER_NOT_FOUND, f"Ledger code '{ledger}' not found")
            line_value = errors.number("LedgerValue", _text(line, "LedgerValue"), "Invalid ledger value '{}'")
            if line_value is None:
                continue
            distribution.append({"LedgerCode": ledger, "LedgerValue": line_value.quantize(MONEY),
                                 "LedgerNotation": _text(line, "LedgerNotation")})
        raw_tax = _text(item, "TaxValue")
        tax = errors.number("TaxValue", raw_tax, "Invalid tax value '{}'") if raw_tax else None
        if value is not None and distribution:
            spread = sum((d["LedgerValue"] for d in distribution), Decimal("0.00"))
            if tax is not None and spread + tax != value:
                errors.add("TransactionValue", raw_value, E_DISTRIBUTION,
                           f"Distribution total {spread + tax} does not equal invoice value {value}")
            elif tax is None and (spread > value or (not automatic_tax and spread != value)):
                errors.add("TransactionValue", raw_value, E_DISTRIBUTION,
                           f"Distribution total {spread} does not balance to invoice value {value}")
            if tax is None:
                tax = value - spread
        return {
            "Supplier": supplier["Supplier"] if supplier else supplier_code, "Invoice": invoice, "DocumentType": code,
            "InvoiceDate": invoice_date, "DueDate": due_date or invoice_date + timedelta(days=30),
            "Reference": _text(item, "TransactionReference"), "Notation": _text(item, "Notation"),
            "Currency": supplier["Currency"] if supplier else "", "OrigInvValue": value,
            "TaxValue": (tax or Decimal("0")).quantize(MONEY), "MthInvBal1": value,
            "Journal": None, "EntryNumber": None, "Branch": _text(item, "Branch"), "LastChangeDate": None,
            "_distribution": distribution,
        }

    # ---- PORTOI: purchase orders --------------------------------------------------------------------

    def _portoi(self: SysproSandbox, _method: str, parameters: ET.Element | None, document: ET.Element) -> str:
        allow_non_stock = _flag(parameters, "AllowNonStockItems", "N") == "Y"
        allow_zero_price = _flag(parameters, "AllowZeroPrice", "N") == "Y"
        status = _text(parameters, "Status", "1") or "1"
        plans = [self._plan_order(order, allow_non_stock, allow_zero_price, status)
                 for order in self._items(document, "Orders", "orders")]
        return self._post("postpurchaseorders", "Order", parameters, plans)

    def _plan_order(self: SysproSandbox, order: ET.Element, allow_non_stock: bool, allow_zero_price: bool,
                    status: str) -> Plan:
        header = order.find("OrderHeader")
        errors = Errors()
        line_errors: list[str] = []
        action = _flag(header, "OrderActionType", "A")
        number = _text(header, "PurchaseOrder")
        chosen = [number]  # a new order's number is drawn when it is committed
        headers = self.tables["PorMasterHdr"]
        existing = headers.get(number) if number else None

        def plan(commit: Callable[[], Any] = lambda: None) -> Plan:
            def apply(_entry: Any) -> str:
                commit()  # (what a commit returns is not part of the answer)
                return ""

            return (lambda: f"<PurchaseOrder>{escape(chosen[0])}</PurchaseOrder>", bool(errors or line_errors),
                    errors.xml() + "".join(line_errors), apply)

        state = {"9": "complete", "*": "cancelled"}.get(existing["OrderStatus"]) if existing else None
        if errors.check((action not in ("A", "C", "D"), "OrderActionType", action, E_ACTION,
                         f"Invalid order action type '{action}'"),
                        (action == "A" and existing is not None, "PurchaseOrder", number, E_PO_EXISTS,
                         f"Purchase order '{number}' already exists"),
                        (action != "A" and existing is None, "PurchaseOrder", number, E_PO_NOT_FOUND,
                         f"Purchase order '{number}' not found"),
                        (action != "A" and state, "PurchaseOrder", number, E_PO_CLOSED,
                         f"Purchase order '{number}' is {state} and cannot be maintained"), first=True):
            return plan()
        row = dict(existing) if existing else {c: None for c in headers.columns}
        if action == "D":
            return plan(lambda: headers.put({**row, "OrderStatus": "*", "LastChangeDate": self.clock.now_datetime()}))
        supplier_code = _text(header, "Supplier") or (row.get("Supplier") or "")
        supplier = self._supplier(supplier_code, errors, on_hold=action == "A")
        warehouse = (_text(header, "Warehouse") or row.get("Warehouse") or "WH01").upper()
        if warehouse not in WAREHOUSES:
            errors.add("Warehouse", warehouse, E_WAREHOUSE_NOT_FOUND, f"Warehouse '{warehouse}' not found")
        order_date = errors.date("OrderDate", _text(header, "OrderDate"), "Invalid date '{}'",
                                 row.get("OrderEntryDate") or self.clock.now_datetime().date())
        due_date = errors.date("DueDate", _text(header, "DueDate"), "Invalid date '{}'", row.get("OrderDueDate"))
        current_lines = {line["Line"]: dict(line) for line in self.po_lines(number)} if existing else {}
        next_line = max(current_lines, default=0)
        new_lines = dict(current_lines)
        details = order.find("OrderDetails")
        for element in list(details) if details is not None else []:
            line_errs = Errors()
            line_action = _flag(element, "LineActionType", "A")
            raw_line = _text(element, "PurchaseOrderLine")
            if line_action in ("C", "D"):
                try:
                    line_number = int(raw_line)
                except ValueError:
                    line_number = -1
                current = current_lines.get(line_number)
                received = (current or {}).get("MReceivedQty") or 0
                line_errs.check((current is None, "PurchaseOrderLine", raw_line, E_PO_LINE,
                                 f"Line '{raw_line}' not found on purchase order"),
                                (line_action == "D" and received > 0, "PurchaseOrderLine", raw_line, E_PO_LINE,
                                 f"Line '{raw_line}' has receipts and cannot be deleted"), first=True)
                if line_errs:
                    line_errors.append(line_error(element.tag, raw_line, line_errs))
                    continue
                if line_action == "D":
                    new_lines.pop(line_number)
                    continue
                line = dict(current)  # type: ignore[arg-type]
            else:
                next_line += 1
                line_number = next_line
                line = {c: None for c in self.tables["PorMasterDetail"].columns}
                line.update({"PurchaseOrder": number, "Line": line_number, "MReceivedQty": Decimal(0).quantize(QTY)})
            self._apply_po_line(element, line, warehouse, due_date, allow_non_stock, allow_zero_price, line_errs)
            if line_errs:
                line_errors.append(line_error(element.tag, str(line_number), line_errs))
            else:
                new_lines[line_number] = line
        if action == "A" and not new_lines and not line_errors:
            errors.add("OrderDetails", "", E_REQUIRED, "At least one order line is required")

        def commit() -> None:
            po = chosen[0] = number or self.next_po_number()
            row.update({
                "PurchaseOrder": po, "Supplier": supplier["Supplier"] if supplier else supplier_code,
                "OrderStatus": row.get("OrderStatus") or status, "OrderEntryDate": order_date,
                "OrderDueDate": due_date or order_date + timedelta(days=14), "Warehouse": warehouse,
                "Buyer": _text(header, "Buyer") or row.get("Buyer") or "",
                "Currency": supplier["Currency"] if supplier else row.get("Currency") or "$",
                "CustomerPoNumber": _text(header, "CustomerPoNumber") or row.get("CustomerPoNumber") or "",
                "LastChangeDate": self.clock.now_datetime(),
            })
            headers.put(row)
            detail = self.tables["PorMasterDetail"]
            for old in current_lines:
                if old not in new_lines:
                    detail.purge(po, old)
            for line in new_lines.values():
                line["PurchaseOrder"] = po
                detail.put(line)

        return plan(commit)

    def _apply_po_line(self: SysproSandbox, element: ET.Element, line: dict[str, Any], warehouse: str,
                       due_date: date | None, allow_non_stock: bool, allow_zero_price: bool,
                       errors: Errors) -> None:
        tag = element.tag
        if tag == "CommentLine":
            line.update({"LineType": "6", "MComment": _text(element, "Comment")})
            return
        if tag in ("FreightLine", "MiscChargeLine"):
            field = "FreightValue" if tag == "FreightLine" else "MiscChargeValue"
            value = errors.number(field, _text(element, field), f"Invalid {field} '{{}}'", lambda v: v >= 0)
            if value is None:
                return
            line.update({"LineType": "4" if tag == "FreightLine" else "5", "MPrice": value.quantize(COST),
                         "MOrderQty": Decimal(1).quantize(QTY),
                         "MStockDes": _text(element, "MiscDescription")
                         or ("Freight" if tag == "FreightLine" else "Miscellaneous")})
            return
        if tag != "StockLine":
            errors.add(tag, "", E_ACTION, f"Unknown order line type '{tag}'")
            return
        stock_code = _text(element, "StockCode") or (line.get("MStockCode") or "")
        item = self.tables["InvMaster"].get(stock_code) if stock_code else None
        line_warehouse = (_text(element, "Warehouse") or line.get("MWarehouse") or warehouse).upper()
        if item is None and not allow_non_stock:
            errors.add("StockCode", stock_code, E_STOCK_NOT_FOUND, f"Stock code '{stock_code}' not found")
        elif item is None and not (_text(element, "StockDescription") or line.get("MStockDes")):
            errors.add("StockDescription", "", E_REQUIRED, "Description is required for a non-stocked line")
        if line_warehouse not in WAREHOUSES:
            errors.add("Warehouse", line_warehouse, E_WAREHOUSE_NOT_FOUND, f"Warehouse '{line_warehouse}' not found")
        elif item is not None:
            self._holding(stock_code, line_warehouse, errors)
        raw_qty = _text(element, "OrderQty") or (str(line["MOrderQty"]) if line.get("MOrderQty") is not None else "")
        qty = errors.number("OrderQty", raw_qty, "Invalid order quantity '{}'", lambda v: v > 0, E_BAD_QUANTITY)
        raw_price = _text(element, "Price") or (str(line["MPrice"]) if line.get("MPrice") is not None else "")
        price = errors.number("Price", raw_price, "Invalid price '{}'", lambda v: v >= 0)
        if price == 0 and not allow_zero_price:
            errors.add("Price", raw_price, E_ZERO_PRICE, "Price may not be zero")
        if errors:
            return
        line_due = errors.date("LatestDueDate", _text(element, "LatestDueDate"), "Invalid date '{}'",
                               line.get("MLatestDueDate") or due_date)
        if errors:
            return
        line.update({
            "LineType": "1" if item is not None else "7", "MStockCode": item["StockCode"] if item else stock_code,
            "MStockDes": _text(element, "StockDescription")
            or (item["Description"] if item else line.get("MStockDes") or ""),
            "MWarehouse": line_warehouse, "MOrderQty": qty.quantize(QTY),  # type: ignore[union-attr]
            "MPrice": price.quantize(COST),  # type: ignore[union-attr]
            "MOrderUom": _text(element, "OrderUom") or (item["StockUom"] if item else line.get("MOrderUom") or "EA"),
            "MGlCode": _text(element, "LedgerCode") or line.get("MGlCode") or "", "MLatestDueDate": line_due,
            "MComment": "",
        })

    # ---- INVTMA (unconfirmed name, a setting): inventory adjustments -----------------------------------

    def _invtma(self: SysproSandbox, _method: str, parameters: ET.Element | None, document: ET.Element) -> str:
        physical = _flag(parameters, "PhysicalCount", "N") == "Y"
        holdings = self.tables["InvWarehouse"]
        pending: dict[tuple[Any, ...], Decimal] = {}
        plans: list[Plan] = []
        for item in self._items(document):
            errors = Errors()
            warehouse, stock_code = _text(item, "Warehouse").upper(), _text(item, "StockCode")
            errors.check((not warehouse, "Warehouse", "", E_REQUIRED, "Warehouse is required"),
                         (warehouse not in WAREHOUSES, "Warehouse", warehouse, E_WAREHOUSE_NOT_FOUND,
                          f"Warehouse '{warehouse}' not found"), first=True)
            known = self.tables["InvMaster"].get(stock_code) is not None
            errors.check((not known, "StockCode", stock_code, E_STOCK_NOT_FOUND,
                          f"Stock code '{stock_code}' not found"))
            holding = self._holding(stock_code, warehouse, errors) if known and warehouse in WAREHOUSES else None
            raw_qty = _text(item, "Quantity")
            qty = errors.number("Quantity", raw_qty, "Invalid quantity '{}'",
                                lambda v: v >= 0 if physical else v != 0, E_BAD_QUANTITY)
            delta = Decimal(0)
            if qty is not None and holding is not None:
                pk = holdings.key_of(holding)
                on_hand = pending.get(pk, holding["QtyOnHand"])
                delta = (qty - on_hand) if physical else qty
                if on_hand + delta < 0 and not self.settings.allow_negative_stock:
                    errors.add("Quantity", raw_qty, E_NEGATIVE_STOCK, "Adjustment would make quantity on hand negative "
                               f"for stock code '{stock_code}' in warehouse '{warehouse}'")
                else:
                    pending[pk] = on_hand + delta
            key = tags((name, _text(item, name)) for name in ("Warehouse", "StockCode"))
            plans.append((lambda key=key: key, bool(errors), errors.xml(),
                          lambda entry, item=item, holding=holding, delta=delta:
                          self._adjust(item, holding, delta, entry, physical)))
        return self._post("postinvadjustments", "Item", parameters, plans, journal="inv_journal")

    def _adjust(self: SysproSandbox, item: ET.Element, holding: dict[str, Any], delta: Decimal, entry: int,
                physical: bool) -> str:
        now = self.clock.now_datetime()
        self.tables["InvWarehouse"].put({**holding, "QtyOnHand": (holding["QtyOnHand"] + delta).quantize(QTY),
                                            "LastChangeDate": now})
        journal = self.counters["inv_journal"]
        self.tables["InvMovements"].put({
            "Journal": journal, "JournalEntry": entry, "StockCode": holding["StockCode"],
            "Warehouse": holding["Warehouse"], "TrnYear": now.year, "TrnMonth": now.month, "MovementType": "I",
            "TrnType": "P" if physical else "A", "TrnQty": delta.quantize(QTY),
            "TrnValue": (delta * holding["UnitCost"]).quantize(MONEY),
            "Reference": _text(item, "Reference"), "Notation": _text(item, "Notation"), "EntryDate": now,
        })
        return f"<Journal>{journal}</Journal><JournalEntry>{entry}</JournalEntry>"

    # ---- APSSSP (unconfirmed name and root, settings): supplier maintenance ---------------------------

    def _apsssp(self: SysproSandbox, method: str, parameters: ET.Element | None, document: ET.Element) -> str:
        root = self.settings.supplier_setup_root
        if document.tag != root:  # (unconfirmed) wording
            raise BusinessError(f"XmlIn root element '{document.tag}' is not valid - expected '{root}'")
        plans: list[Plan] = []
        seen: set[Any] = set()
        for item in self._items(document):
            errors = Errors()
            code = _text(item.find("Key"), "Supplier")
            existing = self.tables["ApSupplier"].get(code) if code else None
            errors.check((not code, "Supplier", "", E_REQUIRED, "Supplier code is required"),
                         (len(code) > 15, "Supplier", code, E_TOO_LONG, "Supplier code may not exceed 15 characters"),
                         (method == "Add" and (existing is not None or norm(code) in seen), "Supplier", code,
                          E_SUPPLIER_EXISTS, f"Supplier '{code}' already exists"),
                         (method in ("Update", "Delete") and existing is None, "Supplier", code, E_SUPPLIER_NOT_FOUND,
                          f"Supplier '{code}' not found"), first=True)
            seen.add(norm(code))
            values = {f: (item.findtext(f) or "").strip() for f in SUPPLIER_FIELDS if item.find(f) is not None}
            name, currency, on_hold = values.get("SupplierName", ""), values.get("Currency"), values.get("OnHold")
            errors.check((method == "Add" and not name, "SupplierName", "", E_REQUIRED, "Supplier name is required"),
                         (len(name) > 50, "SupplierName", name, E_TOO_LONG,
                          "Supplier name may not exceed 50 characters"),
                         (currency and currency not in CURRENCIES, "Currency", currency or "", E_BAD_CURRENCY,
                          f"Currency '{currency}' not found"),
                         (on_hold is not None and on_hold.upper() not in ("Y", "N"), "OnHold", on_hold or "",
                          E_BAD_VALUE, "On hold must be 'Y' or 'N'"))
            if method == "Delete" and existing is not None and not errors and (
                    self.tables["ApInvoice"].children(code) or self.tables["PorMasterHdr"].lookup("Supplier", code)):
                errors.add("Supplier", code, E_HAS_TRANSACTIONS,
                           f"Supplier '{code}' has transactions and cannot be deleted")
            plans.append((lambda code=code: f"<supplier>{escape(code)}</supplier>", bool(errors),
                          errors.xml(lowercase=True),
                          lambda _entry, args=(method, code, existing, values): self._save_supplier(*args)))
        return self._post(root.lower(), "item", parameters, plans, setup=True)

    def _save_supplier(self: SysproSandbox, method: str, code: str, existing: dict[str, Any] | None,
                       values: dict[str, str]) -> str:
        suppliers = self.tables["ApSupplier"]
        if method == "Delete":
            suppliers.purge(code)
            return ""
        row = dict(existing) if existing else {c: "" for c in suppliers.columns}
        if not existing:
            row.update({"Supplier": code.upper(), "Currency": "$", "OnHold": "N", "TermsCode": "30",
                        "DateSuppAdded": self.clock.now_datetime().date()})
        row.update({k: (v.upper() if k == "OnHold" else v) for k, v in values.items()})
        if not existing and not values.get("SupShortName"):
            row["SupShortName"] = values.get("SupplierName", "")[:20].upper()
        row["LastChangeDate"] = self.clock.now_datetime()
        suppliers.put(row)
        return ""
