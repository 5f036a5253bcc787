"""The Epicor sandbox: one instance, one company, its concerns mixed in from the modules."""

from __future__ import annotations

import random
from typing import Any

from sandboxes.base import RateWindow, Sandbox, SandboxOptions
from sandboxes.epicor.query import QueryMixin
from sandboxes.epicor.routes import RoutesMixin
from sandboxes.epicor.rules import RulesMixin
from sandboxes.epicor.seed import SeedMixin
from sandboxes.epicor.settings import EpicorSandboxSettings, LostAnswers, UpdateMasterHold
from sandboxes.epicor.store import StoreMixin, make_tables
from sandboxes.kit.clock import MILLISECOND_US, Clock


class EpicorSandbox(RoutesMixin, QueryMixin, RulesMixin, SeedMixin, StoreMixin, Sandbox):
    """Epicor Kinetic REST v2 for one instance and one company."""

    vendor = "epicor"

    def __init__(self, options: SandboxOptions | None = None,
                 settings: EpicorSandboxSettings | None = None) -> None:
        self.settings = settings or EpicorSandboxSettings()
        opts = options or SandboxOptions()
        self.token_ttl = opts.token_ttl if opts.token_ttl else self.settings.token_ttl
        # Epicor publishes no request rate limit: off unless options.rate_limit asks for one.
        self.rate_window = RateWindow(opts.rate_limit or None)
        self.clock = Clock(MILLISECOND_US)
        self.users = {self.settings.username: self.settings.password, **self.settings.other_users}
        self.api_key = "ek_" + format(random.Random(opts.seed * 7919 + 3).getrandbits(160), "040x")
        self.tables = make_tables()
        self.update_master_hold = UpdateMasterHold(count=0)
        self.lost_answers = LostAnswers(count=0)
        super().__init__(opts)

    def info(self) -> dict[str, Any]:
        instance, settings = self.settings.instance, self.settings
        return {"vendor": "epicor", "api_base": f"{self.base_url}/{instance}",
                "token_url": f"{self.base_url}/{instance}/TokenResource.svc/",
                "credentials": {"username": settings.username, "password": settings.password, "api_key": self.api_key,
                                "company": settings.company, "instance": instance}}
