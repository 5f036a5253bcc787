"""ServiceTitan <-> SYSPRO: the flows, declared.

invoices                  ST job invoices -> SYSPRO AP invoices (APSTIN), items mapped to stock codes, costs on
                          the GL account of their item type, branch, job and technician on the document
vendors                   ST vendors -> SYSPRO suppliers (APSSSP), mapped by supplier code      } two-way, without
suppliers                 SYSPRO suppliers -> ST vendors                                        } echoes
purchase_orders           ST purchase orders -> SYSPRO purchase orders (PORTOI)                 } two-way, without
syspro_purchase_orders    SYSPRO purchase orders -> ST purchase orders                          } echoes
adjustments               ST inventory adjustments -> SYSPRO stock adjustments (INVTMA)
ap_invoices               SYSPRO AP invoices, polled by InvoiceDate and PostDate: each posting this integration
                          made is confirmed in its ServiceTitan invoice's audit trail (nothing is written)

Where an AP invoice's vendor and cost come from (see mappings/servicetitan_syspro.py): the
cost is each invoice item's `totalCost` (what the item cost the company; `total`/`price` are
what the customer pays), and the vendor is the `vendorId` of the purchase orders ServiceTitan
holds for the invoice's job (`jobId`), else `default_supplier`.

SYSPRO has no webhooks, so every flow polls, on a 15-minute default cadence (`poll_seconds`
per flow overrides it). Each SYSPRO polling cycle runs in one e.net session from `Logon`,
logged off when the cycle ends, also when it failed; every record's SYSPRO work opens its
own session the same way. Sessions are licence seats: `systems.syspro.max_sessions` caps the
whole fleet's (shared slots in Redis). Business errors arrive inside HTTP 200 answers; the
connector parses every result, and a refused document fails its record with SYSPRO's own
message, replayable. Nothing is written to ServiceTitan's AP bills or invoices.

Records that move both ways are judged by `mlconnector.echoes`: a record our own write left
on one side is recognised when that side's poll reads it back and is not sent back; a field
changed on both sides between polls follows `two_way.<entity>` (a system, or hold). Changes
to a purchase order's lines after it is on both sides are held for a person (a SYSPRO PO's
lines are changed by line number, which ServiceTitan does not know). ServiceTitan documents
no API to create an inventory adjustment, so adjustments move one way. Registered through
the `mlconnector.pairs` entry point; importing this module starts nothing.
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from pydantic import BaseModel, Field

from connectors.syspro import ApInvoiceIn, InventoryAdjustmentIn
from mappings import servicetitan_syspro as m
from mlconnector import echoes, links
from mlconnector.decisions import Decision
from mlconnector.flows import (DocumentSummary, Flow, FlowContext, FlowHandler, MappedRecord, Nothing, Pair, PairDemo,
                               Plan, ReconDocument, Reconciler, SourceRecord, WriteResult)
from mlconnector.holds import ConfigNeeded, Hold, LinkNeeded, TargetCondition
from mlconnector.http import NotFoundError
from mlconnector.positions import Position
from mlconnector.resolver import Counterpart, CounterpartKind, Need, TargetRecord
from tasks.servicetitan_source import ServiceTitanSourced, plain, st_documents, st_version

if TYPE_CHECKING:
    from mlconnector.harness import SandboxSet

PAIR_NAME = "servicetitan-syspro"
ST, SY = m.ST, m.SYSPRO
POLL_SECONDS = 900.0  # SYSPRO has no webhooks: every 15 minutes, the dispatch cadence (poll_seconds overrides)


def _config(ctx: FlowContext) -> m.ServiceTitanSysproConfig:
    return ctx.config  # type: ignore[return-value]


def _st(ctx: FlowContext) -> Any:
    return ctx.connectors[ST]


def _sy(ctx: FlowContext) -> Any:
    return ctx.connectors[SY]


def _linked_items(ctx: FlowContext) -> dict[str, str]:
    """ServiceTitan SKU id -> SYSPRO stock code, from links of kind `item`."""
    return {l.source_id: l.target_id for l in links.list_links(ctx.session, ctx.integration.id, "item")
            if l.source_system == ST}


def _supplier_of_vendor(ctx: FlowContext, vendor_id: Any) -> str | None:
    """The SYSPRO supplier code a ServiceTitan vendor is (its link, else its two-way pairing)."""
    link = links.find(ctx.session, ctx.integration.id, "vendor", ST, str(vendor_id))
    if link is not None:
        return link.target_id
    state = echoes.find(ctx.session, ctx.integration.id, "vendors", ST, str(vendor_id))
    return state.other_id if state is not None else None


def _vendor_of_supplier(ctx: FlowContext, code: str) -> str | None:
    found = links.find_by_target(ctx.session, ctx.integration.id, "vendor", SY, code)
    if found:
        return found[0].source_id
    state = echoes.find(ctx.session, ctx.integration.id, "vendors", SY, code)
    return state.other_id if state is not None else None


def vendor_on_both_sides(code: str) -> TargetCondition:
    """What a SYSPRO document waits for: its supplier paired with a ServiceTitan vendor."""
    return TargetCondition(ST, "vendor", code, "paired")


# ---- counterpart kinds operators link by hand ----------------------------------------------------


class Items(CounterpartKind):
    """ServiceTitan SKUs and the SYSPRO stock codes they are (`links link --kind item`)."""

    kind = "item"
    source_system = ST
    target_system = SY
    noun = "item"

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        return []

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        return []

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        found = _sy(ctx).find_stock_item(target_id)
        return TargetRecord(found.stock_code, found.description, found.stock_code) if found is not None else None

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        return TargetRecord(source_id, f"SKU {source_id}")  # ServiceTitan's pricebook is not read by this pair

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        found = self.get_target(ctx, text.strip())
        return [found] if found is not None else []


class Vendors(CounterpartKind):
    """ServiceTitan vendors and the SYSPRO suppliers they are, by supplier code."""

    kind = "vendor"
    source_system = ST
    target_system = SY
    noun = "vendor"

    def match_by_key(self, ctx: FlowContext, need: Need, by: str) -> list[TargetRecord]:
        return []

    def match_by_name(self, ctx: FlowContext, need: Need) -> list[TargetRecord]:
        return []

    def get_target(self, ctx: FlowContext, target_id: str) -> TargetRecord | None:
        found = _sy(ctx).find_supplier(target_id)
        return TargetRecord(found.supplier, found.name, found.supplier) if found is not None else None

    def get_source(self, ctx: FlowContext, source_id: str) -> TargetRecord | None:
        try:
            vendor = plain(_st(ctx).get("vendors", int(source_id)))
        except NotFoundError:
            return None
        return TargetRecord(str(vendor["id"]), vendor.get("name") or "")

    def search(self, ctx: FlowContext, text: str) -> list[TargetRecord]:
        found = _sy(ctx).find_supplier(text.strip(), name=text.strip())
        return [TargetRecord(found.supplier, found.name, found.supplier)] if found is not None else []


ITEMS, VENDORS = Items(), Vendors()


# ---- SYSPRO as a flow's source ---------------------------------------------------------------------


class SysproSourced(FlowHandler):
    """Flows reading one SYSPRO table by its change column, one e.net session per polling cycle."""

    sy_entity: str = ""

    def version(self, source: Any) -> str | None:
        value = source.get("changed_at") if isinstance(source, dict) else None
        return str(value) if value else None

    def source_id(self, row: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        sy = _sy(ctx)
        with sy.session():  # Logon for this cycle; Logoff when it ends, also when it failed
            for record in sy.iter_changed(self.sy_entity, since.at, until):
                row = plain(record)
                yield SourceRecord(self.source_id(row), self.version(row))


# ---- two-way records ---------------------------------------------------------------------------


class TwoWayWrite(BaseModel):
    """What a two-way flow will do with one record: its shared fields, the pairing and the
    fields to write, judged by `mlconnector.echoes`."""

    entity: str
    source_id: str
    target_id: str | None = None
    paired_by: str = ""
    fields: dict[str, Any]
    changes: dict[str, Any] = Field(default_factory=dict)
    agreed: dict[str, Any] = Field(default_factory=dict)
    source: dict[str, Any] = Field(default_factory=dict)


class TwoWay(FlowHandler):
    """One direction of an entity that moves both ways. Subclasses say how a record's shared
    fields read, how its counterpart is found, read, created and changed."""

    entity: str = ""  # the two-way entity (one name for both directions)
    here: str = ""  # this flow's source system
    there: str = ""  # this flow's target system
    link_kind: str = ""  # a link recorded on pairing (source side ServiceTitan), if any
    unique_names_there: bool = False  # the target refuses a second record of one name

    @abstractmethod
    def key(self, source: Mapping[str, Any]) -> str: ...

    @abstractmethod
    def shared(self, ctx: FlowContext, source: Mapping[str, Any]) -> dict[str, Any] | Hold: ...

    @abstractmethod
    def read_other(self, ctx: FlowContext, other_id: str) -> dict[str, Any] | None:
        """The counterpart's shared fields (None: it does not exist)."""

    @abstractmethod
    def match_other(self, ctx: FlowContext, source: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[str, str] | None:
        """A counterpart not yet paired with anything: (its id, how it was found)."""

    @abstractmethod
    def create_other(self, ctx: FlowContext, doc: TwoWayWrite) -> tuple[str, str | None]:
        """Create the counterpart: (its id, the version our write left on it)."""

    def update_other(self, ctx: FlowContext, doc: TwoWayWrite) -> str | None:
        """Write `doc.changes` to the counterpart: the version our write left on it."""
        raise NotImplementedError

    def updates_held(self, doc: TwoWayWrite) -> Hold | None:
        return None

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        session, integration = ctx.session, ctx.integration.id
        echoes.lock(session, integration, self.entity)  # one judge per entity at a time, until this record commits
        key, version = self.key(source), self.version(source)
        state = echoes.find(session, integration, self.entity, self.here, key)
        if state is not None and state.is_own_write(version):
            return Nothing(f"own write: {self.here} {self.entity} {key} is at version {version}, the one our write left; "
                           f"not sent back", [Decision("echo", version, f"written by this integration from {self.there} "
                                                                         f"{state.other_id}")])
        fields = self.shared(ctx, source)
        if isinstance(fields, Hold):
            return fields
        other_id, how = (state.other_id, "paired") if state is not None else (None, "")
        if state is None:
            found = self.match_other(ctx, source, fields)
            taken = found is not None and echoes.find(session, integration, self.entity, self.there, found[0])
            if found is not None and not taken:
                other_id, how = found
            elif taken and self.unique_names_there:
                return Hold(reason=f"{self.here} {self.entity} {key} '{fields.get('name')}' has the name of {self.there} "
                                   f"{found[0]}, already paired with {self.here} {taken.other_id}, and {self.there} "
                                   f"refuses a second of one name: near-duplicates a person links or resolves")
        other = self.read_other(ctx, other_id) if other_id else None
        if other_id and other is None:
            return Hold(reason=f"{self.there} {self.entity} {other_id}, paired with {self.here} {key}, no longer exists; "
                               f"nothing is re-created on its own (replay after linking another, or resolve)")
        verdict = echoes.reconcile(fields, other, state.agreed if state else None, _config(ctx).rule(self.entity),
                                   source_system=self.here, target_system=self.there)
        decisions = ([Decision("pairing", other_id, how)] if other_id else []) + verdict.decisions(self.here, self.there)
        if verdict.held:
            names = ", ".join(c.field for c in verdict.held)
            return Hold(reason=f"{self.entity} {key}: {names} changed in both {self.here} and {self.there} since they "
                               f"last agreed; a person decides (or set two_way.{self.entity} to a system)",
                        releases=(ConfigNeeded(f"two_way.{self.entity}"),), decisions=decisions)
        if verdict.own_write and state is not None:
            return Nothing(f"not sent back: {verdict.own_write}", decisions)
        doc = TwoWayWrite(entity=self.entity, source_id=key, target_id=other_id, paired_by=how, fields=fields,
                          changes=verdict.changes, agreed=verdict.agreed, source=dict(source))
        if other_id and doc.changes:
            held = self.updates_held(doc)
            if held is not None:
                held.decisions[:0] = decisions
                return held
        return MappedRecord(doc, {"entity": self.entity, self.here: key}, decisions)

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        doc: TwoWayWrite = mapped.document  # type: ignore[assignment]
        if doc.target_id is None:
            return Plan("create", None, detail=f"{self.there} {self.entity} for {self.here} {doc.source_id}")
        if not doc.changes:
            return Plan("unchanged", doc.target_id, detail=f"{doc.paired_by}; shared fields equal")
        return Plan("update", doc.target_id, {k: (None, v) for k, v in doc.changes.items()})

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        doc: TwoWayWrite = mapped.document  # type: ignore[assignment]
        versions: dict[str, str | None] = {}
        if plan.action == "create":
            target_id, versions[self.there] = self.create_other(ctx, doc)
            action = "created"
        elif plan.action == "update":
            target_id = doc.target_id or ""
            versions[self.there] = self.update_other(ctx, doc)
            action = "updated"
        else:
            target_id, action = doc.target_id or "", "unchanged"
        echoes.remember(ctx.session, ctx.integration.id, self.entity, system=self.here, record_id=doc.source_id,
                        other_system=self.there, other_id=target_id, agreed=doc.agreed, versions=versions)
        if self.link_kind:
            st_id, sy_id = (doc.source_id, target_id) if self.here == ST else (target_id, doc.source_id)
            links.link(ctx.session, ctx.integration.id, kind=self.link_kind, source_system=ST, source_id=st_id,
                       source_name=str(doc.fields.get("name") or ""), target_system=SY, target_id=sy_id,
                       target_name=str(doc.fields.get("name") or ""), how=doc.paired_by or "created", replace=False)
        detail = {"reason": f"paired with {self.here} {doc.source_id} ({doc.paired_by})"} if action == "unchanged" else {}
        return WriteResult(target_id, action, 201 if action == "created" else 200, detail,
                           {"id": target_id, "version": versions.get(self.there)})


class VendorsToSuppliers(TwoWay, ServiceTitanSourced):
    """ServiceTitan vendors -> SYSPRO suppliers: paired, else the supplier of the code made from
    the vendor id or of the same name, else a new supplier of that code."""

    st_entity = "vendors"
    noun = "vendor"
    entity, here, there, link_kind = "vendors", ST, SY, "vendor"

    def key(self, source: Mapping[str, Any]) -> str:
        return str(source["id"])

    def shared(self, ctx: FlowContext, source: Mapping[str, Any]) -> dict[str, Any]:
        return m.vendor_fields(source)

    def read_other(self, ctx: FlowContext, other_id: str) -> dict[str, Any] | None:
        found = _sy(ctx).find_supplier(other_id)
        return m.supplier_fields(plain(found)) if found is not None else None

    def match_other(self, ctx: FlowContext, source: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[str, str] | None:
        code = m.supplier_code(source["id"], _config(ctx))
        found = _sy(ctx).find_supplier(code)
        if found is not None:
            return found.supplier, f"supplier code {code}"
        if fields.get("name"):
            found = _sy(ctx).find_supplier(name=fields["name"])
            if found is not None:
                return found.supplier, f"supplier named '{fields['name']}'"
        return None

    def _version(self, ctx: FlowContext, code: str) -> str | None:
        found = _sy(ctx).find_supplier(code)
        return str(plain(found).get("changed_at") or "") or None if found is not None else None

    def create_other(self, ctx: FlowContext, doc: TwoWayWrite) -> tuple[str, str | None]:
        code = m.supplier_code(doc.source_id, _config(ctx))
        sy = _sy(ctx)
        with sy.session():
            sy.add_supplier(m.supplier_in(code, doc.fields))
            return code, self._version(ctx, code)

    def update_other(self, ctx: FlowContext, doc: TwoWayWrite) -> str | None:
        sy = _sy(ctx)
        with sy.session():
            sy.update_supplier(doc.target_id, m.supplier_in(doc.target_id or "", {**doc.fields, **doc.changes}))
            return self._version(ctx, doc.target_id or "")


class SuppliersToVendors(TwoWay, SysproSourced):
    """SYSPRO suppliers -> ServiceTitan vendors: paired, else the unpaired vendor of the same
    name, else a new vendor (its supplier code kept in the vendor link)."""

    sy_entity = "suppliers"
    entity, here, there, link_kind = "vendors", SY, ST, "vendor"
    unique_names_there = True  # ServiceTitan refuses a second vendor of one name

    def source_id(self, row: Mapping[str, Any]) -> str:
        return str(row["Supplier"]).strip()

    key = source_id  # type: ignore[assignment]

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        found = _sy(ctx).find_supplier(source_id)
        return plain(found) if found is not None else None

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"supplier {payload.get('Supplier')}", payload.get("SupplierName") or "")

    def shared(self, ctx: FlowContext, source: Mapping[str, Any]) -> dict[str, Any]:
        return m.supplier_fields(source)

    def read_other(self, ctx: FlowContext, other_id: str) -> dict[str, Any] | None:
        try:
            return m.vendor_fields(plain(_st(ctx).get("vendors", int(other_id))))
        except NotFoundError:
            return None

    def match_other(self, ctx: FlowContext, source: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[str, str] | None:
        found = _st(ctx).find_vendor_by_name(fields["name"]) if fields.get("name") else None
        return (str(found.id), f"vendor named '{fields['name']}'") if found is not None else None

    def create_other(self, ctx: FlowContext, doc: TwoWayWrite) -> tuple[str, str | None]:
        created = plain(_st(ctx).create_vendor(m.vendor_body(doc.fields)))
        return str(created["id"]), st_version(created)

    def update_other(self, ctx: FlowContext, doc: TwoWayWrite) -> str | None:
        st = _st(ctx)
        current = plain(st.get("vendors", int(doc.target_id or 0)))
        return st_version(plain(st.update_vendor(int(doc.target_id or 0), m.vendor_body(doc.changes, current))))


class StPurchaseOrders(TwoWay, ServiceTitanSourced):
    """ServiceTitan POs -> SYSPRO POs on the vendor's supplier, found again by the ST number."""

    st_entity = "purchase_orders"
    date_field = "date"
    noun = "PO"
    entity, here, there = "purchase_orders", ST, SY

    def key(self, source: Mapping[str, Any]) -> str:
        return str(source["id"])

    def shared(self, ctx: FlowContext, source: Mapping[str, Any]) -> dict[str, Any] | Hold:
        vendor_id = source.get("vendorId")
        code = _supplier_of_vendor(ctx, vendor_id)
        if code is None:
            return Hold(reason=f"PO {source.get('number')} waits for its vendor {vendor_id} to be a SYSPRO supplier (the "
                               f"vendors flow pairs it; or link it: --kind vendor)",
                        releases=(LinkNeeded("vendor", ST, str(vendor_id)),))
        return m.st_po_fields(source, code, _config(ctx), _linked_items(ctx))

    def read_other(self, ctx: FlowContext, other_id: str) -> dict[str, Any] | None:
        found = _sy(ctx).find_purchase_order(other_id)
        return m.syspro_po_fields(plain(found)) if found is not None else None

    def match_other(self, ctx: FlowContext, source: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[str, str] | None:
        found = _sy(ctx).find_purchase_order(reference=str(source.get("number") or ""))
        return (found.purchase_order, f"reference {source.get('number')}") if found is not None else None

    def create_other(self, ctx: FlowContext, doc: TwoWayWrite) -> tuple[str, str | None]:
        sy = _sy(ctx)
        with sy.session():
            result = sy.post_purchase_order(m.syspro_po_in(doc.source, doc.fields, _config(ctx)))
            number = result.keys["PurchaseOrder"]
            found = sy.find_purchase_order(number)
        return number, (str(plain(found).get("changed_at") or "") or None) if found is not None else None

    def updates_held(self, doc: TwoWayWrite) -> Hold | None:
        return Hold(reason=f"PO {doc.source.get('number')} changed ({', '.join(sorted(doc.changes))}) after it reached "
                           f"SYSPRO as {doc.target_id}: SYSPRO changes PO lines by line number, so a person carries this")


class SysproPurchaseOrders(TwoWay, SysproSourced):
    """SYSPRO POs -> ServiceTitan POs on the supplier's vendor."""

    sy_entity = "purchase_orders"
    entity, here, there = "purchase_orders", SY, ST

    def source_id(self, row: Mapping[str, Any]) -> str:
        return str(row["PurchaseOrder"]).strip()

    key = source_id  # type: ignore[assignment]

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        found = _sy(ctx).find_purchase_order(source_id)
        return plain(found) if found is not None else None

    def document_date(self, source: Any) -> Any:
        return source.get("OrderEntryDate")

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"SYSPRO PO {payload.get('PurchaseOrder')}", payload.get("Supplier") or "")

    def shared(self, ctx: FlowContext, source: Mapping[str, Any]) -> dict[str, Any] | Hold:
        code = str(source.get("Supplier") or "").strip()
        vendor = _vendor_of_supplier(ctx, code)
        if vendor is None:
            return Hold(reason=f"SYSPRO PO {source.get('PurchaseOrder')} waits for supplier {code} to be a ServiceTitan "
                               f"vendor (the suppliers flow pairs it)",
                        releases=(vendor_on_both_sides(code), LinkNeeded("vendor", SY, code)))
        body = m.st_po_body(source, int(vendor), _config(ctx))  # every line must have a ServiceTitan SKU
        return body if isinstance(body, Hold) else m.syspro_po_fields(source)

    def read_other(self, ctx: FlowContext, other_id: str) -> dict[str, Any] | None:
        try:
            po = plain(_st(ctx).get("purchase_orders", int(other_id)))
        except NotFoundError:
            return None
        code = _supplier_of_vendor(ctx, po.get("vendorId")) or ""
        fields = m.st_po_fields(po, code, _config(ctx), _linked_items(ctx))
        return fields if not isinstance(fields, Hold) else {"supplier": code, "lines": None}

    def match_other(self, ctx: FlowContext, source: Mapping[str, Any], fields: Mapping[str, Any]) -> tuple[str, str] | None:
        reference = str(source.get("reference") or "").strip()
        found = _st(ctx).find_purchase_order_by_number(reference) if reference else None
        return (str(found.id), f"ServiceTitan number {reference}") if found is not None else None

    def create_other(self, ctx: FlowContext, doc: TwoWayWrite) -> tuple[str, str | None]:
        vendor = _vendor_of_supplier(ctx, doc.fields["supplier"])
        body = m.st_po_body(doc.source, int(vendor or 0), _config(ctx))
        assert not isinstance(body, Hold)  # `shared` held the record otherwise
        created = plain(_st(ctx).create_purchase_order(body))
        return str(created["id"]), st_version(created)

    def updates_held(self, doc: TwoWayWrite) -> Hold | None:
        return Hold(reason=f"SYSPRO PO {doc.source_id} changed ({', '.join(sorted(doc.changes))}) after it reached "
                           f"ServiceTitan as {doc.target_id}; a person carries this")

    def conditions_met(self, ctx: FlowContext, conditions: list[TargetCondition]) -> set[TargetCondition]:
        """Suppliers paired with a ServiceTitan vendor since (our state; no API call)."""
        return {c for c in conditions if c.condition == "paired" and _vendor_of_supplier(ctx, c.target_id) is not None}


# ---- invoices -> AP invoices ---------------------------------------------------------------------


class InvoicesHandler(ServiceTitanSourced):
    """ServiceTitan job invoices -> SYSPRO AP invoices (APSTIN), once per (supplier, invoice)."""

    st_entity = "invoices"
    date_field = "invoiceDate"
    noun = "invoice"
    counterpart_field = "customer"

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        config = _config(ctx)
        job = source.get("job") or {}
        pos = [plain(p) for p in _st(ctx).rows(_st(ctx).spec("purchase_orders"), {"jobId": job["id"]})] if job.get("id") else []
        vendors, where = m.invoice_vendor(source, pos)
        label = f"invoice {source.get('referenceNumber')}"
        if len(vendors) > 1:
            return Hold(reason=f"{label}: the purchase orders of {where} name several vendors ({', '.join(map(str, vendors))});"
                               f" a person decides which supplier it posts to")
        if vendors:
            code = _supplier_of_vendor(ctx, vendors[0])
            if code is None:
                return Hold(reason=f"{label} waits for vendor {vendors[0]} (from the PO of {where}) to be a SYSPRO "
                                   f"supplier; the vendors flow pairs it (or link it: --kind vendor)",
                            releases=(LinkNeeded("vendor", ST, str(vendors[0])),))
            supplier = m.SupplierChoice(code=code, reason=f"vendorId {vendors[0]} of the purchase order of {where}")
        elif config.default_supplier:
            supplier = m.SupplierChoice(code=config.default_supplier, reason=f"no purchase order on {where}: default_supplier")
        else:
            return Hold(reason=f"{label}: no purchase order on {where} names a vendor, and no default_supplier is set",
                        releases=(ConfigNeeded("default_supplier"),))
        return m.map_invoice(source, config, supplier, _linked_items(ctx), m.technician_of(source, pos))

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        document: ApInvoiceIn = mapped.document  # type: ignore[assignment]
        if known_target_id:
            return Plan("unchanged", known_target_id, detail="posted to SYSPRO AP already; a posted AP invoice is not "
                                                             "changed from ServiceTitan")
        lines = ", ".join(f"{l.ledger_code} {l.value}" for l in document.distribution)
        return Plan("create", None, detail=f"APSTIN {document.invoice} on {document.supplier}, {document.value} ({lines})")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        document: ApInvoiceIn = mapped.document  # type: ignore[assignment]
        target = f"{document.supplier}/{document.invoice}"
        if plan.action == "unchanged":
            return WriteResult(plan.target_id or target, "unchanged", 200, {"reason": plan.detail}, mapped.external_key)
        result = _sy(ctx).post_ap_invoice(document)
        if result.already_existed:
            return WriteResult(target, "unchanged", 200, {"reason": "found in SYSPRO by supplier and invoice number"},
                               result.keys)
        return WriteResult(target, "created", 200, {"journal": result.keys.get("Journal")}, result.keys)


class SysproApInvoices(SysproSourced):
    """SYSPRO AP invoices, polled by `InvoiceDate` and `PostDate`: each one this integration
    posted is confirmed in its ServiceTitan invoice's own audit trail (journal and posting
    date, as SYSPRO holds them); nothing is written anywhere (ServiceTitan's AP bills are
    read-only to integrations, and SYSPRO's invoices are SYSPRO's)."""

    sy_entity = "ap_invoices"

    def source_id(self, row: Mapping[str, Any]) -> str:
        return f"{str(row['Supplier']).strip()}/{str(row['Invoice']).strip()}"

    def version(self, source: Any) -> str | None:
        return "/".join(str(source.get(k) or "") for k in ("PostDate", "Journal", "OrigInvValue", "MthInvBal1"))

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        for record in _sy(ctx).iter_new_ap_invoices(since.at.date() if since.at else None):
            row = plain(record)
            yield SourceRecord(self.source_id(row), self.version(row))

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        supplier, _, invoice = source_id.partition("/")
        found = _sy(ctx).find_ap_invoice(supplier, invoice)
        return plain(found) if found is not None else None

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"AP invoice {payload.get('Invoice')}", payload.get("Supplier") or "",
                               str(payload.get("OrigInvValue") or ""))

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        from sqlalchemy import select

        from mlconnector import audit
        from mlconnector.db.models import SyncRecord

        key = self.source_id(source)
        posted = ctx.session.scalar(select(SyncRecord).where(
            SyncRecord.integration_id == ctx.integration.id, SyncRecord.flow == "invoices", SyncRecord.target_id == key))
        if posted is None:
            return Nothing(f"AP invoice {key} was not posted by this integration; nothing is written back to ServiceTitan")
        said = (f"confirmed in SYSPRO AP: {key}, journal {source.get('Journal')}, posted {source.get('PostDate')}, "
                f"value {source.get('OrigInvValue')}, balance {source.get('MthInvBal1')}")
        if not ctx.dry_run:
            audit.append(ctx.session, "confirmed", said, integration_id=ctx.integration.id, flow="invoices",
                         sync_record_id=posted.id, target_id=key)
        return Nothing(said, [Decision("ServiceTitan invoice", posted.source_id, "its AP posting, read back")])

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        raise AssertionError("nothing is written for a SYSPRO AP invoice")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        raise AssertionError("nothing is written for a SYSPRO AP invoice")


# ---- inventory adjustments -------------------------------------------------------------------------


class AdjustmentPosts(BaseModel):
    adjustment: str
    posts: list[InventoryAdjustmentIn]


class AdjustmentsHandler(ServiceTitanSourced):
    """ServiceTitan inventory adjustments -> SYSPRO stock adjustments, one per item, each found
    again by its reference before it is posted."""

    st_entity = "adjustments"
    date_field = "date"
    noun = "adjustment"

    def map(self, ctx: FlowContext, source: Any, counterparts: Mapping[str, Counterpart]) -> MappedRecord | Hold | Nothing:
        posts = m.map_adjustment(source, _config(ctx), _linked_items(ctx))
        if not isinstance(posts, list):
            return posts
        decisions = [Decision(f"item {p.reference}", p.stock_code, f"{p.quantity} in {p.warehouse}") for p in posts]
        return MappedRecord(AdjustmentPosts(adjustment=str(source["id"]), posts=posts), {"adjustment": source["id"]},
                            decisions)

    def plan(self, ctx: FlowContext, mapped: MappedRecord, known_target_id: str | None) -> Plan:
        if known_target_id:
            return Plan("unchanged", known_target_id, detail="posted to SYSPRO already")
        doc: AdjustmentPosts = mapped.document  # type: ignore[assignment]
        return Plan("create", None, detail=f"{len(doc.posts)} stock adjustment(s)")

    def write(self, ctx: FlowContext, mapped: MappedRecord, plan: Plan, known_target_id: str | None) -> WriteResult:
        doc: AdjustmentPosts = mapped.document  # type: ignore[assignment]
        if plan.action == "unchanged":
            return WriteResult(plan.target_id or "", "unchanged", 200, {"reason": plan.detail})
        sy = _sy(ctx)
        journals, existed = [], 0
        with sy.session():
            for post in doc.posts:
                result = sy.post_inventory_adjustment(post)
                existed += result.already_existed
                journals.append(f"{result.keys.get('Journal')}/{result.keys.get('JournalEntry')}")
        target = ",".join(journals)
        action = "unchanged" if existed == len(doc.posts) else "created"
        return WriteResult(target, action, 200, {"reason": "found in SYSPRO by reference"} if action == "unchanged" else {},
                           {"journals": journals})


# ---- the pair ------------------------------------------------------------------------------------


# ---- month-end reconciliation ---------------------------------------------------------------------


def _invoice_cost(invoice: dict[str, Any]) -> Decimal:
    """What the SYSPRO AP invoice of a job invoice should total: its items' cost (`totalCost`, else
    quantity x cost), the mapping's rule; the customer's price is the AR side and is not posted."""
    total = Decimal(0)
    for item in invoice.get("items") or []:
        cost = m.money(item.get("totalCost")) if item.get("totalCost") not in (None, "") else \
            m.money(m.quantity(item.get("quantity")) * m.money(item.get("cost")))
        total += cost
    return total.quantize(Decimal("0.01"))


class ApInvoicesReconciler(Reconciler):
    """ServiceTitan job invoices that carry a cost, by invoice date; SYSPRO AP invoices by
    `InvoiceDate` (the job invoice's date, as posted), keyed Supplier/Invoice as written and
    found by the invoice number the mapping makes (`invoice_prefix` + the ServiceTitan number)."""

    entity = "job invoices -> AP invoices"
    source_date = "ServiceTitan invoiceDate"
    target_date = "SYSPRO InvoiceDate"

    def source_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        config = _config(ctx)
        for document in st_documents(ctx, "invoices", start, end, date_field="invoiceDate", amount=_invoice_cost,
                                     number=lambda row: m.invoice_number(row, config), party="customer"):
            if document.amount > 0:  # a job invoice that cost nothing posts nothing
                yield document

    def target_documents(self, ctx: FlowContext, start: date, end: date) -> Iterator[ReconDocument]:
        sy = _sy(ctx)
        with sy.session():
            invoices = [plain(i) for i in sy.iter_ap_invoices_dated(start, end)]
        for row in invoices:
            if row.get("InvoiceDate"):
                yield ReconDocument(f"{row['Supplier']}/{row['Invoice']}", row["Invoice"], m.money(row.get("OrigInvValue")),
                                    date.fromisoformat(str(row["InvoiceDate"])[:10]), row["Supplier"], row["Supplier"],
                                    match_key=row["Invoice"])

    def scope(self, ctx: FlowContext) -> str:
        return "SYSPRO AP invoices (every supplier)"

    def amount_of(self, payload: Mapping[str, Any]) -> Decimal | None:
        return _invoice_cost(dict(payload))


def sandbox_config(sandboxes: "SandboxSet") -> dict[str, Any]:
    """A working config against the sandboxes: every ServiceTitan SKU on a seeded SYSPRO stock
    code, services on a service code, item types on the sandbox's GL accounts, each business
    unit on a branch, POs from SYSPRO on ServiceTitan's first PO type and warehouse."""
    import requests

    from sandboxes.servicetitan import SKUS

    def rows(system: str, entity: str) -> list[dict[str, Any]]:
        return requests.get(f"{sandboxes.url(system)}/_sandbox/entities/{entity}", timeout=10).json()

    stock = sorted(r["StockCode"] for r in rows(SY, "stock_items"))
    held = {(r["StockCode"], r["Warehouse"]) for r in rows(SY, "warehouse_stock")}
    stocked = [code for code in stock if (code, "WH01") in held] or stock
    items = {str(8_801 + i): stocked[i % len(stocked)] for i in range(len(SKUS))}
    items["7001"] = "SERVICE-LABOUR"  # service items (labour) have no stock
    units = rows(ST, "business_units")
    locations = rows(ST, "warehouses")
    return {
        "systems": {ST: sandboxes.config(ST), SY: {**sandboxes.config(SY), "max_sessions": 4}},
        "items": items,
        "ledger_codes": {"Material": "10-5500", "Equipment": "10-5520", "Service": "30-6100", "default": "10-5500"},
        "branches": {str(u["id"]): f"{n + 1:02d}" for n, u in enumerate(units)},
        "warehouses": {str(locations[0]["id"]): "WH01"} if locations else {},
        "st_purchase_orders": {"type_id": 1, "business_unit_id": units[0]["id"] if units else None,
                               "inventory_location_id": locations[0]["id"] if locations else None},
        "two_way": {"vendors": {"default": "hold"}, "purchase_orders": {"default": "hold"}},
    }


def demo_summary(harness: Any, integration: str) -> str:
    """The demo's last word, read from SYSPRO through COMFND queries: the AP invoices and
    suppliers this demo's ledger says it wrote, each found there by its key."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(SyncRecord.flow, SyncRecord.target_id).where(
            SyncRecord.integration_id == integration, SyncRecord.status == "written")).all()
    sy = harness.connector(SY)
    with sy.session():
        invoices = sum(1 for flow, target in rows if flow == "invoices" and target
                       and sy.find_ap_invoice(*target.split("/", 1)) is not None)
        suppliers = sum(1 for flow, target in rows if flow == "vendors" and target and sy.find_supplier(target) is not None)
    vendors = sum(1 for flow, _ in rows if flow == "suppliers")
    return (f"SYSPRO now holds {invoices} AP invoice(s) and {suppliers} supplier(s) written by this demo (read back "
            f"through COMFND); ServiceTitan received {vendors} vendor(s) from SYSPRO.")


def demo_plants(stage: Any) -> list[Any]:
    """What the seeded data brings up and a person decides: a job whose purchase orders name
    several vendors, a SYSPRO stock code with no ServiceTitan SKU, two SYSPRO suppliers of
    one name (ServiceTitan refuses a second vendor of a name), and so the purchase orders of
    the supplier so held, which wait until it is a ServiceTitan vendor."""
    from mlconnector.demo_stage import held_for_a_person

    return [held_for_a_person(stage, "a job whose purchase orders name several vendors", "invoices",
                              "name several vendors"),
            held_for_a_person(stage, "a SYSPRO stock code with no ServiceTitan SKU", "syspro_purchase_orders",
                              "have no ServiceTitan SKU"),
            held_for_a_person(stage, "two SYSPRO suppliers of one name", "suppliers", "refuses a second of one name"),
            held_for_a_person(stage, "a SYSPRO purchase order of a supplier held for a person", "syspro_purchase_orders",
                              "to be a ServiceTitan vendor")]


PAIR = Pair(
    name=PAIR_NAME,
    source=ST,
    target=SY,
    description="ServiceTitan job invoices -> SYSPRO AP invoices; vendors, purchase orders both ways without echoes; "
                "inventory adjustments -> SYSPRO.",
    config_model=m.ServiceTitanSysproConfig,
    counterparts=(VENDORS, ITEMS),
    sandbox_config=sandbox_config,
    demo=PairDemo("ServiceTitan <-> SYSPRO", demo_summary, {"default_supplier": "S00001"}, order=40,
                  plant=lambda stage: demo_plants(stage)),
    flows=(
        Flow(name="vendors", source=ST, source_entity="vendors", target=SY, target_entity="suppliers",
             handler=VendorsToSuppliers(), poll_seconds=POLL_SECONDS),
        Flow(name="suppliers", source=SY, source_entity="suppliers", target=ST, target_entity="vendors",
             handler=SuppliersToVendors(), poll_seconds=POLL_SECONDS),
        Flow(name="invoices", source=ST, source_entity="invoices", target=SY, target_entity="ap_invoices",
             handler=InvoicesHandler(), poll_seconds=POLL_SECONDS, prerequisites=("vendors",),
             reconciler=ApInvoicesReconciler()),
        Flow(name="purchase_orders", source=ST, source_entity="purchase_orders", target=SY,
             target_entity="purchase_orders", handler=StPurchaseOrders(), poll_seconds=POLL_SECONDS,
             prerequisites=("vendors",)),
        Flow(name="syspro_purchase_orders", source=SY, source_entity="purchase_orders", target=ST,
             target_entity="purchase_orders", handler=SysproPurchaseOrders(), poll_seconds=POLL_SECONDS,
             prerequisites=("suppliers",)),
        Flow(name="ap_invoices", source=SY, source_entity="ap_invoices", target=ST, target_entity="invoices",
             handler=SysproApInvoices(), poll_seconds=POLL_SECONDS, prerequisites=("invoices",),
             description="read only: confirms each posting in its invoice's audit trail"),
        Flow(name="adjustments", source=ST, source_entity="adjustments", target=SY, target_entity="stock_adjustments",
             handler=AdjustmentsHandler(), poll_seconds=POLL_SECONDS),
    ),
)
