"""Acumatica contract-based REST API simulator.

Serves `/entity/{Endpoint}/{Version}/{Entity}` the way an Acumatica instance does: every
field a value object, details only when `$expand`-ed, `$filter`/`$select`/`$top`/`$skip`,
PUT upserts by `id` or key fields (with the `If-None-Match: *` / `If-Match: *` variants),
long-running actions polled through a `Location` status URL, OAuth 2 at
`/identity/connect/token`, cookie sessions at `/entity/auth/login`, and the three license
limits (API users, concurrent requests, requests per minute). Facts the vendor notes mark
unconfirmed are settings (`AcumaticaSettings`, `LicenseLimits`) with the documented default.

Modules: `model` (entities, settings, values, $filter), `store` (tables, seed), `rules`
(business rules), `routes` (the HTTP surface: OAuth, sessions, API users, entities); the
class that joins them, one tenant of an instance on the Default endpoint, is here.
"""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from typing import Any

from sandboxes.acumatica.model import (
    ENDPOINT_NAME, ENDPOINT_VERSION, ENTITIES, AcumaticaSettings, ApiError, EntityDef, LicenseLimits, Operation,
    Shape, iso, wrap_plain,
)
from sandboxes.acumatica.routes import LicenseGate, RoutesMixin
from sandboxes.acumatica.rules import RulesMixin
from sandboxes.acumatica.store import Records, StoreMixin
from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit.clock import Clock
from sandboxes.kit.tokens import IssuedToken

__all__ = ["ENDPOINT_NAME", "ENDPOINT_VERSION", "ENTITIES", "AcumaticaSandbox", "AcumaticaSettings", "ApiError",
           "EntityDef", "LicenseLimits", "Shape"]


class AcumaticaSandbox(RoutesMixin, RulesMixin, StoreMixin, Sandbox):
    """A faithful in-memory Acumatica instance (one tenant, Default endpoint)."""

    vendor = "acumatica"

    def __init__(self, options: SandboxOptions | None = None, *, settings: AcumaticaSettings | None = None,
                 limits: LicenseLimits | None = None) -> None:
        options = options or SandboxOptions()
        ttl = {"token_ttl": options.token_ttl} if options.token_ttl else {}
        self._initial_settings = (settings or AcumaticaSettings()).model_copy(update=ttl)
        # options.rate_limit is requests per minute here
        rpm = {"requests_per_minute": int(options.rate_limit) or None} if options.rate_limit is not None else {}
        self._initial_limits = (limits or LicenseLimits()).model_copy(update=rpm)
        cred_rng = random.Random(f"acumatica-credentials-{options.seed}")
        self.client_guid = str(uuid.UUID(int=cred_rng.getrandbits(128), version=4)).upper()
        self.client_secret = "acu-" + "".join(cred_rng.choice("abcdefghjkmnpqrstuvwxyz23456789") for _ in range(32))
        self.username = "integration"
        self.password = "Pw-" + "".join(cred_rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(20))
        self._gate = LicenseGate()
        self.clock = Clock(resolution_us=1)  # full precision: stamps are written to the millisecond
        super().__init__(options)  # clear_state() then seed() make the state below

    # ---- identity ---------------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return f"{self.client_guid}@{self.settings.tenant}"

    def info(self) -> dict[str, Any]:
        return {"vendor": self.vendor, "api_base": self.base_url,
                "token_url": f"{self.base_url}/identity/connect/token",
                "credentials": {"client_id": self.client_id, "client_secret": self.client_secret,
                                "username": self.username, "password": self.password, "tenant": self.settings.tenant,
                                "endpoint_version": self.settings.endpoint_versions[0]}}

    # ---- state ------------------------------------------------------------------------------------

    def clear_state(self) -> None:
        self.settings = self._initial_settings.model_copy()
        self.limits = self._initial_limits.model_copy()
        self._rpm = RateWindow(self.limits.requests_per_minute, 60.0)
        self.tables: dict[str, Records] = {name: Records(d) for name, d in ENTITIES.items()}
        self.operations: dict[str, Operation] = {}
        self._pending: dict[str, Operation] = {}  # operations not yet finished
        self.sessions: dict[str, IssuedToken] = {}  # what holds an API-user slot: cookies (and tokens, if set)
        self._session_locks: dict[str, threading.Lock] = {}
        self.auth_codes: dict[str, dict[str, Any]] = {}
        self.files: dict[str, tuple[str, bytes, str]] = {}  # id -> (name, content, media type)

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        d = self._entity_for(entity)
        try:
            rec = self._save(d, wrap_plain(d.shape, payload), mode="upsert", branch=None, business_date=None)
        except ApiError as exc:
            if not isinstance(exc.body, dict):
                raise ValueError(exc.message) from None
            parts = [exc.body.get("error") or exc.body.get("exceptionMessage") or exc.message]
            parts += [f"{'.'.join(map(str, path))}: {msg}" for path, msg in exc.body.get("_errors", [])]
            raise ValueError(" ".join(p for p in parts if p)) from None
        return copy.deepcopy(rec)

    def tick(self, count: int) -> list[dict[str, Any]]:
        """Edit `count` records (a description, a phone number) so a poll sees them changed."""
        changed = []
        for _ in range(max(0, count)):
            d = ENTITIES[self._tick_rng.choice(("Vendor", "Customer", "Bill", "Invoice", "Payment", "Account"))]
            rows = self.tables[d.name].rows()
            if not rows:
                continue
            rec = copy.deepcopy(rows[self._tick_rng.randrange(len(rows))])
            stamp = self._tick_rng.randint(1000, 9999)
            if d.name in ("Vendor", "Customer"):
                rec["MainContact"]["Phone1"] = f"+1 ({self._tick_rng.randint(200, 989)}) 555-{stamp}"
            else:
                rec["Description"] = f"{(rec.get('Description') or '').split(' (rev ')[0]} (rev {stamp})"
            rec[d.change_field or "LastModifiedDateTime"] = iso(self.clock.now_seconds())
            self.tables[d.name].put(rec)
            changed.append({"entity": d.name, "collection": d.collection, "id": rec["id"],
                            "key": [rec.get(k) for k in d.keys], "LastModifiedDateTime": rec.get(d.change_field or "")})
        return changed

    def active_sessions(self) -> int:
        with self.lock:
            now = time.time()
            for sid in [s for s, t in self.sessions.items() if t.expires_at <= now]:
                self.sessions.pop(sid, None)
                self._session_locks.pop(sid, None)
            return len(self.sessions)
