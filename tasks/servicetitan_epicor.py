"""ServiceTitan -> Epicor Kinetic: the flows, declared.

vendors            ST vendors -> Epicor vendors (link, match, create when allowed)
inventory_bills    ST inventory bills (and the bills of PO events) -> Epicor AP invoices
ap_payments        ST AP payments -> Epicor AP payments, matched by vendor + amount
epicor_vendors     Epicor vendor changes -> the linked ST vendors
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

from mappings import servicetitan_epicor as m
from mlconnector import locks, vendor_links
from mlconnector.flows import Decision, Flow, FlowContext, FlowHandler, Hold, MappedRecord, Pair, SourceRecord, WriteResult, register_pair
from mlconnector.http import NotFoundError

PAIR_NAME = "servicetitan-epicor"
ST, EPICOR = "servicetitan", "epicor"
CATCH_UP_POLL_SECONDS = 300.0  # finds what a dropped webhook missed, within five minutes
EPICOR_VENDOR_POLL_SECONDS = 600.0
VENDOR_INDEX_TTL_SECONDS = 60.0  # Epicor vendor list reused across records for a minute
PO_STATUSES_BEFORE_RECEIPT = frozenset({"Pending", "Sent"})  # nothing received, so no bill to look for


def _plain(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    return dict(value)


def _config(ctx: FlowContext) -> m.ServiceTitanEpicorConfig:
    return m.ServiceTitanEpicorConfig.model_validate(ctx.config)


def _version(record: dict[str, Any]) -> str | None:
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


class _VendorIndex:
    """Epicor vendors by normalized name, per integration, refreshed every minute."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_integration: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    def vendors(self, ctx: FlowContext) -> list[dict[str, Any]]:
        with self._lock:
            cached = self._by_integration.get(ctx.integration.id)
            if cached and time.monotonic() - cached[0] < VENDOR_INDEX_TTL_SECONDS:
                return cached[1]
        rows = [_plain(v) for v in ctx.connectors[EPICOR].iter_vendors()]  # type: ignore[attr-defined]
        with self._lock:
            self._by_integration[ctx.integration.id] = (time.monotonic(), rows)
        return rows

    def invalidate(self, integration_id: str) -> None:
        with self._lock:
            self._by_integration.pop(integration_id, None)


VENDOR_INDEX = _VendorIndex()


def resolve_vendor(ctx: FlowContext, st_vendor: dict[str, Any]) -> m.EpicorVendorRef | Hold:
    """The Epicor vendor for a ServiceTitan vendor: link, else match, else create, else hold."""
    config = _config(ctx)
    st_id = str(st_vendor.get("id"))
    link = vendor_links.find(ctx.session, ctx.integration.id, ST, st_id)
    if link is not None:
        return m.EpicorVendorRef(int(link.target_vendor_id), "", link.target_vendor_name or st_vendor.get("name", ""),
                                 "manual" if link.how == "manual" else "linked")
    candidates, how = _vendor_candidates(ctx, config, st_id, st_vendor.get("name") or "")
    if len(candidates) > 1:
        return m.vendor_hold(st_vendor, ctx.integration.id, candidates)
    if not candidates:
        if not config.auto_create_vendors:
            return m.vendor_hold(st_vendor, ctx.integration.id)
        # Two workers must not both create a vendor of one name (two of its bills in flight,
        # or near-duplicate ServiceTitan vendors): the second waits, then finds the first's.
        locks.hold_until_commit(ctx.session, f"epicor-vendor-create:{ctx.integration.id}:{how}:"
                                             f"{vendor_links.normalize_name(st_vendor.get('name') or '')}")
        link = vendor_links.find(ctx.session, ctx.integration.id, ST, st_id)
        if link is not None:
            return m.EpicorVendorRef(int(link.target_vendor_id), "", link.target_vendor_name, "linked")
        VENDOR_INDEX.invalidate(ctx.integration.id)
        candidates, how = _vendor_candidates(ctx, config, st_id, st_vendor.get("name") or "")
        if len(candidates) > 1:
            return m.vendor_hold(st_vendor, ctx.integration.id, candidates)
    if not candidates:
        if not st_vendor.get("address") and not st_vendor.get("contactInfo"):
            st_vendor = _plain(ctx.connectors[ST].get("vendors", int(st_id)))  # type: ignore[attr-defined]
        epicor = ctx.connectors[EPICOR]
        created = _plain(epicor.create_vendor(m.map_vendor_to_epicor(st_vendor, config)))  # type: ignore[attr-defined]
        VENDOR_INDEX.invalidate(ctx.integration.id)
        candidates, how = [created], "created"
    chosen = candidates[0]
    stored = vendor_links.link(ctx.session, ctx.integration.id, source_system=ST, source_vendor_id=st_id,
                               source_vendor_name=st_vendor.get("name") or "", target_system=EPICOR,
                               target_vendor_id=str(chosen["VendorNum"]), target_vendor_name=chosen.get("Name") or "",
                               how=how, replace=False)
    if stored.target_vendor_id != str(chosen["VendorNum"]):  # another worker linked it first: its answer stands
        return m.EpicorVendorRef(int(stored.target_vendor_id), "", stored.target_vendor_name, "linked")
    return m.EpicorVendorRef(int(chosen["VendorNum"]), chosen.get("VendorID") or "", chosen.get("Name") or "", stored.how)


def resolve_document_vendor(ctx: FlowContext, document: dict[str, Any], noun: str,
                            hold_prefix: str) -> m.EpicorVendorRef | Hold:
    """The Epicor vendor of a ServiceTitan bill or payment, or a hold when it names none."""
    st_vendor = dict(document.get("vendor") or {})
    if not st_vendor.get("id"):
        return Hold(reason=f"{noun} {document.get('id')} has no vendor in ServiceTitan",
                    key=f"{hold_prefix}:{document.get('id')}")
    return resolve_vendor(ctx, st_vendor)


def _vendor_candidates(ctx: FlowContext, config: m.ServiceTitanEpicorConfig, st_id: str,
                       name: str) -> tuple[list[dict[str, Any]], str]:
    """Epicor vendors that could be this ServiceTitan vendor, and how they were found."""
    epicor = ctx.connectors[EPICOR]
    if config.vendor_match == "id":
        vendor_id = config.vendor_id_format.format(id=st_id)[:8]
        return [_plain(v) for v in epicor.find_vendors(vendor_id=vendor_id)], "matched_by_id"  # type: ignore[attr-defined]
    return m.match_vendor_by_name(name, VENDOR_INDEX.vendors(ctx)), "matched_by_name"


class ServiceTitanSourced(FlowHandler):
    """Flows reading one ServiceTitan entity: fetch by id, version by modifiedOn, poll by modifiedOn."""

    st_entity: str = ""

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        try:
            return _plain(ctx.connectors[ST].get(self.st_entity, int(source_id)))  # type: ignore[attr-defined]
        except NotFoundError:
            return None

    def version(self, source: Any) -> str | None:
        return _version(source)

    def changed(self, ctx: FlowContext, since: datetime | None, until: datetime) -> Iterator[SourceRecord]:
        for record in ctx.connectors[ST].iter_changed(self.st_entity, since, until):
            row = _plain(record)
            yield SourceRecord(str(row["id"]), _version(row))

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        return [SourceRecord(str(data["id"]), _version(data))] if data.get("id") is not None else []


class VendorsHandler(ServiceTitanSourced):
    """ServiceTitan vendors -> Epicor vendors, keeping name, address and contact aligned."""

    st_entity = "vendors"

    def map(self, ctx: FlowContext, source: Any) -> MappedRecord | Hold:
        resolved = resolve_vendor(ctx, source)
        if isinstance(resolved, Hold):
            return resolved
        wanted = m.map_vendor_to_epicor(source, _config(ctx))
        return MappedRecord(payload={"VendorNum": resolved.vendor_num, "fields": wanted, "how": resolved.how},
                            external_key={"VendorNum": resolved.vendor_num},
                            decisions=[Decision("vendor", f"{resolved.vendor_num} '{resolved.name}'", resolved.how)])

    def write(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> WriteResult:
        vendor_num = mapped.payload["VendorNum"]
        epicor = ctx.connectors[EPICOR]
        if mapped.payload["how"] == "created":
            release_vendor_holds(ctx, mapped)
            return WriteResult(str(vendor_num), "created", 201)
        release_vendor_holds(ctx, mapped)
        shared = len(vendor_links.find_by_target(ctx.session, ctx.integration.id, EPICOR, str(vendor_num)))
        if shared > 1:
            # Near-duplicate ServiceTitan vendors share one Epicor vendor: neither may overwrite it.
            return WriteResult(str(vendor_num), "unchanged", None,
                               {"reason": f"{shared} ServiceTitan vendors share this Epicor vendor; fields left as they are"})
        current = _plain(epicor.get_vendor(vendor_num))  # type: ignore[attr-defined]
        changes = m.epicor_vendor_changes(current, mapped.payload["fields"])
        if not changes:
            return WriteResult(str(vendor_num), "unchanged", 200)
        epicor.update_vendor(vendor_num, changes)  # type: ignore[attr-defined]
        VENDOR_INDEX.invalidate(ctx.integration.id)
        return WriteResult(str(vendor_num), "updated", 200, {"changed": sorted(changes)})

def release_vendor_holds(ctx: FlowContext, mapped: MappedRecord) -> None:
    """A vendor just got its Epicor counterpart: records held for it go back in line."""
    from mlconnector import engine

    links = vendor_links.find_by_target(ctx.session, ctx.integration.id, EPICOR, str(mapped.payload["VendorNum"]))
    for link in links:
        work = engine.release_holds(ctx.session, ctx.integration.id, vendor_links.hold_key(ST, link.source_vendor_id),
                                    f"vendor {link.source_vendor_id} now linked to Epicor vendor {link.target_vendor_id}")
        _after_commit(ctx, work)


def _after_commit(ctx: FlowContext, work: Any) -> None:
    from sqlalchemy import event

    from mlconnector.tasks import send

    if work.empty:
        return
    event.listen(ctx.session, "after_commit", lambda _session: send(work), once=True)


class InventoryBillsHandler(ServiceTitanSourced):
    """ServiceTitan inventory bills -> Epicor AP invoices (GetNewAPInvHedInvoice ... UpdateMaster)."""

    st_entity = "inventory_bills"

    def map(self, ctx: FlowContext, source: Any) -> MappedRecord | Hold:
        resolved = resolve_document_vendor(ctx, source, "bill", "bill-vendor")
        if isinstance(resolved, Hold):
            return resolved
        return m.map_inventory_bill(source, _config(ctx), resolved, ctx.integration.id)

    def write(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> WriteResult:
        epicor = ctx.connectors[EPICOR]
        key = mapped.external_key
        existing = epicor.find_ap_invoice(key["VendorNum"], key["InvoiceNum"])  # type: ignore[attr-defined]
        target = f"{key['VendorNum']}/{key['InvoiceNum']}"
        if existing is not None:
            return WriteResult(target, "unchanged", 200, {"found_by": "VendorNum + InvoiceNum"})
        epicor.create_ap_invoice(mapped.payload["group"], mapped.payload["header"], mapped.payload["lines"])  # type: ignore[attr-defined]
        return WriteResult(target, "created", 201)

    def records_for_event(self, ctx: FlowContext, event_type: str, data: dict[str, Any]) -> list[SourceRecord]:
        if event_type.startswith("purchase-order."):
            # A PO becomes an AP invoice through the bill ServiceTitan creates when it is received.
            po_id = data.get("id")
            if data.get("status") in PO_STATUSES_BEFORE_RECEIPT:
                ctx.audit("noted", f"purchase order {po_id} is {data['status']}; its AP invoice follows its receipt")
                return []
            bills = ctx.connectors[ST].bills_for_purchase_order(po_id, data.get("number"))  # type: ignore[attr-defined]
            if not bills:
                ctx.audit("noted", f"purchase order {po_id} has no inventory bill yet; its AP invoice follows its receipt")
            return [SourceRecord(str(_plain(b)["id"]), _version(_plain(b))) for b in bills]
        return super().records_for_event(ctx, event_type, data)


class ApPaymentsHandler(ServiceTitanSourced):
    """ServiceTitan AP payments -> Epicor AP payments on the invoice they match."""

    st_entity = "ap_payments"

    def map(self, ctx: FlowContext, source: Any) -> MappedRecord | Hold:
        resolved = resolve_document_vendor(ctx, source, "payment", "payment")
        if isinstance(resolved, Hold):
            return resolved
        candidates = [_plain(i) for i in ctx.connectors[EPICOR].find_open_invoices(resolved.vendor_num)]  # type: ignore[attr-defined]
        bill_numbers = _bill_invoice_numbers(ctx, source)
        return m.map_payment(source, resolved, candidates, bill_numbers)

    def write(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> WriteResult:
        epicor = ctx.connectors[EPICOR]
        payload = mapped.payload
        existing = epicor.find_ap_payment(payload["vendor_num"], payload["reference"])  # type: ignore[attr-defined]
        if existing:
            return WriteResult(payload["reference"], "unchanged", 200)
        from datetime import date

        epicor.create_ap_payment(payload["vendor_num"], payload["invoice_num"], Decimal(payload["amount"]),  # type: ignore[attr-defined]
                                 date.fromisoformat(payload["payment_date"]) if payload["payment_date"] else date.today(),
                                 payload["reference"])
        return WriteResult(payload["reference"], "created", 201)


def _bill_invoice_numbers(ctx: FlowContext, payment: dict[str, Any]) -> dict[str, str]:
    """InvoiceNums of the synced bills a payment's splits name (ledger lookup, no API call)."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord

    bill_ids = [str(s.get("inventoryBillId")) for s in payment.get("splits") or [] if s.get("inventoryBillId")]
    if not bill_ids:
        return {}
    rows = ctx.session.execute(select(SyncRecord.source_id, SyncRecord.target_id).where(
        SyncRecord.integration_id == ctx.integration.id, SyncRecord.flow == "inventory_bills",
        SyncRecord.source_id.in_(bill_ids), SyncRecord.target_id.is_not(None)))
    return {source: target.split("/", 1)[1] for source, target in rows if "/" in target}


class EpicorVendorsHandler(FlowHandler):
    """Epicor vendor changes -> the linked ServiceTitan vendors (the seed's 'both directions')."""

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        vendor = ctx.connectors[EPICOR].get_vendor(int(source_id))  # type: ignore[attr-defined]
        return _plain(vendor) if vendor is not None else None

    def version(self, source: Any) -> str | None:
        return str(source.get("SysRevID") or source.get("ChangeDate") or "") or None

    def map(self, ctx: FlowContext, source: Any) -> MappedRecord | Hold:
        links = vendor_links.find_by_target(ctx.session, ctx.integration.id, EPICOR, str(source["VendorNum"]))
        if not _config(ctx).sync_vendor_changes_back or len(links) != 1:
            why = ("no linked ServiceTitan vendor" if not links else "sync_vendor_changes_back is off" if len(links) == 1
                   else f"{len(links)} ServiceTitan vendors share this Epicor vendor; merge them in ServiceTitan first")
            return MappedRecord(payload={}, external_key={}, decisions=[Decision("servicetitan vendor", None, why)])
        st = ctx.connectors[ST]
        patches = []
        for link in links:
            st_vendor = _plain(st.get("vendors", int(link.source_vendor_id)))  # type: ignore[attr-defined]
            patch = m.map_epicor_vendor_to_servicetitan(source, st_vendor)
            patches.append({"id": int(link.source_vendor_id), "patch": patch})
        return MappedRecord(payload={"patches": patches}, external_key={"VendorNum": source["VendorNum"]},
                            decisions=[Decision("servicetitan vendor", p["id"], f"linked; changed: {', '.join(sorted(p['patch'])) or 'nothing'}") for p in patches])

    def write(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> WriteResult:
        patches = [p for p in mapped.payload.get("patches", []) if p["patch"]]
        for item in patches:
            ctx.connectors[ST].update_vendor(item["id"], item["patch"])  # type: ignore[attr-defined]
        target = ",".join(str(p["id"]) for p in mapped.payload.get("patches", [])) or "-"
        return WriteResult(target, "updated" if patches else "unchanged", 200 if patches else None)

    def changed(self, ctx: FlowContext, since: datetime | None, until: datetime) -> Iterator[SourceRecord]:
        for vendor in ctx.connectors[EPICOR].iter_changed("vendors", since, until):
            row = _plain(vendor)
            yield SourceRecord(str(row["VendorNum"]), str(row.get("SysRevID") or row.get("ChangeDate") or "") or None)


PAIR = register_pair(Pair(
    name=PAIR_NAME,
    source=ST,
    target=EPICOR,
    description="ServiceTitan purchase orders and inventory bills -> Epicor AP invoices; vendors both ways; AP payments.",
    config_model=m.ServiceTitanEpicorConfig,
    flows=(
        Flow(name="vendors", source=ST, source_entity="vendors", target=EPICOR, target_entity="vendors",
             handler=VendorsHandler(), webhook_events=("vendor.created", "vendor.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS),
        Flow(name="inventory_bills", source=ST, source_entity="inventory_bills", target=EPICOR, target_entity="ap_invoices",
             handler=InventoryBillsHandler(),
             webhook_events=("inventory-bill.created", "inventory-bill.updated", "purchase-order.created", "purchase-order.updated"),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("vendors",)),
        Flow(name="ap_payments", source=ST, source_entity="ap_payments", target=EPICOR, target_entity="ap_payments",
             handler=ApPaymentsHandler(), webhook_events=("ap-payment.created",),
             poll_seconds=CATCH_UP_POLL_SECONDS, prerequisites=("inventory_bills",)),
        Flow(name="epicor_vendors", source=EPICOR, source_entity="vendors", target=ST, target_entity="vendors",
             handler=EpicorVendorsHandler(), poll_seconds=EPICOR_VENDOR_POLL_SECONDS, prerequisites=("vendors",)),
    ),
))
