"""ServiceTitan business rules: derived amounts, receiving, payments applied to invoices,
changes and their webhook events, the control API's tick and put_entity."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any, Callable

from sandboxes.kit import seed as words
from sandboxes.servicetitan.store import ADJUSTMENT_TYPES, SKUS, Row, _random_row
from sandboxes.servicetitan.vendor import (
    ADJUSTMENT, AP_BILL, AP_BILL_ITEM, AP_PAYMENT, BILL_ITEM, GL_ACCOUNT, INVENTORY_BILL, JOB, PAYMENT, PAYMENT_TYPES,
    PO_STATUSES, RESOURCES, VENDOR, WAREHOUSE, _address, dec, fresh, iso, money, num,
)


# Control-API entity names also answer without separators ("purchaseorders" for purchase_orders).
_ALIASES = {entity.replace("_", ""): entity for entity in RESOURCES if "_" in entity}


class RulesMixin:
    """ServiceTitan's business rules, mixed into the sandbox (state: `self.tables` under `self.lock`)."""

    # ---- derived amounts -----------------------------------------------------------------

    def _recompute(self, entity: str, view: dict[str, Any]) -> None:
        """Keep totals consistent with lines, the way the vendor computes them."""
        if entity == "purchase_orders":
            subtotal = Decimal(0)
            for item in view["items"]:
                item["total"] = num(dec(item["quantity"]) * dec(item["cost"]))
                subtotal += dec(item["total"])
            view["total"] = num(subtotal + dec(view["tax"]) + dec(view["shipping"]))
        elif entity in ("inventory_bills", "ap_bills"):
            subtotal = sum((dec(i["quantity"]) * dec(i["cost"]) for i in view["items"]), Decimal(0))
            subtotal += sum((dec(e["amount"]) for e in view.get("expenseItems") or ()), Decimal(0))
            view["billAmount"] = money(subtotal + dec(view["taxAmount"]) + dec(view["shippingAmount"]))
            if "vendorInvoiceTotal" in view:
                view["vendorInvoiceTotal"] = view["billAmount"]
        elif entity == "invoices":
            subtotal = taxable = Decimal(0)
            for item in view["items"]:
                item["total"] = money(dec(item["quantity"]) * dec(item["price"]))
                subtotal += dec(item["total"])
                if item["taxable"]:
                    taxable += dec(item["total"])
            rate = dec((view.get("salesTaxCode") or {}).get("taxRate", 0))
            view["subTotal"] = money(subtotal)
            view["salesTax"] = money(taxable * rate)
            view["total"] = money(subtotal + dec(view["salesTax"]))
            view["balance"] = view["total"]
        elif entity == "adjustments":
            for item in view["items"]:
                item["totalCost"] = num(dec(item["quantity"]) * dec(item["cost"]))

    def _refresh_invoice_balance(self, invoice: Row, paid_on: str | None) -> None:
        total = dec(invoice.view["total"])
        paid = invoice.extra.get("paid", Decimal(0))
        invoice.view["balance"] = money(total - paid)
        invoice.view["paidOn"] = (paid_on or invoice.view["paidOn"]) if paid >= total > 0 else None

    # ---- changes and events ------------------------------------------------------------------

    def _touch(self, entity: str, row: Row) -> None:
        now = row.modified_us = self.clock.now_us()
        row.view["modifiedOn"] = iso(now)
        if "active" in row.view:
            row.active = bool(row.view["active"])
        self.tables[entity].store.touch(row.id)

    def _emit(self, entity: str, kind: str, row: Row) -> None:
        event_type = RESOURCES[entity].event_type(kind)
        if event_type:
            self.webhooks.emit(event_type, self.tenant_id, row.view)  # serialized at once, under the lock

    def _create(self, entity: str, view: dict[str, Any], extra: dict[str, Any] | None = None) -> Row:
        now = self.clock.now_us()
        row = self._insert(entity, view, now, now, extra=extra or {})
        self._emit(entity, "created", row)
        return row

    def _changed(self, entity: str, row: Row) -> None:
        self._touch(entity, row)
        self._emit(entity, "updated", row)

    def _receive(self, po: Row) -> Row | None:
        """Receiving a PO in full creates its inventory bill (once)."""
        v = po.view
        now = self.clock.now_us()
        v["receivedOn"] = iso(now)
        for item in v["items"]:
            item["quantityReceived"] = item["quantity"]
            item["status"] = "Received"
            item["modifiedOn"] = iso(now)
        if any(b.view["purchaseOrderId"] == v["id"] for b in self.tables["inventory_bills"].rows.values()):
            return None
        bill = self._bill_from_po(po, now)
        self._emit("inventory_bills", "created", bill)
        return bill

    # ---- control API: tick / put_entity ----------------------------------------------------

    _TICK_WEIGHTS = (("purchase_orders", 3), ("customers", 2), ("invoices", 2), ("vendors", 1),
                     ("inventory_bills", 1), ("payments", 1), ("ap_bills", 1), ("adjustments", 1))

    def tick(self, count: int, entity: str | None = None) -> list[dict[str, Any]]:
        """Change `count` records (of `entity`, or a weighted mix) the way daily work would."""
        rng = self._tick_rng
        names = [n for n, w in self._TICK_WEIGHTS for _ in range(w)] if entity is None else [self._entity_name(entity)]
        changed = []
        for _ in range(max(0, count)):
            name = rng.choice(names)
            table = self.tables[name]
            if not table.rows:
                continue
            row = _random_row(table, rng)
            self._tick_one(name, row, rng)
            changed.append({"entity": name, "id": row.view["id"], "modifiedOn": row.view.get("modifiedOn")})
        return changed

    def _tick_one(self, entity: str, row: Row, rng: random.Random) -> None:
        v = row.view
        if entity == "purchase_orders":
            following = {"Pending": "Sent", "Sent": "PartiallyReceived", "PartiallyReceived": "Received"}
            nxt = following.get(v["status"])
            if nxt:
                v["status"] = nxt
                if nxt == "Sent":
                    v["sentOn"] = iso(self.clock.now_us())
                elif nxt == "PartiallyReceived":
                    v["items"][0]["quantityReceived"] = v["items"][0]["quantity"] / 2 if v["items"] else 0
                self._changed(entity, row)
                if nxt == "Received":
                    self._receive(row)
                return
            v["summary"] = f"{v['summary'].split(' (')[0]} (rev {rng.randint(2, 99)})"
        edits: dict[str, Callable[[], Any]] = {  # one routine change per collection, drawn from `rng`
            "customers": lambda: v.update(doNotMail=not v["doNotMail"]),
            "invoices": lambda: v.update(reviewStatus=rng.choice(("Reviewed", "Invoiced", "ReadyForBilling",
                                                                  "OnHold"))),
            "vendors": lambda: v["contactInfo"].update(phone=words.phone(rng, "digits")),
            "inventory_bills": lambda: v.update(summary=f"{(v['summary'] or '').split(' (')[0]} "
                                                        f"(rev {rng.randint(2, 99)})"),
            "payments": lambda: v.update(memo=f"Reviewed {rng.randint(1, 999)}"),
            "ap_bills": lambda: v.update(status=rng.choice(("Unreconciled", "Reconciled", "Discrepancy"))),
        }
        if entity in edits:
            edits[entity]()
        elif entity != "purchase_orders" and ("memo" in v or "summary" in v):
            v["memo" if "memo" in v else "summary"] = f"Updated {rng.randint(1, 999)}"
        self._changed(entity, row)

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        name = self._entity_name(entity)
        payload = dict(payload)
        if "externalData" in payload:
            raise ValueError("externalData is per application: set it with the vendor PATCH endpoint")
        if name == "purchase_orders" and payload.get("status", "Pending") not in PO_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PO_STATUSES)}")
        rid = payload.pop("id", None)
        row = self.tables[name].rows.get(int(rid)) if rid is not None else None
        before = row.view.get("status") if row is not None else None
        view = row.view if row is not None else self._template(name)
        if row is None and rid is not None:
            view["id"] = int(rid)
        self._apply(name, view, payload)
        if not {"total", "billAmount", "subTotal", "balance", "vendorInvoiceTotal"} & set(payload):
            self._recompute(name, view)  # totals given in the payload are kept as given
        if row is not None:
            self._changed(name, row)
        else:
            row = self._create(name, view, {"paid": Decimal(0)} if name == "invoices" else {})
            if name == "customers" and not row.extra.get("locations"):
                self._attach_location(row, view["name"], view["address"], [])
        if name == "purchase_orders" and before != "Received" and view["status"] == "Received":
            self._receive(row)
        return json.loads(json.dumps(row.view))

    def _apply(self, entity: str, view: dict[str, Any], payload: dict[str, Any]) -> None:
        for key, value in payload.items():
            if key not in view:
                raise ValueError(f"unknown field {key!r} for {entity}")
            if key == "items" and isinstance(value, list):
                view["items"] = [self._merge_item(entity, view, item) for item in value]
            elif isinstance(value, dict) and isinstance(view[key], dict):
                view[key] = {**view[key], **value}
            else:
                view[key] = value
        if entity in ("inventory_bills", "ap_bills") and "vendor" in payload and "id" in (payload["vendor"] or {}):
            vendor = self.tables["vendors"].rows.get(payload["vendor"]["id"])
            if vendor and not payload["vendor"].get("name"):
                view["vendor"]["name"] = vendor.view["name"]

    def _merge_item(self, entity: str, view: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
        current = {i["id"]: i for i in view.get("items") or []}
        base = current.get(item.get("id")) or self._item_template(entity)
        unknown = set(item) - set(base)
        if unknown:
            raise ValueError(f"unknown item field(s) {sorted(unknown)} for {entity}")
        return {**base, **item}

    def _item_template(self, entity: str) -> dict[str, Any]:
        stamp = iso(self.clock.now_us())
        if entity == "purchase_orders":
            return self._po_item(0, 1, stamp)
        if entity == "adjustments":
            return self._adjustment_item(0, 1, stamp)
        if entity == "invoices":
            return self._invoice_item("Service", 1, 0, "Service", "4000", None, stamp, 1)
        if entity in ("inventory_bills", "ap_bills"):
            code, name, type_, cost = SKUS[0]
            line = {"skuName": name, "description": name, "cost": cost, "skuId": 8_801, "skuType": type_,
                    "skuCode": code}
            extra = {"vendorPartNumber": code} if entity == "ap_bills" else {}
            return self._bill_item(AP_BILL_ITEM if extra else BILL_ITEM, 1, line, 1, **extra)
        raise ValueError(f"{entity} has no items")

    def _template(self, entity: str) -> dict[str, Any]:
        """A complete, valid record of `entity` for put_entity to fill in."""
        now = self.clock.now_us()
        first = lambda name: next(iter(self.tables[name].rows), None)  # noqa: E731
        allocate = self.tables[entity].allocate
        plain = {"vendors": VENDOR, "gl_accounts": GL_ACCOUNT, "warehouses": WAREHOUSE}
        if entity in plain:
            return fresh(plain[entity], id=allocate())
        if entity == "customers":
            return self._customer_view("New Customer", "Residential",
                                       {**_address("1 Main St", "", "Fresno", "CA", "93721"), "latitude": None,
                                        "longitude": None})
        if entity == "purchase_orders":
            warehouse = first("warehouses")
            view = self._po_view(first("vendors") or 0, first("business_units") or 0, warehouse or 0, iso(now),
                                 _address("2900 S Chestnut Ave", "", "Fresno", "CA", "93725"))
            view["items"] = [self._po_item(0, 1, iso(now))]
            return view
        if entity in ("inventory_bills", "ap_bills"):
            view = fresh(INVENTORY_BILL if entity == "inventory_bills" else AP_BILL, id=allocate(), billDate=iso(now),
                         dueDate=iso(now + 30 * 86_400_000_000),
                         businessUnit=self._named("business_units", first("business_units")),
                         vendor=self._named("vendors", first("vendors")))
            view["referenceNumber"] = f"{'INV' if entity == 'inventory_bills' else 'AP'}-{view['id']}"
            return view
        if entity == "invoices":
            customer = self.tables["customers"].rows.get(first("customers"))
            if customer is None:
                raise ValueError("create a customer before an invoice")
            return self._invoice_view(customer, None, now)
        if entity == "payments":
            return fresh(PAYMENT, businessUnit=self._named("business_units", first("business_units")),
                         customer=self._named("customers", first("customers")), date=iso(now),
                         generalLedgerAccount=self._gl_ref("1050"), id=allocate())
        if entity == "ap_payments":
            return fresh(AP_PAYMENT, id=allocate(), date=iso(now), glAccount=self._gl_ref("1010"),
                         vendor=self._named("vendors", first("vendors")))
        if entity == "adjustments":
            aid = allocate()
            return fresh(ADJUSTMENT, id=aid, number=f"ADJ-{aid - 29_000}", type=ADJUSTMENT_TYPES[0],
                         inventoryLocationId=first("warehouses") or 0, businessUnitId=first("business_units"),
                         date=iso(now))
        if entity == "business_units":
            view = json.loads(json.dumps(self.tables[entity].rows[first(entity)].view))
            view.update({"id": allocate(), "name": "New Business Unit", "externalData": []})
            return view
        if entity == "jobs":
            jid = allocate()
            return fresh(JOB, id=jid, jobNumber=str(jid), customerId=first("customers"),
                         businessUnitId=first("business_units"))
        raise KeyError(entity)

    @staticmethod
    def _entity_name(entity: str) -> str:
        name = entity.replace("-", "_")
        name = _ALIASES.get(name.replace("_", ""), name)
        if name not in RESOURCES:
            raise KeyError(entity)
        return name

    def _new_payment(self, type_id: int, applied: list[tuple[Row, Decimal]], amount: Decimal, customer_id: int,
                     paid_on: int, *, memo: str | None, check: str | None, sync: str, auth_code: str | None = None,
                     export_id: str | None = None, modified: int | None = None) -> Row:
        """Record a payment and apply it to its invoices, reducing their balances."""
        table = self.tables["payments"]
        customer = self.tables["customers"].rows[customer_id]
        unit = applied[0][0].view["businessUnit"] if applied else None
        view = fresh(PAYMENT, authCode=auth_code, businessUnit=unit, checkNumber=check, createdBy="Office",
                     customer={"id": customer_id, "name": customer.view["name"]}, date=iso(paid_on),
                     generalLedgerAccount=self._gl_ref("1050"), id=table.allocate(), memo=memo, syncStatus=sync,
                     total=money(amount), type=PAYMENT_TYPES[type_id], typeId=str(type_id))
        view["referenceNumber"] = f"PMT-{view['id']}"
        extra = {"exportId": export_id, "splits": [], "typeId": type_id}
        seeding = modified is not None
        stamp = paid_on if seeding else self.clock.now_us()
        row = self._insert("payments", view, stamp, modified if seeding else stamp, extra=extra)
        self._apply_splits(row, applied, amount, emit=not seeding)
        if not seeding:
            self._emit("payments", "created", row)
        return row

    def _apply_splits(self, row: Row, applied: list[tuple[Row, Decimal]], amount: Decimal, emit: bool) -> None:
        now = iso(self.clock.now_us()) if emit else row.view["date"]
        row.view["appliedTo"] = []
        row.extra["splits"] = []
        for invoice, split in applied:
            invoice.extra["paid"] = invoice.extra.get("paid", Decimal(0)) + split
            self._refresh_invoice_balance(invoice, row.view["date"])
            row.view["appliedTo"].append({"appliedAmount": money(split), "appliedBy": "Office",
                                          "appliedId": next(self._item_ids), "appliedOn": now,
                                          "appliedTo": invoice.view["id"],
                                          "appliedToReferenceNumber": invoice.view["referenceNumber"]})
            row.extra["splits"].append({"amount": float(split), "invoiceId": invoice.view["id"],
                                        "invoiceNumber": invoice.view["referenceNumber"]})
            if emit:
                self._changed("invoices", invoice)
        row.view["unappliedAmount"] = money(amount - sum((s for _, s in applied), Decimal(0)))
