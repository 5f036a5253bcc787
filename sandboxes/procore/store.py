"""Procore's records on the kit table store, and the seed and tick that fill and change them.

Every resource is a table keyed by a Procore-style numeric id (each type counts from its own
start), grouped by `_scope` (the project of a commitment, direct cost or cost code; the holder
of a line item; None for company records), with `origin_id` indexed, soft delete in `_deleted`
and second-resolution `_created` / `_updated` times.
"""

from __future__ import annotations

import itertools
import re
import string
import time
from decimal import Decimal
from random import Random
from typing import TYPE_CHECKING, Any, Callable, Iterable

from sandboxes.kit import seed as words
from sandboxes.kit.store import Table, exact

from .values import (COST_CODE_FIELDS, DC_FIELDS, DC_STATUSES, DEFAULT_LINE_ITEM_TYPES, LINE_FIELDS,
                     LINE_ITEM_TYPE_FIELDS, PO_FIELDS, PO_LOCKED_FROM_DRAFT, PO_STATUSES, PROJECT_FIELDS,
                     QUERY_CACHE_SIZE, VENDOR_FIELDS, iso)

if TYPE_CHECKING:
    from .sandbox import ProcoreSandbox

Row = dict[str, Any]
ANY: Any = object()  # `live(..., scope=ANY)`: in whichever scope
FIRST_IDS = {  # where each resource's ids start, in Procore's ranges
    "vendors": 8800, "projects": 562949953421000, "cost_codes": 40100, "line_item_types": 3522600,
    "purchase_order_contracts": 1_200_000, "purchase_order_line_items": 7_000_000,
    "direct_costs": 300_000, "direct_cost_line_items": 9_000_000,
}
SECRET_ALPHABET = string.ascii_letters + string.digits + "-_"
UNITS = ("ea", "lf", "sf", "ls")
TICKED: dict[str, Callable[[Random], Row]] = {  # what a tick changes, table by table in turn
    "vendors": lambda rng: {"business_phone": words.phone(rng)},
    "purchase_order_contracts": lambda rng: {"description": f"Revised scope {rng.randint(1, 999)}"},
    "direct_costs": lambda rng: {"terms": words.pick(rng, words.PAYMENT_TERMS)},
}


class Records(Table):
    """One resource's rows; a row is hidden once `_deleted` holds its deletion time."""

    def __init__(self, name: str, first_id: int) -> None:
        super().__init__("id", ids=first_id, normalise=exact, indexed=("origin_id",), parent=("_scope",),
                         deleted_field="_deleted", cache_size=QUERY_CACHE_SIZE, name=name)

    def live(self, rid: Any, scope: Any = ANY) -> Row | None:
        row = self.get(rid)
        return None if row is None or (scope is not ANY and row["_scope"] != scope) else row

    def row(self, rid: Any) -> Row | None:
        """The row, soft-deleted or not."""
        return self.get(rid, deleted="with")

    def holder(self, origin: str | None) -> int | None:
        """The id of the live row holding `origin` (unique company-wide), if any."""
        row = self.one("origin_id", origin) if origin else None
        return row["id"] if row else None

    def scan(self, scope: Any, ids: Iterable[int] | None = None) -> list[Row]:
        """The rows of `ids` in that order, or else all the scope's rows; deleted ones included."""
        return self.children(scope, deleted="with") if ids is None else [self.get(i, deleted="with") for i in ids]

    def insert(self, row: Row, scope: Any) -> Row:
        row["_scope"] = scope
        return self.add(row)

    def write(self, row: Row, changes: Row) -> Row:
        row.update(changes)
        return self.put(row)


def seed(sb: "ProcoreSandbox", rng: Random, records: int) -> None:
    """A company with projects, cost codes per project, vendors (some spelled twice), and
    purchase order contracts and direct costs with their lines; the same seed, the same data."""
    tables = sb.tables
    sb._tick_rng = Random(sb.options.seed + 2)  # ticks repeat after each reset
    sb.company_id = rng.randint(4_000_000, 4_999_999)
    sb.company_name = f"{words.pick(rng, words.COMPANY_STEMS)} General Contractors"
    sb.client_id, sb.client_secret = ("".join(rng.choice(SECRET_ALPHABET) for _ in range(43)) for _ in range(2))
    sb.user_id = rng.randint(1_000_000, 9_999_999)
    now, times = int(time.time()), Random(sb.options.seed + 3)  # times drawn apart from the words
    start = now - 180 * 86400

    def add(table: str, fields: Iterable[str], scope: int | None, dated: str = "", **values: Any) -> Row:
        """A new record with every field, stamped at a drawn time (`dated`: a date field set to its day)."""
        created = times.randint(start, now - 2 * 86400)
        row = {**dict.fromkeys(fields), **values, "_created": created,
               "_updated": times.randint(created, now - 86400), "_deleted": None}
        if dated:
            row[dated] = time.strftime("%Y-%m-%d", time.gmtime(created))
        return tables[table].insert(row, scope)

    def add_lines(table: str, holder: Row, count: int, line: Callable[[], Row]) -> None:
        """`count` line items of `holder`, stamped with it, each on a leaf cost code of its project."""
        for position in range(count):
            tables[table].insert({
                **dict.fromkeys(LINE_FIELDS), **line(), "cost_code_id": words.pick(rng, leaf_codes[holder["_scope"]]),
                "line_item_type_id": words.pick(rng, types), "position": position + 1,
                "_created": holder["_created"], "_updated": holder["_updated"], "_deleted": None}, holder["id"])

    for code, name, base in DEFAULT_LINE_ITEM_TYPES:
        add("line_item_types", LINE_ITEM_TYPE_FIELDS, None, code=code, name=name, base_type=base)
    types = [t["id"] for t in tables["line_item_types"].rows("with")]
    project_count = max(2, min(8, records // 25))
    for n in range(project_count):
        city = words.pick(rng, words.CITIES)
        add("projects", PROJECT_FIELDS, None,
            name=f"{words.pick(rng, words.PROJECT_NAMES)} {['Phase', 'Building', 'Wing'][n % 3]} {n + 1}",
            project_number=f"{24 + n // 4:02d}-{100 + n:03d}", address=words.street(rng), city=city.name,
            state_code=city.state, zip=city.postcode, country_code="US",
            active=n < project_count - 1 or project_count == 2, origin_id=f"JOB-{1000 + n}")
    project_ids = [p["id"] for p in tables["projects"].rows("with")]

    leaf_codes: dict[int, list[int]] = {}
    divisions = [(head, list(sections)) for head, sections in
                 itertools.groupby(words.COST_CODES, key=lambda c: (c.division, c.division_name))]
    for pid in project_ids:
        leaf_codes[pid] = []
        for position, ((division, division_name), sections) in enumerate(divisions):
            parent = add("cost_codes", COST_CODE_FIELDS, pid, name=division_name, code=division, position=position)
            for child_position, section in enumerate(sections):
                leaf_codes[pid].append(add("cost_codes", COST_CODE_FIELDS, pid, name=section.name, code=section.code,
                                           parent_id=parent["id"], position=child_position)["id"])

    vendors: list[Row] = []
    for n in range(records):
        if n >= 8 and n % 9 == 0:  # the same supplier typed twice
            twin = words.pick(rng, vendors)
            name, street = words.near_duplicate(rng, twin["name"]), words.near_duplicate_street(rng, twin["address"])
            city, state, zip_code = twin["city"], twin["state_code"], twin["zip"]
        else:
            name, street = words.company_name(rng), words.street(rng)
            where = words.pick(rng, words.CITIES)
            city, state, zip_code = where.name, where.state, where.postcode
        vendors.append(add(
            "vendors", VENDOR_FIELDS, None, name=name, abbreviated_name=re.sub(r"[^A-Z]", "", name.upper())[:6] or None,
            address=street, city=city, state_code=state, zip=zip_code, country_code="US",
            business_phone=words.phone(rng), email_address=words.email_for(name),
            is_active=rng.random() > 0.08, authorized_bidder=rng.random() > 0.5,
            prequalified=rng.random() > 0.7, union_member=False, non_union_prevailing_wage=False,
            trade_ids=[], standard_cost_code_ids=[], origin_id=f"ERP-V{10000 + n}" if rng.random() < 0.6 else None))
    vendor_ids = [v["id"] for v in vendors]

    for n in range(records):
        pid = project_ids[n % len(project_ids)]
        status = words.pick(rng, PO_STATUSES)
        po = add("purchase_order_contracts", PO_FIELDS, pid, "contract_date",
                 number=f"PO-{len(tables['purchase_order_contracts'].scan(pid)) + 1:04d}",
                 title=f"{words.pick(rng, words.TRADES)} materials", vendor_id=words.pick(rng, vendor_ids),
                 status=status, executed=status in PO_LOCKED_FROM_DRAFT, private=False,
                 accounting_method="amount", retainage_percent=Decimal(words.pick(rng, (0, 5, 10))),
                 payment_terms=words.pick(rng, words.PAYMENT_TERMS),
                 origin_id=f"ERP-PO{50000 + n}" if rng.random() < 0.5 else None)

        def po_line() -> Row:
            part, quantity = words.item(rng), Decimal(rng.randint(1, 40))
            return {"description": part.description, "quantity": quantity, "unit_cost": part.cost,
                    "amount": quantity * part.cost, "uom": words.pick(rng, UNITS), "extended_type": "calculated"}

        add_lines("purchase_order_line_items", po, rng.randint(1, 4), po_line)

    for n in range(records):
        pid = project_ids[n % len(project_ids)]
        kind = "invoice" if rng.random() < 0.8 else words.pick(rng, ("expense", "payroll"))
        dc = add("direct_costs", DC_FIELDS, pid, "direct_cost_date", direct_cost_type=kind,
                 vendor_id=words.pick(rng, vendor_ids) if kind == "invoice" else None,
                 invoice_number=f"INV-{rng.randint(10000, 99999)}-{n}" if kind == "invoice" else None,
                 status=words.pick(rng, DC_STATUSES), terms="Net 30",
                 origin_id=f"ERP-AP{70000 + n}" if rng.random() < 0.5 else None)

        def dc_line() -> Row:
            amount = words.amount(rng, 10, 9000)
            return {"description": words.item(rng).description, "amount": amount, "quantity": Decimal(1),
                    "unit_cost": amount, "uom": "ls", "extended_type": "manual"}

        add_lines("direct_cost_line_items", dc, rng.randint(1, 3), dc_line)


def tick(sb: "ProcoreSandbox", count: int) -> list[dict[str, Any]]:
    """Change `count` live records in turn (a vendor's phone, a commitment's scope, a cost's terms)."""
    rng, changed, tables = sb._tick_rng, [], list(TICKED)
    candidates = {name: sb.tables[name].rows("with")[:] for name in TICKED}
    for n in range(max(0, count)):
        table = tables[n % len(tables)]
        picks = (rng.choice(candidates[table]) if candidates[table] else None for _ in range(20))
        row = next((pick for pick in picks if pick is not None and pick["_deleted"] is None), None)
        if row is not None:
            sb.tables[table].write(row, {**TICKED[table](rng), "_updated": sb.clock.now_whole_seconds()})
            changed.append((table, row))
    return [{"entity": table, "id": row["id"], "updated_at": iso(row["_updated"])} for table, row in changed]
