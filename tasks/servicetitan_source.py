"""ServiceTitan as the source of a flow: what every pair reading from it shares.

How a ServiceTitan record is fetched (by id), versioned (its `modifiedOn` in one spelling),
found by a catch-up poll (modified-since) and named from a webhook's data, and how its
document is summarized for the exceptions queue. A pair's handler for a ServiceTitan entity
subclasses `ServiceTitanSourced` and sets the entity and how its screens name it.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Iterator

from connectors.base import plain
from mlconnector.flows import DocumentSummary, FlowContext, FlowHandler, ReconDocument, SourceRecord
from mlconnector.http import NotFoundError
from mlconnector.positions import Position

ST = "servicetitan"
PO_STATUSES_BEFORE_RECEIPT = frozenset({"Pending", "Sent"})  # nothing received, so no bill to look for


def st_version(record: dict[str, Any]) -> str | None:
    """`modifiedOn` in one spelling, whether it came from a webhook's raw JSON or a parsed
    record ('...33.757Z' and '...33.757000Z' are one version, not two)."""
    value = record.get("modifiedOn")
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class ServiceTitanSourced(FlowHandler):
    """Flows reading one ServiceTitan entity: fetch by id, version by modifiedOn, poll by modifiedOn."""

    st_entity: str = ""
    date_field: str | None = None
    noun: str = "record"  # how ServiceTitan's screens name the document
    counterpart_field: str = "vendor"  # the party the document is with, for its summary
    amount_fields: tuple[str, ...] = ("total", "billAmount", "amount")  # the first present is its amount

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        try:
            return plain(ctx.connectors[ST].get(self.st_entity, int(source_id)))  # type: ignore[attr-defined]
        except NotFoundError:
            return None

    def version(self, source: Any) -> str | None:
        return st_version(source)

    def document_date(self, source: Any) -> Any:
        return source.get(self.date_field) if self.date_field else None

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        party = payload.get(self.counterpart_field)
        number = payload.get("referenceNumber") or payload.get("number") or payload.get("name") or payload.get("id")
        amount = next((payload[f] for f in self.amount_fields if payload.get(f) not in (None, "")), "")
        return DocumentSummary(f"{self.noun} {number}", (party if isinstance(party, dict) else {}).get("name") or "",
                               str(amount))

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        for record in ctx.connectors[ST].iter_changed(self.st_entity, since.at, until):  # type: ignore[attr-defined]
            row = plain(record)
            yield SourceRecord(str(row["id"]), st_version(row))

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        return [SourceRecord(str(data["id"]), st_version(data))] if data.get("id") is not None else []


def received_bills(ctx: FlowContext, data: dict[str, Any], becomes: str) -> list[SourceRecord]:
    """The inventory bills a purchase-order event is about. ServiceTitan writes no bill through
    its API: it generates one when a PO is received, and that bill is what becomes `becomes`
    in the target, so a PO event names its bills (none yet is noted, not an error)."""
    po_id = data.get("id")
    if data.get("status") in PO_STATUSES_BEFORE_RECEIPT:
        ctx.audit("noted", f"purchase order {po_id} is {data['status']}; its {becomes} follows its receipt")
        return []
    bills = ctx.connectors[ST].bills_for_purchase_order(po_id, data.get("number"))  # type: ignore[attr-defined]
    if not bills:
        ctx.audit("noted", f"purchase order {po_id} has no inventory bill yet; its {becomes} follows its receipt")
    return [SourceRecord(str(plain(b)["id"]), st_version(plain(b))) for b in bills]


# ---- month-end reconciliation: ServiceTitan documents of a period -----------------------------


def day_of(value: Any) -> date:
    """A document date as its day: a date, a datetime (UTC) or ISO text."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc).date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def st_documents(ctx: FlowContext, entity: str, start: date, end: date, *, date_field: str,
                 amount: Callable[[dict[str, Any]], Decimal], number: Callable[[dict[str, Any]], str],
                 party: str = "vendor") -> Iterator[ReconDocument]:
    """ServiceTitan documents of `entity` dated in the period (its list's own date filter), as a
    reconciliation reads them; `number` is also the documented key the target carries."""
    for record in ctx.connectors[ST].iter_dated(entity, start, end):  # type: ignore[attr-defined]
        row = plain(record)
        who = row.get(party) if isinstance(row.get(party), dict) else {}
        yield ReconDocument(str(row["id"]), number(row), amount(row), day_of(row[date_field]), who.get("name") or "",
                            str(who.get("id") or ""), match_key=number(row))


# ---- the demo: webhooks delivered twice and badly signed ---------------------------------------


def webhook_plant(stage: Any, flow: Any) -> Any:
    """A ServiceTitan webhook for one of `flow`'s records, delivered twice (the second noted,
    not processed again), and one signed with the wrong key (401, a security event)."""
    import json

    import requests

    from mlconnector.demo_stage import NotHandled, Planted
    from mlconnector.webhook_signature import sign_for_tests

    answers: dict[str, int] = {}
    header = (stage.harness.config.get("webhook") or {}).get("signature_header", "X-ServiceTitan-Signature")
    url = f"{stage.receiver_url}/webhooks/{ST}/{stage.integration_id}"

    def post(body: bytes, key: str) -> int:
        return requests.post(url, data=body, timeout=10,
                             headers={"Content-Type": "application/json", header: sign_for_tests(body, key)}).status_code

    def act() -> None:
        rows = stage.rows(ST, flow.source_entity)
        if not rows:
            return
        body = json.dumps({"eventId": f"demo-{flow.name}-{rows[0]['id']}", "eventType": flow.webhook_events[0],
                           "data": {"id": rows[0]["id"]}}).encode()
        answers["first"], answers["again"] = post(body, stage.webhook_key), post(body, stage.webhook_key)
        answers["forged"] = post(body.replace(b"demo-", b"forged-"), "not-the-key-" + "0" * 20)
        _wait_until_handled(stage.integration_id, f"demo-{flow.name}-{rows[0]['id']}")

    def check() -> str:
        if not answers:
            return f"no {flow.source_entity} to send a webhook for"
        if (answers["first"], answers["again"], answers["forged"]) != (202, 200, 401):
            raise NotHandled(f"the receiver answered {answers['first']}, {answers['again']} and {answers['forged']} "
                             f"(wanted 202 accepted, 200 duplicate, 401 bad signature)")
        return ("a signed webhook delivered twice was accepted once and noted as a duplicate; one with a bad "
                "signature was refused with 401 and recorded as a security event")

    return Planted("a webhook delivered twice, and one with a bad signature", check, act=act)


def _wait_until_handled(integration_id: str, event_id: str, timeout: float = 15.0) -> None:
    """The receiver answers before it works the event; the demo's flows start after it is done,
    so one story is told each run (the event's record is not raced by the poll's)."""
    import time

    from sqlalchemy import select

    from mlconnector.db.models import InboundEvent
    from mlconnector.db.session import session_scope

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            status = session.scalar(select(InboundEvent.status).where(
                InboundEvent.integration_id == integration_id, InboundEvent.source_event_id == event_id))
        if status not in (None, "pending"):
            return
        time.sleep(0.05)
