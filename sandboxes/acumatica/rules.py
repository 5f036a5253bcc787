"""Acumatica's business rules: how a PUT body merges into a record, the defaults and checks
of each entity's screen, a refusal as the entity with field-level errors, what a release
does to balances, and what may not be deleted."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from sandboxes.acumatica.model import (
    ACCOUNT_TYPES, BILL_TYPES, CUSTOMER_STATUSES, ENTITIES, INVOICE_TYPES, NON_STOCK_ITEMS, PAYMENT_TYPES, RELEASED,
    SUBACCOUNT_FORMAT, VENDOR_STATUSES, ApiError, EntityDef, Operation, Shape, _is_value_object, coerce, iso, money,
    norm, parse_dt,
)

Rec = dict[str, Any]
Errors = list[tuple[tuple[Any, ...], str]]


def fill(rec: Rec, **defaults: Any) -> None:
    """Each default where the record has no value yet."""
    for name, value in defaults.items():
        if rec.get(name) is None:
            rec[name] = value


def _looks_like_id(part: Any) -> bool:
    return isinstance(part, str) and len(part) == 36 and part.count("-") == 4


class RulesMixin:
    """Saving, validating, releasing and deleting records of an `AcumaticaSandbox`."""

    def _save(self, d: EntityDef, body: dict[str, Any], *, mode: str, branch: str | None,
              business_date: str | None) -> dict[str, Any]:
        """Upsert one record: locate, merge, default, validate, commit; raises ApiError."""
        table = self.tables[d.name]
        with self.lock:
            existing = None
            rid = body.get("id")
            if rid:
                existing = table.by_id(rid)
            key_values = []
            for key in d.keys:
                raw = body.get(key)
                value = raw.get("value") if isinstance(raw, dict) else None
                key_values.append(value if value not in (None, "") else d.key_defaults.get(key))
            if existing is None and all(v not in (None, "") for v in key_values):
                existing = table.find(tuple(key_values))
            if mode == "insert" and existing is not None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
            if mode == "update" and existing is None:
                raise ApiError(self.settings.precondition_status, f"The {d.name} record to update cannot be found.")
            errors: Errors = []
            candidate = copy.deepcopy(existing) if existing is not None else self._blank(d.shape)
            if existing is None:
                candidate.update({"note": "", "custom": {}, "files": []})
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
                getattr(self, f"_rules_{d.name.lower()}")(candidate, existing, context, errors)
            if existing is None:
                for key in d.keys:
                    if candidate.get(key) in (None, "") and key != numbered:
                        errors.append(((key,), f"'{key}' cannot be empty."))
            if errors:
                if existing is None and numbered and candidate.get(numbered) in (None, ""):
                    candidate[numbered] = "<NEW>"  # what the screen shows before a number is assigned
                self._refuse(d, candidate, errors, existing is None)
            if existing is None and numbered and candidate.get(numbered) in (None, ""):
                candidate[numbered] = table.next_number()
            self._clean(candidate)
            now = iso(self._now())
            if d.change_field:
                candidate[d.change_field] = now
            if existing is None:
                if d.created_field:
                    candidate[d.created_field] = now
                if table.find(tuple(candidate.get(k) for k in d.keys)) is not None:
                    raise ApiError(self.settings.precondition_status, f"The {d.name} record already exists.")
                table.add(candidate)
            else:
                table.put(candidate)
            return candidate

    def _merge(self, shape: Shape, target: dict[str, Any], body: dict[str, Any], path: tuple[Any, ...],
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
                    raise ApiError(400, f"Cannot deserialize the detail collection '{name}': expected an array of objects.")
                self._merge_rows(shape.details[name], target.setdefault(name, []), raw, (*path, name), errors)
                touched.add(name)
        return touched

    def _merge_rows(self, shape: Shape, rows: list[dict[str, Any]], incoming: list[dict[str, Any]],
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

    def _refuse(self, d: EntityDef, candidate: dict[str, Any], errors: Errors,
                inserting: bool) -> None:
        expand = {name: {} for name in d.shape.details}
        expand.update({name: {} for name in d.shape.linked})
        body = self._render(d, self._clean(candidate), expand, None, None, 1)
        for path, message in errors:
            self._place_error(body, path, message)
        verb = "Inserting" if inserting else "Updating"
        headline = f"{verb} '{d.name}' record raised at least one error. Please review the errors."
        body["error"] = " ".join([headline, *(message for path, message in errors if not path)])
        body["_errors"] = [(tuple(p for p in path if not _looks_like_id(p)), m) for path, m in errors]
        raise ApiError(self.settings.validation_status, body["error"], body=body)

    @staticmethod
    def _place_error(body: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
        node: Any = body
        if not path:
            return
        for part in path[:-1]:
            if isinstance(node, dict) and isinstance(node.get(part), list):
                node = node[part]
            elif isinstance(node, list):
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
    def _clean(rec: dict[str, Any]) -> dict[str, Any]:
        """Drop the merge bookkeeping keys from detail rows."""
        for value in rec.values():
            if isinstance(value, list):
                for row in value:
                    if isinstance(row, dict):
                        row.pop("_new", None)
                        row.pop("_touched", None)
        return rec

    # ---- business rules ---------------------------------------------------------------------------

    def _check_ref(self, entity: str, value: Any, path: tuple[Any, ...], label: str,
                   errors: Errors) -> dict[str, Any] | None:
        """The referenced record, or None with an error when it is missing or inactive."""
        if value in (None, ""):
            return None
        rec = self.tables[entity].find((value,))
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

    def _business_day(self, context: dict[str, Any]) -> datetime:
        stamp = parse_dt(context.get("business_date")) if context.get("business_date") else None
        stamp = stamp or datetime.fromtimestamp(self._now(), timezone.utc)
        return stamp.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)

    def _rules_vendor(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        if existing is None:
            fill(rec, Status="Active", VendorClass="DEFAULT", Terms="30D", CurrencyID="USD", PaymentMethod="CHECK",
                 CashAccount="10100", APAccount="20000", APSubaccount="000-000", F1099Vendor=False)
        if not (rec.get("VendorName") or "").strip():
            errors.append((("VendorName",), "'Vendor Name' cannot be empty."))
        fill(rec, LegalName=rec.get("VendorName"))
        if rec.get("Status") not in VENDOR_STATUSES:
            errors.append((("Status",), f"'{rec.get('Status')}' is not a valid vendor status."))
        self._check_ref("Account", rec.get("APAccount"), ("APAccount",), "Account", errors)
        self._check_ref("Subaccount", rec.get("APSubaccount"), ("APSubaccount",), "Subaccount", errors)
        self._clean(rec)

    def _rules_customer(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        if existing is None:
            fill(rec, Status="Active", CustomerClass="DEFAULT", Terms="30D", CurrencyID="USD", CreditLimit=0.0)
        if not (rec.get("CustomerName") or "").strip():
            errors.append((("CustomerName",), "'Customer Name' cannot be empty."))
        if rec.get("Status") not in CUSTOMER_STATUSES:
            errors.append((("Status",), f"'{rec.get('Status')}' is not a valid customer status."))
        if (rec.get("CreditLimit") or 0) < 0:
            errors.append((("CreditLimit",), "The credit limit cannot be negative."))
        if rec.get("Email") is None and (rec.get("MainContact") or {}).get("Email"):
            rec["Email"] = rec["MainContact"]["Email"]
        self._clean(rec)

    def _document_defaults(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                           partner: dict[str, Any] | None) -> None:
        """Date, hold, terms, due date and period of a new AP/AR document."""
        if existing is not None:
            return
        day = self._business_day(context)
        fill(rec, Date=day.isoformat(), Hold=self.settings.hold_on_entry, Terms=(partner or {}).get("Terms") or "30D")
        date = parse_dt(rec.get("Date")) or day
        if rec.get("DueDate") is None:
            days = int(re.sub(r"\D", "", str(rec.get("Terms"))) or 30)
            rec["DueDate"] = (date + timedelta(days=days)).isoformat()
        fill(rec, PostPeriod=f"{date.month:02d}{date.year}")

    def _released_edit(self, rec: dict[str, Any], existing: dict[str, Any] | None, context: dict[str, Any],
                       editable: frozenset[str], errors: Errors) -> bool:
        """A released document keeps its amounts and lines; only a few fields may change."""
        if existing is None or existing.get("Status") not in RELEASED:
            return False
        self._clean(rec)
        for name in context["touched"] - editable:
            if rec.get(name) != existing.get(name):
                errors.append(((), f"The document has been released; '{name}' cannot be changed."))
                break
        return True

    def _lines(self, rec: dict[str, Any], branch_field: str, cost: bool, default_account: str, context: dict[str, Any],
               errors: Errors) -> float:
        price, extended = ("UnitCost", "ExtendedCost") if cost else ("UnitPrice", "ExtendedPrice")
        total = 0.0
        for row in rec.get("Details") or []:
            touched = row.pop("_touched", set())
            is_new = row.pop("_new", False)
            path = ("Details", row["id"])
            if is_new:
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
                if self.tables["StockItem"].find((item,)) is None:
                    errors.append(((*path, "InventoryID"), f"Inventory ID '{item}' cannot be found in the system."))
            if qty < 0:
                errors.append(((*path, "Qty"), "The quantity cannot be negative."))
            total += float(row.get("Amount") or 0)
        return money(total)

    def _rules_bill(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        rec["Type"] = rec.get("Type") or "Bill"
        if rec["Type"] not in BILL_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid bill type. Use one of: {', '.join(BILL_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note", "ApprovedForPayment", "DueDate"}), errors):
            self._clean(rec)
            return
        vendor = None
        if rec.get("Vendor") in (None, ""):
            errors.append((("Vendor",), "'Vendor' cannot be empty."))
        else:
            vendor = self.tables["Vendor"].find((rec["Vendor"],))
            if vendor is None:
                errors.append((("Vendor",), f"Vendor '{rec['Vendor']}' cannot be found in the system."))
            elif vendor.get("Status") in ("Inactive", "On Hold"):
                errors.append((("Vendor",), f"The vendor status is '{vendor['Status']}'."))
        if vendor is not None and existing is None:
            rec["CurrencyID"] = rec.get("CurrencyID") or vendor.get("CurrencyID")
        fill(rec, BranchID=context.get("branch") or "HQ")
        self._check_branch(rec.get("BranchID"), ("BranchID",), errors)
        self._document_defaults(rec, existing, context, vendor)
        if self.settings.duplicate_vendor_ref_error and rec.get("VendorRef") and rec.get("Vendor"):
            table = self.tables["Bill"]
            for other in table.lookup("VendorRef", rec["VendorRef"]):
                if norm(other.get("Vendor")) == norm(rec["Vendor"]) and other["id"] != rec["id"]:
                    errors.append((("VendorRef",), f"The document {other['Type']} {other['ReferenceNbr']} with the same "
                                                    f"vendor reference number '{rec['VendorRef']}' already exists."))
                    break
        details_total = self._lines(rec, "BranchID", True, self.settings.default_expense_account, context, errors)
        if rec.get("Details"):
            rec["Amount"] = details_total
        rec["Amount"] = money(rec.get("Amount") or 0)
        if rec["Amount"] < 0:
            errors.append((("Amount",), "The document amount cannot be negative."))
        rec["TaxTotal"] = money(rec.get("TaxTotal") or 0)
        rec["Balance"] = rec["Amount"]
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        rec.setdefault("ApprovedForPayment", False)
        self._clean(rec)

    def _rules_invoice(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        rec["Type"] = rec.get("Type") or "Invoice"
        if rec["Type"] not in INVOICE_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid invoice type. Use one of: {', '.join(INVOICE_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note", "DueDate"}), errors):
            self._clean(rec)
            return
        customer = None
        if rec.get("Customer") in (None, ""):
            errors.append((("Customer",), "'Customer' cannot be empty."))
        else:
            customer = self.tables["Customer"].find((rec["Customer"],))
            if customer is None:
                errors.append((("Customer",), f"Customer '{rec['Customer']}' cannot be found in the system."))
            elif customer.get("Status") == "Inactive":
                errors.append((("Customer",), "The customer status is 'Inactive'."))
        fill(rec, LinkBranch=context.get("branch") or "HQ", LinkARAccount="11000")
        self._check_branch(rec.get("LinkBranch"), ("LinkBranch",), errors)
        self._document_defaults(rec, existing, context, customer)
        total = self._lines(rec, "LinkBranch", False, self.settings.default_income_account, context, errors)
        if rec.get("Details"):
            rec["Amount"] = total
        rec["Amount"] = money(rec.get("Amount") or 0)
        rec["TaxTotal"] = money(rec.get("TaxTotal") or 0)
        rec["Balance"] = rec["Amount"]
        rec["Status"] = "On Hold" if rec.get("Hold") else "Balanced"
        self._clean(rec)

    def _rules_payment(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        rec["Type"] = rec.get("Type") or "Payment"
        if rec["Type"] not in PAYMENT_TYPES:
            errors.append((("Type",), f"'{rec['Type']}' is not a valid payment type. Use one of: {', '.join(PAYMENT_TYPES)}."))
        if self._released_edit(rec, existing, context, frozenset({"Description", "note"}), errors):
            self._clean(rec)
            return
        customer = None
        if rec.get("CustomerID") in (None, ""):
            errors.append((("CustomerID",), "'Customer' cannot be empty."))
        else:
            customer = self.tables["Customer"].find((rec["CustomerID"],))
            if customer is None:
                errors.append((("CustomerID",), f"Customer '{rec['CustomerID']}' cannot be found in the system."))
        if existing is None:
            fill(rec, PaymentMethod="CHECK", CashAccount="10100", CurrencyID="USD", CustomerLocationID="MAIN")
            fill(rec, BranchID=context.get("branch") or "HQ", ApplicationDate=self._business_day(context).isoformat(),
                 Hold=self.settings.hold_on_entry)
        cash = self._check_ref("Account", rec.get("CashAccount"), ("CashAccount",), "Cash account", errors)
        if cash is not None and not cash.get("CashAccount"):
            errors.append((("CashAccount",), f"Account '{rec['CashAccount']}' is not a cash account."))
        amount = money(rec.get("PaymentAmount") or 0)
        rec["PaymentAmount"] = amount
        if amount <= 0 and rec["Type"] in ("Payment", "Prepayment"):
            errors.append((("PaymentAmount",), "The payment amount must be greater than zero."))
        applied = 0.0
        invoices = self.tables["Invoice"]
        for row in rec.get("DocumentsToApply") or []:
            row.pop("_touched", None)
            row.pop("_new", None)
            path = ("DocumentsToApply", row["id"])
            row["DocType"] = row.get("DocType") or "Invoice"
            invoice = invoices.find((row["DocType"], row.get("ReferenceNbr")))
            if invoice is None or (customer is not None and norm(invoice.get("Customer")) != norm(rec.get("CustomerID"))):
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' cannot be found in the system."))
                continue
            if invoice.get("Status") != "Open":
                errors.append(((*path, "ReferenceNbr"),
                               f"{row['DocType']} '{row.get('ReferenceNbr')}' is not released or is already closed "
                               f"(status '{invoice.get('Status')}')."))
                continue
            if row.get("AmountPaid") is None:
                row["AmountPaid"] = min(float(invoice.get("Balance") or 0), max(0.0, amount - applied))
            row["AmountPaid"] = money(row["AmountPaid"])
            if row["AmountPaid"] > float(invoice.get("Balance") or 0) + 0.004:
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
        self._clean(rec)

    def _rules_account(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        if rec.get("Type") not in ACCOUNT_TYPES:
            errors.append((("Type",), f"'{rec.get('Type')}' is not a valid account type. Use one of: {', '.join(ACCOUNT_TYPES)}."))
        if existing is None:
            rec["AccountID"] = self.tables["Account"].draw()
            fill(rec, Active=True, CashAccount=False, CurrencyID="USD", PostOption="Detail")
            if rec.get("AccountClass") is None and rec.get("Type") in ACCOUNT_TYPES:
                rec["AccountClass"] = rec["Type"].upper()

    def _rules_subaccount(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        code = str(rec.get("SubaccountCD") or "")
        if not SUBACCOUNT_FORMAT.match(code):
            errors.append((("SubaccountCD",), f"'{code}' does not match the subaccount segment mask XXX-XXX."))
        if existing is None:
            rec["SubaccountID"] = self.tables["Subaccount"].draw()
            fill(rec, Active=True, Secured=False)

    def _rules_stockitem(self, rec: Rec, existing: Rec | None, context: Rec, errors: Errors) -> None:
        if existing is None:
            fill(rec, ItemStatus="Active", ItemType="Finished Good", BaseUOM="EA", DefaultWarehouseID="MAIN")
        if not (rec.get("Description") or "").strip():
            errors.append((("Description",), "'Description' cannot be empty."))

    def _remove(self, d: EntityDef, rec: Rec) -> None:
        """Delete a record, unless it is a released document or documents refer to it."""
        if rec.get("Status") in RELEASED and d.name in ("Bill", "Invoice", "Payment"):
            raise ApiError(self.settings.validation_status, "The document has been released and cannot be deleted.")
        references = {"Vendor": ("Bill", "Vendor"), "Customer": ("Invoice", "Customer")}.get(d.name)
        if references and self.tables[references[0]].lookup(references[1], rec[d.keys[0]]):
            raise ApiError(self.settings.validation_status,
                           f"The {d.name.lower()} '{rec[d.keys[0]]}' cannot be deleted because documents refer to it.")
        self.tables[d.name].drop(rec)

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
            op.error = f"The document status is '{old.get('Status')}'; only a Balanced document can be released."
            return
        rec = copy.deepcopy(old)
        now = iso(self._now())
        if op.entity == "Payment":
            invoices = self.tables["Invoice"]
            for row in rec.get("DocumentsToApply") or []:
                invoice = invoices.find((row.get("DocType") or "Invoice", row.get("ReferenceNbr")))
                if invoice is None or invoice.get("Status") != "Open" or invoice["Balance"] + 0.004 < row["AmountPaid"]:
                    op.error = (f"The application to {row.get('DocType')} {row.get('ReferenceNbr')} is no longer "
                                "possible; the document balance changed.")
                    return
            for row in rec.get("DocumentsToApply") or []:
                old_invoice = invoices.find((row.get("DocType") or "Invoice", row.get("ReferenceNbr")))
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
        if ENTITIES[op.entity].change_field:
            rec[ENTITIES[op.entity].change_field or ""] = now
        table.put(rec)
        self.stats.bump("actions_completed")

