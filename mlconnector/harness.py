"""One pair harness: start a pair's sandboxes and register an integration against them.

The demo, the tests and the benchmarks all need the same set-up: the sandboxes of the
pair's systems running over real HTTP, an integration whose config points at them (the
pair's own `sandbox_config`, with overrides), and its credentials sealed in the vault.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from mlconnector.flows import Pair, get_pair


@dataclass
class SandboxSet:
    """Running sandboxes by system, and the connector settings that reach each."""

    running: dict[str, Any] = field(default_factory=dict)  # system -> sandboxes.base.RunningSandbox

    def info(self, system: str) -> dict[str, Any]:
        return self.running[system].info()

    def url(self, system: str) -> str:
        return self.running[system].url

    def settings(self, system: str) -> tuple[dict[str, Any], dict[str, Any]]:
        from connectors import connector_class

        return connector_class(system).settings_from_sandbox_info(self.info(system))

    def config(self, system: str) -> dict[str, Any]:
        return self.settings(system)[0]

    def credentials(self, system: str) -> dict[str, Any]:
        return self.settings(system)[1]

    def stop(self) -> None:
        for running in self.running.values():
            running.stop()
        self.running.clear()


def start_sandboxes(systems: tuple[str, ...] | list[str], options: Any = None,
                    options_for: Callable[[str], Any] | None = None) -> SandboxSet:
    """Start one sandbox per system on a free port (options per system when given)."""
    from sandboxes import SandboxOptions, create_sandbox, start_sandbox

    started = SandboxSet()
    try:
        for system in systems:
            chosen = options_for(system) if options_for else (options or SandboxOptions())
            started.running[system] = start_sandbox(create_sandbox(system, chosen))
    except BaseException:
        started.stop()
        raise
    return started


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` laid over it, nested dicts merged key by key; None removes a key."""
    out = dict(base)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def sandbox_integration_config(pair: Pair, sandboxes: SandboxSet, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    if pair.sandbox_config is None:
        raise ValueError(f"pair {pair.name} declares no sandbox_config")
    return merge(pair.sandbox_config(sandboxes), overrides or {})


def register(integration_id: str, pair_name: str, sandboxes: SandboxSet, *, overrides: dict[str, Any] | None = None,
             name: str = "", replace: bool = True, webhook_key: str | None = None) -> dict[str, Any]:
    """Create (or repoint) `integration_id` for `pair_name` at the sandboxes; credentials sealed.

    Returns the config stored. An existing integration of that id is pointed at these
    sandboxes when `replace` (sandboxes start on new ports each run). A pair that takes
    webhooks gets its signing key sealed in the vault (`webhook_key`, else a random one).
    """
    import secrets

    from mlconnector.config import WEBHOOK_SECRETS
    from mlconnector import vault
    from mlconnector.config import validate_config
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    pair = get_pair(pair_name)
    config = sandbox_integration_config(pair, sandboxes, overrides)
    validate_config(pair, config)
    with session_scope() as session:
        existing = session.get(Integration, integration_id)
        if existing is not None:
            if not replace:
                raise ValueError(f"integration {integration_id!r} already exists")
            existing.config = config
        else:
            create_integration(session, integration_id, pair.name, config, name or integration_id)
        session.flush()
        for system in pair.systems():
            vault.store(session, integration_id, system, sandboxes.credentials(system))
        if pair.webhook_source:
            vault.store(session, integration_id, WEBHOOK_SECRETS, {"hmac_key": webhook_key or secrets.token_hex(24)})
    return config


@dataclass
class PairHarness:
    pair: Pair
    sandboxes: SandboxSet
    integration_id: str
    config: dict[str, Any]

    def connector(self, system: str) -> Any:
        from mlconnector.db.models import Integration
        from mlconnector.db.session import session_scope
        from mlconnector.integrations import connector_for

        with session_scope() as session:
            return connector_for(session, session.get(Integration, self.integration_id), system)

    def stop(self) -> None:
        self.sandboxes.stop()

    def __enter__(self) -> "PairHarness":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_pair(pair_name: str, integration_id: str, *, options: Any = None, options_for: Callable[[str], Any] | None = None,
               overrides: dict[str, Any] | None = None, name: str = "", webhook_key: str | None = None) -> PairHarness:
    """Start the pair's sandboxes and register `integration_id` against them (migrate first)."""
    pair = get_pair(pair_name)
    sandboxes = start_sandboxes(pair.systems(), options, options_for)
    try:
        config = register(integration_id, pair_name, sandboxes, overrides=overrides, name=name, webhook_key=webhook_key)
    except BaseException:
        sandboxes.stop()
        raise
    return PairHarness(pair, sandboxes, integration_id, config)
