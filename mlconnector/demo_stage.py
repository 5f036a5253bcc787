"""What a pair's demo works with: the stage `mlconnector demo` sets for it, and the cases it
plants there.

A pair plants the cases its users worry about (a near-duplicate vendor, an unmapped account,
a re-sent record, ...) through its `PairDemo.plant`, in its own module; the demo runs them
through the same engine and reports each one's outcome in a line. A held record counts as
handled only when a planted case explains it (`flow` and `held_because`), so an unplanned
hold still fails the demo.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import requests

HTTP_TIMEOUT_SECONDS = 10


class NotHandled(Exception):
    """A planted case did not end as it should: the message says what happened instead."""


@dataclass
class Planted:
    """One case planted in a pair's demo.

    `act` runs after the flow named `after` (None: before the first flow), e.g. a person
    linking a held record; `check` runs at the end and returns the outcome in words, or
    raises NotHandled. `flow` (None: any) and `held_because` (words of the hold reason) say
    which held records this case explains.
    """

    case: str
    check: Callable[[], str]
    flow: str | None = None
    held_because: str | None = None
    after: str | None = None
    act: Callable[[], None] | None = None

    def explains(self, flow: str, hold_reason: str | None) -> bool:
        return (self.held_because is not None and self.flow in (None, flow)
                and self.held_because.lower() in (hold_reason or "").lower())


@dataclass
class DemoStage:
    """A pair's integration and sandboxes during the demo, and the receiver when it takes webhooks."""

    harness: Any  # mlconnector.harness.PairHarness
    receiver_url: str | None = None
    webhook_key: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def integration_id(self) -> str:
        return self.harness.integration_id

    def url(self, system: str) -> str:
        return self.harness.sandboxes.url(system)

    def sandbox_get(self, system: str, path: str) -> Any:
        """A sandbox's control API (`/_sandbox/...`), as a test or an operator would use it."""
        response = requests.get(f"{self.url(system)}/_sandbox/{path}", timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        return response.json()

    def sandbox_post(self, system: str, path: str, body: dict[str, Any]) -> Any:
        response = requests.post(f"{self.url(system)}/_sandbox/{path}", json=body, timeout=HTTP_TIMEOUT_SECONDS)
        response.raise_for_status()
        return response.json()

    def change_config(self, changes: dict[str, Any], why: str) -> int:
        """What `integrations set-config` does, for a person fixing the config mid-demo: the
        change laid over the config, audited, and the holds it answers released."""
        from mlconnector import audit, releases
        from mlconnector.db.models import Integration
        from mlconnector.db.session import session_scope
        from mlconnector.harness import merge

        with session_scope() as session:
            row = session.get(Integration, self.integration_id)
            old = dict(row.config or {})
            row.config = merge(old, changes)
            audit.append(session, "config_changed", f"integration config changed: {why}", integration_id=self.integration_id,
                         actor="demo")
            return releases.release_config_changes(session, self.integration_id, old, row.config)

    def replay_forgetting_target(self, flow: str) -> tuple[str, str] | None:
        """A written record of `flow` replayed after the ledger lost its target (a restore, a
        lost database): the write must find the target again, not make a second. Returns
        (source id, the target id it had)."""
        from sqlalchemy import select

        from mlconnector import engine
        from mlconnector.db.models import SyncRecord
        from mlconnector.db.session import session_scope
        from mlconnector.tasks import send

        with session_scope() as session:
            record = session.scalar(select(SyncRecord).where(
                SyncRecord.integration_id == self.integration_id, SyncRecord.flow == flow,
                SyncRecord.status == "written").order_by(SyncRecord.id).limit(1))
            if record is None:
                return None
            had = (record.source_id, record.target_id or "")
            record.target_id, record.target_key, record.written_version = None, None, None
            work = engine.replay(session, record, actor="demo", note="re-sent with the target forgotten")
        send(work)
        return had

    def rows(self, system: str, entity: str) -> list[dict[str, Any]]:
        return self.sandbox_get(system, f"entities/{entity}")

    def put(self, system: str, entity: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self.sandbox_post(system, f"entities/{entity}", payload)


LOOKS_LIKE = "looks like"  # the resolver's words for a name close to an existing target's


def lookalike_plant(stage: DemoStage, kind: str, link_after: str) -> Planted:
    """Source records whose names are close to existing target records ('W.W. Grainger Inc'
    next to 'Grainger') are held for a person, never created twice. After the flow
    `link_after`, the demo does what that person would: links the first one to the record it
    looks like, which releases it and every document waiting on it."""
    linked: dict[str, str] = {}

    def act() -> None:
        linked.update(_link_first_lookalike(stage, kind))

    def check() -> str:
        held = _held_lookalikes(stage, kind)
        if not held and not linked:
            return "no look-alike names came up in this data"
        words = f"{len(held)} {kind}(s) held for a person as look-alikes of existing ones, none created twice"
        if linked:
            status = _record_status(stage, linked["record_id"])
            if status in ("held", "failed", "pending"):
                raise NotHandled(f"{linked['source']} was linked to {linked['target']} but its record is still {status}")
            words += f"; {linked['source']} linked by hand to {linked['target']}, released and written"
        return words

    return Planted(f"near-duplicate {kind} names", check, flow=None, held_because=LOOKS_LIKE, after=link_after, act=act)


def _held_lookalikes(stage: DemoStage, kind: str) -> list[tuple[int, str, str]]:
    """(record id, source id, source system) of records held for a look-alike of this kind."""
    from sqlalchemy import select

    from mlconnector.db.models import HoldRelease, SyncRecord
    from mlconnector.db.session import session_scope

    prefix = f"link:{kind}:"
    with session_scope() as session:
        rows = session.execute(
            select(SyncRecord.id, HoldRelease.release_key).join(HoldRelease, HoldRelease.sync_record_id == SyncRecord.id)
            .where(SyncRecord.integration_id == stage.integration_id, SyncRecord.status == "held",
                   SyncRecord.hold_reason.contains(LOOKS_LIKE), HoldRelease.release_key.startswith(prefix))
            .order_by(SyncRecord.id))
        return [(record_id, key.split(":", 3)[3], key.split(":", 3)[2]) for record_id, key in rows]


def _link_first_lookalike(stage: DemoStage, kind: str) -> dict[str, str]:
    from mlconnector import engine, links, resolver
    from mlconnector.db.session import session_scope

    held = _held_lookalikes(stage, kind)
    if not held:
        return {}
    record_id, source_id, source_system = held[0]
    with session_scope() as session:
        ctx = engine.context_for(session, stage.integration_id)
        declared = ctx.pair.counterpart(kind)
        source = declared.get_source(ctx, source_id)
        if source is None:
            return {}
        found = resolver.lookalikes(ctx, declared, resolver.Need(kind, source_id, source.name))
        if not found:
            return {}
        links.link(session, stage.integration_id, kind=kind, source_system=source_system, source_id=source_id,
                   source_name=source.name, target_system=declared.target_system, target_id=found[0].id,
                   target_name=found[0].name, how=links.MANUAL)
    return {"record_id": str(record_id), "source": f"{source_system} {kind} '{source.name}'",
            "target": f"{declared.target_system} {kind} {found[0].label()}"}


def _record_status(stage: DemoStage, record_id: str) -> str:
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        record = session.get(SyncRecord, int(record_id))
        return record.status if record is not None else "missing"


def config_hold_plant(stage: DemoStage, case: str, flow: str, held_because: str, fix: dict[str, Any],
                      fix_after: str) -> Planted:
    """Records held for a missing piece of config (an unmapped account): held naming it, then,
    after the flow `fix_after`, the config is corrected as a person would and they are written."""
    from sqlalchemy import func, select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    seen: dict[str, Any] = {}

    def held_now() -> list[str]:
        with session_scope() as session:
            return list(session.scalars(select(SyncRecord.source_id).where(
                SyncRecord.integration_id == stage.integration_id, SyncRecord.flow == flow, SyncRecord.status == "held",
                func.lower(SyncRecord.hold_reason).contains(held_because.lower()))))

    def act() -> None:
        seen["held"] = held_now()
        seen["released"] = stage.change_config(fix, case) if seen["held"] else 0

    def check() -> str:
        held = seen.get("held") or []
        if not held:
            raise NotHandled(f"no {flow} record was held naming {held_because}")
        still = held_now()
        if still:
            raise NotHandled(f"{len(still)} {flow} record(s) still held after the config was corrected")
        return (f"{len(held)} {flow} record(s) held naming {held_because}; the config corrected, "
                f"{seen['released']} released and written")

    return Planted(case, check, flow=flow, held_because=held_because, after=fix_after, act=act)


def held_for_a_person(stage: DemoStage, case: str, flow: str, held_because: str) -> Planted:
    """Records this pair holds for a person by design (a decision the product must not guess):
    explained by their hold's words, and reported with the first one's reason."""
    from sqlalchemy import func, select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    def check() -> str:
        with session_scope() as session:
            reasons = list(session.scalars(select(SyncRecord.hold_reason).where(
                SyncRecord.integration_id == stage.integration_id, SyncRecord.flow == flow, SyncRecord.status == "held",
                func.lower(SyncRecord.hold_reason).contains(held_because.lower()))))
        if not reasons:
            return f"none came up in this data ({flow})"
        return f"{len(reasons)} {flow} record(s) held for a person, e.g. {' '.join((reasons[0] or '').split())[:140]}"

    return Planted(case, check, flow=flow, held_because=held_because)
