"""Deterministic seed data from the kit's vocabulary: users and cost centres, vendor companies
with near-duplicates, suppliers, multi-line purchase orders, invoices and procurement orders,
plus the changes a tick makes so a poll sees updates."""

from __future__ import annotations

import random
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Callable

from sandboxes.kit import seed as words

from .rules import TIME_FORMAT
from .store import TABLES, Row

if TYPE_CHECKING:
    from .sandbox import ServiceNowSandbox

SEED_EPOCH = 1736121600  # 2025-01-06 00:00:00 UTC: seeded history starts here, whatever today is
SEED_SPAN = 180 * 86400  # seeded records were created over this many seconds
PO_STATUSES = ("draft", "approved", "ordered", "partially_received", "received", "closed")
INVOICE_STATUSES = ("pending", "approved", "scheduled", "paid")
DEPARTMENTS = words.DEPARTMENTS[:8]  # cost centre account numbers are 6000 + 100 * department: 6000-01 .. 6700-nn
ERP_SOURCE = "Epicor Kinetic"
LEGAL_ENTITY = "ML Manufacturing US"
GL_ACCOUNTS = ("Materials expense", "Freight in", "Repairs and maintenance", "Utilities")


def _next_in(cycle: tuple[str, ...]) -> Callable[[random.Random, str], str]:
    return lambda rng, current: cycle[(cycle.index(current) + 1) % len(cycle)] if current in cycle else cycle[0]


TICK_CHANGES: dict[str, tuple[str, Callable[[random.Random, str], str]]] = {
    "sn_fin_supplier": ("phone", lambda rng, current: words.phone(rng)),
    "core_company": ("phone", lambda rng, current: words.phone(rng)),
    "sn_shop_purchase_order": ("status", _next_in(PO_STATUSES)),
    "sn_shop_invoice": ("status", _next_in(INVOICE_STATUSES)),
    "cmn_cost_center": ("location", lambda rng, current: words.pick(rng, words.CITIES).name),
}


def _day(at: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def _stamp(at: int) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(at))


class Seeder:
    """Fills a sandbox deterministically: suppliers with near-duplicates, multi-line POs, invoices."""

    def __init__(self, sandbox: ServiceNowSandbox, rng: random.Random, records: int) -> None:
        self.sb, self.rng, self.n = sandbox, rng, records

    def run(self) -> None:
        for name in TABLES:
            self.sb._table(name)
        centers = self._cost_centers(self._users())
        companies = self._companies()
        suppliers = [self._supplier(company) for company in companies]
        orders = self._purchase_orders(suppliers, centers)
        self._invoices(orders, suppliers, centers)
        self._procurement_pos(companies)

    def _add(self, table_name: str, values: Row) -> Row:
        """A row created at a seeded moment of the history, by seeded system fields."""
        created = self._when()
        updated = min(SEED_EPOCH + SEED_SPAN, created + self.rng.randrange(30 * 86400))
        return self.sb._insert(self.sb._tables[table_name], {
            **values, "sys_id": f"{self.rng.getrandbits(128):032x}", "sys_created_on": _stamp(created),
            "sys_created_by": "admin", "sys_updated_on": _stamp(updated),
            "sys_updated_by": self.rng.choice(("admin", "system", "ml.integration")),
            "sys_mod_count": str(self.rng.randint(0, 6) if updated > created else 0)}, user="admin", honour_sys=True)

    def _when(self) -> int:
        """A seeded moment of the seeded history."""
        return SEED_EPOCH + self.rng.randrange(SEED_SPAN)

    def _users(self) -> list[Row]:
        people = {"ml.integration": words.Person("Integration", "User")}
        while len(people) < 7:
            who = words.person(self.rng)
            people.setdefault(who.username, who)
        return [self._add("sys_user", {"user_name": user, "first_name": who.first, "last_name": who.last,
                                       "name": who.name, "email": f"{user}@example.com", "active": "true"})
                for user, who in people.items()]

    def _cost_centers(self, users: list[Row]) -> list[Row]:
        centers: list[Row] = []
        for i in range(max(8, min(60, self.n // 20))):
            department, plant = i % len(DEPARTMENTS), i // len(DEPARTMENTS) + 1
            centers.append(self._add("cmn_cost_center", {
                "name": f"{DEPARTMENTS[department]} - Plant {plant}",
                "account_number": f"{6000 + department * 100}-{plant:02d}",
                "manager": self.rng.choice(users[1:])["sys_id"],
                "parent": centers[department]["sys_id"] if plant > 1 else "", "valid_from": "2024-01-01",
                "valid_to": "", "location": words.pick(self.rng, words.CITIES).name}))
        for i, name in enumerate(GL_ACCOUNTS):
            self._add("sn_fin_gl_account", {"name": name, "account_number": f"{6000 + i * 100}",
                                            "account_type": "expense", "active": "true"})
        return centers

    def _companies(self) -> list[Row]:
        vendors: list[Row] = []
        for _ in range(self.n):
            if vendors and self.rng.random() < 0.08:  # the same supplier entered twice, spelled differently
                original = self.rng.choice(vendors)
                vendors.append(self._add("core_company", {
                    **{k: original[k] for k in ("vendor", "customer", "manufacturer", "vendor_type", "city", "state",
                                                "zip", "country", "phone", "website")},
                    "name": words.near_duplicate(self.rng, original["name"]),
                    "street": words.near_duplicate_street(self.rng, original["street"])}))
                continue
            name = words.company_name(self.rng)
            vendors.append(self._add("core_company", {
                "name": name, "vendor": "true", "customer": "false", "manufacturer": "false", "vendor_type": "Supplier",
                "phone": words.phone(self.rng), "website": f"https://www.{words.domain_for(name)}", **self._address()}))
        for i in range(max(1, self.n // 10)):
            self._add("core_company", {
                "name": f"{words.pick(self.rng, words.COMPANY_STEMS)} Holdings {i + 1}", "vendor": "false",
                "customer": "true", "manufacturer": "false", **self._address()})
        return vendors

    def _address(self) -> Row:
        where = words.address(self.rng, short=self.rng.random() < 0.5, suite=0)
        return {"street": where.street, "city": where.city, "state": where.state, "zip": where.postcode,
                "country": where.country}

    def _supplier(self, company: Row) -> Row:
        return self._add("sn_fin_supplier", {
            "name": company["name"], "legal_name": company["name"], "company": company["sys_id"],
            "tax_id": words.tax_id(self.rng),
            **{k: company[k] for k in ("street", "city", "state", "zip", "country", "phone", "website")},
            "email": words.email_for(company["name"]) if company["website"] else "",
            "currency": "CAD" if company["country"] == "CA" else "USD",
            "payment_term": words.pick(self.rng, words.PAYMENT_TERMS),
            "active": "true" if self.rng.random() > 0.05 else "false", "erp_source": ""})

    def _purchase_orders(self, suppliers: list[Row], centers: list[Row]) -> list[Row]:
        orders: list[Row] = []
        for i in range(self.n if suppliers else 0):
            supplier, center = self.rng.choice(suppliers), self.rng.choice(centers)
            lines = [(words.item(self.rng).description, self.rng.randint(1, 200), words.amount(self.rng, 1, 450))
                     for _ in range(self.rng.randint(1, 4))]
            order = self._add("sn_shop_purchase_order", {
                "erp_number": str(4000 + i), "supplier": supplier["sys_id"], "legal_entity": LEGAL_ENTITY,
                "order_type": "Blanket" if self.rng.random() < 0.1 else "Standard",
                "total_amount": f"{sum(q * p for _, q, p in lines):.2f}", "currency": supplier["currency"],
                "status": self.rng.choice(PO_STATUSES), "payment_term": supplier["payment_term"],
                "cost_center": center["sys_id"], "erp_source": ERP_SOURCE,
                "order_date": _day(self._when())})
            for number, (description, quantity, price) in enumerate(lines, start=1):
                self._add("sn_shop_purchase_order_line", {
                    "purchase_order": order["sys_id"], "line_number": str(number), "description": description,
                    "quantity": str(quantity), "unit_price": f"{price:.2f}", "amount": f"{quantity * price:.2f}",
                    "cost_center": center["sys_id"]})
            orders.append(order)
        return orders

    def _invoices(self, orders: list[Row], suppliers: list[Row], centers: list[Row]) -> None:
        for i in range(self.n // 2 if orders else 0):
            order = self.rng.choice(orders) if self.rng.random() < 0.8 else None
            amounts = [words.amount(self.rng, 20, 4000) for _ in range(self.rng.randint(1, 3))]
            tax = (sum(amounts) * Decimal("0.07")).quantize(Decimal("0.01"))
            day = self._when()
            invoice = self._add("sn_shop_invoice", {
                "external_invoice_number": f"V{self.rng.randint(10000, 99999)}-{i + 1}",
                "external_invoice_source": ERP_SOURCE, "erp_source": ERP_SOURCE, "invoice_date": _day(day),
                "due_date": _day(day + 30 * 86400), "other_charges": "0.00",
                "total_amount": f"{sum(amounts) + tax:.2f}", "currency": "USD", "discounts": "0.00",
                "tax_amount": f"{tax:.2f}", "invoice_type": "PO" if order else "Non-PO",
                "legal_entity": LEGAL_ENTITY, "purchase_order": order["sys_id"] if order else "",
                "supplier": order["supplier"] if order else self.rng.choice(suppliers)["sys_id"],
                "erp_number": str(9000 + i), "payment_terms": "Net 30", "status": self.rng.choice(INVOICE_STATUSES)})
            for number, amount in enumerate(amounts, start=1):
                self._add("sn_shop_invoice_line", {
                    "invoice": invoice["sys_id"], "line_number": str(number),
                    "description": words.item(self.rng).description, "quantity": "1", "unit_price": f"{amount:.2f}",
                    "amount": f"{amount:.2f}", "cost_center": self.rng.choice(centers)["sys_id"],
                    "gl_account": f"{6000 + self.rng.randrange(4) * 100}"})

    def _procurement_pos(self, companies: list[Row]) -> None:
        for _ in range(self.n // 5 if companies else 0):
            items = [(words.item(self.rng).description, self.rng.randint(1, 50), words.amount(self.rng, 5, 300))
                     for _ in range(self.rng.randint(1, 3))]
            po = self._add("proc_po", {
                "vendor": self.rng.choice(companies)["sys_id"], "short_description": items[0][0],
                "status": self.rng.choice(("requested", "ordered", "received")),
                "total_cost": f"{sum(q * c for _, q, c in items):.2f}", "po_date": _day(self._when())})
            for description, quantity, cost in items:
                self._add("proc_po_item", {"purchase_order": po["sys_id"], "short_description": description,
                                           "ordered_quantity": str(quantity), "cost": f"{cost:.2f}",
                                           "total_cost": f"{quantity * cost:.2f}", "status": po["status"]})
