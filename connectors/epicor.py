"""Epicor Kinetic REST API v2: OData reads, business-object method writes.

One `HttpClient` under `/{instance}/api/v2/odata/{company}` carries auth (a TokenResource
bearer token shared by the fleet through the token cache, or Basic), the `x-api-key` every
v2 call needs, timeouts, backoff and Epicor's error body. Entities are declared once in
`ENTITIES`: path, key fields, change field, expanded children and model.

Change detection (per entity, overridable with `Config.change_fields`):

- `ChangeDate` where Epicor has it (APInvHed, POHeader): `ChangeDate ge since and
  ChangeDate lt until`, ordered by ChangeDate then the keys, paged by keyset (the next page
  starts after the last row seen) so a row that changes mid-scan cannot shift an unseen row
  past the page boundary, which `$skip` paging allows. `change_paging="skip"` pages by
  `$top`/`$skip` instead.
- `SysRevID` everywhere else (Vendor, GLAccount, CheckHed, APInvGrp). It is a database-wide
  row version, not a time, so a datetime watermark cannot be compared with it. Each poll
  first notes "at time m the highest SysRevID was R" (one `$top=1` read); every later write
  gets a higher SysRevID. A poll whose `since` is later than such a note (plus a clock-skew
  margin) reads only `SysRevID gt R`, a superset of what changed since `since`. Without a
  usable note (first polls, another worker process) it reads every row, and the engine's
  key + version dedupe (`version_of`: the SysRevID) drops what it already has.
  `iter_changed_since_rev` serves callers that keep their own SysRevID cursor.

Writes follow Epicor's screen logic: AP invoices through their invoice group
(`GetNewAPInvHedInvoice`, `Change*` defaulting, `UpdateMaster`, lines one by one, then
`UnlockGroup`), AP payments through Payment Entry, vendors through OData. Every declared
input of a method is sent (Kinetic's method schemas; a missing one is a 400), and an
`UpdateMaster` that answers 200 with `lUpdateRan` false or `requiresUserInput` true saved
nothing: it is a refusal with `opMessage` as its reason. Epicor is not known to answer 409
on a duplicate key (business-rule refusals are 400 BLException), so a write whose answer was
lost or refused is followed by a look-up by key, never by a wait for a 409.
`ensure_ap_invoice` makes an AP invoice whole whatever an earlier delivery left behind.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Callable, ClassVar, Iterator, Literal, Mapping, Sequence, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import requests
import structlog
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    Auth,
    BasicAuth,
    ConnectorError,
    FatalError,
    HttpClient,
    HttpRuntime,
    KeysetPaging,
    NotFoundError,
    OAuth2Provider,
    OAuth2Settings,
    OffsetPaging,
    Page,
    Paginator,
    RateLimit,
    RetriableError,
    RetrySettings,
    StepBackOnShrink,
    Token,
    TokenAuth,
)
from mlconnector.http.client import MAX_ERROR_TEXT
from mlconnector.http.errors import classify_response
from mlconnector.redaction import register_secret

log = structlog.get_logger(__name__)

DEFAULT_TOP = 100  # rows Epicor answers when $top is absent [C1]; whether a larger $top is honoured is not known
PAGE_SIZE = DEFAULT_TOP  # the default page size: the one size known to be served whole
MAX_PAGE_SIZE = 1000  # a bound on one answer's size for deployments known to honour a larger $top
DEFAULT_TOKEN_TTL = 3600  # unconfirmed: "about an hour", admin-configurable; ExpiresIn wins
READ_TIMEOUT = 60.0  # one production client's choice: heavy BO reads are slow
REV_MARKS_KEPT = 64  # SysRevID marks remembered per entity; older watermarks fall back to a full scan
# A SysRevID mark is trusted only this long after it was taken: covers clock skew between
# workers and writes that commit a little after they took their SysRevID.
REV_MARK_SKEW = 30.0
INVOICE_SERVICE = "Erp.BO.APInvoiceSvc"
GROUP_SERVICE = "Erp.BO.APInvGrpSvc"
PAYMENT_SERVICE = "Erp.BO.PaymentEntrySvc"
PAYMENT_GROUP_SERVICE = "Erp.BO.APChkGrpSvc"
VENDOR_SERVICE = "Erp.BO.VendorSvc"
TOKEN_ENDPOINT = "TokenResource.svc"
AFTER = "after"  # the keyset paginator's request key, turned into a $filter before it is sent
NOT_FOUND_TYPES = ("RecordNotFoundException",)  # ErrorType of "no such record" (vs unknown service)
RECALC_AMOUNTS = ""  # ChangeInvoiceDateEx `recalcAmts`, a string whose values are undocumented: none asked
# UpdateMaster's checks, run as the screen runs them; prompts suppressed since no person is there.
UPDATE_MASTER_CHECKS = {"runChkCPay": True, "runChkBankRef": True, "runChkRevChrg": True, "suppressUserPrompts": True}
UPDATE_MASTER_MESSAGES = ("opMessage", "opMsgChkBankRef", "opChkRevMsg", "opDUAMsg")  # what it may say
QUANTITY_PLACES = Decimal("0.00001")  # the finest precision Epicor keeps on quantities and unit costs
CENT = Decimal("0.01")
# A line given quantity, unit cost and extended cost: Epicor derives the extended cost from the
# other two and may round the half cent the other way.
EXT_COST_ROUNDING = Decimal("0.01")


# ---- configuration -------------------------------------------------------------------------

GROUP_CHECK_SECONDS = 300.0  # a group seen usable is not looked up again for this long
VENDOR_ID_CACHE_SECONDS = 600.0  # VendorNum -> VendorID remembered; every use is verified


class EpicorConfig(SettingsModel):
    """Everything a customer's Epicor deployment varies."""

    api_base: str = Field(..., description="Server URL with the instance, e.g. https://server/KineticLive")
    token_url: str = Field("", description="TokenResource URL; empty: {api_base}/TokenResource.svc/")
    company: str = Field(..., description="Epicor company ID every call is made in")
    instance: str = Field("", description="Instance name, informational: api_base already carries it")
    auth_mode: Literal["token", "basic"] = Field(
        "token", description="token: bearer token from TokenResource; basic: user and password on every call")
    token_ttl: int = Field(DEFAULT_TOKEN_TTL, ge=1,
                           description="Seconds a token is trusted when TokenResource does not say (ExpiresIn)")
    token_request_style: Literal["form", "basic", "headers"] = Field(
        "form", description="How TokenResource gets the user: password-grant form, Basic auth, or headers")
    page_size: int = Field(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="$top asked per OData page")
    rate_limit_per_second: float | None = Field(
        None, gt=0, description="Calls per second to stay under; empty: no limit (Epicor publishes none)")
    timeout: float = Field(READ_TIMEOUT, description="Seconds to wait for an answer")
    connect_timeout: float = Field(5.0, description="Seconds to wait for a connection")
    retry: RetrySettings = Field(default_factory=RetrySettings,
                                 description="Backoff for retriable failures (429, 5xx, timeouts)")
    default_group_id: str = Field("MLAP", description="AP invoice group used when a caller names none")
    payment_group_id: str = Field("MLPAY", description="AP payment (check) group payments are written in")
    payment_bank_account: str = Field("", description="BankAcctID of a payment group the connector creates")
    unlock_group_after_write: bool = Field(True, description="Release the invoice group's entry lock after a write")
    group_check_seconds: float = Field(
        GROUP_CHECK_SECONDS, ge=0,
        description="Seconds a group seen usable is not looked up again; 0: look it up before every invoice")
    vendor_id_cache_seconds: float = Field(
        VENDOR_ID_CACHE_SECONDS, ge=0,
        description="Seconds a VendorNum's VendorID is remembered; 0: read it for every invoice")
    remove_partial_invoice: bool = Field(
        True, description="Delete a header whose lines failed, so a replay starts clean")
    # ChangeVendorID / ChangeRefPONum `confirmCheck`: an unattended write cannot answer a
    # confirmation, and what Epicor asks when it is true is not documented.
    confirm_check: bool = Field(False, description="confirmCheck sent to ChangeVendorID and ChangeRefPONum")
    open_invoices_require_posted: bool = Field(
        True, description="Offer only posted invoices for payment (unconfirmed: Payment Entry pays posted ones)")
    change_fields: dict[str, Literal["ChangeDate", "SysRevID"]] = Field(
        default_factory=dict, description="Per entity, the field changes are read by, overriding the default")
    change_paging: Literal["keyset", "skip"] = Field(
        "keyset", description="Change scans page after the last row read (keyset) or by $top/$skip")
    rev_mark_skew_seconds: float = Field(
        REV_MARK_SKEW, ge=0, description="Seconds a SysRevID mark must predate a watermark to be trusted")
    filter_datetime_style: Literal["iso", "datetime", "quoted"] = Field(
        "iso", description="How a datetime is spelt in $filter (unconfirmed per server version)")
    server_timezone: str = Field("UTC", description="The app server's zone, in which zone-less timestamps are read")
    plant: str | None = Field(None, description="Site sent as CallSettings {Company, Plant}; empty: none")
    license_type: str | None = Field(None, description="License {ClaimedLicense} to claim a seat type; empty: none")

    @field_validator("api_base", "token_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/") if value else value


class EpicorCredentials(SettingsModel):
    """The integration user Epicor knows, and the API key every v2 call carries."""

    username: str = Field(..., description="Epicor user the integration signs in as")
    password: SecretStr = Field(..., description="That user's password")
    api_key: SecretStr = Field(..., description="API key (x-api-key) sent with every REST v2 call")


# ---- models -----------------------------------------------------------------------------------

def _to_date(value: Any) -> Any:
    if isinstance(value, str):
        return value[:10] if value else None
    if isinstance(value, datetime):
        return value.date()
    return value


def _to_datetime(value: Any) -> Any:
    return None if value == "" else value


EpicorDate = Annotated[date | None, BeforeValidator(_to_date)]
EpicorTimestamp = Annotated[datetime | None, BeforeValidator(_to_datetime)]
Money = Decimal


class EpicorModel(VendorModel):
    """Epicor rows: zone-less ChangeDate values are read in the server's time zone."""

    @model_validator(mode="after")
    def _zone(self, info: ValidationInfo) -> "EpicorModel":
        value = getattr(self, "ChangeDate", None)
        if isinstance(value, datetime) and value.tzinfo is None:
            zone = (info.context or {}).get("tz", timezone.utc)
            object.__setattr__(self, "ChangeDate", value.replace(tzinfo=zone).astimezone(timezone.utc))
        return self


class EpicorVendorBank(EpicorModel):
    """One of a vendor's bank accounts (VendBank): where its payments go."""

    VendorNum: int = 0
    BankID: str = ""
    BankName: str = ""
    NameOnAccount: str = ""
    BankAcctNumber: str = ""
    BankIdentifier: str = ""
    SwiftNum: str = ""
    IBANCode: str = ""
    CurrencyCode: str = ""
    PrimaryBank: bool = False
    Inactive: bool = False
    SysRevID: int = 0


class EpicorVendor(EpicorModel):
    Company: str = ""
    VendorNum: int
    VendorID: str
    Name: str = ""
    Address1: str = ""
    Address2: str = ""
    Address3: str = ""
    City: str = ""
    State: str = ""
    ZIP: str = ""
    Country: str = ""
    PhoneNum: str = ""
    FaxNum: str = ""
    EMailAddress: str = ""
    TermsCode: str = ""
    CurrencyCode: str = ""
    GroupCode: str = ""
    Inactive: bool = False
    SysRevID: int = 0
    SysRowID: str = ""
    VendBanks: list[EpicorVendorBank] = Field(default_factory=list)  # read with get_vendor(..., with_banks=True)


class EpicorApInvoiceLine(EpicorModel):
    VendorNum: int = 0
    InvoiceNum: str = ""
    InvoiceLine: int
    LineType: str = ""
    PartNum: str = ""
    Description: str = ""
    VendorQty: Decimal = Decimal(0)
    UnitCost: Decimal = Decimal(0)
    ExtCost: Money = Decimal(0)
    DocExtCost: Money = Decimal(0)
    PONum: int = 0
    POLine: int = 0
    GLAccount: str = ""  # Epicor's internal form, segments joined by "|"
    SysRevID: int = 0
    SysRowID: str = ""


class EpicorApInvoice(EpicorModel):
    VendorNum: int
    VendorNumVendorID: str = ""
    VendorNumName: str = ""
    InvoiceNum: str
    GroupID: str = ""
    InvoiceDate: EpicorDate = None
    DueDate: EpicorDate = None
    ApplyDate: EpicorDate = None
    InvoiceAmt: Money = Decimal(0)
    DocInvoiceAmt: Money = Decimal(0)
    InvoiceVendorAmt: Money = Decimal(0)
    InvoiceBal: Money = Decimal(0)
    DocInvoiceBal: Money = Decimal(0)
    OpenPayable: bool = True
    Posted: bool = False
    DebitMemo: bool = False
    REFPONum: int = 0
    TermsCode: str = ""
    CurrencyCode: str = ""
    Description: str = ""
    ChangedBy: str = ""
    ChangeDate: EpicorTimestamp = None
    SysRevID: int = 0
    SysRowID: str = ""
    lines: list[EpicorApInvoiceLine] = Field(default_factory=list,
                                             validation_alias=AliasChoices("APInvDtls", "APInvDtl", "lines"))


class EpicorPurchaseOrderLine(EpicorModel):
    PONUM: int = 0  # Epicor's own casing on PODetail
    POLine: int
    PartNum: str = ""
    VenPartNum: str = ""
    LineDesc: str = ""
    OrderQty: Decimal = Decimal(0)
    IUM: str = ""
    PUM: str = ""
    UnitCost: Decimal = Decimal(0)
    DocUnitCost: Decimal = Decimal(0)
    ExtCost: Money = Decimal(0)
    DocExtCost: Money = Decimal(0)
    DueDate: EpicorDate = None
    VendorNum: int = 0
    OpenLine: bool = True
    VoidLine: bool = False
    ClassID: str = ""
    SysRevID: int = 0


class EpicorPurchaseOrder(EpicorModel):
    PONum: int
    VendorNum: int = 0
    VendorVendorID: str = ""
    VendorName: str = ""
    OrderDate: EpicorDate = None
    DueDate: EpicorDate = None
    PromiseDate: EpicorDate = None
    BuyerID: str = ""
    ShipViaCode: str = ""
    TermsCode: str = ""
    OpenOrder: bool = True
    VoidOrder: bool = False
    OrderHeld: bool = False
    Approve: bool = False
    ApprovalStatus: str = ""
    CurrencyCode: str = ""
    TotalOrder: Money = Decimal(0)
    DocTotalOrder: Money = Decimal(0)
    EntryPerson: str = ""
    CommentText: str = ""
    ChangedBy: str = ""
    ChangeDate: EpicorTimestamp = None
    SysRevID: int = 0
    lines: list[EpicorPurchaseOrderLine] = Field(default_factory=list,
                                                 validation_alias=AliasChoices("PODetails", "PODetail", "lines"))


class EpicorGlAccount(EpicorModel):
    COACode: str = ""
    GLAccount1: str  # the account string, segments joined by "|"
    GLAcctDisp: str = ""
    AccountDesc: str = ""
    SegValue1: str = ""
    SegValue2: str = ""
    SegValue3: str = ""
    Active: bool = True
    EffFrom: EpicorDate = None
    EffTo: EpicorDate = None
    ParentGLAccount: str = ""
    SysRevID: int = 0

    @property
    def segments(self) -> list[str]:
        """Non-empty segment values in order (natural account, then e.g. cost center)."""
        return [s for s in self.GLAccount1.split("|") if s]


class EpicorApInvoiceGroup(EpicorModel):
    GroupID: str
    ActiveUserID: str = ""  # who holds the group's entry lock ("" = free)
    ApplyDate: EpicorDate = None
    FiscalYear: int = 0
    FiscalPeriod: int = 0
    SysRevID: int = 0


class EpicorApPaymentLine(EpicorModel):
    HeadNum: int = 0
    APTranNo: int = 0
    InvoiceNum: str = ""
    VendorNum: int = 0
    TranDate: EpicorDate = None
    TranAmt: Money = Decimal(0)
    DocTranAmt: Money = Decimal(0)
    SysRevID: int = 0


class EpicorApPayment(EpicorModel):
    HeadNum: int
    GroupID: str = ""
    VendorNum: int = 0
    VendorNumVendorID: str = ""
    Name: str = ""
    CheckNum: int = 0
    CheckDate: EpicorDate = None
    CheckAmt: Money = Decimal(0)
    DocCheckAmt: Money = Decimal(0)
    CurrencyCode: str = ""
    BankAcctID: str = ""
    Posted: bool = False
    Voided: bool = False
    XRefCheckNum: str = ""  # the external payment reference
    SysRevID: int = 0
    SysRowID: str = ""
    lines: list[EpicorApPaymentLine] = Field(default_factory=list,
                                             validation_alias=AliasChoices("APTrans", "APTran", "lines"))


# ---- AP invoice comparison -----------------------------------------------------------------------

InvoiceAction = Literal["created", "completed", "corrected", "unchanged"]


class WantedInvoiceLine(BaseModel):
    """An invoice line as the caller wants it. A field left out is Epicor's to default and
    is not compared."""

    model_config = ConfigDict(extra="ignore")

    InvoiceLine: int | None = None
    Description: str | None = None
    VendorQty: Decimal | None = None
    UnitCost: Decimal | None = None
    ExtCost: Decimal | None = None
    GLAccount: str | None = None


@dataclass(frozen=True)
class InvoiceDifferences:
    """How a stored AP invoice differs from the wanted one; false when they are equal."""

    vendor: tuple[int, int] | None = None  # (stored, wanted)
    amount: tuple[Decimal, Decimal] | None = None  # (stored, wanted) InvoiceVendorAmt
    changed: dict[int, dict[str, tuple[str, str]]] = field(default_factory=dict)  # line -> field -> (stored, wanted)
    missing: tuple[int, ...] = ()  # wanted lines Epicor does not have
    extra: tuple[int, ...] = ()  # Epicor lines not wanted

    def __bool__(self) -> bool:
        return bool(self.vendor or self.amount or self.changed or self.missing or self.extra)

    @property
    def only_missing_lines(self) -> bool:
        return bool(self.missing) and not (self.vendor or self.amount or self.changed or self.extra)

    def describe(self) -> str:
        parts = []
        if self.vendor:
            parts.append(f"supplier {self.vendor[0]} (wanted {self.vendor[1]})")
        if self.amount:
            parts.append(f"amount {self.amount[0]} (wanted {self.amount[1]})")
        for number, fields in self.changed.items():
            parts.extend(f"line {number} {name} {have!r} (wanted {want!r})" for name, (have, want) in fields.items())
        parts.extend(f"line {number} missing" for number in self.missing)
        parts.extend(f"line {number} not wanted" for number in self.extra)
        return "; ".join(parts)


def wanted_invoice_lines(lines: list[dict[str, Any]]) -> list[tuple[int, WantedInvoiceLine]]:
    """Each line with its number: its InvoiceLine, or its place in the list (Epicor numbers
    new lines 1, 2, ... in the order they are added)."""
    numbered = []
    for position, line in enumerate(lines, start=1):
        want = WantedInvoiceLine.model_validate(line)
        numbered.append((want.InvoiceLine or position, want))
    numbers = [number for number, _ in numbered]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"invoice lines need distinct numbers, got {numbers}")
    return numbered


def compare_ap_invoice(stored: EpicorApInvoice, vendor_num: int, amount: Decimal,
                       wanted: list[tuple[int, WantedInvoiceLine]]) -> InvoiceDifferences:
    """Vendor, amount (InvoiceVendorAmt) and lines matched by number; amounts to the cent,
    quantities and unit costs to Epicor's precision, GL accounts by their segments."""
    have = {line.InvoiceLine: line for line in stored.lines}
    changed = {}
    for number, want in wanted:
        line = have.get(number)
        fields = _line_differences(line, want) if line is not None else {}
        if fields:
            changed[number] = fields
    wanted_numbers = {number for number, _ in wanted}
    return InvoiceDifferences(
        vendor=(stored.VendorNum, int(vendor_num)) if stored.VendorNum != int(vendor_num) else None,
        amount=None if _cents(stored.InvoiceVendorAmt) == _cents(amount) else (
            _cents(stored.InvoiceVendorAmt), _cents(amount)),
        changed=changed,
        missing=tuple(number for number, _ in wanted if number not in have),
        extra=tuple(sorted(number for number in have if number not in wanted_numbers)),
    )


def _line_differences(line: EpicorApInvoiceLine, want: WantedInvoiceLine) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    if want.Description is not None and line.Description.strip() != want.Description.strip():
        out["Description"] = (line.Description, want.Description)
    for name in ("VendorQty", "UnitCost"):
        value = getattr(want, name)
        if value is not None and _fine(getattr(line, name)) != _fine(value):
            out[name] = (str(_fine(getattr(line, name)).normalize()), str(_fine(value).normalize()))
    if want.ExtCost is not None:
        derived = want.VendorQty is not None and want.UnitCost is not None
        if abs(_cents(line.ExtCost) - _cents(want.ExtCost)) > (EXT_COST_ROUNDING if derived else 0):
            out["ExtCost"] = (str(_cents(line.ExtCost)), str(_cents(want.ExtCost)))
    if want.GLAccount is not None and _gl_segments(line.GLAccount) != _gl_segments(want.GLAccount):
        out["GLAccount"] = (line.GLAccount, want.GLAccount)
    return out


def _cents(value: Decimal) -> Decimal:
    return Decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)


def _fine(value: Decimal) -> Decimal:
    return Decimal(value).quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP)


def _gl_segments(account: str) -> tuple[str, ...]:
    """`6500|100` (Epicor's stored form) and `6500-100` (a display form) name one account."""
    return tuple(part.casefold() for part in re.split(r"[^0-9A-Za-z]+", account or "") if part)


# ---- entities ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class EpicorEntity(EntitySpec[Any]):
    """An OData entity set: `keys` in URL order after Company, `expand` its child set."""

    keys: tuple[str, ...] = ()
    expand: str | None = None


ENTITIES: dict[str, EpicorEntity] = {
    "vendors": EpicorEntity("vendors", f"{VENDOR_SERVICE}/Vendors", "VendorNum", "SysRevID",
                            EpicorVendor, external_keys=(("VendorID",),), keys=("VendorNum",)),
    "ap_invoices": EpicorEntity("ap_invoices", f"{INVOICE_SERVICE}/APInvoices", "InvoiceNum", "ChangeDate",
                                EpicorApInvoice, external_keys=(("VendorNum", "InvoiceNum"),),
                                keys=("VendorNum", "InvoiceNum"), expand="APInvDtls"),
    "purchase_orders": EpicorEntity("purchase_orders", "Erp.BO.POSvc/POes", "PONum", "ChangeDate",
                                    EpicorPurchaseOrder, keys=("PONum",), expand="PODetails"),
    "gl_accounts": EpicorEntity("gl_accounts", "Erp.BO.GLAccountSvc/GLAccounts", "GLAccount1", "SysRevID",
                                EpicorGlAccount, external_keys=(("COACode", "GLAccount1"),),
                                keys=("COACode", "GLAccount1")),
    "ap_payments": EpicorEntity("ap_payments", f"{PAYMENT_SERVICE}/PaymentEntries", "HeadNum", "SysRevID",
                                EpicorApPayment, external_keys=(("VendorNum", "XRefCheckNum"),),
                                keys=("HeadNum",), expand="APTrans"),
    "ap_invoice_groups": EpicorEntity("ap_invoice_groups", f"{GROUP_SERVICE}/APInvGrps", "GroupID", "SysRevID",
                                      EpicorApInvoiceGroup, keys=("GroupID",)),
}


# ---- wire helpers ---------------------------------------------------------------------------

def epicor_error(response: requests.Response) -> tuple[str, Any]:
    """Epicor's own message (`ErrorMessage`, plus distinct `ErrorDetails` messages)."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "")[:MAX_ERROR_TEXT], None
    if not isinstance(body, dict):
        return str(body)[:MAX_ERROR_TEXT], body
    message = str(body.get("ErrorMessage") or body.get("Message") or body.get("message") or "")
    extra = []
    for detail in body.get("ErrorDetails") or []:
        text = str((detail or {}).get("Message") or "")
        if text and text not in message and text not in extra:
            extra.append(text)
    if extra:
        message = "; ".join([message, *extra]) if message else "; ".join(extra)
    details = {k: body.get(k) for k in ("HttpStatus", "ReasonPhrase", "ErrorType", "ErrorDetails", "CorrelationId")
               if k in body}
    return (message or response.reason or "")[:MAX_ERROR_TEXT], details


def odata_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def odata_key(company: str, values: tuple[Any, ...]) -> str:
    parts = [odata_string(company)] + [odata_string(v) if isinstance(v, str) else str(int(v)) for v in values]
    return "(" + ",".join(quote(p, safe="'-_.~") for p in parts) + ")"


def epicor_json_default(value: Any) -> Any:
    """For the JSON encoder: what `jsonable` does, for the values json cannot spell itself."""
    if isinstance(value, (Decimal, datetime, date)):
        return jsonable(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def jsonable(value: Any) -> Any:
    """Decimal amounts as JSON numbers, dates in Epicor's zone-less form."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(value, date):
        return f"{value.isoformat()}T00:00:00"
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _pending(ds: dict[str, Any], table: str) -> dict[str, Any]:
    """The row a screen would be editing: the last one marked added or updated."""
    rows = [r for r in ds.get(table) or [] if r.get("RowMod") in ("A", "U")]
    if not rows:
        raise FatalError(f"Epicor returned no {table} row being edited", vendor="epicor")
    return rows[-1]


# ---- auth ---------------------------------------------------------------------------------------

def oauth_settings(config: EpicorConfig) -> OAuth2Settings:
    """TokenResource.svc, asked with the integration user's password (the resource-owner grant)."""
    token_url = config.token_url or f"{config.api_base}/TokenResource.svc/"
    if not token_url.endswith(("/", ".svc/token")):
        token_url += "/"
    return OAuth2Settings(token_url=token_url, grant="password", default_ttl=config.token_ttl,
                          timeout=(config.connect_timeout, config.timeout), error_extractor=epicor_error)


class EpicorTokenProvider(OAuth2Provider):
    """The kit's provider for TokenResource.svc, whose token request is not RFC 6749's:
    its answer spells the token `AccessToken` / `ExpiresIn` / `TokenType`, there is no client
    id, secret or refresh token, the `x-api-key` must come with the request, and some
    deployments take the user as HTTP Basic or as `username`/`password` headers instead of a
    password-grant form (`token_request_style`). Only `fetch` and the cache key differ."""

    def __init__(self, config: EpicorConfig, credentials: EpicorCredentials) -> None:
        super().__init__("epicor", oauth_settings(config), client_id="", username=credentials.username,
                         password=credentials.password.get_secret_value(),
                         api_headers={"x-api-key": credentials.api_key.get_secret_value()})
        self.token_url = self.settings.token_url
        self.style = config.token_request_style

    @property
    def cache_key(self) -> str:
        """The token URL carries the instance: two instances on one host are two logins."""
        return f"{self.token_url}|{self.username}"

    def fetch(self, session: requests.Session, previous: Token | None) -> Token:
        headers = {**self.settings.token_headers, **self.extra_headers()}
        data: dict[str, str] | None = None
        if self.style == "form":
            data = {"grant_type": "password", "username": self.username, "password": self._password}
        elif self.style == "basic":
            headers.update(BasicAuth(self.username, self._password).headers(session))
        else:
            headers.update({"username": self.username, "password": self._password})
        try:
            response = self._token_client(session).request("POST", self.token_url, data=data, headers=headers,
                                                           endpoint=TOKEN_ENDPOINT)
        except RetriableError as error:
            error.not_acted_on = True  # type: ignore[attr-defined]  # the API call it was for never left
            raise
        try:
            body = response.json()
            access = str(body["AccessToken"])
        except (ValueError, KeyError, TypeError):
            raise FatalError("Epicor TokenResource answered without an AccessToken", vendor="epicor",
                             status=response.status_code, endpoint=TOKEN_ENDPOINT) from None
        ttl = float(body.get("ExpiresIn") or self.settings.default_ttl)
        return Token(access_token=access, expires_at=time.time() + ttl,
                     token_type=str(body.get("TokenType") or "Bearer"), lifetime=ttl)


# ---- the connector --------------------------------------------------------------------------

class EpicorConnector(Connector):
    """Epicor Kinetic: vendors, AP invoices (+ groups), POs, GL accounts, AP payments."""

    system: ClassVar[str] = "epicor"
    Config: ClassVar[type[BaseModel]] = EpicorConfig
    Credentials: ClassVar[type[BaseModel]] = EpicorCredentials
    entities: ClassVar[dict[str, EpicorEntity]] = ENTITIES

    _rev_marks: ClassVar[dict[tuple[str, str, str], list[tuple[float, int]]]] = {}
    _rev_marks_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, config: EpicorConfig, credentials: EpicorCredentials, runtime: HttpRuntime) -> None:
        self.config = config
        self.credentials = credentials
        self._groups_seen: dict[str, float] = {}  # GroupID -> monotonic time it was seen usable
        self._vendor_ids: dict[int, tuple[str, float]] = {}  # VendorNum -> (VendorID, monotonic time)
        register_secret(credentials.password.get_secret_value())
        register_secret(credentials.api_key.get_secret_value())
        self.tz = timezone.utc if config.server_timezone.upper() == "UTC" else ZoneInfo(config.server_timezone)
        rate_limit = self._rate_limit(config.rate_limit_per_second)
        client_kwargs: dict[str, Any] = {
            "rate_limiter": runtime.rate_limiter if rate_limit else None,
            "rate_limit": rate_limit,
            "rate_key": f"epicor:{config.api_base}|{config.company}",
            "timeout": (config.connect_timeout, config.timeout),
            "retry": config.retry.policy(),
            "error_extractor": epicor_error,
        }
        self.token_provider: EpicorTokenProvider | None = None
        self.token_cache = runtime.token_cache
        auth: Auth
        if config.auth_mode == "token":
            self.token_provider = EpicorTokenProvider(config, credentials)
            auth = TokenAuth(self.token_provider, runtime.token_cache)
        else:
            auth = BasicAuth(credentials.username, credentials.password.get_secret_value(),
                             {"x-api-key": credentials.api_key.get_secret_value()})
        headers = {"Accept": "application/json"}
        if config.plant:
            headers["CallSettings"] = json.dumps({"Company": config.company, "Plant": config.plant})
        if config.license_type:
            headers["License"] = json.dumps({"ClaimedLicense": config.license_type})
        self.client = HttpClient(vendor="epicor", base_url=f"{config.api_base}/api/v2/odata/{config.company}",
                                 auth=auth, session=runtime.session("epicor"), default_headers=headers,
                                 json_default=epicor_json_default, **client_kwargs)

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "EpicorConnector":
        return cls(EpicorConfig.model_validate(config), EpicorCredentials.model_validate(credentials), runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        creds = info["credentials"]
        config = {"api_base": info["api_base"], "token_url": info.get("token_url") or "",
                  "company": creds["company"], "instance": creds.get("instance", "")}
        return config, {"username": creds["username"], "password": creds["password"], "api_key": creds["api_key"]}

    @staticmethod
    def _rate_limit(per_second: float | None) -> RateLimit | None:
        if not per_second:
            return None
        if per_second >= 1:
            return RateLimit(int(per_second), 1)
        return RateLimit(max(1, int(per_second * 60)), 60)

    @property
    def call_count(self) -> int:
        return self.client.calls + (self.token_provider.calls if self.token_provider else 0)

    # ---- low-level calls --------------------------------------------------------------------

    def _get(self, path: str, params: Mapping[str, Any] | None = None, endpoint: str | None = None) -> Any:
        return self.client.get_json(path, params=dict(params or {}), endpoint=endpoint or path.split("(")[0])

    def _get_one(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """One entity by key; None when Epicor says the record does not exist."""
        response = self.client.request("GET", path, params=dict(params or {}), endpoint=path.split("(")[0],
                                       ok_statuses=(200, 404))
        if response.status_code == 404:
            message, details = epicor_error(response)
            if str((details or {}).get("ErrorType") or "").endswith(NOT_FOUND_TYPES):
                return None
            raise classify_response(404, message, vendor="epicor", endpoint=path.split("(")[0], details=details)
        return response.json()

    def _call(self, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A business-object method: POST its parameters, get `{returnObj, parameters}`."""
        path = f"{service}/{method}"
        return self.client.send_json("POST", path, body, endpoint=path) or {}

    def _ds(self, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
        return (self._call(service, method, body).get("parameters") or {}).get("ds") or {}

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Rows of an OData query, `$top`/`$skip` pages, one page in memory at a time."""
        return self._walk(path, self._offset_paging(), params)

    def _offset_paging(self) -> OffsetPaging:
        return OffsetPaging("$top", "$skip", self.config.page_size)

    def _keyset_paging(self, order: tuple[str, ...]) -> KeysetPaging:
        return KeysetPaging(order, self.config.page_size, size_param="$top", after_param=AFTER)

    def _walk(self, path: str, paging: Paginator, params: Mapping[str, Any],
              after: Callable[[dict[str, Any]], str] | None = None) -> Iterator[dict[str, Any]]:
        """The rows `paging` walks; a keyset position it asks for becomes the `$filter` that
        `after` spells from the last row's ordered values."""
        order = paging.order if isinstance(paging, KeysetPaging) else ()

        def fetch(request: dict[str, Any]) -> Page:
            sent = {k: v for k, v in request.items() if k != AFTER}
            if request.get(AFTER) is not None and after is not None:
                sent["$filter"] = after(dict(zip(order, request[AFTER])))
            return self._page(path, sent)

        for page in paging.pages(fetch, params):
            yield from page.rows

    def _page(self, path: str, params: Mapping[str, Any]) -> Page:
        """One OData answer; whether more follow is `_last_page`'s call, not the size asked."""
        body = self._get(path, params) or {}
        rows = body.get("value") or []
        total = body.get("@odata.count")
        return Page(rows, has_more=not self._last_page(rows), total=int(total) if total is not None else None)

    def _last_page(self, rows: list[dict[str, Any]]) -> bool:
        """A page shorter than asked ends the scan, unless it may be Epicor's own cap: when
        more than DEFAULT_TOP rows were asked, a page of DEFAULT_TOP or more is read past."""
        return len(rows) < min(self.config.page_size, DEFAULT_TOP)

    def _model(self, spec: EpicorEntity, row: dict[str, Any]) -> Any:
        data = {k: v for k, v in row.items() if not k.startswith("@odata.")}
        if spec.name == "vendors" and data.get("VendorNum") is not None and data.get("VendorID"):
            self._vendor_ids[int(data["VendorNum"])] = (str(data["VendorID"]), time.monotonic())
        return spec.model.model_validate(data, context={"tz": self.tz})

    def _spec(self, entity: str) -> EpicorEntity:
        try:
            return self.entities[entity]
        except KeyError:
            raise ValueError(f"epicor has no entity {entity!r}; known: {', '.join(sorted(self.entities))}") from None

    # ---- hooks the base `get` / `find` are built on ------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """`$top`/`$skip`; a walk over a change window steps back when `$count` shows it shrank.
        `iter_changed` is Epicor's own (SysRevID marks, keyset pages) and does not come here."""
        paging = self._offset_paging()
        keys = self._spec(spec.name).keys
        return StepBackOnShrink(paging, key=lambda row: tuple(row.get(k) for k in keys)) if stable else paging

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        return self._page(spec.path, request)

    def parse_rows(self, spec: EntitySpec[Any], rows: Sequence[Any]) -> list[BaseModel]:
        entity = self._spec(spec.name)
        return [self._model(entity, row) for row in rows]

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        entity = self._spec(spec.name)
        clauses = [f"{name} eq {self._value_literal(name, self._typed(entity, name, value))}"
                   for name, value in key.items()]
        params: dict[str, Any] = {"$filter": " and ".join(clauses), "$orderby": ",".join(entity.keys or (spec.key,))}
        if entity.expand:
            params["$expand"] = entity.expand
        return params

    def read_one(self, spec: EntitySpec[Any], key: Any) -> BaseModel:
        """By its OData key path when the record id is the whole key after Company; otherwise
        (an invoice number, a GL account string) the list filtered on it."""
        entity = self._spec(spec.name)
        if entity.keys != (entity.key,):
            return super().read_one(spec, key)
        path = f"{entity.path}{odata_key(self.config.company, (self._typed(entity, entity.key, key),))}"
        row = self._get_one(path, {"$expand": entity.expand} if entity.expand else None)
        if row is None:
            raise NotFoundError(f"{spec.name} {key} not found", vendor="epicor", status=404, endpoint=entity.path)
        return self._model(entity, row)

    @staticmethod
    def _typed(spec: EpicorEntity, name: str, value: Any) -> Any:
        """A key value as its model declares it: "42" for an integer key is the number 42."""
        declared = spec.model.model_fields.get(name)
        if declared is not None and declared.annotation is int and isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise ValueError(f"{spec.name} {name} is a number, got {value!r}") from None
        return value

    def _literal(self, moment: datetime) -> str:
        """A datetime as a $filter literal in the server's zone, millisecond precision (floored)."""
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        local = aware.astimezone(self.tz)
        text = local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond // 1000:03d}"
        style = self.config.filter_datetime_style
        if style == "datetime":
            return f"datetime'{text}'"
        if style == "quoted":
            return f"'{text}'"
        offset = local.utcoffset()
        if not offset:
            return text + "Z"
        minutes = int(offset.total_seconds() // 60)
        return text + f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"

    def _server_time(self, text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=self.tz)

    def _value_literal(self, name: str, value: Any) -> str:
        if name == "ChangeDate":
            return self._literal(self._server_time(value))
        if isinstance(value, str):
            return odata_string(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    # ---- change detection -----------------------------------------------------------------------

    def change_field(self, entity: str) -> str:
        spec = self._spec(entity)
        return self.config.change_fields.get(entity, spec.change_field or "SysRevID")

    def iter_changed(self, entity: str, since: datetime | None, until: datetime) -> Iterator[Any]:
        """Records of `entity` changed at or after `since`; capped at `until` for ChangeDate
        entities (SysRevID is not a time: see the module docstring)."""
        spec = self._spec(entity)
        if self.change_field(entity) == "ChangeDate":
            yield from self._iter_by_time(spec, since, until)
            return
        start = self._rev_mark(entity, since) if since is not None else None
        self._take_rev_mark(spec)
        yield from self.iter_changed_since_rev(entity, start)

    def iter_changed_since_rev(self, entity: str, since_rev: int | None) -> Iterator[Any]:
        """Records whose SysRevID is above `since_rev` (all when None), in SysRevID order."""
        spec = self._spec(entity)
        params: dict[str, Any] = {"$orderby": "SysRevID"}
        if spec.expand:
            params["$expand"] = spec.expand
        if self.config.change_paging == "skip":
            if since_rev:
                params["$filter"] = f"SysRevID gt {int(since_rev)}"
            for row in self._pages(spec.path, params):
                yield self._model(spec, row)
            return
        params["$filter"] = f"SysRevID gt {int(since_rev or 0)}"
        rows = self._walk(spec.path, self._keyset_paging(("SysRevID",)), params,
                          lambda last: f"SysRevID gt {int(last['SysRevID'])}")
        for row in rows:
            yield self._model(spec, row)

    def _iter_by_time(self, spec: EpicorEntity, since: datetime | None, until: datetime) -> Iterator[Any]:
        change = "ChangeDate"
        order = [change, *spec.keys]
        params: dict[str, Any] = {"$orderby": ",".join(order)}
        if spec.expand:
            params["$expand"] = spec.expand
        bounds = [f"{change} lt {self._literal(until)}"]
        if since is not None:
            bounds.insert(0, f"{change} ge {self._literal(since)}")
        params["$filter"] = " and ".join(bounds)
        if self.config.change_paging == "skip":
            # A row changed again mid-scan leaves the window and shifts every unread row back
            # one place: `$count` shows the shrink and the walk steps back over it.
            paging = StepBackOnShrink(self._offset_paging(), key=lambda row: tuple(row.get(k) for k in spec.keys))
            rows = self._walk(spec.path, paging, {**params, "$count": "true"})
        else:
            def after(last: dict[str, Any]) -> str:
                # The tighter lower bound first lets the server narrow before it evaluates the rest.
                return " and ".join([f"{change} ge {self._value_literal(change, last[change])}", bounds[-1],
                                     "(" + self._after(order, last) + ")"])

            rows = self._walk(spec.path, self._keyset_paging(tuple(order)), params, after)
        for row in rows:
            yield self._model(spec, row)

    def _after(self, order: list[str], row: dict[str, Any]) -> str:
        """Keyset condition: rows strictly after `row` in (order[0], order[1], ...) order."""
        name = order[0]
        literal = self._value_literal(name, row[name])
        if len(order) == 1:
            return f"{name} gt {literal}"
        return f"{name} gt {literal} or ({name} eq {literal} and ({self._after(order[1:], row)}))"

    def _mark_key(self, entity: str) -> tuple[str, str, str]:
        return (self.config.api_base, self.config.company.casefold(), entity)

    def _take_rev_mark(self, spec: EpicorEntity) -> None:
        """Note "by now the highest SysRevID is R": every later write gets a higher one.
        A fact about the table, not about one scan, so any poll of any flow may use it."""
        body = self._get(spec.path, {"$orderby": "SysRevID desc", "$top": 1, "$select": "SysRevID"})
        rows = (body or {}).get("value") or []
        highest = int(rows[0]["SysRevID"]) if rows else 0
        with self._rev_marks_lock:
            marks = self._rev_marks.setdefault(self._mark_key(spec.name), [])
            marks.append((time.time(), highest))
            marks.sort()
            del marks[:-REV_MARKS_KEPT]

    def _rev_mark(self, entity: str, since: datetime) -> int | None:
        """The highest SysRevID noted safely before `since` (clock skew allowed for), if any."""
        latest = since.timestamp() - self.config.rev_mark_skew_seconds
        with self._rev_marks_lock:
            usable = [rev for at, rev in self._rev_marks.get(self._mark_key(entity), []) if at <= latest]
        return max(usable) if usable else None

    @staticmethod
    def version_of(record: Any) -> str:
        """What changes whenever the row changes: its SysRevID."""
        return str(getattr(record, "SysRevID", "") or "")

    # ---- vendors ---------------------------------------------------------------------------------

    def _vendor_path(self, vendor_num: int) -> str:
        return f"{VENDOR_SERVICE}/Vendors{odata_key(self.config.company, (int(vendor_num),))}"

    def get_vendor(self, vendor_num: int, *, with_banks: bool = False) -> EpicorVendor | None:
        """One vendor; `with_banks` expands its bank accounts in the same call."""
        row = self._get_one(self._vendor_path(vendor_num), {"$expand": "VendBanks"} if with_banks else None)
        return self._model(ENTITIES["vendors"], row) if row else None

    def get_purchase_order(self, po_num: int, *, releases: bool = False) -> EpicorPurchaseOrder | None:
        """A PO with its lines and, when asked, its releases (PORels, the delivery schedule) in
        the same call; the releases stay in the model as `PORels` rows."""
        spec = ENTITIES["purchase_orders"]
        expand = f"{spec.expand},PORels" if releases else spec.expand
        row = self._get_one(f"{spec.path}{odata_key(self.config.company, (int(po_num),))}", {"$expand": expand})
        return self._model(spec, row) if row else None

    def find_vendors(self, *, vendor_id: str | None = None, name: str | None = None,
                     name_contains: str | None = None) -> list[EpicorVendor]:
        """Exact VendorID, exact name, or a name fragment (Epicor compares without case)."""
        clauses = []
        if vendor_id is not None:
            clauses.append(f"VendorID eq {odata_string(vendor_id)}")
        if name is not None:
            clauses.append(f"Name eq {odata_string(name)}")
        if name_contains is not None:
            clauses.append(f"contains(Name,{odata_string(name_contains)})")
        if not clauses:
            raise ValueError("find_vendors needs vendor_id, name or name_contains")
        spec = ENTITIES["vendors"]
        rows = self._pages(spec.path, {"$filter": " and ".join(clauses), "$orderby": "VendorNum"})
        return [self._model(spec, row) for row in rows]

    def iter_vendors(self) -> Iterator[EpicorVendor]:
        spec = ENTITIES["vendors"]
        for row in self._pages(spec.path, {"$orderby": "VendorNum"}):
            yield self._model(spec, row)

    def create_vendor(self, fields: dict[str, Any]) -> EpicorVendor:
        """OData POST (Epicor assigns VendorNum). When the answer is lost or the create is
        refused (a duplicate is a 409 or a 400, depending on the server), the VendorID is
        looked up: a vendor holding it under the same name is ours (a lost answer, or a
        twin worker) and is returned."""
        body = {k: v for k, v in fields.items() if k not in ("VendorNum", "SysRevID", "SysRowID", "RowMod")}
        body["Company"] = self.config.company
        try:
            row = self.client.send_json("POST", ENTITIES["vendors"].path, jsonable(body),
                                        endpoint=ENTITIES["vendors"].path)
        except (FatalError, RetriableError):
            if not fields.get("VendorID"):
                raise
            existing = _quietly(lambda: self.find_vendors(vendor_id=str(fields["VendorID"])))
            if existing and _same_name(existing[0].Name, str(fields.get("Name", ""))):
                return existing[0]
            raise
        return self._model(ENTITIES["vendors"], row)

    def update_vendor(self, vendor_num: int, fields: dict[str, Any]) -> EpicorVendor:
        body = {k: v for k, v in fields.items() if k not in ("VendorNum", "Company", "SysRevID", "SysRowID", "RowMod")}
        path = self._vendor_path(vendor_num)
        self.client.request("PATCH", path, json=jsonable(body), endpoint=ENTITIES["vendors"].path)
        vendor = self.get_vendor(vendor_num)
        if vendor is None:
            raise FatalError(f"Epicor supplier {vendor_num} vanished after its update", vendor="epicor")
        return vendor

    # ---- invoice groups ----------------------------------------------------------------------------

    def get_group(self, group_id: str) -> EpicorApInvoiceGroup | None:
        spec = ENTITIES["ap_invoice_groups"]
        body = self._get(spec.path, {"$filter": f"GroupID eq {odata_string(group_id)}", "$top": 1})
        rows = (body or {}).get("value") or []
        return self._model(spec, rows[0]) if rows else None

    def ensure_group(self, group_id: str) -> EpicorApInvoiceGroup:
        """Find the AP invoice group or create it. A create that is refused or whose answer is
        lost is followed by a second look: a racing creator, or our own create, made it."""
        group = self.get_group(group_id)
        if group is not None:
            return group
        spec = ENTITIES["ap_invoice_groups"]
        try:
            row = self.client.send_json("POST", spec.path, {"Company": self.config.company, "GroupID": group_id},
                                        endpoint=spec.path)
            return self._model(spec, row)
        except (FatalError, RetriableError):
            group = _quietly(lambda: self.get_group(group_id))
            if group is None:
                raise
            return group

    def unlock_group(self, group_id: str) -> None:
        """Release the group's entry lock (ActiveUserID)."""
        self._call(GROUP_SERVICE, "UnlockGroup", {"InGroupID": group_id})

    def iter_dated(self, entity: str, field: str, start: date, end: date, where: str | None = None) -> Iterator[Any]:
        """Records of `entity` whose date `field` (InvoiceDate, OrderDate, CheckDate) is on or
        after `start` and before `end`, in the server's zone, `$top`/`$skip` pages ordered by
        the entity's keys; `where` adds an OData condition (a group)."""
        spec = self._spec(entity)
        low, high = (self._literal(datetime.combine(d, datetime.min.time(), tzinfo=self.tz)) for d in (start, end))
        clauses = [f"{field} ge {low}", f"{field} lt {high}", *([f"({where})"] if where else [])]
        params: dict[str, Any] = {"$filter": " and ".join(clauses), "$orderby": ",".join(spec.keys or (spec.key,))}
        if spec.expand:
            params["$expand"] = spec.expand
        for row in self._pages(spec.path, params):
            yield self._model(spec, row)

    # ---- AP invoices --------------------------------------------------------------------------------

    def get_ap_invoice(self, vendor_num: int, invoice_num: str) -> EpicorApInvoice | None:
        """The invoice header with its lines, read whole from the business object
        (`GET .../GetByID?vendorNum=&invoiceNum=`); None when there is no such invoice."""
        ds = self._invoice_tableset(int(vendor_num), str(invoice_num))
        return self._invoice_from_ds(ds) if ds and ds.get("APInvHed") else None

    def find_ap_invoice(self, vendor_num: int, invoice_num: str) -> EpicorApInvoice | None:
        """The invoice this vendor + invoice number already made, with its lines."""
        return self.get_ap_invoice(vendor_num, invoice_num)

    def find_open_invoices(self, vendor_num: int, amount: Decimal | None = None) -> list[EpicorApInvoice]:
        """Unpaid invoices of a vendor, optionally those whose balance or total equals `amount`."""
        clauses = [f"VendorNum eq {int(vendor_num)}", "OpenPayable eq true", "InvoiceBal gt 0"]
        if self.config.open_invoices_require_posted:
            clauses.append("Posted eq true")
        if amount is not None:
            text = format(Decimal(amount).quantize(Decimal("0.01")), "f")
            clauses.append(f"(InvoiceBal eq {text} or InvoiceAmt eq {text})")
        spec = ENTITIES["ap_invoices"]
        rows = self._pages(spec.path, {"$filter": " and ".join(clauses), "$orderby": "InvoiceDate,InvoiceNum"})
        return [self._model(spec, row) for row in rows]

    def ensure_ap_invoice(self, group_id: str, header: dict[str, Any],
                          lines: list[dict[str, Any]]) -> tuple[EpicorApInvoice, InvoiceAction]:
        """The AP invoice as wanted, whatever an earlier delivery left behind.

        Looked up by VendorNum + InvoiceNum with its lines (GetByID). Absent: created
        (`created`). Present and equal in vendor, amount and lines (number, description,
        quantity, unit cost, extended cost, GL account): `unchanged`, nothing written. Present
        with only lines missing, as a worker stopped between the header and its lines leaves
        it: the lines are added (`completed`). Otherwise the amount and the differing lines
        are corrected and lines the wanted invoice does not have are deleted (`corrected`),
        all through the business object (GetByID tableset, RowMod "U"/"A"/"D", UpdateMaster).
        A posted invoice is never edited: a difference is a FatalError that names it.
        """
        invoice_num = str(header.get("InvoiceNum") or "").strip()
        if not invoice_num:
            raise ValueError("header needs InvoiceNum")
        wanted = wanted_invoice_lines(lines)
        amount = _invoice_amount(header, lines)
        vendor_num = self._invoice_vendor_num(header)
        ds = self._invoice_tableset(vendor_num, invoice_num)
        if ds is None or not ds.get("APInvHed"):
            return self.create_ap_invoice(group_id, header, lines), "created"
        stored = self._invoice_from_ds(ds)
        differences = compare_ap_invoice(stored, vendor_num, amount, wanted)
        if not differences:
            return stored, "unchanged"
        where = f"Epicor AP invoice {stored.InvoiceNum} of supplier {stored.VendorNum}"
        if stored.Posted or differences.vendor is not None:
            why = "is posted" if stored.Posted else "belongs to another supplier"
            raise FatalError(f"{where} {why} and differs from the invoice wanted: {differences.describe()}",
                             vendor="epicor", endpoint=f"{INVOICE_SERVICE}/GetByID",
                             details={"differences": differences.describe()})
        action: InvoiceAction = "completed" if differences.only_missing_lines else "corrected"
        invoice = self._invoice_from_ds(self._repair_invoice(ds, amount, wanted, lines, differences))
        left = compare_ap_invoice(invoice, vendor_num, amount, wanted)
        if left:
            raise FatalError(f"{where} still differs after it was {action}: {left.describe()}", vendor="epicor",
                             endpoint=f"{INVOICE_SERVICE}/UpdateMaster", details={"differences": left.describe()})
        log.info("epicor.ap_invoice_repaired", invoice=stored.InvoiceNum, vendor_num=stored.VendorNum,
                 action=action, differences=differences.describe())
        return invoice, action

    def create_ap_invoice(self, group_id: str, header: dict[str, Any], lines: list[dict[str, Any]]) -> EpicorApInvoice:
        """Epicor's invoice-entry pattern, end to end.

        Find or create the group; `GetNewAPInvHedInvoice` (locks the group to us);
        `ChangeVendorID` / `ChangeRefPONum`, `ChangeInvoiceDateEx`, `ChangeInvoiceVendorAmt`
        for defaulting; `UpdateMaster` saves the header; each line through
        `GetNewAPInvDtlMiscellaneous` (or `...Unreceived` + `ChangePONum`/`ChangePOLine` for a
        PO line), `ChangeVendorQty`/`ChangeUnitCost`/`ChangeExtCost`, `UpdateMaster`. The
        group is unlocked in `finally` once `GetNewAPInvHedInvoice` has locked it to us (never
        a group someone else holds), and a header whose lines failed is removed so a replay
        does not find half an invoice (a worker killed outright leaves it; `ensure_ap_invoice`
        completes it).

        Two lookups are remembered instead of repeated per invoice: a group seen usable
        (Epicor refuses `GetNewAPInvHedInvoice` on a missing or foreign-held group, and that
        refusal sends us back to the lookup), and a vendor's VendorID (the vendor Epicor puts
        on the header is checked against the VendorNum asked for, so a renumbered VendorID
        can never land an invoice on another vendor).
        """
        group_id = group_id or self.config.default_group_id
        invoice_num = str(header.get("InvoiceNum") or "").strip()
        if not invoice_num:
            raise ValueError("header needs InvoiceNum")
        wanted = wanted_invoice_lines(lines)
        vendor_id = str(header.get("VendorID") or header.get("VendorNumVendorID") or "")
        vendor_num = header.get("VendorNum")
        remembered_vendor_id = False
        if not vendor_id and not header.get("REFPONum"):
            if vendor_num is None:
                raise ValueError("header needs VendorNum, VendorID or REFPONum")
            vendor_id, remembered_vendor_id = self._vendor_id(int(vendor_num))
        locked = False
        saved: dict[str, Any] | None = None
        try:
            ds = self._new_invoice_header(group_id)
            locked = True
            if header.get("REFPONum"):
                ds = self._confirmed_change("ChangeRefPONum", {"ds": ds, "ProposedRefPONum": int(header["REFPONum"])})
            if vendor_id:
                ds = self._confirmed_change("ChangeVendorID", {"ds": ds, "ProposedVendorID": vendor_id})
                chosen = _pending(ds, "APInvHed").get("VendorNum")
                if vendor_num is not None and chosen is not None and int(chosen) != int(vendor_num):
                    self._vendor_ids.pop(int(vendor_num), None)
                    raise RetriableError(
                        f"Epicor VendorID {vendor_id} now belongs to supplier {chosen}, not {vendor_num}"
                        + ("; VendorID re-read on the next attempt" if remembered_vendor_id else ""),
                        vendor="epicor", endpoint="ChangeVendorID")
            _pending(ds, "APInvHed")["InvoiceNum"] = invoice_num
            invoice_date = header.get("InvoiceDate") or date.today()
            ds = self._ds(INVOICE_SERVICE, "ChangeInvoiceDateEx", {
                "ds": ds, "ProposedInvoiceDate": invoice_date, "recalcAmts": RECALC_AMOUNTS})
            ds = self._ds(INVOICE_SERVICE, "ChangeInvoiceVendorAmt", {
                "ds": ds, "ProposedInvoiceVendorAmt": _invoice_amount(header, lines)})
            row = _pending(ds, "APInvHed")
            for name, value in header.items():
                if name not in HEADER_CONSUMED:
                    row[name] = jsonable(value)
            saved = self._save_invoice(ds, group_id)
            for (number, _), line in zip(wanted, lines):
                saved = self._add_line(saved, group_id, line, number)
            return self._invoice_from_ds(saved)
        except Exception:
            if saved is not None and self.config.remove_partial_invoice:
                self._remove_partial(saved)
            raise
        finally:
            if locked and self.config.unlock_group_after_write:
                self._unlock_quietly(group_id)

    def _unlock_quietly(self, group_id: str) -> None:
        """UnlockGroup where a failure must not hide the outcome of the write before it."""
        try:
            self.unlock_group(group_id)
        except ConnectorError as error:
            log.warning("epicor.unlock_group_failed", group_id=group_id, error=str(error))

    def _confirmed_change(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """A `Change*` method that declares `confirmCheck`; a question it answers (`confirmMsg`)
        is logged, since no person is there to answer it."""
        answer = self._call(INVOICE_SERVICE, method, {**body, "confirmCheck": self.config.confirm_check})
        parameters = answer.get("parameters") or {}
        if parameters.get("confirmMsg"):
            log.warning("epicor.confirm_message", method=method, message=str(parameters["confirmMsg"]))
        return parameters.get("ds") or {}

    def _vendor_id(self, vendor_num: int) -> tuple[str, bool]:
        """The VendorID of a VendorNum, and whether it came from memory rather than Epicor."""
        known = self._vendor_ids.get(vendor_num)
        if known and time.monotonic() - known[1] < self.config.vendor_id_cache_seconds:
            return known[0], True
        vendor = self.get_vendor(vendor_num)
        if vendor is None:
            raise FatalError(f"Epicor supplier {vendor_num} does not exist", vendor="epicor", status=404)
        return vendor.VendorID, False

    def _invoice_vendor_num(self, header: dict[str, Any]) -> int:
        """The VendorNum an invoice is keyed by: given, or found from its VendorID or PO."""
        if header.get("VendorNum") is not None:
            return int(header["VendorNum"])
        vendor_id = header.get("VendorID") or header.get("VendorNumVendorID")
        if vendor_id:
            found = self.find_vendors(vendor_id=str(vendor_id))
            if not found:
                raise FatalError(f"Epicor supplier {vendor_id} does not exist", vendor="epicor", status=404)
            return found[0].VendorNum
        if header.get("REFPONum"):
            po_num = int(header["REFPONum"])
            row = self._get_one(f"{ENTITIES['purchase_orders'].path}{odata_key(self.config.company, (po_num,))}",
                                {"$select": "VendorNum"})
            if row is None:
                raise FatalError(f"Epicor purchase order {po_num} does not exist", vendor="epicor", status=404)
            return int(row["VendorNum"])
        raise ValueError("header needs VendorNum, VendorID or REFPONum")

    def _new_invoice_header(self, group_id: str) -> dict[str, Any]:
        """`GetNewAPInvHedInvoice` in a group known to be usable, looking the group up (and
        creating it) first when it has not been seen lately or when Epicor refuses it."""
        seen = self._groups_seen.get(group_id)
        if seen is not None and time.monotonic() - seen < self.config.group_check_seconds:
            try:
                return self._ds(INVOICE_SERVICE, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": group_id})
            except FatalError as error:
                if error.status != 400:
                    raise
                self._groups_seen.pop(group_id, None)  # posted, deleted or taken: look again
        self.ensure_group(group_id)
        ds = self._ds(INVOICE_SERVICE, "GetNewAPInvHedInvoice", {"ds": {}, "cGroupID": group_id})
        self._groups_seen[group_id] = time.monotonic()
        return ds

    def _add_line(self, ds: dict[str, Any], group_id: str, line: dict[str, Any], number: int) -> dict[str, Any]:
        """One new line, numbered `number`, priced through Epicor's Change* defaulting, saved."""
        head = ds["APInvHed"][0]
        want = WantedInvoiceLine.model_validate(line)
        po_line = bool(line.get("PONum"))
        method = "GetNewAPInvDtlUnreceived" if po_line else "GetNewAPInvDtlMiscellaneous"
        ds = self._ds(INVOICE_SERVICE, method, {"ds": ds, "iVendorNum": head["VendorNum"],
                                                "cInvoiceNum": head["InvoiceNum"]})
        if po_line:
            ds = self._ds(INVOICE_SERVICE, "ChangePONum", {"ds": ds, "ProposedPONum": int(line["PONum"])})
            if line.get("POLine"):
                ds = self._ds(INVOICE_SERVICE, "ChangePOLine", {"ds": ds, "ProposedPOLine": int(line["POLine"])})
        row = _pending(ds, "APInvDtl")
        if int(row.get("InvoiceLine") or 0) != number:
            row["InvoiceLine"] = number  # a line removed from the middle leaves a gap Epicor would not refill
        for name, value in line.items():
            if name not in LINE_CONSUMED:
                row[name] = jsonable(value)
        ds = self._price_line(ds, want, quantity=want.VendorQty is not None, cost=True)
        return self._save_invoice(ds, group_id, "APInvDtl")

    def _price_line(self, ds: dict[str, Any], want: WantedInvoiceLine, *, quantity: bool, cost: bool) -> dict[str, Any]:
        """Quantity, then unit cost (or, without one, the extended cost), the way the screen
        sets them so Epicor derives the rest."""
        if quantity and want.VendorQty is not None:
            ds = self._ds(INVOICE_SERVICE, "ChangeVendorQty", {"ds": ds, "ProposedVendorQty": want.VendorQty})
        if cost and want.UnitCost is not None:
            ds = self._ds(INVOICE_SERVICE, "ChangeUnitCost", {"ds": ds, "ProposedUnitCost": want.UnitCost})
        elif cost and want.ExtCost is not None:
            ds = self._ds(INVOICE_SERVICE, "ChangeExtCost", {"ds": ds, "ProposedExtCost": want.ExtCost})
        return ds

    def _repair_invoice(self, ds: dict[str, Any], amount: Decimal, wanted: list[tuple[int, WantedInvoiceLine]],
                        lines: list[dict[str, Any]], differences: InvoiceDifferences) -> dict[str, Any]:
        """Bring a saved, unposted invoice to the wanted one, one UpdateMaster per row changed:
        the amount, each differing line, each line too many, then each missing line."""
        group_id = str(ds["APInvHed"][0].get("GroupID") or "")
        release = self._repair_lock(group_id)
        try:
            if differences.amount is not None:
                ds["APInvHed"][0]["RowMod"] = "U"
                ds = self._ds(INVOICE_SERVICE, "ChangeInvoiceVendorAmt", {"ds": ds, "ProposedInvoiceVendorAmt": amount})
                ds = self._save_invoice(ds, group_id)
            by_number = dict(wanted)
            for number, changed in differences.changed.items():
                want = by_number[number]
                row = _line_row(ds, number)
                row["RowMod"] = "U"
                if "Description" in changed:
                    row["Description"] = want.Description
                if "GLAccount" in changed:
                    row["GLAccount"] = want.GLAccount
                priced = changed.keys() & {"VendorQty", "UnitCost", "ExtCost"}
                ds = self._price_line(ds, want, quantity="VendorQty" in changed, cost=bool(priced))
                ds = self._save_invoice(ds, group_id, "APInvDtl")
            for number in differences.extra:
                _line_row(ds, number)["RowMod"] = "D"
                ds = self._save_invoice(ds, group_id, "APInvDtl")
            raw = {number: line for (number, _), line in zip(wanted, lines)}
            for number in differences.missing:
                ds = self._add_line(ds, group_id, raw[number], number)
            return ds
        finally:
            if release:
                self._unlock_quietly(group_id)

    def _repair_lock(self, group_id: str) -> bool:
        """Refuse a group another user holds before writing anything; a hold of our own is
        what a stopped earlier attempt left, to be released once the invoice is whole."""
        group = self.get_group(group_id) if group_id else None
        holder = group.ActiveUserID if group is not None else ""
        if holder and holder.casefold() != self.credentials.username.casefold():
            raise FatalError(f"Epicor AP invoice group {group_id} is in use by {holder}", vendor="epicor",
                             endpoint=ENTITIES["ap_invoice_groups"].path)
        return bool(holder) and self.config.unlock_group_after_write

    def _save_invoice(self, ds: dict[str, Any], group_id: str, table: str = "APInvHed") -> dict[str, Any]:
        """UpdateMaster, answered with the saved tableset.

        A 200 whose `lUpdateRan` is false or whose `requiresUserInput` is true saved nothing:
        a FatalError with Epicor's `opMessage`. When the answer is lost or the save refused
        (a duplicate is a 400 or a 409, depending on the server), the invoice is looked up by
        its key: if every row this save added is there under its SysRowID, the save had
        happened and the stored tableset is the answer.
        """
        body = {"ds": ds, "cGroupID": group_id, "cTableName": table, **UPDATE_MASTER_CHECKS}
        try:
            answer = self._call(INVOICE_SERVICE, "UpdateMaster", body)
        except (FatalError, RetriableError) as error:
            stored = self._saved_already(ds)
            if stored is None:
                raise
            log.info("epicor.save_found_by_key", error=str(error))
            return stored
        parameters = answer.get("parameters") or {}
        if parameters.get("lUpdateRan") is False or parameters.get("requiresUserInput") is True:
            said = {k: parameters.get(k) for k in UPDATE_MASTER_MESSAGES if parameters.get(k)}
            message = str(parameters.get("opMessage") or "") or "Epicor did not save the invoice"
            raise FatalError(f"UpdateMaster did not save: {message}", vendor="epicor",
                             endpoint=f"{INVOICE_SERVICE}/UpdateMaster",
                             details={"lUpdateRan": parameters.get("lUpdateRan"),
                                      "requiresUserInput": parameters.get("requiresUserInput"), **said})
        return parameters.get("ds") or {}

    def _saved_already(self, ds: dict[str, Any]) -> dict[str, Any] | None:
        """The stored tableset, if it already holds every row `ds` adds (by SysRowID)."""
        added = {r.get("SysRowID") for t in ("APInvHed", "APInvDtl") for r in ds.get(t) or []
                 if r.get("RowMod") == "A" and r.get("SysRowID")}
        head = (ds.get("APInvHed") or [{}])[0]
        if not added or head.get("VendorNum") in (None, "", 0) or not head.get("InvoiceNum"):
            return None
        stored = _quietly(lambda: self._invoice_tableset(int(head["VendorNum"]), str(head["InvoiceNum"])))
        have = {r.get("SysRowID") for t in ("APInvHed", "APInvDtl") for r in (stored or {}).get(t) or []}
        return stored if stored is not None and added <= have else None

    def _invoice_tableset(self, vendor_num: int, invoice_num: str) -> dict[str, Any] | None:
        return self._get_by_id(INVOICE_SERVICE, {"vendorNum": vendor_num, "invoiceNum": invoice_num})

    def _get_by_id(self, service: str, keys: dict[str, Any]) -> dict[str, Any] | None:
        """A business object's `GetByID` read (GET; the POST form is deprecated): its tableset,
        or None when Epicor says the record does not exist."""
        path = f"{service}/GetByID"
        response = self.client.request("GET", path, endpoint=path, params=keys, ok_statuses=(200, 404))
        if response.status_code == 404:
            message, details = epicor_error(response)
            if str((details or {}).get("ErrorType") or "").endswith(NOT_FOUND_TYPES):
                return None
            raise classify_response(404, message, vendor="epicor", endpoint=path, details=details)
        returned = response.json().get("returnObj")
        if isinstance(returned, list):  # the generated schemas declare a list of tablesets
            returned = returned[0] if returned else None
        return returned or None

    def _remove_partial(self, ds: dict[str, Any]) -> None:
        head = (ds.get("APInvHed") or [{}])[0]
        if not head.get("InvoiceNum"):
            return
        path = (f"{ENTITIES['ap_invoices'].path}"
                f"{odata_key(self.config.company, (int(head['VendorNum']), str(head['InvoiceNum'])))}")
        try:
            self.client.request("DELETE", path, endpoint=ENTITIES["ap_invoices"].path, ok_statuses=(200, 204, 404))
        except ConnectorError as error:
            log.warning("epicor.partial_invoice_left", invoice=head.get("InvoiceNum"), error=str(error))

    def _invoice_from_ds(self, ds: dict[str, Any]) -> EpicorApInvoice:
        head = ds["APInvHed"][0]
        lines = [r for r in ds.get("APInvDtl") or [] if r.get("VendorNum") == head["VendorNum"]
                 and str(r.get("InvoiceNum", "")).casefold() == str(head["InvoiceNum"]).casefold()]
        return self._model(ENTITIES["ap_invoices"], {**head, "APInvDtls": lines})

    # ---- AP payments ---------------------------------------------------------------------------------

    def find_ap_payment(self, vendor_num: int, reference: str) -> dict[str, Any] | None:
        """The payment already written for this vendor + external reference (XRefCheckNum)."""
        spec = ENTITIES["ap_payments"]
        body = self._get(spec.path, {
            "$filter": f"VendorNum eq {int(vendor_num)} and XRefCheckNum eq {odata_string(reference)}",
            "$expand": spec.expand, "$top": 1})
        rows = (body or {}).get("value") or []
        return rows[0] if rows else None

    def ensure_payment_group(self, group_id: str) -> dict[str, Any]:
        path = f"{PAYMENT_GROUP_SERVICE}/APChkGrps"
        body = self._get(path, {"$filter": f"GroupID eq {odata_string(group_id)}", "$top": 1})
        rows = (body or {}).get("value") or []
        if rows:
            return rows[0]
        try:
            return self.client.send_json("POST", path, {"Company": self.config.company, "GroupID": group_id,
                                                         "BankAcctID": self.config.payment_bank_account},
                                         endpoint=path)
        except (FatalError, RetriableError):
            again = _quietly(lambda: self._get(path, {"$filter": f"GroupID eq {odata_string(group_id)}", "$top": 1}))
            rows = (again or {}).get("value") or []
            if not rows:
                raise
            return rows[0]

    def create_ap_payment(self, vendor_num: int, invoice_num: str, amount: Decimal, payment_date: date,
                          reference: str) -> dict[str, Any]:
        """Payment Entry: GetNewCheckHed in the payment group, OnChangeVendor, OnChangeCheckDate,
        GetNewAPTran for the invoice, OnChangeInvoiceNum, OnChangeDocTranAmt, Update.
        Returns the saved CheckHed row with its `APTrans`."""
        vendor = self.get_vendor(int(vendor_num))
        if vendor is None:
            raise FatalError(f"Epicor supplier {vendor_num} does not exist", vendor="epicor", status=404)
        group_id = self.config.payment_group_id
        self.ensure_payment_group(group_id)
        ds = self._ds(PAYMENT_SERVICE, "GetNewCheckHed", {"ds": {}})
        _pending(ds, "CheckHed")["GroupID"] = group_id
        ds = self._ds(PAYMENT_SERVICE, "OnChangeVendor", {"pcVendorID": vendor.VendorID, "ds": ds})
        ds = self._ds(PAYMENT_SERVICE, "OnChangeCheckDate", {"pdtCheckDate": payment_date, "ds": ds})
        head = _pending(ds, "CheckHed")
        head["XRefCheckNum"] = reference
        head_num = int(head["HeadNum"])
        ds = self._ds(PAYMENT_SERVICE, "GetNewAPTran", {"ds": ds, "headNum": head_num, "apTranNo": 0,
                                                        "invoiceNum": invoice_num})
        ds = self._ds(PAYMENT_SERVICE, "OnChangeInvoiceNum", {"pcInvoiceNum": invoice_num,
                                                              "pcChangeExchangeRateResponse": "?", "ds": ds})
        ds = self._ds(PAYMENT_SERVICE, "OnChangeDocTranAmt", {"pdDocTranAmt": Decimal(amount), "ds": ds})
        try:
            saved = self._ds(PAYMENT_SERVICE, "Update", {"ds": ds})
        except (FatalError, RetriableError):
            # The answer lost, or the save refused: a payment under our HeadNum with our row id is ours.
            saved = _quietly(lambda: self._payment_tableset(head_num)) or {}
            stored = (saved.get("CheckHed") or [{}])[0]
            if not head.get("SysRowID") or stored.get("SysRowID") != head.get("SysRowID"):
                raise
        stored = next(r for r in saved["CheckHed"] if int(r["HeadNum"]) == head_num)
        return {**stored, "APTrans": [t for t in saved.get("APTran") or [] if int(t["HeadNum"]) == head_num]}

    def _payment_tableset(self, head_num: int) -> dict[str, Any] | None:
        return self._get_by_id(PAYMENT_SERVICE, {"headNum": head_num})

    # ---- health ----------------------------------------------------------------------------------------

    def check(self) -> list[CheckStep]:
        """Token (when used), then one cheap authenticated read per entity the pairs use."""
        steps: list[CheckStep] = []
        if self.token_provider is not None:
            provider = self.token_provider

            def token() -> str:
                issued = self.token_cache.get(provider, self.client.session)
                return f"token valid for {max(0, int(issued.expires_at - time.time()))}s"

            steps.append(timed_check("token", token))
        reads = [("vendors", ENTITIES["vendors"].path), ("ap_invoices", ENTITIES["ap_invoices"].path),
                 ("ap_invoice_groups", ENTITIES["ap_invoice_groups"].path),
                 ("purchase_orders", ENTITIES["purchase_orders"].path)]
        for step, path in reads:
            if self.token_provider is not None and not steps[0].ok:
                # Without a token every read would only repeat the refused login.
                steps.append(CheckStep(step, False, 0.0, "not attempted: the token step failed"))
                continue
            steps.append(timed_check(step, lambda p=path: self._probe(p)))
        return steps

    def _probe(self, path: str) -> str:
        body = self._get(path, {"$top": 1, "$select": "SysRevID"})
        return f"{len((body or {}).get('value') or [])} row(s) readable"


HEADER_CONSUMED = frozenset({
    "VendorNum", "VendorID", "VendorNumVendorID", "InvoiceNum", "InvoiceDate", "InvoiceAmt", "DocInvoiceAmt",
    "InvoiceVendorAmt", "DocInvoiceVendorAmt", "REFPONum", "GroupID", "Company", "SysRowID", "SysRevID", "RowMod",
})
LINE_CONSUMED = frozenset({
    "VendorNum", "InvoiceNum", "InvoiceLine", "VendorQty", "UnitCost", "ExtCost", "DocExtCost", "DocUnitCost",
    "PONum", "POLine", "Company", "SysRowID", "SysRevID", "RowMod", "LineType",
})


def _invoice_amount(header: dict[str, Any], lines: list[dict[str, Any]]) -> Decimal:
    for name in ("InvoiceVendorAmt", "DocInvoiceVendorAmt", "InvoiceAmt", "DocInvoiceAmt"):
        if header.get(name) is not None:
            return Decimal(str(header[name]))
    total = Decimal(0)
    for line in lines:
        if line.get("ExtCost") is not None:
            total += Decimal(str(line["ExtCost"]))
        else:
            total += Decimal(str(line.get("VendorQty") or 1)) * Decimal(str(line.get("UnitCost") or 0))
    return total.quantize(Decimal("0.01"))


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def _line_row(ds: dict[str, Any], number: int) -> dict[str, Any]:
    head = ds["APInvHed"][0]
    for row in ds.get("APInvDtl") or []:
        if int(row.get("InvoiceLine") or 0) == number and row.get("VendorNum") == head["VendorNum"]:
            return row
    raise FatalError(f"Epicor returned no line {number} of invoice {head.get('InvoiceNum')}", vendor="epicor")


T = TypeVar("T")


def _quietly(lookup: Callable[[], T]) -> T | None:
    """A look-up made while another error is being handled: its own failure yields None so
    the first error is the one reported."""
    try:
        return lookup()
    except ConnectorError as error:
        log.info("epicor.lookup_failed", error=str(error))
        return None


__all__ = [
    "ENTITIES", "EpicorApInvoice", "EpicorApInvoiceGroup", "EpicorApInvoiceLine", "EpicorApPayment",
    "EpicorApPaymentLine", "EpicorConfig", "EpicorConnector", "EpicorCredentials", "EpicorEntity",
    "EpicorGlAccount", "EpicorPurchaseOrder", "EpicorPurchaseOrderLine", "EpicorTokenProvider", "EpicorVendor",
    "InvoiceAction", "InvoiceDifferences", "WantedInvoiceLine", "compare_ap_invoice", "epicor_error",
    "wanted_invoice_lines",
]
