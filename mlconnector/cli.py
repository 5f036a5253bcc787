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


class _OperatorGroup(click.Group):
    """Known failures reach the operator as one line with the next step, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import OperationalError, ProgrammingError

        import errno

        from mlconnector.config import ConfigError
        from mlconnector.flows import UnknownFlowError, UnknownPairError
        from mlconnector.http import ConnectorError
        from mlconnector.vault import VaultError

        try:
            return super().invoke(ctx)
        except Exception:
            if ctx.params.get("debug"):
                raise
            try:
                raise
            except ConnectorError as error:
                _fail(f"{error} (check that the system is reachable and the integration's settings and credentials "
                      f"are right: mlconnector check <integration>)")
            except (VaultError, ConfigError, UnknownPairError, UnknownFlowError) as error:
                _fail(str(error))
            except (OperationalError, ProgrammingError) as error:
                reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
                _fail(f"database: {reason} (check DATABASE_URL, then run: mlconnector db upgrade)")
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    _fail("the port is already in use; choose another with --port, or stop what listens there")
                raise


QUIET_LOGGERS = ("alembic", "celery", "kombu", "amqp", "backoff", "urllib3", "waitress", "werkzeug")


@click.group(cls=_OperatorGroup)
@click.version_option(package_name="ml-connector")
@click.option("-v", "--verbose", count=True, help="More log lines (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show the traceback of a failure instead of one line.")
def main(verbose: int, debug: bool) -> None:
    """ml-connector: keeps ERPs and field-service systems in agreement."""
    import logging

    from mlconnector.logging import configure_logging
    from mlconnector.settings import SettingsError, get_settings

    try:
        settings = get_settings()
    except SettingsError as error:
        _fail(str(error))
        return
    # Quiet by default: the progress bars and tables tell the story; -v brings the logs back.
    level = "DEBUG" if verbose > 1 or debug else "INFO" if verbose else "WARNING"
    configure_logging(level, settings.log_format)
    if not verbose and not debug:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("backoff").setLevel(logging.CRITICAL)  # the command prints the final error itself


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
    from mlconnector import vault
    from mlconnector.config import credentials_model
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import get_integration

    try:
        fields = list(credentials_model(system).model_fields)
    except KeyError as error:
        _fail(f"{error.args[0] if error.args else error} (or 'webhook' for the webhook signing keys)")
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
            if name.startswith("previous") and not click.confirm(f"set {name} (during a key rotation)?", default=False):
                continue
            value = click.prompt(name, hide_input=hidden, default="", show_default=False)
            if value:
                secrets[name] = value
    from mlconnector.config import ConfigError, validate_credentials

    try:
        validate_credentials(system, secrets)
    except ConfigError as error:
        _fail("credentials refused:\n  " + "\n  ".join(error.problems))
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
    """Re-encrypt every credential under the newest key.

    Run it after MLCONNECTOR_SECRET_KEYS=<new>,<old> is deployed to every process and they are
    restarted; it asks the running workers which key list they have and warns about any not
    restarted (drop the old key only once none is left)."""
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.settings import get_settings

    with session_scope() as session:
        count = vault.rotate(session)
    console.print(f"re-encrypted {count} credential row(s) under the newest key")
    if not get_settings().embedded:
        newest = vault.fingerprints(get_settings().fernet_keys())[0]
        for line in fleet_key_warnings(newest):
            console.print(f"[yellow]warning[/yellow]: {line}")


def fleet_key_warnings(newest: str, timeout: float = 1.5) -> list[str]:
    """What the running workers say about their key lists, as warnings for `keys rotate`."""
    from mlconnector.celery_app import app

    try:
        replies = app.control.broadcast("key_fingerprints", reply=True, timeout=timeout)
    except Exception as error:  # the broker is away: say so, the rotation itself is done
        return [f"could not ask the workers for their keys ({type(error).__name__}); make sure every process was "
                "restarted with the new MLCONNECTOR_SECRET_KEYS before dropping the old key"]
    answers = {host: answer for reply in replies for host, answer in reply.items()}
    if not answers:
        return ["no worker answered; make sure every process was restarted with the new MLCONNECTOR_SECRET_KEYS "
                "before dropping the old key"]
    stale = sorted(host for host, answer in answers.items() if (answer.get("keys") or [None])[0] != newest)
    if not stale:
        return []
    return [f"{len(stale)} of {len(answers)} worker(s) still run with another newest key: {', '.join(stale)}; deploy "
            "MLCONNECTOR_SECRET_KEYS=<new>,<old> to them, restart them, run `mlconnector keys rotate` again, and only "
            "then drop the old key"]


# ---- integrations ----------------------------------------------------------------------

@main.group()
def integrations() -> None:
    """Integrations: one customer's instance of a pair."""


def _read_config(config_file: Any, strip: bool) -> dict[str, Any]:
    from mlconnector.config import strip_help

    try:
        config = json.load(config_file) if config_file else {}
    except json.JSONDecodeError as error:
        _fail(f"the config is not JSON: {error.msg} at line {error.lineno} column {error.colno}")
    return strip_help(config) if strip else config


def _config_refused(error: Exception) -> None:
    problems = getattr(error, "problems", None) or [str(error)]
    _fail("config refused:\n  " + "\n  ".join(problems))


@integrations.command("add")
@click.argument("integration")
@click.option("--pair", required=True, help="e.g. servicetitan-epicor (see: mlconnector integrations pairs)")
@click.option("--config", "config_file", type=click.File(), help="JSON config file (- for stdin).")
@click.option("--strip-help", is_flag=True, help="Drop the _about_ explanations a template carries.")
@click.option("--name", default="")
def integrations_add(integration: str, pair: str, config_file: Any, strip_help: bool, name: str) -> None:
    """Add INTEGRATION for PAIR with its JSON config (start from: integrations template PAIR)."""
    from mlconnector.config import ConfigError
    from mlconnector.db.session import session_scope
    from mlconnector.flows import UnknownPairError
    from mlconnector.integrations import create_integration

    config = _read_config(config_file, strip_help)
    with session_scope() as session:
        try:
            create_integration(session, integration, pair, config, name)
        except ConfigError as error:
            _config_refused(error)
        except (UnknownPairError, ValueError) as error:
            _fail(str(error))
    console.print(f"added integration {integration} ({pair}); next: mlconnector credentials set {integration} <system>")


@integrations.command("pairs")
def integrations_pairs() -> None:
    """The pairs this installation knows (found through the mlconnector.pairs entry points)."""
    from mlconnector.flows import all_pairs

    table = Table("pair", "systems", "flows", "what moves")
    for name, pair in sorted(all_pairs().items()):
        table.add_row(name, " -> ".join(pair.systems()), ", ".join(f.name for f in pair.ordered_flows()), pair.description)
    console.print(table)


@integrations.command("template")
@click.argument("pair")
def integrations_template(pair: str) -> None:
    """Print a complete starting config for PAIR, every field with its default and meaning."""
    from mlconnector.config import template
    from mlconnector.flows import UnknownPairError, get_pair

    try:
        body = template(get_pair(pair))
    except UnknownPairError as error:
        _fail(str(error))
        return
    click.echo(json.dumps(body, indent=2))


@integrations.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def integrations_list(as_json: bool) -> None:
    """List integrations."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import list_integrations

    with session_scope() as session:
        rows = [{"id": r.id, "pair": r.pair, "enabled": r.enabled, "name": r.name} for r in list_integrations(session)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "pair", "enabled", "name")
    for row in rows:
        table.add_row(row["id"], row["pair"], "yes" if row["enabled"] else "no", row["name"])
    console.print(table)


@integrations.command("show")
@click.argument("integration")
@click.option("--json", "as_json", is_flag=True, help="Plain JSON (no colours), for scripts.")
def integrations_show(integration: str, as_json: bool) -> None:
    """Show one integration's config (secrets masked; URLs and settings shown)."""
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import get_integration
    from mlconnector.redaction import redact

    with session_scope() as session:
        try:
            row = get_integration(session, integration)
        except LookupError as error:
            _fail(str(error))
            return
        shown = json.dumps({"id": row.id, "pair": row.pair, "enabled": row.enabled, "config": redact(row.config)}, indent=2)
    if as_json:
        click.echo(shown)
    else:
        console.print_json(shown)


def _preview_release(ids: list[int], before: Any, what: str) -> None:
    """Print what a change would re-queue and what those records' writes would then do."""
    from collections import Counter

    from mlconnector import engine

    if not ids:
        console.print(f"{what}: no held record waits for it")
        return
    lines = engine.plan_records(ids, before=before)
    console.print(f"{what} would re-queue {len(ids)} held record(s); their plan: "
                  + ", ".join(f"{n} {a}" for a, n in sorted(Counter(line.action for line in lines).items())))
    table = Table("record", "flow", "would", "what")
    for record_id, line in zip(ids, lines):
        table.add_row(str(record_id), line.flow, line.action, line.detail)
    console.print(table)


@integrations.command("set-config")
@click.argument("integration")
@click.option("--config", "config_file", type=click.File(), required=True, help="JSON config file (- for stdin).")
@click.option("--strip-help", is_flag=True, help="Drop the _about_ explanations a template carries.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def integrations_set_config(integration: str, config_file: Any, strip_help: bool, yes: bool) -> None:
    """Replace INTEGRATION's config, after a preview of the held records it would re-queue."""
    from mlconnector import audit, releases
    from mlconnector.config import ConfigError, validate_config
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration

    config = _read_config(config_file, strip_help)
    with session_scope() as session:
        try:
            row = get_integration(session, integration)
            validate_config(get_pair(row.pair), config)
        except ConfigError as error:
            _config_refused(error)
            return
        except LookupError as error:
            _fail(str(error))
            return
        old = dict(row.config or {})
        ids = releases.would_release(session, integration, releases.changed_config_keys(session, integration, old, config))

    def with_new_config(preview: Any) -> None:
        preview.get(Integration, integration).config = config

    _preview_release(ids, with_new_config, "this config")
    if ids and not yes and not click.confirm("replace the config?", default=False):
        _fail("config unchanged")
    with session_scope() as session:
        row = get_integration(session, integration)
        old = dict(row.config or {})
        row.config = config
        audit.append(session, "config_changed", "integration config replaced", integration_id=integration, actor=_actor())
        released = releases.release_config_changes(session, integration, old, config)
    console.print(f"config of {integration} replaced; re-queued {released} held record(s)")


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
@click.option("--since", help="ISO time; default: each flow's position.")
@click.option("--full", is_flag=True, help="Ignore positions and read everything.")
@click.option("--dry-run", is_flag=True, help="Print what each record's write would do; write nothing.")
@click.option("--limit", type=int, default=None, help="With --dry-run: at most this many records per flow.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With a broker: follow the records until the workers finish them, or return once they are queued.")
def sync(integration: str, flow_name: str | None, since: str | None, full: bool, dry_run: bool, limit: int | None,
         wait: bool) -> None:
    """Backfill: poll INTEGRATION's flows now and process what they find (pending work first).

    With a broker the workers do the writing; sync follows the records it queued until each
    has an outcome (written, skipped, held, failed), so its summary describes finished work."""
    from mlconnector.db.session import session_scope
    from mlconnector.flows import UnknownFlowError, get_pair
    from mlconnector.integrations import get_integration

    with session_scope() as session:
        try:
            row = get_integration(session, integration)
            pair = get_pair(row.pair)
            flows = [pair.flow(flow_name)] if flow_name else pair.ordered_flows()
        except (LookupError, UnknownFlowError) as error:
            _fail(str(error))
            return
        if not row.enabled and not dry_run:
            _fail(f"integration {integration} is disabled; enable it with: mlconnector integrations enable {integration}")
    start = _parse_time(since)
    if dry_run:
        _dry_run(integration, [f.name for f in flows], start, full, limit)
        return
    _run_sync(integration, pair, flows, start, full, bool(flow_name), wait)
    _print_status(integration)
    console.print(open_records_line(integration))


def _dry_run(integration: str, flows: list[str], start: datetime | None, full: bool, limit: int | None) -> None:
    from collections import Counter

    from mlconnector import engine

    totals: Counter[str] = Counter()
    for flow in flows:
        lines = engine.plan_flow(integration, flow, since=start, full=full, limit=limit)
        table = Table("source", "would", "what", title=f"{flow}: {len(lines)} record(s) (dry run: nothing written)")
        for line in lines:
            totals[line.action] += 1
            table.add_row(line.source_id, line.action, line.detail)
        console.print(table)
    console.print("dry run: " + (", ".join(f"{n} {a}" for a, n in sorted(totals.items())) or "nothing found") + "; nothing was written")


def _run_sync(integration: str, pair: Any, flows: list[Any], start: datetime | None, full: bool, only_one: bool,
              wait: bool = True) -> None:
    from rich.progress import Progress

    from mlconnector import engine
    from mlconnector.settings import get_settings
    from mlconnector.tasks import send

    embedded = get_settings().embedded
    queued: list[int] = []
    try:
        with Progress(console=console, transient=False) as progress:
            if embedded:
                engine.orphans_to_pending(integration)
            waiting = engine.pending_work(integration, [f.name for f in flows])
            if not waiting.empty:
                task = progress.add_task("resuming pending records", total=waiting.record_count)
                for queue, ids in waiting.records.items():
                    for record_id in ids:
                        send(engine.Enqueue(records={queue: [record_id]}))
                        queued.append(record_id)
                        progress.advance(task)
            for flow in flows:
                if not flow.poll_seconds and not only_one:
                    continue
                task = progress.add_task(f"{flow.name}: reading", total=None)
                result = engine.poll_flow(integration, flow.name, since=start, full=full,
                                          on_found=lambda n, t=task: progress.advance(t, n))
                progress.update(task, description=f"{flow.name}: found {result.found}, writing {result.queued}",
                                total=result.queued, completed=0)
                for record_id in [i for v in result.enqueue.records.values() for i in v]:
                    send(engine.Enqueue(records={pair.queue: [record_id]}))
                    queued.append(record_id)
                    progress.advance(task)
            if queued and wait and not embedded:  # embedded work is done once sent
                _follow_completion(progress, queued)
    except KeyboardInterrupt:
        reset = engine.orphans_to_pending(integration) if embedded else 0
        left = engine.pending_work(integration).record_count if embedded else None
        where = f"{left} record(s) pending" if left is not None else "records already queued go on in the workers"
        console.print(f"[yellow]interrupted[/yellow]: {where}" + (f" ({reset} stopped mid-write, back to pending)" if reset else "")
                      + f"; run `mlconnector sync {integration}` again to resume")
        sys.exit(130)


FOLLOW_EVERY_SECONDS = 0.5
QUIET_WARNING_SECONDS = 30.0


def _follow_completion(progress: Any, record_ids: list[int]) -> None:
    """Advance a bar as the workers finish the queued records; say so once if none finishes
    for a while (no worker running is the usual cause), and keep following."""
    import time

    from mlconnector import ledger
    from mlconnector.db.session import session_scope

    task = progress.add_task("finishing in the workers", total=len(record_ids))
    last_done, last_change, warned = -1, time.monotonic(), False
    while True:
        with session_scope() as session:
            done = ledger.count_finished(session, record_ids)
        progress.update(task, completed=done)
        if done >= len(record_ids):
            return
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        elif not warned and time.monotonic() - last_change > QUIET_WARNING_SECONDS:
            progress.console.print(f"[yellow]no record finished in {QUIET_WARNING_SECONDS:.0f} s[/yellow]: is a worker "
                                   "running? (celery -A mlconnector.celery_app worker); Ctrl-C leaves the work queued")
            warned = True
        time.sleep(FOLLOW_EVERY_SECONDS)


def _field_diff(before: Any, after: Any, path: str = "") -> list[str]:
    """Field-level differences between two JSON values, one line each."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after), key=str):
            out += _field_diff(before.get(key), after.get(key), f"{path}.{key}" if path else str(key))
        return out
    if before != after:
        return [f"{path or '(payload)'}: {json.dumps(before, default=str)} -> {json.dumps(after, default=str)}"]
    return []


@main.command()
@click.argument("record_id", required=False, type=int)
@click.option("--status", type=click.Choice(["failed", "held"]), help="Replay every record in this state.")
@click.option("--integration", help="With --status: the integration whose records to replay.")
@click.option("--all-integrations", is_flag=True, help="With --status: every integration's records.")
@click.option("--flow", "flow_name")
@click.option("--since", help="Only records updated at or after this ISO time.")
@click.option("--edit", is_flag=True, help="Edit the source payload before replaying (one record).")
@click.option("--dry-run", is_flag=True, help="Print what would be replayed and written; replay nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
@click.option("--actor", default=None, help="Who asks for the replay (default: the OS user).")
@click.option("--note", default="", help="Why (kept in the audit trail).")
def replay(record_id: int | None, status: str | None, integration: str | None, all_integrations: bool,
           flow_name: str | None, since: str | None, edit: bool, dry_run: bool, yes: bool, actor: str | None,
           note: str) -> None:
    """Replay one record, or every failed/held record of an integration, after a preview."""
    from collections import Counter

    from sqlalchemy import select

    from mlconnector import engine
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope
    from mlconnector.tasks import send

    if record_id is None and status is None:
        _fail("give a RECORD_ID or --status failed|held (with --integration I or --all-integrations)")
    if record_id is None and not integration and not all_integrations:
        _fail("say whose records to replay: --integration I (or --all-integrations)")
    who = actor or _actor()
    edited = None
    with session_scope() as session:
        if record_id is not None:
            record = session.get(SyncRecord, record_id)
            if record is None:
                _fail(f"no record {record_id}; find one with: mlconnector records list")
                return
            ids = [record.id]
            if edit:
                original = record.edited_payload or record.payload or {}
                text = click.edit(json.dumps(original, indent=2, default=str), extension=".json")
                if text is None:
                    _fail("edit cancelled; nothing replayed")
                try:
                    edited = json.loads(text or "")
                except json.JSONDecodeError as error:
                    _fail(f"edited payload is not JSON: {error.msg} at line {error.lineno}")
                changes = _field_diff(original, edited)
                if not changes:
                    _fail("the edit changed nothing; nothing replayed")
                console.print("the edit changes:\n  " + "\n  ".join(changes))
        else:
            query = select(SyncRecord.id, SyncRecord.flow).where(SyncRecord.status == status).order_by(SyncRecord.id)
            if integration:
                query = query.where(SyncRecord.integration_id == integration)
            if flow_name:
                query = query.where(SyncRecord.flow == flow_name)
            start = _parse_time(since)
            if start:
                query = query.where(SyncRecord.updated_at >= start)
            found = session.execute(query).all()
            ids = [row.id for row in found]
            by_flow = Counter(row.flow for row in found)
            console.print(f"{len(ids)} {status} record(s) to replay"
                          + (": " + ", ".join(f"{n} {flow}" for flow, n in sorted(by_flow.items())) if ids else ""))
    if not ids:
        return
    if edited is None:
        lines = engine.plan_records(ids)
        plans = Counter(line.action for line in lines)
        table = Table("record", "flow", "would", "what")
        for line, record_id_ in zip(lines, ids):
            table.add_row(str(record_id_), line.flow, line.action, line.detail)
        console.print(table)
        console.print("the plan: " + ", ".join(f"{n} {action}" for action, n in sorted(plans.items())))
    if dry_run:
        console.print("dry run: nothing replayed")
        return
    if not yes and not click.confirm(f"replay {len(ids)} record(s)?", default=False):
        _fail("nothing replayed")
    work = engine.Enqueue()
    with session_scope() as session:
        for record in session.scalars(select(SyncRecord).where(SyncRecord.id.in_(ids)).with_for_update()):
            work.extend(engine.replay(session, record, edited_payload=edited, actor=who, note=note))
    send(work)
    console.print(f"replayed {work.record_count} record(s)")


# ---- the exceptions queue -------------------------------------------------------------

@main.group()
def records() -> None:
    """Records by state: what is held or failed, and why; resolve what was handled by hand."""


STATUS_CHOICES = ["held", "failed", "pending", "running", "written", "skipped", "resolved"]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@records.command("list")
@click.option("--integration", help="Only this integration.")
@click.option("--flow", "flow_name", help="Only this flow.")
@click.option("--status", "statuses", multiple=True, type=click.Choice(STATUS_CHOICES),
              help="States to list (repeatable; default: held and failed).")
@click.option("--since", help="Only records changed at or after this ISO time.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def records_list(integration: str | None, flow_name: str | None, statuses: tuple[str, ...], since: str | None,
                 as_json: bool) -> None:
    """The exceptions queue: id, flow, source document, counterpart, amount, age, deliveries, reason."""
    from mlconnector import records as records_mod
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = records_mod.list_records(session, integration=integration, flow=flow_name,
                                        statuses=statuses or records_mod.OPEN_STATES, since=_parse_time(since))
    if as_json:
        click.echo(json.dumps([row.as_json() for row in rows], indent=2, default=str))
        return
    table = Table("id", "integration", "flow", "state", "document", "counterpart", "amount", "age", "tries", "reason")
    for row in rows:
        table.add_row(str(row.id), row.integration, row.flow, row.status, row.document, row.counterpart, row.amount,
                      _age(row.age_seconds), str(row.deliveries), row.reason)
    console.print(table)
    console.print(f"{len(rows)} record(s); the trail of one: mlconnector records show <id>")


@records.command("show")
@click.argument("record_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Full rows as JSON.")
@click.pass_context
def records_show(ctx: click.Context, record_id: int, as_json: bool) -> None:
    """One record and its trail, step by step (the same as `audit`)."""
    ctx.invoke(audit_cmd, record_id=record_id, as_json=as_json)


@records.command("resolve")
@click.argument("record_ids", type=int, nargs=-1, required=True)
@click.option("--note", required=True, help="How it was handled outside the product.")
@click.option("--actor", default=None, help="Who resolved it (default: the OS user).")
def records_resolve(record_ids: tuple[int, ...], note: str, actor: str | None) -> None:
    """Mark held or failed records as handled outside the product (terminal, trail kept)."""
    from mlconnector import records as records_mod
    from mlconnector.db.session import session_scope

    try:
        with session_scope() as session:
            done = records_mod.resolve(session, record_ids, note=note, actor=actor or _actor())
    except records_mod.NotResolvable as error:
        _fail(str(error))
        return
    console.print(f"resolved {len(done)} record(s): {', '.join(str(r.id) for r in done)}")


def open_records_line(integration: str | None = None) -> str:
    """One line saying how many records wait for a person, and the command that lists them."""
    from mlconnector import records as records_mod
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        counts = records_mod.open_counts(session, integration)
    if not any(counts.values()):
        return "nothing is held or failed"
    where = f" --integration {integration}" if integration else ""
    return (f"{counts['held']} held and {counts['failed']} failed record(s) wait for a person; list them with: "
            f"mlconnector records list{where}")


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
            if row.actor and row.actor not in message:
                message += f" (by {row.actor})"
            if row.decisions:
                message += "".join(f"\n  · {d.get('field')}: {d.get('value')} ({d.get('reason')})" for d in row.decisions)
            table.add_row(row.at.strftime("%Y-%m-%d %H:%M:%S"), row.kind, message, str(row.http_status or ""),
                          row.target_id or "", f"{row.duration_ms:.0f}" if row.duration_ms is not None else "")
        console.print(table)


def _print_status(integration: str | None = None, as_json: bool = False) -> None:
    from mlconnector.db.session import session_scope
    from mlconnector.health import documents_created_this_month, flow_health

    with session_scope() as session:
        rows = flow_health(session, integration)
        created = documents_created_this_month(session, integration)
    if as_json:
        click.echo(json.dumps([{**row.as_json(), "integration_created_this_month": created.get(row.integration, 0)}
                               for row in rows], indent=2))
        return
    table = Table("integration", "flow", "written", "skipped", "pending", "held", "failed", "in target", "oldest waiting",
                  "last poll", "next poll", "position")
    for row in rows:
        c = row.counts
        oldest = ", ".join(f"{state} {_age(age)}" for state, age in sorted(row.oldest_age_seconds.items())) or "-"
        last = row.last_poll_at.strftime("%Y-%m-%d %H:%M:%S") if row.last_poll_at else "never"
        if row.last_poll_error:
            last += f" [red]error: {row.last_poll_error[:60]}[/red]"
        position = " ".join(p for p in (row.position_at.isoformat(timespec="seconds") if row.position_at else "",
                                        f"cursor {row.position_cursor}" if row.position_cursor else "") if p) or "-"
        table.add_row(row.integration + ("" if row.enabled else " (disabled)"), row.flow, str(c.get("written", 0)),
                      str(c.get("skipped", 0)), str(c.get("pending", 0) + c.get("running", 0)), str(c.get("held", 0)),
                      str(c.get("failed", 0)), str(row.in_target), oldest, last,
                      row.next_poll_at.strftime("%H:%M:%S") if row.next_poll_at else "-", position)
    console.print(table)
    for name in sorted({row.integration for row in rows}):
        # Some vendors' licences cap the documents created through their API each month.
        console.print(f"{name}: {created.get(name, 0)} document(s) created in target systems this month (UTC)")


@main.command()
@click.option("--integration", help="Only this integration.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def status(integration: str | None, as_json: bool) -> None:
    """Is it healthy? Per flow: records by state, in the target, oldest waiting, polls, position."""
    _print_status(integration, as_json)


@main.command("reconcile")
@click.argument("integration")
@click.option("--period", help="The month, YYYY-MM (e.g. 2026-11).")
@click.option("--from", "first", help="First day of a range, YYYY-MM-DD (with --to, instead of --period).")
@click.option("--to", "last", help="Last day of the range, YYYY-MM-DD (included).")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON document, for scripts.")
@click.option("--csv", "as_csv", is_flag=True, help="The report as CSV, for the accountant's workbook.")
def reconcile_cmd(integration: str, period: str | None, first: str | None, last: str | None, as_json: bool,
                  as_csv: bool) -> None:
    """Month-end tie-out: per entity, counts and totals in the source, the target (read through its
    API) and the ledger, then every difference, classified, with the record whose trail explains it."""
    from mlconnector import reconcile as rec
    from mlconnector.http import ConnectorError

    if as_json and as_csv:
        _fail("choose one of --json and --csv")
    if period and (first or last):
        _fail("give either --period YYYY-MM or --from/--to, not both")
    if not period and not (first and last):
        _fail("give the period: --period YYYY-MM (e.g. 2026-11), or --from YYYY-MM-DD --to YYYY-MM-DD")
    text = period or f"{first}..{last}"
    try:
        report = rec.reconcile(integration, text)
    except (rec.PeriodError, rec.NothingToReconcile, LookupError) as error:
        _fail(str(error))
        return
    except ConnectorError as error:
        _fail(f"could not read {getattr(error, 'vendor', '') or 'a system'}: {error} "
              f"(check that it is reachable and its credentials are right: mlconnector check {integration})")
        return
    if as_json:
        click.echo(rec.to_json(report))
    elif as_csv:
        click.echo(rec.to_csv(report), nl=False)
    else:
        _print_reconciliation(report)


def _print_reconciliation(report: Any) -> None:
    from mlconnector.reconcile import trail_command

    console.print(f"[bold]{report.integration}[/bold] ({report.pair}), {report.period}: "
                  f"{report.start} to {report.end}, read {report.generated_at:%Y-%m-%d %H:%M} UTC")
    table = Table("entity", "dated by", "source", "target", "ledger", "differences")
    for e in report.entities:
        table.add_row(f"{e.entity}" + (f"\n{e.target_scope}" if e.target_scope else ""),
                      f"{e.source_date}\n{e.target_date}",
                      f"{e.source_count}  {e.source_total}", f"{e.target_count}  {e.target_total}",
                      f"{e.ledger_count}  {e.ledger_total}", str(len(e.differences)))
    console.print(table)
    differences = [d for e in report.entities for d in e.differences]
    if not differences:
        console.print("The systems agree: no difference in this period.")
        return
    table = Table("entity", "kind", "number", "counterpart", "source", "target", "record", "detail")
    for d in differences:
        table.add_row(d.entity, d.kind, d.number or d.source_ref or d.target_ref or "", d.counterpart,
                      "" if d.source_amount is None else str(d.source_amount),
                      "" if d.target_amount is None else str(d.target_amount),
                      "" if d.record_id is None else str(d.record_id), d.detail)
    console.print(table)
    named = next((d.record_id for d in differences if d.record_id is not None), None)
    if named is not None:
        console.print(f"The trail of a record: {trail_command(named)}   (--csv for the workbook)")


@main.command()
def sweep() -> None:
    """Run the sweeper once (re-enqueue lost work, retire poison records)."""
    from mlconnector import engine
    from mlconnector.tasks import send

    result = engine.sweep()
    send(result.enqueue)
    console.print(f"re-enqueued {result.events} event(s) and {result.records} record(s); {result.failed} record(s) failed")


CHECK_OVERRIDES = {"retry": {"max_tries": 1, "max_time": 10}, "connect_timeout": 3.0, "timeout": 15.0}  # a verdict in seconds


def _check_connector(integration: Any, system: str, credentials: dict[str, Any]) -> Any:
    """A connector for `check` only: one try per call and short timeouts, so an unreachable
    host is a verdict within seconds, not minutes of backoff."""
    from connectors import build_connector, connector_class

    fields = connector_class(system).Config.model_fields
    config = dict((integration.config or {}).get("systems", {}).get(system, {}))
    for key, value in CHECK_OVERRIDES.items():
        if key in fields:
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return build_connector(system, config, credentials)


def _system_url(integration: Any, system: str) -> str:
    config = (integration.config or {}).get("systems", {}).get(system, {})
    return next((str(config[key]) for key in ("api_base", "base_url", "instance_url", "url") if config.get(key)), "")


def _where(integration: Any, system: str) -> str:
    from urllib.parse import urlsplit

    url = _system_url(integration, system)
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


@main.command()
@click.argument("integration")
@click.option("--json", "as_json", is_flag=True, help="One JSON array of verdicts, for scripts.")
def check(integration: str, as_json: bool) -> None:
    """Ping the real systems: reach (DNS, TCP, TLS), sign in, one cheap read per entity the pair
    uses, and every unconfirmed vendor fact the pair relies on, each with its latency."""
    from mlconnector import vault
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import get_integration

    verdicts: list[dict[str, Any]] = []
    with session_scope() as session:
        try:
            row = get_integration(session, integration)
        except LookupError as error:
            _fail(str(error))
            return
        systems = get_pair(row.pair).systems()
        secrets = {system: vault.load(session, integration, system) for system in systems}
    from mlconnector.reach import reach

    for system in systems:
        where = _where(row, system)
        if _system_url(row, system):
            reached = reach(_system_url(row, system))
            verdicts.append({"system": system, "step": f"reach {reached.where}", "ok": reached.ok,
                             "ms": reached.latency_ms, "detail": reached.detail})
            if not reached.ok:
                verdicts.append({"system": system, "step": "sign-in and reads", "ok": False, "ms": 0.0,
                                 "detail": "not tried: the host cannot be reached"})
                continue
        steps = _check_connector(row, system, secrets[system]).check()
        for index, step in enumerate(steps):
            detail = step.detail
            if not step.ok and ("Connection" in detail or "Timeout" in detail) and where:
                detail = f"{detail} (could not reach {where})"
            verdicts.append({"system": system, "step": step.step, "ok": step.ok, "ms": step.latency_ms, "detail": detail})
            if not step.ok and index == 0 and len(steps) > 1:  # no token, no reads: say so once
                verdicts.append({"system": system, "step": f"{len(steps) - 1} read(s)", "ok": False, "ms": 0.0,
                                 "detail": "not tried: the first step failed"})
                break
    ok = all(v["ok"] for v in verdicts)
    if as_json:
        click.echo(json.dumps(verdicts, indent=2))
    else:
        table = Table("system", "step", "ok", "ms", "detail")
        for v in verdicts:
            table.add_row(v["system"], v["step"], "[green]ok[/green]" if v["ok"] else "[red]FAIL[/red]", f"{v['ms']:.0f}",
                          v["detail"][:120])
        console.print(table)
    if not ok:
        sys.exit(1)


# ---- links ---------------------------------------------------------------------------

@main.group()
def links() -> None:
    """Counterpart links (vendor, customer, item, ...) between a pair's two systems."""


def _links_list(integration: str, kind: str | None, as_json: bool = False) -> None:
    from mlconnector import links as links_mod
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = [{"kind": l.kind, "source_system": l.source_system, "source_id": l.source_id, "source_name": l.source_name,
                 "target_system": l.target_system, "target_id": l.target_id, "target_name": l.target_name, "how": l.how,
                 "created_at": l.created_at.isoformat()} for l in links_mod.list_links(session, integration, kind)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("kind", "source", "source record", "target", "target record", "how", "since")
    for r in rows:
        table.add_row(r["kind"], r["source_system"], f"{r['source_id']} {r['source_name']}", r["target_system"],
                      f"{r['target_id']} {r['target_name']}", r["how"], r["created_at"][:10])
    console.print(table)


def _declared_kind(session: Any, integration: str, kind: str) -> tuple[Any, Any]:
    from mlconnector import engine
    from mlconnector.flows import UnknownFlowError

    try:
        ctx = engine.context_for(session, integration)
        return ctx, ctx.pair.counterpart(kind)
    except (LookupError, UnknownFlowError) as error:
        _fail(str(error))
        raise


def _links_link(integration: str, kind: str, source_id: str, target_id: str, yes: bool = True) -> None:
    from mlconnector import links as links_mod
    from mlconnector import releases
    from mlconnector.db.session import session_scope
    from mlconnector.holds import LinkNeeded
    from mlconnector.http import ConnectorError
    from mlconnector.outbox import pending

    with session_scope() as session:
        ctx, declared = _declared_kind(session, integration, kind)
        try:
            source = declared.get_source(ctx, source_id)
            target = declared.get_target(ctx, target_id)
        except ConnectorError as error:
            _fail(f"could not read the records to link: {error}")
            return
        except ValueError:
            _fail(f"{source_id!r} or {target_id!r} is not an id of the form {declared.label} records have")
            return
        if source is None:
            _fail(f"{declared.source_system} has no {declared.label} {source_id}")
        if target is None:
            _fail(f"{declared.target_system} has no {declared.label} {target_id}; find one with: "
                  f"mlconnector links search {integration} --kind {kind} <name>")
        ids = releases.would_release(session, integration, [LinkNeeded(kind, declared.source_system, source_id)])
    console.print(f"link {declared.source_system} {declared.label} {source_id} '{source.name}' -> "
                  f"{declared.target_system} {declared.label} {target.label()}")

    def with_the_link(preview: Any) -> None:
        from mlconnector.db.models import Link, utcnow

        preview.add(Link(integration_id=integration, kind=kind, source_system=declared.source_system, source_id=source_id,
                         source_name=source.name, target_system=declared.target_system, target_id=target.id,
                         target_name=target.name, how=links_mod.MANUAL, created_at=utcnow()))
        preview.flush()

    _preview_release(ids, with_the_link, "this link")
    if ids and not yes and not click.confirm("make the link?", default=False):
        _fail("nothing linked")
    with session_scope() as session:
        links_mod.link(session, integration, kind=kind, source_system=declared.source_system, source_id=source_id,
                       source_name=source.name, target_system=declared.target_system, target_id=target.id,
                       target_name=target.name, how=links_mod.MANUAL, actor=_actor())
        released = pending(session).record_count
    console.print(f"linked; re-queued {released} held record(s); the {declared.target_system} record is not changed by the link")


def _links_unlink(integration: str, kind: str, source_id: str) -> None:
    from mlconnector import links as links_mod
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        ctx, declared = _declared_kind(session, integration, kind)
        removed = links_mod.unlink(session, integration, kind, declared.source_system, source_id, actor=_actor())
    console.print(f"unlinked {kind} {source_id} (was {removed.target_id} '{removed.target_name}')" if removed
                  else f"no {kind} link for {source_id}")


def _actor() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (a container): still say who in words
        return "command line"


@links.command("list")
@click.argument("integration")
@click.option("--kind", help="Only links of this kind (vendor, customer, item, ...).")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def links_list(integration: str, kind: str | None, as_json: bool) -> None:
    """Every link and how it was made."""
    _links_list(integration, kind, as_json)


@links.command("search")
@click.argument("integration")
@click.argument("text")
@click.option("--kind", required=True, help="vendor, customer, item, ...")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def links_search(integration: str, text: str, kind: str, as_json: bool) -> None:
    """Find target records by name or code, to pick the id to link."""
    from mlconnector.db.session import session_scope
    from mlconnector.http import ConnectorError

    with session_scope() as session:
        ctx, declared = _declared_kind(session, integration, kind)
        try:
            found = declared.search(ctx, text)
        except ConnectorError as error:
            _fail(f"could not search {declared.target_system}: {error}")
            return
    if as_json:
        click.echo(json.dumps([{"id": r.id, "code": r.code, "name": r.name} for r in found[:50]], indent=2))
        return
    table = Table("id", "code", "name", title=f"{declared.target_system} {declared.label}s matching {text!r}")
    for record in found[:50]:
        table.add_row(record.id, record.code, record.name)
    console.print(table)
    if not found:
        console.print("no match; try part of the name")


@links.command("link")
@click.argument("integration")
@click.argument("source_id")
@click.argument("target_id")
@click.option("--kind", required=True, help="vendor, customer, item, ...")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def links_link(integration: str, source_id: str, target_id: str, kind: str, yes: bool) -> None:
    """Link a source record to a target record (both verified), after a preview of what follows."""
    _links_link(integration, kind, source_id, target_id, yes)


@links.command("unlink")
@click.argument("integration")
@click.argument("source_id")
@click.option("--kind", required=True, help="vendor, customer, item, ...")
def links_unlink(integration: str, source_id: str, kind: str) -> None:
    """Remove a link (its history stays in the audit trail)."""
    _links_unlink(integration, kind, source_id)


@main.group()
def vendors() -> None:
    """Shorthand for `links ... --kind vendor`."""


@vendors.command("list")
@click.argument("integration")
def vendors_list(integration: str) -> None:
    """Every vendor link and how it was made."""
    _links_list(integration, "vendor")


@vendors.command("link")
@click.argument("integration")
@click.argument("source_vendor_id")
@click.argument("target_vendor_id")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts).")
def vendors_link(integration: str, source_vendor_id: str, target_vendor_id: str, yes: bool) -> None:
    """Link a source vendor to a target vendor; records held for it are re-queued."""
    _links_link(integration, "vendor", source_vendor_id, target_vendor_id, yes)


@vendors.command("unlink")
@click.argument("integration")
@click.argument("source_vendor_id")
def vendors_unlink(integration: str, source_vendor_id: str) -> None:
    """Remove a vendor link."""
    _links_unlink(integration, "vendor", source_vendor_id)


# ---- console users ---------------------------------------------------------------------

@main.group()
def users() -> None:
    """People who sign in to the browser console (/console): viewers see, operators act."""


def _new_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["viewer", "operator"]), required=True)
def users_add(username: str, role: str) -> None:
    """Add USERNAME with ROLE; the password is read from a prompt (or one line of stdin), never argv."""
    from pydantic import ValidationError

    from mlconnector.db.session import session_scope
    from mlconnector.users import NewUser, Role, UserError, add_user

    try:
        new = NewUser(username=username, password=_new_password(), role=Role(role))
    except ValidationError as error:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))
        return
    try:
        with session_scope() as session:
            add_user(session, new, actor=_actor())
    except UserError as error:
        _fail(str(error))
    console.print(f"added {role} {username}; sign in at /console")


@users.command("password")
@click.argument("username")
def users_password(username: str) -> None:
    """Set USERNAME's password (prompt or one line of stdin)."""
    from mlconnector.db.session import session_scope
    from mlconnector.users import UserError, set_password

    try:
        with session_scope() as session:
            set_password(session, username, _new_password(), actor=_actor())
    except UserError as error:
        _fail(str(error))
    console.print(f"password of {username} changed")


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Stop USERNAME signing in (sessions already open end at their next request)."""
    from mlconnector.db.session import session_scope
    from mlconnector.users import UserError, set_active

    try:
        with session_scope() as session:
            set_active(session, username, False, actor=_actor())
    except UserError as error:
        _fail(str(error))
    console.print(f"{username} disabled")


@users.command("list")
def users_list() -> None:
    """Every console user, role and last sign-in."""
    from mlconnector.db.session import session_scope
    from mlconnector.users import list_users

    table = Table("user", "role", "active", "last sign-in")
    with session_scope() as session:
        for user in list_users(session):
            table.add_row(user.username, user.role, "yes" if user.active else "no",
                          user.last_signin_at.strftime("%Y-%m-%d %H:%M") if user.last_signin_at else "never")
    console.print(table)


# ---- servers ---------------------------------------------------------------------------

@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
def serve(host: str, port: int) -> None:
    """Run the webhook receiver (development server; production uses gunicorn, see Procfile)."""
    import socket

    from mlconnector.web import create_app

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            _fail(f"port {port} on {host} is already in use; choose another with --port, or stop what listens there")
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
@click.option("--records", default=20, show_default=True, type=click.IntRange(1, 500),
              help="Records per entity in each sandbox.")
@click.option("--seed", default=11, show_default=True, help="Seed of the sandboxes' data: the same seed, the same story.")
@click.option("--json", "as_json", is_flag=True, help="The summary as one JSON document on stdout (progress on stderr).")
@click.option("--pair", "only", multiple=True, help="Only this pair (repeatable; default: every pair with a demo).")
def demo(records: int, seed: int, as_json: bool, only: tuple[str, ...]) -> None:
    """Every pair end to end on in-process sandboxes, with the cases users worry about planted."""
    from mlconnector.demo import run_demo

    err = Console(stderr=True, width=None if sys.stderr.isatty() else PIPE_WIDTH)
    sys.exit(run_demo(records, seed, as_json, console, err, only))


if __name__ == "__main__":
    main()
