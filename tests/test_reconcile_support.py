"""What every pair's reconciliation test does the same way: run a pair's flows through the
engine on PostgreSQL (eager Celery), reconcile through the command line, and check the
report's arithmetic and its CSV against its JSON."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import select


def sync_all(integration: str, pair: Any, only: tuple[str, ...] = ()) -> None:
    """Every flow of the pair (or `only` these), prerequisites first: a full poll, then each
    record through the engine."""
    from mlconnector import engine
    from mlconnector.tasks import send

    for flow in pair.ordered_flows():
        if not only or flow.name in only:
            send(engine.poll_flow(integration, flow.name, full=True).enqueue)


def put(url: str, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A person keying or changing a record in that system (the sandbox's control API)."""
    response = requests.post(f"{url}/_sandbox/entities/{entity}", json=payload, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def rows(url: str, entity: str) -> list[dict[str, Any]]:
    return requests.get(f"{url}/_sandbox/entities/{entity}", timeout=10).json()


def record(integration: str, flow: str, source_id: Any) -> Any:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return session.scalar(select(SyncRecord).where(SyncRecord.integration_id == integration, SyncRecord.flow == flow,
                                                       SyncRecord.source_id == str(source_id)))


def report_via_cli(integration: str, period: str) -> dict[str, Any]:
    """The report as `mlconnector reconcile --json` prints it, checked against `--csv` row by row."""
    from mlconnector.cli import main

    runner = CliRunner()
    as_json = runner.invoke(main, ["reconcile", integration, "--period", period, "--json"])
    assert as_json.exit_code == 0, as_json.output
    report = json.loads(as_json.output)
    as_csv = runner.invoke(main, ["reconcile", integration, "--period", period, "--csv"])
    assert as_csv.exit_code == 0, as_csv.output
    assert_csv_matches(report, as_csv.output)
    for entity in report["entities"]:
        assert_totals_add_up(entity)
    return report


def assert_csv_matches(report: dict[str, Any], text: str) -> None:
    parsed = list(csv.DictReader(io.StringIO(text)))
    totals = [r for r in parsed if r["row"] == "totals"]
    differences = [r for r in parsed if r["row"] == "difference"]
    assert [(r["flow"], int(r["source_count"]), Decimal(r["source_total"]), int(r["target_count"]),
             Decimal(r["target_total"]), int(r["ledger_count"]), Decimal(r["ledger_total"])) for r in totals] == \
        [(e["flow"], e["source_count"], Decimal(e["source_total"]), e["target_count"], Decimal(e["target_total"]),
          e["ledger_count"], Decimal(e["ledger_total"])) for e in report["entities"]]
    expected = [(e["flow"], d["kind"], d["source_ref"] or "", d["target_ref"] or "",
                 d["source_amount"] or "", d["target_amount"] or "", str(d["record_id"] or ""), d["detail"])
                for e in report["entities"] for d in e["differences"]]
    assert [(r["flow"], r["kind"], r["source_ref"], r["target_ref"], r["source_amount"], r["target_amount"],
             r["record_id"], r["detail"]) for r in differences] == expected
    assert all(r["trail"] == (f"mlconnector records show {r['record_id']}" if r["record_id"] else "") for r in differences)


def assert_totals_add_up(entity: dict[str, Any]) -> None:
    """Every source document is matched, missing, held, failed or had nothing to move; every target
    document is matched, ours from another period, or not from us; the totals are their sums."""
    kinds = [d["kind"] for d in entity["differences"]]
    unmatched_source = [d for d in entity["differences"] if d["kind"] in ("missing_in_target",)
                        or (d["kind"] in ("held", "failed") and not d["target_amount"])]
    assert entity["source_count"] == entity["matched_count"] + len(unmatched_source) + entity["not_moved_count"], entity
    assert entity["target_count"] == (entity["matched_count"] + kinds.count("not_from_us")
                                      + entity["target_outside_period_count"]), entity
    assert entity["ledger_count"] <= entity["source_count"]


def by_kind(entity: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for d in entity["differences"]:
        out.setdefault(d["kind"], []).append(d)
    return out


def entity(report: dict[str, Any], flow: str) -> dict[str, Any]:
    return next(e for e in report["entities"] if e["flow"] == flow)


def demo_harness(pair_name: str, integration: str, seed: int, records: int) -> Any:
    """The pair's sandboxes started as its demo starts them (its plan's rate limits) and an
    integration registered with the demo's config overrides: cheap runs of the real flows."""
    from mlconnector import demo
    from mlconnector.flows import get_pair
    from mlconnector.harness import PairHarness, register

    pair = get_pair(pair_name)
    sandboxes = demo._sandboxes([pair], seed, records).set
    try:
        config = register(integration, pair_name, sandboxes, overrides=dict(pair.demo.overrides) or None)
    except BaseException:
        sandboxes.stop()
        raise
    return PairHarness(pair, sandboxes, integration, config)


# The ServiceTitan invoice fields a planted invoice copies from a seeded one.
ST_INVOICE_FIELDS = ("items", "customer", "total", "subTotal", "salesTax", "businessUnit", "job", "invoiceType",
                     "location", "customerAddress", "locationAddress", "termName")


def harness_fixture(pair_name: str, *, as_demo: bool = False) -> Any:
    """The `harness` fixture of a pair's reconciliation test: a fresh PostgreSQL database, the
    pair's sandboxes (seed 5, 4 records, or as its demo starts them) and integration 'acme'."""

    @pytest.fixture
    def harness(fresh_pg: str, configure: Any) -> Any:
        from mlconnector.harness import start_pair
        from sandboxes import SandboxOptions

        configure(database_url=fresh_pg)
        started = (demo_harness(pair_name, "acme", seed=5, records=4) if as_demo
                   else start_pair(pair_name, "acme", options=SandboxOptions(seed=5, records=4)))
        yield started
        started.stop()

    return harness
