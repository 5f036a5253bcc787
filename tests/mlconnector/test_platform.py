"""The pair platform without a fleet: config strictness, the resolver's branches, typed holds
and their release, persisted positions, write policies, the retry verdict, pair discovery."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import BaseModel

from mlconnector.config import ConfigError, IntegrationConfig, validate_config, validate_credentials
from mlconnector.flows import Flow, FlowContext, FlowHandler, MappedRecord, Pair, Plan, SourceRecord, WriteResult
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded, TargetCondition, parse_release
from mlconnector.policies import master_data_changes
from mlconnector.positions import Position
from mlconnector.resolver import CounterpartKind, Need, TargetRecord, resolve

# ---- config strictness -------------------------------------------------------------------

EPICOR = {"api_base": "http://127.0.0.1:1/KineticLive", "company": "EPIC06"}
ST = {"tenant": 1234567}


def _st_epicor() -> Pair:
    from mlconnector.flows import get_pair

    return get_pair("servicetitan-epicor")


def test_a_complete_config_is_accepted_and_typed() -> None:
    config = validate_config(_st_epicor(), {"systems": {"servicetitan": ST, "epicor": EPICOR}, "go_live": "2026-01-01",
                                            "counterparts": {"vendor": {"match": "id", "create": True}}})
    assert config.counterpart("vendor").match == "id" and config.counterpart("vendor").write_policy == "create_only"
    assert config.before_go_live("2025-12-31T10:00:00Z") and not config.before_go_live("2026-01-01")


@pytest.mark.parametrize("bad, named", [
    ({"auto_create_vendor": True}, "auto_create_vendor: unknown key"),
    ({"invoice_grop": "X"}, "invoice_grop: unknown key"),
    ({"gl": {"default_acount": "5100"}}, "gl.default_acount: unknown key"),
    ({"poll_seconds": {"vendors": "often"}}, "poll_seconds.vendors"),
    ({"poll_seconds": {"bills": 60}}, "poll_seconds.bills: no such flow"),
    ({"counterparts": {"customer": {}}}, "counterparts.customer: servicetitan-epicor links no such kind"),
    ({"counterparts": {"vendor": {"write_policy": "sometimes"}}}, "counterparts.vendor.write_policy"),
    ({"systems": {"servicetitan": ST}}, "systems.epicor: required"),
    ({"systems": {"servicetitan": ST, "epicor": EPICOR, "acumatica": {}}}, "systems.acumatica: unknown system"),
    ({"systems": {"servicetitan": {"tenant": "x"}, "epicor": EPICOR}}, "systems.servicetitan.tenant"),
])
def test_a_bad_config_is_refused_naming_the_field(bad: dict[str, Any], named: str) -> None:
    raw = {"systems": {"servicetitan": ST, "epicor": EPICOR}, **bad}
    with pytest.raises(ConfigError) as refused:
        validate_config(_st_epicor(), raw)
    assert any(named in problem for problem in refused.value.problems), refused.value.problems


def test_credentials_name_a_missing_or_unexpected_field() -> None:
    with pytest.raises(ConfigError) as refused:
        validate_credentials("servicetitan", {"client_id": "a", "clientsecret": "b", "app_key": "c"})
    text = "; ".join(refused.value.problems)
    assert "clientsecret: unexpected field" in text and "client_secret: required" in text


def test_the_template_explains_every_field_and_is_accepted_once_filled_in() -> None:
    from mlconnector.config import strip_help, template

    body = template(_st_epicor())
    assert "_about_go_live" in body and "_about_match" in body["counterparts"]["vendor"]
    assert set(body["poll_seconds"]) == {"vendors", "inventory_bills", "ap_payments", "epicor_vendors"}
    filled = strip_help(body)
    filled["systems"] = {"servicetitan": ST, "epicor": EPICOR}
    validate_config(_st_epicor(), filled)


def test_show_masks_secrets_but_not_urls_or_header_names() -> None:
    from mlconnector.redaction import redact

    shown = redact({"token_url": "https://auth.example/connect/token", "webhook": {"hmac_key": "s3cret-key",
                    "signature_header": "X-Sig"}, "api_key": "abcd1234"})
    assert shown == {"token_url": "https://auth.example/connect/token", "webhook": {"hmac_key": "***", "signature_header": "X-Sig"},
                     "api_key": "***"}


# ---- holds and write policies --------------------------------------------------------------

def test_release_keys_round_trip() -> None:
    for release in (LinkNeeded("vendor", "servicetitan", "511"), ConfigNeeded("gl.by_business_unit.7"),
                    TargetCondition("epicor", "ap_invoice", "28/INV-1", "posted")):
        assert parse_release(release.key) == release
    assert parse_release("vendor:servicetitan:511") is None
    assert Hold("waits").key == "person"


def test_write_policies_keep_master_data_unless_allowed() -> None:
    current = {"Name": "Acme Supply Distributors", "Address1": "9 Old Rd", "PhoneNum": "", "VendorID": "ACME01"}
    wanted = {"Name": "Acme Supply Co", "Address1": "1 Depot Rd", "PhoneNum": "555-0100", "VendorID": "ST501"}
    protected, keys = {"Address1"}, {"VendorID"}
    assert master_data_changes(current, wanted, "create_only", protected, keys).changes == {}
    fill = master_data_changes(current, wanted, "fill_blanks", protected, keys)
    assert fill.changes == {"PhoneNum": ("", "555-0100")} and "Address1" in fill.withheld and "Name" in fill.withheld
    over = master_data_changes(current, wanted, "overwrite", protected, keys)
    assert set(over.changes) == {"Name", "Address1", "PhoneNum"}


def test_the_retry_verdict_is_decided_by_error_class() -> None:
    from mlconnector.errors import MappingError, verdict
    from mlconnector.http.errors import FatalError, RetriableError
    from mlconnector.vault import VaultError

    assert verdict(RetriableError("429", vendor="x", status=429)) == "transient"
    assert verdict(FatalError("400 refused", vendor="x", status=400)) == "permanent"
    assert verdict(MappingError("not an amount")) == "permanent"
    assert verdict(VaultError("no credentials")) == "permanent"
    assert verdict(KeyError("id")) == "internal" and verdict(TypeError("bug")) == "internal"


# ---- resolver, releases and positions on a real (SQLite) database ---------------------------

class Row(BaseModel):
    key: str


TARGETS: dict[str, TargetRecord] = {}
CREATED: list[str] = []


class Widgets(CounterpartKind):
    kind = "widget"
    source_system = "shop"
    target_system = "ledger"

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        return [t for t in TARGETS.values() if t.code == f"W{need.source_id}"]

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        from mlconnector.links import normalize_name

        return [t for t in TARGETS.values() if normalize_name(t.name) == normalize_name(need.source_name)]

    def create(self, ctx: FlowContext, need: Need) -> TargetRecord:
        made = TargetRecord(str(100 + len(TARGETS)), need.source_name, f"W{need.source_id}")
        TARGETS[made.id] = made
        CREATED.append(made.id)
        return made

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        return TARGETS.get(target_id)

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        return TargetRecord(source_id, f"source {source_id}")

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        return [t for t in TARGETS.values() if text.lower() in t.name.lower()]


FEED: list[SourceRecord] = []
POSTED: set[str] = set()
SEEN_POSITIONS: list[Position] = []


class FeedHandler(FlowHandler):
    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        return {"id": source_id}

    def map(self, ctx: FlowContext, source: Any, counterparts: Any) -> Any:
        return MappedRecord(Row(key=source["id"]), {"key": source["id"]})

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        return Plan("create", mapped.external_key["key"])

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        return WriteResult(plan.target_id or "", "created")

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        SEEN_POSITIONS.append(since)
        after = int(since.cursor) if since.cursor else 0
        return iter([r for r in FEED if int(r.cursor or 0) > after])

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        return {c for c in conditions if c.target_id in POSTED}


class WidgetConfig(IntegrationConfig):
    pass


WIDGET_PAIR = Pair(name="widget-test", source="shop", target="ledger", config_model=WidgetConfig, counterparts=(Widgets(),),
                   flows=(Flow("feed", "shop", "rows", "ledger", "rows", FeedHandler(), poll_seconds=60),))


@pytest.fixture
def widget_db(configure, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from mlconnector.db import migrate
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope

    configure(MLCONNECTOR_PAIR_MODULES="tests.fleet_pair,tests.mlconnector.test_platform:WIDGET_PAIR")
    migrate.upgrade()
    TARGETS.clear(), CREATED.clear(), FEED.clear(), POSTED.clear(), SEEN_POSITIONS.clear()
    with session_scope() as session:
        session.add(Integration(id="w1", pair="widget-test", name="w1", config={"systems": {}}))
    yield session_scope


def _ctx(session: Any, dry_run: bool = False) -> FlowContext:
    from mlconnector import engine

    return engine.context_for(session, "w1", dry_run=dry_run)


def _set_config(session_scope: Any, config: dict[str, Any]) -> None:
    from mlconnector.db.models import Integration

    with session_scope() as session:
        session.get(Integration, "w1").config = config


def test_resolver_links_matches_holds_and_creates_each_as_a_decision(widget_db: Any) -> None:
    from mlconnector import links

    kind = WIDGET_PAIR.counterpart("widget")
    TARGETS["1"] = TargetRecord("1", "Acme Supply Co", "W7")
    TARGETS["2"] = TargetRecord("2", "Twin Parts", "X1")
    TARGETS["3"] = TargetRecord("3", "TWIN PARTS LLC", "X2")
    with widget_db() as session:
        matched = resolve(_ctx(session), kind, Need("widget", "7", "ACME SUPPLY COMPANY"))
        assert matched.target_id == "1" and matched.how == "matched_by_name"
        assert links.find(session, "w1", "widget", "shop", "7").how == "matched_by_name"
        again = resolve(_ctx(session), kind, Need("widget", "7", "renamed at the source"))
        assert again.target_id == "1" and again.how == "linked"
        twins = resolve(_ctx(session), kind, Need("widget", "8", "Twin Parts"))
        assert isinstance(twins, Hold) and "matches 2 ledger widgets" in twins.reason
        assert twins.releases == (LinkNeeded("widget", "shop", "8"),)
        missing = resolve(_ctx(session), kind, Need("widget", "9", "Nobody Inc"))
        assert isinstance(missing, Hold) and "links link w1 --kind widget 9" in missing.reason
        assert ConfigNeeded("counterparts.widget.create") in missing.releases and CREATED == []
    _set_config(widget_db, {"systems": {}, "counterparts": {"widget": {"create": True}}})
    with widget_db() as session:
        planned = resolve(_ctx(session, dry_run=True), kind, Need("widget", "9", "Nobody Inc"))
        assert planned.pending and planned.how == "to_create" and CREATED == []
        created = resolve(_ctx(session), kind, Need("widget", "9", "Nobody Inc"))
        assert created.how == "created" and CREATED == [created.target_id]
    _set_config(widget_db, {"systems": {}, "counterparts": {"widget": {"match": "code"}}})
    with widget_db() as session:
        by_code = resolve(_ctx(session), kind, Need("widget", "7", "anything"))  # linked already: the link wins
        assert by_code.how == "linked"
        assert resolve(_ctx(session), kind, Need("widget", "9", "x")).how == "linked"


def test_a_name_close_to_an_existing_target_is_held_for_a_person_not_created_twice(widget_db: Any) -> None:
    from mlconnector import links

    assert links.similar_names("W.W. Grainger Inc", "Grainger") and links.similar_names("Acme Supplies", "ACME SUPPLY CO")
    assert not links.similar_names("Summit Plumbing", "Summit Electric") and not links.similar_names("", "Grainger")
    assert not links.similar_names("Licence Test Customer 1", "Licence Test Customer 0")
    kind = WIDGET_PAIR.counterpart("widget")
    TARGETS["1"] = TargetRecord("1", "Grainger", "G1")
    _set_config(widget_db, {"systems": {}, "counterparts": {"widget": {"create": True}}})
    with widget_db() as session:
        held = resolve(_ctx(session), kind, Need("widget", "9", "W.W. Grainger Inc"))
        assert isinstance(held, Hold) and "looks like ledger widget 1 G1 'Grainger'" in held.reason and CREATED == []
        assert "links link w1 --kind widget 9" in held.reason
        assert held.releases == (LinkNeeded("widget", "shop", "9"), ConfigNeeded("counterparts.widget.similar"))
        assert isinstance(resolve(_ctx(session, dry_run=True), kind, Need("widget", "9", "W.W. Grainger Inc")), Hold)
        assert resolve(_ctx(session), kind, Need("widget", "10", "Northwind HVAC")).how == "created"
    _set_config(widget_db, {"systems": {}, "counterparts": {"widget": {"create": True, "similar": "create"}}})
    with widget_db() as session:
        assert resolve(_ctx(session), kind, Need("widget", "9", "W.W. Grainger Inc")).how == "created"
    assert len(CREATED) == 2


def _held(widget_db: Any, source_id: str, hold: Hold) -> int:
    from mlconnector import ledger, releases
    from mlconnector.db.models import SyncRecord

    with widget_db() as session:
        ledger.upsert_records(session, "w1", "feed", [SourceRecord(source_id, "v1")])
        record = session.query(SyncRecord).filter_by(source_id=source_id).one()
        releases.hold(session, record, hold)
        return record.id


def _status(widget_db: Any, record_id: int) -> str:
    from mlconnector.db.models import SyncRecord

    with widget_db() as session:
        return session.get(SyncRecord, record_id).status


def test_each_kind_of_release_requeues_exactly_its_holds(widget_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector import links, releases, tasks

    sent: list[Any] = []
    monkeypatch.setattr(tasks, "send", lambda work: sent.append(work))
    by_link = _held(widget_db, "a", Hold("needs widget 5", (LinkNeeded("widget", "shop", "5"),)))
    by_config = _held(widget_db, "b", Hold("needs gl", (ConfigNeeded("gl.by_unit.7"),)))
    by_target = _held(widget_db, "c", Hold("needs posting", (TargetCondition("ledger", "invoice", "INV-1", "posted"),)))
    by_person = _held(widget_db, "d", Hold("a person decides"))
    with widget_db() as session:
        links.link(session, "w1", kind="widget", source_system="shop", source_id="6", source_name="", target_system="ledger",
                   target_id="1", target_name="", how="manual")  # another widget: releases nothing
    assert _status(widget_db, by_link) == "held"
    with widget_db() as session:
        links.link(session, "w1", kind="widget", source_system="shop", source_id="5", source_name="", target_system="ledger",
                   target_id="1", target_name="", how="manual")
    assert _status(widget_db, by_link) == "pending" and _status(widget_db, by_config) == "held"
    assert [w.records for w in sent] == [{"widget-test": [by_link]}]  # published after the commit
    with widget_db() as session:
        assert releases.release_config_changes(session, "w1", {"gl": {"by_unit": {}}}, {"gl": {"by_unit": {"8": "x"}}}) == 0
        assert releases.release_config_changes(session, "w1", {"gl": {}}, {"gl": {"by_unit": {"7": "5100"}}}) == 1
    assert _status(widget_db, by_config) == "pending" and _status(widget_db, by_target) == "held"
    from mlconnector import engine

    engine.poll_flow("w1", "feed")
    assert _status(widget_db, by_target) == "held"  # not posted yet
    POSTED.add("INV-1")
    assert engine.poll_flow("w1", "feed").released == 1
    assert _status(widget_db, by_target) == "pending" and _status(widget_db, by_person) == "held"


def test_a_cursor_position_is_persisted_and_shared(widget_db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector import engine, tasks
    from mlconnector.db.models import Watermark

    monkeypatch.setattr(tasks, "send", lambda work: None)
    FEED.extend(SourceRecord(str(n), f"v{n}", cursor=str(n * 10)) for n in range(1, 4))
    first = engine.poll_flow("w1", "feed")
    assert first.found == 3 and first.cursor == "30"
    with widget_db() as session:
        mark = session.get(Watermark, ("w1", "feed"))
        assert mark.cursor == "30" and mark.value is not None and mark.value.tzinfo is not None
    second = engine.poll_flow("w1", "feed")  # another process would read the same row
    assert second.found == 0 and SEEN_POSITIONS[-1].cursor == "30" and SEEN_POSITIONS[-1].at.tzinfo is not None
    FEED.append(SourceRecord("4", "v4", cursor="40"))
    assert engine.poll_flow("w1", "feed").found == 1
    assert engine.poll_flow("w1", "feed", full=True).found == 4 and SEEN_POSITIONS[-1].is_start


def test_a_timestamp_on_sqlite_comes_back_timezone_aware(widget_db: Any) -> None:
    from mlconnector.db.models import Watermark

    with widget_db() as session:
        session.add(Watermark(integration_id="w1", flow="naive", value=datetime(2026, 1, 2, 3, 4, 5), last_poll_found=0))
    with widget_db() as session:
        value = session.get(Watermark, ("w1", "naive")).value
    assert value == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


# ---- pair discovery -----------------------------------------------------------------------

def test_a_pair_installed_by_another_package_is_found_through_its_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package outside this one declares `mlconnector.pairs`; nothing in mlconnector/ changes."""
    from mlconnector.flows import get_pair, reload_pairs

    package = tmp_path / "acme_pairs"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from mlconnector.config import IntegrationConfig\n"
        "from mlconnector.flows import Pair\n"
        "STARTED = []\n"
        "PAIR = Pair(name='acme-erp', source='servicetitan', target='epicor', flows=(), config_model=IntegrationConfig)\n")
    info = tmp_path / "acme_pairs-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-pairs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[mlconnector.pairs]\nacme-erp = acme_pairs:PAIR\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reload_pairs()
    try:
        pair = get_pair("acme-erp")
        assert pair.target == "epicor" and get_pair("servicetitan-epicor").name == "servicetitan-epicor"
        assert sys.modules["acme_pairs"].STARTED == []
    finally:
        monkeypatch.undo()
        reload_pairs()
        sys.modules.pop("acme_pairs", None)
