"""The seeded company: chart of accounts, groups, suppliers and their banks, POs, invoices, payments."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta
from typing import Any

from sandboxes.epicor.store import TERMS_DAYS, as_date
from sandboxes.kit import seed as words

# The seeded company's chart: natural accounts by cost center (GLAccount1 `account|center`).
NATURAL_ACCOUNTS = [
    ("1000", "Cash - Operating"), ("1200", "Inventory"), ("2000", "Accounts Payable"),
    ("5000", "Cost of Goods Sold"), ("5100", "Materials"), ("5200", "Subcontractors"),
    ("6000", "Repairs & Maintenance"), ("6100", "Shop Supplies"), ("6200", "Equipment Rental"),
    ("6300", "Vehicle Fuel"), ("6400", "Permits & Fees"), ("6500", "Freight"), ("7000", "Utilities"),
    ("7100", "Office Expense"),
]
COST_CENTERS = [("100", "Service"), ("200", "Installation"), ("300", "Construction"), ("000", "Corporate")]
US_CITIES = tuple(city for city in words.CITIES if city.country == "US")  # suppliers are in the USA here


class SeedMixin:
    # ---- seed -------------------------------------------------------------------------------

    def seed(self, rng: random.Random, records: int) -> None:
        now = self.clock.now_datetime()
        start = now - timedelta(days=120)
        span = (now - timedelta(minutes=5) - start).total_seconds()
        company = self.settings.company

        def moment(i: int, total: int) -> datetime:
            return start + timedelta(seconds=span * (i + rng.random() * 0.5) / max(1, total))

        for account, desc in NATURAL_ACCOUNTS:
            for center, center_name in COST_CENTERS:
                row = self.new_row("GLAccount", {
                    "COACode": "MAIN", "GLAccount1": f"{account}|{center}", "GLAcctDisp": f"{account}-{center}",
                    "AccountDesc": f"{desc} - {center_name}", "SegValue1": account, "SegValue2": center,
                    "EffFrom": "2020-01-01", "Active": not (account == "7100" and center == "300"),
                })
                self.write("GLAccount", row)
        gl_accounts = [r["GLAccount1"] for r in self.tables["GLAccount"].rows() if r["Active"]
                       and r["SegValue1"] >= "5000"]

        for group_id, user in (("AP0101", ""), ("AP0102", ""), ("APJS01", "jsmith")):
            self.write("APInvGrp", self.new_row("APInvGrp", {
                "GroupID": group_id, "ActiveUserID": user, "ApplyDate": start, "FiscalYear": start.year,
                "FiscalPeriod": start.month}))
        self.write("APChkGrp", self.new_row("APChkGrp", {"GroupID": "CHK01", "BankAcctID": "OPER",
                                                         "CheckDate": start}))

        vendors: list[dict[str, Any]] = []
        for i in range(records):
            if vendors and rng.random() < 0.12:
                vendors.append(self._near_duplicate(rng, vendors[rng.randrange(len(vendors))], i + 1))
            else:
                vendors.append(self._fresh_vendor(rng, i + 1))
        banks = random.Random(self.options.seed * 31 + 7)  # its own stream: the rest of the seed stays as it was
        for vendor in vendors:
            vendor["Company"] = company
            self.write("Vendor", vendor)
            for n in range(banks.choice((0, 1, 1, 1, 2))):
                self.write("VendBank", self._vendor_bank(banks, vendor, n + 1))
        active = [v for v in vendors if not v["Inactive"]] or vendors

        po_by_vendor: dict[int, list[int]] = {}
        for i in range(records):
            vendor = active[rng.randrange(len(active))] if active else None
            if vendor is None:
                break
            when = moment(i, records)
            po_num = 1000 + i + 1
            order_date = when.date() - timedelta(days=rng.randint(0, 10))
            header = self.new_row("POHeader", {
                "PONum": po_num, "VendorNum": vendor["VendorNum"], "VendorVendorID": vendor["VendorID"],
                "VendorName": vendor["Name"], "OrderDate": order_date, "DueDate": order_date + timedelta(days=14),
                "PromiseDate": order_date + timedelta(days=rng.randint(7, 21)),
                "BuyerID": rng.choice(["BUY01", "BUY02"]),
                "ShipViaCode": rng.choice(["UPS", "FDX", "BEST"]), "TermsCode": vendor["TermsCode"],
                "OpenOrder": rng.random() < 0.7, "EntryPerson": "purch01",
                "CommentText": rng.choice(["", "Deliver to warehouse dock 2", "Call before delivery"]),
            })
            total = 0.0
            for line in range(1, rng.randint(1, 5) + 1):
                part, desc = words.pick(rng, words.ITEMS)[:2]
                qty = float(rng.randint(1, 40))
                unit = round(rng.uniform(2, 400), 2)
                ext = round(qty * unit, 2)
                total += ext
                self.write("PODetail", self.new_row("PODetail", {
                    "PONUM": po_num, "POLine": line, "PartNum": part, "VenPartNum": f"V-{part}", "LineDesc": desc,
                    "OrderQty": qty, "XOrderQty": qty, "UnitCost": unit, "DocUnitCost": unit, "ExtCost": ext,
                    "DocExtCost": ext, "DueDate": header["DueDate"], "VendorNum": vendor["VendorNum"],
                    "OpenLine": header["OpenOrder"], "ClassID": "MAT"}))
            header["TotalOrder"] = header["DocTotalOrder"] = round(total, 2)
            self.write("POHeader", header, when=when)
            po_by_vendor.setdefault(vendor["VendorNum"], []).append(po_num)

        invoices: list[dict[str, Any]] = []
        for i in range(records):
            vendor = active[rng.randrange(len(active))]
            when = moment(i, records)
            invoice_date = when.date() - timedelta(days=rng.randint(0, 5))
            invoice_num = f"{rng.choice(['INV', 'A', 'SI', ''])}{rng.randint(10000, 99999)}-{i + 1}"
            days = TERMS_DAYS.get(vendor["TermsCode"], 30)
            posted = rng.random() < 0.75
            header = self.new_row("APInvHed", {
                "VendorNum": vendor["VendorNum"], "VendorNumVendorID": vendor["VendorID"],
                "VendorNumName": vendor["Name"], "InvoiceNum": invoice_num,
                "GroupID": "" if posted else rng.choice(["AP0101", "AP0102"]),
                "InvoiceDate": invoice_date, "DueDate": invoice_date + timedelta(days=days), "ApplyDate": invoice_date,
                "FiscalYear": invoice_date.year, "FiscalPeriod": invoice_date.month, "TermsCode": vendor["TermsCode"],
                "Posted": posted, "EntryPerson": "apclerk",
                "Description": rng.choice(["", "Monthly materials", "Job supplies", "Rental", "Service parts"]),
                "REFPONum": rng.choice(po_by_vendor.get(vendor["VendorNum"], [0])) if rng.random() < 0.4 else 0,
            })
            total = 0.0
            for line in range(1, rng.randint(1, 4) + 1):
                qty = float(rng.randint(1, 20))
                unit = round(rng.uniform(5, 600), 2)
                ext = round(qty * unit, 2)
                total += ext
                self.write("APInvDtl", self.new_row("APInvDtl", {
                    "VendorNum": vendor["VendorNum"], "InvoiceNum": invoice_num, "InvoiceLine": line,
                    "Description": words.pick(rng, words.EXPENSE_LINES), "VendorQty": qty, "OurQty": qty,
                    "UnitCost": unit,
                    "DocUnitCost": unit, "ExtCost": ext, "DocExtCost": ext, "GLAccount": rng.choice(gl_accounts)}))
            total = round(total, 2)
            paid = 0.0
            if posted and rng.random() < 0.35:
                paid = total if rng.random() < 0.7 else round(total * rng.choice([0.25, 0.5]), 2)
            header.update({"InvoiceAmt": total, "DocInvoiceAmt": total, "InvoiceVendorAmt": total,
                           "DocInvoiceVendorAmt": total, "ScrInvoiceAmt": total, "ScrDocInvoiceAmt": total,
                           "InvoiceBal": round(total - paid, 2), "DocInvoiceBal": round(total - paid, 2),
                           "OpenPayable": round(total - paid, 2) > 0})
            self.write("APInvHed", header, when=when)
            if paid:
                invoices.append({"header": header, "paid": paid, "when": when})

        for n, item in enumerate(invoices):
            header = item["header"]
            head_num = self.tables["CheckHed"].new_id()
            check_date = as_date(header["InvoiceDate"]) + timedelta(days=rng.randint(5, 30))  # type: ignore[operator]
            vendor = self.tables["Vendor"].get(header["VendorNum"])
            self.write("CheckHed", self.new_row("CheckHed", {
                "HeadNum": head_num, "GroupID": "CHK01", "VendorNum": header["VendorNum"],
                "VendorNumVendorID": header["VendorNumVendorID"], "Name": vendor["Name"] if vendor else "",
                "CheckNum": 50_000_000 + n + 1, "CheckDate": check_date, "CheckAmt": item["paid"],
                "DocCheckAmt": item["paid"], "BankAcctID": "OPER", "FiscalYear": check_date.year,
                "FiscalPeriod": check_date.month, "Posted": True, "XRefCheckNum": f"SEED-{n + 1:05d}",
                "EntryPerson": "apclerk"}))
            self.write("APTran", self.new_row("APTran", {
                "HeadNum": head_num, "APTranNo": 1, "InvoiceNum": header["InvoiceNum"],
                "VendorNum": header["VendorNum"], "TranDate": check_date, "TranAmt": item["paid"],
                "DocTranAmt": item["paid"], "GroupID": "CHK01", "Posted": True}))

    def _fresh_vendor(self, rng: random.Random, num: int) -> dict[str, Any]:
        name = words.company_name(rng)
        city = words.pick(rng, US_CITIES)
        return self.new_row("Vendor", {
            "VendorNum": num, "VendorID": self._vendor_id(name, num), "Name": name, "Address1": words.street(rng),
            "Address2": f"Suite {rng.randint(100, 400)}" if rng.random() < 0.3 else "", "City": city.name,
            "State": city.state, "ZIP": city.postcode, "Country": "USA", "CountryNum": 1, "PhoneNum": words.phone(rng),
            "EMailAddress": f"ap@{words.slug(name, 8) or 'vendor'}{num}.example.com",
            "TermsCode": rng.choice(["N30", "N30", "N45", "N15", "2/10N30"]), "CurrencyCode": "USD",
            "GroupCode": rng.choice(["MAT", "SUB", "SVC"]), "TaxPayerID": words.tax_id(rng), "DefaultFOB": "DEST",
            "Inactive": rng.random() < 0.05,
        })

    def _vendor_id(self, name: str, num: int) -> str:
        return f"{re.sub(r'[^A-Z]', '', name.upper())[:4]}{num:04d}"[: self.settings.vendor_id_max_length]

    def _vendor_bank(self, rng: random.Random, vendor: dict[str, Any], n: int) -> dict[str, Any]:
        return self.new_row("VendBank", {
            "Company": vendor["Company"], "VendorNum": vendor["VendorNum"], "BankID": f"BANK{n}",
            "BankName": words.pick(rng, words.BANKS), "NameOnAccount": vendor["Name"],
            "BankAcctNumber": str(rng.randint(10**9, 10**10 - 1)),
            "BankIdentifier": f"0{rng.randint(10**7, 10**8 - 1)}",
            "CurrencyCode": vendor["CurrencyCode"] or "USD", "PrimaryBank": n == 1,
        })

    def _near_duplicate(self, rng: random.Random, original: dict[str, Any], num: int) -> dict[str, Any]:
        """Same business typed differently: suffix, punctuation, case and street abbreviations."""
        phone = original["PhoneNum"]
        return {**original, "VendorNum": num, "VendorID": self._vendor_id(original["Name"], num),
                "Name": words.near_duplicate(rng, original["Name"]),
                "Address1": words.near_duplicate_street(rng, original["Address1"]), "SysRowID": "", "SysRevID": 0,
                "PhoneNum": re.sub(r"[^0-9]", "", phone) if rng.random() < 0.5 else phone, "Inactive": False}
