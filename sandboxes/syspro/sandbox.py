"""The SYSPRO sandbox: its settings, state (tables, counters, sessions) and control-API hooks."""

from __future__ import annotations

from decimal import Decimal
from random import Random
from typing import Any, Callable

from pydantic import BaseModel, Field

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit.clock import MILLISECOND_US, Clock

from .routes import ODATA_SITE, REST_BASE, Routes
from .rules import BusinessObjects
from .sessions import SessionStore, SysproStats
from .tables import CHANGE_COLUMN, ENTITY_TABLES, Table, coerce, make_tables, seed, to_json


# What a tick changes in a record of each table, given the record and the tick's number.
TICK_CHANGES: dict[str, Callable[[dict[str, Any], int], dict[str, Any]]] = {
    "ApSupplier": lambda row, n: {"Telephone": f"555-{n % 900 + 100}-{n % 9000 + 1000}"},
    "ApInvoice": lambda row, n: {"MthInvBal1": Decimal("0.00")},
    "PorMasterHdr": lambda row, n: {"OrderStatus": "4" if row["OrderStatus"] == "1" else row["OrderStatus"]},
    "InvMaster": lambda row, n: {"LongDesc": f"{row['Description']} (rev {n})"},
}


class SysproSettings(BaseModel):
    """Behaviour a real site varies; readable and changeable at `/_sandbox/syspro/settings`."""

    seats: int = Field(10, ge=1)  # e.net licences; (unconfirmed) sites buy a handful
    session_idle_seconds: float = Field(1200, gt=0)  # (unconfirmed) idle expiry, 20 min
    comfnd_default_rows: int = Field(100, ge=1)  # (unconfirmed) rows when ReturnRows is absent
    odata_max_page_size: int = Field(1000, ge=1)  # (unconfirmed) server-driven paging size
    allow_negative_stock: bool = False
    rate_limit: float | None = None  # calls per second; SYSPRO documents no limit
    unlicensed_objects: list[str] = Field(default_factory=list)  # business objects this site lacks (ERROR text)
    host_version: str = "8.0.0.31"  # what GetVersion answers (a recorded SYSPRO 7 host said 7.0.0.6)
    # Round 2: still unconfirmed, so a sandbox can be set up the other way and `check` tested against it.
    supplier_setup_object: str = Field("APSSSP", min_length=1)  # supplier maintenance business object
    supplier_setup_root: str = Field("SetupApSupplier", min_length=1)  # its XmlIn root element
    adjustment_object: str = Field("INVTMA", min_length=1)  # stock adjustment business object
    change_column: str = Field(CHANGE_COLUMN, min_length=1)  # on ApSupplier, ApInvoice, PorMasterHdr, InvMaster


class SysproSandbox(Routes, BusinessObjects, Sandbox):
    vendor = "syspro"

    OPERATOR = "ADMIN"
    OPERATOR_PASSWORD = "Sandbox-Op-Pass-1"
    OPERATOR_GROUP = "ADM"
    COMPANY_ID = "EDU1"
    COMPANY_PASSWORD = "Co-Pass-7"
    COMPANY_NAME = "Outdoor Comfort Services (sandbox)"

    def __init__(self, options: SandboxOptions | None = None, settings: SysproSettings | None = None) -> None:
        options = options or SandboxOptions()
        updates: dict[str, Any] = {}
        if options.token_ttl:
            updates["session_idle_seconds"] = float(options.token_ttl)
        if options.rate_limit:
            updates["rate_limit"] = options.rate_limit
        self.settings = (settings or SysproSettings()).model_copy(update=updates)
        self.clock = Clock(MILLISECOND_US)
        self.tables = make_tables()
        self.ledger_distribution: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.rate = RateWindow(self.settings.rate_limit)
        super().__init__(options)
        self.tokens = self.sessions = SessionStore(self)  # type: ignore[assignment]
        self.stats = SysproStats(self.sessions)

    def apply_settings(self, settings: SysproSettings) -> None:
        self.settings = settings
        self.rate = RateWindow(settings.rate_limit)

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": f"{self.base_url}{REST_BASE}",
            "token_url": None,
            "credentials": {"operator": self.OPERATOR, "operator_password": self.OPERATOR_PASSWORD,
                            "company_id": self.COMPANY_ID, "company_password": self.COMPANY_PASSWORD},
        }

    def odata_base(self) -> str:
        return f"{self.base_url}{ODATA_SITE}/{self.COMPANY_ID}"

    # ---- state ------------------------------------------------------------------------------------

    def clear_state(self) -> None:
        for table in self.tables.values():
            table.clear()
        self.ledger_distribution.clear()
        self.counters = {"po": 0, "ap_journal": 0, "inv_journal": 0}
        self._tick_cursor = 0
        self.rate.reset()

    def seed(self, rng: Random, records: int) -> None:
        seed(self.tables, self.counters, self.ledger_distribution, rng, records)

    def po_lines(self, purchase_order: str) -> list[dict[str, Any]]:
        return self.tables["PorMasterDetail"].children(purchase_order)

    def next_po_number(self) -> str:
        while True:
            self.counters["po"] += 1
            number = f"P{self.counters['po']:05d}"
            if self.tables["PorMasterHdr"].get(number) is None:
                return number

    # ---- control API hooks ------------------------------------------------------------------------

    def _table_for(self, entity: str) -> Table:
        name = ENTITY_TABLES.get(entity, entity)
        if name not in self.tables:
            raise KeyError(entity)
        return self.tables[name]

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table = self._table_for(entity)
        return [self._entity_json(table, row) for row in table.store.rows()]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """A purchase order may come without its number (the next is drawn) and with its `lines`."""
        table = self._table_for(entity)
        payload = dict(payload)
        lines = payload.pop("lines", None)
        unknown = [k for k in payload if k not in table.columns]
        if unknown:
            raise ValueError(f"unknown {table.name} columns: {', '.join(sorted(unknown))}")
        missing = [k for k in table.key if payload.get(k) in (None, "")]
        is_po = table.name == "PorMasterHdr"
        if missing and not (is_po and missing == ["PurchaseOrder"]):
            raise ValueError(f"{table.name} needs its key {', '.join(table.key)}")
        existing = None if missing else table.get(*(payload[k] for k in table.key))
        row: dict[str, Any] = dict(existing) if existing else dict.fromkeys(table.columns)
        row.update({column: coerce(table.columns[column], value) for column, value in payload.items()})
        if is_po and not row.get("PurchaseOrder"):
            row["PurchaseOrder"] = self.next_po_number()
        if table.change and table.change not in payload:
            row[table.change] = self.clock.now_datetime()
        table.put(row)
        if is_po and lines is not None:
            detail = self.tables["PorMasterDetail"]
            for line in self.po_lines(row["PurchaseOrder"]):
                detail.purge(line["PurchaseOrder"], line["Line"])
            for number, line in enumerate(lines, start=1):
                values = {"Line": number, "LineType": "1", **line, "PurchaseOrder": row["PurchaseOrder"]}
                unknown = [c for c in values if c not in detail.columns]
                if unknown:
                    raise ValueError(f"unknown PorMasterDetail column: {unknown[0]}")
                detail.put({c: coerce(detail.columns[c], values.get(c)) for c in detail.columns})
        return self._entity_json(table, row)

    def _entity_json(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """The row, with a purchase order's lines and an invoice's ledger distribution."""
        out = _json(row)
        if table.name == "PorMasterHdr":
            out["lines"] = [_json(line) for line in self.po_lines(row["PurchaseOrder"])]
        if table.name == "ApInvoice":
            out["LedgerDistribution"] = [_json(line) for line in self.ledger_distribution.get(table.key_of(row), [])]
        return out

    def tick(self, count: int) -> list[dict[str, Any]]:
        """Change `count` records in turn: a supplier, an invoice, a PO, a stock item, ..."""
        changed: list[dict[str, Any]] = []
        for _ in range(max(0, int(count))):
            name = list(TICK_CHANGES)[self._tick_cursor % len(TICK_CHANGES)]
            self._tick_cursor += 1
            table = self.tables[name]
            rows = table.store.rows()
            if not rows:
                continue
            # the least recently changed record moves next (first in key order among equals)
            row = dict(min(rows, key=lambda r: (r[CHANGE_COLUMN] is not None, r[CHANGE_COLUMN])))
            row.update(TICK_CHANGES[name](row, self._tick_cursor), **{CHANGE_COLUMN: self.clock.now_datetime()})
            table.put(row)
            changed.append({"entity": table.name, "key": [row[k] for k in table.key],
                            "changed_at": to_json(row[CHANGE_COLUMN])})
        return changed


def _json(row: dict[str, Any]) -> dict[str, Any]:
    return {k: to_json(v) for k, v in row.items()}
