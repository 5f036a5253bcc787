"""The Epicor -> ServiceNow pair's staged writes against a stock ServiceNow sandbox over HTTP:
found again by documented fields, completed line by line after an interruption, changed
through the Table API, and an ignored or skipped import row never counted as written."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from connectors.servicenow import ServiceNowConnector
from connectors.servicenow import WriteResult as StagedResult
from mappings import epicor_servicenow as m
from mlconnector.flows import FlowContext
from mlconnector.http.runtime import build_runtime
from sandboxes.base import RunningSandbox, SandboxOptions, start_sandbox
from sandboxes.servicenow import ServiceNowSandbox
from tasks import epicor_servicenow as pair

CONFIG = m.EpicorServiceNowConfig.model_validate({"systems": {}})


@pytest.fixture(scope="module")
def stock() -> Iterator[RunningSandbox]:
    sandbox = start_sandbox(ServiceNowSandbox(SandboxOptions(records=8)))
    yield sandbox
    sandbox.stop()


@pytest.fixture
def ctx(stock: RunningSandbox) -> FlowContext:
    base, creds = ServiceNowConnector.settings_from_sandbox_info(stock.info())
    connector = ServiceNowConnector.create({**base, "retry": {"base": 0.05, "max_wait": 1}}, creds, build_runtime(""))
    session = Session(create_engine("sqlite://"))  # the embedded default: no advisory locks needed
    return FlowContext(integration=SimpleNamespace(id="writes-test", config={"systems": {}}), session=session,  # type: ignore[arg-type]
                       connectors={"servicenow": connector}, audit=lambda *a, **k: None, pair=pair.PAIR, _config=CONFIG)


def lines(stock: RunningSandbox, header: str) -> list[dict[str, Any]]:
    info = stock.info()["credentials"]
    response = requests.get(f"{stock.url}/api/now/table/sn_shop_purchase_order_line",
                            params={"sysparm_query": f"purchase_order={header}"}, auth=(info["username"], info["password"]))
    return response.json()["result"]


def purchase_order(supplier: str, **fields: Any) -> m.StagedDocument:
    po = {"PONum": 7001, "OrderDate": "2026-11-02", "OpenOrder": True, "TotalOrder": "62.5", "CurrencyCode": "USD",
          "lines": [{"POLine": 1, "LineDesc": "Pipe", "OrderQty": "4", "UnitCost": "12.5", "ExtCost": "50"},
                    {"POLine": 2, "LineDesc": "Elbow", "OrderQty": "10", "UnitCost": "1.25", "ExtCost": "12.5"}], **fields}
    return m.map_purchase_order(po, CONFIG, m.SupplierRef(supplier, "Writes Supplier", "linked")).document  # type: ignore[return-value]


def test_a_po_is_created_once_found_again_completed_and_changed(ctx: FlowContext, stock: RunningSandbox) -> None:
    sn = ctx.connectors["servicenow"]
    supplier = sn.import_row("supplier", {"name": "Writes Supplier"}).sys_id  # type: ignore[attr-defined]
    document = purchase_order(supplier)
    plan = pair.WRITES.plan(ctx, document, None)
    assert plan.action == "create"
    written = pair.WRITES.write(ctx, document, plan)
    assert written.action == "created" and written.target_key == {"sys_id": written.target_id}
    assert len(lines(stock, written.target_id)) == 2
    # Sent again without our ledger: found by erp_number + erp_source, nothing to do.
    again = pair.WRITES.plan(ctx, document, None)
    assert (again.action, again.target_id) == ("unchanged", written.target_id)
    # A write interrupted after its first line: the next delivery adds only the missing one.
    info = stock.info()["credentials"]
    second = next(l for l in lines(stock, written.target_id) if l["line_number"] == "2")
    requests.delete(f"{stock.url}/api/now/table/sn_shop_purchase_order_line/{second['sys_id']}",
                    auth=(info["username"], info["password"])).raise_for_status()
    partial = pair.WRITES.plan(ctx, document, written.target_id)
    assert partial.action == "update" and partial.changes == {"line 2": (None, "missing in ServiceNow")}
    pair.WRITES.write(ctx, document, partial)
    assert sorted(l["line_number"] for l in lines(stock, written.target_id)) == ["1", "2"]
    # Closed in Epicor: the status changes through the Table API, the record stays one.
    closed = purchase_order(supplier, OpenOrder=False)
    change = pair.WRITES.plan(ctx, closed, written.target_id)
    assert change.changes == {"status": ("ordered", "closed")}
    assert pair.WRITES.write(ctx, closed, change).action == "updated"
    assert [r["status"] for r in sn.query("sn_shop_purchase_order", "erp_number=7001")] == ["closed"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", ["ignored", "skipped"])
def test_an_import_row_the_transform_ignored_or_skipped_is_reported_not_written(status: str) -> None:
    document = purchase_order("s" * 32)
    staged = StagedResult(table="sn_shop_purchase_order", sys_id="", action=status, via="import_set", correlation_id="",
                          import_set="ISET0010001", message="PO type not handled by this map")
    result = pair.StagedWrites._not_written(document, staged)
    assert result.action == "unchanged"  # the engine records it as skipped, never as written
    assert result.detail["import_status"] == status
    assert result.detail["reason"] == f"the Import Set row was {status} by its transform map: PO type not handled by this map"
