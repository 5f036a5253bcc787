"""Acumatica's records: the per-entity table and the seeded tenant (chart of accounts,
subaccounts, stock items, vendors and customers with near-duplicate names, AP bills, AR
invoices and payments in every status)."""

from __future__ import annotations

import copy
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sandboxes.acumatica.model import (
    _BY_COLLECTION, _BY_LOWER, ENTITIES, FILTER_CACHE_SIZE, RELEASED, EntityDef, Rec, Shape, iso, money, norm,
    parse_dt,
)
from sandboxes.kit import seed
from sandboxes.kit.store import Table

# ---- storage ----------------------------------------------------------------------------------


class Records(Table):
    """One entity's records in the kit table: keyed by the entity's keys under SQL Server's
    collation, found by `id` too, with Acumatica's auto-numbering and filtered listings."""

    def __init__(self, entity: EntityDef) -> None:
        super().__init__(entity.keys, normalise=norm, indexed=("id", *entity.indexed), name=entity.name,
                         cache_size=FILTER_CACHE_SIZE)
        self.entity = entity
        self.counter = 0  # the last number drawn (auto-numbering, AccountID, SubaccountID)

    def by_id(self, rid: Any) -> Rec | None:
        return self.one("id", str(rid).lower())

    def draw(self) -> int:
        self.counter += 1
        return self.counter

    def next_number(self) -> str:
        """The next free auto-number (one numbering sequence per entity, as in Acumatica)."""
        assert self.entity.numbering is not None
        field_name, prefix, digits = self.entity.numbering
        while self.lookup(field_name, candidate := f"{prefix}{self.draw():0{digits}d}"):
            pass
        return candidate

    def select(self, predicate: Callable[[dict[str, Any]], Any] | None, text: str,
               terms: list[tuple[str, Any]]) -> list[Rec]:
        """Records matching `predicate` in key order, narrowed by an indexed `eq` term; one
        answer per filter text until the next write, so paging a filter costs its page."""
        if predicate is None:
            return self.rows()

        def compute() -> list[Rec]:
            narrowed = next((self.lookup(f, v) for f, v in terms if f in self.entity.indexed), None)
            return [rec for rec in (self.rows() if narrowed is None else narrowed) if predicate(rec)]

        return self.cached(("filter", text), compute)


# ---- seed data ----------------------------------------------------------------------------------

# The trade's suppliers: the kit's distributors and ten of an HVAC contractor's own.
VENDOR_BASES = ("Acme Supply", "Home Depot Pro", "Trane Supply", "Daikin Comfort Technologies", "Apex Pipe Fittings",
                "Summit Mechanical", "Precision Sheet Metal", "Blue Ridge Controls", "Metro Fleet Services",
                "Cintas Uniforms") + seed.DISTRIBUTORS
ACCOUNTS = (
    ("10100", "Cash - Operating", "Asset", True), ("10200", "Cash - Payroll", "Asset", True),
    ("10300", "Undeposited Funds", "Asset", True), ("11000", "Accounts Receivable", "Asset", False),
    ("12000", "Inventory", "Asset", False), ("15000", "Vehicles and Equipment", "Asset", False),
    ("20000", "Accounts Payable", "Liability", False), ("21000", "Accrued Liabilities", "Liability", False),
    ("23000", "Sales Tax Payable", "Liability", False), ("30000", "Retained Earnings", "Liability", False),
    ("40000", "Service Revenue", "Income", False), ("40100", "Installation Revenue", "Income", False),
    ("40200", "Maintenance Agreement Revenue", "Income", False), ("41000", "Parts Sales", "Income", False),
    ("49000", "Sales Discounts", "Income", False), ("50000", "Cost of Goods Sold", "Expense", False),
    ("51000", "Materials", "Expense", False), ("52000", "Subcontractors", "Expense", False),
    ("53000", "Equipment Rental", "Expense", False), ("60000", "Labor Expense", "Expense", False),
    ("61000", "Vehicle Expense", "Expense", False), ("62000", "Fuel", "Expense", False),
    ("63000", "Rent", "Expense", False), ("64000", "Utilities", "Expense", False),
    ("65000", "Insurance", "Expense", False), ("66000", "Office Supplies", "Expense", False),
    ("67000", "Professional Fees", "Expense", False), ("68000", "Tools and Small Equipment", "Expense", False),
)
INACTIVE_ACCOUNT = ("69900", "Old Suspense", "Expense", False)
EXPENSE_ACCOUNTS = ("50000", "51000", "52000", "53000", "60000", "61000", "62000", "66000", "68000")
INCOME_ACCOUNTS = ("40000", "40100", "40200", "41000")
SUBACCOUNTS = (
    ("000-000", "Default"), ("100-000", "HVAC"), ("100-100", "HVAC - Residential"), ("100-200", "HVAC - Commercial"),
    ("200-000", "Plumbing"), ("200-100", "Plumbing - Residential"), ("200-200", "Plumbing - Commercial"),
    ("300-000", "Electrical"), ("300-100", "Electrical - Residential"), ("300-200", "Electrical - Commercial"),
    ("900-000", "Administration"),
)
INACTIVE_SUBACCOUNT = ("999-999", "Retired business unit")
STOCK_BASES = (
    ("FILTER-16X25", "Air filter 16x25x1 MERV 8", 12.5), ("FILTER-20X25", "Air filter 20x25x1 MERV 11", 16.0),
    ("CAP-45-5", "Run capacitor 45/5 MFD 440V", 24.0), ("MOTOR-CFAN", "Condenser fan motor 1/4 HP", 189.0),
    ("R410A-25", "Refrigerant R-410A 25 lb cylinder", 310.0), ("PIPE-CU-075", "Copper pipe 3/4in x 10ft", 48.0),
    ("PVC-FIT-KIT", "PVC fittings assortment", 35.0), ("TSTAT-T6", "Thermostat programmable T6", 129.0),
    ("BRKR-20A", "Circuit breaker 20A single pole", 14.0), ("WH-ELEM-4500", "Water heater element 4500W", 22.0),
    ("CONTACTOR-30", "Contactor 30A 2 pole", 29.0), ("DRAIN-PAN", "Condensate drain pan", 41.0),
)

SPAN_SECONDS = 120 * 86400  # seeded records were created and changed within this many days


class StoreMixin:
    """Tables, record ids and the seed of an `AcumaticaSandbox`."""

    def _new_id(self) -> str:
        """A version-4 GUID drawn from the seeded stream (string-built: seeding makes tens of thousands)."""
        h = f"{self._rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"

    def _moments(self, rng: random.Random) -> tuple[str, str]:
        """A seeded record's created and last-modified stamps."""
        created = self._seed_now - SPAN_SECONDS + rng.uniform(0, SPAN_SECONDS - 7200)
        modified = created + rng.uniform(0, (self._seed_now - 3600 - created))
        return iso(created), iso(modified)

    def _blank(self, shape: Shape, top: bool = False) -> Rec:
        """An empty record (`top`: with its note, custom fields and files) or linked entity, ids drawn."""
        rec: Rec = {"id": self._new_id()}
        for name, sub in shape.linked.items():
            rec[name] = self._blank(sub)
        for name in shape.details:
            rec[name] = []
        return {**rec, "note": "", "custom": {}, "files": []} if top else rec

    def _store(self, entity: str, values: Rec) -> Rec:
        """Seed one record directly (no validation): linked entities and detail ids filled in."""
        d = ENTITIES[entity]
        rec = self._blank(d.shape, top=True)
        for name, value in values.items():
            if name in d.shape.linked:
                rec[name].update(value)
                for sub_name, sub in d.shape.linked[name].linked.items():
                    rec[name].setdefault(sub_name, self._blank(sub))  # the blank's id is drawn either way
                    if isinstance(value.get(sub_name), dict):
                        rec[name][sub_name] = {"id": self._new_id(), **value[sub_name]}
            elif name in d.shape.details:
                rec[name] = [{"id": self._new_id(), **row} for row in value]
            else:
                rec[name] = value
        self.tables[entity].put(rec)
        return rec

    def seed(self, rng: random.Random, records: int) -> None:
        self._rng = random.Random(rng.getrandbits(64))
        self._tick_rng = random.Random(rng.getrandbits(64))
        self._seed_now = self.clock.now_seconds()
        # Each kind of party and document draws from a stream of its own, so a change to how one
        # is made (its words, its fields) leaves the others as they were.
        streams = [random.Random(rng.getrandbits(64)) for _ in range(5)]

        for number, (code, desc) in enumerate(SUBACCOUNTS + (INACTIVE_SUBACCOUNT,), 1):
            self._store("Subaccount", {"SubaccountCD": code, "SubaccountID": number, "Description": desc,
                                       "Active": code != INACTIVE_SUBACCOUNT[0], "Secured": False})
        for number, (code, desc, kind, cash) in enumerate(ACCOUNTS + (INACTIVE_ACCOUNT,), 1000):
            created, modified = self._moments(rng)
            self._store("Account", {
                "AccountCD": code, "AccountID": number, "Description": desc, "Type": kind,
                "AccountClass": kind.upper(), "AccountGroup": None, "Active": code != INACTIVE_ACCOUNT[0],
                "CashAccount": cash, "CurrencyID": "USD", "PostOption": "Detail", "TaxCategory": None,
                "CreatedDateTime": created, "LastModifiedDateTime": modified})
        stock_ids = []
        for n in range(max(len(STOCK_BASES), records // 10)):
            code, desc, price = STOCK_BASES[n % len(STOCK_BASES)]
            if n >= len(STOCK_BASES):
                code, desc = f"{code}-{n // len(STOCK_BASES)}", f"{desc} (alt {n // len(STOCK_BASES)})"
            stock_ids.append(code)
            self._store("StockItem", {
                "InventoryID": code, "Description": desc, "ItemClass": code.split("-")[0], "ItemStatus": "Active",
                "ItemType": "Finished Good", "BaseUOM": "EA", "DefaultPrice": money(price * 1.6),
                "CurrentStdCost": money(price), "DefaultWarehouseID": "MAIN", "LastModified": self._moments(rng)[1]})
        vendors, customers, bills, invoices, self._payments_rng = streams  # payments are made amid invoices
        vendor_ids = self._seed_vendors(vendors, records)
        customer_ids = self._seed_customers(customers, records)
        self._seed_bills(bills, records, vendor_ids, stock_ids)
        self._seed_invoices_and_payments(invoices, records, customer_ids, stock_ids)
        for name, table in self.tables.items():  # the last number drawn; account IDs count on from 1000
            table.counter = len(table) + (1000 if name == "Account" else 0)

    @staticmethod
    def _address(city: seed.City, number: int, street: str, street_type: tuple[str, str], suite: int | None,
                 variant: int) -> Rec:
        """One address written one of five ways (street type spelled out or not, suite apart or not)."""
        line1 = f"{number} {street} {(*street_type, street_type[1].rstrip('.'))[variant % 3]}"
        line2 = None
        if suite:
            line2 = (f"Suite {suite}", f"Ste {suite}", f"#{suite}")[variant % 3]
            if variant % 2:
                line1, line2 = f"{line1}, {line2}", None
        if variant == 4:
            line1 = line1.upper()
        return {"AddressLine1": line1, "AddressLine2": line2, "City": city.name, "State": city.state,
                "PostalCode": city.postcode, "Country": city.country}

    def _seed_vendors(self, rng: random.Random, records: int) -> list[str]:
        """Each supplier again every len(VENDOR_BASES) records, its name typed another way."""
        homes = [(seed.pick(rng, seed.CITIES), rng.randint(100, 9999), seed.pick(rng, seed.STREET_NAMES),
                  seed.pick(rng, seed.STREET_TYPES), rng.choice((None, 100, 200, 310))) for _ in VENDOR_BASES]
        ids = []
        for n in range(records):
            base, generation = VENDOR_BASES[n % len(VENDOR_BASES)], n // len(VENDOR_BASES)
            city, number, street, street_type, suite = homes[n % len(VENDOR_BASES)]
            name = base
            if generation and rng.random() < 1 / 6:  # a branch of the supplier in another city
                city, number = seed.pick(rng, seed.CITIES), rng.randint(100, 9999)
                name = f"{base} - {city.name}"
            elif generation:
                name = seed.near_duplicate(rng, base)
            created, modified = self._moments(rng)
            vendor_id = f"V{n + 1:06d}"
            status = "Active" if rng.random() > 0.06 else rng.choice(("Inactive", "On Hold"))
            contact = {"DisplayName": name, "CompanyName": name, "Email": seed.email_for(base),
                       "Phone1": seed.phone(rng, "intl"),
                       "Address": self._address(city, number, street, street_type, suite, generation % 5)}
            self._store("Vendor", {
                "VendorID": vendor_id, "VendorName": name, "LegalName": name, "VendorClass": "MATERIALS",
                "Status": status, "Terms": rng.choice(("30D", "NET15", "NET45")), "CurrencyID": "USD",
                "PaymentMethod": rng.choice(("CHECK", "ACH")), "CashAccount": "10100", "APAccount": "20000",
                "APSubaccount": "000-000", "TaxZone": None, "TaxRegistrationID": seed.tax_id(rng),
                "F1099Vendor": rng.random() < 0.2, "F1099Box": None, "CreatedDateTime": created,
                "LastModifiedDateTime": modified, "MainContact": contact, "RemittanceContact": dict(contact)})
            if status == "Active":
                ids.append(vendor_id)
        return ids

    def _seed_customers(self, rng: random.Random, records: int) -> list[str]:
        """Homeowners (a few people, each written several ways) and commercial sites."""
        ids = []
        people = [seed.person(rng) for _ in range(max(1, records // 3))]
        for n in range(records):
            first: str | None
            last: str | None
            if rng.random() < 0.75:
                first, last = people[rng.randrange(len(people))]
                name = (f"{first} {last}", f"{last}, {first}", f"{first} {last}".upper(),
                        f"{seed.NICKNAMES.get(first, first)} {last}", f"{first} {last} ")[rng.randrange(5)]
                klass = "RESIDENTIAL"
            else:
                base = seed.customer_name(rng)
                name = rng.choice((base, base + " LLC", base.replace(" ", "", 1), base.replace("&", "and")))
                first, last, klass = None, None, "COMMERCIAL"
            address = self._address(seed.pick(rng, seed.CITIES), rng.randint(10, 9999),
                                    seed.pick(rng, seed.STREET_NAMES), seed.pick(rng, seed.STREET_TYPES), None,
                                    rng.randrange(5))
            created, modified = self._moments(rng)
            customer_id = f"C{n + 1:06d}"
            email = f"{seed.slug(name)}@example.com"
            contact = {"DisplayName": name.strip(), "FirstName": first, "LastName": last, "Email": email,
                       "Phone1": seed.phone(rng, "intl"), "Address": address}
            status = "Active" if rng.random() > 0.04 else "Inactive"
            self._store("Customer", {
                "CustomerID": customer_id, "CustomerName": name, "CustomerClass": klass, "Status": status,
                "Terms": "30D", "CurrencyID": "USD", "CreditLimit": money(rng.choice((0, 5000, 10000, 25000))),
                "TaxZone": None, "Email": email, "CreatedDateTime": created, "LastModifiedDateTime": modified,
                "MainContact": contact, "BillingContact": dict(contact)})
            if status == "Active":
                ids.append(customer_id)
        return ids

    @staticmethod
    def _doc_dates(created: str) -> tuple[str, str, str]:
        stamp = parse_dt(created) or datetime.now(timezone.utc)
        day = stamp.replace(hour=0, minute=0, second=0, microsecond=0)
        return day.isoformat(), (day + timedelta(days=30)).isoformat(), f"{day.month:02d}{day.year}"

    def _seed_bills(self, rng: random.Random, records: int, vendor_ids: list[str], stock_ids: list[str]) -> None:
        if not vendor_ids:
            return
        used_refs: set[tuple[str, str]] = set()
        for n in range(records):
            vendor = rng.choice(vendor_ids)
            ref = f"INV-{rng.randint(10000, 99999)}"
            while (vendor, ref) in used_refs:
                ref = f"INV-{rng.randint(10000, 99999)}"
            used_refs.add((vendor, ref))
            created, modified = self._moments(rng)
            date, due, period = self._doc_dates(created)
            branch = rng.choice(list(self.settings.branches))
            po = f"PO{rng.randint(1000, 9999):06d}" if rng.random() < 0.5 else None
            lines = []
            for line_no in range(rng.randint(1, 4)):
                qty = float(rng.randint(1, 10))
                cost = money(rng.uniform(5, 900))
                stock = rng.random() < 0.5
                lines.append({
                    "InventoryID": rng.choice(stock_ids) if stock else "NONSTOCK",
                    "TransactionDescription": seed.pick(rng, seed.EXPENSE_LINES), "Qty": qty, "UOM": "EA",
                    "UnitCost": cost,
                    "ExtendedCost": money(qty * cost), "Amount": money(qty * cost),
                    "Account": "12000" if stock else rng.choice(EXPENSE_ACCOUNTS),
                    "Subaccount": rng.choice(SUBACCOUNTS)[0], "Branch": branch, "NonBillable": False,
                    "POOrderType": "Normal" if po else None, "POOrderNbr": po, "POLine": line_no + 1 if po else None,
                    "POReceiptType": "Receipt" if po else None,
                    "POReceiptNbr": f"PR{rng.randint(1000, 9999):06d}" if po else None,
                    "POReceiptLine": line_no + 1 if po else None})
            amount = money(sum(line["Amount"] for line in lines))
            roll = rng.random()
            status = "Balanced" if roll < 0.4 else "Open" if roll < 0.75 else "On Hold" if roll < 0.85 else "Closed"
            self._store("Bill", {
                "Type": "Bill", "ReferenceNbr": f"{n + 1:06d}", "Status": status, "Hold": status == "On Hold",
                "ApprovedForPayment": status in RELEASED, "Vendor": vendor, "VendorRef": ref, "LocationID": "MAIN",
                "Date": date, "DueDate": due, "PostPeriod": period, "Terms": "30D", "CurrencyID": "USD",
                "Amount": amount, "Balance": 0.0 if status == "Closed" else amount, "TaxTotal": 0.0,
                "BranchID": branch, "CashAccount": None, "Project": "X",
                "Description": f"{seed.pick(rng, seed.EXPENSE_LINES)} - {ref}",
                "LastModifiedDateTime": modified, "Details": lines})

    def _seed_invoices_and_payments(self, rng: random.Random, records: int, customer_ids: list[str],
                                    stock_ids: list[str]) -> None:
        if not customer_ids:
            return
        payments_wanted, payments = records // 2, 0
        orders: set[str] = set()
        for n in range(records):
            customer = rng.choice(customer_ids)
            created, modified = self._moments(rng)
            date, due, period = self._doc_dates(created)
            branch = rng.choice(list(self.settings.branches))
            order = None
            if rng.random() < 0.8:
                order = str(rng.randint(10_000_000, 99_999_999))
                while order in orders:
                    order = str(rng.randint(10_000_000, 99_999_999))
                orders.add(order)
            lines = []
            for _ in range(rng.randint(1, 5)):
                qty = float(rng.randint(1, 4))
                price = money(rng.uniform(40, 1200))
                part = rng.random() < 0.4
                lines.append({
                    "InventoryID": rng.choice(stock_ids) if part else rng.choice(("LABOR", "SERVICE")),
                    "TransactionDescription": seed.pick(rng, seed.SERVICE_LINES), "Qty": qty, "UOM": "EA",
                    "UnitPrice": price, "ExtendedPrice": money(qty * price), "DiscountAmount": 0.0,
                    "Amount": money(qty * price), "Account": "41000" if part else rng.choice(INCOME_ACCOUNTS),
                    "Subaccount": rng.choice(SUBACCOUNTS)[0], "Branch": branch})
            amount = money(sum(line["Amount"] for line in lines))
            roll = rng.random()
            status = "Balanced" if roll < 0.3 else "Open" if roll < 0.7 else "On Hold" if roll < 0.8 else "Closed"
            ref = f"AR{n + 1:06d}"
            invoice = self._store("Invoice", {
                "Type": "Invoice", "ReferenceNbr": ref, "Customer": customer, "CustomerOrder": order,
                "Date": date, "DueDate": due, "PostPeriod": period, "Terms": "30D", "Amount": amount,
                "Balance": amount, "TaxTotal": 0.0, "Status": status, "Hold": status == "On Hold",
                "Description": f"Job {order or n + 1}", "Project": "X", "LocationID": "MAIN",
                "LinkARAccount": "11000", "LinkBranch": branch, "CreatedDateTime": created,
                "LastModifiedDateTime": modified, "Details": lines})
            if payments >= payments_wanted:
                continue
            if status == "Closed" or (status == "Open" and rng.random() < 0.35):
                paid = amount if status == "Closed" else money(amount * rng.choice((0.25, 0.5)))
                invoice["Balance"] = money(amount - paid)
                payments += 1
                self._seed_payment(payments, customer, branch, paid, invoice, released=True)
            elif status == "Open" and rng.random() < 0.2:
                payments += 1
                self._seed_payment(payments, customer, branch, invoice["Balance"], invoice, released=False)
        while payments < payments_wanted:
            payments += 1
            self._seed_payment(payments, rng.choice(customer_ids), rng.choice(list(self.settings.branches)),
                               money(rng.uniform(50, 2000)), None, released=True)

    def _seed_payment(self, n: int, customer: str, branch: str, amount: float, invoice: Rec | None, *,
                      released: bool) -> None:
        rng = self._payments_rng
        created, modified = self._moments(rng)
        date, _, _ = self._doc_dates(created)
        applications = []
        if invoice is not None:
            applications.append({"DocType": "Invoice", "ReferenceNbr": invoice["ReferenceNbr"], "AmountPaid": amount,
                                 "CashDiscountTaken": 0.0, "BalanceWriteOff": 0.0, "DocLineNbr": None,
                                 "CustomerOrder": invoice.get("CustomerOrder"),
                                 "Description": invoice.get("Description"), "Balance": invoice["Balance"]})
        applied = money(sum(a["AmountPaid"] for a in applications))
        available = money(amount - applied)
        status = ("Closed" if available == 0 else "Open") if released else "Balanced"
        self._store("Payment", {
            "Type": "Payment", "ReferenceNbr": f"PM{n:06d}", "CustomerID": customer, "CustomerLocationID": "MAIN",
            "PaymentMethod": rng.choice(("CHECK", "CREDITCARD", "ACH")), "CashAccount": "10100",
            "PaymentRef": str(rng.randint(1000, 999999)), "PaymentAmount": amount, "AvailableBalance": available,
            "AppliedToDocuments": applied, "ApplicationDate": date, "CurrencyID": "USD", "Status": status,
            "Hold": False, "Description": "Customer payment",
            "ExternalRef": f"ST-PAY-{rng.randint(100000, 999999)}" if rng.random() < 0.7 else None,
            "BranchID": branch, "CreatedDateTime": created, "LastModifiedDateTime": modified,
            "DocumentsToApply": applications, "ApplicationHistory": [
                {"DocType": a["DocType"], "ReferenceNbr": a["ReferenceNbr"], "AmountPaid": a["AmountPaid"],
                 "Date": date} for a in applications if released]})

    def _entity_for(self, name: str) -> EntityDef:
        d = _BY_COLLECTION.get(name) or _BY_LOWER.get(name.lower())
        if d is None:
            raise KeyError(name)
        return d

    def get_entities(self, entity: str) -> list[Rec]:
        return [copy.deepcopy(rec) for rec in self.tables[self._entity_for(entity).name].rows()]
