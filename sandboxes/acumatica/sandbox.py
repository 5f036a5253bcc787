"""The Acumatica sandbox: one tenant of an instance on the Default endpoint, its identity
server and licence, put together from the store, rules, auth and routes of this package."""

from __future__ import annotations

import copy
import random
import threading
import time
import uuid
from typing import Any

from sandboxes.acumatica.auth import AuthMixin, LicenseGate
from sandboxes.acumatica.model import ENTITIES, AcumaticaSettings, ApiError, LicenseLimits, Operation, iso, wrap_plain
from sandboxes.acumatica.routes import RoutesMixin
from sandboxes.acumatica.rules import RulesMixin
from sandboxes.acumatica.store import Records, StoreMixin
from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.kit.clock import Clock
from sandboxes.kit.tokens import IssuedToken


class AcumaticaSandbox(RoutesMixin, AuthMixin, RulesMixin, StoreMixin, Sandbox):
    """A faithful in-memory Acumatica instance (one tenant, Default endpoint)."""

    vendor = "acumatica"

    def __init__(self, options: SandboxOptions | None = None, *, settings: AcumaticaSettings | None = None,
                 limits: LicenseLimits | None = None) -> None:
        options = options or SandboxOptions()
        base_settings = settings or AcumaticaSettings()
        if options.token_ttl:
            base_settings = base_settings.model_copy(update={"token_ttl": options.token_ttl})
        base_limits = limits or LicenseLimits()
        if options.rate_limit is not None:  # options.rate_limit is requests per minute here
            base_limits = base_limits.model_copy(update={"requests_per_minute": int(options.rate_limit) or None})
        self._initial_settings = base_settings
        self._initial_limits = base_limits
        self.settings = base_settings.model_copy()
        self.limits = base_limits.model_copy()
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

    def _now(self) -> float:
        """Server time that never runs backwards, so LastModifiedDateTime ordering stays sane."""
        return self.clock.now_seconds()

    def put_entity(self, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        d = self._entity_for(entity)
        body = wrap_plain(d.shape, payload)
        try:
            rec = self._save(d, body, mode="upsert", branch=None, business_date=None)
        except ApiError as exc:
            raise ValueError(self._error_text(exc)) from None
        return copy.deepcopy(rec)

    @staticmethod
    def _error_text(exc: ApiError) -> str:
        if isinstance(exc.body, dict):
            parts = [exc.body.get("error") or exc.body.get("exceptionMessage") or exc.message]
            parts += [f"{'.'.join(map(str, path))}: {msg}" for path, msg in exc.body.get("_errors", [])]
            return " ".join(p for p in parts if p)
        return exc.message

    def tick(self, count: int) -> list[dict[str, Any]]:
        """Edit `count` records (a description, a phone number) so a poll sees them changed."""
        changed = []
        choices = ("Vendor", "Customer", "Bill", "Invoice", "Payment", "Account")
        for _ in range(max(0, count)):
            name = self._tick_rng.choice(choices)
            table = self.tables[name]
            rows = table.rows()
            if not rows:
                continue
            old = rows[self._tick_rng.randrange(len(rows))]
            rec = copy.deepcopy(old)
            stamp = self._tick_rng.randint(1000, 9999)
            if name in ("Vendor", "Customer"):
                rec["MainContact"]["Phone1"] = f"+1 ({self._tick_rng.randint(200, 989)}) 555-{stamp}"
            else:
                base = (rec.get("Description") or "").split(" (rev ")[0]
                rec["Description"] = f"{base} (rev {stamp})"
            rec[ENTITIES[name].change_field or "LastModifiedDateTime"] = iso(self._now())
            table.put(rec)
            changed.append({"entity": name, "collection": ENTITIES[name].collection, "id": rec["id"],
                            "key": [rec.get(k) for k in ENTITIES[name].keys],
                            "LastModifiedDateTime": rec.get(ENTITIES[name].change_field or "")})
        return changed

    def active_sessions(self) -> int:
        with self.lock:
            now = time.time()
            for sid in [s for s, t in self.sessions.items() if t.expires_at <= now]:
                self.sessions.pop(sid, None)
                self._session_locks.pop(sid, None)
            return len(self.sessions)

