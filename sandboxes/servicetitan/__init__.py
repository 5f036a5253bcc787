"""ServiceTitan API v2 simulator: the auth host and the API host in one Flask app.

It answers the modules the integration pairs use (accounting, crm, inventory, settings, and
the jobs the webhooks announce) with the vendor's paths, headers, envelopes, field names
and RFC 7807 errors, shaped exactly as the vendor's OpenAPI specs describe the responses
(every response schema there forbids extra properties). It also signs and delivers
webhooks with the vendor's retry schedule. Facts marked (unconfirmed) in
shared/vendor-apis/servicetitan.md are settings here, defaulting to the documented guess.

Layout: `vendor` (facts, value formats, errors, read views), `store` (tables and the seeded
tenant), `rules` (business rules), `routes` (the HTTP surface), `params` (reading and checking requests),
`webhooks` (signed deliveries and retries).
"""

from __future__ import annotations

import itertools
import json
import random
from typing import Any, Literal

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit.clock import MILLISECOND_US, Clock
from sandboxes.servicetitan.routes import RoutesMixin
from sandboxes.servicetitan.rules import RulesMixin
from sandboxes.servicetitan.store import BUSINESS_UNITS, GL_ACCOUNTS, SKUS, StoreMixin, Table
from sandboxes.servicetitan.vendor import (
    ALL_SCOPES, APP_KEY_MISSING, DEFAULT_RATE_LIMIT, DEFAULT_TENANT_ID, DEFAULT_TOKEN_TTL, EXPORT_PAGE_SIZE,
    MAX_PAGE_SIZE, RESOURCES, WEBHOOK_RETRY_SCHEDULE, WEBHOOK_TIMEOUT, sign_webhook,
)
from sandboxes.servicetitan.webhooks import WebhookHub


class ServiceTitanSandbox(RoutesMixin, RulesMixin, StoreMixin, Sandbox):
    """ServiceTitan's auth and API hosts. State lives in `self.tables` under `self.lock`."""

    vendor = "servicetitan"

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        tenant_id: int = DEFAULT_TENANT_ID,
        webhook_retry_scale: float = 1.0,
        webhook_retry_schedule: tuple[float, ...] = WEBHOOK_RETRY_SCHEDULE,
        webhook_timeout: float = WEBHOOK_TIMEOUT,
        max_page_size: int = MAX_PAGE_SIZE,
        export_page_size: int = EXPORT_PAGE_SIZE,
        unique_vendor_names: bool = True,  # (unconfirmed) ServiceTitan refuses a second vendor of one name
        seed_scope: Literal["all", "purchasing"] = "all",
    ) -> None:
        options = options or SandboxOptions()
        # "purchasing": vendors and `records` received purchase orders, each with its
        # inventory bill, and nothing else; large backfills without a tenant's whole history.
        self.seed_scope = seed_scope
        creds = random.Random(f"servicetitan-credentials-{options.seed}")
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        self.client_id, self.client_secret, self.app_key = (f"{prefix}.{''.join(creds.choices(alphabet, k=k))}"
                                                            for prefix, k in (("cid", 24), ("cs1", 48), ("ak1", 36)))
        self.tenant_id = tenant_id
        self.token_ttl = options.token_ttl or DEFAULT_TOKEN_TTL
        self.rate = RateWindow(None)  # its limit is set by clear_state
        self.webhook_retry_scale = webhook_retry_scale
        self.webhook_retry_schedule = tuple(webhook_retry_schedule)
        self.webhook_timeout = webhook_timeout
        self.max_page_size = max_page_size
        self.export_page_size = export_page_size
        self.unique_vendor_names = unique_vendor_names
        self.clock = Clock(MILLISECOND_US)
        self.webhooks = WebhookHub(self, options.seed)
        super().__init__(options)

    # ---- Sandbox contract ----------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "vendor": self.vendor,
            "api_base": self.base_url,
            "token_url": f"{self.base_url}/connect/token",
            "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                            "app_key": self.app_key, "tenant": self.tenant_id},
        }

    def clear_state(self) -> None:
        self.tables = {name: Table(name, res.first_id) for name, res in RESOURCES.items()}
        self._item_ids = itertools.count(1_000_001)
        self._location_ids = itertools.count(110_001)
        self._tick_rng = random.Random(self.options.seed + 2)
        self._gl_cache = (-1, {})
        self.rate.limit = DEFAULT_RATE_LIMIT if self.options.rate_limit is None else (self.options.rate_limit or None)
        self.rate.reset()
        self.app_scopes = set(ALL_SCOPES)
        self.webhooks.clear()

    def get_entities(self, entity: str) -> list[dict[str, Any]]:
        table = self.tables[self._entity_name(entity)]
        return [json.loads(json.dumps(row.view)) for row in table.rows.values()]

__all__ = ["ALL_SCOPES", "APP_KEY_MISSING", "BUSINESS_UNITS", "GL_ACCOUNTS", "RESOURCES", "SKUS", "ServiceTitanSandbox",
           "sign_webhook"]
