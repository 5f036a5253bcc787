"""The connector base: `iter_changed`, `get` and `find` written once on hooks, and what every
connector module on the kit has in common (one retry field, unknown settings refused, external
keys that name real fields)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any, ClassVar, Iterator, Mapping

import pytest
from pydantic import BaseModel, Field, ValidationError

from connectors import acumatica, procore, servicenow, servicetitan, syspro
from connectors.base import (
    AmbiguousKeyError,
    CheckStep,
    Connector,
    EntitySpec,
    VendorModel,
    record_value,
    same_value,
)
from mlconnector.http import HttpRuntime, NotFoundError, OffsetPaging, Page, Paginator, RetrySettings
from mlconnector.http.runtime import build_runtime


class Thing(VendorModel):
    id: int
    code: str = Field("", alias="Code")
    changed: datetime


class Memory(Connector):
    """A vendor held in a list: `where` filters exactly, unless the vendor ignores filters."""

    system: ClassVar[str] = "memory"
    Config: ClassVar[type[BaseModel]] = BaseModel
    Credentials: ClassVar[type[BaseModel]] = BaseModel
    entities: ClassVar[dict[str, EntitySpec[Any]]] = {
        "things": EntitySpec("things", "/things", "id", "changed", Thing,
                             external_keys=(("Code",), ("region", "number"))),
    }

    def __init__(self, rows: list[dict[str, Any]], *, ignores_filters: bool = False) -> None:
        self.data = rows
        self.ignores_filters = ignores_filters
        self.requests: list[dict[str, Any]] = []
        self.closed = 0

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "Memory":
        return cls([])

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}

    def check(self) -> list[CheckStep]:
        return []

    def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
        return OffsetPaging("limit", "offset", 2)

    def pages(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool = False) -> Iterator[Page]:
        try:
            yield from super().pages(spec, params, stable=stable)
        finally:
            self.closed += 1  # where a vendor session would be closed

    def fetch_page(self, spec: EntitySpec[Any], request: dict[str, Any]) -> Page:
        self.requests.append(dict(request))
        where = {} if self.ignores_filters else request.get("where", {})
        low, high = request.get("since"), request.get("until")
        chosen = [row for row in self.data if all(str(row.get(k)).lower() == str(v).lower() for k, v in where.items())
                  and (low is None or row["changed"] >= low) and (high is None or row["changed"] < high)]
        return Page(chosen[request["offset"]:request["offset"] + request["limit"]])

    def changed_params(self, spec: EntitySpec[Any], since: datetime | None, until: datetime) -> dict[str, Any]:
        return {"since": since, "until": until}

    def key_params(self, spec: EntitySpec[Any], key: Mapping[str, Any]) -> dict[str, Any]:
        return {"where": dict(key)}


def at(hour: int) -> datetime:
    return datetime(2025, 5, 1, hour, tzinfo=timezone.utc)


def thing(thing_id: int, code: str, hour: int, **extra: Any) -> dict[str, Any]:
    return {"id": thing_id, "Code": code, "changed": at(hour), **extra}


ROWS = [thing(1, "A-1", 1, region="north", number=7), thing(2, "A-2", 2, region="south", number=7),
        thing(3, "A-3", 3), thing(4, "A-4", 4), thing(5, "a-3", 5)]


def test_iter_changed_walks_the_window_lazily_through_the_hooks() -> None:
    vendor = Memory(ROWS)
    changed = vendor.iter_changed("things", at(2), at(5))
    assert vendor.requests == []
    assert [t.id for t in changed] == [2, 3, 4]
    assert [r["offset"] for r in vendor.requests] == [0, 2]
    assert all(isinstance(t, Thing) for t in vendor.iter_changed("things", None, at(9)))


def test_a_consumer_that_stops_early_closes_the_listing_at_once() -> None:
    vendor = Memory(ROWS)
    changed = vendor.iter_changed("things", None, at(9))
    next(changed)
    changed.close()
    assert vendor.closed == 1 and len(vendor.requests) == 1


def test_find_returns_the_one_record_or_none() -> None:
    vendor = Memory(ROWS)
    found = vendor.find("things", Code="A-2")
    assert isinstance(found, Thing) and found.id == 2
    assert vendor.requests[-1]["where"] == {"Code": "A-2"}
    assert vendor.find("things", region="NORTH", number="7").id == 1  # key values compare as the vendors do
    assert vendor.find("things", Code="A-9") is None
    assert vendor.find("things", region="north", number=7, Code="A-2") is None  # extra fields narrow


def test_find_refuses_an_ambiguous_key() -> None:
    with pytest.raises(AmbiguousKeyError) as ambiguous:
        Memory(ROWS).find("things", Code="A-3")  # A-3 and a-3 are one key to a case-blind vendor
    assert ambiguous.value.vendor == "memory" and "Code='A-3'" in ambiguous.value.message


def test_find_checks_each_row_again_when_the_vendor_ignores_the_filter() -> None:
    vendor = Memory(ROWS, ignores_filters=True)
    assert vendor.find("things", Code="A-4").id == 4
    assert len(vendor.requests) == 3  # every row had to be read, and only the right one came back


def test_find_takes_only_a_declared_key() -> None:
    vendor = Memory(ROWS)
    with pytest.raises(ValueError, match=re.escape("things is found by id | Code | region+number; got region")):
        vendor.find("things", region="north")
    with pytest.raises(ValueError, match="memory has no entity 'widgets'"):
        vendor.find("widgets", Code="A-1")
    assert vendor.requests == []


def test_get_reads_by_the_record_id() -> None:
    vendor = Memory(ROWS)
    assert vendor.get("things", 3).code == "A-3"
    with pytest.raises(NotFoundError) as missing:
        vendor.get("things", 99)
    assert missing.value.status == 404 and missing.value.message == "things 99 not found"


def test_a_connector_without_hooks_says_what_it_cannot_do() -> None:
    class Bare(Memory):
        def paginator(self, spec: EntitySpec[Any], params: Mapping[str, Any], *, stable: bool) -> Paginator:
            return Connector.paginator(self, spec, params, stable=stable)

    with pytest.raises(NotImplementedError, match="memory declares no paginator for things"):
        Bare(ROWS).get("things", 1)


def test_record_value_reads_fields_aliases_and_kept_unknown_fields() -> None:
    record = Thing.model_validate(thing(1, "A-1", 1, region="north"))
    assert (record_value(record, "id"), record_value(record, "Code"), record_value(record, "code")) == (1, "A-1", "A-1")
    assert record_value(record, "region") == "north" and record_value(record, "absent") is None
    assert same_value(" A-1 ", "a-1") and same_value(42, "42") and same_value(None, None)
    assert not same_value(None, "") and not same_value("A-1", "A-10")


# ---- every connector on the kit -----------------------------------------------------------------------

CONNECTORS: dict[str, tuple[type[Connector], dict[str, Any], dict[str, Any], str]] = {
    "servicetitan": (servicetitan.ServiceTitanConnector, {"tenant": 1},
                     {"client_id": "c", "client_secret": "s3cret-1", "app_key": "k3y-1"}, "client"),
    "acumatica": (acumatica.AcumaticaConnector, {"base_url": "https://acme.example.com/AcumaticaERP"},
                  {"client_id": "g@T", "client_secret": "s3cret-1", "username": "u", "password": "p4ss-1"}, "http"),
    "procore": (procore.ProcoreConnector, {"company_id": 1}, {"client_id": "c", "client_secret": "s3cret-1"}, "client"),
    "servicenow": (servicenow.ServiceNowConnector, {"instance_url": "https://acme.service-now.com"},
                   {"client_id": "c", "client_secret": "s3cret-1", "username": "u", "password": "p4ss-1"}, "client"),
    "syspro": (syspro.SysproConnector, {"api_base": "https://erp.example.com/SYSPROWCFService/Rest"},
               {"operator": "ADMIN", "operator_password": "p4ss-1", "company_id": "EDU1"}, "_reads"),
}


@pytest.mark.parametrize("system", list(CONNECTORS))
def test_one_retry_field_and_it_reaches_the_client(system: str) -> None:
    cls, config, credentials, client = CONNECTORS[system]
    fields = cls.Config.model_fields
    assert fields["retry"].annotation is RetrySettings
    assert not [name for name in fields if name.startswith("retry_")]
    connector = cls.create({**config, "retry": {"base": 0.25, "max_tries": 2, "max_wait": 1.5}}, credentials,
                           build_runtime(""))
    policy = getattr(connector, client).retry
    assert (policy.base, policy.max_tries, policy.max_wait) == (0.25, 2, 1.5)


@pytest.mark.parametrize("system", list(CONNECTORS))
def test_unknown_settings_and_credentials_are_refused(system: str) -> None:
    cls, config, credentials, _ = CONNECTORS[system]
    runtime = build_runtime("")
    for bad_config, bad_credentials in (({**config, "retry_base": 0.05}, credentials),
                                        ({**config, "retry": {"bsae": 0.05}}, credentials),
                                        (config, {**credentials, "pasword": "x"})):
        with pytest.raises(ValidationError):
            cls.create(bad_config, bad_credentials, runtime)


@pytest.mark.parametrize("system", list(CONNECTORS))
def test_external_keys_name_fields_of_the_records(system: str) -> None:
    cls, config, credentials, _ = CONNECTORS[system]
    connector = cls.create(config, credentials, build_runtime(""))
    for spec in connector.entities.values():
        names = {n for name, info in spec.model.model_fields.items() for n in (name, info.alias) if n}
        for key in spec.external_keys:
            dynamic = {getattr(connector.config, "po_reference_field", None)}  # a column chosen per deployment
            assert set(key) <= names | dynamic | {"project_id"}, (spec.name, key)
