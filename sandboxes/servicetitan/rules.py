"""ServiceTitan business rules: derived amounts, receiving, payments applied to invoices,
changes and their webhook events, the control API's tick and put_entity."""

from __future__ import annotations

import json
import random
import uuid
from decimal import Decimal
from typing import Any

from sandboxes.kit import seed as words
from sandboxes.servicetitan.store import ADJUSTMENT_TYPES, SKUS, Row, _random_row
from sandboxes.servicetitan.vendor import (
    PAYMENT_TYPES, PO_STATUSES, RESOURCES, _CENT, _address, dec, invalid, iso, money, num,
)
from sandboxes.servicetitan.views import (
    ADJUSTMENT, AP_BILL, AP_BILL_ITEM, AP_PAYMENT, BILL_ITEM, GL_ACCOUNT, INVENTORY_BILL, JOB, PAYMENT, VENDOR, WAREHOUSE,
    fresh,
)


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

    def _touch(self, entity: str, row: Row, now_us: int | None = None) -> None:
        now = now_us if now_us is not None else self.clock.now_us()
        row.modified_us = now
        row.view["modifiedOn"] = iso(now)
        if "active" in row.view:
            row.active = bool(row.view["active"])
        self.tables[entity].stamp(row)

    def _emit(self, entity: str, kind: str, row: Row) -> None:
        created, updated = self.event_types.get(entity, (None, None))
        event_type = created if kind == "created" else updated
        if event_type and self.webhooks is not None:
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
        elif entity == "customers":
            v["doNotMail"] = not v["doNotMail"]
        elif entity == "invoices":
            v["reviewStatus"] = rng.choice(("Reviewed", "Invoiced", "ReadyForBilling", "OnHold"))
        elif entity == "vendors":
            v["contactInfo"]["phone"] = words.phone(rng, "digits")
        elif entity == "inventory_bills":
            v["summary"] = f"{(v['summary'] or '').split(' (')[0]} (rev {rng.randint(2, 99)})"
        elif entity == "payments":
            v["memo"] = f"Reviewed {rng.randint(1, 999)}"
        elif entity == "ap_bills":
            v["status"] = rng.choice(("Unreconciled", "Reconciled", "Discrepancy"))
        else:
            if "memo" in v:
                v["memo"] = f"Updated {rng.randint(1, 999)}"
            elif "summary" in v:
                v["summary"] = f"Updated {rng.randint(1, 999)}"
        self._changed(entity, row)

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        name = self._entity_name(entity)
        table = self.tables[name]
        payload = dict(payload)
        if "externalData" in payload:
            raise ValueError("externalData is per application: set it with the vendor PATCH endpoint")
        if name == "purchase_orders" and payload.get("status", "Pending") not in PO_STATUSES:
            raise ValueError(f"status must be one of {', '.join(PO_STATUSES)}")
        rid = payload.pop("id", None)
        existing = table.rows.get(int(rid)) if rid is not None else None
        if existing is not None:
            before = existing.view.get("status")
            self._apply(name, existing.view, payload)
            self._recompute_if(name, existing.view, payload)
            self._changed(name, existing)
            if name == "purchase_orders" and before != "Received" and existing.view["status"] == "Received":
                self._receive(existing)
            return json.loads(json.dumps(existing.view))
        view = self._template(name)
        if rid is not None:
            view["id"] = int(rid)
        self._apply(name, view, payload)
        self._recompute_if(name, view, payload)
        extra = {"paid": Decimal(0)} if name == "invoices" else {}
        row = self._create(name, view, extra)
        if name == "customers" and not row.extra.get("locations"):
            self._attach_location(row, view["name"], view["address"], [])
        if name == "purchase_orders" and view["status"] == "Received":
            self._receive(row)
        return json.loads(json.dumps(row.view))

    def _recompute_if(self, entity: str, view: dict[str, Any], payload: dict[str, Any]) -> None:
        totals = {"total", "billAmount", "subTotal", "balance", "vendorInvoiceTotal"}
        if not totals & set(payload):
            self._recompute(entity, view)

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
            extra = {"vendorPartNumber": code} if entity == "ap_bills" else {}
            return fresh(AP_BILL_ITEM if extra else BILL_ITEM, name=name, description=name, cost=money(cost),
                         generalLedgerAccount=self._gl_ref("1200"), costOfSaleAccount=self._gl_ref("5000"),
                         assetAccount=self._gl_ref("1200"), id=next(self._item_ids), skuId=8_801, skuType=type_,
                         skuCode=code, **extra)
        raise ValueError(f"{entity} has no items")

    def _template(self, entity: str) -> dict[str, Any]:
        """A complete, valid record of `entity` for put_entity to fill in."""
        now = self.clock.now_us()
        first = lambda name: next(iter(self.tables[name].rows), None)  # noqa: E731
        allocate = self.tables[entity].allocate
        if entity == "vendors":
            return fresh(VENDOR, id=allocate())
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
        if entity in ("gl_accounts", "warehouses"):
            return fresh(GL_ACCOUNT if entity == "gl_accounts" else WAREHOUSE, id=allocate())
        if entity == "jobs":
            jid = allocate()
            return fresh(JOB, id=jid, jobNumber=str(jid), customerId=first("customers"),
                         businessUnitId=first("business_units"))
        raise KeyError(entity)

    @staticmethod
    def _entity_name(entity: str) -> str:
        name = entity.replace("-", "_")
        aliases = {"purchaseorders": "purchase_orders", "inventorybills": "inventory_bills", "apbills": "ap_bills",
                   "appayments": "ap_payments", "glaccounts": "gl_accounts", "businessunits": "business_units"}
        name = aliases.get(name.replace("_", ""), name)
        if name not in RESOURCES:
            raise KeyError(entity)
        return name

    def _vendor_named(self, name: str, exclude: int | None = None) -> Row | None:
        wanted = name.strip().lower()
        for row in self.tables["vendors"].rows.values():
            if row.view["name"].strip().lower() == wanted and row.view["id"] != exclude:
                return row
        return None

    def _po_reference_errors(self, body: dict[str, Any]) -> dict[str, list[str]]:
        errors: dict[str, list[str]] = {}
        if "vendorId" in body and body["vendorId"] not in self.tables["vendors"].rows:
            errors["VendorId"] = ["Vendor not found."]
        if "businessUnitId" in body and body["businessUnitId"] not in self.tables["business_units"].rows:
            errors["BusinessUnitId"] = ["Business unit not found."]
        if "inventoryLocationId" in body and body["inventoryLocationId"] not in self.tables["warehouses"].rows:
            errors["InventoryLocationId"] = ["Inventory location not found."]
        for index, item in enumerate(body.get("items") or []):
            if isinstance(item, dict) and isinstance(item.get("skuId"), int) and not 8_801 <= item["skuId"] < 8_801 + len(SKUS):
                errors[f"Items[{index}].SkuId"] = ["Sku not found."]
        return errors

    def _po_item_from_request(self, item: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
        stamp = iso(self.clock.now_us())
        base = dict(current) if current else self._po_item(item["skuId"] - 8_801, item["quantity"], stamp)
        base.update({"skuId": item["skuId"], "description": item["description"],
                     "vendorPartNumber": item["vendorPartNumber"], "quantity": float(item["quantity"]),
                     "cost": num(item["cost"]), "budgetCodeId": item.get("budgetCodeId"), "modifiedOn": stamp})
        if not current:
            code, name, type_, _cost = SKUS[(item["skuId"] - 8_801) % len(SKUS)]
            base.update({"skuCode": code, "skuName": name, "skuType": type_})
        return base

    def _split_errors(self, splits: Any, customer_id: int | None) -> tuple[dict[str, list[str]], list[tuple[Row, Decimal]]]:
        errors: dict[str, list[str]] = {}
        applied: list[tuple[Row, Decimal]] = []
        if splits is None:
            return errors, applied
        if not isinstance(splits, list):
            return {"Splits": ["The Splits field must be a list."]}, applied
        for index, split in enumerate(splits):
            if not isinstance(split, dict) or not isinstance(split.get("invoiceId"), int):
                errors[f"Splits[{index}].InvoiceId"] = ["The InvoiceId field is required."]
                continue
            invoice = self.tables["invoices"].rows.get(split["invoiceId"])
            if invoice is None:
                errors[f"Splits[{index}].InvoiceId"] = [f"Invoice {split['invoiceId']} not found."]
                continue
            if customer_id is not None and (invoice.view["customer"] or {}).get("id") != customer_id:
                errors[f"Splits[{index}].InvoiceId"] = [f"Invoice {split['invoiceId']} belongs to another customer."]
                continue
            amount = dec(split.get("amount"))
            if amount <= 0:
                errors[f"Splits[{index}].Amount"] = ["The split amount must be greater than 0."]
                continue
            applied.append((invoice, amount.quantize(_CENT)))
        return errors, applied

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

    def _payment_response(self, row: Row) -> dict[str, Any]:
        v = row.view
        return {"active": v["active"], "authCode": v["authCode"], "checkNumber": v["checkNumber"],
                "customerId": (v["customer"] or {}).get("id"), "exportId": row.extra.get("exportId"),
                "id": v["id"], "memo": v["memo"], "paidOn": v["date"], "splits": list(row.extra.get("splits", [])),
                "status": v["syncStatus"], "transactionStatus": "Success", "typeId": row.extra.get("typeId", int(v["typeId"]))}


def _pick_address(raw: dict[str, Any], geo: bool = False) -> dict[str, Any]:
    """Only the address fields the read view has (request bodies may carry others)."""
    address = {key: raw.get(key) if key != "unit" else raw.get(key) or "" for key in
               ("street", "unit", "city", "state", "zip", "country")}
    if geo:
        address.update(latitude=raw.get("latitude"), longitude=raw.get("longitude"))
    return address


def _parse_external(external: Any) -> tuple[str, list[tuple[str, str | None]], str] | None:
    """Validate an externalData patch: (application guid, key/value pairs, patch mode)."""
    if not external:
        return None
    if not isinstance(external, dict) or not external.get("applicationGuid"):
        raise invalid("ExternalData.ApplicationGuid", "The ApplicationGuid field is required.")
    try:
        guid = str(uuid.UUID(str(external["applicationGuid"])))
    except ValueError:
        raise invalid("ExternalData.ApplicationGuid", "The value is not a valid GUID.") from None
    pairs = external.get("externalData")
    if not isinstance(pairs, list) or not all(isinstance(p, dict) and isinstance(p.get("key"), str) for p in pairs):
        raise invalid("ExternalData.ExternalData", "A list of {key, value} pairs is required.")
    mode = external.get("patchMode") or "Replace"
    if mode not in ("Replace", "Merge"):
        raise invalid("ExternalData.PatchMode", f"The value '{mode}' is not valid.")
    return guid, [(p["key"], None if p.get("value") is None else str(p["value"])) for p in pairs], mode


def _apply_external(row: Row, parsed: tuple[str, list[tuple[str, str | None]], str] | None) -> None:
    if parsed is None:
        return
    guid, pairs, mode = parsed
    store = row.external.setdefault(guid, {})
    if mode == "Replace":
        store.clear()
    for key, value in pairs:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value

