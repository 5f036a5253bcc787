"""The `mlconnector` command line. Every group answers --help."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import click
from rich.console import Console
from rich.table import Table

PIPE_WIDTH = 160  # tables written to a pipe or a file are not cut at 80 columns
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    sys.exit(1)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 date or time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.group()
@click.version_option(package_name="ml-connector")
def main() -> None:
    """ml-connector: keeps ERPs and field-service systems in agreement."""
    from mlconnector.logging import configure_from_settings
    from mlconnector.settings import SettingsError, get_settings

    try:
        get_settings()
    except SettingsError as error:
        _fail(str(error))
    configure_from_settings()


# ---- db --------------------------------------------------------------------------------

@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (SQLite or PostgreSQL, from DATABASE_URL)."""
    from mlconnector.db import migrate

    migrate.upgrade(revision=revision)
    console.print(f"database at revision {migrate.current()}")


@db.command("current")
def db_current() -> None:
    """Show the applied revision."""
    from mlconnector.db import migrate

    console.print(migrate.current() or "(empty database)")


# ---- credentials and keys --------------------------------------------------------------

@main.group()
def credentials() -> None:
    """Encrypted vendor credentials."""


@credentials.command("set")
@click.argument("integration")
@click.argument("system")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read a JSON object of secrets from standard input.")
def credentials_set(integration: str, system: str, from_stdin: bool) -> None:
    """Store SYSTEM's secrets for INTEGRATION. Secrets are read from a prompt or stdin, never argv."""
    from connectors import connector_class
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import get_integration

    try:
        fields = list(connector_class(system).Credentials.model_fields)
    except KeyError as error:
        _fail(str(error))
        return
    if from_stdin or not sys.stdin.isatty():
        raw = sys.stdin.read()
        try:
            secrets = json.loads(raw)
        except json.JSONDecodeError:
            _fail("stdin must hold a JSON object of credential fields")
            return
    else:
        secrets = {}
        for name in fields:
            hidden = any(w in name for w in ("secret", "password", "key", "token"))
            value = click.prompt(name, hide_input=hidden, default="", show_default=False)
            if value:
                secrets[name] = value
    try:
        connector_class(system).Credentials.model_validate(secrets)
    except Exception as error:
        _fail(f"credentials for {system} are incomplete: {error.__class__.__name__}; fields: {', '.join(fields)}")
    with session_scope() as session:
        try:
            get_integration(session, integration)
        except LookupError as error:
            _fail(str(error))
        vault.store(session, integration, system, secrets)
    console.print(f"stored {system} credentials for {integration} ({len(secrets)} field(s), encrypted)")


@main.group()
def keys() -> None:
    """Encryption keys for credentials at rest."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key (put it first in MLCONNECTOR_SECRET_KEYS, then rotate)."""
    from cryptography.fernet import Fernet

    click.echo(Fernet.generate_key().decode())


@keys.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every credential under the newest key."""
    from mlconnector import vault
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        count = vault.rotate(session)
    console.print(f"re-encrypted {count} credential row(s) under the newest key")


# ---- integrations ----------------------------------------------------------------------

@main.group()
def integrations() -> None:
    """Integrations: one customer's instance of a pair."""


@integrations.command("add")
@click.argument("integration")
@click.option("--pair", required=True, help="e.g. servicetitan-epicor")
@click.option("--config", "config_file", type=click.File(), help="JSON config file (- for stdin).")
@click.option("--name", default="")
def integrations_add(integration: str, pair: str, config_file: Any, name: str) -> None:
    """Add INTEGRATION for PAIR with its JSON config."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    config = json.load(config_file) if config_file else {}
    with session_scope() as session:
        try:
            create_integration(session, integration, pair, config, name)
        except (KeyError, ValueError) as error:
            _fail(str(error))
    console.print(f"added integration {integration} ({pair})")


@integrations.command("list")
def integrations_list() -> None:
    """List integrations."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import list_integrations

    table = Table("id", "pair", "enabled", "name")
    with session_scope() as session:
        for row in list_integrations(session):
            table.add_row(row.id, row.pair, "yes" if row.enabled else "no", row.name)
    console.print(table)


@integrations.command("show")
@click.argument("integration")
def integrations_show(integration: str) -> None:
    """Show one integration's config (secrets masked)."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import get_integration
    from mlconnector.redaction import redact

    with session_scope() as session:
        try:
            row = get_integration(session, integration)
        except LookupError as error:
            _fail(str(error))
            return
        console.print_json(json.dumps({"id": row.id, "pair": row.pair, "enabled": row.enabled, "config": redact(row.config)}))


CONFIG_HOLD_PREFIXES = ("gl:", "vendor:")  # holds a config change can resolve (GL maps, vendor auto-create)


@integrations.command("set-config")
@click.argument("integration")
@click.option("--config", "config_file", type=click.File(), required=True, help="JSON config file (- for stdin).")
def integrations_set_config(integration: str, config_file: Any) -> None:
    """Replace INTEGRATION's config; records held for a mapping it may fix are re-queued."""
    from mlconnector import engine
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration
    from mlconnector.tasks import send

    config = json.load(config_file)
    work = engine.Enqueue()
    with session_scope() as session:
        try:
            row = get_integration(session, integration)
            pair = get_pair(row.pair)
            if pair.config_model is not None:
                pair.config_model.model_validate(config)
        except (LookupError, ValueError) as error:
            _fail(str(error))
            return
        row.config = config
        for prefix in CONFIG_HOLD_PREFIXES:
            work.extend(engine.release_holds(session, integration, prefix, "integration config changed"))
    send(work)
    console.print(f"config of {integration} replaced; re-queued {sum(len(v) for v in work.records.values())} held record(s)")


def _set_enabled(integration: str, enabled: bool) -> None:
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import get_integration

    with session_scope() as session:
        try:
            get_integration(session, integration).enabled = enabled
        except LookupError as error:
            _fail(str(error))
    console.print(f"{integration} {'enabled' if enabled else 'disabled'}")


@integrations.command("enable")
@click.argument("integration")
def integrations_enable(integration: str) -> None:
    """Enable polling and webhooks for INTEGRATION."""
    _set_enabled(integration, True)


@integrations.command("disable")
@click.argument("integration")
def integrations_disable(integration: str) -> None:
    """Disable INTEGRATION (webhooks are still stored, polls stop)."""
    _set_enabled(integration, False)


# ---- running work ----------------------------------------------------------------------

@main.command()
@click.argument("integration")
@click.option("--flow", "flow_name", help="Only this flow (default: all, prerequisites first).")
@click.option("--since", help="ISO time; default: each flow's watermark.")
@click.option("--full", is_flag=True, help="Ignore watermarks and read everything.")
def sync(integration: str, flow_name: str | None, since: str | None, full: bool) -> None:
    """Backfill: poll INTEGRATION's flows now and process what they find."""
    from rich.progress import Progress

    from mlconnector import engine
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration
    from mlconnector.tasks import send

    with session_scope() as session:
        try:
            pair = get_pair(get_integration(session, integration).pair)
        except LookupError as error:
            _fail(str(error))
            return
    flows = [pair.flow(flow_name)] if flow_name else pair.ordered_flows()
    start = _parse_time(since)
    with Progress(console=console, transient=False) as progress:
        for flow in flows:
            if not flow.poll_seconds and not flow_name:
                continue
            task = progress.add_task(f"{flow.name}: reading", total=None)
            result = engine.poll_flow(integration, flow.name, since=start, full=full,
                                      on_found=lambda n, t=task: progress.advance(t, n))
            progress.update(task, description=f"{flow.name}: found {result.found}, writing {result.queued}", total=result.queued, completed=0)
            ids = [i for v in result.enqueue.records.values() for i in v]
            for record_id in ids:
                send(engine.Enqueue(records={pair.queue: [record_id]}))
                progress.advance(task)
    _print_status(integration)


@main.command()
@click.argument("record_id", required=False, type=int)
@click.option("--status", type=click.Choice(["failed", "held"]))
@click.option("--flow", "flow_name")
@click.option("--since", help="Only records updated at or after this ISO time.")
@click.option("--edit", is_flag=True, help="Edit the source payload before replaying (one record).")
def replay(record_id: int | None, status: str | None, flow_name: str | None, since: str | None, edit: bool) -> None:
    """Replay one record, or every failed/held record matching the filters."""
    from sqlalchemy import select

    from mlconnector import engine
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope
    from mlconnector.tasks import send

    if record_id is None and status is None:
        _fail("give a RECORD_ID or --status failed|held")
    work = engine.Enqueue()
    with session_scope() as session:
        if record_id is not None:
            record = session.get(SyncRecord, record_id)
            if record is None:
                _fail(f"no record {record_id}")
                return
            edited = None
            if edit:
                text = click.edit(json.dumps(record.edited_payload or record.payload or {}, indent=2, default=str), extension=".json")
                if text is None:
                    _fail("edit cancelled; nothing replayed")
                try:
                    edited = json.loads(text or "")
                except json.JSONDecodeError as error:
                    _fail(f"edited payload is not JSON: {error}")
            work.extend(engine.replay(session, record, edited_payload=edited))
        else:
            query = select(SyncRecord).where(SyncRecord.status == status)
            if flow_name:
                query = query.where(SyncRecord.flow == flow_name)
            start = _parse_time(since)
            if start:
                query = query.where(SyncRecord.updated_at >= start)
            for record in session.scalars(query.with_for_update()):
                work.extend(engine.replay(session, record))
    send(work)
    console.print(f"replayed {sum(len(v) for v in work.records.values())} record(s)")


@main.command("audit")
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Full rows as JSON.")
def audit_cmd(record_id: int, as_json: bool) -> None:
    """The audit trail of one record, step by step."""
    from mlconnector import audit as audit_mod
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        record = session.get(SyncRecord, record_id)
        if record is None:
            _fail(f"no record {record_id}")
            return
        rows = audit_mod.trail(session, record_id)
        if as_json:
            click.echo(json.dumps([{c.name: getattr(r, c.name) for c in r.__table__.columns} for r in rows], default=str, indent=2))
            return
        console.print(f"[bold]record {record.id}[/bold] {record.integration_id}/{record.flow} source {record.source_id}: "
                      f"[bold]{record.status}[/bold] target {record.target_id or '-'} deliveries {record.deliveries}")
        if record.hold_reason:
            console.print(f"held: {record.hold_reason}")
        table = Table("at", "step", "what happened", "http", "target", "ms")
        for row in rows:
            message = row.message + (f"\n[red]{row.error}[/red]" if row.error and row.error not in row.message else "")
            if row.decisions:
                message += "".join(f"\n  · {d.get('field')}: {d.get('value')} ({d.get('reason')})" for d in row.decisions)
            table.add_row(row.at.strftime("%Y-%m-%d %H:%M:%S"), row.kind, message, str(row.http_status or ""),
                          row.target_id or "", f"{row.duration_ms:.0f}" if row.duration_ms is not None else "")
        console.print(table)


def _print_status(integration: str | None = None) -> None:
    from mlconnector import ledger
    from mlconnector.db.models import Watermark
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for integ, flow, status, count in ledger.counts_by_status(session):
            if integration and integ != integration:
                continue
            counts.setdefault((integ, flow), {})[status] = count
        marks = {(m.integration_id, m.flow): m for m in session.query(Watermark).all()}
        table = Table("integration", "flow", "written", "skipped", "pending", "held", "failed", "last poll", "watermark")
        for key in sorted(set(counts) | {k for k in marks if not integration or k[0] == integration}):
            if key[1].startswith("__"):
                continue
            c = counts.get(key, {})
            mark = marks.get(key)
            table.add_row(key[0], key[1], str(c.get("written", 0)), str(c.get("skipped", 0)),
                          str(c.get("pending", 0) + c.get("running", 0)), str(c.get("held", 0)), str(c.get("failed", 0)),
                          mark.last_poll_at.strftime("%Y-%m-%d %H:%M:%S") if mark and mark.last_poll_at else "-",
                          mark.value.isoformat(timespec="seconds") if mark and mark.value else "-")
        console.print(table)


@main.command()
def status() -> None:
    """Per flow: records by state, last poll, watermark."""
    _print_status()


@main.command()
def sweep() -> None:
    """Run the sweeper once (re-enqueue lost work, retire poison records)."""
    from mlconnector import engine
    from mlconnector.tasks import send

    result = engine.sweep()
    send(result.enqueue)
    console.print(f"re-enqueued {result.events} event(s) and {result.records} record(s); {result.failed} record(s) failed")


@main.command()
@click.argument("integration")
def check(integration: str) -> None:
    """One cheap authenticated read per entity the pair uses, with latency."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import connectors_for, get_integration

    with session_scope() as session:
        try:
            connectors = connectors_for(session, get_integration(session, integration))
        except LookupError as error:
            _fail(str(error))
            return
    table = Table("system", "step", "ok", "ms", "detail")
    ok = True
    for system, connector in connectors.items():
        for step in connector.check():
            ok &= step.ok
            table.add_row(system, step.step, "[green]ok[/green]" if step.ok else "[red]FAIL[/red]", f"{step.latency_ms:.0f}", step.detail[:80])
    console.print(table)
    if not ok:
        sys.exit(1)


# ---- vendors ---------------------------------------------------------------------------

@main.group()
def vendors() -> None:
    """Vendor links between a pair's two systems."""


@vendors.command("list")
@click.argument("integration")
def vendors_list(integration: str) -> None:
    """Every vendor link and how it was made."""
    from mlconnector import vendor_links
    from mlconnector.db.session import session_scope

    table = Table("source", "source vendor", "target", "target vendor", "how", "since")
    with session_scope() as session:
        for link in vendor_links.list_links(session, integration):
            table.add_row(link.source_system, f"{link.source_vendor_id} {link.source_vendor_name}", link.target_system,
                          f"{link.target_vendor_id} {link.target_vendor_name}", link.how, link.created_at.strftime("%Y-%m-%d"))
    console.print(table)


@vendors.command("link")
@click.argument("integration")
@click.argument("source_vendor_id")
@click.argument("target_vendor_id")
@click.option("--source-system", default="servicetitan", show_default=True)
def vendors_link(integration: str, source_vendor_id: str, target_vendor_id: str, source_system: str) -> None:
    """Link a source vendor to a target vendor; records held for it are re-queued."""
    from mlconnector import engine, vendor_links
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration
    from mlconnector.tasks import send

    with session_scope() as session:
        try:
            row = get_integration(session, integration)
        except LookupError as error:
            _fail(str(error))
            return
        pair = get_pair(row.pair)
        target_system = pair.target if source_system == pair.source else pair.source
        vendor_links.link(session, integration, source_system=source_system, source_vendor_id=source_vendor_id,
                          source_vendor_name="", target_system=target_system, target_vendor_id=target_vendor_id,
                          target_vendor_name="", how="manual")
        work = engine.release_holds(session, integration, vendor_links.hold_key(source_system, source_vendor_id),
                                    f"vendor {source_vendor_id} linked by hand")
    send(work)
    console.print(f"linked {source_system} vendor {source_vendor_id} -> {target_system} vendor {target_vendor_id}; "
                  f"re-queued {sum(len(v) for v in work.records.values())} held record(s)")


@vendors.command("unlink")
@click.argument("integration")
@click.argument("source_vendor_id")
@click.option("--source-system", default="servicetitan", show_default=True)
def vendors_unlink(integration: str, source_vendor_id: str, source_system: str) -> None:
    """Remove a vendor link."""
    from mlconnector import vendor_links
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        removed = vendor_links.unlink(session, integration, source_system, source_vendor_id)
    console.print("unlinked" if removed else "no such link")


# ---- servers ---------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the webhook receiver (development server; production uses gunicorn, see Procfile)."""
    from mlconnector.web import create_app

    create_app().run(host=host, port=port, threaded=True)


@main.group()
def sandbox() -> None:
    """Vendor API simulators."""


@sandbox.command("run")
@click.argument("vendor", type=click.Choice(["servicetitan", "epicor", "acumatica", "syspro", "servicenow", "procore"]))
@click.option("--port", default=0, help="0 picks a free port.")
@click.option("--seed", default=7, show_default=True)
@click.option("--records", default=50, show_default=True)
@click.option("--rate-limit", type=float, default=None, help="Requests per vendor window; default: the vendor's.")
@click.option("--token-ttl", type=int, default=None, help="Token lifetime in seconds; default: the vendor's.")
@click.option("--fault-rate", type=float, default=0.0, show_default=True)
@click.option("--latency-ms", type=int, default=0, show_default=True)
def sandbox_run(vendor: str, port: int, seed: int, records: int, rate_limit: float | None, token_ttl: int | None,
                fault_rate: float, latency_ms: int) -> None:
    """Serve VENDOR's simulator on 127.0.0.1 until interrupted."""
    from sandboxes import SandboxOptions, create_sandbox
    from sandboxes.base import serve_forever

    box = create_sandbox(vendor, SandboxOptions(seed=seed, records=records, rate_limit=rate_limit, token_ttl=token_ttl,
                                                fault_rate=fault_rate, latency_ms=latency_ms))

    def ready(url: str) -> None:
        console.print(f"{vendor} sandbox on {url}  (info: {url}/_sandbox/info)")
        console.print_json(json.dumps(box.info()))

    serve_forever(box, port, on_ready=ready)


@main.command()
@click.option("--records", default=20, show_default=True, help="Records per entity in each sandbox.")
def demo(records: int) -> None:
    """Run the integration pairs end to end against in-process sandboxes."""
    from mlconnector.demo import run_demo

    sys.exit(run_demo(records, console))


if __name__ == "__main__":
    main()
