"""`mlconnector demo`: every installed pair end to end, on one set of vendor sandboxes.

One sandbox per vendor starts in this process on a free port, seeded from `--seed`; each pair
that declares a demo is registered as an integration (credentials sealed in the vault) and
every flow runs through the same engine, tasks and connectors the fleet uses, over real HTTP.
On the embedded default that is SQLite and eager Celery; with PostgreSQL and a broker
configured, the same records go to the workers.

Besides the seeded records it plants the cases users worry about: on every pair a burst of
429s and a token expiring mid-batch on the target; each pair adds its own (near-duplicate
vendors, unmapped accounts, a re-sent record, webhooks delivered twice or badly signed). The
summary says what happened in each target system, per flow, and how each planted case ended;
the exit status is 0 only if every record ended written, skipped, or held for a planted reason.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from mlconnector.demo_stage import DemoStage, NotHandled, Planted

DEMO_PREFIX = "demo-"
BURST_429 = 3  # the 429s each pair's target answers in a row at the start of its run
MIN_RECORDS_FOR_EXPIRY = 4  # a token is expired halfway through the first flow at least this long
TOP_REASONS = 3
QUIET_LOGGERS = ("celery", "kombu", "alembic", "mlconnector", "amqp", "werkzeug", "urllib3", "backoff")


@dataclass
class FlowStory:
    flow: str
    source: str
    target: str
    read: int = 0
    written: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    held: int = 0
    failed: int = 0
    pending: int = 0
    held_reasons: list[str] = field(default_factory=list)


@dataclass
class PlantStory:
    case: str
    handled: bool
    outcome: str


@dataclass
class PairStory:
    pair: str
    title: str
    integration: str
    flows: list[FlowStory]
    target: str
    planted: list[PlantStory]
    unexplained: list[str]  # held, failed or pending records no planted case explains
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.unexplained and all(p.handled for p in self.planted)


def demo_pairs() -> list[Any]:
    """Every installed pair that declares a demo, in its declared order."""
    from mlconnector.flows import all_pairs

    return sorted((p for p in all_pairs().values() if p.demo is not None), key=lambda p: (p.demo.order, p.name))


def demo_integration(pair: Any) -> str:
    return f"{DEMO_PREFIX}{pair.name}"


def run_demo(records: int, seed: int, as_json: bool, out: Console, err: Console, only: tuple[str, ...] = ()) -> int:
    """Run every pair's demo; print the summary (JSON on `out`, or words); 0 when all is handled."""
    import json

    from mlconnector.db import migrate
    from mlconnector.settings import get_settings

    _quiet_logs()
    started = time.perf_counter()
    settings = get_settings()
    refused = _database_in_use(settings)
    if refused:
        err.print(refused)
        return 2
    database_note = _prepare_database(settings)
    err.print(database_note)
    if not settings.embedded:
        err.print("[yellow]CELERY_BROKER_URL is set: records are queued for your workers, and the demo waits for them[/yellow]")
    migrate.upgrade()
    pairs = [p for p in demo_pairs() if not only or p.name in only]
    if not pairs:
        err.print(f"no installed pair is called {', '.join(only)}: mlconnector integrations pairs lists them")
        return 2
    stories: list[PairStory] = []
    with _sandboxes(pairs, seed, records) as sandboxes, _receiver() as receiver_url:
        for pair in pairs:
            stories.append(_run_pair(pair, sandboxes, receiver_url, err))
        vendors = {system: _vendor_figures(sandboxes.url(system)) for system in sorted(sandboxes.running)}
    elapsed = round(time.perf_counter() - started, 1)
    ok = all(story.ok for story in stories)
    if as_json:
        document = {"pairs": [_story_json(s) for s in stories], "vendors": vendors, "elapsed_s": elapsed, "ok": ok,
                    "database": database_note, "records": records, "seed": seed}
        out.file.write(json.dumps(document, indent=2) + "\n")
    else:
        _print_summary(out, stories, vendors, elapsed)
    return 0 if ok else 1


# ---- the database -------------------------------------------------------------------------------


def _sqlite_path(url: str) -> Path | None:
    return Path(url.split("sqlite:///", 1)[1]) if url.startswith("sqlite:///") else None


def _other_integrations(url: str) -> list[str]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table("integrations"):
                return []
            ids = [row[0] for row in connection.execute(sa.text("SELECT id FROM integrations"))]
    finally:
        engine.dispose()
    return [i for i in ids if not i.startswith(DEMO_PREFIX)]


def _database_in_use(settings: Any) -> str | None:
    """The embedded database of someone's real integrations is not the demo's to replace."""
    path = _sqlite_path(settings.effective_database_url)
    if path is None or not path.exists():
        return None
    others = _other_integrations(settings.effective_database_url)
    if not others:
        return None
    return (f"{path} holds your integrations ({', '.join(others[:5])}); the demo runs with a database of its own: "
            f"run it from another directory, or set MLCONNECTOR_HOME to an empty one")


def _prepare_database(settings: Any) -> str:
    """A fresh run each time: the embedded file is replaced; elsewhere the demo's integrations
    are emptied (their audit rows stay: the trail is append-only)."""
    url = settings.effective_database_url
    path = _sqlite_path(url)
    if path is not None:
        existed = path.exists()
        for extra in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{extra}").unlink(missing_ok=True)
        return (f"a fresh run in {path}" + (" (the previous demo's database was replaced)" if existed else "")
                + "; it stays for status, records, audit and replay")
    emptied = _empty_demo_integrations(url)
    from sqlalchemy.engine import make_url

    return (f"reusing the database at {make_url(url).render_as_string(hide_password=True)}: "
            f"the previous demo's records ({emptied}) were removed, its audit rows stay (append-only)")


def _empty_demo_integrations(url: str) -> int:
    import sqlalchemy as sa

    from mlconnector.db.models import Base

    kept = {"audit_events", "security_events", "integrations"}
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    removed = 0
    try:
        with engine.begin() as connection:
            existing = set(sa.inspect(connection).get_table_names())
            for table in reversed(Base.metadata.sorted_tables):
                if table.name in kept or table.name not in existing or "integration_id" not in table.c:
                    continue
                result = connection.execute(table.delete().where(table.c.integration_id.like(f"{DEMO_PREFIX}%")))
                removed += result.rowcount or 0
    finally:
        engine.dispose()
    return removed


# ---- sandboxes and the receiver -----------------------------------------------------------------


class _Sandboxes:
    def __init__(self, pairs: list[Any], seed: int, records: int) -> None:
        from sandboxes import SandboxOptions, create_sandbox, start_sandbox

        from mlconnector.harness import SandboxSet

        wanted: dict[str, dict[str, Any]] = {}
        for pair in pairs:
            for system in pair.systems():
                wanted.setdefault(system, {}).update(pair.demo.sandboxes.get(system, {}))
        option_names = set(SandboxOptions.model_fields)
        self.set = SandboxSet()
        try:
            for system, asked in sorted(wanted.items()):
                options = SandboxOptions(seed=seed, records=records,
                                         **{k: v for k, v in asked.items() if k in option_names})
                settings = {k: v for k, v in asked.items() if k not in option_names}
                self.set.running[system] = start_sandbox(create_sandbox(system, options, **settings))
        except BaseException:
            self.set.stop()
            raise

    def __enter__(self) -> Any:
        return self.set

    def __exit__(self, *exc: object) -> None:
        self.set.stop()


def _sandboxes(pairs: list[Any], seed: int, records: int) -> _Sandboxes:
    """One sandbox per vendor, shared by every pair that speaks to it."""
    return _Sandboxes(pairs, seed, records)


class _Receiver:
    """The webhook receiver on a free loopback port, in a thread, for pairs that take webhooks."""

    def __enter__(self) -> str:
        from werkzeug.serving import make_server

        from mlconnector.web import create_app

        self.server = make_server("127.0.0.1", 0, create_app(), threaded=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()


def _receiver() -> _Receiver:
    return _Receiver()


def _vendor_figures(url: str) -> dict[str, int]:
    import requests

    stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
    return {"calls": int(stats.get("total", 0)), "throttled": int(stats.get("rate_limited", 0)),
            "token_refreshes": int(stats.get("tokens_issued", 0))}


# ---- one pair -----------------------------------------------------------------------------------


def _run_pair(pair: Any, sandboxes: Any, receiver_url: str, err: Console) -> PairStory:
    from mlconnector.harness import PairHarness, SandboxSet, register

    demo, integration_id = pair.demo, demo_integration(pair)
    started = time.perf_counter()
    subset = SandboxSet({system: sandboxes.running[system] for system in pair.systems()})
    key = secrets.token_hex(24)
    config = register(integration_id, pair.name, subset, overrides=dict(demo.overrides) or None,
                      name=f"Demo: {demo.title}", webhook_key=key)
    stage = DemoStage(PairHarness(pair, subset, integration_id, config),
                      receiver_url if pair.webhook_source else None, key if pair.webhook_source else None)
    expiry = _TokenExpiry(stage)
    planted: list[Planted] = [_burst_429(stage, pair.target), expiry.planted()]
    planted += list(demo.plant(stage)) if demo.plant else []
    flows = pair.ordered_flows()
    stories = [FlowStory(flow.name, flow.source, flow.target) for flow in flows]
    err.print(f"{demo.title}: " + "   ".join(f"{s} {subset.url(s)}" for s in pair.systems()))
    for case in planted:
        if case.after is None and case.act is not None:
            case.act()
    with Progress(console=err, transient=True) as progress:
        for flow, story in zip(flows, stories):
            story.read = _run_flow(pair, integration_id, flow, progress, expiry)
            for case in planted:
                if case.after == flow.name and case.act is not None:
                    case.act()
        _wait_for_workers(integration_id)
    plants = [_outcome(case) for case in planted]
    unexplained = _count_flows(integration_id, stories, planted)
    target = _target_line(demo, stage)
    return PairStory(pair.name, demo.title, integration_id, stories, target, plants, unexplained,
                     round(time.perf_counter() - started, 1))


def _run_flow(pair: Any, integration_id: str, flow: Any, progress: Progress, expiry: "_TokenExpiry") -> int:
    from mlconnector import engine
    from mlconnector.tasks import send

    task = progress.add_task(f"{flow.name}: reading {flow.source}", total=None)
    result = engine.poll_flow(integration_id, flow.name, full=True)
    ids = [i for v in result.enqueue.records.values() for i in v]
    progress.update(task, description=f"{flow.name}: {flow.source} -> {flow.target}", total=len(ids) or 1,
                    completed=0 if ids else 1)
    for index, record_id in enumerate(ids):
        if index == len(ids) // 2:
            expiry.maybe_expire(flow.target, len(ids))
        send(engine.Enqueue(records={pair.queue: [record_id]}))
        progress.advance(task)
    return len(ids)


def _wait_for_workers(integration_id: str, timeout: float = 120.0) -> None:
    """With a broker, records run on the workers: wait until none is pending or running.
    Embedded, the receiver's thread may still be writing a record a webhook brought in (the
    main thread's delivery of it stood down): wait until none is running; a pending one
    waits for its retry time, as it would in the fleet."""
    from mlconnector import ledger
    from mlconnector.db.session import session_scope
    from mlconnector.settings import get_settings

    waiting = ("running",) if get_settings().embedded else ("pending", "running")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with session_scope() as session:
            busy = sum(count for integration, _, status, count in ledger.counts_by_status(session)
                       if integration == integration_id and status in waiting)
        if not busy:
            return
        time.sleep(0.5)


def _burst_429(stage: DemoStage, target: str) -> Planted:
    """The target answers 429 to its next calls; the fleet waits as told and loses nothing."""
    before: dict[str, int] = {}

    def act() -> None:
        before["throttled"] = _vendor_figures(stage.url(target))["throttled"]
        stage.sandbox_post(target, "faults", {"burst_429": BURST_429, "retry_after": 1})

    def check() -> str:
        answered = _vendor_figures(stage.url(target))["throttled"] - before.get("throttled", 0)
        if answered < BURST_429:
            raise NotHandled(f"{target} answered only {answered} of {BURST_429} planted 429s")
        return f"{target} answered {answered} calls with 429; each was retried after its Retry-After"

    return Planted(f"a burst of {BURST_429} 429s from {target}", check, act=act)


class _TokenExpiry:
    """Halfway through the first flow long enough, the target's tokens are revoked: the next
    call meets a 401, the connector fetches a new token and the batch goes on."""

    def __init__(self, stage: DemoStage) -> None:
        self.stage = stage
        self.system: str | None = None
        self.tokens_before = 0

    def maybe_expire(self, system: str, batch: int) -> None:
        if self.system is not None or batch < MIN_RECORDS_FOR_EXPIRY:
            return
        self.system = system
        self.tokens_before = _vendor_figures(self.stage.url(system))["token_refreshes"]
        self.stage.sandbox_post(system, "expire-tokens", {})

    def planted(self) -> Planted:
        def check() -> str:
            if self.system is None:
                return "no flow was long enough to expire a token in"
            issued = _vendor_figures(self.stage.url(self.system))["token_refreshes"] - self.tokens_before
            if issued < 1:
                raise NotHandled(f"{self.system}'s tokens were expired mid-batch but no new one was fetched")
            return f"{self.system}'s tokens expired mid-batch; {issued} new token(s) fetched, the batch went on"

        return Planted("a token expiring mid-batch", check)


def _outcome(case: Planted) -> PlantStory:
    try:
        return PlantStory(case.case, True, case.check())
    except NotHandled as problem:
        return PlantStory(case.case, False, str(problem))
    except Exception as problem:  # a check that could not run is not a handled case
        return PlantStory(case.case, False, f"could not be checked: {type(problem).__name__}: {problem}")


def _target_line(demo: Any, stage: DemoStage) -> str:
    try:
        return demo.target_summary(stage.harness, stage.integration_id)
    except Exception as problem:
        return f"could not read the target back: {type(problem).__name__}: {problem}"


def _count_flows(integration_id: str, stories: list[FlowStory], planted: list[Planted]) -> list[str]:
    """Fill each flow's figures from the ledger and the trail; return what no planted case explains."""
    from sqlalchemy import func, select

    from mlconnector.db.models import AuditEvent, SyncRecord
    from mlconnector.db.session import session_scope

    unexplained: list[str] = []
    by_flow = {story.flow: story for story in stories}
    with session_scope() as session:
        for flow, status, count in session.execute(
                select(SyncRecord.flow, SyncRecord.status, func.count()).where(SyncRecord.integration_id == integration_id)
                .group_by(SyncRecord.flow, SyncRecord.status)):
            story = by_flow.get(flow)
            if story is not None and status in ("written", "skipped", "held", "failed", "pending"):
                setattr(story, status, getattr(story, status) + count)
            elif story is not None and status == "running":
                story.pending += count
        for flow, message in session.execute(
                select(AuditEvent.flow, AuditEvent.message).where(AuditEvent.integration_id == integration_id,
                                                                  AuditEvent.kind == "written")):
            story = by_flow.get(flow)
            word = (message or "").split(" ", 1)[0]
            if story is not None and word in ("created", "updated"):
                setattr(story, word, getattr(story, word) + 1)
        reasons: dict[str, Counter[str]] = {}
        for record in session.scalars(select(SyncRecord).where(SyncRecord.integration_id == integration_id,
                                                                SyncRecord.status.in_(("held", "failed", "pending", "running")))):
            if record.status == "held":
                reasons.setdefault(record.flow, Counter())[_short(record.hold_reason)] += 1
                if any(case.explains(record.flow, record.hold_reason) for case in planted):
                    continue
            text = record.hold_reason if record.status == "held" else record.last_error
            unexplained.append(f"{record.flow} {record.source_id} {record.status}: {_short(text)}")
    for story in stories:
        story.held_reasons = [f"{n} x {reason}" for reason, n in reasons.get(story.flow, Counter()).most_common(TOP_REASONS)]
    return unexplained


def _short(text: str | None, most: int = 120) -> str:
    line = " ".join((text or "no reason recorded").split())
    return line if len(line) <= most else line[: most - 1] + "…"


# ---- output -------------------------------------------------------------------------------------


def _story_json(story: PairStory) -> dict[str, Any]:
    return {"pair": story.pair, "title": story.title, "integration": story.integration,
            "flows": [asdict(f) for f in story.flows], "target": story.target,
            "planted": [asdict(p) for p in story.planted], "unexplained": story.unexplained, "ok": story.ok,
            "elapsed_s": story.elapsed_s}


def _print_summary(out: Console, stories: list[PairStory], vendors: dict[str, dict[str, int]], elapsed: float) -> None:
    for story in stories:
        table = Table("flow", "read", "created", "updated", "skipped", "held", "failed", "pending",
                      title=f"{story.title}  ({story.integration}, {story.elapsed_s:.1f} s)", title_justify="left")
        for f in story.flows:
            table.add_row(f"{f.flow}: {f.source} -> {f.target}", *(str(v) for v in (
                f.read, f.created, f.updated, f.skipped, f.held, f.failed, f.pending)))
        out.print(table)
        out.print(f"  {story.target}")
        for f in story.flows:
            for reason in f.held_reasons:
                out.print(f"  held in {f.flow}: {reason}")
        for plant in story.planted:
            mark = "[green]handled[/green]" if plant.handled else "[red]NOT HANDLED[/red]"
            out.print(f"  planted: {plant.case}: {mark}: {plant.outcome}")
        for line in story.unexplained[:10]:
            out.print(f"  [red]not explained by a planted case:[/red] {line}")
    table = Table("vendor", "API calls", "429s absorbed", "tokens issued", title="Vendor APIs", title_justify="left")
    for system, figures in vendors.items():
        table.add_row(system, str(figures["calls"]), str(figures["throttled"]), str(figures["token_refreshes"]))
    out.print(table)
    held = sum(f.held for s in stories for f in s.flows)
    out.print(f"{len(stories)} pairs in {elapsed:.1f} s. "
              + (f"{held} record(s) are held for a person: mlconnector records list --status held" if held else
                 "Nothing is held.")
              + "   The trail of any record: mlconnector records show <id>")


def _quiet_logs() -> None:
    """Progress and the summary tell the story; library chatter would only cover them."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
