"""What every vendor connector offers the engine, and the declarations it is built from.

A connector is one client (base URL, auth, headers, paging, error mapping) plus small
entity declarations (`EntitySpec`: path, record id, external keys, change field, model).
The engine only needs: build from config + credentials, read records changed since a
watermark (`iter_changed`), read one record (`get`), find a target record by its external
key (`find`), write, and `check()`.

`iter_changed`, `get` and `find` are written once, here, on a few hooks a connector fills
in: which paginator walks its lists, how one page is fetched, which params select a change
window or a key, how rows become models. A connector overrides a hook, not a method, where
its vendor differs.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, Iterable, Iterator, Mapping, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict

from mlconnector.http import ConnectorError, FatalError, HttpRuntime, NotFoundError, Page, Paginator

ModelT = TypeVar("ModelT", bound=BaseModel)


class VendorModel(BaseModel):
    """Base for vendor records: unknown fields are kept, so a payload round-trips whole."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class SettingsModel(BaseModel):
    """Base of a connector's Config and Credentials: an unknown key is refused, because a
    misspelt setting silently ignored is a deployment that does not do what it says."""

    model_config = ConfigDict(extra="forbid")


class AmbiguousKeyError(FatalError):
    """More than one record carries an external key that should name exactly one.

    Writing would pick one at random; a person has to merge or tell them apart first."""


@dataclass(frozen=True)
class EntitySpec(Generic[ModelT]):
    """One readable entity: where it lives, its record id, how changes are found, its model.

    `external_keys` are the field sets that name one record from outside the vendor (a PO
    number, vendor + invoice number, an ERP origin id): `find` takes one of them, complete,
    plus optional fields that narrow it. Field names are the vendor's.
    """

    name: str
    path: str
    key: str
    change_field: str | None
    model: type[ModelT]
    external_keys: tuple[tuple[str, ...], ...] = ()

    def key_of(self, fields: Iterable[str]) -> tuple[str, ...]:
        """The declared key (or the record id) that `fields` contain; ValueError if none."""
        given = set(fields)
        for declared in ((self.key,), *self.external_keys):
            if set(declared) <= given:
                return declared
        known = " | ".join("+".join(k) for k in ((self.key,), *self.external_keys))
        raise ValueError(f"{self.name} is found by {known}; got {', '.join(sorted(given)) or 'nothing'}")


@dataclass
class CheckStep:
    """One verdict of `check()`: an authenticated cheap read and how long it took."""

    step: str
    ok: bool
    latency_ms: float
    detail: str = ""


def timed_check(step: str, call: Any) -> CheckStep:
    """Run one check call, turning any connector error into a failed verdict."""
    started = time.perf_counter()
    try:
        detail = call()
        ok = True
    except ConnectorError as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # network trouble, bad URL: still a verdict, not a crash
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return CheckStep(step, ok, round((time.perf_counter() - started) * 1000, 1), str(detail or ""))


def record_value(record: BaseModel, name: str) -> Any:
    """A record's value for a vendor field name: the model field, the field aliased to it,
    or the unknown field kept under that name."""
    fields = type(record).model_fields
    if name in fields:
        return getattr(record, name)
    for field_name, info in fields.items():
        if info.alias == name:
            return getattr(record, field_name)
    return (record.model_extra or {}).get(name)


def plain(value: Any) -> dict[str, Any]:
    """A connector's model (or a mapping) as the JSON-shaped dict, in the vendor's own field
    names, that mappings, payload snapshots and the audit trail read."""
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    return dict(value)


def same_value(held: Any, wanted: Any) -> bool:
    """Key values compared as the vendors compare them: text trimmed and without regard to
    case, numbers by their text (an id read as 42 matches a key given as "42")."""
    if held is None or wanted is None:
        return held is None and wanted is None
    return str(held).strip().casefold() == str(wanted).strip().casefold()


class Connector(ABC):
    """Base of vendor connectors. Subclasses declare `system`, `Config`, `Credentials`,
    their entities and the hooks below."""

    system: ClassVar[str]
    Config: ClassVar[type[BaseModel]]
    Credentials: ClassVar[type[BaseModel]]
    entities: Mapping[str, EntitySpec[Any]] = {}

    @classmethod
    @abstractmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "Connector":
        """Validate config and credentials and build a ready client."""

    @classmethod
    @abstractmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(config, credentials) for a sandbox's `GET /_sandbox/info` answer."""

    @abstractmethod
    def check(self) -> list[CheckStep]:
        ...

    @property
    def call_count(self) -> int:
        """Outbound HTTP attempts made so far (API-economy accounting)."""
        return 0

    # ---- reads every connector offers, written once -------------------------------------------

    def spec(self, entity: str) -> EntitySpec[Any]:
        try:
            return self.entities[entity]
        except KeyError:
            known = ", ".join(self.entities) or "none"
            raise ValueError(f"{self.system} has no entity {entity!r}; known: {known}") from None

    def iter_changed(self, entity: str, since: datetime | None, until: datetime) -> Iterator[BaseModel]:
        """Records of `entity` changed at or after `since` (all if None) and before `until`,
        one page in memory at a time."""
        spec = self.spec(entity)
        pages = self.pages(spec, self.changed_params(spec, since, until), stable=True)
        try:
            for page in pages:
                for record in self.parse_rows(spec, page.rows):
                    if self.in_window(spec, record, since, until):
                        yield record
        finally:
            _close(pages)  # a consumer that stops early still ends the vendor session at once

    def get(self, entity: str, key: Any) -> BaseModel:
        """One record by its vendor id; NotFoundError when the vendor has none."""
        return self.read_one(self.spec(entity), key)

    def find(self, entity: str, **key: Any) -> BaseModel | None:
        """The one record carrying this external key, or None; AmbiguousKeyError when several do.

        The vendor filters on the key; each row is checked again here, because a vendor that
        ignores a filter it does not know answers with every row.
        """
        spec = self.spec(entity)
        spec.key_of(key)
        found: BaseModel | None = None
        pages = self.pages(spec, self.key_params(spec, key), stable=False)
        try:
            for page in pages:
                for record in self.parse_rows(spec, page.rows):
                    if not all(same_value(record_value(record, name), value) for name, value in key.items()):
                        continue
                    if found is not None:
                        shown = ", ".join(f"{name}={value!r}" for name, value in key.items())
                        raise AmbiguousKeyError(f"more than one {entity} has {shown}", vendor=self.system,
                                                endpoint=spec.path)
                    found = record
        finally:
            _close(pages)
        return found

    def rows(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Any]:
        """The raw rows of a listing, page after page."""
        pages = self.pages(spec, params, stable=stable)
        try:
            for page in pages:
                yield from page.rows
        finally:
            _close(pages)

    # ---- hooks --------------------------------------------------------------------------------

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        """How this vendor's lists are walked. `stable`: the listing is a change window whose
        rows may leave it while it is read, so a walk that could skip one must not."""
        raise NotImplementedError(f"{self.system} declares no paginator for {spec.name}")

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        """One list request with these params, as a Page."""
        raise NotImplementedError(f"{self.system} cannot list {spec.name}")

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        """Every page of a listing (override to open a vendor session or walk several scopes)."""
        return self.paginator(spec, params, stable=stable).pages(lambda request: self.fetch_page(spec, request), params)

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        """List params selecting the records changed in [since, until)."""
        raise NotImplementedError(f"{self.system} cannot list changes of {spec.name}")

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        """List params selecting the records carrying these key values."""
        raise NotImplementedError(f"{self.system} cannot look {spec.name} up by key")

    def parse_rows(self, spec: EntitySpec[Any], rows: Sequence[Any]) -> list[BaseModel]:
        """One page of rows as models (a page at a time, so a connector can add child rows in batches)."""
        return [spec.model.model_validate(row) for row in rows]

    def in_window(self, spec: EntitySpec[Any], record: BaseModel, since: datetime | None, until: datetime) -> bool:
        """Whether a record the vendor listed is inside [since, until); by default the vendor's
        filter decided it exactly."""
        return True

    def read_one(self, spec: EntitySpec[Any], key: Any) -> BaseModel:
        """One record by id; by default the list filtered on the id (override for a by-id path)."""
        found = self.find(spec.name, **{spec.key: key})
        if found is None:
            raise NotFoundError(f"{spec.name} {key} not found", vendor=self.system, status=404, endpoint=spec.path)
        return found


def _close(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


__all__ = [
    "AmbiguousKeyError", "CheckStep", "Connector", "EntitySpec", "ModelT", "SettingsModel", "VendorModel",
    "record_value", "same_value", "timed_check",
]
