"""SYSPRO's tables (typed columns on kit tables, SQL Server's collation) and their seed."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from random import Random
from typing import Any

from sandboxes.kit import seed as words
from sandboxes.kit import store

STR, INT, DATE, DATETIME = "str", "int", "date", "datetime"  # and dec2, dec5, dec6: decimals to 2, 5, 6 places
norm = store.collated  # SQL Server's default collation: no case, trailing blanks ignored
CHANGE_COLUMN = "LastChangeDate"  # (unconfirmed) the change column, as stored here
CHANGE_TABLES = ("ApSupplier", "ApInvoice", "PorMasterHdr", "InvMaster")  # where a site may name it otherwise
SEED_EPOCH = datetime(2025, 1, 6, 7, 0, 0)  # seeded records changed within the 120 days after this
SEED_SPREAD_SECONDS = 120 * 86400
QTY, COST, MONEY = Decimal("0.000001"), Decimal("0.00001"), Decimal("0.01")


def parse_datetime_text(text: str) -> datetime:
    text = text.strip().removesuffix("Z")
    if len(text) == 10:
        return datetime.strptime(text, "%Y-%m-%d")
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


def coerce(kind: str, value: Any) -> Any:
    """A stored value of column type `kind` from text or JSON; ValueError when it does not fit."""
    if value is None or (kind != STR and isinstance(value, str) and not value.strip()):
        return None
    if kind == STR:
        return str(value)
    if kind == INT or kind.startswith("dec"):
        try:
            number = Decimal(str(value).strip())
            return int(number) if kind == INT else number.quantize(Decimal(1).scaleb(-int(kind[3:])))
        except (InvalidOperation, OverflowError):  # 'abc', 'NaN', 'Infinity'
            raise ValueError(f"not a number: {value!r}") from None
    if kind == DATE:
        if isinstance(value, (date, datetime)):
            return value.date() if isinstance(value, datetime) else value
        return parse_datetime_text(str(value)).date()
    if kind == DATETIME:
        return value.replace(tzinfo=None) if isinstance(value, datetime) else parse_datetime_text(str(value))
    raise ValueError(f"unknown column type {kind}")


def render(value: Any) -> str:
    """Column value as SYSPRO writes it in XML."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds")
    return value.isoformat() if isinstance(value, date) else str(value)


def to_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return float(value) if isinstance(value, Decimal) else value


def sort_key(value: Any) -> tuple[int, Any]:
    """None first; dates compare with date-times; text by the collation."""
    if value is None:
        return (0, "")
    value = norm(value)
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    return (1, value)


class Table:
    """One SYSPRO table: its columns and types over a kit table keyed under the collation.

    Everything else (get, put, purge, children, key_of, lookup, range, ordered_by) is the kit table's."""

    def __init__(self, name: str, columns: dict[str, str], key: tuple[str, ...], change: str | None = None) -> None:
        self.name, self.columns, self.key, self.change = name, columns, key, change
        self.store = store.Table(key, normalise=norm, parent=key[:1], name=name)  # rows grouped by the first key

    def __getattr__(self, name: str) -> Any:
        if name == "store":  # not yet set (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.store, name)

    @property
    def rows(self) -> dict[tuple[Any, ...], dict[str, Any]]:
        """Rows by normalised key, in key order."""
        return {self.store.key_of(row): row for row in self.store.rows()}

    def changed_since(self, bound: datetime | None) -> list[dict[str, Any]]:
        """Rows by (change column, key), from `bound` on when given."""
        assert self.change is not None
        return self.store.range(self.change, ge=bound) if bound is not None else self.store.ordered_by(self.change)

    def names(self, change_column: str) -> dict[str, str]:
        """Column names a query may use -> stored names, the change column as the site calls it."""
        if self.name not in CHANGE_TABLES:
            return {c: c for c in self.columns}
        return {(change_column if c == CHANGE_COLUMN else c): c for c in self.columns}


def _table(name: str, key: tuple[str, ...], change: str | None, columns: str) -> Table:
    """`columns`: 'Name:type ...', type one of str int date datetime dec2 dec5 dec6 (str by default)."""
    parsed = dict((part.split(":") + [STR])[:2] for part in columns.split())  # type: ignore[misc]
    return Table(name, parsed, key, change)


def make_tables() -> dict[str, Table]:
    return {t.name: t for t in (
        _table("ApSupplier", ("Supplier",), CHANGE_COLUMN,
               "Supplier SupplierName SupShortName SupAddr1 SupAddr2 SupAddr3 SupAddr4 SupAddr5 SupPostalCode "
               "Telephone Email Contact Currency TermsCode SupplierClass Branch OnHold TaxRegnNum DateSuppAdded:date "
               "LastChangeDate:datetime"),
        _table("ApInvoice", ("Supplier", "Invoice"), CHANGE_COLUMN,
               "Supplier Invoice DocumentType InvoiceDate:date DueDate:date Reference Notation Currency "
               "OrigInvValue:dec2 TaxValue:dec2 MthInvBal1:dec2 Journal:int EntryNumber:int Branch PostDate:date "
               "LastChangeDate:datetime"),
        _table("PorMasterHdr", ("PurchaseOrder",), CHANGE_COLUMN,
               "PurchaseOrder Supplier OrderStatus OrderEntryDate:date OrderDueDate:date Warehouse Buyer Currency "
               "CustomerPoNumber LastChangeDate:datetime"),
        _table("PorMasterDetail", ("PurchaseOrder", "Line"), None,
               "PurchaseOrder Line:int LineType MStockCode MStockDes MWarehouse MOrderQty:dec6 MReceivedQty:dec6 "
               "MPrice:dec5 MOrderUom MGlCode MLatestDueDate:date MComment"),
        _table("InvMaster", ("StockCode",), CHANGE_COLUMN,
               "StockCode Description LongDesc StockUom ProductClass Supplier PartCategory WarehouseToUse "
               "DateStkAdded:date LastChangeDate:datetime"),
        _table("InvWarehouse", ("StockCode", "Warehouse"), "LastChangeDate",
               "StockCode Warehouse QtyOnHand:dec6 QtyAllocated:dec6 QtyOnOrder:dec6 UnitCost:dec5 "
               "LastChangeDate:datetime"),
        _table("InvMovements", ("Journal", "JournalEntry"), "EntryDate",
               "Journal:int JournalEntry:int StockCode Warehouse TrnYear:int TrnMonth:int MovementType TrnType "
               "TrnQty:dec6 TrnValue:dec2 Reference Notation EntryDate:datetime"),
    )}


# Control-API entity names (and the table names themselves) -> table.
ENTITY_TABLES = {
    "suppliers": "ApSupplier", "ap_invoices": "ApInvoice", "purchase_orders": "PorMasterHdr",
    "purchase_order_lines": "PorMasterDetail", "stock_items": "InvMaster", "warehouse_stock": "InvWarehouse",
    "inventory_movements": "InvMovements",
}
# Stocked items: SYSPRO product class (the stock code's prefix) and the part from the seed vocabulary.
STOCKED = tuple((cls, words.ITEMS[i]) for cls, i in (
    ("CAP", 0), ("FLT", 2), ("CPR", 7), ("THM", 6), ("VLV", 11), ("REF", 5), ("WIR", 13), ("CON", 1), ("MTR", 4),
    ("DUC", 15)))


def seed(tables: dict[str, Table], counters: dict[str, int], distribution: dict[tuple[Any, ...], list[dict[str, Any]]],
         rng: Random, records: int) -> None:
    count = max(int(records), 0)
    stamps: list[datetime] = []

    def stamp() -> datetime:
        # Every tenth record shares the previous stamp: equal change dates must page cleanly.
        if stamps and rng.random() < 0.1:
            value = stamps[-1]
        else:
            value = SEED_EPOCH + timedelta(milliseconds=rng.randrange(SEED_SPREAD_SECONDS * 1000))
        stamps.append(value)
        return value

    def day(offset: int, spread: int) -> date:
        return (SEED_EPOCH + timedelta(days=offset + rng.randrange(0, spread))).date()

    suppliers: list[dict[str, Any]] = []
    for i in range(count):
        if suppliers and i % 7 == 6:  # the kind of twin an ERP accumulates
            twin = suppliers[rng.randrange(len(suppliers))]
            name = words.near_duplicate(rng, twin["SupplierName"])
            place = (words.near_duplicate_street(rng, twin["SupAddr1"]), twin["SupAddr2"], twin["SupAddr3"],
                     twin["SupAddr4"], twin["SupPostalCode"])
        else:
            name = words.company_name(rng)
            place = words.address(rng)[:5]
        contact = words.person(rng).name if rng.random() < 0.8 else ""
        suppliers.append(tables["ApSupplier"].put({
            "Supplier": f"S{i + 1:05d}", "SupplierName": name, "SupShortName": name[:20].upper(),
            "SupAddr1": place[0], "SupAddr2": place[1], "SupAddr3": place[2], "SupAddr4": place[3], "SupAddr5": "USA",
            "SupPostalCode": place[4], "Telephone": words.phone(rng, "dashed"), "Email": words.email_for(name),
            "Contact": contact, "Currency": "$", "TermsCode": words.pick(rng, ["30", "45", "60", "CO"]),
            "SupplierClass": words.pick(rng, ["MAT", "SUB", "SVC"]), "Branch": "",
            "OnHold": "Y" if i % 23 == 22 else "N",
            "TaxRegnNum": "", "DateSuppAdded": day(-2000, 1970), "LastChangeDate": stamp(),
        }))

    stock: list[dict[str, Any]] = []
    holdings: list[dict[str, Any]] = []
    for i in range(max(count, 10)):
        product_class, part = STOCKED[i % len(STOCKED)]
        code = f"{product_class}-{i + 1:05d}"
        stock.append(tables["InvMaster"].put({
            "StockCode": code, "Description": part.description, "LongDesc": f"{part.description} (catalog {i + 1})",
            "StockUom": part.unit, "ProductClass": product_class,
            "Supplier": suppliers[i % len(suppliers)]["Supplier"] if suppliers else "", "PartCategory": "B",
            "WarehouseToUse": "WH01", "DateStkAdded": day(-900, 870), "LastChangeDate": stamp(),
        }))
        for warehouse in ("WH01", "VAN1") if i % 3 else ("WH01", "WH02", "VAN1"):
            holdings.append(tables["InvWarehouse"].put({
                "StockCode": code, "Warehouse": warehouse, "QtyOnHand": Decimal(rng.randrange(0, 400)).quantize(QTY),
                "QtyAllocated": Decimal(0).quantize(QTY), "QtyOnOrder": Decimal(0).quantize(QTY),
                "UnitCost": (part.cost * Decimal(rng.randrange(80, 121)) / 100).quantize(COST),
                "LastChangeDate": stamp(),
            }))

    invoices = tables["ApInvoice"]
    for i in range(count):
        value = words.amount(rng, 20, 25_000).quantize(MONEY)
        tax = (value * Decimal("0.08") / Decimal("1.08")).quantize(MONEY)
        invoice_date = day(0, 110)
        counters["ap_journal"] = 1 + i // 50
        row = invoices.put({
            "Supplier": words.pick(rng, suppliers)["Supplier"], "Invoice": f"INV-{100000 + i * 7 + rng.randrange(7)}",
            "DocumentType": "I", "InvoiceDate": invoice_date, "DueDate": invoice_date + timedelta(days=30),
            "Reference": f"ST-{rng.randrange(10000, 99999)}", "Currency": "$", "OrigInvValue": value, "TaxValue": tax,
            "Notation": words.pick(rng, ["Materials", "Parts", "Service call", ""]),
            "MthInvBal1": value if rng.random() < 0.7 else Decimal("0.00"), "Journal": counters["ap_journal"],
            "EntryNumber": i % 50 + 1, "PostDate": invoice_date, "LastChangeDate": stamp(),
        })
        distribution[invoices.key_of(row)] = [
            {"LedgerCode": "10-5500", "LedgerValue": value - tax, "LedgerNotation": "Materials"}]

    for i in range(count):
        counters["po"] = i + 1
        number = f"P{i + 1:05d}"
        entered = day(0, 110)
        warehouse = words.pick(rng, ["WH01", "WH01", "WH02"])
        tables["PorMasterHdr"].put({
            "PurchaseOrder": number, "Supplier": words.pick(rng, suppliers)["Supplier"],
            "OrderStatus": words.pick(rng, ["1", "1", "4", "9", "*"]), "OrderEntryDate": entered,
            "OrderDueDate": entered + timedelta(days=14), "Warehouse": warehouse,
            "Buyer": words.pick(rng, ["JDS", "AMK", "PLR"]), "Currency": "$",
            "CustomerPoNumber": f"ST-PO-{20000 + i}" if i % 2 == 0 else "", "LastChangeDate": stamp(),
        })
        for line in range(1, rng.randrange(1, 5) + 1):
            item = words.pick(rng, stock)
            tables["PorMasterDetail"].put({
                "PurchaseOrder": number, "Line": line, "LineType": "1", "MStockCode": item["StockCode"],
                "MStockDes": item["Description"], "MWarehouse": warehouse,
                "MOrderQty": Decimal(rng.randrange(1, 60)).quantize(QTY), "MReceivedQty": Decimal(0).quantize(QTY),
                "MPrice": (Decimal(rng.randrange(150, 90000)) / 100).quantize(COST), "MOrderUom": item["StockUom"],
                "MGlCode": "", "MLatestDueDate": entered + timedelta(days=14), "MComment": "",
            })

    for i in range(count):
        holding = words.pick(rng, holdings)
        counters["inv_journal"] = 1 + i // 20
        qty = Decimal(words.pick(rng, [-5, -2, -1, 1, 2, 3, 10])).quantize(QTY)
        entered = stamp()
        tables["InvMovements"].put({
            "Journal": counters["inv_journal"], "JournalEntry": i % 20 + 1, "StockCode": holding["StockCode"],
            "Warehouse": holding["Warehouse"], "TrnYear": entered.year, "TrnMonth": entered.month,
            "MovementType": "I", "TrnType": words.pick(rng, ["A", "A", "I", "R"]), "TrnQty": qty,
            "TrnValue": (qty * holding["UnitCost"]).quantize(MONEY), "Reference": f"ADJ-{30000 + i}",
            "Notation": words.pick(rng, ["Cycle count", "Damaged", "Van restock", ""]), "EntryDate": entered,
        })
