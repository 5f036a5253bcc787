"""Acumatica's business rules: how a PUT body merges into a record, the defaults and checks
of each entity's screen, a refusal as the entity with field-level errors, what a release
does to balances, and what may not be deleted."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sandboxes.acumatica.model import (
    ACCOUNT_TYPES, BILL_TYPES, CUSTOMER_STATUSES, ENTITIES, INVOICE_TYPES, NON_STOCK_ITEMS, NOT_BALANCED, PAYMENT_TYPES,
    RELEASED, SUBACCOUNT_FORMAT, VENDOR_STATUSES, ApiError, EntityDef, Operation, Rec, Shape, _is_value_object, coerce,
    iso, money, norm, parse_dt,
)

Errors = list[tuple[tuple[Any, ...], str]]

# What a new record of each screen starts with, where the body gives no value.
NEW_DEFAULTS: dict[str, Rec] = {
    "Vendor": {"Status": "Active", "VendorClass": "DEFAULT", "Terms": "30D", "CurrencyID": "USD",
               "PaymentMethod": "CHECK", "CashAccount": "10100", "APAccount": "20000", "APSubaccount": "000-000",
               "F1099Vendor": False},
    "Customer": {"Status": "Active", "CustomerClass": "DEFAULT", "Terms": "30D", "CurrencyID": "USD",
                 "CreditLimit": 0.0},
    "Payment": {"PaymentMethod": "CHECK", "CashAccount": "10100", "CurrencyID": "USD", "CustomerLocationID": "MAIN"},
    "Account": {"Active": True, "CashAccount": False, "CurrencyID": "USD", "PostOption": "Detail"},
    "Subaccount": {"Active": True, "Secured": False},
    "StockItem": {"ItemStatus": "Active", "ItemType": "Finished Good", "BaseUOM": "EA", "DefaultWarehouseID": "MAIN"},
}
REQUIRED_NAMES = {  # entity -> (field, its label): a blank name is refused
    "Vendor": ("VendorName", "Vendor Name"),
    "Customer": ("CustomerName", "Customer Name"),
    "StockItem": ("Description", "Description"),
}
CHOICES = {  # entity -> (field, allowed values, what they are); a type's refusal lists the allowed ones
    "Vendor": ("Status", VENDOR_STATUSES, "vendor status"),
    "Customer": ("Status", CUSTOMER_STATUSES, "customer status"),
    "Bill": ("Type", BILL_TYPES, "bill type"),
    "Invoice": ("Type", INVOICE_TYPES, "invoice type"),
    "Payment": ("Type", PAYMENT_TYPES, "payment type"),
    "Account": ("Type", ACCOUNT_TYPES, "account type"),
}


@dataclass(frozen=True)
class Document:
    """How an AP/AR document names its partner and branch, and what may change once released."""

    partner: str  # the partner's entity (also the word in messages)
    partner_field: str
    blocked: tuple[str, ...]  # partner statuses that refuse a new document
    branch_field: str
    editable: frozenset[str]


DOCUMENTS = {
    "Bill": Document("Vendor", "Vendor", ("Inactive", "On Hold"), "BranchID",
                     frozenset({"Description", "note", "ApprovedForPayment", "DueDate"})),
    "Invoice": Document("Customer", "Customer", ("Inactive",), "LinkBranch",
                        frozenset({"Description", "note", "DueDate"})),
    "Payment": Document("Customer", "CustomerID", (), "BranchID", frozenset({"Description", "note"})),
}


def fill(rec: Rec, **defaults: Any) -> None:
    """Each default where the record has no value yet."""
    for name, value in defaults.items():
        if rec.get(name) is None:
            rec[name] = value


def _looks_like_id(part: Any) -> bool:
    return isinstance(part, str) and len(part) == 36 and part.count("-") == 4


class RulesMixin:
    """Saving, validating, releasing and deleting records of an `AcumaticaSandbox`."""

    def _save(self, d: EntityDef, body: Rec, *, mode: str, branch: str | None, business_date: str | None) -> Rec:
        """Upsert one record: locate, merge, default, validate, commit; raises ApiError."""
        table = self.tables[d.name]
        with self.lock:
            rid = body.get("id")
            existing = table.by_id(rid) if rid else None
            key_values = self._key_values(d, body)
            if existing is None and all(v not in (None, "") for v in key_values):
                existing = table.get(*key_values)
            if mode == "insert" and existing is not None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
            if mode == "update" and existing is None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record to update cannot be found.")
            errors: Errors = []
            candidate = copy.deepcopy(existing) if existing is not None else self._blank(d.shape, top=True)
            touched = self._merge(d.shape, candidate, body, (), errors, d.readonly)
            for key, value in zip(d.keys, key_values):
                if existing is not None:
                    if key in touched and norm(candidate.get(key)) != norm(existing.get(key)) and rid:
                        errors.append(((key,), "The key field cannot be changed."))
                    candidate[key] = existing.get(key)
                elif candidate.get(key) in (None, "") and value not in (None, ""):
                    candidate[key] = value
            numbered = d.numbering[0] if d.numbering else None
            if not errors:  # values that failed conversion stop the save before any business rule
                context = {"branch": branch, "business_date": business_date, "touched": touched}
                self._rules(d, candidate, existing, context, errors)
            if existing is None:
                errors += [((key,), f"'{key}' cannot be empty.") for key in d.keys
                           if candidate.get(key) in (None, "") and key != numbered]
            if errors:
                if existing is None and numbered and candidate.get(numbered) in (None, ""):
                    candidate[numbered] = "<NEW>"  # what the screen shows before a number is assigned
                self._refuse(d, candidate, errors, existing is None)
            if existing is None and numbered and candidate.get(numbered) in (None, ""):
                candidate[numbered] = table.next_number()
            self._clean(candidate)
            now = iso(self.clock.now_seconds())
            if d.change_field:
                candidate[d.change_field] = now
            if existing is None:
                if d.created_field:
                    candidate[d.created_field] = now
                if table.get(*(candidate.get(k) for k in d.keys)) is not None:
                    raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
                table.add(candidate)
            else:
                table.put(candidate)
            return candidate

    @staticmethod
    def _key_values(d: EntityDef, body: Rec, plain: bool = False) -> list[Any]:
        """The key values a body names (value objects, or `plain` values too), else the keys' defaults."""
        values = []
        for key in d.keys:
            raw = body.get(key)
            value = raw.get("value") if isinstance(raw, dict) else raw if plain else None
            values.append(value if value not in (None, "") else d.key_defaults.get(key))
        return values

    def _merge(self, shape: Shape, target: Rec, body: Rec, path: tuple[Any, ...],
               errors: Errors, readonly: frozenset[str] = frozenset()) -> set[str]:
        """Apply a value-object body onto a stored record; returns the names it set."""
        touched: set[str] = set()
        for name, raw in body.items():
            if name in ("id", "rowNumber", "delete", "_links", "files", "error"):
                continue
            if name == "note":
                if not _is_value_object(raw):
                    raise ApiError(400, "The 'note' field must be an object with a 'value' property.")
                target["note"] = raw.get("value") or ""
                touched.add(name)
            elif name == "custom":
                if isinstance(raw, dict):
                    for view, fields in raw.items():
                        if isinstance(fields, dict):
                            target.setdefault("custom", {}).setdefault(view, {}).update(fields)
            elif name in shape.fields:
                if not _is_value_object(raw):
                    where = "/".join(str(p) for p in (*path, name) if not _looks_like_id(p))
                    raise ApiError(400, f"Cannot deserialize the field '{where}': expected an object with a "
                                        "'value' property.")
                if name in readonly:
                    continue
                try:
                    target[name] = coerce(shape.fields[name], raw.get("value"))
                except ValueError as exc:
                    target[name] = raw.get("value")
                    errors.append(((*path, name), str(exc)))
                touched.add(name)
            elif name in shape.linked:
                if not isinstance(raw, dict):
                    raise ApiError(400, f"Cannot deserialize the linked entity '{name}': expected an object.")
                target.setdefault(name, self._blank(shape.linked[name]))
                self._merge(shape.linked[name], target[name], raw, (*path, name), errors)
                touched.add(name)
            elif name in shape.details:
                if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
                    raise ApiError(400, f"Cannot deserialize the detail collection '{name}': "
                                        "expected an array of objects.")
                self._merge_rows(shape.details[name], target.setdefault(name, []), raw, (*path, name), errors)
                touched.add(name)
        return touched

    def _merge_rows(self, shape: Shape, rows: list[Rec], incoming: list[Rec],
                    path: tuple[Any, ...], errors: Errors) -> None:
        """Rows with a known id are updated (or removed with `delete: true`); rows without one are added."""
        by_id = {row["id"]: row for row in rows}
        for raw in incoming:
            rid = str(raw.get("id") or "").lower()
            if raw.get("delete"):
                if rid in by_id:
                    rows.remove(by_id.pop(rid))
                continue
            row = by_id.get(rid)
            if row is None:
                row = {"id": self._new_id(), "_new": True}
                rows.append(row)
                by_id[row["id"]] = row
            row["_touched"] = self._merge(shape, row, raw, (*path, row["id"]), errors)

    def _refuse(self, d: EntityDef, candidate: Rec, errors: Errors, inserting: bool) -> None:
        expand: Rec = {name: {} for name in (*d.shape.details, *d.shape.linked)}
        body = self._render(d, self._clean(candidate), 1, expand)
        for path, message in errors:
            self._place_error(body, path, message)
        verb = "Inserting" if inserting else "Updating"
        headline = f"{verb} '{d.name}' record raised at least one error. Please review the errors."
        body["error"] = " ".join([headline, *(message for path, message in errors if not path)])
        body["_errors"] = [(tuple(p for p in path if not _looks_like_id(p)), m) for path, m in errors]
        raise ApiError(self.settings.validation_status, body["error"], body=body)

    @staticmethod
    def _place_error(body: Rec, path: tuple[Any, ...], message: str) -> None:
        node: Any = body
        if not path:
            return
        for part in path[:-1]:
            if isinstance(node, list):
                node = next((row for row in node if row.get("id") == part), None)
            elif isinstance(node, dict):
                node = node.get(part)
            if node is None:
                return
        if isinstance(node, dict):
            slot = node.get(path[-1])
            if not isinstance(slot, dict):
                slot = node[path[-1]] = {}
            slot["error"] = message

    @staticmethod
    def _clean(rec: Rec) -> Rec:
        """Drop the merge bookkeeping keys from detail rows."""
        for value in rec.values():
            if isinstance(value, list):
                for row in value:
                    if isinstance(row, dict):
                        row.pop("_new", None)
                        row.pop("_touched", None)
        return rec

    # ---- business rules ---------------------------------------------------------------------------

    def _check_ref(self, entity: str, value: Any, path: tuple[Any, ...], label: str, errors: Errors) -> Rec | None:
        """The referenced record, or None with an error when it is missing or inactive."""
        if value in (None, ""):
            return None
        rec = self.tables[entity].get(value)
        if rec is None:
            errors.append((path, f"{label} '{value}' cannot be found in the system."))
        elif rec.get("Active") is False:
            errors.append((path, f"{label} '{value}' is inactive."))
            return None
        return rec

    def _branch_known(self, branch: Any) -> bool:
        """Branches are the tenant's (settings), not records: the Default contract has no Branch entity."""
        return norm(branch) in {norm(code) for code in self.settings.branches}

    def _check_branch(self, value: Any, path: tuple[Any, ...], errors: Errors) -> None:
        if value not in (None, "") and not self._branch_known(value):
            errors.append((path, f"Branch '{value}' cannot be found in the system."))

    def _business_day(self, context: Rec) -> datetime:
        stamp = parse_dt(context.get("business_date")) if context.get("business_date") else None
        stamp = stamp or datetime.fromtimestamp(self.clock.now_seconds(), timezone.utc)
        return stamp.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def _rules(self, d: EntityDef, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        """The screen's defaults and checks, in the order the screen raises its errors."""
        if existing is None:
            fill(rec, **NEW_DEFAULTS.get(d.name, {}))
        if d.name in REQUIRED_NAMES:
            name, label = REQUIRED_NAMES[d.name]
            if not (rec.get(name) or "").strip():
                errors.append(((name,), f"'{label}' cannot be empty."))
        if d.name in CHOICES:
            name, allowed, what = CHOICES[d.name]
            if rec.get(name) not in allowed:
                listed = f" Use one of: {', '.join(allowed)}." if name == "Type" else ""
                errors.append(((name,), f"'{rec.get(name)}' is not a valid {what}.{listed}"))
        if d.name in DOCUMENTS:
            self._rules_document(d.name, DOCUMENTS[d.name], rec, existing, context, errors)
        elif d.name == "Vendor":
            fill(rec, LegalName=rec.get("VendorName"))
            self._check_ref("Account", rec.get("APAccount"), ("APAccount",), "Account", errors)
            self._check_ref("Subaccount", rec.get("APSubaccount"), ("APSubaccount",), "Subaccount", errors)
        elif d.name == "Customer":
            if (rec.get("CreditLimit") or 0) < 0:
                errors.append((("CreditLimit",), "The credit limit cannot be negative."))
            if rec.get("Email") is None and (rec.get("MainContact") or {}).get("Email"):
                rec["Email"] = rec["MainContact"]["Email"]
        elif d.name == "Account" and existing is None:
            rec["AccountID"] = self.tables["Account"].draw()
            if rec.get("AccountClass") is None and rec.get("Type") in ACCOUNT_TYPES:
                rec["AccountClass"] = rec["Type"].upper()
        elif d.name == "Subaccount":
            code = str(rec.get("SubaccountCD") or "")
            if not SUBACCOUNT_FORMAT.match(code):
                errors.append((("SubaccountCD",), f"'{code}' does not match the subaccount segment mask XXX-XXX."))
            if existing is None:
                rec["SubaccountID"] = self.tables["Subaccount"].draw()

    def _rules_document(self, name: str, doc: Document, rec: Rec, existing: Rec | None, context: Rec,
                        errors: Errors) -> None:
        """A bill, invoice or payment: its partner, branch, dates, lines and balances."""
        if existing is not None and existing.get("Status") in RELEASED:  # only a few fields may change
            self._clean(rec)
            changed = [n for n in context["touched"] - doc.editable if rec.get(n) != existing.get(n)]
            if changed:
                errors.append(((), f"The document has been released; '{changed[0]}' cannot be changed."))
            return
        partner = None
        if rec.get(doc.partner_field) in (None, ""):
            errors.append(((doc.partner_field,), f"'{doc.partner}' cannot be empty."))
        else:
            partner = self._check_ref(doc.partner, rec[doc.partner_field], (doc.partner_field,), doc.partner, errors)
            if partner is not None and partner.get("Status") in doc.blocked:
                errors.append(((doc.partner_field,), f"The {doc.partner.lower()} status is '{partner['Status']}'."))
        if name == "Payment":
            self._rules_payment(rec, existing, context, partner, errors)
            return
        if partner is not None and existing is None and name == "Bill":
            rec["CurrencyID"] = rec.get("CurrencyID") or partner.get("CurrencyID")
        fill(rec, **{doc.branch_field: context.get("branch") or "HQ"})
        if name == "Invoice":
            fill(rec, LinkARAccount="11000")
        self._check_branch(rec.get(doc.branch_field), (doc.branch_field,), errors)
        if existing is None:  # the date, hold, terms, due date and period of a new document
            day = self._business_day(context)
            fill(rec, Date=day.isoformat(), Hold=self.settings.hold_on_entry,
                 Terms=(partner or {}).get("Terms") or "30D")
            date = parse_dt(rec.get("Date")) or day
            if rec.get("DueDate") is None:
                days = int(re.sub(r"\D", "", str(rec.get("Terms"))) or 30)
                rec["DueDate"] = (date + timedelta(days=days)).isoformat()
            fill(rec, PostPeriod=f"{date.month:02d}{date.year}")
        if name == "Bill" and self.settings.duplicate_vendor_ref_error and rec.get("VendorRef") and rec.get("Vendor"):
            for other in self.tables["Bill"].lookup("VendorRef", rec["VendorRef"]):
                if norm(other.get("Vendor")) == norm(rec["Vendor"]) and other["id"] != rec["id"]:
                    message = (f"The document {other['Type']} {other['ReferenceNbr']} with the same vendor reference "
                               f"number '{rec['VendorRef']}' already exists.")
                    errors.append((("VendorRef",), message))
                    break
        account = self.settings.default_expense_account if name == "Bill" else self.settings.default_income_account
        total = self._lines(rec, doc.branch_field, name == "Bill", account, context, errors)
        rec["Amount"] = money((total if rec.get("Details") else rec.get("Amount")) or 0)
        if name == "Bill" and rec["Amount"] < 0:
            errors.append((("Amount",), "The document amount cannot be negative."))
        rec["TaxTotal"] = money(rec.get("TaxTotal") or 0)
        rec["Balance"] = rec["Amount"]
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        if name == "Bill":
            rec.setdefault("ApprovedForPayment", False)

    def _rules_payment(self, rec: Rec, existing: Rec | None, context: Rec, customer: Rec | None,
                       errors: Errors) -> None:
        """A payment's cash account, amount and applications to open invoices of its customer."""
        if existing is None:
            fill(rec, BranchID=context.get("branch") or "HQ", ApplicationDate=self._business_day(context).isoformat(),
                 Hold=self.settings.hold_on_entry)
        cash = self._check_ref("Account", rec.get("CashAccount"), ("CashAccount",), "Cash account", errors)
        if cash is not None and not cash.get("CashAccount"):
            errors.append((("CashAccount",), f"Account '{rec['CashAccount']}' is not a cash account."))
        amount = rec["PaymentAmount"] = money(rec.get("PaymentAmount") or 0)
        if amount <= 0 and rec["Type"] in ("Payment", "Prepayment"):
            errors.append((("PaymentAmount",), "The payment amount must be greater than zero."))
        applied = 0.0
        invoices = self.tables["Invoice"]
        for row in rec.get("DocumentsToApply") or []:
            path = ("DocumentsToApply", row["id"])
            row["DocType"] = row.get("DocType") or "Invoice"
            invoice = invoices.get(row["DocType"], row.get("ReferenceNbr"))
            if invoice is None or (customer is not None
                                   and norm(invoice.get("Customer")) != norm(rec.get("CustomerID"))):
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' cannot be found in the system."))
                continue
            if invoice.get("Status") != "Open":
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' is not released or is already closed "
                               f"(status '{invoice.get('Status')}')."))
                continue
            balance, paid = float(invoice.get("Balance") or 0), row.get("AmountPaid")
            row["AmountPaid"] = money(min(balance, max(0.0, amount - applied)) if paid is None else paid)
            if row["AmountPaid"] > balance + 0.004:
                errors.append(((*path, "AmountPaid"),
                               f"The amount paid exceeds the balance {invoice.get('Balance'):.2f} of the document."))
            row["Balance"] = invoice.get("Balance")
            row["CustomerOrder"] = invoice.get("CustomerOrder")
            row.setdefault("CashDiscountTaken", 0.0)
            row.setdefault("BalanceWriteOff", 0.0)
            applied += row["AmountPaid"]
        applied = money(applied)
        if applied > amount + 0.004:
            errors.append(((), f"The application total {applied:.2f} exceeds the payment amount {amount:.2f}."))
        rec["AppliedToDocuments"] = applied
        rec["AvailableBalance"] = money(amount - applied)
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"

    def _lines(self, rec: Rec, branch_field: str, cost: bool, default_account: str, context: Rec,
               errors: Errors) -> float:
        price, extended = ("UnitCost", "ExtendedCost") if cost else ("UnitPrice", "ExtendedPrice")
        total = 0.0
        for row in rec.get("Details") or []:
            touched = row.pop("_touched", set())
            path = ("Details", row["id"])
            if row.pop("_new", False):
                fill(row, Qty=1.0, Account=default_account, Subaccount="000-000",
                     Branch=rec.get(branch_field) or context.get("branch") or "HQ", UOM="EA")
            qty = float(row.get("Qty") or 0)
            if "Amount" in touched and price not in touched:
                amount = float(row.get("Amount") or 0)
                row[price] = money(amount / qty) if qty else 0.0
                row[extended] = money(amount)
            else:
                row[extended] = money(qty * float(row.get(price) or 0))
                row["Amount"] = money(row[extended] - float(row.get("DiscountAmount") or 0))
            self._check_ref("Account", row.get("Account"), (*path, "Account"), "Account", errors)
            if row.get("Account") in (None, ""):
                errors.append(((*path, "Account"), "'Account' cannot be empty."))
            self._check_ref("Subaccount", row.get("Subaccount"), (*path, "Subaccount"), "Subaccount", errors)
            self._check_branch(row.get("Branch"), (*path, "Branch"), errors)
            item = row.get("InventoryID")
            if item not in (None, "") and str(item).upper() not in NON_STOCK_ITEMS:
                if self.tables["StockItem"].get(item) is None:
                    errors.append(((*path, "InventoryID"), f"Inventory ID '{item}' cannot be found in the system."))
            if qty < 0:
                errors.append(((*path, "Qty"), "The quantity cannot be negative."))
            total += float(row.get("Amount") or 0)
        return money(total)

    def _remove(self, d: EntityDef, rec: Rec) -> None:
        """Delete a record, unless it is a released document or documents refer to it."""
        if rec.get("Status") in RELEASED and d.name in DOCUMENTS:
            raise ApiError(self.settings.validation_status, "The document has been released and cannot be deleted.")
        references = {"Vendor": ("Bill", "Vendor"), "Customer": ("Invoice", "Customer")}.get(d.name)
        if references and self.tables[references[0]].lookup(references[1], rec[d.keys[0]]):
            raise ApiError(self.settings.validation_status,
                           f"The {d.name.lower()} '{rec[d.keys[0]]}' cannot be deleted because documents refer to it.")
        self.tables[d.name].purge(*(rec.get(k) for k in d.keys))

    def _complete(self, op: Operation) -> None:
        """Finish a release: statuses, and for a payment the balances of the invoices it pays."""
        if op.done:
            return
        op.done = True
        self._pending.pop(op.id, None)
        table = self.tables[op.entity]
        old = table.by_id(op.record_id)
        if old is None:
            op.error = "The document was deleted before the process finished."
            return
        if old.get("Status") != "Balanced" or old.get("Hold"):
            op.error = NOT_BALANCED.format(old.get("Status"))
            return
        rec = copy.deepcopy(old)
        now = iso(self.clock.now_seconds())
        if op.entity == "Payment":
            invoices = self.tables["Invoice"]
            for row in rec.get("DocumentsToApply") or []:
                invoice = invoices.get(row.get("DocType") or "Invoice", row.get("ReferenceNbr"))
                if invoice is None or invoice.get("Status") != "Open" or invoice["Balance"] + 0.004 < row["AmountPaid"]:
                    op.error = (f"The application to {row.get('DocType')} {row.get('ReferenceNbr')} is no longer "
                                "possible; the document balance changed.")
                    return
            for row in rec.get("DocumentsToApply") or []:
                old_invoice = invoices.get(row.get("DocType") or "Invoice", row.get("ReferenceNbr"))
                assert old_invoice is not None
                invoice = copy.deepcopy(old_invoice)
                invoice["Balance"] = money(invoice["Balance"] - row["AmountPaid"])
                if invoice["Balance"] <= 0:
                    invoice["Balance"], invoice["Status"] = 0.0, "Closed"
                invoice["LastModifiedDateTime"] = now
                invoices.put(invoice)
                row["Balance"] = invoice["Balance"]
                rec.setdefault("ApplicationHistory", []).append({
                    "id": self._new_id(), "DocType": row.get("DocType"), "ReferenceNbr": row.get("ReferenceNbr"),
                    "AmountPaid": row["AmountPaid"], "Date": rec.get("ApplicationDate")})
            rec["Status"] = "Closed" if rec.get("AvailableBalance", 0) <= 0 else "Open"
        else:
            rec["Status"] = "Open" if (rec.get("Balance") or 0) > 0 else "Closed"
            if op.entity == "Bill":
                rec["ApprovedForPayment"] = True
        rec[ENTITIES[op.entity].change_field or "LastModifiedDateTime"] = now  # documents all have one
        table.put(rec)
        self.stats.bump("actions_completed")

