"""Procore connector: the target of the Epicor -> Procore pair.

Vendors go to the company vendor registry, POs to purchase order contracts, AP invoice
lines to direct costs, GL accounts resolve to project cost codes. Every write finds its
record first by the ERP key (`origin_id`, unique per company at Procore), then by the
business key (vendor + PO number, vendor + invoice number), and updates instead of
creating a second record.

Reads are declared per entity (`ENTITIES`): path, scope (company or project), change field,
external keys, the key fields the list can filter on, and model. Lists are bare JSON arrays
walked by the kit's Link-header paginator (`page`/`per_page`, falling back to `Total`), so a
server-side page cap lower than the one asked for does no harm. Tokens come from the kit's
OAuth 2.0 provider (client credentials, or a single-use refresh token).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable, ClassVar, Generic, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar, cast
from urllib.parse import urlsplit

import requests
from pydantic import BaseModel, Field, SecretStr

from connectors.base import CheckStep, Connector, EntitySpec, SettingsModel, VendorModel, timed_check
from mlconnector.http import (
    ConnectorError,
    FatalError,
    HttpClient,
    HttpRuntime,
    LinkHeaderPaging,
    OAuth2Provider,
    OAuth2Settings,
    Page,
    Paginator,
    QuotaHeaders,
    RateLimit,
    RetriableError,
    RetrySettings,
    TokenAuth,
)

VENDOR = "procore"
API = "/rest/v1.0"

PAGE_SIZE = 100  # Procore's usual page; the connector follows Link, so a lower server cap is harmless
MAX_PER_PAGE = 10_000  # the pagination guide's highest per_page (it recommends <= 2000)
SYNC_BATCH_MAX = 1000  # a sync action takes at most 1000 items per call
HOURLY_RATE_LIMIT = 3600  # documented default requests per hour per app (varies per app)
SPIKE_RATE_LIMIT = 25  # the rate-limiting guide's example spike window: 25 requests per 10 seconds
SPIKE_WINDOW_SECONDS = 10.0  # the spike window's length
SPIKE_MARGIN = 0.1  # a short window's calls bunch up in transit: one second of slack in ten
ACCESS_TOKEN_TTL = 5400  # 90-minute access tokens, used when a token answer omits expires_in
OOB_REDIRECT = "urn:ietf:wg:oauth:2.0:oob"  # installed apps' redirect URI; refresh requests repeat it
SCAN_PAGE_SIZE = 1000  # business-key scans read compact pages: fewer, larger calls
PAGE_STABILITY_SLACK = timedelta(days=1)  # records changed while we page stay in the server's range
PROJECT_CACHE_SECONDS = 300  # discovered project ids are reused this long before asking again
MAX_ERROR_TEXT = 2000  # vendor error bodies kept readable in audit rows

ModelT = TypeVar("ModelT", bound=BaseModel)


# ---- configuration ---------------------------------------------------------------------------


class ProcoreConfig(SettingsModel):
    """What a customer's Procore deployment varies."""

    api_base: str = Field(
        "https://api.procore.com",
        description="Procore API host; https://api.procore.com for production (sandbox hosts and credentials are "
                    "separate).",
    )
    token_url: str = Field(
        "https://login.procore.com/oauth/token",
        description="OAuth token endpoint (POST /oauth/token) of the same environment as api_base.",
    )
    company_id: int = Field(
        description="Procore company ID, sent as the Procore-Company-Id header that nearly every call requires.",
    )
    project_ids: list[int] = Field(
        default_factory=list,
        description="Projects to read and write; empty means every active project of the company (the list is "
                    "rediscovered every 5 minutes).",
    )
    page_size: int = Field(
        PAGE_SIZE, ge=1, le=MAX_PER_PAGE,
        description="Records per list page (per_page). Procore recommends at most 2000 and some endpoints cap lower; "
                    "the connector follows the Link header either way.",
    )
    sync_batch_size: int = Field(
        SYNC_BATCH_MAX, ge=1, le=SYNC_BATCH_MAX,
        description="Items per sync call (PATCH .../sync); Procore accepts at most 1000.",
    )
    rate_limit_per_hour: int | None = Field(
        HOURLY_RATE_LIMIT, ge=0,
        description="Client-side limit in requests per hour for this app, shared by the fleet; Procore's hourly limit "
                    "is commonly 3600 but varies per app (a 10-second spike window also applies). Unset or 0: no "
                    "client-side limit.",
    )
    spike_limit: int | None = Field(
        SPIKE_RATE_LIMIT, ge=0,
        description="Client-side limit in requests per spike window (spike_window_seconds) for this app, shared by "
                    "the fleet and enforced together with the hourly one; Procore's guide shows 25 per 10 s. Unset or "
                    "0: no spike pacing.",
    )
    spike_window_seconds: float = Field(
        SPIKE_WINDOW_SECONDS, gt=0, description="Length in seconds of Procore's spike window (10).",
    )
    spike_margin: float = Field(
        SPIKE_MARGIN, ge=0, le=1,
        description="Fraction the spike window is held open longer than Procore's, so a call admitted on time but "
                    "delayed on a busy host still arrives outside Procore's window (0.1: one second of ten).",
    )
    token_ttl: int = Field(
        ACCESS_TOKEN_TTL, gt=0,
        description="Seconds an access token is assumed to live when the token answer omits expires_in; Procore issues "
                    "5400-second (90-minute) tokens.",
    )
    redirect_uri: str = Field(
        OOB_REDIRECT,
        description="Redirect URI repeated in refresh-token requests; must match the one used at authorization "
                    "(urn:ietf:wg:oauth:2.0:oob for installed apps).",
    )
    client_credentials_fallback: bool = Field(
        True,
        description="When Procore refuses the refresh token, get a token with the app's client-credentials grant "
                    "instead of failing.",
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
    # Direct cost lines need a cost type; lines that name none get this code's type
    # (Procore's standard list has L, M, E, S, O; AP invoice lines are usually materials).
    direct_cost_line_item_type_code: str | None = Field(
        "M",
        description="Code of the company's line item type (cost type) given to direct-cost lines that name none; it "
                    "must exist in the company's list (codes are company data, M is not guaranteed). Unset: no default.",
    )
    conflict_retries: int = Field(
        3, ge=1,
        description="Attempts at a direct-cost write answered 409 Conflict (concurrent line-item edits) before it is "
                    "handed back as retriable.",
    )
    conflict_wait_seconds: float = Field(
        0.5, ge=0,
        description="Seconds to wait after the first 409 Conflict; the n-th wait is n times this.",
    )


class ProcoreCredentials(SettingsModel):
    """An app's client credentials; a refresh token only for authorization-code installs."""

    client_id: str = Field(description="OAuth client ID of the Procore app (or Developer Managed Service Account).")
    client_secret: SecretStr = Field(description="OAuth client secret belonging to client_id.")
    refresh_token: SecretStr | None = Field(
        None,
        description="Refresh token from an authorization-code install (Procore rotates it: each one is single-use); "
                    "unset for client-credentials (service account) apps.",
    )


# ---- models ----------------------------------------------------------------------------------


class ProcoreRef(VendorModel):
    id: int
    name: str | None = None


class ProcoreVendorRef(VendorModel):
    """A vendor as nested in a commitment: Procore names it `company`."""

    id: int
    company: str | None = None


class ProcoreCostCodeRef(VendorModel):
    id: int
    name: str | None = None
    full_code: str | None = None


class ProcoreVendor(VendorModel):
    id: int
    name: str
    abbreviated_name: str | None = None
    origin_id: str | None = None
    origin_code: str | None = None
    origin_data: str | None = None
    address: str | None = None
    city: str | None = None
    state_code: str | None = None
    zip: str | None = None
    country_code: str | None = None
    business_phone: str | None = None
    email_address: str | None = None
    is_active: bool | None = None
    created_at: datetime
    updated_at: datetime


class ProcoreProject(VendorModel):
    id: int
    name: str
    project_number: str | None = None
    active: bool | None = None
    origin_id: str | None = None
    created_at: datetime
    updated_at: datetime


class ProcoreCostCode(VendorModel):
    id: int
    name: str
    code: str | None = None
    full_code: str | None = None
    parent: ProcoreRef | None = None
    origin_id: str | None = None
    project_id: int | None = None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


class ProcoreLineItemType(VendorModel):
    id: int
    code: str | None = None
    name: str | None = None
    base_type: str | None = None


class ProcoreLineItem(VendorModel):
    id: int
    amount: Decimal | None = None
    total_amount: Decimal | None = None
    description: str | None = None
    quantity: Decimal | None = None
    unit_cost: Decimal | None = None
    uom: str | None = None
    position: int | None = None
    cost_code: ProcoreCostCodeRef | None = None
    line_item_type: ProcoreLineItemType | None = None
    origin_id: str | None = None


class ProcorePurchaseOrderContract(VendorModel):
    id: int
    number: str | None = None
    title: str | None = None
    status: str | None = None
    vendor: ProcoreVendorRef | None = None
    project: ProcoreRef | None = None
    project_id: int | None = None
    origin_id: str | None = None
    grand_total: Decimal | None = None
    line_items: list[ProcoreLineItem] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None

    @property
    def vendor_id(self) -> int | None:
        return self.vendor.id if self.vendor else None


class ProcoreDirectCost(VendorModel):
    id: int
    direct_cost_type: str | None = None
    invoice_number: str | None = None
    vendor_id: int | None = None
    vendor_name: str | None = None
    status: str | None = None
    direct_cost_date: date | None = None
    grand_total: Decimal | None = None
    origin_id: str | None = None
    project_id: int | None = None
    line_items: list[ProcoreLineItem] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None = None


class SyncItemError(VendorModel):
    """One refused sync item: the attributes sent back, plus Procore's field messages."""

    errors: dict[str, list[str]] = Field(default_factory=dict)

    @property
    def message(self) -> str:
        return _flatten_errors(self.errors)


@dataclass
class SyncResult(Generic[ModelT]):
    """A sync action's answer: always HTTP 200, with what was written and what was refused."""

    entities: list[ModelT] = field(default_factory=list)
    errors: list[SyncItemError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(frozen=True)
class Upserted(Generic[ModelT]):
    """A write's outcome, with how the existing record was found (for the audit trail)."""

    record: ModelT
    action: Literal["created", "updated"]
    matched_by: str | None = None  # "origin_id", "vendor+number", "vendor+invoice_number"
    line_items: list[ProcoreLineItem] = field(default_factory=list)


# ---- entity declarations -----------------------------------------------------------------------


@dataclass(frozen=True)
class ProcoreEntity(EntitySpec[ModelT]):
    """A readable Procore entity: company- or project-scoped, with its fixed list params.

    A project entity's external keys may be narrowed by `project_id` (else every project in
    scope is searched)."""

    scope: Literal["company", "project"] = "company"
    params: tuple[tuple[str, str], ...] = ()
    server_change_filter: bool = True  # False: the list has no filters[updated_at]; filter here
    filters: tuple[str, ...] = ()  # key fields the list filters on (`filters[<field>]`); others are matched here


ORIGIN_ID = ("origin_id",)  # the ERP key every write stores, unique per company

ENTITIES: dict[str, ProcoreEntity[Any]] = {
    spec.name: spec
    for spec in (
        ProcoreEntity("vendors", f"{API}/vendors", "id", "updated_at", ProcoreVendor, external_keys=(ORIGIN_ID,),
                      filters=ORIGIN_ID),
        ProcoreEntity("projects", f"{API}/projects", "id", "updated_at", ProcoreProject,
                      server_change_filter=False),
        ProcoreEntity("cost_codes", f"{API}/cost_codes", "id", "updated_at", ProcoreCostCode, external_keys=(ORIGIN_ID,),
                      scope="project", server_change_filter=False, filters=ORIGIN_ID),
        # Deleted records stay in the result (and are dropped by parse_rows) so pages never shift.
        ProcoreEntity("purchase_order_contracts", f"{API}/purchase_order_contracts", "id", "updated_at",
                      ProcorePurchaseOrderContract, external_keys=(ORIGIN_ID,), scope="project",
                      params=(("view", "extended"), ("filters[include_deleted]", "with")), filters=ORIGIN_ID),
        # (Round 2) filters[include_deleted] is documented for PO contracts only, not direct costs.
        ProcoreEntity("direct_costs", f"{API}/projects/{{project_id}}/direct_costs", "id", "updated_at",
                      ProcoreDirectCost, external_keys=(ORIGIN_ID, ("vendor_id", "invoice_number")), scope="project",
                      filters=("origin_id", "invoice_number")),
    )
}


# ---- errors ----------------------------------------------------------------------------------


def _flatten_errors(errors: Any) -> str:
    """Procore's `errors` member as one line: "name can't be blank; origin_id has already been taken"."""
    if isinstance(errors, str):
        return errors
    if isinstance(errors, Mapping):
        parts = []
        for name, messages in errors.items():
            listed = messages if isinstance(messages, list) else [messages]
            parts.extend(f"{name} {m}" for m in listed)
        return "; ".join(parts)
    if isinstance(errors, list):
        return "; ".join(_flatten_errors(e) for e in errors)
    return str(errors)


def procore_error_text(response: requests.Response) -> tuple[str, Any]:
    """The vendor's own message: `errors` (field map or text), `error_description`, `error`, `message`."""
    try:
        body = response.json()
    except ValueError:
        text = (response.text or "").strip()
        return (text or response.reason or "")[:MAX_ERROR_TEXT], None
    if isinstance(body, dict):
        if body.get("errors"):
            return _flatten_errors(body["errors"])[:MAX_ERROR_TEXT], body
        description, error = body.get("error_description"), body.get("error")
        if isinstance(description, str) and description:
            return (f"{description} ({error})" if isinstance(error, str) and error else description), body
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key], body
    return str(body)[:MAX_ERROR_TEXT], body


def _retry_after_from_reset(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
    """Procore's 429 names when the window resets (X-Rate-Limit-Reset, epoch seconds); turn it
    into Retry-After when absent, so the HTTP core waits exactly that long."""
    if response.status_code == 429 and "Retry-After" not in response.headers:
        reset = response.headers.get("X-Rate-Limit-Reset", "").strip()
        if reset.isdigit():
            response.headers["Retry-After"] = str(max(1, math.ceil(int(reset) - time.time())))
    return response


def _is_taken(error: ConnectorError, name: str) -> bool:
    details = error.details if isinstance(error.details, Mapping) else {}
    errors = details.get("errors")
    return isinstance(errors, Mapping) and any("taken" in str(m) for m in (errors.get(name) or []))


# ---- auth ------------------------------------------------------------------------------------


def oauth_settings(config: ProcoreConfig) -> OAuth2Settings:
    """Client credentials, or the refresh_token grant when a refresh token is held.

    Refresh tokens are single use: each refresh answers a new one, which the fleet's token
    cache stores with the access token, so the next refresh (from any worker) uses it. A
    refresh request repeats the install's redirect URI, as Procore asks.
    """
    return OAuth2Settings(
        token_url=config.token_url, grant="client_credentials",
        extra_form={"refresh_token": {"redirect_uri": config.redirect_uri}},
        default_ttl=config.token_ttl, timeout=(config.connect_timeout, config.read_timeout),
        error_extractor=procore_error_text, fall_back_after_refused_refresh=config.client_credentials_fallback,
    )


# ---- the connector ---------------------------------------------------------------------------


class ProcoreConnector(Connector):
    """Procore REST v1.0 for one company: reads by change window, idempotent writes, sync batches."""

    system: ClassVar[str] = VENDOR
    Config: ClassVar[type[BaseModel]] = ProcoreConfig
    Credentials: ClassVar[type[BaseModel]] = ProcoreCredentials
    entities: ClassVar[dict[str, ProcoreEntity[Any]]] = ENTITIES

    def __init__(self, config: ProcoreConfig, credentials: ProcoreCredentials, runtime: HttpRuntime) -> None:
        self.config = config
        self.runtime = runtime
        self.session = runtime.session(VENDOR)
        hooks = self.session.hooks.setdefault("response", [])
        if _retry_after_from_reset not in hooks:
            hooks.append(_retry_after_from_reset)
        refresh = credentials.refresh_token.get_secret_value() if credentials.refresh_token else None
        self.provider = OAuth2Provider(VENDOR, oauth_settings(config), client_id=credentials.client_id,
                                       client_secret=credentials.client_secret.get_secret_value(),
                                       refresh_token=refresh)
        self.auth = TokenAuth(self.provider, runtime.token_cache)
        # Procore counts an app's calls in two windows at once; the fleet paces for both.
        windows = [RateLimit(config.rate_limit_per_hour, 3600)] if config.rate_limit_per_hour else []
        if config.spike_limit:
            windows.append(RateLimit(config.spike_limit, config.spike_window_seconds, margin=config.spike_margin))
        self.client = HttpClient(
            vendor=VENDOR,
            base_url=config.api_base,
            auth=self.auth,
            session=self.session,
            rate_limiter=runtime.rate_limiter,
            rate_limit=tuple(windows) or None,
            rate_key=f"{VENDOR}:{urlsplit(config.api_base).netloc}:{credentials.client_id}",  # Procore counts per app
            quota_headers=QuotaHeaders("X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"),
            timeout=(config.connect_timeout, config.read_timeout),
            retry=config.retry.policy(),
            default_headers={"Procore-Company-Id": str(config.company_id), "Accept": "application/json"},
            error_extractor=procore_error_text,
        )
        self._projects: tuple[float, list[int]] | None = None
        self._line_item_types: dict[str, int] | None = None
        self._cache_lock = threading.Lock()

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "ProcoreConnector":
        return cls(ProcoreConfig.model_validate(config), ProcoreCredentials.model_validate(credentials), runtime)

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        creds = info["credentials"]
        config = {"api_base": info["api_base"], "token_url": info["token_url"], "company_id": int(creds["company_id"])}
        return config, {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}

    @property
    def call_count(self) -> int:
        return self.client.calls + self.provider.calls

    def spec(self, entity: str) -> ProcoreEntity[Any]:
        return super().spec(entity)  # type: ignore[return-value]

    # ---- hooks the base reads are built on -------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """`page`/`per_page`, following the Link header (falling back to `Total`), so a server
        page cap lower than the one asked for does no harm. A change window needs no step
        back: its server range runs past `until` (see `changed_params`)."""
        return LinkHeaderPaging("page", "per_page", self.config.page_size)

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        """Each project in scope in turn for a project entity (or the one the params name)."""
        entity = self.spec(spec.name)
        given = params.get("project_id")
        scopes: list[int | None] = [given] if given is not None or entity.scope == "company" else list(self.project_ids())
        for project_id in scopes:
            scoped = {**params, **self._list_params(entity, project_id)}
            if entity.scope == "project":
                scoped["project_id"] = project_id  # a path-scoped list takes it in the path (fetch_page)
            yield from super().pages(spec, scoped, stable=stable)

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        entity = self.spec(spec.name)
        params = dict(request)
        project_id = params.get("project_id")
        if "{project_id}" in spec.path:
            params.pop("project_id", None)
        page = self._fetch(spec.path.format(project_id=project_id), params, f"GET {spec.path}")
        return replace(page, rows=[self._with_project(raw, entity, project_id) for raw in page.rows])

    def parse_rows(self, spec: EntitySpec[Any], rows: Sequence[Any]) -> list[BaseModel]:
        """Live records only: deleted ones stay in the lists (so pages never shift) and are dropped here."""
        return [spec.model.model_validate(raw) for raw in rows if not raw.get("deleted_at")]

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        """Procore stamps whole seconds, so `since` is floored to the second (a record stamped
        in the same second as the last poll's end is read again rather than missed). The
        server range ends a day past `until`: a record changed while we page keeps its place,
        is dropped by `in_window`, and the next poll takes it."""
        entity = self.spec(spec.name)
        if since is None or not entity.server_change_filter or not entity.change_field:
            return {}
        low = _aware(since).replace(microsecond=0)
        return {f"filters[{entity.change_field}]": f"{_iso(low)}...{_iso(_aware(until) + PAGE_STABILITY_SLACK)}"}

    def in_window(self, spec: EntitySpec[Any], record: BaseModel, since: datetime | None, until: datetime) -> bool:
        changed = _aware(getattr(record, spec.change_field or "updated_at"))
        low = _aware(since).replace(microsecond=0) if since is not None else None
        return changed < _aware(until) and (low is None or changed >= low)

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        """Server filters for the key fields Procore can filter on; the rest are matched by `find`."""
        entity = self.spec(spec.name)
        params = {f"filters[{field}]": value for field, value in key.items() if field in entity.filters}
        if "project_id" in key:
            params["project_id"] = key["project_id"]
        return params

    # ---- reading ---------------------------------------------------------------------------

    def iter_all(self, entity: str, project_id: int | None = None) -> Iterator[BaseModel]:
        """Every live record of `entity` (in one project, or in every project in scope)."""
        spec = self.spec(entity)
        params = {"project_id": project_id} if project_id is not None and spec.scope == "project" else {}
        for page in self.pages(spec, params):
            yield from self.parse_rows(spec, page.rows)

    def get(self, entity: str, key: Any, project_id: int | None = None) -> BaseModel:
        """One record by Procore id (NotFoundError when absent or deleted); a project entity
        needs its project."""
        spec = self.spec(entity)
        if spec.scope == "project" and project_id is None:
            raise ValueError(f"{entity} live in a project; give project_id")
        params = {} if "{project_id}" in spec.path else self._scope_param(spec, project_id)
        path = spec.path.format(project_id=project_id) + f"/{int(key)}"
        raw = self.client.get_json(path, params=params, endpoint=f"GET {spec.path}/{{id}}")
        return spec.model.model_validate(self._with_project(raw, spec, project_id))

    def project_ids(self) -> list[int]:
        """The projects this deployment syncs: configured, else the company's active ones."""
        if self.config.project_ids:
            return list(self.config.project_ids)
        with self._cache_lock:
            if self._projects and time.monotonic() - self._projects[0] < PROJECT_CACHE_SECONDS:
                return list(self._projects[1])
        ids = [p.id for p in self.iter_all("projects") if getattr(p, "active", True) is not False]
        with self._cache_lock:
            self._projects = (time.monotonic(), ids)
        return list(ids)

    def list_projects(self) -> list[ProcoreProject]:
        return [p for p in self.iter_all("projects") if isinstance(p, ProcoreProject)]

    def list_cost_codes(self, project_id: int) -> list[ProcoreCostCode]:
        """A project's cost codes (a few hundred at most), for GL account -> cost code mapping."""
        return [c for c in self.iter_all("cost_codes", project_id) if isinstance(c, ProcoreCostCode)]

    def find_cost_code(self, project_id: int, origin_id: str) -> ProcoreCostCode | None:
        return cast("ProcoreCostCode | None", self.find("cost_codes", origin_id=origin_id, project_id=project_id))

    def list_line_item_types(self) -> list[ProcoreLineItemType]:
        """The company's cost types (line item types)."""
        pages = self._walk(f"{API}/line_item_types", {"company_id": self.config.company_id}, f"GET {API}/line_item_types")
        return [ProcoreLineItemType.model_validate(raw) for page in pages for raw in page.rows]

    # ---- idempotency lookups ---------------------------------------------------------------

    def find_vendor_by_origin_id(self, origin_id: str, *, include_inactive: bool = True) -> ProcoreVendor | None:
        """The vendor carrying this ERP key; inactive vendors are listed apart, so look there too."""
        found = self.find("vendors", origin_id=origin_id)
        if found is None and include_inactive:
            path = f"{API}/companies/{self.config.company_id}/vendors/inactive"
            for page in self._walk(path, {"filters[origin_id]": origin_id}, f"GET {API}/companies/{{company_id}}/vendors/inactive"):
                for raw in page.rows:
                    if raw.get("origin_id") == origin_id:
                        return ProcoreVendor.model_validate(raw)
        return cast("ProcoreVendor | None", found)

    def find_commitment_by_origin_id(self, origin_id: str, project_id: int | None = None) -> ProcorePurchaseOrderContract | None:
        scope = {"project_id": project_id} if project_id is not None else {}
        return cast("ProcorePurchaseOrderContract | None",
                    self.find("purchase_order_contracts", origin_id=origin_id, **scope))

    def find_commitment(self, vendor_id: int, number: str, project_id: int | None = None) -> ProcorePurchaseOrderContract | None:
        """The PO contract with this vendor and number. The list filters neither, so this scans
        the compact view (the answer carries no line items) and takes the first match."""
        spec = ENTITIES["purchase_order_contracts"]
        wanted = _normalize_number(number)
        size = max(self.config.page_size, SCAN_PAGE_SIZE)
        for scope_id in [project_id] if project_id is not None else self.project_ids():
            for page in self._walk(spec.path, {"project_id": scope_id}, f"GET {spec.path}", per_page=size):
                for raw in page.rows:
                    vendor = raw.get("vendor") or {}
                    if vendor.get("id") == vendor_id and _normalize_number(raw.get("number")) == wanted:
                        return ProcorePurchaseOrderContract.model_validate({**raw, "project_id": scope_id})
        return None

    def find_direct_cost_by_origin_id(self, project_id: int, origin_id: str) -> ProcoreDirectCost | None:
        return cast("ProcoreDirectCost | None", self.find("direct_costs", origin_id=origin_id, project_id=project_id))

    def find_direct_cost_by_invoice(self, project_id: int, vendor_id: int, invoice_number: str) -> ProcoreDirectCost | None:
        return cast("ProcoreDirectCost | None", self.find("direct_costs", invoice_number=invoice_number,
                                                          vendor_id=vendor_id, project_id=project_id))


    # ---- writes ----------------------------------------------------------------------------

    def upsert_vendor(self, fields: Mapping[str, Any], origin_id: str, *, existing_id: int | None = None,
                      looked_up: bool = False) -> Upserted[ProcoreVendor]:
        """Create or update the registry vendor whose origin_id is the ERP vendor key.

        `existing_id` / `looked_up`: the caller already found the vendor (or found none) in
        this same unit of work, so the look-up is not repeated."""
        attrs = _with_origin(fields, origin_id)
        existing: Any = _Known(existing_id) if existing_id is not None else (
            None if looked_up else self.find_vendor_by_origin_id(origin_id, include_inactive=False))
        if existing is None:
            try:
                raw = self._post(f"{API}/vendors", {"company_id": self.config.company_id, "vendor": attrs}, f"POST {API}/vendors")
                return Upserted(ProcoreVendor.model_validate(raw), "created")
            except FatalError as error:
                # Taken: an inactive vendor (listed apart) or another worker's create holds it.
                if not _is_taken(error, "origin_id"):
                    raise
                existing = self.find_vendor_by_origin_id(origin_id, include_inactive=True)
                if existing is None:
                    raise
        raw = self.client.send_json("PATCH", f"{API}/vendors/{existing.id}",
                                    {"company_id": self.config.company_id, "vendor": attrs},
                                    endpoint=f"PATCH {API}/vendors/{{id}}")
        return Upserted(ProcoreVendor.model_validate(raw), "updated", "origin_id")

    def sync_vendors(self, batch: Iterable[Mapping[str, Any]]) -> SyncResult[ProcoreVendor]:
        """Batch upsert by id / origin_id, in calls of at most `sync_batch_size` items."""
        result: SyncResult[ProcoreVendor] = SyncResult()
        for chunk in _chunks(batch, self.config.sync_batch_size):
            body = self.client.send_json("PATCH", f"{API}/vendors/sync",
                                         {"company_id": self.config.company_id, "updates": chunk},
                                         endpoint=f"PATCH {API}/vendors/sync")
            part = _sync_result(body, ProcoreVendor)
            result.entities.extend(part.entities)
            result.errors.extend(part.errors)
        return result

    def upsert_purchase_order_contract(
        self,
        project_id: int,
        fields: Mapping[str, Any],
        line_items: Sequence[Mapping[str, Any]],
        origin_id: str,
        *,
        existing_id: int | None = None,
        looked_up: bool = False,
    ) -> Upserted[ProcorePurchaseOrderContract]:
        """Create or update a PO contract and its lines; found by origin_id, else vendor + number
        (unless the caller found it, or found none, already: `existing_id` / `looked_up`)."""
        attrs = _with_origin(fields, origin_id)
        existing: Any
        if existing_id is not None or looked_up:
            existing, matched_by = (_Known(existing_id) if existing_id is not None else None), "known"
        else:
            existing, matched_by = self.find_commitment_by_origin_id(origin_id, project_id), "origin_id"
        if existing is None and not looked_up and attrs.get("vendor_id") is not None and attrs.get("number"):
            existing, matched_by = self.find_commitment(int(attrs["vendor_id"]), str(attrs["number"]), project_id), "vendor+number"
        body = {"project_id": project_id, "purchase_order_contract": attrs}
        if existing is not None:
            raw = self.client.send_json("PATCH", f"{API}/purchase_order_contracts/{existing.id}", body,
                                        params={"project_id": project_id},
                                        endpoint=f"PATCH {API}/purchase_order_contracts/{{id}}")
            action: Literal["created", "updated"] = "updated"
        else:
            raw = self._post(f"{API}/purchase_order_contracts", body, f"POST {API}/purchase_order_contracts")
            action, matched_by = "created", None
        po_id = int(raw["id"])
        lines = self._write_lines(
            f"{API}/purchase_order_contracts/{po_id}/line_items/sync",
            {"project_id": project_id},  # (Round 2) a query parameter of this action
            _line_items(line_items, origin_id, {}),
            f"PATCH {API}/purchase_order_contracts/{{id}}/line_items/sync",
        )
        raw = _with_lines(raw, project_id, lines)
        return Upserted(ProcorePurchaseOrderContract.model_validate(raw), action, matched_by, lines)

    def create_or_update_direct_cost(
        self,
        project_id: int,
        fields: Mapping[str, Any],
        line_items: Sequence[Mapping[str, Any]],
        origin_id: str,
        *,
        existing_id: int | None = None,
        looked_up: bool = False,
    ) -> Upserted[ProcoreDirectCost]:
        """Create or update a direct cost (an AP invoice) and its lines; found by origin_id,
        else vendor + invoice number (unless the caller did: `existing_id` / `looked_up`)."""
        attrs = _with_origin(fields, origin_id)
        existing: Any
        if existing_id is not None or looked_up:
            existing, matched_by = (_Known(existing_id) if existing_id is not None else None), "known"
        else:
            existing, matched_by = self.find_direct_cost_by_origin_id(project_id, origin_id), "origin_id"
        if existing is None and not looked_up and attrs.get("invoice_number") and attrs.get("vendor_id") is not None:
            existing = self.find_direct_cost_by_invoice(project_id, int(attrs["vendor_id"]), str(attrs["invoice_number"]))
            matched_by = "vendor+invoice_number"
        base = f"{API}/projects/{project_id}/direct_costs"
        if existing is not None:
            update = {k: v for k, v in attrs.items() if k != "direct_cost_type"}  # fixed once created
            raw = self._on_conflict_retry(lambda: self.client.send_json(
                "PATCH", f"{base}/{existing.id}", {"item": update},
                endpoint=f"PATCH {API}/projects/{{project_id}}/direct_costs/{{id}}"))
            action: Literal["created", "updated"] = "updated"
        else:
            raw = self._post(base, {"item": attrs}, f"POST {API}/projects/{{project_id}}/direct_costs")
            action, matched_by = "created", None
        dc_id = int(raw["id"])
        prepared = _line_items(line_items, origin_id, {"direct_cost_id": dc_id})
        default_type = self._default_line_item_type_id(prepared)
        for line in prepared:
            if line.get("wbs_code_id") is None and line.get("line_item_type_id") is None and default_type is not None:
                line["line_item_type_id"] = default_type
        lines = self._on_conflict_retry(lambda: self._write_lines(
            f"{base}/line_items/sync", {}, prepared,
            f"PATCH {API}/projects/{{project_id}}/direct_costs/line_items/sync"))
        raw = _with_lines(raw, project_id, lines)
        return Upserted(ProcoreDirectCost.model_validate(raw), action, matched_by, lines)

    # ---- check -----------------------------------------------------------------------------

    def check(self) -> list[CheckStep]:
        """A token, the company, then one cheap authenticated read per entity the pair uses."""
        token = timed_check("token", self._check_token)
        steps = [token]
        if not token.ok:
            return steps + [CheckStep(name, False, 0.0, "skipped: no token")
                            for name in ("companies", "line_item_types", *ENTITIES)]
        steps.append(timed_check("companies", self._check_company))
        steps.append(timed_check("vendors", lambda: self._probe(ENTITIES["vendors"], None)))
        steps.append(timed_check("projects", lambda: self._probe(ENTITIES["projects"], None)))
        steps.append(timed_check("line_item_types", self._check_line_item_types))
        project: list[int] = []
        steps.append(timed_check("project_scope", lambda: self._pick_project(project)))
        for name in ("cost_codes", "purchase_order_contracts", "direct_costs"):
            if project:
                steps.append(timed_check(name, lambda spec=ENTITIES[name]: self._probe(spec, project[0])))
            else:
                steps.append(CheckStep(name, False, 0.0, "skipped: no project to read from"))
        return steps

    def _check_token(self) -> str:
        self.auth.headers(self.session)
        token = self.runtime.token_cache.peek(self.provider)
        left = int(token.expires_at - time.time()) if token else 0
        return f"token valid for {left} s"

    def _check_company(self) -> str:
        companies = self.client.get_json(f"{API}/companies", endpoint=f"GET {API}/companies") or []
        if not any(isinstance(c, Mapping) and c.get("id") == self.config.company_id for c in companies):
            raise FatalError(f"company {self.config.company_id} is not visible to this app", vendor=VENDOR)
        return f"company {self.config.company_id} visible"

    def _check_line_item_types(self) -> str:
        """Line item types are company data the lines are validated against: read, never assumed."""
        types = self.list_line_item_types()
        if not types:
            raise FatalError("the company lists no line item types; direct cost and commitment lines need one",
                             vendor=VENDOR)
        return f"{len(types)} line item type(s): {', '.join(sorted(t.code or str(t.id) for t in types))}"

    def _pick_project(self, out: list[int]) -> str:
        ids = self.project_ids()
        if not ids:
            raise FatalError("no active project in the company and none configured", vendor=VENDOR)
        if self.config.project_ids:  # configured: each must be a project this app can reach
            visible = {p.id for p in self.list_projects()}
            missing = [str(i) for i in ids if i not in visible]
            if missing:
                raise FatalError(f"configured project(s) {', '.join(missing)} are not visible to this app in company "
                                 f"{self.config.company_id}", vendor=VENDOR)
        out.append(ids[0])
        return f"{len(ids)} project(s); reading project {ids[0]}"

    def _probe(self, spec: ProcoreEntity[Any], project_id: int | None) -> str:
        path = spec.path.format(project_id=project_id)
        params = {**self._list_params(spec, project_id), "page": 1, "per_page": 1}
        response = self.client.request("GET", path, params=params, endpoint=f"GET {spec.path}")
        return f"{response.headers.get('Total', len(response.json() or []))} record(s)"

    # ---- plumbing --------------------------------------------------------------------------

    def _scope_param(self, spec: ProcoreEntity[Any], project_id: int | None) -> dict[str, Any]:
        if spec.scope == "company":
            return {"company_id": self.config.company_id}
        return {} if "{project_id}" in spec.path else {"project_id": project_id}

    def _list_params(self, spec: ProcoreEntity[Any], project_id: int | None) -> dict[str, Any]:
        return {**self._scope_param(spec, project_id), **dict(spec.params)}

    @staticmethod
    def _with_project(raw: Any, spec: ProcoreEntity[Any], project_id: int | None) -> Any:
        if spec.scope == "project" and isinstance(raw, dict) and raw.get("project_id") is None:
            return {**raw, "project_id": project_id}
        return raw

    def _fetch(self, path: str, params: Mapping[str, Any], endpoint: str) -> Page:
        """One page of a list: a bare JSON array, with what the Link, Total and Per-Page headers say."""
        response = self.client.request("GET", path, params=params, endpoint=endpoint)
        batch = response.json() if response.content else []
        if not isinstance(batch, list):
            raise FatalError(f"expected a JSON array, got {type(batch).__name__}", vendor=VENDOR, endpoint=endpoint)
        return Page.from_response(response, batch, total=_int_header(response, "Total"),
                                  page_size=_int_header(response, "Per-Page"))

    def _walk(self, path: str, params: Mapping[str, Any], endpoint: str, per_page: int | None = None) -> Iterator[Page]:
        """Pages of a list that is not an entity (line item types, inactive vendors, compact scans)."""
        paging = LinkHeaderPaging("page", "per_page", per_page or self.config.page_size)
        return paging.pages(lambda request: self._fetch(path, request, endpoint), params)

    def _post(self, path: str, body: Mapping[str, Any], endpoint: str) -> dict[str, Any]:
        """A create; one Idempotency-Token per logical write, so the core's retries of it are
        answered with the first result instead of a second record."""
        headers = {"Idempotency-Token": secrets.token_hex(16)}
        raw = self.client.send_json("POST", path, dict(body), headers=headers, endpoint=endpoint)
        if not isinstance(raw, dict) or "id" not in raw:
            raise FatalError("create answered without an id", vendor=VENDOR, endpoint=endpoint)
        return raw

    def _write_lines(self, path: str, params: Mapping[str, Any], items: list[dict[str, Any]], endpoint: str) -> list[ProcoreLineItem]:
        """Line items through their sync action; any refused line fails the write with Procore's words."""
        written: list[ProcoreLineItem] = []
        for chunk in _chunks(items, self.config.sync_batch_size):
            body = self.client.send_json("PATCH", path, {"updates": chunk}, params=dict(params) or None,
                                         endpoint=endpoint)
            part = _sync_result(body, ProcoreLineItem)
            if part.errors:
                detail = "; ".join(f"line {e.model_extra.get('origin_id') if e.model_extra else '?'}: {e.message}" for e in part.errors)
                raise FatalError(f"{len(part.errors)} line item(s) refused: {detail}", vendor=VENDOR, endpoint=endpoint,
                                 details=[e.model_dump() for e in part.errors])
            written.extend(part.entities)
        return written

    def _on_conflict_retry(self, call: Callable[[], Any]) -> Any:
        """Procore answers 409 while another request edits the same direct cost: wait, retry,
        and past the limit hand the task a retriable error."""
        last: FatalError | None = None
        for attempt in range(self.config.conflict_retries):
            try:
                return call()
            except FatalError as error:
                if error.status != 409:
                    raise
                last = error
                time.sleep(self.config.conflict_wait_seconds * (attempt + 1))
        assert last is not None
        raise RetriableError(last.message, vendor=VENDOR, status=409, endpoint=last.endpoint,
                             retry_after=self.config.conflict_wait_seconds * (self.config.conflict_retries + 1))

    def _default_line_item_type_id(self, lines: list[dict[str, Any]]) -> int | None:
        code = self.config.direct_cost_line_item_type_code
        if not code or all(l.get("line_item_type_id") is not None or l.get("wbs_code_id") is not None for l in lines):
            return None
        with self._cache_lock:
            known = self._line_item_types
        if known is None:
            known = {t.code: t.id for t in self.list_line_item_types() if t.code}
            with self._cache_lock:
                self._line_item_types = known
        if code not in known:
            raise FatalError(f"line item type code {code!r} is not in the company's list ({', '.join(sorted(known))})",
                             vendor=VENDOR)
        return known[code]


# ---- helpers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """A record the caller already found: only its id is needed to update it."""

    id: int



def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_header(response: requests.Response, name: str) -> int | None:
    raw = response.headers.get(name, "").strip()
    return int(raw) if raw.isdigit() else None


def _normalize_number(value: Any) -> str:
    return " ".join(str(value or "").split()).upper()


def _with_origin(fields: Mapping[str, Any], origin_id: str) -> dict[str, Any]:
    if not origin_id:
        raise ValueError("origin_id is required: it is how the next write finds this record")
    given = fields.get("origin_id")
    if given not in (None, origin_id):
        raise ValueError(f"fields carry origin_id {given!r} but the write is for {origin_id!r}")
    return {**fields, "origin_id": origin_id}


def _line_items(lines: Sequence[Mapping[str, Any]], origin_id: str, extra: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Lines keyed by their own origin_id (default: the holder's origin id and line number),
    so a re-sent document updates its lines instead of adding more."""
    out = []
    for position, line in enumerate(lines, 1):
        item = {**line, **extra}
        if not item.get("origin_id") and item.get("id") is None:
            item["origin_id"] = f"{origin_id}:{position}"
        out.append(item)
    return out


def _with_lines(raw: dict[str, Any], project_id: int, written: list[ProcoreLineItem]) -> dict[str, Any]:
    """The holder as it stands after its lines were written (the header answer predates them):
    earlier lines replaced or joined by the written ones, and the grand total they sum to."""
    if not written:
        return {**raw, "project_id": project_id}
    merged = {int(line["id"]): line for line in raw.get("line_items") or [] if isinstance(line, Mapping) and "id" in line}
    for line in written:
        merged[line.id] = line.model_dump()
    total = sum((Decimal(str(line.get("total_amount") or line.get("amount") or 0)) for line in merged.values()), Decimal(0))
    return {**raw, "project_id": project_id, "line_items": list(merged.values()), "grand_total": str(total)}


def _chunks(items: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(dict(item))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _sync_result(body: Any, model: type[ModelT]) -> SyncResult[ModelT]:
    if not isinstance(body, Mapping):
        raise FatalError("sync answered without {entities, errors}", vendor=VENDOR)
    return SyncResult(
        entities=[model.model_validate(raw) for raw in body.get("entities") or []],
        errors=[SyncItemError.model_validate(raw) for raw in body.get("errors") or []],
    )

