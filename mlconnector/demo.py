"""`mlconnector demo`: the ServiceTitan -> Epicor Kinetic pair end to end on the embedded
default: the vendor sandboxes in this process on free ports, real HTTP between connector
and sandbox, a SQLite ledger, Celery in eager mode. Prints progress and a summary, and
checks the outcome through Epicor's own API, not only our ledger.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

DEMO_INTEGRATION = "demo-st-epicor"


def run_demo(records: int, console: Console) -> int:
    from sandboxes import SandboxOptions
    from mlconnector import engine, ledger
    from mlconnector.db import migrate
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.harness import start_pair
    from mlconnector.settings import get_settings
    from mlconnector.tasks import send

    import logging

    logging.getLogger("celery").setLevel(logging.WARNING)  # the demo's own progress bars tell the story
    settings = get_settings()
    if not settings.embedded:
        console.print("[yellow]CELERY_BROKER_URL is set: the demo queues work for your workers instead of running it here[/yellow]")
    migrate.upgrade()
    harness = start_pair("servicetitan-epicor", DEMO_INTEGRATION, options=SandboxOptions(seed=11, records=records),
                         name="Demo: ServiceTitan -> Epicor")
    console.print(f"ServiceTitan sandbox {harness.sandboxes.url('servicetitan')}   "
                  f"Epicor Kinetic sandbox {harness.sandboxes.url('epicor')}")
    try:
        pair = get_pair("servicetitan-epicor")
        with Progress(console=console) as progress:
            for flow in pair.ordered_flows():
                task = progress.add_task(f"{flow.name}: reading {flow.source}", total=None)
                result = engine.poll_flow(DEMO_INTEGRATION, flow.name, full=True)
                ids = [i for v in result.enqueue.records.values() for i in v]
                progress.update(task, description=f"{flow.name}: {flow.source} -> {flow.target}", total=len(ids) or 1,
                                completed=0 if ids else 1)
                for record_id in ids:
                    send(engine.Enqueue(records={pair.queue: [record_id]}))
                    progress.advance(task)
        with session_scope() as session:
            counts = ledger.counts_by_status(session)
        epicor_connector = harness.connector("epicor")
        table = Table("flow", "written", "skipped", "held", "failed", "pending", title="ServiceTitan -> Epicor Kinetic")
        per_flow: dict[str, dict[str, int]] = {}
        for integration, flow_name, status, count in counts:
            if integration == DEMO_INTEGRATION:
                per_flow.setdefault(flow_name, {})[status] = count
        for flow in pair.ordered_flows():
            c = per_flow.get(flow.name, {})
            table.add_row(flow.name, *(str(c.get(s, 0)) for s in ("written", "skipped", "held", "failed", "pending")))
        console.print(table)
        invoices = sum(1 for _ in epicor_connector.iter_changed("ap_invoices", None, _now()))  # type: ignore[attr-defined]
        console.print(f"Epicor now holds {invoices} AP invoice(s), read back through its OData API.")
        from mlconnector.cli import open_records_line

        console.print(open_records_line(DEMO_INTEGRATION))
        console.print("The trail of any record: mlconnector records show <id>   (mlconnector status for every flow)")
        failed = sum(c.get("failed", 0) for c in per_flow.values())
        written = sum(c.get("written", 0) for c in per_flow.values())
        return 0 if written and not failed else 1
    finally:
        harness.stop()


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
