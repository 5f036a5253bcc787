"""A small pair used by the platform tests: a source of records and a target that counts
writes, both served over real HTTP by `RecordServer`, so tests can prove that a record was
written exactly once whatever the fleet went through.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, ClassVar, Iterator

from flask import Flask, jsonify, request
from pydantic import BaseModel

from connectors import CONNECTORS
from connectors.base import CheckStep, Connector, timed_check
from mlconnector.config import IntegrationConfig
from mlconnector.flows import Flow, FlowContext, FlowHandler, MappedRecord, Pair, Plan, SourceRecord, WriteResult
from mlconnector.holds import Hold
from mlconnector.http import HttpClient, HttpRuntime, NoAuth, RetryPolicy


class RecordServer:
    """Source records at /source/<id>; target writes at /items, counted per key."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sources: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, Any]] = {}
        self.writes: Counter[str] = Counter()
        self.write_delay = 0.0
        self.always_fail: set[str] = set()
        self.app = Flask("record-server")
        app = self.app

        @app.get("/source/<record_id>")
        def source(record_id: str):  # type: ignore[no-untyped-def]
            with self.lock:
                record = self.sources.get(record_id)
            return (jsonify(record), 200) if record else (jsonify({"message": "not found"}), 404)

        @app.get("/items")
        def find():  # type: ignore[no-untyped-def]
            with self.lock:
                item = self.items.get(request.args["key"])
            return jsonify({"items": [item] if item else []})

        @app.post("/items")
        def create():  # type: ignore[no-untyped-def]
            body = request.get_json()
            if body["key"] in self.always_fail:
                return jsonify({"message": "target is down for this key"}), 503
            with self.lock:
                self.writes[body["key"]] += 1
                self.items[body["key"]] = body
            time.sleep(self.write_delay)  # applied at once, answered slowly: a write in flight
            return jsonify(body), 201

        @app.post("/_control")
        def control():  # type: ignore[no-untyped-def]
            body = request.get_json()
            with self.lock:
                self.sources.update(body.get("sources", {}))
                self.write_delay = float(body.get("write_delay", self.write_delay))
                self.always_fail.update(body.get("always_fail", []))
                self.always_fail.difference_update(body.get("recovered", []))
            return jsonify({"ok": True})

        @app.get("/_writes")
        def writes():  # type: ignore[no-untyped-def]
            with self.lock:
                return jsonify(dict(self.writes))


class CounterConfig(BaseModel):
    base_url: str


class CounterCredentials(BaseModel):
    token: str = ""


class CounterConnector(Connector):
    system: ClassVar[str] = "counter"
    Config = CounterConfig
    Credentials = CounterCredentials

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    @classmethod
    def create(cls, config: dict[str, Any], credentials: dict[str, Any], runtime: HttpRuntime) -> "CounterConnector":
        cfg = CounterConfig.model_validate(config)
        return cls(HttpClient(vendor="counter", base_url=cfg.base_url, auth=NoAuth(), session=runtime.session("counter"),
                              retry=RetryPolicy(max_tries=2, base=0.05, max_wait=0.2), timeout=(2, 10)))

    @classmethod
    def settings_from_sandbox_info(cls, info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"base_url": info["api_base"]}, {}

    def check(self) -> list[CheckStep]:
        return [timed_check("items", lambda: self.client.get_json("/items", params={"key": "x"}))]


CONNECTORS.setdefault("counter", "tests.fleet_pair:CounterConnector")


class CounterItem(BaseModel):
    key: str
    value: Any = None


class CounterHandler(FlowHandler):
    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        from mlconnector.http import NotFoundError

        try:
            return ctx.connectors["counter"].client.get_json(f"/source/{source_id}")  # type: ignore[attr-defined]
        except NotFoundError:
            return None

    def map(self, ctx: FlowContext, source: Any, counterparts: Any) -> MappedRecord | Hold:
        if source.get("value") == "hold":
            return Hold(reason=f"record {source['id']} waits for a person")
        if source.get("value") == "internal-error":
            # What a bug or a database constraint looks like to the engine: not a connector error.
            raise RuntimeError(f"record {source['id']} broke inside the worker")
        return MappedRecord(CounterItem(key=str(source["id"]), value=source.get("value")), external_key={"key": str(source["id"])})

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        client = ctx.connectors["counter"].client  # type: ignore[attr-defined]
        found = client.get_json("/items", params={"key": mapped.external_key["key"]})["items"]
        return Plan("unchanged", found[0]["key"]) if found else Plan("create", mapped.external_key["key"])

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        client = ctx.connectors["counter"].client  # type: ignore[attr-defined]
        if plan.action == "unchanged":
            return WriteResult(target_id=plan.target_id or "", action="unchanged", http_status=200)
        response = client.request("POST", "/items", json=mapped.payload)
        return WriteResult(target_id=mapped.payload["key"], action="created", http_status=response.status_code)

    def changed(self, ctx: FlowContext, since: Any, until: Any) -> Iterator[SourceRecord]:
        return iter(())


PAIR = Pair(
    name="counter-test",
    source="counter",
    target="counter",
    config_model=IntegrationConfig,
    webhook_source="servicetitan",  # the receiver tests sign webhooks for this pair as ServiceTitan would
    flows=(Flow(name="items", source="counter", source_entity="source", target="counter", target_entity="items",
                handler=CounterHandler(), webhook_events=("item.created",)),),
)
