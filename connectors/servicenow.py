"""ServiceNow connector for the Epicor Kinetic -> ServiceNow pair.

Reads go through the Table API (`/api/now/table/{table}`) with an encoded query on
`sys_updated_on`, walked by the kit's `sysparm_limit`/`sysparm_offset` paginator (stepping
back when rows leave the change window mid-walk); POs and AP invoices are written into
Source-to-Pay staging tables through the Import Set API, whose transform maps coalesce on
the correlation id; suppliers are upserted the same way, or found by their correlation id
and patched through the Table API when a deployment turns Import Sets off. Auth is the
kit's OAuth 2.0 provider (password or client-credentials grant, then the refresh token)
shared by the fleet's token cache, or HTTP Basic.

A stock instance has no custom correlation column: its staging tables and the Table API drop
unknown columns silently. For it the connector also offers reads by sys_id and by documented
fields (`get_record`, `find_record`), one staging row at a time with its result read
(`import_row`: fields renamed to the configured staging columns, only a 429 retried in the
call, since a row processed before a lost answer would insert twice), Table API patches, and
a `check` step per staging table that names every configured column the instance's
dictionary (`sys_dictionary`) lacks.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, ClassVar, Iterable, Iterator, Literal, Mapping, Sequence
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, BeforeValidator, Field, SecretStr, field_validator, model_validator

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    BasicAuth,
    FatalError,
    HttpClient,
    HttpRuntime,
    OAuth2Provider,
    OAuth2Settings,
    OffsetPaging,
    Page,
    Paginator,
    RateLimit,
    RetriableError,
    RetryPolicy,
    RetrySettings,
    StepBackOnShrink,
    TokenAuth,
)
from mlconnector.http.client import default_error_text
from mlconnector.redaction import register_secret

SYSTEM = "servicenow"
ACCESS_TOKEN_TTL = 1800  # seconds; the OAuth registry's default, used when expires_in is missing
MAX_PAGE_SIZE = 10_000  # sysparm_limit's documented default; larger pages strain the instance
DEFAULT_PAGE_SIZE = 1000  # few round trips per poll while a page stays small in memory
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # the Table API's UTC date-time format in encoded queries
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


# ---- field types: every Table API value arrives as a string ------------------------------------


def _blank_to_none(value: Any) -> Any:
    return None if value is None or value == "" else value


def _utc_datetime(value: Any) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=timezone.utc)
    return value


def _true(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


SnStr = Annotated[str, BeforeValidator(lambda v: "" if v is None else v)]
SnDecimal = Annotated[Decimal | None, BeforeValidator(_blank_to_none)]
SnInt = Annotated[int | None, BeforeValidator(_blank_to_none)]
SnDate = Annotated[date | None, BeforeValidator(_blank_to_none)]
SnDateTime = Annotated[datetime | None, BeforeValidator(_utc_datetime)]
SnBool = Annotated[bool, BeforeValidator(_true)]


# ---- models -------------------------------------------------------------------------------------


class ServiceNowRecord(VendorModel):
    """Any Table API row; columns without a declared field are kept as extras."""

    sys_id: str
    sys_created_on: SnDateTime = None
    sys_updated_on: SnDateTime = None
    sys_mod_count: SnInt = None
    sys_created_by: SnStr = ""
    sys_updated_by: SnStr = ""

    @property
    def version(self) -> str:
        """With `sys_id`, what dedupes a record across overlapping polls."""
        stamp = self.sys_updated_on.strftime(TIME_FORMAT) if self.sys_updated_on else ""
        return f"{stamp}#{self.sys_mod_count or 0}"


class Supplier(ServiceNowRecord):
    name: SnStr = ""
    legal_name: SnStr = ""
    company: SnStr = ""
    tax_id: SnStr = ""
    street: SnStr = ""
    city: SnStr = ""
    state: SnStr = ""
    zip: SnStr = ""
    country: SnStr = ""
    phone: SnStr = ""
    email: SnStr = ""
    currency: SnStr = ""
    payment_term: SnStr = ""
    active: SnBool = True
    u_correlation_id: SnStr = ""


class Company(ServiceNowRecord):
    name: SnStr = ""
    vendor: SnBool = False
    customer: SnBool = False
    manufacturer: SnBool = False
    street: SnStr = ""
    city: SnStr = ""
    state: SnStr = ""
    zip: SnStr = ""
    country: SnStr = ""
    phone: SnStr = ""
    u_correlation_id: SnStr = ""


class CostCenter(ServiceNowRecord):
    name: SnStr = ""
    account_number: SnStr = ""
    manager: SnStr = ""
    parent: SnStr = ""
    valid_from: SnDate = None
    valid_to: SnDate = None
    location: SnStr = ""
    u_correlation_id: SnStr = ""


class PurchaseOrder(ServiceNowRecord):
    number: SnStr = ""
    erp_number: SnStr = ""
    erp_source: SnStr = ""
    supplier: SnStr = ""
    legal_entity: SnStr = ""
    order_type: SnStr = ""
    total_amount: SnDecimal = None
    currency: SnStr = ""
    status: SnStr = ""
    payment_term: SnStr = ""
    cost_center: SnStr = ""
    order_date: SnDate = None
    u_correlation_id: SnStr = ""


class PurchaseOrderLine(ServiceNowRecord):
    purchase_order: SnStr = ""
    line_number: SnInt = None
    description: SnStr = ""
    quantity: SnDecimal = None
    unit_price: SnDecimal = None
    amount: SnDecimal = None
    cost_center: SnStr = ""
    u_correlation_id: SnStr = ""


class Invoice(ServiceNowRecord):
    number: SnStr = ""
    external_invoice_number: SnStr = ""
    external_invoice_source: SnStr = ""
    erp_source: SnStr = ""
    invoice_date: SnDate = None
    due_date: SnDate = None
    other_charges: SnDecimal = None
    total_amount: SnDecimal = None
    currency: SnStr = ""
    tax_amount: SnDecimal = None
    invoice_type: SnStr = ""
    purchase_order: SnStr = ""
    supplier: SnStr = ""
    erp_number: SnStr = ""
    status: SnStr = ""
    u_correlation_id: SnStr = ""


class InvoiceLine(ServiceNowRecord):
    invoice: SnStr = ""
    line_number: SnInt = None
    description: SnStr = ""
    quantity: SnDecimal = None
    unit_price: SnDecimal = None
    amount: SnDecimal = None
    cost_center: SnStr = ""
    gl_account: SnStr = ""
    u_correlation_id: SnStr = ""


class WriteResult(BaseModel):
    """What a write did: the target record, how it got there, and its lines."""

    table: str
    sys_id: str
    action: Literal["inserted", "updated", "ignored", "skipped", "unchanged"]
    via: Literal["import_set", "table_api"]
    correlation_id: str
    import_set: str | None = None  # the import set's number; results name the target record only
    message: str = ""
    lines: list[WriteResult] = Field(default_factory=list)


# ---- configuration ------------------------------------------------------------------------------

# Staging column names are unconfirmed (only the labels are documented): the likely snake_case
# forms, each a setting `check` verifies against the instance's sys_dictionary.
DEFAULT_STAGING_COLUMNS: dict[str, dict[str, str]] = {
    "supplier": {name: name for name in ("name", "legal_name", "tax_id", "street", "city", "state", "zip", "country",
                                         "phone", "email", "currency", "payment_term", "erp_source")},
    "supplier_payment": {name: name for name in ("supplier", "bank_name", "account_name", "bank_account_number",
                                                 "routing_number", "iban", "swift_code", "currency", "primary", "active")},
    "purchase_order": {name: name for name in ("erp_po_number", "erp_source", "order_type", "po_amount",
                                               "po_amount_currency", "po_status", "supplier_company_name",
                                               "payment_term", "order_date", "cost_center")},
    "purchase_order_line": {name: name for name in ("purchase_order", "line_number", "description", "quantity",
                                                    "unit_price", "line_amount", "cost_center")},
    "invoice": {name: name for name in ("external_invoice_number", "external_invoice_source", "erp_source",
                                        "invoice_date", "due_date", "other_charges", "amount_invoiced", "currency",
                                        "final_tax", "invoice_type", "purchase_order", "erp_number", "payment_terms",
                                        "invoice_line_count", "supplier")},
    "invoice_line": {name: name for name in ("invoice", "line_number", "description", "quantity", "unit_price",
                                             "line_amount", "cost_center", "gl_account")},
}


class ServiceNowConfig(SettingsModel):
    """What one customer's instance varies: URLs, auth flow, table names, paging, limits."""

    instance_url: str = Field(
        description="Instance URL, https://<instance>.service-now.com; a trailing slash is removed.",
    )
    token_url: str | None = Field(None, description="OAuth token endpoint; unset uses <instance_url>/oauth_token.do.")
    auth: Literal["oauth", "basic"] = Field(
        "oauth",
        description="oauth: bearer token from the OAuth endpoint; basic: HTTP Basic with the username and password.",
    )
    oauth_grant: Literal["password", "client_credentials"] = Field(
        "password",
        description="OAuth grant: password (client ID and secret plus username and password) or client_credentials.",
    )
    api_version: Literal["", "v1", "v2"] = Field(
        "",
        description="REST API version in the path: empty for the unversioned (latest) /api/now, or v1 / v2 (v1 answers "
                    "an empty query with 404).",
    )
    token_ttl: int = Field(
        ACCESS_TOKEN_TTL, gt=0,
        description="Seconds an access token is assumed to live when the answer omits expires_in; ServiceNow's default "
                    "lifespan is 1800, set per OAuth application.",
    )
    page_size: int = Field(
        DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE,
        description="Records per Table API page (sysparm_limit); at most 10000, ServiceNow's default.",
    )
    rate_limit_per_hour: int | None = Field(
        None, gt=0,
        description="Client-side limit in requests per hour; set it to the instance's rate-limit rule "
                    "(sys_rate_limit_rules) if one applies. Unset: no limit (rules are optional).",
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
    correlation_field: str = Field(
        "u_correlation_id",
        description="Column holding the connector's correlation ID on target and staging tables, used to find a record "
                    "already written. u_ columns are customer-made: a stock instance has none and silently drops "
                    "unknown columns.",
    )
    use_import_set: bool = Field(
        True,
        description="Write through the Import Set staging tables and their transform maps where a staging table is set;"
                    " false writes the target tables through the Table API.",
    )
    import_set_coalesces: bool = Field(
        True,
        description="The transform maps coalesce on correlation_field, so a re-sent record updates in place; false "
                    "makes the connector find and patch an existing target record itself.",
    )
    supplier_table: str = Field(
        "sn_fin_supplier",
        description="Supplier table: sn_fin_supplier (Source-to-Pay), or core_company with supplier_filter vendor=true.",
    )
    supplier_filter: str = Field(
        "",
        description="Encoded query selecting suppliers in supplier_table (e.g. vendor=true on core_company); empty "
                    "selects all rows. ^NQ is not allowed.",
    )
    supplier_defaults: dict[str, str] = Field(
        default_factory=dict,
        description="Fields set on suppliers created through the Table API, e.g. {\"vendor\": \"true\"} on core_company.",
    )
    supplier_staging_table: str | None = Field(
        "sn_fcms_intg_imp_supplier",
        description="Import Set staging table for suppliers (column names unconfirmed); unset writes suppliers through "
                    "the Table API.",
    )
    supplier_payment_table: str = Field(
        "sn_fin_supplier_payment", description="Supplier payment details (bank accounts) table.")
    supplier_payment_staging_table: str | None = Field(
        "sn_fcms_intg_supplier_payment_inbound_stage",
        description="Import Set staging table for supplier payment details (column names unconfirmed); unset writes "
                    "them through the Table API.",
    )
    supplier_payment_parent_field: str = Field(
        "supplier", description="Column on a supplier payment detail that references its supplier.")
    company_table: str = Field("core_company", description="Table read as the companies entity.")
    purchase_order_table: str = Field("sn_shop_purchase_order", description="Purchase order table.")
    purchase_order_staging_table: str | None = Field(
        "sn_fcms_intg_imp_order",
        description="Import Set staging table for purchase orders (column names unconfirmed); unset writes them through"
                    " the Table API.",
    )
    purchase_order_line_table: str = Field("sn_shop_purchase_order_line", description="Purchase order line table.")
    purchase_order_line_staging_table: str | None = Field(
        "sn_fcms_intg_imp_order_line",
        description="Import Set staging table for purchase order lines (column names unconfirmed); unset writes them "
                    "through the Table API.",
    )
    purchase_order_parent_field: str = Field(
        "purchase_order",
        description="Column on a purchase order line that references its purchase order.",
    )
    invoice_table: str = Field("sn_shop_invoice", description="AP invoice table.")
    invoice_staging_table: str | None = Field(
        "sn_spend_intg_imp_invoice",
        description="Import Set staging table for AP invoices (column names unconfirmed); unset writes them through the"
                    " Table API.",
    )
    invoice_line_table: str = Field("sn_shop_invoice_line", description="AP invoice line table.")
    invoice_line_staging_table: str | None = Field(
        "sn_spend_intg_imp_invoice_line",
        description="Import Set staging table for AP invoice lines (column names unconfirmed); unset writes them "
                    "through the Table API.",
    )
    invoice_parent_field: str = Field("invoice", description="Column on an invoice line that references its invoice.")
    staging_columns: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {kind: dict(columns) for kind, columns in DEFAULT_STAGING_COLUMNS.items()},
        description="Per staging kind (supplier, supplier_payment, purchase_order, purchase_order_line, invoice, invoice_line): field -> "
                    "staging column. ServiceNow publishes only the labels; the defaults are their likely snake_case "
                    "names, and `mlconnector check` names every one the instance's dictionary lacks.",
    )
    cost_center_table: str = Field("cmn_cost_center", description="Cost center table, where GL accounts are looked up.")
    cost_center_key: str = Field("account_number", description="Cost-center column holding the ERP GL account number.")

    @field_validator("instance_url", "token_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("supplier_filter")
    @classmethod
    def _single_query(cls, value: str) -> str:
        if "^NQ" in value:
            raise ValueError("supplier_filter cannot use ^NQ; the change window is AND-ed onto it")
        return value

    @model_validator(mode="after")
    def _table_names(self) -> ServiceNowConfig:
        names = [self.correlation_field, self.cost_center_key, self.purchase_order_parent_field, self.invoice_parent_field]
        names += [getattr(self, name) for name in type(self).model_fields if name.endswith("_table")]
        names += [column for columns in self.staging_columns.values() for column in columns.values()]
        bad = [n for n in names if n is not None and not _TABLE_NAME.match(n)]
        if bad:
            raise ValueError(f"not a ServiceNow table or column name: {', '.join(bad)}")
        return self

    @property
    def effective_token_url(self) -> str:
        return self.token_url or f"{self.instance_url}/oauth_token.do"


class ServiceNowCredentials(SettingsModel):
    client_id: str = Field(
        "",
        description="OAuth client ID from the instance's OAuth application registry (OAuth only).",
    )
    client_secret: SecretStr = Field(
        SecretStr(""),
        description="OAuth client secret belonging to client_id (OAuth only).",
    )
    username: str = Field(
        "",
        description="ServiceNow user the connector acts as (Basic auth or the OAuth password grant); its ACLs apply.",
    )
    password: SecretStr = Field(SecretStr(""), description="Password of that user.")


# ---- errors -------------------------------------------------------------------------------------


def servicenow_error(response: requests.Response) -> tuple[str, Any]:
    """The instance's own words: `{"error": {"message", "detail"}}`, or the OAuth endpoint's
    `{"error", "error_description"}`."""
    try:
        body = response.json()
    except ValueError:
        return default_error_text(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = str(error.get("message") or "").strip()
            detail = str(error.get("detail") or "").strip()
            text = f"{message}: {detail}" if detail and detail != message else message
            return text or response.reason or "", body
        if "error_description" in body or isinstance(error, str):
            parts = [str(body.get("error_description") or ""), f"({error})" if error else ""]
            return " ".join(p for p in parts if p), body
    return default_error_text(response)


# ---- auth ---------------------------------------------------------------------------------------


def oauth_settings(config: ServiceNowConfig) -> OAuth2Settings:
    """OAuth at /oauth_token.do: the configured grant (password or client_credentials), then
    the refresh token while the cache holds one (an answer without a new one keeps the old)."""
    return OAuth2Settings(token_url=config.effective_token_url, grant=config.oauth_grant,
                          default_ttl=float(config.token_ttl), timeout=(config.connect_timeout, config.read_timeout),
                          error_extractor=servicenow_error)


# ---- entity declarations ------------------------------------------------------------------------


@dataclass(frozen=True)
class TableSpec(EntitySpec[ServiceNowRecord]):
    """An entity read from one table, optionally narrowed by an encoded query."""

    table: str = ""
    query: str = ""


@dataclass(frozen=True)
class _Entity:
    """An entity whose table (and narrowing query) are settings of the deployment.

    Every entity is also found by the deployment's correlation column; `keys` are the
    documented fields that name a record on a stock instance, which has no such column."""

    name: str
    table_setting: str
    model: type[ServiceNowRecord]
    filter_setting: str | None = None
    keys: tuple[tuple[str, ...], ...] = ()


ENTITIES: tuple[_Entity, ...] = (
    _Entity("suppliers", "supplier_table", Supplier, "supplier_filter"),
    _Entity("companies", "company_table", Company),
    _Entity("cost_centers", "cost_center_table", CostCenter),
    _Entity("purchase_orders", "purchase_order_table", PurchaseOrder, keys=(("erp_number", "erp_source"),)),
    _Entity("purchase_order_lines", "purchase_order_line_table", PurchaseOrderLine),
    _Entity("invoices", "invoice_table", Invoice, keys=(("external_invoice_number", "erp_source", "supplier"),)),
    _Entity("invoice_lines", "invoice_line_table", InvoiceLine),
)


@dataclass(frozen=True)
class _WriteTarget:
    """Where one kind of record is written: its table and, optionally, its staging table."""

    table: str
    staging: str | None
    defaults: Mapping[str, str]


def sn_value(value: Any) -> str:
    """A Python value as the instance stores it: a string (Import Set accepts nothing else)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return sn_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Enum):
        return sn_value(value.value)
    return str(value)


def sn_time(moment: datetime) -> str:
    """UTC 'YYYY-MM-DD HH:MM:SS' (naive datetimes are taken as UTC), truncated to the second."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime(TIME_FORMAT)


def query_value(value: str) -> str:
    """Escape a value for an encoded query: '^' is written '^^'."""
    return value.replace("^", "^^")


# ---- the connector ------------------------------------------------------------------------------


class ServiceNowConnector(Connector):
    system: ClassVar[str] = SYSTEM
    Config: ClassVar[type[BaseModel]] = ServiceNowConfig
    Credentials: ClassVar[type[BaseModel]] = ServiceNowCredentials

    def __init__(self, config: ServiceNowConfig, credentials: ServiceNowCredentials, runtime: HttpRuntime) -> None:
        self.config = config
        self.runtime = runtime
        session = runtime.session(SYSTEM)
        self.provider: OAuth2Provider | None = None
        if config.auth == "basic":
            auth: Any = BasicAuth(credentials.username, credentials.password.get_secret_value())
        else:
            self.provider = OAuth2Provider(SYSTEM, oauth_settings(config), client_id=credentials.client_id,
                                           client_secret=credentials.client_secret.get_secret_value(),
                                           username=credentials.username,
                                           password=credentials.password.get_secret_value())
            auth = TokenAuth(self.provider, runtime.token_cache)
        host = urlsplit(config.instance_url).netloc
        shared = dict(
            vendor=SYSTEM, base_url=config.instance_url, auth=auth, session=session,
            rate_limiter=runtime.rate_limiter,
            rate_limit=RateLimit(config.rate_limit_per_hour, 3600) if config.rate_limit_per_hour else None,
            rate_key=f"{SYSTEM}:{host}:{credentials.username or credentials.client_id}",
            timeout=(config.connect_timeout, config.read_timeout),
            default_headers={"Accept": "application/json"}, error_extractor=servicenow_error,
        )
        self.client = HttpClient(retry=config.retry.policy(), **shared)  # type: ignore[arg-type]
        # Table API inserts are not idempotent: this client never retries, `_create` decides.
        self._insert_client = HttpClient(retry=RetryPolicy(max_tries=1), **shared)  # type: ignore[arg-type]
        prefix = f"/api/now/{config.api_version}" if config.api_version else "/api/now"
        self._table_prefix = f"{prefix}/table"
        self._import_prefix = f"{prefix}/import"
        self.entities: dict[str, TableSpec] = {}
        for entity in ENTITIES:
            table = getattr(config, entity.table_setting)
            query = getattr(config, entity.filter_setting) if entity.filter_setting else ""
            keys = ((config.correlation_field,), *entity.keys)
            self.entities[entity.name] = TableSpec(entity.name, f"{self._table_prefix}/{table}", "sys_id",
                                                   "sys_updated_on", entity.model, external_keys=keys, table=table,
                                                   query=query)
        self._models = {spec.table: spec.model for spec in self.entities.values()}
        self._targets = {
            "supplier": _WriteTarget(config.supplier_table, config.supplier_staging_table, config.supplier_defaults),
            "supplier_payment": _WriteTarget(config.supplier_payment_table, config.supplier_payment_staging_table, {}),
            "purchase_order": _WriteTarget(config.purchase_order_table, config.purchase_order_staging_table, {}),
            "purchase_order_line": _WriteTarget(config.purchase_order_line_table, config.purchase_order_line_staging_table, {}),
            "invoice": _WriteTarget(config.invoice_table, config.invoice_staging_table, {}),
            "invoice_line": _WriteTarget(config.invoice_line_table, config.invoice_line_staging_table, {}),
        }

    # ---- construction -----------------------------------------------------------------------

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> ServiceNowConnector:
        cfg = ServiceNowConfig.model_validate(config)
        creds = ServiceNowCredentials.model_validate(credentials)
        register_secret(creds.client_secret.get_secret_value())
        register_secret(creds.password.get_secret_value())
        needed = {"basic": ("username", "password"), "client_credentials": ("client_id", "client_secret"),
                  "password": ("client_id", "client_secret", "username", "password")}
        missing = [name for name in needed["basic" if cfg.auth == "basic" else cfg.oauth_grant]
                   if not _credential(creds, name)]
        if missing:
            raise ValueError(f"ServiceNow credentials missing: {', '.join(missing)}")
        return cls(cfg, creds, runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"instance_url": info["api_base"], "token_url": info["token_url"]}, dict(info["credentials"])

    @property
    def call_count(self) -> int:
        return self.client.calls + self._insert_client.calls + (self.provider.calls if self.provider else 0)

    # ---- hooks the base reads are built on -------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """`sysparm_limit`/`sysparm_offset`. The window [since, until) can only lose rows while
        it is read (a changed row moves past `until`): when X-Total-Count drops, the unread
        rows have moved back by that much, so a change window steps back, re-reads and drops
        the sys_ids it already gave."""
        paging = OffsetPaging("sysparm_limit", "sysparm_offset", self.config.page_size)
        return StepBackOnShrink(paging, key=lambda row: row.get("sys_id")) if stable else paging

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        response = self._list(self.spec(spec.name).table, request)
        return Page(self._rows(response), total=_int_header(response, "X-Total-Count"))

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        """since <= sys_updated_on < until, oldest first (sys_id breaks ties, so pages keep their order)."""
        table = self.spec(spec.name)
        clauses = [table.query] if table.query else []
        if since is not None:
            clauses.append(f"sys_updated_on>={sn_time(since)}")
        clauses += [f"sys_updated_on<{sn_time(until)}", "ORDERBYsys_updated_on", "ORDERBYsys_id"]
        return {"sysparm_query": "^".join(clauses)}

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        table = self.spec(spec.name)
        clauses = [table.query] if table.query else []
        clauses += [f"{field}={query_value(sn_value(value))}" for field, value in key.items()]
        return {"sysparm_query": "^".join([*clauses, "ORDERBYsys_created_on"])}

    def read_one(self, spec: EntitySpec[Any], key: Any) -> BaseModel:
        """By sys_id; NotFoundError carries the instance's 'No Record found'."""
        table = self.spec(spec.name)
        body = self.client.get_json(f"{self._table_prefix}/{table.table}/{key}",
                                    params=self._read_params(), endpoint=f"GET table/{table.table}/{{sys_id}}")
        return spec.model.model_validate(body["result"])

    # ---- reads ------------------------------------------------------------------------------

    def find_by_correlation(self, table: str, correlation_id: str) -> ServiceNowRecord | None:
        """The oldest record of `table` (or entity) carrying this correlation id, if any."""
        spec = self.spec(table)
        row = self._find_raw(spec.table, correlation_id)
        return spec.model.model_validate(row) if row is not None else None

    def find_cost_center(self, account_number: str | None = None, *, name: str | None = None,
                         current_only: bool = True) -> CostCenter | None:
        """The cost center for an ERP GL account (or by name); expired ones are skipped."""
        if bool(account_number) == bool(name):
            raise ValueError("give exactly one of account_number or name")
        column, value = (self.config.cost_center_key, account_number) if account_number else ("name", name)
        clauses = [f"{column}={query_value(str(value))}"]
        if current_only:
            clauses.append(f"valid_toISEMPTY^ORvalid_to>={date.today().isoformat()}")
        rows = self._query(self.config.cost_center_table, "^".join(clauses + ["ORDERBYsys_created_on"]), limit=1)
        return CostCenter.model_validate(rows[0]) if rows else None

    def spec(self, entity: str) -> TableSpec:
        """The declared entity, or any table by its name (read as generic records)."""
        found = self.entities.get(entity)
        if found is not None:
            return found
        if not _TABLE_NAME.match(entity):
            raise ValueError(f"unknown ServiceNow entity or table {entity!r}")
        return TableSpec(entity, f"{self._table_prefix}/{entity}", "sys_id", "sys_updated_on",
                         self._models.get(entity, ServiceNowRecord), external_keys=((self.config.correlation_field,),),
                         table=entity)

    # ---- writes -----------------------------------------------------------------------------

    def upsert_supplier(self, fields: Mapping[str, Any], correlation_id: str) -> WriteResult:
        """Create or update the supplier record carrying `correlation_id`."""
        return self._write(self._targets["supplier"], fields, correlation_id)

    def stage_purchase_order(self, fields: Mapping[str, Any], correlation_id: str,
                             lines: Sequence[Mapping[str, Any]] = ()) -> WriteResult:
        """Stage a PO header, then its lines (correlation '<po>/<line_number>') under it."""
        return self._write_document("purchase_order", self.config.purchase_order_parent_field, fields, correlation_id, lines)

    def stage_ap_invoice(self, fields: Mapping[str, Any], correlation_id: str,
                         lines: Sequence[Mapping[str, Any]] = ()) -> WriteResult:
        """Stage an AP invoice header, then its lines, the way POs are staged."""
        return self._write_document("invoice", self.config.invoice_parent_field, fields, correlation_id, lines)

    # ---- check ------------------------------------------------------------------------------

    def check(self) -> list[CheckStep]:
        """A token (OAuth only), then one one-row read of every table the pair reads or writes."""
        steps: list[CheckStep] = []
        if self.provider is not None:
            steps.append(timed_check("oauth token", self._check_token))
        tables = [spec.table for spec in self.entities.values() if spec.name != "companies"]
        if self.config.use_import_set:
            tables += [t.staging for t in self._targets.values() if t.staging]
        for table in dict.fromkeys(tables):
            steps.append(timed_check(f"read {table}", lambda table=table: self._probe(table)))
        if self.config.use_import_set:
            for kind, target in self._targets.items():
                if target.staging and self.config.staging_columns.get(kind):
                    steps.append(timed_check(f"columns of {target.staging}",
                                             lambda kind=kind: self._check_columns(kind)))
        return steps

    def _check_columns(self, kind: str) -> str:
        """Every configured staging column exists in the instance's dictionary: an unknown
        column is dropped by the Import Set API without an error, so its field would stay empty."""
        staging = self._targets[kind].staging or ""
        wanted = self.config.staging_columns[kind]
        missing = self.missing_columns(staging, wanted.values())
        if missing:
            fields = [f"{column} (for {name})" for name, column in wanted.items() if column in missing]
            raise FatalError(f"{staging} has no column {', '.join(fields)}: the instance would drop these values "
                             f"silently; set systems.servicenow.staging_columns.{kind} to the instance's names",
                             vendor=SYSTEM, endpoint="GET table/sys_dictionary")
        return f"{len(wanted)} configured column(s) present"

    # ---- stock-instance reads and writes (no custom columns needed) -------------------------

    def missing_columns(self, table: str, columns: Iterable[str]) -> list[str]:
        """The `columns` the instance's dictionary (`sys_dictionary`) does not list for `table`."""
        have = self.dictionary_columns(table)
        return [c for c in dict.fromkeys(columns) if c not in have]

    def dictionary_columns(self, table: str) -> set[str]:
        """Column names of `table` as the instance's dictionary lists them."""
        if not _TABLE_NAME.match(table):
            raise ValueError(f"not a ServiceNow table name: {table!r}")
        rows = self._query("sys_dictionary", f"name={query_value(table)}", limit=MAX_PAGE_SIZE,
                           fields="element")
        return {str(r.get("element") or "") for r in rows} - {""}

    def get_record(self, table: str, sys_id: str, fields: Sequence[str] = ()) -> dict[str, Any] | None:
        """One row by sys_id, or None when the instance says it does not exist."""
        params = {**self._read_params(), **({"sysparm_fields": ",".join(fields)} if fields else {})}
        response = self.client.request("GET", f"{self._table_prefix}/{table}/{sys_id}", params=params,
                                       endpoint=f"GET table/{table}/{{sys_id}}", ok_statuses={200, 404})
        if response.status_code == 404:
            return None
        return dict(response.json().get("result") or {}) or None

    def find_record(self, table: str, keys: Mapping[str, Any]) -> dict[str, Any] | None:
        """The oldest row of `table` whose documented key fields equal `keys`."""
        if not keys or any(sn_value(v) == "" for v in keys.values()):
            raise ValueError(f"every key field needs a value to find a {table} row: {dict(keys)}")
        clauses = [f"{name}={query_value(sn_value(value))}" for name, value in keys.items()]
        rows = self._query(table, "^".join([*clauses, "ORDERBYsys_created_on"]), limit=1)
        return rows[0] if rows else None

    def find_records(self, table: str, keys: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Every row of `table` whose fields equal `keys` (a document's lines under its header)."""
        clauses = [f"{name}={query_value(sn_value(value))}" for name, value in keys.items()]
        return self._query(table, "^".join([*clauses, "ORDERBYsys_created_on"]), limit=MAX_PAGE_SIZE)

    def query(self, table: str, encoded_query: str, *, limit: int = DEFAULT_PAGE_SIZE) -> list[dict[str, Any]]:
        """Rows of `table` matching an encoded query (one page of at most `limit` rows)."""
        if not _TABLE_NAME.match(table):
            raise ValueError(f"not a ServiceNow table name: {table!r}")
        return self._query(table, encoded_query, limit=min(limit, MAX_PAGE_SIZE))

    def patch_record(self, table: str, sys_id: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Change these fields of one row through the Table API."""
        body = {k: sn_value(v) for k, v in values.items()}
        answer = self.client.send_json("PATCH", f"{self._table_prefix}/{table}/{sys_id}", body,
                                       params=self._read_params(), endpoint=f"PATCH table/{table}/{{sys_id}}") or {}
        return dict(answer.get("result") or {})

    def import_row(self, kind: str, fields: Mapping[str, Any]) -> WriteResult:
        """Stage one row of `kind` through the Import Set API (the transform runs synchronously),
        its fields renamed to the configured staging columns; the row's result is read: an
        `error` raises FatalError with the transform's message, `ignored`/`skipped` come back
        as such with the transform's words."""
        target = self._targets[kind]
        if not target.staging:
            raise ValueError(f"no staging table is configured for {kind}")
        columns = self.config.staging_columns.get(kind, {})
        values = {columns.get(name, name): sn_value(value) for name, value in fields.items()}
        retry = self.config.retry
        for attempt in range(1, retry.max_tries + 1):
            try:
                # Not retried blindly: without a coalesce key a row processed before a lost
                # answer would insert twice. Only a 429 (refused unprocessed) is tried again
                # here; anything else goes back to the caller, who looks the target up first.
                return self._import(target, values, "", client=self._insert_client)
            except RetriableError as error:
                if error.status != 429 or attempt == retry.max_tries:
                    raise
                wait = error.retry_after if error.retry_after is not None else \
                    random.uniform(0, min(retry.max_wait, retry.base * retry.factor ** attempt))
                time.sleep(min(wait, retry.max_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    def target_table(self, kind: str) -> str:
        """The table the transform of `kind` writes (sn_fin_supplier, sn_shop_purchase_order, ...)."""
        return self._targets[kind].table

    def iter_dated(self, table: str, field: str, start: date, end: date,
                   keys: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Rows of `table` whose date `field` (order_date, invoice_date) is on or after `start`
        and before `end`, and whose `keys` fields equal theirs, `sysparm_limit`/`sysparm_offset`
        pages in sys_id order."""
        if not _TABLE_NAME.match(table):
            raise ValueError(f"not a ServiceNow table name: {table!r}")
        clauses = [f"{name}={query_value(sn_value(value))}" for name, value in (keys or {}).items()]
        clauses += [f"{field}>={start.isoformat()}", f"{field}<{end.isoformat()}", "ORDERBYsys_id"]
        paging = OffsetPaging("sysparm_limit", "sysparm_offset", self.config.page_size)
        for page in paging.pages(lambda request: Page(self._rows(self._list(table, request))),
                                 {"sysparm_query": "^".join(clauses)}):
            yield from page.rows

    # ---- internals --------------------------------------------------------------------------

    def _read_params(self) -> dict[str, str]:
        return {"sysparm_display_value": "false", "sysparm_exclude_reference_link": "true"}

    def _list(self, table: str, params: dict[str, Any]) -> requests.Response:
        v1 = self.config.api_version == "v1"  # v1 answers an empty list with 404
        return self.client.request(
            "GET", f"{self._table_prefix}/{table}", params={**self._read_params(), **params},
            endpoint=f"GET table/{table}", ok_statuses={200, 404} if v1 else None,
        )

    @staticmethod
    def _rows(response: requests.Response) -> list[dict[str, Any]]:
        if response.status_code == 404:
            return []
        return list(response.json().get("result") or [])

    def _query(self, table: str, query: str, *, limit: int, fields: str = "") -> list[dict[str, Any]]:
        params: dict[str, Any] = {"sysparm_query": query, "sysparm_limit": limit, "sysparm_no_count": "true"}
        if fields:
            params["sysparm_fields"] = fields
        return self._rows(self._list(table, params))

    def _find_raw(self, table: str, correlation_id: str) -> dict[str, Any] | None:
        if not correlation_id:
            raise ValueError("a correlation id is required")
        query = f"{self.config.correlation_field}={query_value(correlation_id)}^ORDERBYsys_created_on"
        rows = self._query(table, query, limit=1)
        return rows[0] if rows else None

    def _write_document(self, kind: str, parent_field: str, fields: Mapping[str, Any], correlation_id: str,
                        lines: Sequence[Mapping[str, Any]]) -> WriteResult:
        header = self._write(self._targets[kind], fields, correlation_id)
        for position, line in enumerate(lines, start=1):
            line_fields = {"line_number": position, **line, parent_field: header.sys_id}
            line_id = f"{correlation_id}/{sn_value(line_fields['line_number'])}"
            header.lines.append(self._write(self._targets[f"{kind}_line"], line_fields, line_id))
        return header

    def _write(self, target: _WriteTarget, fields: Mapping[str, Any], correlation_id: str) -> WriteResult:
        if not correlation_id:
            raise ValueError("a correlation id is required")
        values = {key: sn_value(value) for key, value in fields.items()}
        values[self.config.correlation_field] = correlation_id
        if self.config.use_import_set and target.staging:
            if not self.config.import_set_coalesces:
                existing = self._find_raw(target.table, correlation_id)
                if existing is not None:
                    return self._patch(target.table, existing, values, correlation_id)
            return self._import(target, values, correlation_id)
        existing = self._find_raw(target.table, correlation_id)
        if existing is not None:
            return self._patch(target.table, existing, values, correlation_id)
        created = self._create(target.table, {**target.defaults, **values}, correlation_id)
        return WriteResult(table=target.table, sys_id=created["sys_id"], action="inserted", via="table_api",
                           correlation_id=correlation_id)

    def _patch(self, table: str, existing: Mapping[str, Any], values: Mapping[str, str], correlation_id: str) -> WriteResult:
        # Columns the table lacks are absent from the row; the instance would drop them anyway.
        changed = {k: v for k, v in values.items() if k in existing and existing[k] != v}
        result = WriteResult(table=table, sys_id=str(existing["sys_id"]), action="unchanged", via="table_api",
                             correlation_id=correlation_id)
        if changed:
            self.client.send_json("PATCH", f"{self._table_prefix}/{table}/{existing['sys_id']}", changed,
                                  params=self._read_params(), endpoint=f"PATCH table/{table}/{{sys_id}}")
            result.action = "updated"
        return result

    def _create(self, table: str, body: Mapping[str, str], correlation_id: str) -> dict[str, Any]:
        """POST once per attempt; after an ambiguous failure (5xx, timeout) look the record
        up before posting again, so a retry never inserts it twice."""
        retry = self.config.retry
        for attempt in range(1, retry.max_tries + 1):
            try:
                response = self._insert_client.send_json("POST", f"{self._table_prefix}/{table}", dict(body),
                                                         params=self._read_params(), endpoint=f"POST table/{table}")
                return response["result"]
            except RetriableError as error:
                if attempt == retry.max_tries:
                    raise
                if error.status != 429:  # refused before processing only when rate limited
                    found = self._find_raw(table, correlation_id)
                    if found is not None:
                        return found
                wait = error.retry_after if error.retry_after is not None else \
                    random.uniform(0, min(retry.max_wait, retry.base * retry.factor ** attempt))
                time.sleep(min(wait, retry.max_wait))
        raise AssertionError("unreachable")  # pragma: no cover

    def _import(self, target: _WriteTarget, values: Mapping[str, str], correlation_id: str,
                client: HttpClient | None = None) -> WriteResult:
        """One staging row through the Import Set API; the transform runs synchronously."""
        staging = target.staging or ""
        endpoint = f"POST import/{staging}"
        body = (client or self.client).send_json("POST", f"{self._import_prefix}/{staging}", dict(values), endpoint=endpoint) or {}
        results = body.get("result") or []
        entry = next((r for r in results if r.get("table") == target.table), results[0] if results else None)
        if entry is None:
            raise FatalError(f"import into {staging} returned no transform result", vendor=SYSTEM,
                             details=body, endpoint=endpoint)
        status = str(entry.get("status") or "")
        if status == "error":
            message = entry.get("error_message") or entry.get("status_message") or "transform error"
            raise FatalError(f"{entry.get('transform_map') or staging}: {message}", vendor=SYSTEM,
                             details=entry, endpoint=endpoint)
        return WriteResult(
            table=str(entry.get("table") or target.table), sys_id=str(entry.get("sys_id") or ""),
            action=status if status in ("inserted", "updated", "skipped") else "ignored", via="import_set",
            correlation_id=correlation_id, import_set=body.get("import_set"),
            message=str(entry.get("status_message") or ""),
        )

    def _check_token(self) -> str:
        assert self.provider is not None
        token = self.runtime.token_cache.get(self.provider, self.client.session)
        return f"token valid for {max(0, int(token.expires_at - time.time()))} s"

    def _probe(self, table: str) -> str:
        response = self._list(table, {"sysparm_limit": 1, "sysparm_fields": "sys_id", "sysparm_no_count": "true",
                                      "sysparm_suppress_pagination_header": "true"})
        return f"{len(self._rows(response))} row(s) readable"


def _credential(credentials: ServiceNowCredentials, name: str) -> str:
    value = getattr(credentials, name)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _int_header(response: requests.Response, name: str) -> int | None:
    raw = response.headers.get(name)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None
