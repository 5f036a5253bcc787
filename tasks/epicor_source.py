"""Epicor Kinetic as a flow's source, for every pair that reads it: change polling from the
flow's persisted position (ChangeDate where the table has it, SysRevID otherwise), the
version a record is deduped by, and the full record read with its lines.

Epicor has no webhooks, so these flows only poll; an idle poll costs one Epicor call.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from connectors.base import plain
from mlconnector.flows import DocumentSummary, FlowContext, FlowHandler, ReconDocument, SourceRecord
from mlconnector.http import NotFoundError
from mlconnector.positions import Position

EPICOR = "epicor"


def epicor(ctx: FlowContext) -> Any:
    return ctx.connectors[EPICOR]


class EpicorPolled(FlowHandler):
    """A flow reading one Epicor entity by its change field: ChangeDate where the table has it
    (a timestamp position), SysRevID otherwise (a cursor position)."""

    entity: str = ""
    noun: str = "record"

    def version(self, source: Any) -> str | None:
        """The header's SysRevID and the highest of its lines' (and releases'): a line edit is a new version."""
        revs = [int(source.get("SysRevID") or 0)]
        for nav in ("lines", "PODetails", "APInvDtls", "PORels"):  # a vendor's banks are not: its poll reads none
            revs += [int(l.get("SysRevID") or 0) for l in (source.get(nav) or [])]
        return ".".join(str(r) for r in (revs[0], max(revs))) if revs[0] else None

    def changed(self, ctx: FlowContext, since: Position, until: datetime) -> Iterator[SourceRecord]:
        source = epicor(ctx)
        if source.change_field(self.entity) == "ChangeDate":
            for record in source.iter_changed(self.entity, since.at, until):
                row = plain(record)
                yield SourceRecord(self.source_id(row), self.version(row))
            return
        for record in source.iter_changed_since_rev(self.entity, int(since.cursor) if since.cursor else None):
            row = plain(record)
            yield SourceRecord(self.source_id(row), self.version(row), cursor=str(row["SysRevID"]))

    def source_id(self, row: Mapping[str, Any]) -> str:
        raise NotImplementedError


def fetch_vendor(ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
    vendor = epicor(ctx).get_vendor(int(source_id))
    return plain(vendor) if vendor is not None else None


def fetch_purchase_order(ctx: FlowContext, source_id: str, *, releases: bool = False) -> dict[str, Any] | None:
    """The PO with its lines (and its releases, the delivery schedule, when asked), one call."""
    try:
        return plain(epicor(ctx).get_purchase_order(int(source_id), releases=releases))
    except NotFoundError:
        return None


def invoice_source_id(row: Mapping[str, Any]) -> str:
    return f"{row['VendorNum']}/{row['InvoiceNum']}"


def fetch_ap_invoice(ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
    vendor_num, _, invoice_num = source_id.partition("/")
    invoice = epicor(ctx).get_ap_invoice(int(vendor_num), invoice_num)
    return plain(invoice) if invoice is not None else None




class EpicorPurchaseOrders:
    """An Epicor PO as a flow's source: its id, the full record with its lines (releases when
    the pair asks: `with_releases`), its date and how the exceptions queue names it."""

    entity = "purchase_orders"
    noun = "PO"
    with_releases = False

    def source_id(self, row: Mapping[str, Any]) -> str:
        return str(row["PONum"])

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        return fetch_purchase_order(ctx, source_id, releases=self.with_releases)

    def document_date(self, source: Any) -> Any:
        return source.get("OrderDate")

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"PO {payload.get('PONum')}", payload.get("VendorName") or "",
                               str(payload.get("DocTotalOrder") or payload.get("TotalOrder") or ""))


class EpicorApInvoices:
    """An Epicor AP invoice as a flow's source: `VendorNum/InvoiceNum`, the full record with its
    lines, its date and how the exceptions queue names it."""

    entity = "ap_invoices"
    noun = "AP invoice"

    def source_id(self, row: Mapping[str, Any]) -> str:
        return invoice_source_id(row)

    def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any] | None:
        return fetch_ap_invoice(ctx, source_id)

    def document_date(self, source: Any) -> Any:
        return source.get("InvoiceDate")

    def summarize(self, payload: dict[str, Any]) -> DocumentSummary:
        return DocumentSummary(f"AP invoice {payload.get('InvoiceNum')}", payload.get("VendorNumName") or "",
                               str(payload.get("DocInvoiceAmt") or payload.get("InvoiceAmt") or ""))

# ---- the demo: an unmapped GL account ------------------------------------------------------------


def unmapped_account_plants(stage: Any, case: str, map_key: str) -> list[Any]:
    """The GL account most Epicor AP invoice lines use is left out of the config's
    `<map_key>.by_account` map: its invoices are held naming it, then, after the ap_invoices
    flow, the account is mapped again as a person would, and they are written."""
    from collections import Counter

    from mappings.epicor_values import gl_account
    from mlconnector.demo_stage import config_hold_plant

    used = Counter(gl_account(str(line.get("GLAccount") or ""))
                   for invoice in stage.rows(EPICOR, "ap_invoices") for line in invoice.get("APInvDtls") or [])
    if not used:
        return []
    account = used.most_common(1)[0][0]
    value = stage.harness.config[map_key]["by_account"].get(account)
    stage.change_config({map_key: {"by_account": {account: None}}}, f"GL account {account} left unmapped")
    return [config_hold_plant(stage, case, "ap_invoices", f"GL account(s) {account}",
                              {map_key: {"by_account": {account: value}}}, fix_after="ap_invoices")]

# ---- month-end reconciliation: Epicor documents of a period -------------------------------------


def _day(value: Any) -> date:
    return value if isinstance(value, date) and not isinstance(value, datetime) else date.fromisoformat(str(value)[:10])


def epicor_purchase_orders(ctx: FlowContext, start: date, end: date,
                           amount: Callable[[dict[str, Any]], Decimal]) -> Iterator[ReconDocument]:
    """Epicor POs by their OrderDate (an OData $filter on it), with their lines; `amount` is what
    the pair moves of each."""
    for record in epicor(ctx).iter_dated("purchase_orders", "OrderDate", start, end):
        po = plain(record)
        if po.get("OrderDate"):
            yield ReconDocument(str(po["PONum"]), str(po["PONum"]), amount(po), _day(po["OrderDate"]),
                                po.get("VendorName") or "", str(po.get("VendorNum") or ""), match_key=str(po["PONum"]))


def epicor_ap_invoices(ctx: FlowContext, start: date, end: date,
                       amount: Callable[[dict[str, Any]], Decimal]) -> Iterator[ReconDocument]:
    """Epicor AP invoices by their InvoiceDate (an OData $filter on it), with their lines."""
    for record in epicor(ctx).iter_dated("ap_invoices", "InvoiceDate", start, end):
        invoice = plain(record)
        if invoice.get("InvoiceDate"):
            yield ReconDocument(invoice_source_id(invoice), str(invoice["InvoiceNum"]), amount(invoice),
                                _day(invoice["InvoiceDate"]), invoice.get("VendorNumName") or "",
                                str(invoice.get("VendorNum") or ""), match_key=str(invoice["InvoiceNum"]))
