"""ServiceTitan records and their seeding: tables of read views with a change log for the
export feeds, the tenant's reference data, and a deterministic seeded history."""

from __future__ import annotations

import random
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Callable, Iterator

from sandboxes.kit import seed as words
from sandboxes.kit import store as kit
from sandboxes.servicetitan.vendor import (
    ADJUSTMENT, AP_BILL, AP_BILL_ITEM, AP_PAYMENT, BILL_ITEM, DELIVERY_OPTIONS, GL_ACCOUNT, INVENTORY_BILL, JOB,
    PAYMENT_TYPES, QUERY_CACHE_SIZE, SEED_PO_STATUSES, SEED_SPAN_US, SEED_START_US, SYNC_STATUSES, VENDOR, WAREHOUSE,
    _CENT, _address, dec, fresh, iso, money, num, parse_when,
)

# ---- storage -----------------------------------------------------------------------------------

class Row(dict):
    """One record as the kit table stores it: `view` is exactly the vendor's read view; `id`,
    `created_us`, `modified_us`, `active`, `external` (app guid -> key -> value) and `extra` are
    bookkeeping, read and written as attributes."""

    __slots__ = ()

    def __init__(self, view: dict[str, Any], created_us: int, modified_us: int,
                 extra: dict[str, Any] | None = None) -> None:
        super().__init__(id=view["id"], view=view, created_us=created_us, modified_us=modified_us,
                         active=bool(view.get("active", True)), external={}, extra={} if extra is None else extra)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    __setattr__ = dict.__setitem__


class Table(Mapping[int, Row]):
    """One collection on the kit table store: its rows by id (in id order; `rows` is the table
    itself), a query cache per version, and the change log (stamps) the export feeds walk."""

    def __init__(self, name: str, first_id: int) -> None:
        self.store = kit.Table("id", ids=first_id, normalise=kit.exact, name=name, cache_size=QUERY_CACHE_SIZE)
        self.rows = self
        self.first_id, self.last_id = first_id, first_id - 1  # ids are dense: tick probes them

    def __getitem__(self, rid: Any) -> Row:
        row = self.store.get(rid)
        if row is None:
            raise KeyError(rid)
        return row  # type: ignore[return-value]

    def __iter__(self) -> Iterator[int]:
        return (row["id"] for row in self.store.rows())

    def __len__(self) -> int:
        return len(self.store)

    def values(self) -> list[Row]:  # type: ignore[override]
        return self.store.rows()  # type: ignore[return-value]

    def allocate(self) -> int:
        rid = int(self.store.new_id())
        self.last_id = max(self.last_id, rid)
        return rid

    def put(self, row: Row) -> None:
        self.last_id = max(self.last_id, row.id)
        self.store.put(row)

    def query(self, key: Any, predicate: Callable[[Row], bool] | None, sort: tuple[str, bool]) -> list[int]:
        """Ids matching `predicate`, by id or by (`sort` attribute, id); cached until the next write."""
        def compute() -> list[int]:
            rows = self.store.rows() if sort[0] == "id" else self.store.ordered_by(sort[0])
            ids = [row["id"] for row in rows if predicate is None or predicate(row)]  # type: ignore[arg-type]
            return ids[::-1] if sort[1] else ids

        return self.store.cached((key, sort), compute)

    def first_seq_since(self, since_us: int) -> int:
        """Export position just before the first change at or after `since_us`."""
        stamps = [self.store.stamp_of(row) for row in self.store.range("modified_us", ge=since_us)]
        return min(stamps) - 1 if stamps else self.store.last_stamp

    def export_after(self, after_seq: int, limit: int) -> tuple[list[Row], int, bool]:
        """Up to `limit` rows changed after `after_seq`, in change order, and the new position."""
        rows = self.store.changed_since(after_seq, limit=limit + 1)
        found = rows[:limit]
        return found, self.store.stamp_of(found[-1]) if found else after_seq, len(rows) > limit  # type: ignore


# ---- seed reference data ---------------------------------------------------------------------

BUSINESS_UNITS = (
    ("HVAC - Residential Service", "HVAC", "Residential", "HVAC-RES"),
    ("HVAC - Commercial Install", "HVAC", "Commercial", "HVAC-COM"),
    ("Plumbing - Service", "Plumbing", "Residential", "PLB-SVC"),
    ("Plumbing - Replacement", "Plumbing", "Residential", "PLB-RPL"),
    ("Electrical - Service", "Electrical", "Residential", "ELE-SVC"),
    ("Drains & Sewer", "Plumbing", "Commercial", "DRN-SWR"),
)

GL_ACCOUNTS = (  # number, name, type, subtype, default account type
    ("1010", "Operating Checking", "Bank", "Checking", "CheckingAccount"),
    ("1050", "Undeposited Funds", "Other Current Asset", "UndepositedFunds", "UndepositedFunds"),
    ("1100", "Accounts Receivable", "Accounts Receivable", "AccountsReceivable", "AccountsReceivable"),
    ("1200", "Inventory Asset", "Other Current Asset", "Inventory", "Inventory"),
    ("2000", "Accounts Payable", "Accounts Payable", "AccountsPayable", "AccountsPayable"),
    ("2200", "Sales Tax Payable", "Other Current Liability", "SalesTaxPayable", "SalesTaxPayable"),
    ("4000", "Service Revenue", "Income", "ServiceFeeIncome", "Revenue"),
    ("4100", "Installation Revenue", "Income", "SalesOfProductIncome", None),
    ("4200", "Material Sales", "Income", "SalesOfProductIncome", None),
    ("5000", "COGS - Materials", "Cost of Goods Sold", "SuppliesMaterialsCogs", "CostOfGoodsSoldMaterials"),
    ("5100", "COGS - Equipment", "Cost of Goods Sold", "EquipmentRentalCos", "CostOfGoodsSoldEquipment"),
    ("5200", "Freight In", "Cost of Goods Sold", "ShippingFreightDeliveryCos", "CostOfGoodsSoldShipping"),
    ("6100", "Shop Supplies", "Expense", "SuppliesMaterials", None),
    ("6200", "Vehicle Fuel", "Expense", "Auto", None),
    ("6300", "Rent", "Expense", "RentOrLeaseOfBuildings", None),
    ("6400", "Utilities", "Expense", "Utilities", None),
    ("6500", "Tools & Small Equipment", "Expense", "EquipmentRental", None),
)

# The tenant's pricebook: trade parts and equipment from the shared vocabulary, SKU ids from 8801.
SKUS = tuple((item.code, item.description, kind, float(item.cost))
             for kind, items in (("Material", words.ITEMS[:18]), ("Equipment", words.EQUIPMENT)) for item in items)

SERVICES = (  # name, price, revenue account number
    ("Diagnostic Fee", 89.00, "4000"), ("Maintenance Tune-Up", 149.00, "4000"),
    ("Drain Cleaning - Main Line", 325.00, "4000"), ("Electrical Troubleshooting (per hour)", 135.00, "4000"),
    ("System Installation Labor", 1450.00, "4100"), ("Water Heater Install Labor", 650.00, "4100"),
)

# Families of near-duplicate vendors: the same supplier typed differently over the years.
VENDOR_FAMILIES = (
    (("Acme Supply Co", "100 Industrial Pkwy", "Suite 200", "Fresno", "CA", "93725"),
     ("ACME Supply Company", "100 Industrial Parkway", "Ste 200", "Fresno", "CA", "93725"),
     ("Acme Supply, Inc.", "100 Industrial Pkwy.", "", "Fresno", "CA", "93725-1234")),
    (("Ferguson Enterprises", "2750 S Orange Ave", "", "Fresno", "CA", "93725"),
     ("Ferguson Enterprises, LLC", "2750 South Orange Avenue", "", "Fresno", "CA", "93725")),
    (("Johnstone Supply", "4410 N Blackstone Ave", "", "Fresno", "CA", "93726"),
     ("Johnstone Supply #412", "4410 N. Blackstone Ave", "", "Fresno", "CA", "93726")),
    (("Grainger", "1715 N Fine Ave", "", "Fresno", "CA", "93727"),
     ("W.W. Grainger Inc", "1715 North Fine Avenue", "", "Fresno", "CA", "93727")),
    (("United Refrigeration", "3010 E Jensen Ave", "", "Fresno", "CA", "93706"),
     ("United Refrigeration Inc.", "3010 E. Jensen Ave", "Bldg B", "Fresno", "CA", "93706")),
    (("R.E. Michel Company", "455 W Shaw Ave", "", "Clovis", "CA", "93612"),
     ("RE Michel Co", "455 West Shaw Avenue", "", "Clovis", "CA", "93612")),
    (("Winsupply of Fresno", "2424 E Dakota Ave", "", "Fresno", "CA", "93726"),),
    (("Carrier Enterprise", "5110 E Clinton Way", "Suite 101", "Fresno", "CA", "93727"),),
    (("Graybar Electric", "3750 W Ashlan Ave", "", "Fresno", "CA", "93722"),),
    (("Hajoca Corporation", "1605 H St", "", "Fresno", "CA", "93721"),),
    (("Lennox PartsPlus", "7045 N Abby St", "", "Fresno", "CA", "93720"),),
    (("Gensco Inc", "2525 S East Ave", "", "Fresno", "CA", "93706"),),
    (("Baker Distributing", "4795 E Hedges Ave", "", "Fresno", "CA", "93703"),),
    (("Rexel USA", "1350 N Blackstone Ave", "", "Fresno", "CA", "93703"),),
    (("Consolidated Supply Co", "333 W Olive Ave", "", "Merced", "CA", "95348"),),
    (("Morrison Supply", "880 N Gateway Blvd", "", "Visalia", "CA", "93291"),),
)

LOCAL_CITIES = tuple(city for city in words.CITIES if city.state == "CA")  # the tenant serves one region
EXPENSES = (("PG&E electric service", "6400"), ("Shop rent", "6300"), ("Fleet fuel cards", "6200"),
            ("Shop consumables", "6100"), ("Tool replacement", "6500"))
ADJUSTMENT_TYPES = ("Cycle Count", "Damaged", "Shrinkage", "Found Stock")


class StoreMixin:
    """Record building and the seeded tenant, mixed into the sandbox."""

    # ---- seeding ---------------------------------------------------------------------------

    def seed(self, rng: random.Random, records: int) -> None:
        n = max(1, records)
        stamps = _SeedClock(rng)
        self._seed_settings(rng, stamps)
        vendors = self._seed_vendors(rng, stamps, max(20, n // 10))
        if self.seed_scope == "purchasing":
            for po in self._seed_purchase_orders(rng, stamps, n, vendors, statuses=("Received",)):
                self._bill_from_po(po, stamps.after(po.modified_us))
        else:
            customers = self._seed_customers(rng, stamps, n)
            pos = self._seed_purchase_orders(rng, stamps, n, vendors)
            bills = [self._bill_from_po(po, stamps.after(po.modified_us)) for po in pos
                     if po.view["status"] in ("Received", "Exported")]
            self._seed_ap_bills(rng, stamps, max(4, n // 4), vendors, pos)
            self._seed_ap_payments(rng, stamps, bills)
            invoices = self._seed_invoices(rng, stamps, n, customers)
            self._seed_payments(rng, stamps, invoices)
            self._seed_adjustments(rng, stamps, max(4, n // 4))
        for table in self.tables.values():  # seeded rows enter the change log in modification order
            for row in sorted(table.values(), key=lambda r: (r.modified_us, r.id)):
                table.store.touch(row.id)

    def _insert(self, entity: str, view: dict[str, Any], created_us: int, modified_us: int,
                extra: dict[str, Any] | None = None) -> Row:
        if "createdOn" in view:
            view["createdOn"] = iso(created_us)
        if "modifiedOn" in view:
            view["modifiedOn"] = iso(modified_us)
        row = Row(view, created_us, modified_us, extra)
        self.tables[entity].put(row)
        return row

    def _seed_settings(self, rng: random.Random, stamps: "_SeedClock") -> None:
        tenant_ref = {"id": self.tenant_id, "name": "Central Valley Home Services", "accountCode": "CVHS",
                      "franchiseId": None, "conceptCode": None, "modifiedOn": iso(SEED_START_US)}
        for index, (name, trade, division, code) in enumerate(BUSINESS_UNITS):
            created = stamps.early()
            table = self.tables["business_units"]
            city = LOCAL_CITIES[index % len(LOCAL_CITIES)]
            view = {
                "id": table.allocate(), "active": True, "name": name, "officialName": f"Central Valley {name}",
                "email": f"{code.lower()}@cvhs.example", "currency": "USD", "phoneNumber": "5595550100",
                "invoiceHeader": None, "invoiceMessage": "Thank you for your business.", "defaultTaxRate": 0.0798,
                "authorizationParagraph": None, "acknowledgementParagraph": None,
                "address": {**_address(f"{1200 + index * 10} {words.STREET_NAMES[index]} Ave", "", city.name,
                                       city.state, city.postcode),
                            "latitude": 36.7378, "longitude": -119.7871, "isManualCoordinates": False,
                            "isMilitary": False},
                "materialSku": None, "quickbooksClass": code, "accountCode": code, "franchiseId": None,
                "conceptCode": None, "corporateContractNumber": None,
                "trade": {"id": 100 + index, "name": trade}, "division": {"id": 200 + index, "name": division},
                "tagTypeIds": [], "tenant": dict(tenant_ref), "createdOn": None, "modifiedOn": None,
                "externalData": [],
            }
            self._insert("business_units", view, created, stamps.after(created))
        for number, name, type_, subtype, default in GL_ACCOUNTS:
            created = stamps.early()
            view = fresh(GL_ACCOUNT, id=self.tables["gl_accounts"].allocate(), name=name, number=number,
                         description=f"{number} {name}", type=type_, subtype=subtype,
                         isIntacctBankAccount=type_ == "Bank", source="AccountingSystem", defaultAccountType=default)
            self._insert("gl_accounts", view, created, stamps.after(created))
        for name, street, city in (("Main Warehouse", "2900 S Chestnut Ave", "Fresno"),
                                   ("Clovis Yard", "700 Pollasky Ave", "Clovis"),
                                   ("Visalia Depot", "1300 N Ben Maddox Way", "Visalia")):
            created = stamps.early()
            view = fresh(WAREHOUSE, id=self.tables["warehouses"].allocate(), name=name,
                         address=_address(street, "", city, "CA", "93725"))
            self._insert("warehouses", view, created, stamps.after(created))

    def _seed_vendors(self, rng: random.Random, stamps: "_SeedClock", count: int) -> list[Row]:
        rows: list[Row] = []
        names = [variant for family in VENDOR_FAMILIES for variant in family]
        branch = 0
        while len(rows) < count:
            if len(rows) < len(names):
                name, street, unit, city, state, zip_ = names[len(rows)]
            else:
                family = VENDOR_FAMILIES[branch % len(VENDOR_FAMILIES)][0]
                branch += 1
                place = LOCAL_CITIES[branch % len(LOCAL_CITIES)]
                name = f"{family[0]} - {place.name} #{100 + branch}"
                street, unit, city, state = words.street(rng, short=True), "", place.name, place.state
                zip_ = place.postcode
            created = stamps.early()
            who = words.person(rng)
            view = self._vendor_view(name, rng.random() > 0.05, _address(street, unit, city, state, zip_),
                                     {"firstName": who.first, "lastName": who.last,
                                      "phone": words.phone(rng, "digits"), "email": words.email_for(name), "fax": ""},
                                     memo=rng.choice(("", "Net 30", "Will-call counter opens 6am", "COD only")),
                                     delivery=rng.choice(DELIVERY_OPTIONS[:3]))
            rows.append(self._insert("vendors", view, created, stamps.after(created)))
        return rows

    def _vendor_view(self, name: str, active: bool, address: dict[str, Any], contact: dict[str, Any],
                     memo: str = "", delivery: str = "Manual", tax_rate: float = 0.0) -> dict[str, Any]:
        return fresh(VENDOR, id=self.tables["vendors"].allocate(), name=name, active=active, memo=memo,
                     deliveryOption=delivery, defaultTaxRate=tax_rate, contactInfo=contact, address=address)

    def _seed_customers(self, rng: random.Random, stamps: "_SeedClock", count: int) -> list[Row]:
        rows = []
        for _ in range(count):
            created = stamps.any()
            commercial = rng.random() < 0.25
            name = words.customer_name(rng) if commercial else words.person(rng).name
            city = words.pick(rng, LOCAL_CITIES)
            street = words.street(rng, short=True)  # drawn before the unit: the seed's order
            unit = rng.choice(("", "", "", "Apt 4", "Unit B", "Suite 120"))
            address = {**_address(street, unit, city.name, city.state, city.postcode),
                       "latitude": round(36.7 + rng.random() * 0.2, 6),
                       "longitude": round(-119.9 + rng.random() * 0.3, 6)}
            view = self._customer_view(name, "Commercial" if commercial else "Residential", address)
            row = self._insert("customers", view, created, stamps.after(created))
            phone = words.phone(rng, "digits")
            email = f"{name.split()[0].lower()}.{view['id']}@mail.example"
            location = self._attach_location(row, name, address, [("Phone", phone), ("Email", email)])
            row.extra["contacts"] = [dict(c) for c in location["contacts"]]
            rows.append(row)
        return rows

    def _customer_view(self, name: str, type_: str, address: dict[str, Any]) -> dict[str, Any]:
        return {"id": self.tables["customers"].allocate(), "active": True, "name": name, "type": type_,
                "address": address, "customFields": [], "balance": 0.0, "taxExempt": False, "tagTypeIds": [],
                "doNotMail": False, "doNotService": False, "nationalAccount": False, "createdOn": None,
                "createdById": 1, "modifiedOn": None, "mergedToId": None, "paymentTermId": None,
                "creditLimit": None, "creditLimitBalance": None, "externalData": []}

    def _attach_location(self, customer: Row, name: str, address: dict[str, Any],
                         contacts: list[tuple[str, str]]) -> dict[str, Any]:
        contact_views = [{"id": next(self._location_ids) + 500_000, "type": kind, "value": value, "memo": None}
                         for kind, value in contacts]
        location = {"taxZoneId": None, "id": next(self._location_ids), "customerId": customer.view["id"],
                    "active": True, "name": name, "address": dict(address), "customFields": [],
                    "createdOn": customer.view["createdOn"], "createdById": 1,
                    "modifiedOn": customer.view["modifiedOn"], "mergedToId": None, "zoneId": None,
                    "taxExempt": False, "tagTypeIds": [], "externalData": [], "contacts": contact_views}
        customer.extra.setdefault("locations", []).append(location)
        return location

    def _po_item(self, sku_index: int, quantity: float, created: str, received: float = 0.0,
                 status: str = "Pending") -> dict[str, Any]:
        code, name, type_, cost = SKUS[sku_index % len(SKUS)]
        return {"id": next(self._item_ids), "skuId": 8_801 + sku_index % len(SKUS), "description": name,
                "createdOn": created, "modifiedOn": created, "skuName": name, "skuCode": code, "skuType": type_,
                "vendorPartNumber": code.replace("-", ""), "quantity": float(quantity),
                "quantityReceived": float(received), "cost": num(cost),
                "total": num(Decimal(str(cost)) * Decimal(str(quantity))),
                "serialNumbers": [], "status": status, "chargeable": True, "budgetCodeId": None}

    def _seed_purchase_orders(self, rng: random.Random, stamps: "_SeedClock", count: int,
                              vendors: list[Row], statuses: tuple[str, ...] = SEED_PO_STATUSES) -> list[Row]:
        rows = []
        warehouses = list(self.tables["warehouses"].rows)
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            created = stamps.any()
            status = rng.choice(statuses)
            vendor = rng.choice(vendors)
            warehouse = self.tables["warehouses"].rows[rng.choice(warehouses)].view
            stamp = iso(created)
            view = self._po_view(vendor.view["id"], rng.choice(units), rng.choice(warehouses), stamp,
                                 dict(warehouse["address"]))
            view["status"] = status
            view["jobId"] = rng.choice((None, None, rng.randint(20_001, 20_001 + count)))
            view["summary"] = rng.choice(("Coil stock", "Truck restock", "Job materials", "Water heater swap",
                                          "Panel upgrade parts", "Filters for maintenance agreements"))
            view["requiredOn"] = iso(created + 3 * 86_400_000_000)
            view["tax"] = num(rng.choice((0, 0, 12.5, 32.5, 48.75)))
            view["shipping"] = num(rng.choice((0, 0, 0, 25, 45)))
            received = status in ("Received", "Exported")
            for line in range(rng.randint(1, 5)):
                quantity = float(rng.choice((1, 2, 4, 5, 10, 12, 25)))
                got = quantity if received else (quantity / 2 if status == "PartiallyReceived" and line == 0 else 0)
                view["items"].append(self._po_item(rng.randrange(len(SKUS)), quantity, stamp, got,
                                                   "Received" if received else "Pending"))
            modified = stamps.after(created)
            if status != "Pending":
                view["sentOn"] = iso(created + 3_600_000_000)
            if received:
                view["receivedOn"] = iso(modified)
            self._recompute("purchase_orders", view)
            rows.append(self._insert("purchase_orders", view, created, modified))
        return rows

    def _po_view(self, vendor_id: int, unit_id: int, location_id: int, date: str,
                 ship_to: dict[str, Any]) -> dict[str, Any]:
        pid = self.tables["purchase_orders"].allocate()
        return {"id": pid, "number": f"PO-{pid - 88_000}", "invoiceId": None, "jobId": None, "projectId": None,
                "status": "Pending", "typeId": 1, "vendorId": vendor_id, "technicianId": None, "shipTo": ship_to,
                "businessUnitId": unit_id, "inventoryLocationId": location_id, "batchId": None,
                "budgetCodeId": None, "vendorDocumentNumber": "", "date": date, "requiredOn": None, "sentOn": None,
                "receivedOn": None, "createdOn": None, "modifiedOn": None, "total": 0.0, "tax": 0.0,
                "shipping": 0.0, "summary": "", "items": [], "customFields": []}

    def _gl_ref(self, number: str) -> dict[str, Any] | None:
        """The GL reference lines carry; looked up by account number, cached per GL version."""
        table = self.tables["gl_accounts"]
        if self._gl_cache[0] != table.store.version:
            refs = {v["number"]: {"id": v["id"], "name": v["name"], "number": v["number"], "type": v["type"],
                                  "detailType": v["subtype"]} for v in (r.view for r in table.rows.values())}
            self._gl_cache = (table.store.version, refs)
        return self._gl_cache[1].get(number)  # shared: GL references are never edited in place

    def _named(self, entity: str, rid: int | None, field_name: str = "name") -> dict[str, Any] | None:
        row = self.tables[entity].rows.get(rid) if rid is not None else None
        return {"id": row.view["id"], "name": row.view[field_name]} if row else None

    def _bill_from_po(self, po: Row, modified_us: int) -> Row:
        """An inventory bill as receiving a PO creates it: lines priced from the PO."""
        v = po.view
        bill_id = self.tables["inventory_bills"].allocate()
        vendor = self.tables["vendors"].rows.get(v["vendorId"])
        warehouse = self.tables["warehouses"].rows.get(v["inventoryLocationId"])
        items = [self._bill_item(BILL_ITEM, order, item, item["quantityReceived"] or item["quantity"],
                                 self._gl_ref("5000" if v["jobId"] else "1200"),
                                 inventoryLocation=warehouse.view["name"] if warehouse else None)
                 for order, item in enumerate(v["items"], start=1)]
        received_us = parse_when(v["receivedOn"]) if v["receivedOn"] else modified_us
        view = fresh(INVENTORY_BILL, id=bill_id, purchaseOrderId=v["id"],
                     syncStatus="Exported" if v["status"] == "Exported" else "Pending",
                     referenceNumber=f"INV-{(bill_id * 7919) % 900_000 + 100_000}",
                     vendorNumber=f"ACCT-{v['vendorId']:05d}",
                     summary=v["summary"], billDate=iso(received_us), taxAmount=money(v["tax"]),
                     shippingAmount=money(v["shipping"]), createdBy="Receiving",
                     dueDate=iso(received_us + 30 * 86_400_000_000), shipToDescription="Warehouse",
                     businessUnit=self._named("business_units", v["businessUnitId"]),
                     vendor={"id": v["vendorId"], "name": vendor.view["name"] if vendor else None},
                     shipTo=dict(v["shipTo"]), items=items, jobId=v["jobId"],
                     jobNumber=str(v["jobId"]) if v["jobId"] else None)
        self._recompute("inventory_bills", view)
        return self._insert("inventory_bills", view, modified_us, modified_us, extra={"billType": "Procurement"})

    def _bill_item(self, template: dict[str, Any], order: int, line: dict[str, Any], quantity: Any,
                   account: dict[str, Any] | None = None, **values: Any) -> dict[str, Any]:
        """A bill line priced from a PO line (`skuName`, `description`, `cost`, `skuId`, `skuType`,
        `skuCode`), posted to `account` (default: inventory asset)."""
        return fresh(template, order=order, name=line["skuName"], description=line["description"],
                     quantity=money(quantity), cost=money(line["cost"]),
                     generalLedgerAccount=account or self._gl_ref("1200"), costOfSaleAccount=self._gl_ref("5000"),
                     assetAccount=self._gl_ref("1200"), id=next(self._item_ids), skuId=line["skuId"],
                     skuType=line["skuType"], skuCode=line["skuCode"], **values)

    def _seed_ap_bills(self, rng: random.Random, stamps: "_SeedClock", count: int, vendors: list[Row],
                       pos: list[Row]) -> None:
        units = list(self.tables["business_units"].rows)
        received = [po for po in pos if po.view["status"] in ("Received", "Exported")]
        for _ in range(count):
            created = stamps.any()
            vendor = rng.choice(vendors).view
            procurement = bool(received) and rng.random() < 0.5
            po = rng.choice(received).view if procurement else None
            bill_id = self.tables["ap_bills"].allocate()
            view = fresh(AP_BILL, id=bill_id, purchaseOrderId=po["id"] if po else None,
                         syncStatus=rng.choice(SYNC_STATUSES),
                         status=rng.choice(("Unreconciled", "Reconciled", "Reconciled", "Discrepancy")),
                         source="Purchasing" if po else "Standalone", billType="Procurement" if po else "ApBill",
                         referenceNumber=f"AP-{bill_id}", vendorNumber=f"ACCT-{vendor['id']:05d}",
                         summary=po["summary"] if po else "Monthly expense", billDate=iso(created),
                         taxAmount=money(po["tax"] if po else 0), shippingAmount=money(po["shipping"] if po else 0),
                         createdBy="AP Clerk", dueDate=iso(created + 30 * 86_400_000_000),
                         businessUnit=self._named("business_units", rng.choice(units)),
                         vendor={"id": vendor["id"], "name": vendor["name"]})
            if po:
                view["items"] = [self._bill_item(AP_BILL_ITEM, order, item, item["quantity"],
                                                 vendorPartNumber=item["vendorPartNumber"])
                                 for order, item in enumerate(po["items"], start=1)]
            else:
                for _line in range(rng.randint(1, 3)):
                    text, number = rng.choice(EXPENSES)
                    view["expenseItems"].append({
                        "id": next(self._item_ids), "amount": money(rng.randint(40, 2400) + rng.choice((0, 0.5, 0.99))),
                        "description": text, "generalLedgerAccount": self._gl_ref(number), "job": None,
                        "businessUnit": view["businessUnit"], "budgetCodeId": None, "projectLabelIds": []})
            self._recompute("ap_bills", view)
            self._insert("ap_bills", view, created, stamps.after(created))

    def _seed_ap_payments(self, rng: random.Random, stamps: "_SeedClock", bills: list[Row]) -> None:
        checking = self._gl_ref("1010")
        for bill in bills:
            if rng.random() < 0.5:
                continue
            b = bill.view
            created = stamps.after(bill.modified_us)
            amount = num(dec(b["billAmount"]))
            view = fresh(AP_PAYMENT, id=self.tables["ap_payments"].allocate(), date=iso(created),
                         approvedDate=iso(created), method=rng.choice(("AccountingSystem", "ServiceTitan")),
                         name=f"Check {rng.randint(10000, 99999)}",
                         amount=amount, status="Paid", syncStatus=rng.choice(SYNC_STATUSES), glAccount=checking,
                         businessUnit=b["businessUnit"], vendor=dict(b["vendor"]),
                         splits=[{"id": next(self._item_ids), "active": True, "createdOn": iso(created),
                                  "documentId": None, "inventoryBillId": b["id"], "amount": amount}])
            self._insert("ap_payments", view, created, stamps.after(created))

    def _seed_invoices(self, rng: random.Random, stamps: "_SeedClock", count: int, customers: list[Row]) -> list[Row]:
        rows = []
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            customer = rng.choice(customers)
            created = stamps.after(customer.created_us)
            jid = self.tables["jobs"].allocate()
            location = (customer.extra.get("locations") or [{"id": None}])[0]
            job = self._insert("jobs", fresh(JOB, id=jid, jobNumber=str(jid), customerId=customer.view["id"],
                                             locationId=location["id"], businessUnitId=rng.choice(units),
                                             jobStatus="Completed", completedOn=iso(created)), created, created)
            view = self._invoice_view(customer, job, created)
            view["reviewStatus"] = rng.choice(("Reviewed", "Invoiced", "NeedsReview", "ReadyForBilling"))
            view["sentStatus"] = rng.choice(("Sent", "Sent", "NotSent", "Opened"))
            view["syncStatus"] = rng.choice(SYNC_STATUSES)
            service = rng.choice(SERVICES)
            stamp = view["invoiceDate"]
            view["items"].append(self._invoice_item(service[0], 1, service[1], "Service", service[2], None, stamp, 1))
            for order in range(2, rng.randint(2, 5)):
                sku = rng.randrange(len(SKUS))
                code, name, type_, cost = SKUS[sku]
                view["items"].append(self._invoice_item(name, rng.choice((1, 1, 2, 3)), round(cost * 1.65, 2),
                                                        type_, "4200", 8_801 + sku, stamp, order, cost))
            self._recompute("invoices", view)
            rows.append(self._insert("invoices", view, created, stamps.after(created), extra={"paid": Decimal(0)}))
            job.view["invoiceId"] = view["id"]
        return rows

    def _invoice_view(self, customer: Row, job: Row | None, created: int) -> dict[str, Any]:
        table = self.tables["invoices"]
        iid = table.allocate()
        c = customer.view
        location = (customer.extra.get("locations") or [None])[0]
        unit = job.view["businessUnitId"] if job else next(iter(self.tables["business_units"].rows))
        address = {k: c["address"].get(k) for k in ("street", "unit", "city", "state", "zip", "country")}
        return {
            "id": iid, "syncStatus": "Pending", "budgetCodeId": None, "referenceNumber": str(iid - 10_000),
            "invoiceDate": iso(created), "dueDate": iso(created + 30 * 86_400_000_000), "subTotal": "0.00",
            "salesTax": "0.00", "salesTaxCode": {"id": 3, "name": "Fresno County", "taxRate": 0.0798},
            "taxZoneId": 3, "total": "0.00", "balance": "0.00", "invoiceType": {"id": 1, "name": "Service"},
            "customer": {"id": c["id"], "name": c["name"]}, "customerAddress": address,
            "location": {"id": location["id"], "name": location["name"]} if location else None,
            "locationAddress": dict(address), "businessUnit": self._named("business_units", unit),
            "termName": "Due Upon Receipt", "createdBy": "Technician", "batch": None, "depositedOn": None,
            "createdOn": None, "modifiedOn": None, "adjustmentToId": None,
            "job": {"id": job.view["id"], "number": job.view["jobNumber"], "type": "Service Call"} if job else None,
            "projectId": None, "royalty": {"status": "Pending", "date": None, "sentOn": None, "memo": None},
            "employeeInfo": None, "commissionEligibilityDate": None, "sentStatus": "NotSent",
            "reviewStatus": "NeedsReview", "assignedTo": None, "summary": "", "items": [], "customFields": [],
            "active": True, "discountTotal": "0.00", "importId": None, "exportId": None, "materialSkuId": None,
            "membershipId": None, "paidOn": None, "invoiceConfiguration": "JobInvoice",
        }

    def _invoice_item(self, name: str, quantity: float, price: float, type_: str, account: str,
                      sku_id: int | None, stamp: str, order: int, cost: float = 0.0) -> dict[str, Any]:
        return {"id": next(self._item_ids), "description": name, "quantity": money(quantity), "cost": money(cost),
                "totalCost": money(Decimal(str(cost)) * Decimal(str(quantity))), "budgetCodeId": None,
                "inventoryLocationId": None, "inventoryLocation": None, "price": money(price), "type": type_,
                "skuName": name, "skuId": sku_id or 7_001, "total": "0.00", "inventory": type_ != "Service",
                "taxable": type_ != "Service", "isChargeable": True, "generalLedgerAccount": self._gl_ref(account),
                "costOfSaleAccount": self._gl_ref("5000") if type_ != "Service" else None,
                "assetAccount": self._gl_ref("1200") if type_ != "Service" else None, "membershipTypeId": 0,
                "itemGroup": None, "displayName": name, "soldHours": None, "createdOn": stamp, "modifiedOn": stamp,
                "serviceDate": stamp, "order": order, "businessUnit": None, "createdById": 1,
                "displayInAmount": True, "importId": None, "exportId": None, "inventoryStatus": None,
                "addOn": False, "memberPrice": None, "technicianId": None, "installedEquipmentId": None,
                "estimateItemId": None}

    def _seed_payments(self, rng: random.Random, stamps: "_SeedClock", invoices: list[Row]) -> None:
        for invoice in invoices:
            if rng.random() > 0.7:
                continue
            created = stamps.after(invoice.created_us)
            total = dec(invoice.view["total"])
            amount = total if rng.random() < 0.85 else (total / 2).quantize(_CENT)
            if amount <= 0:
                continue
            self._new_payment(rng.choice(list(PAYMENT_TYPES)), [(invoice, amount)], amount,
                              invoice.view["customer"]["id"], created, memo="", check=None,
                              sync=rng.choice(SYNC_STATUSES), modified=stamps.after(created))

    def _seed_adjustments(self, rng: random.Random, stamps: "_SeedClock", count: int) -> None:
        warehouses = list(self.tables["warehouses"].rows)
        units = list(self.tables["business_units"].rows)
        for _ in range(count):
            created = stamps.any()
            aid = self.tables["adjustments"].allocate()
            stamp = iso(created)
            view = fresh(ADJUSTMENT, id=aid, active=rng.random() > 0.05, number=f"ADJ-{aid - 29_000}",
                         referenceNumber=f"CC-{aid}", type=rng.choice(ADJUSTMENT_TYPES),
                         inventoryLocationId=rng.choice(warehouses), businessUnitId=rng.choice(units), date=stamp,
                         syncStatus=rng.choice(SYNC_STATUSES))
            for _line in range(rng.randint(1, 3)):
                sku = rng.randrange(len(SKUS))
                view["items"].append(self._adjustment_item(sku, float(rng.choice((-3, -1, 1, 2, 5))), stamp))
            self._recompute("adjustments", view)
            self._insert("adjustments", view, created, stamps.after(created))

    def _adjustment_item(self, sku: int, quantity: float, stamp: str) -> dict[str, Any]:
        code, name, _type, cost = SKUS[sku % len(SKUS)]
        return {"id": next(self._item_ids), "skuId": 8_801 + sku % len(SKUS), "description": name,
                "createdOn": stamp, "modifiedOn": stamp, "name": name, "code": code, "quantity": quantity,
                "cost": num(cost), "totalCost": 0.0, "createdById": 1, "active": True, "budgetCodeId": None,
                "serialNumbers": []}

# ---- module helpers -------------------------------------------------------------------------

class _SeedClock:
    """Deterministic past timestamps for seeded history (all before any live change)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def early(self) -> int:
        return SEED_START_US + self._rng.randrange(0, 30 * 86_400) * 1_000_000

    def any(self) -> int:
        return SEED_START_US + self._rng.randrange(30 * 86_400, SEED_SPAN_US // 1_000_000 - 40 * 86_400) * 1_000_000 \
            + self._rng.randrange(1000) * 1000

    def after(self, us: int) -> int:
        return min(us + self._rng.randrange(0, 20 * 86_400) * 1_000_000 + self._rng.randrange(1000) * 1000,
                   SEED_START_US + SEED_SPAN_US)


def _random_row(table: Table, rng: random.Random) -> Row:
    """A random row without listing the table: ids are dense, so a few probes find one."""
    for _ in range(8):
        row = table.get(rng.randint(table.first_id, table.last_id))
        if row is not None:
            return row
    return rng.choice(table.values())
