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
from typing import TYPE_CHECKING, Any, Iterable

from sandboxes.kit import seed as words
from sandboxes.kit.store import Table, exact

from .values import (COST_CODE_FIELDS, DC_FIELDS, DC_STATUSES, DEFAULT_LINE_ITEM_TYPES, LINE_FIELDS, PO_FIELDS,
                     PO_LOCKED_FROM_DRAFT, PO_STATUSES, PROJECT_FIELDS, QUERY_CACHE_SIZE, VENDOR_FIELDS)

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
TICKED = ("vendors", "purchase_order_contracts", "direct_costs")


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


def new_tables() -> dict[str, Records]:
    return {name: Records(name, first_id) for name, first_id in FIRST_IDS.items()}


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

    def stamped(row: Row) -> Row:
        created = times.randint(start, now - 2 * 86400)
        return {**row, "_created": created, "_updated": times.randint(created, now - 86400), "_deleted": None}

    for code, name, base in DEFAULT_LINE_ITEM_TYPES:
        tables["line_item_types"].insert(stamped({"code": code, "name": name, "base_type": base,
                                                 "origin_id": None, "origin_data": None}), None)
    project_count = max(2, min(8, records // 25))
    for n in range(project_count):
        city = words.pick(rng, words.CITIES)
        tables["projects"].insert(stamped({
            **dict.fromkeys(PROJECT_FIELDS),
            "name": f"{words.pick(rng, words.PROJECT_NAMES)} {['Phase', 'Building', 'Wing'][n % 3]} {n + 1}",
            "project_number": f"{24 + n // 4:02d}-{100 + n:03d}", "address": words.street(rng), "city": city.name,
            "state_code": city.state, "zip": city.postcode, "country_code": "US",
            "active": n < project_count - 1 or project_count == 2, "origin_id": f"JOB-{1000 + n}",
        }), None)
    project_ids = [p["id"] for p in tables["projects"].rows("with")]

    leaf_codes: dict[int, list[int]] = {}
    divisions = itertools.groupby(words.COST_CODES, key=lambda c: (c.division, c.division_name))
    divisions = [(head, list(sections)) for head, sections in divisions]
    for pid in project_ids:
        leaf_codes[pid] = []
        for position, ((division, division_name), sections) in enumerate(divisions):
            parent = tables["cost_codes"].insert(stamped({**dict.fromkeys(COST_CODE_FIELDS), "name": division_name,
                                                         "code": division, "position": position}), pid)
            for child_position, section in enumerate(sections):
                leaf = tables["cost_codes"].insert(stamped({
                    **dict.fromkeys(COST_CODE_FIELDS), "name": section.name, "code": section.code,
                    "parent_id": parent["id"], "position": child_position}), pid)
                leaf_codes[pid].append(leaf["id"])

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
        vendors.append(tables["vendors"].insert(stamped({
            **dict.fromkeys(VENDOR_FIELDS),
            "name": name, "abbreviated_name": re.sub(r"[^A-Z]", "", name.upper())[:6] or None,
            "address": street, "city": city, "state_code": state, "zip": zip_code, "country_code": "US",
            "business_phone": words.phone(rng), "email_address": words.email_for(name),
            "is_active": rng.random() > 0.08, "authorized_bidder": rng.random() > 0.5,
            "prequalified": rng.random() > 0.7, "union_member": False, "non_union_prevailing_wage": False,
            "trade_ids": [], "standard_cost_code_ids": [],
            "origin_id": f"ERP-V{10000 + n}" if rng.random() < 0.6 else None,
        }), None))
    vendor_ids = [v["id"] for v in vendors]

    types = [t["id"] for t in tables["line_item_types"].rows("with")]
    for n in range(records):
        pid = project_ids[n % len(project_ids)]
        status = words.pick(rng, PO_STATUSES)
        po = stamped({
            **dict.fromkeys(PO_FIELDS),
            "number": f"PO-{len(tables['purchase_order_contracts'].scan(pid)) + 1:04d}",
            "title": f"{words.pick(rng, words.TRADES)} materials", "vendor_id": words.pick(rng, vendor_ids),
            "status": status, "executed": status in PO_LOCKED_FROM_DRAFT, "private": False,
            "accounting_method": "amount", "retainage_percent": Decimal(words.pick(rng, (0, 5, 10))),
            "payment_terms": words.pick(rng, words.PAYMENT_TERMS),
            "origin_id": f"ERP-PO{50000 + n}" if rng.random() < 0.5 else None,
        })
        po["contract_date"] = time.strftime("%Y-%m-%d", time.gmtime(po["_created"]))
        tables["purchase_order_contracts"].insert(po, pid)
        for position in range(rng.randint(1, 4)):
            part = words.item(rng)
            quantity = Decimal(rng.randint(1, 40))
            tables["purchase_order_line_items"].insert({
                **dict.fromkeys(LINE_FIELDS), "description": part.description, "quantity": quantity,
                "unit_cost": part.cost, "amount": quantity * part.cost, "uom": words.pick(rng, UNITS),
                "extended_type": "calculated", "cost_code_id": words.pick(rng, leaf_codes[pid]),
                "line_item_type_id": words.pick(rng, types), "position": position + 1,
                "_created": po["_created"], "_updated": po["_updated"], "_deleted": None}, po["id"])

    for n in range(records):
        pid = project_ids[n % len(project_ids)]
        kind = "invoice" if rng.random() < 0.8 else words.pick(rng, ("expense", "payroll"))
        dc = stamped({
            **dict.fromkeys(DC_FIELDS), "direct_cost_type": kind,
            "vendor_id": words.pick(rng, vendor_ids) if kind == "invoice" else None,
            "invoice_number": f"INV-{rng.randint(10000, 99999)}-{n}" if kind == "invoice" else None,
            "status": words.pick(rng, DC_STATUSES), "terms": "Net 30",
            "origin_id": f"ERP-AP{70000 + n}" if rng.random() < 0.5 else None,
        })
        dc["direct_cost_date"] = time.strftime("%Y-%m-%d", time.gmtime(dc["_created"]))
        tables["direct_costs"].insert(dc, pid)
        for position in range(rng.randint(1, 3)):
            amount = words.amount(rng, 10, 9000)
            tables["direct_cost_line_items"].insert({
                **dict.fromkeys(LINE_FIELDS), "description": words.item(rng).description, "amount": amount,
                "quantity": Decimal(1), "unit_cost": amount, "uom": "ls", "extended_type": "manual",
                "cost_code_id": words.pick(rng, leaf_codes[pid]), "line_item_type_id": words.pick(rng, types),
                "position": position + 1, "_created": dc["_created"], "_updated": dc["_updated"], "_deleted": None,
            }, dc["id"])


def tick(sb: "ProcoreSandbox", count: int) -> list[tuple[str, Row]]:
    """Change `count` live records in turn (a vendor's phone, a commitment's scope, a cost's terms)."""
    rng, changed = sb._tick_rng, []
    candidates = {name: sb.tables[name].rows("with")[:] for name in TICKED}
    for n in range(max(0, count)):
        table = TICKED[n % len(TICKED)]
        picks = (rng.choice(candidates[table]) if candidates[table] else None for _ in range(20))
        row = next((pick for pick in picks if pick is not None and pick["_deleted"] is None), None)
        if row is None:
            continue
        if table == "vendors":
            change = {"business_phone": words.phone(rng)}
        elif table == "purchase_order_contracts":
            change = {"description": f"Revised scope {rng.randint(1, 999)}"}
        else:
            change = {"terms": words.pick(rng, words.PAYMENT_TERMS)}
        sb.tables[table].write(row, {**change, "_updated": sb.clock.now_whole_seconds()})
        changed.append((table, row))
    return changed
