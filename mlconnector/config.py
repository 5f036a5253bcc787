"""The integration config every pair extends, validated strictly.

An integration's config says which systems it talks to and how, how webhooks are verified,
how often each flow polls, from which date records move (go-live), and how counterparts
(vendors, customers, items, ...) are matched, created and written. A pair's config model
subclasses `IntegrationConfig` with its own business settings. Validation refuses unknown
keys, typos and wrong types, naming the field, and checks each system's settings against
its connector's own model.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

if TYPE_CHECKING:
    from mlconnector.flows import Pair

WritePolicy = Literal["create_only", "fill_blanks", "overwrite"]


class StrictModel(BaseModel):
    """Refuses keys it does not know: a typo in a config is an error, not a silent default."""

    model_config = ConfigDict(extra="forbid")


WEBHOOK_SECRETS = "webhook"  # the vault's name for an integration's webhook signing keys


class WebhookSettings(StrictModel):
    """How deliveries are signed. The signing keys are secrets: they live sealed in the vault
    (`mlconnector credentials set <integration> webhook`), never in the config."""

    signature_header: str = Field("X-ServiceTitan-Signature", description="Header carrying the signature (unconfirmed vendor fact).")
    signature_encoding: Literal["hex", "base64"] = Field("hex", description="Digest encoding of the signature (unconfirmed vendor fact).")


class WebhookCredentials(StrictModel):
    hmac_key: str = Field(min_length=16, description="Shared secret the sender signs webhook bodies with (HMAC-SHA256).")
    previous_hmac_key: str | None = Field(None, description="The key before a rotation, still accepted until removed.")


class CounterpartPolicy(StrictModel):
    """How one kind of counterpart (vendor, customer, item, ...) is found, made and written."""

    match: Literal["id", "code", "name"] = Field(
        "name", description="How a source record finds its target: by id/code derived from it, or by normalized name.")
    create: bool = Field(False, description="Create the target record when none matches (else the document is held).")
    similar: Literal["hold", "create"] = Field(
        "hold", description="Before creating: when a target record's name is close to the source's ('W.W. Grainger Inc' "
        "and 'Grainger'), hold for a person to link it (hold), or create anyway (create).")
    write_policy: WritePolicy = Field(
        "create_only", description="Changes to an existing target record: create_only (never), fill_blanks (empty "
        "fields only) or overwrite (remit-to, bank and tax fields change only under overwrite).")


class IntegrationConfig(StrictModel):
    systems: dict[str, dict[str, Any]] = Field(
        description="Per system (e.g. servicetitan, epicor): its connection settings, checked against its connector.")
    webhook: WebhookSettings = Field(default_factory=WebhookSettings, description="Webhook verification.")
    poll_seconds: dict[str, float] = Field(
        default_factory=dict, description="Per flow: seconds between catch-up polls (overrides the pair's default; 0 turns a poll off).")
    go_live: date | None = Field(
        None, description="Records dated before this day are not moved (their documents were keyed by hand).")
    counterparts: dict[str, CounterpartPolicy] = Field(
        default_factory=dict, description="Per counterpart kind (vendor, customer, ...): match, create and write policy.")

    def counterpart(self, kind: str) -> CounterpartPolicy:
        return self.counterparts.get(kind) or CounterpartPolicy()

    def before_go_live(self, when: date | datetime | str | None) -> bool:
        """True when a document dated `when` predates the go-live date (undated documents move)."""
        if self.go_live is None or when in (None, ""):
            return False
        if isinstance(when, str):
            try:
                when = datetime.fromisoformat(when.replace("Z", "+00:00"))
            except ValueError:
                return False
        if isinstance(when, datetime):
            when = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).date()
        return when < self.go_live


class ConfigError(ValueError):
    """A config that cannot be used, with every problem named by its field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _problems(error: ValidationError, prefix: str = "") -> list[str]:
    out = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"])
        where = f"{prefix}{where}" if where else prefix.rstrip(".") or "(config)"
        if item["type"] == "extra_forbidden" and where.startswith("webhook.") and where.endswith("hmac_key"):
            out.append(f"{where}: webhook keys are secrets, kept sealed in the vault: "
                       f"mlconnector credentials set <integration> {WEBHOOK_SECRETS}")
        elif item["type"] == "extra_forbidden":
            out.append(f"{where}: unknown key")
        elif item["type"] == "missing":
            out.append(f"{where}: required")
        else:
            out.append(f"{where}: {item['msg']}")
    return out


def validate_config(pair: "Pair", raw: Any) -> IntegrationConfig:
    """The pair's typed config, or ConfigError naming every bad field."""
    from connectors import connector_class

    if not isinstance(raw, dict):
        raise ConfigError(["(config): must be a JSON object"])
    problems: list[str] = []
    config = None
    try:
        config = pair.config_model.model_validate(raw)
    except ValidationError as error:
        problems += _problems(error)
    # Every problem at once: the systems and names are checked on the raw config too.
    systems = raw.get("systems") if isinstance(raw.get("systems"), dict) else {}
    wanted = set(pair.systems())
    for system in sorted(set(systems) - wanted):
        problems.append(f"systems.{system}: unknown system for {pair.name} (it uses {', '.join(sorted(wanted))})")
    for system in sorted(wanted):
        if system not in systems:
            if "systems" in raw:
                problems.append(f"systems.{system}: required")
            continue
        try:
            connector_class(system).Config.model_validate(systems[system])
        except ValidationError as error:
            problems.extend(_problems(error, f"systems.{system}."))
    flows = {f.name for f in pair.flows}
    polls = raw.get("poll_seconds") if isinstance(raw.get("poll_seconds"), dict) else {}
    problems += [f"poll_seconds.{name}: no such flow (flows: {', '.join(sorted(flows))})"
                 for name in sorted(set(polls) - flows)]
    kinds = {c.kind for c in pair.counterparts}
    declared = raw.get("counterparts") if isinstance(raw.get("counterparts"), dict) else {}
    problems += [f"counterparts.{name}: {pair.name} links no such kind (kinds: {', '.join(sorted(kinds)) or 'none'})"
                 for name in sorted(set(declared) - kinds)]
    if problems or config is None:
        raise ConfigError(list(dict.fromkeys(problems)))
    return config


def credentials_model(system: str) -> type[BaseModel]:
    """The model of one system's secrets: a connector's credentials, or the webhook keys."""
    from connectors import connector_class

    return WebhookCredentials if system == WEBHOOK_SECRETS else connector_class(system).Credentials


def validate_credentials(system: str, raw: Any) -> dict[str, Any]:
    """Credentials checked against their model: a missing or unexpected field is named."""
    model = credentials_model(system)
    if not isinstance(raw, dict):
        raise ConfigError([f"{system} credentials: must be a JSON object of fields ({', '.join(model.model_fields)})"])
    problems = [f"{system} credentials.{name}: unexpected field (expected: {', '.join(model.model_fields)})"
                for name in raw if name not in model.model_fields]
    try:
        model.model_validate({k: v for k, v in raw.items() if k in model.model_fields})
    except ValidationError as error:
        problems += _problems(error, f"{system} credentials.")
    if problems:
        raise ConfigError(problems)
    return raw


def template(pair: "Pair") -> dict[str, Any]:
    """A complete starting config: every field with its default and what it means.

    Each field is written as its value, with a sibling `_about_<field>` key explaining it;
    `integrations add` refuses those keys, so the operator deletes them once read (or uses
    `--strip-help`).
    """
    from connectors import connector_class

    body = _describe(pair.config_model)
    body["systems"] = {system: _describe(connector_class(system).Config) for system in pair.systems()}
    body["poll_seconds"] = {f.name: f.poll_seconds for f in pair.ordered_flows() if f.poll_seconds}
    body["counterparts"] = {c.kind: _describe(CounterpartPolicy) for c in pair.counterparts}
    return body


def strip_help(config: Any) -> Any:
    """The config without its `_about_...` explanations."""
    if isinstance(config, dict):
        return {k: strip_help(v) for k, v in config.items() if not str(k).startswith("_about_")}
    return config


def _describe(model: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        annotation = info.annotation
        nested = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if nested is not None:
            value: Any = _describe(nested)
        elif info.is_required():
            value = f"<{_type_name(annotation)}>"
        else:
            default = info.get_default(call_default_factory=True)
            value = default.model_dump(mode="json") if isinstance(default, BaseModel) else _jsonable(default)
        out[name] = value
        if info.description:
            out[f"_about_{name}"] = info.description
    return out


def _jsonable(value: Any) -> Any:
    import json

    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
