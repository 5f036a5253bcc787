"""`vendor_links`: which source vendor is which target vendor, and how that was decided."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlconnector import audit
from mlconnector.db.models import VendorLink, utcnow
from mlconnector.db.session import upsert_into

LEGAL_SUFFIXES = {"INC", "INCORPORATED", "LLC", "LTD", "LIMITED", "CO", "COMPANY", "CORP", "CORPORATION", "LP", "LLP", "PLC", "THE"}


def normalize_name(name: str) -> str:
    """'Acme Supply Co., Inc.' and 'ACME SUPPLY COMPANY' both become 'ACME SUPPLY'."""
    words = re.sub(r"[^A-Z0-9& ]+", " ", (name or "").upper().replace("&", " AND ")).split()
    while words and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    while words and words[0] == "THE":
        words.pop(0)
    return " ".join(words)


def hold_key(source_system: str, source_vendor_id: str) -> str:
    return f"vendor:{source_system}:{source_vendor_id}"


def find(session: Session, integration_id: str, source_system: str, source_vendor_id: str) -> VendorLink | None:
    return session.scalar(
        select(VendorLink).where(
            VendorLink.integration_id == integration_id,
            VendorLink.source_system == source_system,
            VendorLink.source_vendor_id == str(source_vendor_id),
        )
    )


def find_by_target(session: Session, integration_id: str, target_system: str, target_vendor_id: str) -> list[VendorLink]:
    return list(session.scalars(
        select(VendorLink).where(
            VendorLink.integration_id == integration_id,
            VendorLink.target_system == target_system,
            VendorLink.target_vendor_id == str(target_vendor_id),
        )
    ))


def list_links(session: Session, integration_id: str) -> list[VendorLink]:
    return list(session.scalars(select(VendorLink).where(VendorLink.integration_id == integration_id).order_by(VendorLink.id)))


def link(
    session: Session,
    integration_id: str,
    *,
    source_system: str,
    source_vendor_id: str,
    source_vendor_name: str,
    target_system: str,
    target_vendor_id: str,
    target_vendor_name: str,
    how: str,
    replace: bool = True,
) -> VendorLink:
    """Create the link for one source vendor, with an audit row saying how; the stored link.

    `replace` (a person linking by hand): an existing link is replaced. Otherwise (the
    engine resolving a vendor) the first link stands: two workers resolving one new vendor
    at once (two of its bills in flight) both get the link the first one stored, and the
    second neither fails on the unique key nor rewrites how the link was made.
    """
    chosen = {"source_vendor_name": source_vendor_name, "target_system": target_system,
              "target_vendor_id": str(target_vendor_id), "target_vendor_name": target_vendor_name, "how": how}
    statement = upsert_into(session, VendorLink).values(
        integration_id=integration_id, source_system=source_system, source_vendor_id=str(source_vendor_id),
        created_at=utcnow(), **chosen)
    index = ["integration_id", "source_system", "source_vendor_id"]
    statement = (statement.on_conflict_do_update(index_elements=index, set_=chosen) if replace
                 else statement.on_conflict_do_nothing(index_elements=index))
    stored_now = session.execute(statement).rowcount == 1
    stored = session.scalar(
        select(VendorLink).where(VendorLink.integration_id == integration_id, VendorLink.source_system == source_system,
                                 VendorLink.source_vendor_id == str(source_vendor_id))
        .execution_options(populate_existing=True)
    )
    assert stored is not None
    if stored_now:
        audit.append(session, "vendor_linked",
                     f"{source_system} vendor {source_vendor_id} '{source_vendor_name}' -> {target_system} vendor "
                     f"{target_vendor_id} '{target_vendor_name}' ({how})", integration_id=integration_id,
                     target_id=str(target_vendor_id))
    return stored


def unlink(session: Session, integration_id: str, source_system: str, source_vendor_id: str) -> bool:
    existing = find(session, integration_id, source_system, source_vendor_id)
    if existing is None:
        return False
    # Links are not evidence; their history is in the audit trail.
    audit.append(session, "vendor_unlinked",
                 f"{source_system} vendor {source_vendor_id} unlinked from {existing.target_system} vendor {existing.target_vendor_id}",
                 integration_id=integration_id)
    session.delete(existing)
    return True
