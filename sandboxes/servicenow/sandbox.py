"""The ServiceNow sandbox: its settings, credentials and the control-API hooks of `Sandbox`.

Facts marked (unconfirmed) in the vendor notes are constructor settings or named constants,
so a test can say which behaviour it relies on. By default the instance is stock: no
customer-made `u_` columns (unknown columns are dropped silently on Table API and Import Set
writes) and transform maps that coalesce on nothing. `custom_columns` gives the instance the
columns a customer created, `u_correlation_id` then being the maps' coalesce key; a running
sandbox gains one through the control API (`POST /_sandbox/entities/sys_dictionary` with
`{"name": <table>, "element": <column>}`), as a customer adds a dictionary entry.
"""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

from flask import Response, request
from pydantic import BaseModel, ConfigDict

from sandboxes.base import Sandbox, SandboxOptions
from sandboxes.kit.clock import SECOND_US, Clock

from .rules import TransformMap, as_string, default_transform_maps
from .routes import InstanceRoutes, OAuthTokens, sn_error
from .seed import TICK_CHANGES, Seeder
from .store import SYS_FIELDS

ACCESS_TOKEN_TTL = 1800  # seconds; the OAuth application registry's default access lifespan
REFRESH_TOKEN_TTL = 8_640_000  # 100 days; the registry's default refresh lifespan
RATE_WINDOW_SECONDS = 3600  # rate-limit rules (sys_rate_limit_rules) count requests per hour
FAULT_RULE_LIMIT = 100  # the per-hour figure quoted on injected 429s when no rule is configured
_SECRET_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789!$"
ENTITY_ALIASES = {  # control-API names of tables
    "suppliers": "sn_fin_supplier", "vendors": "sn_fin_supplier", "supplier_payments": "sn_fin_supplier_payment",
    "companies": "core_company", "cost_centers": "cmn_cost_center", "gl_accounts": "sn_fin_gl_account",
    "purchase_orders": "sn_shop_purchase_order", "purchase_order_lines": "sn_shop_purchase_order_line",
    "invoices": "sn_shop_invoice", "ap_invoices": "sn_shop_invoice", "invoice_lines": "sn_shop_invoice_line",
    "import_sets": "sys_import_set", "users": "sys_user",
}


class Settings(BaseModel):
    """The instance's settings (constructor keywords); (unconfirmed) facts are settings here."""

    model_config = ConfigDict(extra="forbid")

    allow_basic: bool = True
    allow_client_credentials: bool = True
    rotate_refresh_tokens: bool = False  # (unconfirmed) refresh grants answer the same refresh token
    rate_window_seconds: float = RATE_WINDOW_SECONDS
    invalid_query_returns_no_rows: bool = False  # glide.invalid_query.returns_no_rows
    insert_multiple_sync: bool = False  # a sys_rest_insert_multiple entry set to synchronous
    mandatory_status: int = 400  # (unconfirmed) some releases answer data-policy failures with 403
    custom_columns: tuple[str, ...] = ()  # u_ columns a customer added; a stock instance has none


class ServiceNowSandbox(InstanceRoutes, Sandbox):
    """A ServiceNow instance: tables in memory, OAuth, the Table and Import Set APIs."""

    vendor = "servicenow"

    def __init__(self, options: SandboxOptions | None = None, **settings: Any) -> None:
        self.__dict__.update(Settings(**settings).model_dump())
        seed = (options or SandboxOptions()).seed
        secret_rng = random.Random(f"servicenow-credentials-{seed}")
        self.client_id = f"{secret_rng.getrandbits(128):032x}"
        self.client_secret = "".join(secret_rng.choice(_SECRET_ALPHABET) for _ in range(24))
        self.username = "ml.integration"
        self.password = f"Sn-{secret_rng.getrandbits(64):016x}!"
        self.rate_rule_id = f"{secret_rng.getrandbits(128):032x}"
        self._rate_lock = threading.Lock()
        self._rate_counts = {}
        self.clock = Clock(SECOND_US)  # sys_updated_on is written to the second
        self._generation = 0
        super().__init__(options)
        self.tokens = OAuthTokens(REFRESH_TOKEN_TTL)

    @property
    def access_ttl(self) -> float:
        return float(self.options.token_ttl or ACCESS_TOKEN_TTL)

    @property
    def rate_limit(self) -> float | None:
        """Requests per rule window per user and REST resource; None: no rule (the default)."""
        return self.options.rate_limit or None

    def info(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "api_base": self.base_url, "token_url": f"{self.base_url}/oauth_token.do",
                "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                                "username": self.username, "password": self.password}}

    def clear_state(self) -> None:
        self._tables, self._maps, self._import_sets, self._open_sets, self._counters = {}, {}, {}, {}, {}
        self._generation += 1
        self._tick_rng = random.Random(self.options.seed + 2)
        with self._rate_lock:
            self._rate_counts.clear()
        for tmap in default_transform_maps("u_correlation_id" if "u_correlation_id" in self.custom_columns else None):
            self._register_map(tmap)

    def seed(self, rng: random.Random, records: int) -> None:
        Seeder(self, rng, max(0, records)).run()

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        if entity == "transform_maps":
            return [m.model_dump() for maps in self._maps.values() for m in maps]
        if entity == "sys_dictionary":
            return list(self._dictionary().rows())
        table = self._tables.get(ENTITY_ALIASES.get(entity, entity))
        if table is None:
            raise KeyError(entity)
        return [dict(row) for row in table.rows()]

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Create or change a record of any table (aliases: suppliers, purchase_orders, ...);
        `transform_maps` registers a transform map; `sys_dictionary` adds a column to a table
        (`name`, `element`). System fields given here are honoured."""
        if entity == "transform_maps":
            tmap = TransformMap.model_validate(payload)
            self._register_map(tmap)
            return tmap.model_dump()
        if entity == "sys_dictionary":
            table_name, column = str(payload.get("name") or ""), str(payload.get("element") or "")
            if not table_name or not column:
                raise ValueError("a dictionary entry needs name (the table) and element (the column)")
            self._add_column(table_name, column)
            return next(r for r in self._dictionary().find("name", table_name) if r["element"] == column)
        table = self._table(ENTITY_ALIASES.get(entity, entity), create=True)
        values = {k: as_string(v) for k, v in payload.items()}
        table.columns.update(k for k in values if k not in SYS_FIELDS)
        sys_id = values.get("sys_id", "")
        if sys_id and sys_id in table:
            return dict(self._update(table, sys_id, values, user="admin", honour_sys=True))
        return dict(self._insert(table, values, user="admin", honour_sys=True))

    def tick(self, count: int) -> list[dict[str, Any]]:
        changed: list[dict[str, Any]] = []
        keys = {name: [r["sys_id"] for r in self._tables[name].rows()] for name in TICK_CHANGES if name in self._tables}
        candidates = [name for name, ids in keys.items() if ids]
        for i in range(max(0, count) if candidates else 0):
            table = self._tables[candidates[i % len(candidates)]]
            sys_id = self._tick_rng.choice(keys[table.name])
            column, make = TICK_CHANGES[table.name]
            row = self._update(table, sys_id, {column: make(self._tick_rng, table.get(sys_id).get(column, ""))},
                               user="system", force=True)
            changed.append({"table": table.name, "sys_id": sys_id, "field": column,
                            "sys_updated_on": row["sys_updated_on"], "sys_mod_count": row["sys_mod_count"]})
        return changed

    def rate_limited_response(self, retry_after: float) -> Response:
        wait = max(1, math.ceil(retry_after))
        limit = int(self.rate_limit or FAULT_RULE_LIMIT)
        resource = "Import Set API" if "/import/" in request.path else "Table API"
        return sn_error(429, "Rate limit exceeded", f"Rate limit of {limit} requests per hour for {resource} exceeded",
                        headers={"Retry-After": str(wait), "X-RateLimit-Limit": str(limit),
                                 "X-RateLimit-Reset": str(int(time.time() + wait)), "X-RateLimit-Rule": self.rate_rule_id})

    def error_response(self, status: int, message: str) -> Response:
        return sn_error(status, message, "The instance could not process the request")
