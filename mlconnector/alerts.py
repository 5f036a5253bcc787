"""Alerts: security events, failed records, holds and token failures reach a person.

The audit trail is the queue: a beat task reads alert-worthy audit rows since its cursor
and sends one summary per integration per run, so a storm of a thousand bad signatures is
one message, not a thousand. Sinks: a JSON webhook (a chat channel) and/or SMTP email.
"""

from __future__ import annotations

import collections
import json
import smtplib
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlparse

import requests
from sqlalchemy import Integer, func, select

from mlconnector import audit, locks

from mlconnector.db.models import AuditEvent
from mlconnector.db.session import session_scope
from mlconnector.logging import get_logger
from mlconnector.settings import get_settings

log = get_logger(__name__)

ALERT_KINDS = ("security", "failed", "held", "auth_failed", "poll_failed")
SENT_KIND = "alerts_sent"
MAX_ROWS_PER_RUN = 10_000
EXAMPLES_PER_KIND = 5  # a summary lists a few examples of each kind, then counts
SINK_TIMEOUT = (5, 15)


def build_summaries(rows: list[AuditEvent]) -> dict[str, dict[str, Any]]:
    """Group alert rows by integration, then kind, with counts and a few examples."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        integration = row.integration_id or "(none)"
        summary = grouped.setdefault(integration, {"integration": integration, "counts": collections.Counter(), "examples": {}})
        summary["counts"][row.kind] += 1
        examples = summary["examples"].setdefault(row.kind, [])
        if len(examples) < EXAMPLES_PER_KIND:
            examples.append({"at": row.at.isoformat(), "flow": row.flow, "record": row.sync_record_id, "message": row.message})
    for summary in grouped.values():
        summary["counts"] = dict(summary["counts"])
        summary["text"] = render_text(summary)
    return grouped


def render_text(summary: dict[str, Any]) -> str:
    parts = [f"ml-connector: {sum(summary['counts'].values())} alert(s) on integration {summary['integration']}"]
    for kind, count in sorted(summary["counts"].items()):
        parts.append(f"- {count} {kind}")
        for example in summary["examples"].get(kind, []):
            where = f"record {example['record']}" if example["record"] else (example["flow"] or "")
            parts.append(f"    {where}: {example['message']}")
    return "\n".join(parts)


def send_pending() -> dict[str, Any]:
    settings = get_settings()
    if not settings.alert_webhook_url and not settings.alert_smtp_url:
        return {"sent": 0, "reason": "no alert sink configured"}
    with session_scope() as session, locks.try_lock(session, locks.LockSpace.ALERTS, 0) as got:
        if not got:  # one sender at a time across the fleet; a second beat tick simply skips
            return {"sent": 0, "reason": "another sender is running"}
        last_id = session.scalar(
            select(func.max(AuditEvent.target_id.cast(Integer))).where(AuditEvent.kind == SENT_KIND)
        ) or 0
        rows = list(session.scalars(
            select(AuditEvent).where(AuditEvent.id > last_id, AuditEvent.kind.in_(ALERT_KINDS))
            .order_by(AuditEvent.id).limit(MAX_ROWS_PER_RUN)
        ))
        if not rows:
            return {"sent": 0}
        summaries = build_summaries(rows)
        for summary in summaries.values():
            deliver(summary)
        # The cursor is itself an audit row: what was sent, covering rows up to this id.
        audit.append(session, SENT_KIND, f"sent {len(summaries)} alert summary(ies) for {len(rows)} event(s)",
                     target_id=str(rows[-1].id))
        return {"sent": len(summaries), "rows": len(rows)}


def deliver(summary: dict[str, Any]) -> None:
    settings = get_settings()
    if settings.alert_webhook_url:
        body = {"text": summary["text"], "integration": summary["integration"], "counts": summary["counts"], "examples": summary["examples"]}
        response = requests.post(settings.alert_webhook_url, data=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=SINK_TIMEOUT)
        response.raise_for_status()
    if settings.alert_smtp_url and settings.alert_email_to:
        url = urlparse(settings.alert_smtp_url)
        message = EmailMessage()
        message["Subject"] = f"ml-connector alerts: {summary['integration']}"
        message["From"] = url.username or "ml-connector@localhost"
        message["To"] = settings.alert_email_to
        message.set_content(summary["text"])
        with smtplib.SMTP(url.hostname or "localhost", url.port or 25, timeout=SINK_TIMEOUT[1]) as smtp:
            if url.scheme == "smtp+starttls":
                smtp.starttls()
            if url.username and url.password:
                smtp.login(url.username, url.password)
            smtp.send_message(message)
