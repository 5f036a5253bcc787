"""Links: which source record is which target record, of any kind, and how that was decided.

A link records an identity (vendor, customer, item, cost code, subaccount, ...); it never
changes either record. Making or removing one is audited, and making one releases the
records held for it.
"""

from __future__ import annotations

import difflib
import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlconnector import audit
from mlconnector.db.models import Link, utcnow
from mlconnector.db.session import upsert_into
from mlconnector.holds import LinkNeeded

LEGAL_SUFFIXES = {"INC", "INCORPORATED", "LLC", "LTD", "LIMITED", "CO", "COMPANY", "CORP", "CORPORATION", "LP", "LLP", "PLC", "THE"}
MANUAL = "manual"  # how a link made by a person is recorded; it outranks any the engine makes


def normalize_name(name: str) -> str:
    """'Acme Supply Co., Inc.' and 'ACME SUPPLY COMPANY' both become 'ACME SUPPLY'."""
    words = re.sub(r"[^A-Z0-9& ]+", " ", (name or "").upper().replace("&", " AND ")).split()
    while words and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    while words and words[0] == "THE":
        words.pop(0)
    return " ".join(words)


SIMILAR_RATIO = 0.8  # 'ACME SUPPLY' and 'ACME SUPPLIES'; 'SUMMIT PLUMBING' and 'SUMMIT ELECTRIC' are not


def name_words(name: str) -> list[str]:
    """The normalized name's words, initials run together ('W. W. Grainger' -> WW GRAINGER)."""
    words: list[str] = []
    for word in normalize_name(name).split():
        if len(word) == 1 and words and len(words[-1]) < 3 and words[-1].isalpha() and word.isalpha():
            words[-1] += word
        else:
            words.append(word)
    return words


def similar_names(a: str, b: str) -> bool:
    """Names a person should look at before a second record is made: one's words contain
    the other's ('W.W. Grainger Inc' and 'Grainger'), or they differ by a few letters; never
    two whose numbers differ ('Store 12', 'Store 13')."""
    wa, wb = name_words(a), name_words(b)
    if not wa or not wb:
        return False
    da, db = re.findall(r"\d+", " ".join(wa)), re.findall(r"\d+", " ".join(wb))
    if da and db and da != db:  # 'Store 12' and 'Store 13', 'Unit 4' and 'Unit 5' are two
        return False
    if set(wa) <= set(wb) or set(wb) <= set(wa):
        return True
    return difflib.SequenceMatcher(None, " ".join(wa), " ".join(wb)).ratio() >= SIMILAR_RATIO


def find(session: Session, integration_id: str, kind: str, source_system: str, source_id: str) -> Link | None:
    return session.scalar(
        select(Link).where(Link.integration_id == integration_id, Link.kind == kind,
                           Link.source_system == source_system, Link.source_id == str(source_id))
    )


def find_by_target(session: Session, integration_id: str, kind: str, target_system: str, target_id: str) -> list[Link]:
    return list(session.scalars(
        select(Link).where(Link.integration_id == integration_id, Link.kind == kind,
                           Link.target_system == target_system, Link.target_id == str(target_id))
        .order_by(Link.id)
    ))


def list_links(session: Session, integration_id: str, kind: str | None = None) -> list[Link]:
    query = select(Link).where(Link.integration_id == integration_id)
    if kind:
        query = query.where(Link.kind == kind)
    return list(session.scalars(query.order_by(Link.kind, Link.id)))


def link(
    session: Session,
    integration_id: str,
    *,
    kind: str,
    source_system: str,
    source_id: str,
    source_name: str,
    target_system: str,
    target_id: str,
    target_name: str,
    how: str,
    replace: bool = True,
    actor: str | None = None,
) -> Link:
    """Store the link for one source record, audit how, and release what waited for it.

    `replace` (a person linking by hand): an existing link is replaced. Otherwise (the
    engine resolving a counterpart) the first link stands: two workers resolving one new
    vendor at once both get the link the first one stored, and the second neither fails on
    the unique key nor rewrites how the link was made.
    """
    chosen = {"source_name": source_name, "target_system": target_system, "target_id": str(target_id),
              "target_name": target_name, "how": how}
    statement = upsert_into(session, Link).values(
        integration_id=integration_id, kind=kind, source_system=source_system, source_id=str(source_id),
        created_at=utcnow(), **chosen)
    index = ["integration_id", "kind", "source_system", "source_id"]
    statement = (statement.on_conflict_do_update(index_elements=index, set_=chosen) if replace
                 else statement.on_conflict_do_nothing(index_elements=index))
    stored_now = session.execute(statement).rowcount == 1
    stored = session.scalar(
        select(Link).where(Link.integration_id == integration_id, Link.kind == kind, Link.source_system == source_system,
                           Link.source_id == str(source_id))
        .execution_options(populate_existing=True)
    )
    assert stored is not None
    if stored_now:
        audit.append(session, "linked",
                     f"{kind}: {source_system} {source_id} '{source_name}' -> {target_system} {target_id} "
                     f"'{target_name}' ({how})" + (f" by {actor}" if actor else ""),
                     integration_id=integration_id, target_id=str(target_id), actor=actor)
        from mlconnector import releases

        releases.release(session, integration_id, [LinkNeeded(kind, source_system, str(source_id))],
                         f"{kind} {source_id} now linked to {target_system} {target_id}")
    return stored


def unlink(session: Session, integration_id: str, kind: str, source_system: str, source_id: str,
           actor: str | None = None) -> Link | None:
    """Remove one link (its history stays in the audit trail); the removed link, if any."""
    existing = find(session, integration_id, kind, source_system, source_id)
    if existing is None:
        return None
    audit.append(session, "unlinked",
                 f"{kind}: {source_system} {source_id} unlinked from {existing.target_system} {existing.target_id}"
                 + (f" by {actor}" if actor else ""), integration_id=integration_id, actor=actor)
    session.delete(existing)
    return existing
