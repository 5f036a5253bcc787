"""ServiceTitan facts the sandbox follows: limits, messages and enumerations, the collections
it serves, the vendor's value formats (ISO stamps, string and number amounts), its RFC 7807
errors and the read views of its records. Facts marked (unconfirmed) in
shared/vendor-apis/servicetitan.md are settings of the sandbox, defaulting to the documented guess."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# ---- vendor facts and tunables -------------------------------------------------------------

DEFAULT_TOKEN_TTL = 900  # ServiceTitan access tokens live 15 minutes
DEFAULT_RATE_LIMIT = 60  # requests per second per (app key, tenant)
DEFAULT_TENANT_ID = 1234567  # the tenant id of the vendor's own examples
DEFAULT_PAGE_SIZE = 50  # the vendor's default when pageSize is absent
MAX_PAGE_SIZE = 5000  # (unconfirmed) the largest pageSize honoured; larger requests are clamped
EXPORT_PAGE_SIZE = 500  # (unconfirmed) rows per export-feed response; the feed takes no pageSize
MAX_IDS = 50  # the spec caps `ids` lookups at 50
WEBHOOK_RETRY_SCHEDULE = (10.0, 30.0, 60.0, 300.0)  # seconds between delivery attempts
WEBHOOK_TIMEOUT = 5.0  # (unconfirmed) how long a delivery waits for the receiver
WEBHOOK_WORKERS = 8  # delivery threads; deliveries never block the API call that caused them
WEBHOOK_LOG_LIMIT = 20_000  # deliveries kept for GET /_sandbox/webhooks
WEBHOOK_SIGNATURE_HEADER = "X-ServiceTitan-Signature"  # (unconfirmed: the vendor says only "in the request header")
WEBHOOK_ENCODING = "hex"  # (unconfirmed) hex or base64 digest; both are settings per subscription
QUERY_CACHE_SIZE = 64  # filtered id lists kept per table, so paging one query is O(page)

APP_KEY_MISSING = "Application key not present, check ST-App-Key header value."
APP_KEY_INVALID = "Application key is invalid, check ST-App-Key header value."  # (unconfirmed)
VALIDATION_TITLE = "One or more validation errors occurred."

PROBLEM_TYPES = {
    400: "https://tools.ietf.org/html/rfc7231#section-6.5.1",
    401: "https://tools.ietf.org/html/rfc7235#section-3.1",
    403: "https://tools.ietf.org/html/rfc7231#section-6.5.3",
    404: "https://tools.ietf.org/html/rfc7231#section-6.5.4",
    405: "https://tools.ietf.org/html/rfc7231#section-6.5.5",
    409: "https://tools.ietf.org/html/rfc7231#section-6.5.8",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    500: "https://tools.ietf.org/html/rfc7231#section-6.6.1",
    502: "https://tools.ietf.org/html/rfc7231#section-6.6.3",
    503: "https://tools.ietf.org/html/rfc7231#section-6.6.4",
    504: "https://tools.ietf.org/html/rfc7231#section-6.6.5",
}
STATUS_TITLES = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

PO_STATUSES = ("Pending", "Sent", "PartiallyReceived", "Received", "Exported", "Canceled")
SEED_PO_STATUSES = ("Pending", "Sent", "Sent", "PartiallyReceived", "Received", "Received", "Received",
                    "Exported", "Canceled")  # a seeded tenant's mix, weighted
PO_LOCKED_STATUSES = frozenset({"Received", "Exported", "Canceled"})  # (unconfirmed) no edits after receipt
SYNC_STATUSES = ("Pending", "Posted", "Exported")
PAYMENT_TYPES = {1: "Cash", 2: "Check", 3: "Credit Card", 4: "ACH", 5: "Financing"}
DELIVERY_OPTIONS = ("Manual", "EmailAsExcel", "EmailAsPdf", "EmailAsPdfRollupView", "Electronic",
                    "MarkAsSent", "EmailAsExcelAndPdf", "VendorPortal")
CANCEL_REASONS = ("NotRequired", "Duplicate", "Accidental", "VendorIssue", "Other", "JobCanceled")

_CENT = Decimal("0.01")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SEED_START_US = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000
SEED_SPAN_US = 600 * 86_400 * 1_000_000  # seeded history spans ~20 months, all in the past


# ---- small helpers ---------------------------------------------------------------------------

def iso(us: int) -> str:
    """UTC ISO-8601 with milliseconds, the way the vendor prints date-times."""
    seconds, micros = divmod(us, 1_000_000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min,
                                                     t.tm_sec, micros // 1000)


def parse_when(text: str) -> int:
    """Microseconds since the epoch from an ISO date or date-time; naive means UTC."""
    value = text.strip()
    if not value:
        raise ValueError("empty date")
    if value.endswith(("z", "Z")):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def money(value: Decimal | float | int | str) -> str:
    """Accounting amounts travel as strings with two decimals."""
    return str(Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP))


def dec(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0))
    except InvalidOperation:
        return Decimal(0)


def num(value: float | Decimal) -> float:
    """Inventory and CRM amounts travel as JSON numbers."""
    return float(Decimal(str(value)).quantize(_CENT, rounding=ROUND_HALF_UP))


def sign_webhook(key: str, body: bytes, encoding: str = WEBHOOK_ENCODING) -> str:
    """HMAC-SHA256 of the raw body, hex or base64: what a receiver must recompute."""
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode() if encoding == "base64" else digest.hex()


def _address(street: str = "", unit: str = "", city: str = "", state: str = "", zip_: str = "",
             country: str = "USA") -> dict[str, Any]:
    return {"street": street, "unit": unit, "city": city, "state": state, "zip": zip_, "country": country}


class ApiError(Exception):
    """Answered as the vendor's RFC 7807 problem body."""

    def __init__(self, status: int, title: str, errors: dict[str, list[str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.errors = errors or {}
        self.headers = headers or {}


def retry_after_header(wait: float) -> dict[str, str]:
    """The Retry-After header of a 429: whole seconds, rounded up, at least one."""
    return {"Retry-After": str(max(1, int(-(-wait // 1))))}


def invalid(field_name: str, message: str) -> ApiError:
    return ApiError(400, VALIDATION_TITLE, {field_name: [message]})


@dataclass(frozen=True)
class Resource:
    """One vendor collection: where it lives, how it filters, which events it raises."""

    entity: str  # control-API name, e.g. "purchase_orders"
    module: str  # accounting | crm | inventory | settings | jpm
    path: str  # collection path below /{module}/v2/tenant/{tenant}/
    scope: str  # (unconfirmed beyond the documented examples) OAuth scope, ":r"/":w" appended
    first_id: int
    active_param: str | None = None  # "active" (True/Any/False) or "activeState"
    sorts: tuple[str, ...] = ()  # fields `sort` accepts; empty: the endpoint has no sort
    by_id: bool = False  # GET {path}/{id} exists
    export: str | None = None  # export feed path
    export_adds_active: bool = False  # the export schema carries `active`, the read view not
    filters: tuple[tuple[str, ...], ...] = ()  # the list's own filters, kinds below
    external: bool = False  # the list finds records by an application's externalData
    # Webhook events the collection raises, "created" and/or "updated"; the event type is the
    # singular path and the kind, e.g. "purchase-order.created" (the names are unconfirmed).
    events: tuple[str, ...] = ()

    def event_type(self, kind: str) -> str | None:
        return f"{self.path[:-1]}.{kind}" if kind in self.events else None


# (kind, query parameter, field path...) of a list filter:
#   eq: the field equals the text; int: the field equals the integer; ieq: equals, ignoring case;
#   contains: holds the text, ignoring case; in: one of a comma list, ignoring case; ints: one of
#   a comma list of integers; any: some item of a list field has the item field in a comma list
#   of integers; dates: (after, before, field) a date-time window; po_number: bills of that PO.
_BILL_FILTERS = (("eq", "billNumber", "referenceNumber"), ("in", "syncStatuses", "syncStatus"),
                 ("dates", "dateFrom", "dateTo", "billDate"), ("ints", "businessUnitIds", "businessUnit", "id"),
                 ("po_number", "purchaseOrderNumber"))
_BY_TIME = ("Id", "ModifiedOn", "CreatedOn")
ACTIVE_MODES = {  # parameter -> (default, mode -> wanted `active` or None for all, message)
    "active": ("True", {"true": True, "false": False, "any": None},
               "The value '{raw}' is not valid. Values: True, Any, False."),
    "activeState": ("ActiveOnly", {"activeonly": True, "inactiveonly": False, "all": None},
                    "Values: ActiveOnly, InactiveOnly, All."),
}

RESOURCES: dict[str, Resource] = {r.entity: r for r in (
    Resource("purchase_orders", "inventory", "purchase-orders", "tn.inv.purchaseorders", 90_001,
             sorts=("Id",), by_id=True, export="export/purchase-orders", events=("created", "updated"),
             filters=(("eq", "status", "status"), ("eq", "number", "number"), ("int", "jobId", "jobId"),
                      ("dates", "dateOnOrAfter", "dateBefore", "date"))),
    Resource("vendors", "inventory", "vendors", "tn.inv.vendors", 501, active_param="active", sorts=_BY_TIME,
             by_id=True, external=True, events=("created", "updated")),
    Resource("adjustments", "inventory", "adjustments", "tn.inv.adjustments", 30_001, active_param="active",
             sorts=_BY_TIME, export="export/adjustments", external=True,
             filters=(("eq", "number", "number"), ("in", "syncStatuses", "syncStatus"))),
    Resource("warehouses", "inventory", "warehouses", "tn.inv.warehouses", 11, active_param="active", sorts=_BY_TIME,
             external=True),
    Resource("inventory_bills", "accounting", "inventory-bills", "tn.acc.inventorybills", 70_001,
             export="export/inventory-bills", export_adds_active=True, filters=_BILL_FILTERS,
             events=("created", "updated")),
    Resource("ap_bills", "accounting", "ap-bills", "tn.acc.apbills", 75_001, by_id=True,
             filters=(*_BILL_FILTERS, ("eq", "billType", "billType")), events=("created",)),
    Resource("ap_payments", "accounting", "ap-payments", "tn.acc.appayments", 78_001, sorts=_BY_TIME,
             filters=(("in", "syncStatuses", "syncStatus"),), events=("created",)),
    Resource("invoices", "accounting", "invoices", "tn.acc.invoices", 40_001, active_param="activeState",
             sorts=_BY_TIME, export="export/invoices",
             filters=(("eq", "number", "referenceNumber"), ("int", "customerId", "customer", "id"),
                      ("int", "jobId", "job", "id"), ("in", "statuses", "syncStatus"),
                      ("dates", "invoicedOnOrAfter", "invoicedOnBefore", "invoiceDate")),
             events=("created", "updated")),
    Resource("payments", "accounting", "payments", "tn.acc.payments", 60_001, active_param="activeState",
             sorts=_BY_TIME, export="export/payments",
             filters=(("int", "customerId", "customer", "id"), ("any", "appliedToInvoiceIds", "appliedTo", "appliedTo"),
                      ("in", "statuses", "syncStatus"), ("dates", "paidOnAfter", "paidOnBefore", "date")),
             events=("created",)),
    Resource("gl_accounts", "accounting", "gl-accounts", "tn.acc.glaccounts", 2_001, active_param="active",
             sorts=_BY_TIME, by_id=True,
             filters=(("in", "names", "name"), ("in", "numbers", "number"), ("in", "types", "type"))),
    Resource("customers", "crm", "customers", "tn.crm.customers", 10_001, active_param="active", sorts=_BY_TIME,
             by_id=True, export="export/customers", external=True, filters=(("contains", "name", "name"),),
             events=("created", "updated")),
    Resource("business_units", "settings", "business-units", "tn.stt.businessunits", 1, active_param="active",
             by_id=True, export="export/business-units", filters=(("ieq", "name", "name"),)),
    Resource("jobs", "jpm", "jobs", "tn.jpm.jobs", 20_001, sorts=_BY_TIME, by_id=True, events=("created",)),
)}

# markasexported per collection: (id field of the answer, label in its message, list field of an
# object body, or None when the body is an array of {id field, externalId, externalMessage}).
MARKS = {"inventory_bills": ("inventoryBillId", "Inventory bill", "inventoryBillIds"),
         "ap_bills": ("billId", "Bill", "billIds"), "invoices": ("invoiceId", "Invoice", None),
         "ap_payments": ("apPaymentId", "AP payment", None)}
ALL_SCOPES = tuple(sorted(f"{r.scope}:{mode}" for r in RESOURCES.values() for mode in ("r", "w")))
SORT_FIELDS = {"id": "id", "modifiedon": "modified_us", "modified": "modified_us",
               "createdon": "created_us", "created": "created_us"}


# ---- read views: every field of a record, in the vendor's order, with the value a new record
# starts with. A record is `fresh(VIEW, ...)`: a copy with its own values laid over.

ADDRESS = _address()
VENDOR = {"id": None, "name": "New Vendor", "active": True, "isTruckReplenishment": False,
          "isMobileCreationRestricted": False, "memo": "", "deliveryOption": "Manual", "defaultTaxRate": 0.0,
          "contactInfo": {"firstName": "", "lastName": "", "phone": "", "email": "", "fax": ""}, "address": ADDRESS,
          "createdOn": None, "modifiedOn": None, "externalData": [], "customFields": []}
BILL_ITEM = {"order": 1, "name": None, "description": None, "quantity": "1.00", "cost": "0.00",
             "inventoryLocation": None, "serialNumber": None, "generalLedgerAccount": None, "costOfSaleAccount": None,
             "assetAccount": None, "id": None, "skuId": None, "receiptItemId": None, "skuType": None, "skuCode": None,
             "budgetCodeId": None}
AP_BILL_ITEM = {**{k: BILL_ITEM[k] for k in list(BILL_ITEM)[:6]}, "vendorPartNumber": None,
                **{k: BILL_ITEM[k] for k in list(BILL_ITEM)[6:]}}
INVENTORY_BILL = {"id": None, "purchaseOrderId": None, "syncStatus": "Pending", "referenceNumber": None,
                  "vendorNumber": None, "summary": None, "billDate": None, "billAmount": "0.00", "taxAmount": "0.00",
                  "shippingAmount": "0.00", "createdBy": "Sandbox", "createdOn": None, "modifiedOn": None,
                  "termName": "Net 30", "dueDate": None, "shipToDescription": None, "postDate": None, "batch": None,
                  "businessUnit": None, "taxZone": None, "vendor": None, "shipTo": None, "budgetCodeId": None,
                  "items": [], "customFields": [], "jobId": None, "jobNumber": None}
AP_BILL = {"id": None, "purchaseOrderId": None, "syncStatus": "Pending", "status": "Unreconciled",
           "source": "Standalone", "billType": "ApBill", "postDate": None, "referenceNumber": None,
           "vendorNumber": None,
           "summary": None, "billDate": None, "earlyDiscountDate": None, "billAmount": "0.00",
           "vendorInvoiceTotal": "0.00", "taxAmount": "0.00", "shippingAmount": "0.00", "createdBy": "Sandbox",
           "createdOn": None, "modifiedOn": None, "termName": "Net 30", "dueDate": None, "doNotPay": False,
           "dateCanceled": None, "canceledBy": None, "shipToDescription": None, "batch": None, "businessUnit": None,
           "taxZone": None, "vendor": None, "remittanceVendorInfo": None, "shipTo": None, "budgetCodeId": None,
           "items": [], "expenseItems": [], "customFields": [], "jobId": None, "jobNumber": None}
PAYMENT = {"active": True, "appliedTo": [], "authCode": None, "batch": None, "businessUnit": None, "checkNumber": None,
           "createdBy": "Sandbox", "createdOn": None, "customer": None, "customFields": [], "date": None,
           "deposit": None, "generalLedgerAccount": None, "id": None, "memo": None, "modifiedOn": None,
           "referenceNumber": None, "refundedPaymentId": None, "syncStatus": "Pending", "total": "0.00",
           "type": "Check", "typeId": "2", "unappliedAmount": "0.00"}
AP_PAYMENT = {"id": None, "active": True, "createdOn": None, "modifiedOn": None, "date": None, "approvedDate": None,
              "method": "AccountingSystem", "name": None, "printCheck": False, "amount": 0.0, "errorMessage": None,
              "status": "Unpaid", "syncStatus": "Pending", "batch": None, "glAccount": None, "businessUnit": None,
              "vendor": None, "remittanceVendor": None, "splits": [], "customFields": []}
ADJUSTMENT = {"id": None, "active": True, "number": None, "referenceNumber": "", "type": "Cycle Count",
              "inventoryLocationId": None, "businessUnitId": None, "projectId": None, "invoiceId": None,
              "createdById": 1, "memo": "", "date": None, "createdOn": None, "modifiedOn": None, "batchId": None,
              "batch": None, "syncStatus": "Pending", "canceledReason": None, "canceledById": None,
              "dateCanceled": None, "externalData": [], "items": [], "customFields": []}
GL_ACCOUNT = {"id": None, "name": "New Account", "number": None, "description": None, "type": "Expense",
              "subtype": None, "active": True, "isIntacctGroup": False, "isIntacctBankAccount": False,
              "source": "ManuallyCreated", "defaultAccountType": None, "createdOn": None, "modifiedOn": None}
WAREHOUSE = {"id": None, "name": "New Warehouse", "active": True, "address": ADDRESS, "inventoryTemplateId": None,
             "createdOn": None, "modifiedOn": None, "externalData": []}
JOB = {"id": None, "jobNumber": None, "customerId": None, "locationId": None, "businessUnitId": None, "jobTypeId": 1,
       "jobStatus": "Scheduled", "priority": "Normal", "summary": "", "completedOn": None, "invoiceId": None,
       "total": 0.0, "createdOn": None, "modifiedOn": None}


def fresh(view: dict[str, Any], **values: Any) -> dict[str, Any]:
    """A new record of `view`'s shape: its fields in order, lists and objects copied, `values` laid over."""
    if not values.keys() <= view.keys():
        raise KeyError(sorted(values.keys() - view.keys()))
    record = {key: value.copy() if isinstance(value, (list, dict)) else value for key, value in view.items()}
    record.update(values)
    return record
