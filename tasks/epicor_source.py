"""Epicor Kinetic as a flow's source, for every pair that reads it: change polling from the
flow's persisted position (ChangeDate where the table has it, SysRevID otherwise), the
version a record is deduped by, and the full record read with its lines.

Epicor has no webhooks, so these flows only poll; an idle poll costs one Epicor call.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from mlconnector.flows import FlowContext, FlowHandler, SourceRecord
from mlconnector.http import NotFoundError
from mlconnector.positions import Position

EPICOR = "epicor"


def epicor(ctx: FlowContext) -> Any:
    return ctx.connectors[EPICOR]


def plain(value: Any) -> dict[str, Any]:
    """A connector model (or dict) as the JSON-shaped dict mappings and the audit trail read."""
    if value is None:
        return {}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    return dict(value)


class EpicorPolled(FlowHandler):
    """A flow reading one Epicor entity by its change field: ChangeDate where the table has it
    (a timestamp position), SysRevID otherwise (a cursor position)."""

    entity: str = ""
    noun: str = "record"

    def version(self, source: Any) -> str | None:
        """The header's SysRevID and the highest of its lines' (and releases'): a line edit is a new version."""
        revs = [int(source.get("SysRevID") or 0)]
        for nav in ("lines", "PODetails", "APInvDtls", "PORels"):
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
