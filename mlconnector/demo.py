"""`mlconnector demo`: the integration pairs end to end on the embedded default: each pair's
vendor sandboxes in this process on free ports, real HTTP between connector and sandbox, a
SQLite ledger, Celery in eager mode. Prints progress and a summary per pair, and checks the
outcome through the target's own API, not only our ledger.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table


def run_demo(records: int, console: Console) -> int:
    import logging

    from mlconnector.db import migrate
    from mlconnector.settings import get_settings

    logging.getLogger("celery").setLevel(logging.WARNING)  # the demo's own progress bars tell the story
    settings = get_settings()
    if not settings.embedded:
        console.print("[yellow]CELERY_BROKER_URL is set: the demo queues work for your workers instead of running it here[/yellow]")
    migrate.upgrade()
    outcomes = [_run_pair(pair, records, console) for pair in demo_pairs()]
    console.print("The trail of any record: mlconnector records show <id>   (mlconnector status for every flow)")
    return 0 if all(outcomes) else 1


def demo_pairs() -> list[Any]:
    """Every installed pair that declares a demo, in its declared order."""
    from mlconnector.flows import all_pairs

    return sorted((p for p in all_pairs().values() if p.demo is not None), key=lambda p: (p.demo.order, p.name))


def demo_integration(pair: Any) -> str:
    return f"demo-{pair.name}"


def _run_pair(pair: Any, records: int, console: Console) -> bool:
    """One pair's flows in prerequisite order; True when records were written and none failed."""
    from sandboxes import SandboxOptions
    from mlconnector import engine, ledger
    from mlconnector.cli import open_records_line
    from mlconnector.db.session import session_scope
    from mlconnector.harness import start_pair
    from mlconnector.tasks import send

    demo, integration_id = pair.demo, demo_integration(pair)
    harness = start_pair(pair.name, integration_id, options=SandboxOptions(seed=11, records=records),
                         name=f"Demo: {demo.title}", overrides=dict(demo.overrides) or None)
    console.print(f"{demo.title}: " + "   ".join(f"{system} sandbox {harness.sandboxes.url(system)}"
                                                 for system in pair.systems()))
    try:
        with Progress(console=console) as progress:
            for flow in pair.ordered_flows():
                task = progress.add_task(f"{flow.name}: reading {flow.source}", total=None)
                result = engine.poll_flow(integration_id, flow.name, full=True)
                ids = [i for v in result.enqueue.records.values() for i in v]
                progress.update(task, description=f"{flow.name}: {flow.source} -> {flow.target}", total=len(ids) or 1,
                                completed=0 if ids else 1)
                for record_id in ids:
                    send(engine.Enqueue(records={pair.queue: [record_id]}))
                    progress.advance(task)
        with session_scope() as session:
            counts = ledger.counts_by_status(session)
        table = Table("flow", "written", "skipped", "held", "failed", "pending", title=demo.title)
        per_flow: dict[str, dict[str, int]] = {}
        for integration, flow_name, status, count in counts:
            if integration == integration_id:
                per_flow.setdefault(flow_name, {})[status] = count
        for flow in pair.ordered_flows():
            c = per_flow.get(flow.name, {})
            table.add_row(flow.name, *(str(c.get(s, 0)) for s in ("written", "skipped", "held", "failed", "pending")))
        console.print(table)
        console.print(demo.target_summary(harness, integration_id))
        console.print(open_records_line(integration_id))
        failed = sum(c.get("failed", 0) for c in per_flow.values())
        written = sum(c.get("written", 0) for c in per_flow.values())
        return bool(written) and not failed
    finally:
        harness.stop()
