"""Acumatica contract-based REST API connector.

One `HttpClient` on `/entity/{Endpoint}/{Version}` authenticated by OAuth 2 (the kit's
provider: resource-owner password grant, renewed with the refresh token) through the fleet's
token cache, or by a cookie session that is always signed out in a `finally` (open sessions
count against the license's API-user limit). Entities are small declarations naming the key
fields that address a record and the external keys that find one; lists are walked by the
kit's `$top`/`$skip` paginator; records are read as typed models unwrapped from Acumatica's
value objects and written back as value objects.
"""

from __future__ import annotations

import re
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, ClassVar, Iterator, Literal, Mapping, Sequence, TypeVar, cast
from urllib.parse import quote, urljoin, urlsplit

import requests
from pydantic import BaseModel, Field, SecretStr, field_validator
from requests.adapters import HTTPAdapter

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    Auth,
    ConnectorError,
    FatalError,
    HttpClient,
    HttpRuntime,
    NoAuth,
    NotFoundError,
    OAuth2Provider,
    OAuth2Settings,
    OffsetPaging,
    Page,
    Paginator,
    RateLimit,
    RetriableError,
    RetrySettings,
    TokenAuth,
)
from mlconnector.redaction import register_secret

VENDOR = "acumatica"
DEFAULT_ENDPOINT = "Default"
DEFAULT_VERSION = "23.200.001"  # the endpoint version these models follow
PAGE_SIZE = 100  # no documented $top cap; big pages with $expand are slow on real instances
MAX_PAGE_SIZE = 1000  # bounds one page's memory
TOKEN_TTL_SECONDS = 3600  # used only when a token answer lacks expires_in (usual value, unconfirmed)
ACTION_POLL_SECONDS = 1.0  # the vendor's own client polls a running action every second
ACTION_TIMEOUT_SECONDS = 360.0  # ... and gives up after six minutes
DEFAULT_SCOPE = "api offline_access api:concurrent_access"  # REST API, refresh token, parallel calls
MAX_ERROR_TEXT = 2000  # keep vendor messages readable in audit rows
SESSION_POOL_SIZE = 8  # connections of a cookie-mode connector's own session
LOGIN_LIMIT_TEXT = "API Login Limit"  # the refusal of a sign-in over the licence's API users (Round 2 vendor facts)
LOGIN_LIMIT_WAIT_SECONDS = 5.0  # a refused sign-in waits for another worker's session to end, then tries again
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TAGS = re.compile(r"<[^>]+>")
_SPECIAL_KEYS = frozenset({"id", "rowNumber", "delete", "custom", "_links", "files"})

ModelT = TypeVar("ModelT", bound=BaseModel)


# ---- configuration ----------------------------------------------------------------------------


class AcumaticaConfig(SettingsModel):
    """What one customer's Acumatica deployment varies."""

    base_url: str = Field(
        description="Instance URL including any virtual directory, e.g. https://acme.acumatica.com/AcumaticaERP; a "
                    "trailing slash is removed.",
    )
    token_url: str | None = Field(
        None,
        description="OAuth token endpoint; unset uses {base_url}/identity/connect/token.",
    )
    tenant: str = Field(
        "",
        description="Tenant (company) name sent at cookie sign-in; with OAuth the client ID carries it (GUID@Tenant). "
                    "Empty: not sent.",
    )
    endpoint_name: str = Field(
        DEFAULT_ENDPOINT,
        description="Contract-based web-service endpoint name in the URL (/entity/{name}/{version}/...), normally "
                    "Default.",
    )
    endpoint_version: str = Field(
        DEFAULT_VERSION,
        description="Endpoint version in the URL, shaped like 23.200.001; the connector's record models follow "
                    "23.200.001.",
    )
    auth_mode: Literal["oauth", "cookie"] = Field(
        "oauth",
        description="oauth: OAuth 2.0 password grant through a connected application; cookie: /entity/auth/login "
                    "session, signed out after use (each open session counts against the licence's API-user limit).",
    )
    scope: str = Field(
        DEFAULT_SCOPE,
        description="OAuth scopes requested: api (REST API), offline_access (refresh token), api:concurrent_access "
                    "(parallel calls).",
    )
    branch: str | None = Field(
        None,
        description="Branch sent as the PX-CbApiBranch header and at cookie sign-in; unset uses the user's default "
                    "branch.",
    )
    page_size: int = Field(
        PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE,
        description="Records per list page ($top). Acumatica documents no cap; large pages with $expand are slow.",
    )
    requests_per_minute: int | None = Field(
        None, ge=1,
        description="Client-side limit in API requests per minute; set it to the licence's limit (License Monitoring "
                    "Console, SM604000). Unset: no limit (trial licences impose none).",
    )
    token_ttl: int = Field(
        TOKEN_TTL_SECONDS, ge=1,
        description="Seconds an access token is assumed to live when the token answer omits expires_in (the usual 3600 "
                    "is unconfirmed).",
    )
    connect_timeout: float = Field(
        5.0, gt=0,
        description="Seconds to wait for a connection to be established on each call.",
    )
    read_timeout: float = Field(60.0, gt=0, description="Seconds to wait for a response on each call.")
    retry: RetrySettings = Field(
        default_factory=RetrySettings,
        description="In-call retries of transient failures (connection errors, timeouts, 429, 5xx), with exponential "
                    "backoff or the vendor's Retry-After.",
    )
    action_poll_interval: float = Field(
        ACTION_POLL_SECONDS, ge=0,
        description="Seconds between polls of a long-running action's status URL (202 while running, 204 when done).",
    )
    action_timeout: float = Field(
        ACTION_TIMEOUT_SECONDS, gt=0,
        description="Seconds to wait for a long-running action (e.g. ReleaseBill) to finish before giving up.",
    )
    # The datetimeoffset'...' literal is unconfirmed; "plain" sends a bare ISO timestamp instead.
    filter_literal: Literal["datetimeoffset", "plain"] = Field(
        "datetimeoffset",
        description="How change-window timestamps are written in $filter: datetimeoffset sends datetimeoffset'...'; "
                    "plain sends a bare ISO timestamp.",
    )
    change_fields: dict[str, str | None] = Field(
        default_factory=dict,
        description="Per-entity override of the change-detection field, e.g. {\"bills\": \"LastModifiedDateTime\"}; null "
                    "reads that entity whole on every poll.",
    )
    max_sessions: int | None = Field(
        None, ge=1,
        description="Fleet-wide cap on concurrent Acumatica sessions (operations signed in at once), shared across "
                    "workers through Redis; set it to the licence's API users. Unset: no cap.",
    )
    session_wait: float = Field(
        30.0, gt=0,
        description="Seconds a worker waits for a free session slot before its record is retried later.",
    )
    check_entities: tuple[str, ...] = Field(
        ("customers", "vendors", "invoices", "payments", "bills", "accounts", "subaccounts"),
        description="Entities `mlconnector check` reads one record of after signing in.",
    )

    @field_validator("base_url", "token_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("endpoint_version")
    @classmethod
    def _version_shape(cls, value: str) -> str:
        if not re.fullmatch(r"\d+\.\d+\.\d+", value):
            raise ValueError("endpoint_version looks like 23.200.001")
        return value

    @property
    def token_endpoint(self) -> str:
        return self.token_url or f"{self.base_url}/identity/connect/token"

    @property
    def entity_base(self) -> str:
        return f"{self.base_url}/entity/{self.endpoint_name}/{self.endpoint_version}"


class AcumaticaCredentials(SettingsModel):
    """A connected application (client id `GUID@Tenant` + secret) and the API user it acts as."""

    client_id: str = Field(
        "",
        description="Connected application client ID in GUID@Tenant form (OAuth mode); unused in cookie mode.",
    )
    client_secret: SecretStr = Field(
        SecretStr(""),
        description="Connected application secret (OAuth mode); unused in cookie mode.",
    )
    username: str = Field(description="API user the connector signs in as (OAuth password grant or cookie sign-in).")
    password: SecretStr = Field(description="Password of the API user.")


# ---- models -------------------------------------------------------------------------------------


class AcumaticaRecord(VendorModel):
    """Envelope every top-level entity carries besides its fields."""

    id: str | None = None
    note: str | None = None
    custom: dict[str, Any] = Field(default_factory=dict)
    files: list[dict[str, Any]] = Field(default_factory=list)
    links: dict[str, Any] | None = Field(default=None, alias="_links")


class Address(VendorModel):
    AddressLine1: str | None = None
    AddressLine2: str | None = None
    City: str | None = None
    State: str | None = None
    PostalCode: str | None = None
    Country: str | None = None


_Address = Address  # the Contact field below shares the class's name


class Contact(VendorModel):
    id: str | None = None
    DisplayName: str | None = None
    CompanyName: str | None = None
    Attention: str | None = None
    FirstName: str | None = None
    LastName: str | None = None
    Email: str | None = None
    Phone1: str | None = None
    Phone2: str | None = None
    Address: _Address | None = None


class Vendor(AcumaticaRecord):
    VendorID: str | None = None
    VendorName: str | None = None
    LegalName: str | None = None
    VendorClass: str | None = None
    Status: str | None = None
    Terms: str | None = None
    CurrencyID: str | None = None
    PaymentMethod: str | None = None
    CashAccount: str | None = None
    APAccount: str | None = None
    APSubaccount: str | None = None
    TaxRegistrationID: str | None = None
    F1099Vendor: bool | None = None
    MainContact: Contact | None = None
    RemittanceContact: Contact | None = None
    CreatedDateTime: datetime | None = None
    LastModifiedDateTime: datetime | None = None


class Customer(AcumaticaRecord):
    CustomerID: str | None = None
    CustomerName: str | None = None
    CustomerClass: str | None = None
    Status: str | None = None
    Terms: str | None = None
    CurrencyID: str | None = None
    CreditLimit: Decimal | None = None
    Email: str | None = None
    MainContact: Contact | None = None
    BillingContact: Contact | None = None
    CreatedDateTime: datetime | None = None
    LastModifiedDateTime: datetime | None = None


class BillDetail(VendorModel):
    id: str | None = None
    InventoryID: str | None = None
    TransactionDescription: str | None = None
    Qty: Decimal | None = None
    UOM: str | None = None
    UnitCost: Decimal | None = None
    ExtendedCost: Decimal | None = None
    Amount: Decimal | None = None
    Account: str | None = None
    Subaccount: str | None = None
    Branch: str | None = None
    Project: str | None = None
    ProjectTask: str | None = None
    CostCode: str | None = None
    POOrderType: str | None = None
    POOrderNbr: str | None = None
    POLine: int | None = None
    POReceiptNbr: str | None = None


class Bill(AcumaticaRecord):
    Type: str | None = None
    ReferenceNbr: str | None = None
    Status: str | None = None
    Hold: bool | None = None
    Vendor: str | None = None
    VendorRef: str | None = None
    Date: datetime | None = None
    DueDate: datetime | None = None
    PostPeriod: str | None = None
    Terms: str | None = None
    CurrencyID: str | None = None
    Amount: Decimal | None = None
    Balance: Decimal | None = None
    TaxTotal: Decimal | None = None
    BranchID: str | None = None
    Description: str | None = None
    LastModifiedDateTime: datetime | None = None
    Details: list[BillDetail] = Field(default_factory=list)


class InvoiceDetail(VendorModel):
    id: str | None = None
    InventoryID: str | None = None
    TransactionDescription: str | None = None
    Qty: Decimal | None = None
    UOM: str | None = None
    UnitPrice: Decimal | None = None
    ExtendedPrice: Decimal | None = None
    DiscountAmount: Decimal | None = None
    Amount: Decimal | None = None
    Account: str | None = None
    Subaccount: str | None = None
    Branch: str | None = None


class Invoice(AcumaticaRecord):
    Type: str | None = None
    ReferenceNbr: str | None = None
    Customer: str | None = None
    CustomerOrder: str | None = None
    Status: str | None = None
    Hold: bool | None = None
    Date: datetime | None = None
    DueDate: datetime | None = None
    PostPeriod: str | None = None
    Terms: str | None = None
    Amount: Decimal | None = None
    Balance: Decimal | None = None
    TaxTotal: Decimal | None = None
    Description: str | None = None
    LinkBranch: str | None = None
    CreatedDateTime: datetime | None = None
    LastModifiedDateTime: datetime | None = None
    Details: list[InvoiceDetail] = Field(default_factory=list)


class PaymentDetail(VendorModel):
    id: str | None = None
    DocType: str | None = None
    ReferenceNbr: str | None = None
    AmountPaid: Decimal | None = None
    CashDiscountTaken: Decimal | None = None
    Balance: Decimal | None = None
    CustomerOrder: str | None = None
    Description: str | None = None


class Payment(AcumaticaRecord):
    Type: str | None = None
    ReferenceNbr: str | None = None
    CustomerID: str | None = None
    PaymentMethod: str | None = None
    CashAccount: str | None = None
    PaymentRef: str | None = None
    PaymentAmount: Decimal | None = None
    AvailableBalance: Decimal | None = None
    ApplicationDate: datetime | None = None
    Status: str | None = None
    Hold: bool | None = None
    Description: str | None = None
    ExternalRef: str | None = None
    BranchID: str | None = None
    LastModifiedDateTime: datetime | None = None
    DocumentsToApply: list[PaymentDetail] = Field(default_factory=list)


class Account(AcumaticaRecord):
    AccountCD: str | None = None
    AccountID: int | None = None
    Description: str | None = None
    Type: str | None = None
    AccountClass: str | None = None
    Active: bool | None = None
    CashAccount: bool | None = None
    CurrencyID: str | None = None
    LastModifiedDateTime: datetime | None = None


class Subaccount(AcumaticaRecord):
    SubaccountCD: str | None = None
    SubaccountID: int | None = None
    Description: str | None = None
    Active: bool | None = None
    Secured: bool | None = None


class StockItem(AcumaticaRecord):
    InventoryID: str | None = None
    Description: str | None = None
    ItemClass: str | None = None
    ItemStatus: str | None = None
    BaseUOM: str | None = None
    DefaultPrice: Decimal | None = None
    LastModified: datetime | None = None


# ---- entity declarations ----------------------------------------------------------------------


@dataclass(frozen=True)
class AcumaticaEntity(EntitySpec[ModelT]):
    """An Acumatica entity: the key fields that address a record in the URL, what to
    `$expand`, its release action."""

    keys: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    release_action: str | None = None
    default_type: str | None = None  # documents are keyed by Type + ReferenceNbr


def _entity(name: str, path: str, change_field: str | None, model: type[ModelT], keys: tuple[str, ...],
            *also_found_by: tuple[str, ...], **options: Any) -> AcumaticaEntity[ModelT]:
    """The key fields are the first external key; `also_found_by` names the others."""
    return AcumaticaEntity(name, path, "id", change_field, model, external_keys=(keys, *also_found_by), keys=keys,
                           **options)


ENTITIES: dict[str, AcumaticaEntity[Any]] = {
    spec.name: spec
    for spec in (
        _entity("vendors", "Vendor", "LastModifiedDateTime", Vendor, ("VendorID",), expand=("MainContact/Address",)),
        _entity("customers", "Customer", "LastModifiedDateTime", Customer, ("CustomerID",),
                expand=("MainContact/Address",)),
        # A bill is found again by the vendor's own invoice number (VendorRef).
        _entity("bills", "Bill", "LastModifiedDateTime", Bill, ("Type", "ReferenceNbr"), ("Vendor", "VendorRef"),
                expand=("Details",), release_action="ReleaseBill", default_type="Bill"),
        # An AR invoice is found again by the source document number it carries (CustomerOrder).
        _entity("invoices", "Invoice", "LastModifiedDateTime", Invoice, ("Type", "ReferenceNbr"),
                ("Type", "CustomerOrder"), expand=("Details",), release_action="ReleaseInvoice",
                default_type="Invoice"),
        # A payment is found again by the external reference it was written with.
        _entity("payments", "Payment", "LastModifiedDateTime", Payment, ("Type", "ReferenceNbr"), ("ExternalRef",),
                expand=("DocumentsToApply",), release_action="ReleasePayment", default_type="Payment"),
        _entity("accounts", "Account", "LastModifiedDateTime", Account, ("AccountCD",)),
        # The Default endpoint's Subaccount carries no change field: each poll reads it whole.
        _entity("subaccounts", "Subaccount", None, Subaccount, ("SubaccountCD",)),
        # (Round 2) No `branches`: the Default contract has no top-level Branch (a real instance
        # answers 404). A branch is the `branch` setting, sent as PX-CbApiBranch and at sign-in,
        # and carried in the documents' BranchID / LinkBranch / Branch fields, which the instance
        # checks on save (an unknown branch is refused there and at sign-in).
        _entity("stock_items", "StockItem", "LastModified", StockItem, ("InventoryID",)),
    )
}


class PreconditionFailedError(FatalError):
    """An insert-only PUT found the record, or an update-only PUT did not."""


# ---- value objects ----------------------------------------------------------------------------


def _is_value_object(obj: Any) -> bool:
    return isinstance(obj, Mapping) and set(obj) <= {"value", "error"}


_VALUE_KEYS = {"value", "error"}.issuperset
_PASS_THROUGH = frozenset({"custom", "_links", "files"})


def unwrap(obj: Any) -> Any:
    """Acumatica's `{"Field": {"value": x}}` shape -> `{"Field": x}`, recursively.

    Plain `dict`/`list` checks only: this runs for every field of every record read."""
    kind = type(obj)
    if kind is dict:
        if len(obj) <= 2 and _VALUE_KEYS(obj):
            return obj.get("value")
        return {k: (v if k in _PASS_THROUGH else unwrap(v)) for k, v in obj.items()}
    if kind is list:
        return [unwrap(item) for item in obj]
    return obj


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.isoformat()
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00+00:00"
    if isinstance(value, SecretStr):
        raise TypeError("a secret cannot be sent as an entity field")
    return value


def to_value_objects(fields: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """Plain field values (or a model) -> value objects; details and linked entities recurse."""
    if isinstance(fields, BaseModel):
        fields = fields.model_dump(by_alias=True, exclude_none=True)
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in _SPECIAL_KEYS:
            out[name] = value
        elif isinstance(value, BaseModel):
            out[name] = to_value_objects(value)
        elif isinstance(value, Mapping):
            out[name] = dict(value) if _is_value_object(value) else to_value_objects(value)
        elif isinstance(value, (list, tuple)):
            out[name] = [to_value_objects(row) if isinstance(row, (Mapping, BaseModel)) else row for row in value]
        else:
            out[name] = {"value": _json_value(value)}
    return out


def replace_detail_rows(existing: Sequence[Any], new_rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Detail rows for a PUT that swaps the lines: Acumatica appends rows without an id, so
    the old rows must be deleted by id in the same call."""
    deletions = []
    for row in existing:
        row_id = row.get("id") if isinstance(row, Mapping) else getattr(row, "id", None)
        if row_id:
            deletions.append({"id": row_id, "delete": True})
    return deletions + [dict(row) for row in new_rows]


def odata_literal(value: Any) -> str:
    """A `$filter` literal: quoted strings with '' escaping, bare numbers and booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# ---- errors -------------------------------------------------------------------------------------


def _field_errors(obj: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(obj, dict):
        for name, value in obj.items():
            if name in ("custom", "_links", "files"):
                continue
            if _is_value_object(value):
                if value.get("error"):
                    yield f"{prefix}{name}: {value['error']}"
            elif isinstance(value, dict):
                yield from _field_errors(value, f"{prefix}{name}.")
            elif isinstance(value, list):
                for number, row in enumerate(value, 1):
                    if isinstance(row, dict):
                        if row.get("error"):
                            yield f"{prefix}{name}[{row.get('rowNumber', number)}]: {row['error']}"
                        yield from _field_errors(row, f"{prefix}{name}[{row.get('rowNumber', number)}].")


def _exception_text(body: dict[str, Any]) -> str:
    parts, seen = [], set()
    node: Any = body
    while isinstance(node, dict):
        text = node.get("exceptionMessage") or node.get("message")
        if isinstance(text, str) and text and text not in seen and text != "An error has occurred.":
            parts.append(text)
            seen.add(text)
        node = node.get("innerException")
    return " -> ".join(parts) or str(body.get("message") or "")


def acumatica_error(response: requests.Response) -> tuple[str, Any]:
    """The vendor's own message: exceptionMessage, field-level errors, OAuth errors or HTML text."""
    try:
        body = response.json()
    except ValueError:
        text = _TAGS.sub(" ", response.text or "")
        return " ".join(text.split())[:MAX_ERROR_TEXT] or (response.reason or ""), None
    if not isinstance(body, dict):
        return str(body)[:MAX_ERROR_TEXT], body
    if isinstance(body.get("error"), str) and set(body) <= {"error", "error_description", "error_uri"}:
        description = body.get("error_description")
        return (f"{body['error']}: {description}" if description else body["error"]), body
    if "exceptionMessage" in body or ("message" in body and "id" not in body):
        details = {k: body.get(k) for k in ("message", "exceptionMessage", "exceptionType") if body.get(k)}
        return _exception_text(body)[:MAX_ERROR_TEXT], details
    field_errors = list(_field_errors(body))
    entity_error = body.get("error") if isinstance(body.get("error"), str) else ""
    message = " ".join(p for p in (entity_error, "; ".join(field_errors)) if p)
    return (message or str(body)[:MAX_ERROR_TEXT])[:MAX_ERROR_TEXT], {"error": entity_error, "field_errors": field_errors}


# ---- authentication ---------------------------------------------------------------------------


def oauth_settings(config: AcumaticaConfig) -> OAuth2Settings:
    """Resource-owner password grant for the API user, renewed with the refresh token until it is spent."""
    return OAuth2Settings(token_url=config.token_endpoint, grant="password", scope=config.scope,
                          default_ttl=config.token_ttl, timeout=(config.connect_timeout, config.read_timeout),
                          error_extractor=acumatica_error)


def login_limit_as_wait(error: ConnectorError) -> ConnectorError:
    """A sign-in refused for the licence's API-user limit means too many sessions now: a wait,
    retried like a rate limit (after LOGIN_LIMIT_WAIT_SECONDS, even for a write, which was never
    sent), whatever status it came with (a real instance answers it with a 500, not a 429)."""
    if LOGIN_LIMIT_TEXT.casefold() not in (error.message or "").casefold() or getattr(error, "login_limit", False):
        return error
    text = " ".join((error.message or "").split())  # one line, whatever the vendor's text
    wait = RetriableError(f"too many sessions now: {text} (waiting for a session to end)",
                          retry_after=LOGIN_LIMIT_WAIT_SECONDS, vendor=VENDOR, status=error.status,
                          endpoint=error.endpoint)
    wait.not_acted_on = True  # type: ignore[attr-defined]
    wait.login_limit = True  # type: ignore[attr-defined]
    return wait


class CookieSessionAuth(Auth):
    """`/entity/auth/login` once; the cookies live in the connector's own session."""

    def __init__(self, client: HttpClient, body: dict[str, Any]) -> None:
        self._client = client
        self._body = body
        self._lock = threading.RLock()
        self.signed_in = False

    def headers(self, session: requests.Session) -> dict[str, str]:
        with self._lock:
            if not self.signed_in:
                try:
                    self._client.request("POST", "/entity/auth/login", json=self._body, ok_statuses={200, 204},
                                         endpoint="entity/auth/login")
                except ConnectorError as error:
                    raise login_limit_as_wait(error) from None
                self.signed_in = True
        return {}

    def refresh(self, session: requests.Session, sent_headers: dict[str, str]) -> bool:
        with self._lock:
            self.signed_in = False
            session.cookies.clear()
        return True

    def logout(self) -> None:
        with self._lock:
            if not self.signed_in:
                return
            try:
                self._client.request("POST", "/entity/auth/logout", ok_statuses={200, 204},
                                     endpoint="entity/auth/logout")
            finally:
                self.signed_in = False
                self._client.session.cookies.clear()


# ---- the connector ------------------------------------------------------------------------------


class AcumaticaConnector(Connector):
    """Reads, finds, writes and releases Acumatica records for the integration engine."""

    system: ClassVar[str] = VENDOR
    Config: ClassVar[type[BaseModel]] = AcumaticaConfig
    Credentials: ClassVar[type[BaseModel]] = AcumaticaCredentials
    entities: dict[str, AcumaticaEntity[Any]]

    def __init__(self, config: AcumaticaConfig, credentials: AcumaticaCredentials, runtime: HttpRuntime) -> None:
        self.config = config
        self._credentials = credentials
        register_secret(credentials.password.get_secret_value())
        register_secret(credentials.client_secret.get_secret_value())
        timeout = (config.connect_timeout, config.read_timeout)
        retry = config.retry.policy()
        headers = {"Accept": "application/json"}
        if config.branch:
            headers["PX-CbApiBranch"] = config.branch
        # Per deployment, an entity's change field may be overridden (`change_fields`).
        self.entities = {name: replace(spec, change_field=config.change_fields.get(name, spec.change_field))
                         for name, spec in ENTITIES.items()}
        self._provider: OAuth2Provider | None = None
        self._cookie: CookieSessionAuth | None = None
        self._sign_in_client: HttpClient | None = None
        auth: Auth
        if config.auth_mode == "cookie":
            # One sign-in is one API user: this connector owns its session and cookies.
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=SESSION_POOL_SIZE)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._sign_in_client = HttpClient(
                vendor=VENDOR, base_url=config.base_url, auth=NoAuth(), session=session, timeout=timeout,
                retry=retry, default_headers={"Accept": "application/json"}, error_extractor=acumatica_error)
            body = {"name": credentials.username, "password": credentials.password.get_secret_value(),
                    "tenant": config.tenant or None, "branch": config.branch}
            self._cookie = CookieSessionAuth(self._sign_in_client, {k: v for k, v in body.items() if v})
            auth = self._cookie
        else:
            if not credentials.client_id or not credentials.client_secret.get_secret_value():
                raise ValueError("OAuth needs client_id (GUID@Tenant) and client_secret")
            self._provider = OAuth2Provider(VENDOR, oauth_settings(config), client_id=credentials.client_id,
                                            client_secret=credentials.client_secret.get_secret_value(),
                                            username=credentials.username,
                                            password=credentials.password.get_secret_value())
            auth = TokenAuth(self._provider, runtime.token_cache)
            session = runtime.session(VENDOR)
        self.http = HttpClient(
            vendor=VENDOR,
            base_url=config.entity_base,
            auth=auth,
            session=session,
            rate_limiter=runtime.rate_limiter,
            rate_limit=RateLimit(config.requests_per_minute, 60) if config.requests_per_minute else None,
            rate_key=f"{VENDOR}:{urlsplit(config.base_url).netloc}",  # the license is per instance
            timeout=timeout,
            retry=retry,
            default_headers=headers,
            error_extractor=acumatica_error,
        )
        self._auth = auth
        self._scope_lock = threading.Lock()
        self._scope_depth = 0
        self._slots = runtime.slots
        self._slot_name = f"{VENDOR}:{urlsplit(config.base_url).netloc}"  # the licence is per instance

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "AcumaticaConnector":
        return cls(AcumaticaConfig.model_validate(config), AcumaticaCredentials.model_validate(credentials), runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        creds = info["credentials"]
        config = {
            "base_url": info["api_base"],
            "token_url": info.get("token_url"),
            "tenant": creds.get("tenant", ""),
            "endpoint_version": creds.get("endpoint_version", DEFAULT_VERSION),
        }
        credentials = {k: creds[k] for k in ("client_id", "client_secret", "username", "password") if k in creds}
        return config, credentials

    @property
    def call_count(self) -> int:
        total = self.http.calls
        if self._sign_in_client is not None:
            total += self._sign_in_client.calls
        if self._provider is not None:
            total += self._provider.calls
        return total

    # ---- sessions ---------------------------------------------------------------------------------

    @contextmanager
    def _session_scope(self) -> Iterator[None]:
        """The outermost operation holds one of the fleet's session slots (`max_sessions`)
        and, in cookie mode, signs out when it ends, whatever happened."""
        with self._scope_lock:
            self._scope_depth += 1
            first = self._scope_depth == 1
        with ExitStack() as stack:
            try:
                if first and self.config.max_sessions:
                    stack.enter_context(self._slots.hold(self._slot_name, self.config.max_sessions,
                                                         wait=self.config.session_wait, vendor=VENDOR))
                yield
            except ConnectorError as error:  # a bearer token refused for the API-user limit, too
                waited = login_limit_as_wait(error)
                if waited is error:
                    raise
                raise waited from None
            finally:
                with self._scope_lock:
                    self._scope_depth -= 1
                    last = self._scope_depth == 0
                if last and self._cookie is not None:
                    try:
                        self._cookie.logout()
                    except Exception:  # the session times out on its own; never mask the caller's error
                        pass

    def close(self) -> None:
        """Sign out of a cookie session still open (OAuth tokens stay cached for the fleet)."""
        if self._cookie is not None:
            self._cookie.logout()

    def __enter__(self) -> "AcumaticaConnector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers ------------------------------------------------------------------------------------

    def spec(self, entity: str) -> AcumaticaEntity[Any]:
        return super().spec(entity)  # type: ignore[return-value]

    def change_field(self, entity: str) -> str | None:
        return self.spec(entity).change_field

    def _model(self, spec: AcumaticaEntity[Any], row: Any) -> Any:
        if not isinstance(row, dict):
            raise FatalError(f"{spec.path} answered {type(row).__name__}, not an entity", vendor=VENDOR)
        return spec.model.model_validate(unwrap(row))

    def _literal(self, moment: datetime) -> str:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        text = aware.astimezone(timezone.utc).isoformat(timespec="milliseconds")
        return f"datetimeoffset'{text}'" if self.config.filter_literal == "datetimeoffset" else text

    @staticmethod
    def _key_values(spec: AcumaticaEntity[Any], ident: Any) -> list[str]:
        """Key values in order from a tuple, a mapping or one value (documents default their Type)."""
        if isinstance(ident, Mapping):
            values = [ident.get(k) or (spec.default_type if k == "Type" else None) for k in spec.keys]
        elif isinstance(ident, (tuple, list)):
            values = list(ident)
        elif len(spec.keys) == 2 and spec.default_type:
            values = [spec.default_type, ident]
        else:
            values = [ident]
        if len(values) != len(spec.keys) or any(v in (None, "") for v in values):
            raise ValueError(f"{spec.path} is addressed by {', '.join(spec.keys)} or by id; got {ident!r}")
        return [str(v) for v in values]

    @classmethod
    def _address(cls, spec: AcumaticaEntity[Any], ident: Any) -> str:
        """The URL tail of one record: `{guid}` or the key values (`Bill/Bill/000123`).

        A key value holding `/` cannot be addressed this way (Round 2 vendor facts): callers
        look such a record up by filter (`find`) and address it by its id."""
        if isinstance(ident, str) and _GUID.match(ident):
            return ident
        values = cls._key_values(spec, ident)
        if any("/" in value for value in values):
            raise ValueError(f"{spec.path} key {values!r} holds '/': address the record by its id")
        return "/".join(quote(v, safe="") for v in values)

    @staticmethod
    def _stamp(record: BaseModel, field: str) -> datetime | None:
        value = getattr(record, field, None)
        if value is None and record.model_extra:
            value = record.model_extra.get(field)
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                return None
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value if isinstance(value, datetime) else None

    @staticmethod
    def _list_params(spec: AcumaticaEntity[Any], filter: str | None = None, expand: Sequence[str] | None = None,
                     select: Sequence[str] | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if filter:
            params["$filter"] = filter
        expand = spec.expand if expand is None else expand
        if expand:
            params["$expand"] = ",".join(expand)
        if select:
            params["$select"] = ",".join(select)
        return params

    # ---- hooks the base reads are built on -------------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """`$top`/`$skip` until a short page. A change window needs no step back here: its
        server filter has no upper bound, so changed rows move past the end, never out."""
        return OffsetPaging("$top", "$skip", self.config.page_size)

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        with self._session_scope():
            yield from super().pages(spec, params, stable=stable)

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        rows = self.http.get_json(spec.path, params=request, endpoint=f"GET {spec.path}")
        if not isinstance(rows, list):
            raise FatalError(f"{spec.path} list answered {type(rows).__name__}, not an array", vendor=VENDOR)
        return Page(rows)

    def parse_rows(self, spec: EntitySpec[Any], rows: Sequence[Any]) -> list[BaseModel]:
        return [self._model(self.spec(spec.name), row) for row in rows]

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        """`ge since` only: with `lt until` as well, a record changed while the pages are read
        would leave the result and shift every later `$skip`, skipping a record. The cap is
        applied in `in_window` instead; what it drops, the next poll reads. Entities without
        a change field are read whole on every poll."""
        field = spec.change_field
        query = f"{field} ge {self._literal(since)}" if field and since is not None else None
        return self._list_params(self.spec(spec.name), query)

    def in_window(self, spec: EntitySpec[Any], record: BaseModel, since: datetime | None, until: datetime) -> bool:
        if not spec.change_field:
            return True
        stamp = self._stamp(record, spec.change_field)
        return stamp is None or stamp < (until if until.tzinfo else until.replace(tzinfo=timezone.utc))

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        query = " and ".join(f"{field} eq {odata_literal(value)}" for field, value in key.items())
        return self._list_params(self.spec(spec.name), query)

    # ---- reads --------------------------------------------------------------------------------------

    def iter_records(self, entity: str, *, filter: str | None = None, expand: Sequence[str] | None = None,
                     select: Sequence[str] | None = None, page_size: int | None = None) -> Iterator[Any]:
        """Every record matching `filter`, one page in memory at a time (`$top`/`$skip`)."""
        spec = self.spec(entity)
        paging = OffsetPaging("$top", "$skip", page_size or self.config.page_size)
        with self._session_scope():
            for page in paging.pages(lambda request: self.fetch_page(spec, request),
                                     self._list_params(spec, filter, expand, select)):
                yield from self.parse_rows(spec, page.rows)

    def get(self, entity: str, ident: Any, *, expand: Sequence[str] | None = None) -> Any:
        """One record by id (GUID) or key values; NotFoundError when there is none."""
        spec = self.spec(entity)
        if not (isinstance(ident, str) and _GUID.match(ident)):
            values = self._key_values(spec, ident)
            if any("/" in value for value in values):
                found = self.find(entity, **dict(zip(spec.keys, values)))
                if found is None:
                    raise NotFoundError(f"{spec.path} {'/'.join(values)} not found", vendor=VENDOR, status=404,
                                        endpoint=f"GET {spec.path}")
                return found if expand is None else self.get(entity, found.id, expand=expand)
        params = self._list_params(spec, expand=expand)
        with self._session_scope():
            row = self.http.get_json(f"{spec.path}/{self._address(spec, ident)}", params=params or None,
                                     endpoint=f"GET {spec.path}/key")
        return self._model(spec, row)

    def _first(self, entity: str, query: str) -> Any | None:
        """The first record a filter selects: for look-ups by a name, which names no record alone."""
        spec = self.spec(entity)
        params = {**self._list_params(spec, query), "$top": 1}
        with self._session_scope():
            rows = self.http.get_json(spec.path, params=params, endpoint=f"GET {spec.path}")
        if not isinstance(rows, list):
            raise FatalError(f"{spec.path} list answered {type(rows).__name__}, not an array", vendor=VENDOR)
        return self._model(spec, rows[0]) if rows else None

    def iter_dated(self, entity: str, field: str, start: date, end: date, where: str | None = None) -> Iterator[Any]:
        """Records whose document date `field` (Date, ApplicationDate) is on or after `start` and
        before `end` (UTC days), `$top`/`$skip` pages; `where` adds a condition (a document type)."""
        low, high = (self._literal(datetime.combine(d, datetime.min.time(), tzinfo=timezone.utc)) for d in (start, end))
        query = f"{field} ge {low} and {field} lt {high}" + (f" and {where}" if where else "")
        yield from self.iter_records(entity, filter=query)

    # ---- idempotency lookups ------------------------------------------------------------------------

    def find_bill(self, vendor_id: str, vendor_ref: str, *, bill_type: str | None = None) -> Bill | None:
        """The AP bill a vendor's invoice number already produced, if any."""
        narrow = {"Type": bill_type} if bill_type else {}
        return cast("Bill | None", self.find("bills", Vendor=vendor_id, VendorRef=vendor_ref, **narrow))

    def find_invoice(self, customer_order: str | None = None, *, reference_nbr: str | None = None,
                     customer_id: str | None = None, invoice_type: str = "Invoice") -> Invoice | None:
        """An AR invoice by its reference number, or by the external order / invoice number it carries."""
        if reference_nbr:
            return cast("Invoice | None", self.find("invoices", Type=invoice_type, ReferenceNbr=reference_nbr))
        if not customer_order:
            raise ValueError("find_invoice needs customer_order or reference_nbr")
        narrow = {"Customer": customer_id} if customer_id else {}
        return cast("Invoice | None", self.find("invoices", Type=invoice_type, CustomerOrder=customer_order, **narrow))

    def find_customer(self, customer_id: str | None = None, *, name: str | None = None) -> Customer | None:
        """A customer by id, else the first by exact name (Acumatica compares without regard to case)."""
        if customer_id:
            return cast("Customer | None", self.find("customers", CustomerID=customer_id))
        if not name:
            raise ValueError("find_customer needs customer_id or name")
        return self._first("customers", f"CustomerName eq {odata_literal(name.strip())}")

    def find_vendor(self, vendor_id: str | None = None, *, name: str | None = None,
                    tax_id: str | None = None) -> Vendor | None:
        """A vendor by id, else the first by tax registration id or exact name."""
        if vendor_id:
            return cast("Vendor | None", self.find("vendors", VendorID=vendor_id))
        if tax_id:
            return self._first("vendors", f"TaxRegistrationID eq {odata_literal(tax_id)}")
        if not name:
            raise ValueError("find_vendor needs vendor_id, tax_id or name")
        return self._first("vendors", f"VendorName eq {odata_literal(name.strip())}")

    def find_payment(self, external_ref: str | None = None, *, payment_ref: str | None = None,
                     customer_id: str | None = None, payment_type: str = "Payment") -> Payment | None:
        """A payment by the external reference it was written with, else the first by customer + payment ref."""
        narrow = {"CustomerID": customer_id} if customer_id else {}
        if external_ref:
            return cast("Payment | None", self.find("payments", ExternalRef=external_ref, Type=payment_type, **narrow))
        if not payment_ref:
            raise ValueError("find_payment needs external_ref or payment_ref")
        query = f"PaymentRef eq {odata_literal(payment_ref)} and Type eq {odata_literal(payment_type)}"
        if customer_id:
            query += f" and CustomerID eq {odata_literal(customer_id)}"
        return self._first("payments", query)

    # ---- writes -------------------------------------------------------------------------------------

    def put(self, entity: str, fields: Mapping[str, Any] | BaseModel, *,
            mode: Literal["upsert", "insert", "update"] = "upsert", expand: Sequence[str] | None = None) -> Any:
        """Save one record: upsert by id or key fields; `insert`/`update` make the other case a
        PreconditionFailedError. Plain values become value objects; returns the saved record."""
        spec = self.spec(entity)
        headers = {"If-None-Match": "*"} if mode == "insert" else {"If-Match": "*"} if mode == "update" else {}
        expand = spec.expand if expand is None else expand
        params = {"$expand": ",".join(expand)} if expand else None
        try:
            with self._session_scope():
                row = self.http.send_json("PUT", spec.path, to_value_objects(fields), params=params,
                                          headers=headers, endpoint=f"PUT {spec.path}")
        except FatalError as exc:
            if exc.status == 412:
                raise PreconditionFailedError(f"{spec.path} {mode} refused: {exc.message}", vendor=VENDOR,
                                              status=exc.status, details=exc.details, endpoint=exc.endpoint) from None
            raise
        return self._model(spec, row)

    def delete(self, entity: str, ident: Any) -> None:
        spec = self.spec(entity)
        with self._session_scope():
            self.http.request("DELETE", f"{spec.path}/{self._address(spec, ident)}", endpoint=f"DELETE {spec.path}")

    def release(self, entity: str, ident: Any, *, parameters: Mapping[str, Any] | None = None) -> None:
        """Run the entity's release action and wait until the server reports it done (204)."""
        spec = self.spec(entity)
        if not spec.release_action:
            raise ValueError(f"{spec.path} has no release action")
        if isinstance(ident, str) and _GUID.match(ident):
            target: dict[str, Any] = {"id": ident}
        else:
            target = {k: {"value": v} for k, v in zip(spec.keys, self._key_values(spec, ident))}
        body = {"entity": target, "parameters": to_value_objects(parameters or {})}
        label = f"{spec.path}/{spec.release_action}"
        with self._session_scope():
            response = self.http.request("POST", label, json=body, ok_statuses={200, 202, 204}, endpoint=f"POST {label}")
            location = response.headers.get("Location")
            if response.status_code != 202 or not location:
                return
            status_url = urljoin(self.config.base_url + "/", location)
            deadline = time.monotonic() + self.config.action_timeout
            while True:
                status = self.http.request("GET", status_url, ok_statuses={200, 202, 204},
                                           endpoint=f"GET {label}/status").status_code
                if status != 202:
                    return
                if time.monotonic() >= deadline:
                    raise RetriableError(f"{label} still running after {self.config.action_timeout:.0f}s",
                                         vendor=VENDOR, endpoint=label)
                time.sleep(self.config.action_poll_interval)

    # ---- check ----------------------------------------------------------------------------------------

    def _sign_in(self) -> str:
        if self._cookie is not None:
            self._cookie.headers(self.http.session)
            return "cookie session opened"
        assert isinstance(self._auth, TokenAuth)
        token = self._auth.cache.get(self._auth.provider, self.http.session)
        return f"token valid for {max(0, int(token.expires_at - time.time()))}s"

    def _probe(self, spec: AcumaticaEntity[Any]) -> str:
        rows = self.http.get_json(spec.path, params={"$top": 1, "$select": ",".join(spec.keys)},
                                  endpoint=f"GET {spec.path}")
        if not isinstance(rows, list):
            raise FatalError(f"{spec.path} list answered {type(rows).__name__}, not an array", vendor=VENDOR)
        return f"{spec.path}: {len(rows)} record(s) readable"

    def _endpoint_published(self) -> str:
        """The instance's own list of endpoints (GET /entity) names the one the config uses:
        an instance upgraded or customised may not publish it."""
        answer = self.http.get_json(urljoin(self.config.base_url + "/", "entity"), endpoint="GET /entity") or {}
        published = [f"{e.get('name')}/{e.get('version')}" for e in answer.get("endpoints") or [] if isinstance(e, dict)]
        wanted = f"{self.config.endpoint_name}/{self.config.endpoint_version}"
        if wanted not in published:
            raise FatalError(f"the instance does not publish endpoint {wanted}; it publishes {', '.join(published) or 'none'}",
                             vendor=VENDOR)
        return f"{wanted} published (of {len(published)})"

    def check(self) -> list[CheckStep]:
        """Sign in, the endpoint version published, then one cheap authenticated read per entity
        the integration uses."""
        with self._session_scope():
            steps = [timed_check("sign in", self._sign_in)]
            if steps[0].ok:
                steps.append(timed_check("endpoint version", self._endpoint_published))
            for name in self.config.check_entities:
                spec = self.spec(name)
                if not steps[0].ok:
                    steps.append(CheckStep(f"read {name}", False, 0.0, "skipped: sign-in failed"))
                    continue
                steps.append(timed_check(f"read {name}", lambda spec=spec: self._probe(spec)))
        return steps


__all__ = [
    "Account", "AcumaticaConfig", "AcumaticaConnector", "AcumaticaCredentials", "AcumaticaEntity",
    "AcumaticaRecord", "Address", "Bill", "BillDetail", "Contact",
    "CookieSessionAuth", "Customer", "ENTITIES", "Invoice", "InvoiceDetail", "Payment", "PaymentDetail",
    "PreconditionFailedError", "StockItem", "Subaccount", "Vendor", "acumatica_error",
    "oauth_settings", "odata_literal", "replace_detail_rows", "to_value_objects", "unwrap",
]
