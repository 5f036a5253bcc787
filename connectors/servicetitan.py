"""ServiceTitan API v2 connector: client credentials plus `ST-App-Key`, paged and export reads,
the writes the pairs need, and RFC 7807 errors mapped to the taxonomy.

One client, declarative entities: each entity is a `ServiceTitanEntity` naming its module
path, model and the few ways it differs (export feed, by-id read, active filter, sort, the
markasexported endpoint, the list filters its external keys go through). Adding an entity
is one declaration and one model. Tokens come from the kit's OAuth 2.0 provider, lists are
walked by its page-number paginator (stable over change windows) and export feeds by its
cursor paginator; webhook deliveries are checked by the receiver's own verifier.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any, ClassVar, Iterable, Iterator, Literal, Mapping, Sequence, cast

import requests
from pydantic import BaseModel, Field, SecretStr

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    CursorPaging,
    HttpClient,
    HttpRuntime,
    NotFoundError,
    OAuth2Provider,
    OAuth2Settings,
    Page,
    PageNumberPaging,
    Paginator,
    RateLimit,
    RetrySettings,
    StepBackOnShrink,
    TokenAuth,
)
from mlconnector.webhook_signature import DEFAULT_HEADER, Encoding, SignatureError, verify_headers

PRODUCTION_API = "https://api.servicetitan.io"
PRODUCTION_TOKEN_URL = "https://auth.servicetitan.io/connect/token"
INTEGRATION_API = "https://api-integration.servicetitan.io"
INTEGRATION_TOKEN_URL = "https://auth-integration.servicetitan.io/connect/token"

TOKEN_TTL = 900  # ServiceTitan tokens live 15 minutes when the answer omits expires_in
PAGE_SIZE = 500  # rows per list page; the vendor's default of 50 wastes calls
MAX_PAGE_SIZE = 5000  # (unconfirmed) the vendor's cap; a production tap sends 5000 without trouble
RATE_LIMIT_PER_SECOND = 60  # the vendor's limit per (app key, tenant), shared by the fleet
IDS_PER_CALL = 50  # the spec caps `ids` lookups (and externalDataValues) at 50
MAX_ERROR_TEXT = 2000  # keep vendor error text readable in audit rows
SIGNATURE_HEADER = DEFAULT_HEADER  # (unconfirmed) webhook signature header, a setting of the integration
SIGNATURE_ENCODING: Encoding = "hex"  # (unconfirmed) hex or base64 HMAC-SHA256 digest


# ---- models: field names as the vendor spells them, so model_dump(mode="json") is its shape ------

class Named(VendorModel):
    id: int
    name: str | None = None


class Address(VendorModel):
    street: str | None = None
    unit: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    country: str | None = None


class GlAccountRef(VendorModel):
    id: int
    name: str | None = None
    number: str | None = None
    type: str | None = None
    detailType: str | None = None


class PurchaseOrderItem(VendorModel):
    id: int
    skuId: int | None = None
    skuCode: str | None = None
    skuName: str | None = None
    skuType: str | None = None
    description: str | None = None
    vendorPartNumber: str | None = None
    quantity: float = 0.0
    quantityReceived: float = 0.0
    cost: float = 0.0
    total: float = 0.0
    status: str | None = None


class PurchaseOrder(VendorModel):
    id: int
    number: str | None = None
    vendorId: int | None = None
    businessUnitId: int | None = None
    inventoryLocationId: int | None = None
    jobId: int | None = None
    status: str | None = None
    date: datetime | None = None
    receivedOn: datetime | None = None
    total: float = 0.0
    tax: float = 0.0
    shipping: float = 0.0
    summary: str | None = None
    shipTo: Address | None = None
    items: list[PurchaseOrderItem] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class InventoryBillItem(VendorModel):
    id: int
    order: int | None = None
    name: str | None = None
    description: str | None = None
    quantity: Decimal | None = None
    cost: Decimal | None = None
    skuId: int | None = None
    skuCode: str | None = None
    skuType: str | None = None
    generalLedgerAccount: GlAccountRef | None = None
    costOfSaleAccount: GlAccountRef | None = None
    assetAccount: GlAccountRef | None = None


class InventoryBill(VendorModel):
    id: int
    purchaseOrderId: int | None = None
    syncStatus: str | None = None
    referenceNumber: str | None = None
    vendorNumber: str | None = None
    summary: str | None = None
    billDate: datetime | None = None
    dueDate: datetime | None = None
    billAmount: Decimal | None = None
    taxAmount: Decimal | None = None
    shippingAmount: Decimal | None = None
    termName: str | None = None
    vendor: Named | None = None
    businessUnit: Named | None = None
    jobId: int | None = None
    jobNumber: str | None = None
    items: list[InventoryBillItem] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class ApBillExpenseItem(VendorModel):
    id: int
    amount: Decimal
    description: str | None = None
    generalLedgerAccount: GlAccountRef | None = None
    businessUnit: Named | None = None


class ApBill(InventoryBill):
    status: str | None = None
    source: str | None = None
    billType: str | None = None
    vendorInvoiceTotal: Decimal | None = None
    doNotPay: bool = False
    expenseItems: list[ApBillExpenseItem] = Field(default_factory=list)


class ApPaymentSplit(VendorModel):
    id: int
    inventoryBillId: int | None = None
    documentId: int | None = None
    amount: Decimal


class ApPayment(VendorModel):
    id: int
    active: bool | None = None
    date: datetime | None = None
    amount: Decimal
    method: str | None = None
    status: str | None = None
    syncStatus: str | None = None
    vendor: Named | None = None
    businessUnit: Named | None = None
    glAccount: GlAccountRef | None = None
    splits: list[ApPaymentSplit] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class JobRef(VendorModel):
    id: int
    number: str | None = None
    type: str | None = None


class InvoiceItem(VendorModel):
    id: int
    skuId: int | None = None
    skuName: str | None = None
    displayName: str | None = None
    description: str | None = None
    type: str | None = None
    quantity: Decimal | None = None
    cost: Decimal | None = None
    price: Decimal | None = None
    total: Decimal | None = None
    taxable: bool | None = None
    generalLedgerAccount: GlAccountRef | None = None
    order: int | None = None


class Invoice(VendorModel):
    id: int
    syncStatus: str | None = None
    referenceNumber: str | None = None
    invoiceDate: datetime | None = None
    dueDate: datetime | None = None
    subTotal: Decimal | None = None
    salesTax: Decimal | None = None
    total: Decimal | None = None
    balance: Decimal | None = None
    customer: Named | None = None
    location: Named | None = None
    businessUnit: Named | None = None
    job: JobRef | None = None
    active: bool | None = None
    items: list[InvoiceItem] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class PaymentApplication(VendorModel):
    appliedId: int
    appliedTo: int
    appliedAmount: Decimal | None = None
    appliedOn: datetime | None = None
    appliedBy: str | None = None
    appliedToReferenceNumber: str | None = None


class Payment(VendorModel):
    id: int
    active: bool | None = None
    type: str | None = None
    typeId: str | None = None
    referenceNumber: str | None = None
    date: datetime | None = None
    checkNumber: str | None = None
    memo: str | None = None
    total: Decimal | None = None
    unappliedAmount: Decimal | None = None
    customer: Named | None = None
    businessUnit: Named | None = None
    syncStatus: str | None = None
    appliedTo: list[PaymentApplication] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class CustomerAddress(Address):
    latitude: float | None = None
    longitude: float | None = None


class ExternalDatum(VendorModel):
    key: str
    value: str | None = None


class Customer(VendorModel):
    id: int
    active: bool | None = None
    name: str
    type: str | None = None
    address: CustomerAddress | None = None
    balance: float | None = None
    taxExempt: bool | None = None
    doNotMail: bool | None = None
    doNotService: bool | None = None
    externalData: list[ExternalDatum] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class ContactInfo(VendorModel):
    firstName: str | None = None
    lastName: str | None = None
    phone: str | None = None
    email: str | None = None
    fax: str | None = None


class Vendor(VendorModel):
    id: int
    name: str
    active: bool = True
    memo: str | None = None
    defaultTaxRate: float | None = None
    deliveryOption: str | None = None
    address: Address | None = None
    contactInfo: ContactInfo | None = None
    externalData: list[ExternalDatum] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class BusinessUnit(VendorModel):
    id: int
    active: bool | None = None
    name: str
    officialName: str | None = None
    accountCode: str | None = None
    quickbooksClass: str | None = None
    trade: Named | None = None
    division: Named | None = None
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class GlAccount(VendorModel):
    id: int
    name: str | None = None
    number: str | None = None
    description: str | None = None
    type: str | None = None
    subtype: str | None = None
    active: bool | None = None
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class AdjustmentItem(VendorModel):
    id: int
    skuId: int | None = None
    name: str | None = None
    code: str | None = None
    description: str | None = None
    quantity: float = 0.0
    cost: float = 0.0
    totalCost: float = 0.0


class Adjustment(VendorModel):
    id: int
    active: bool | None = None
    number: str | None = None
    referenceNumber: str | None = None
    type: str | None = None
    inventoryLocationId: int | None = None
    businessUnitId: int | None = None
    invoiceId: int | None = None
    memo: str | None = None
    date: datetime | None = None
    syncStatus: str | None = None
    externalData: list[ExternalDatum] = Field(default_factory=list)
    items: list[AdjustmentItem] = Field(default_factory=list)
    createdOn: datetime | None = None
    modifiedOn: datetime | None = None


class ExportVerdict(BaseModel):
    """One id's answer from a markasexported call."""

    id: int
    success: bool
    error_message: str | None = None


# The names the engine imports; one class per vendor record either way.
ServiceTitanPurchaseOrder = PurchaseOrder
ServiceTitanInventoryBill = InventoryBill
ServiceTitanApBill = ApBill
ServiceTitanApPayment = ApPayment
ServiceTitanInvoice = Invoice
ServiceTitanPayment = Payment
ServiceTitanCustomer = Customer
ServiceTitanVendor = Vendor
ServiceTitanBusinessUnit = BusinessUnit
ServiceTitanGlAccount = GlAccount
ServiceTitanAdjustment = Adjustment


# ---- entity declarations ----------------------------------------------------------------------

@dataclass(frozen=True)
class ServiceTitanEntity(EntitySpec[Any]):
    """`path` is the list endpoint below the API base, with a `{tenant}` placeholder."""

    by_id: bool = False  # GET {path}/{id} exists; otherwise reads by id use the `ids` filter
    export_path: str | None = None
    active_param: Literal["active", "activeState"] | None = None  # sent as Any / All so nothing hides
    sort: str | None = None  # "+Id" where the endpoint sorts; keeps paging order stable
    mark_path: str | None = None  # markasexported endpoint
    filters: tuple[tuple[str, str], ...] = (("id", "ids"),)  # record field -> the list filter that selects it


def _entity(name: str, module: str, resource: str, model: type[BaseModel], **options: Any) -> ServiceTitanEntity:
    export = options.pop("export", None)
    mark = options.pop("mark", None)
    keys = options.pop("keys", {})  # external key field -> its list filter
    prefix = f"{module}/v2/tenant/{{tenant}}"
    return ServiceTitanEntity(name=name, path=f"{prefix}/{resource}", key="id", change_field="modifiedOn",
                              model=model, external_keys=tuple((field,) for field in keys),
                              export_path=f"{prefix}/{export}" if export else None,
                              mark_path=f"{prefix}/{mark}" if mark else None,
                              filters=(("id", "ids"), *keys.items()), **options)


ENTITIES: dict[str, ServiceTitanEntity] = {e.name: e for e in (
    _entity("purchase_orders", "inventory", "purchase-orders", PurchaseOrder, by_id=True, sort="+Id",
            export="export/purchase-orders", keys={"number": "number"}),
    _entity("inventory_bills", "accounting", "inventory-bills/paginated", InventoryBill,
            export="export/inventory-bills", mark="inventory-bills/markasexported"),
    _entity("ap_bills", "accounting", "ap-bills", ApBill, by_id=True, mark="ap-bills/markasexported"),
    _entity("ap_payments", "accounting", "ap-payments", ApPayment, sort="+Id", mark="ap-payments/markasexported"),
    _entity("invoices", "accounting", "invoices", Invoice, active_param="activeState", sort="+Id",
            export="export/invoices", mark="invoices/markasexported", keys={"referenceNumber": "number"}),
    _entity("payments", "accounting", "payments", Payment, active_param="activeState", sort="+Id",
            export="export/payments", mark="payments/status"),
    _entity("customers", "crm", "customers", Customer, by_id=True, active_param="active", sort="+Id",
            export="export/customers"),
    _entity("vendors", "inventory", "vendors", Vendor, by_id=True, active_param="active", sort="+Id"),
    _entity("business_units", "settings", "business-units", BusinessUnit, by_id=True, active_param="active",
            export="export/business-units"),
    _entity("gl_accounts", "accounting", "gl-accounts", GlAccount, by_id=True, active_param="active", sort="+Id"),
    _entity("adjustments", "inventory", "adjustments", Adjustment, active_param="active", sort="+Id",
            export="export/adjustments", keys={"number": "number"}),
)}

# The document date of each dated entity and the list filters that bound it (after, before), when
# the list has them: a month-end reconciliation reads one period without paging the whole history.
DOCUMENT_DATES: dict[str, tuple[str, str | None, str | None]] = {
    "inventory_bills": ("billDate", "dateFrom", "dateTo"),
    "ap_bills": ("billDate", "dateFrom", "dateTo"),
    "invoices": ("invoiceDate", "invoicedOnOrAfter", "invoicedOnBefore"),
    "payments": ("date", "paidOnAfter", "paidOnBefore"),
    "purchase_orders": ("date", "dateOnOrAfter", "dateBefore"),
    "ap_payments": ("date", None, None),
    "adjustments": ("date", None, None),
}

_MARK_BODIES = {  # how each markasexported endpoint wants its ids, and how it answers them
    "inventory_bills": ("inventoryBillId", lambda ids: {"inventoryBillIds": ids}),
    "ap_bills": ("billId", lambda ids: {"billIds": ids}),
    "invoices": ("invoiceId", lambda ids: [{"invoiceId": i} for i in ids]),
    "ap_payments": ("apPaymentId", lambda ids: [{"apPaymentId": i} for i in ids]),
    "payments": ("paymentId", lambda ids: {"paymentIds": ids, "status": "Exported"}),
}
_ADDRESS_FIELDS = ("street", "unit", "city", "state", "zip", "country")


# A PATCH sends the whole new value of each field it names, so repeating one after a lost answer
# leaves the same record: those calls are retried in-process; creates (POST) are not.

# ---- errors and auth --------------------------------------------------------------------------

def error_text(response: requests.Response) -> tuple[str, Any]:
    """The vendor's own message: an RFC 7807 title with its field errors, or an OAuth error."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:MAX_ERROR_TEXT], None
    if isinstance(body, dict):
        if isinstance(body.get("title"), str):
            fields = body.get("errors") or {}
            detail = "; ".join(f"{name}: {' '.join(map(str, msgs))}" for name, msgs in fields.items() if msgs)
            return (f"{body['title']} ({detail})" if detail else body["title"])[:MAX_ERROR_TEXT], body
        if isinstance(body.get("error"), str):
            text = body["error"] + (f": {body['error_description']}" if body.get("error_description") else "")
            return text[:MAX_ERROR_TEXT], body
    return str(body)[:MAX_ERROR_TEXT], body


def oauth_settings(config: "ServiceTitanConnector.Config") -> OAuth2Settings:
    """Client credentials only: the vendor issues no refresh tokens, so each expiry is a new grant."""
    return OAuth2Settings(token_url=config.token_url, grant="client_credentials", scope=config.scope,
                          default_ttl=config.token_ttl, timeout=(config.connect_timeout, config.timeout),
                          error_extractor=error_text)


def _stamp(moment: datetime) -> str:
    """UTC date-time for the vendor's filters; a naive value is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_VENDOR_RENAMES = {"defaultTaxRate": "taxRate", "isMobileCreationRestricted": "restrictedMobileCreation"}
_READ_ONLY = frozenset({"id", "createdOn", "modifiedOn"})


def _vendor_write_body(fields: dict[str, Any]) -> dict[str, Any]:
    """A vendor create/update body from fields in either the write or the read-view shape."""
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _READ_ONLY:
            continue
        if key == "contactInfo" and isinstance(value, dict):
            body.update({k: value[k] for k in ("firstName", "lastName", "phone", "email", "fax") if k in value})
        else:
            body[_VENDOR_RENAMES.get(key, key)] = value
    return body


def _normal_name(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().casefold()


def _chunks(values: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield list(values[start:start + size])


# ---- the connector ---------------------------------------------------------------------------

class ServiceTitanConnector(Connector):
    system: ClassVar[str] = "servicetitan"

    class Config(SettingsModel):
        api_base: str = Field(
            PRODUCTION_API,
            description="API host: https://api.servicetitan.io (production) or https://api-integration.servicetitan.io "
                        "(integration environment); each environment has its own credentials.",
        )
        token_url: str = Field(
            PRODUCTION_TOKEN_URL,
            description="OAuth token endpoint for the client-credentials grant, in the same environment as api_base "
                        "(https://auth.servicetitan.io/connect/token or "
                        "https://auth-integration.servicetitan.io/connect/token).",
        )
        tenant: int = Field(
            gt=0,
            description="Numeric ServiceTitan tenant ID, placed in every API path (/{module}/v2/tenant/{tenant}/...); "
                        "not a secret.",
        )
        token_ttl: int = Field(
            TOKEN_TTL, gt=0,
            description="Seconds an access token is assumed to live when the token answer omits expires_in; "
                        "ServiceTitan issues 900-second tokens.",
        )
        page_size: int = Field(
            PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE,
            description="Rows requested per list page (pageSize). The vendor default is 50; its maximum is unconfirmed "
                        "(5000 is known to work). Export feeds take no page size.",
        )
        rate_limit_per_second: int = Field(
            RATE_LIMIT_PER_SECOND, ge=0,
            description="Client-side limit in requests per second, shared by every worker using this app key and "
                        "tenant; ServiceTitan allows 60 per second per (app, tenant). 0 turns the limiter off.",
        )
        scope: str | None = Field(
            None,
            description="Space-separated OAuth scopes to request, to use fewer than the app is granted; unset requests "
                        "all of the app's scopes.",
        )
        stable_paging: bool = Field(
            True,
            description="When reading a change window, request totals and step back when records changed mid-poll shift"
                        " the pages, so none is skipped.",
        )
        include_recent_changes: bool = Field(
            False,
            description="Export feeds: send includeRecentChanges=true to get the newest changes sooner, at the cost of "
                        "possibly repeated records.",
        )
        webhook_signature_header: str = Field(
            SIGNATURE_HEADER,
            description="HTTP header carrying the webhook HMAC-SHA256 signature of the raw body (unconfirmed; "
                        "third-party receivers read X-ServiceTitan-Signature).",
        )
        webhook_signature_encoding: Encoding = Field(
            SIGNATURE_ENCODING,
            description="Encoding of the webhook HMAC-SHA256 digest: hex or base64 (unconfirmed; third-party code "
                        "disagrees).",
        )
        timeout: float = Field(60.0, gt=0, description="Seconds to wait for a response (read timeout) on each call.")
        connect_timeout: float = Field(
            5.0, gt=0,
            description="Seconds to wait for a connection to be established on each call.",
        )
        retry: RetrySettings = Field(
            default_factory=RetrySettings,
            description="In-call retries of transient failures (connection errors, timeouts, 429, 5xx), with "
                        "exponential backoff or the vendor's Retry-After.",
        )

    class Credentials(SettingsModel):
        client_id: str = Field(
            description="OAuth client ID of the ServiceTitan app; production and integration environments issue "
                        "different IDs.",
        )
        client_secret: SecretStr = Field(description="OAuth client secret belonging to client_id.")
        app_key: SecretStr = Field(
            description="Application key from the ServiceTitan developer portal, sent as the ST-App-Key header on every"
                        " call.",
        )

    entities: ClassVar[dict[str, ServiceTitanEntity]] = ENTITIES

    def __init__(self, config: "ServiceTitanConnector.Config", credentials: "ServiceTitanConnector.Credentials",
                 runtime: HttpRuntime) -> None:
        self.config = config
        app_key = credentials.app_key.get_secret_value()
        self._provider = OAuth2Provider(self.system, oauth_settings(config), client_id=credentials.client_id,
                                        client_secret=credentials.client_secret.get_secret_value(),
                                        api_headers={"ST-App-Key": app_key})
        self._runtime = runtime
        self._session = runtime.session(self.system)
        app_fingerprint = hashlib.sha256(app_key.encode()).hexdigest()[:12]
        self.client = HttpClient(
            vendor=self.system,
            base_url=config.api_base,
            auth=TokenAuth(self._provider, runtime.token_cache),
            session=self._session,
            rate_limiter=runtime.rate_limiter if config.rate_limit_per_second else None,
            rate_limit=RateLimit(config.rate_limit_per_second) if config.rate_limit_per_second else None,
            rate_key=f"servicetitan:{app_fingerprint}:{config.tenant}",  # the vendor's bucket: app + tenant
            timeout=(config.connect_timeout, config.timeout),
            retry=config.retry.policy(),
            default_headers={"Accept": "application/json"},
            error_extractor=error_text,
        )

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "ServiceTitanConnector":
        return cls(cls.Config(**config), cls.Credentials(**credentials), runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        creds = info["credentials"]
        config = {"api_base": info["api_base"], "token_url": info["token_url"], "tenant": int(creds["tenant"])}
        return config, {"client_id": creds["client_id"], "client_secret": creds["client_secret"],
                        "app_key": creds["app_key"]}

    @property
    def call_count(self) -> int:
        return self.client.calls + self._provider.calls

    def spec(self, entity: str) -> ServiceTitanEntity:
        return super().spec(entity)  # type: ignore[return-value]

    def _path(self, template: str) -> str:
        return template.format(tenant=self.config.tenant)

    # ---- hooks the base reads are built on ------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """Page numbers while `hasMore`. A change window is walked stably: every page asks for the
        total, and when it shrinks (a record changed again and left the window) the walk steps
        back and drops the ids it already gave."""
        pages = PageNumberPaging("page", "pageSize", self.config.page_size)
        return StepBackOnShrink(pages, key=lambda row: row.get("id")) if stable else pages

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        entity = self.spec(spec.name)
        stable = stable and self.config.stable_paging
        fixed: dict[str, Any] = {}
        if entity.active_param == "active":
            fixed["active"] = "Any"
        elif entity.active_param == "activeState":
            fixed["activeState"] = "All"
        if entity.sort:
            fixed["sort"] = entity.sort
        if stable:
            fixed["includeTotal"] = "true"
        return super().pages(spec, {**params, **fixed}, stable=stable)

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        body = self.client.get_json(self._path(spec.path), params=request, endpoint=spec.path) or {}
        return Page(body.get("data") or [], has_more=bool(body.get("hasMore")), total=body.get("totalCount"))

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        params: dict[str, Any] = {"modifiedBefore": _stamp(until)}
        if since is not None:
            params["modifiedOnOrAfter"] = _stamp(since)
        return params

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        filters = dict(self.spec(spec.name).filters)
        return {filters[field]: value for field, value in key.items() if field in filters}

    def read_one(self, spec: EntitySpec[Any], key: Any) -> BaseModel:
        if not self.spec(spec.name).by_id:
            return super().read_one(spec, int(key))
        row = self.client.get_json(f"{self._path(spec.path)}/{int(key)}", endpoint=f"{spec.path}/{{id}}")
        return spec.model.model_validate(row)

    # ---- reads -----------------------------------------------------------------------------

    def iter_all(self, entity: str) -> Iterator[Any]:
        """Every record, active or not (a backfill without a watermark)."""
        spec = self.spec(entity)
        for row in self.rows(spec, {}, stable=True):
            yield spec.model.model_validate(row)

    def iter_export(self, entity: str, cursor: str | None = None) -> Iterator[tuple[Any, str | None]]:
        """Export feed rows (active, inactive and deleted) with the cursor to resume after each.

        The resume cursor of a page's last row is the vendor's `continueFrom`; earlier rows carry
        the cursor that fetched their page, so resuming after a crash re-reads, never skips.
        The feed takes no page size: only `from` and `includeRecentChanges` are documented.
        """
        spec = self.spec(entity)
        if not spec.export_path:
            raise ValueError(f"servicetitan has no export feed for {entity}")
        path, endpoint = self._path(spec.export_path), spec.export_path

        def fetch(request: dict[str, Any]) -> Page:
            body = self.client.get_json(path, params=request, endpoint=endpoint) or {}
            return Page(body.get("data") or [], has_more=bool(body.get("hasMore")), cursor=body.get("continueFrom"))

        params: dict[str, Any] = {"from": cursor} if cursor else {}
        if self.config.include_recent_changes:
            params["includeRecentChanges"] = "true"
        for page in CursorPaging("from").pages(fetch, params):
            current = page.request.get("from")
            following = page.cursor or current
            for index, row in enumerate(page.rows):
                yield spec.model.model_validate(row), (following if index == len(page.rows) - 1 else current)

    def get_many(self, entity: str, ids: Iterable[int]) -> list[Any]:
        """Records by id, 50 per call (the vendor's cap); missing ids are simply absent."""
        spec = self.spec(entity)
        wanted = list(dict.fromkeys(int(i) for i in ids))
        found: list[Any] = []
        for chunk in _chunks(wanted, IDS_PER_CALL):
            rows = self.rows(spec, {"ids": ",".join(map(str, chunk))})
            found += [spec.model.model_validate(row) for row in rows]
        return found

    def iter_dated(self, entity: str, start: date, end: date) -> Iterator[Any]:
        """Records of `entity` whose own document date (UTC) is on or after `start` and before
        `end`: the list's documented date filter where it has one, else every page, filtered here
        (ServiceTitan's AP payments list takes no date filter)."""
        spec = self.spec(entity)
        field, after, before = DOCUMENT_DATES[entity]
        low, high = (datetime.combine(d, time(), tzinfo=timezone.utc) for d in (start, end))
        params = {after: _stamp(low), before: _stamp(high)} if after and before else {}
        for row in self.rows(spec, params):
            record = spec.model.model_validate(row)
            when = getattr(record, field, None)
            if isinstance(when, datetime):
                moment = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
                if low <= moment.astimezone(timezone.utc) < high:
                    yield record

    # ---- idempotency lookups --------------------------------------------------------------------

    def find_vendor_by_name(self, name: str) -> Vendor | None:
        """The vendor whose name matches ignoring case and spacing (the list has no name filter)."""
        wanted = _normal_name(name)
        for row in self.rows(self.spec("vendors"), {}):
            if _normal_name(row.get("name") or "") == wanted:
                return Vendor.model_validate(row)
        return None

    def find_vendor_by_external_key(self, application_guid: str, key: str, value: str) -> Vendor | None:
        return self._find_external("vendors", application_guid, key, value)

    def find_customer_by_external_key(self, application_guid: str, key: str, value: str) -> Customer | None:
        return self._find_external("customers", application_guid, key, value)

    def find_customer_by_name(self, name: str) -> Customer | None:
        wanted = _normal_name(name)
        for row in self.rows(self.spec("customers"), {"name": name}):
            if _normal_name(row.get("name") or "") == wanted:
                return Customer.model_validate(row)
        return None

    def find_purchase_order_by_number(self, number: str) -> PurchaseOrder | None:
        return cast("PurchaseOrder | None", self.find("purchase_orders", number=number))

    def find_invoice_by_number(self, number: str) -> Invoice | None:
        return cast("Invoice | None", self.find("invoices", referenceNumber=number))

    def bills_for_purchase_order(self, po_id: int, number: str | None = None) -> list[InventoryBill]:
        """The inventory bills receiving a PO created (none until it is received).

        Bills are found by PO number; a caller that already has it (a webhook carries the
        whole PO) saves the read of the PO itself.
        """
        if not number:
            try:
                number = self.get("purchase_orders", po_id).number
            except NotFoundError:
                return []
        if not number:
            return []
        rows = self.rows(self.spec("inventory_bills"), {"purchaseOrderNumber": number})
        return [InventoryBill.model_validate(row) for row in rows if row.get("purchaseOrderId") == int(po_id)]

    def find_payments_for_invoice(self, invoice_id: int) -> list[Payment]:
        rows = self.rows(self.spec("payments"), {"appliedToInvoiceIds": str(int(invoice_id))})
        return [Payment.model_validate(row) for row in rows]

    def _find_external(self, entity: str, guid: str, key: str, value: str) -> Any:
        params = {"externalDataApplicationGuid": guid, "externalDataKey": key, "externalDataValues": value}
        spec = self.spec(entity)
        for row in self.rows(spec, params):
            return spec.model.model_validate(row)
        return None

    # ---- writes ---------------------------------------------------------------------------------

    def create_vendor(self, fields: dict[str, Any]) -> Vendor:
        """POST a vendor (the flags the vendor requires default to an ordinary active supplier)."""
        body = {"active": True, "isTruckReplenishment": False, "taxRate": 0.0, "restrictedMobileCreation": False,
                **_vendor_write_body(fields)}
        body["address"] = self._full_address(body.get("address"))
        created = self.client.send_json("POST", self._path("inventory/v2/tenant/{tenant}/vendors"), body,
                                        endpoint="inventory/vendors")
        return self.get("vendors", created["id"])

    def update_vendor(self, vendor_id: int, patch: dict[str, Any]) -> Vendor:
        """PATCH a vendor; a partial address is completed from the current one (the vendor needs all).

        Read-view names are accepted and translated: `contactInfo{...}` becomes the flat
        firstName/lastName/phone/email/fax the vendor's PATCH takes (it ignores `contactInfo`).
        """
        body = _vendor_write_body(patch)
        if isinstance(body.get("address"), dict) and not set(_ADDRESS_FIELDS) <= set(body["address"]):
            current = self.get("vendors", vendor_id).address
            body["address"] = self._full_address({**(current.model_dump() if current else {}), **body["address"]})
        self.client.send_json("PATCH", self._path(f"inventory/v2/tenant/{{tenant}}/vendors/{int(vendor_id)}"), body,
                              endpoint="inventory/vendors/{id}", idempotent=True)
        return self.get("vendors", vendor_id)

    def create_customer(self, fields: dict[str, Any]) -> Customer:
        """POST a customer; without `locations` the customer's own name and address make its one location."""
        body = dict(fields)
        if not body.get("locations") and body.get("name") and body.get("address"):
            body["locations"] = [{"name": body["name"], "address": body["address"]}]
        created = self.client.send_json("POST", self._path("crm/v2/tenant/{tenant}/customers"), body,
                                        endpoint="crm/customers")
        return Customer.model_validate(created)

    def update_customer(self, customer_id: int, patch: dict[str, Any]) -> Customer:
        """PATCH a customer; a partial address is completed from the current one."""
        body = dict(patch)
        wanted = (*_ADDRESS_FIELDS, "latitude", "longitude")
        if isinstance(body.get("address"), dict) and not set(wanted) <= set(body["address"]):
            current = self.get("customers", customer_id).address
            merged = {**(current.model_dump() if current else {}), **body["address"]}
            body["address"] = {k: merged.get(k) if k in ("latitude", "longitude") else (merged.get(k) or "")
                               for k in wanted}
        updated = self.client.send_json("PATCH", self._path(f"crm/v2/tenant/{{tenant}}/customers/{int(customer_id)}"),
                                        body, endpoint="crm/customers/{id}", idempotent=True)
        return Customer.model_validate(updated)

    def create_payment(self, payment: dict[str, Any] | None = None, **fields: Any) -> Payment:
        """POST an AR payment (typeId, amount, splits to invoices...) and read back its list view."""
        body = {**(payment or {}), **fields}
        created = self.client.send_json("POST", self._path("accounting/v2/tenant/{tenant}/payments"), body,
                                        endpoint="accounting/payments")
        return self.get("payments", created["id"])

    def create_purchase_order(self, fields: dict[str, Any]) -> PurchaseOrder:
        created = self.client.send_json("POST", self._path("inventory/v2/tenant/{tenant}/purchase-orders"), fields,
                                        endpoint="inventory/purchase-orders")
        return self.get("purchase_orders", created["id"])

    def update_purchase_order(self, po_id: int, patch: dict[str, Any]) -> PurchaseOrder:
        self.client.send_json("PATCH", self._path(f"inventory/v2/tenant/{{tenant}}/purchase-orders/{int(po_id)}"),
                              patch, endpoint="inventory/purchase-orders/{id}", idempotent=True)
        return self.get("purchase_orders", po_id)

    def update_adjustment(self, adjustment_id: int, patch: dict[str, Any]) -> Adjustment:
        """PATCH an inventory adjustment (the vendor accepts only externalData)."""
        self.client.send_json("PATCH", self._path(f"inventory/v2/tenant/{{tenant}}/adjustments/{int(adjustment_id)}"),
                              patch, endpoint="inventory/adjustments/{id}", idempotent=True)
        return self.get("adjustments", adjustment_id)

    def mark_exported(self, entity: str, ids: Iterable[int]) -> list[ExportVerdict]:
        """Tell ServiceTitan these records reached the accounting system (its sync status)."""
        spec = self.spec(entity)
        if not spec.mark_path or entity not in _MARK_BODIES:
            raise ValueError(f"servicetitan cannot mark {entity} as exported")
        id_field, make_body = _MARK_BODIES[entity]
        verdicts: list[ExportVerdict] = []
        for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids)), IDS_PER_CALL):
            answer = self.client.send_json("POST", self._path(spec.mark_path), make_body(chunk), endpoint=spec.mark_path,
                                           idempotent=True)  # marking twice leaves the same status
            if isinstance(answer, list):
                verdicts += [ExportVerdict(id=v[id_field], success=bool(v.get("success")),
                                           error_message=v.get("errorMessage")) for v in answer]
            else:  # payments/status answers an empty 200 for the whole batch
                verdicts += [ExportVerdict(id=i, success=True) for i in chunk]
        return verdicts

    @staticmethod
    def _full_address(address: dict[str, Any] | None) -> dict[str, Any]:
        given = address or {}
        return {key: given.get(key) or "" for key in _ADDRESS_FIELDS}

    # ---- webhooks -------------------------------------------------------------------------------

    def verify_webhook(self, body: bytes, headers: dict[str, str], keys: Iterable[str]) -> bool:
        """Check a delivery's signature with this deployment's header name and digest encoding,
        through the receiver's own verifier (mlconnector.webhook_signature)."""
        try:
            verify_headers(body, headers, keys, header=self.config.webhook_signature_header,
                           encoding=self.config.webhook_signature_encoding)
        except SignatureError:
            return False
        return True

    # ---- check ----------------------------------------------------------------------------------

    def check(self) -> list[CheckStep]:
        def token() -> str:
            issued = self._runtime.token_cache.get(self._provider, self._session)
            return f"token valid for {max(0, int(issued.expires_at - datetime.now(timezone.utc).timestamp()))}s"

        def probe(spec: ServiceTitanEntity) -> Any:
            def call() -> str:
                params: dict[str, Any] = {"pageSize": 1}
                if spec.active_param == "active":
                    params["active"] = "Any"
                body = self.client.get_json(self._path(spec.path), params=params, endpoint=spec.path)
                return f"{len(body.get('data') or [])} row(s) readable"
            return call

        steps = [timed_check("token", token), timed_check("business-units?pageSize=1", probe(ENTITIES["business_units"]))]
        steps += [timed_check(name, probe(spec)) for name, spec in self.entities.items() if name != "business_units"]
        return steps


__all__ = [
    "ENTITIES", "Address", "Adjustment", "AdjustmentItem", "ApBill", "ApBillExpenseItem", "ApPayment",
    "ApPaymentSplit", "BusinessUnit", "ContactInfo", "Customer", "CustomerAddress", "ExportVerdict",
    "ExternalDatum", "GlAccount", "GlAccountRef", "InventoryBill", "InventoryBillItem", "Invoice", "InvoiceItem",
    "JobRef", "Named", "Payment", "PaymentApplication", "PurchaseOrder", "PurchaseOrderItem",
    "ServiceTitanConnector", "ServiceTitanEntity", "Vendor", "error_text", "oauth_settings", "PRODUCTION_API", "PRODUCTION_TOKEN_URL", "INTEGRATION_API",
    "INTEGRATION_TOKEN_URL", "ServiceTitanAdjustment", "ServiceTitanApBill", "ServiceTitanApPayment",
    "ServiceTitanBusinessUnit", "ServiceTitanCustomer", "ServiceTitanGlAccount", "ServiceTitanInventoryBill",
    "ServiceTitanInvoice", "ServiceTitanPayment", "ServiceTitanPurchaseOrder", "ServiceTitanVendor",
]
