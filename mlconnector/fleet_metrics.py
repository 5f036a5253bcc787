"""Metrics of the whole fleet, in Prometheus format.

Two sources, one scrape:

- **Process metrics** (vendor calls, task outcomes, token refreshes, rate-limit waits,
  webhooks): counted where they happen. Gunicorn workers and Celery pool children are
  separate processes, so with `PROMETHEUS_MULTIPROC_DIR` set (one fresh directory per host,
  shared by that host's web and worker processes) each process writes its counts there and a
  scrape adds them up (prometheus_client's multiprocess mode). The receiver's `/metrics` serves
  them; a worker host without a receiver serves them from the worker's main process on
  `MLCONNECTOR_WORKER_METRICS_PORT`.
- **Fleet gauges**, read from PostgreSQL and the broker at scrape time, true for the whole
  fleet: records by state, the age of the oldest pending/held/failed record, each flow's
  position age and last poll error, and queue depth.

Labels are fixed and few: integration, flow, state, queue (no record ids, no messages).
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def process_registry() -> CollectorRegistry:
    """This host's process metrics: every process's counts when multiprocess, else this one's."""
    if not multiprocess():
        return REGISTRY
    from prometheus_client import multiprocess as mp

    registry = CollectorRegistry()
    mp.MultiProcessCollector(registry)
    return registry


def fleet_registry() -> CollectorRegistry:
    """Gauges read from PostgreSQL and the broker, for every integration and flow.

    Built as metric families, not `Gauge` objects: in multiprocess mode every `Gauge` writes
    to the shared directory, and a scrape would then add each past scrape's values up.
    """
    registry = CollectorRegistry()
    registry.register(_FleetGauges())
    return registry


class _FleetGauges:
    """A collector read at scrape time (prometheus_client's custom-collector protocol)."""

    def collect(self) -> list[GaugeMetricFamily]:
        from mlconnector import ledger
        from mlconnector.db.models import InboundEvent, SyncRecord, Watermark, as_utc, utcnow
        from mlconnector.db.session import session_scope

        records = GaugeMetricFamily("mlconnector_sync_records", "Sync records by state",
                                    labels=["integration", "flow", "status"])
        oldest = GaugeMetricFamily("mlconnector_oldest_record_age_seconds", "Age of the oldest record waiting in a state",
                                   labels=["integration", "flow", "status"])
        position_age = GaugeMetricFamily("mlconnector_position_age_seconds", "Seconds since a flow's position last moved",
                                         labels=["integration", "flow"])
        poll_error = GaugeMetricFamily("mlconnector_last_poll_failed", "1 when a flow's last poll failed",
                                       labels=["integration", "flow"])
        events = GaugeMetricFamily("mlconnector_inbound_events", "Inbound events by state", labels=["status"])
        depth = GaugeMetricFamily("mlconnector_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        now = utcnow()
        with session_scope() as session:
            for integration, flow, status, count in ledger.counts_by_status(session):
                records.add_metric([integration, flow, status], count)
            for integration, flow, status, first in session.execute(
                    select(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status, func.min(SyncRecord.updated_at))
                    .where(SyncRecord.status.in_(("pending", "held", "failed")))
                    .group_by(SyncRecord.integration_id, SyncRecord.flow, SyncRecord.status)):
                oldest.add_metric([integration, flow, status], max(0.0, (now - as_utc(first)).total_seconds()))
            for mark in session.scalars(select(Watermark)):
                if mark.value is not None:
                    position_age.add_metric([mark.integration_id, mark.flow],
                                            max(0.0, (now - as_utc(mark.value)).total_seconds()))
                poll_error.add_metric([mark.integration_id, mark.flow], 1 if mark.last_poll_error else 0)
            for status, count in session.execute(select(InboundEvent.status, func.count()).group_by(InboundEvent.status)):
                events.add_metric([status], count)
        for queue, size in queue_depths().items():
            depth.add_metric([queue], size)
        return [records, oldest, position_age, poll_error, events, depth]


def queue_depths() -> dict[str, int]:
    """Messages waiting per queue: LLEN on a Redis broker, a passive declare (which answers the
    queue's message count without creating it) on RabbitMQ; empty with no broker."""
    from mlconnector.celery_app import broker_queues
    from mlconnector.settings import get_settings

    url = get_settings().celery_broker_url
    names = [queue.name for queue in broker_queues()]
    if url.startswith("amqp://"):
        return amqp_depths(url, names)
    if not url.startswith(("redis://", "rediss://")):
        return {}
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return {name: int(client.llen(name)) for name in names}
    finally:
        client.close()


def amqp_depths(url: str, names: list[str]) -> dict[str, int]:
    """Messages ready in each named RabbitMQ queue (0 for one not declared yet), by passive
    declares: the broker's own count now, where rabbitmqctl's lags by seconds on quorum queues."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    depths: dict[str, int] = {}
    with Connection(url, connect_timeout=2) as connection:
        for name in names:
            channel = connection.channel()  # a declare of a missing queue closes its channel
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except ChannelError:
                depths[name] = 0  # not declared yet: no worker has started on it, nothing sent
            finally:
                try:
                    channel.close()
                except Exception:  # already closed by the broker's refusal
                    pass
    return depths


def render() -> tuple[bytes, str]:
    """The scrape: process metrics, then the fleet gauges (skipped when the database is away,
    so metrics still answer during an outage)."""
    body = generate_latest(process_registry())
    try:
        body += generate_latest(fleet_registry())
    except Exception:  # the database or broker is away: what the processes counted still answers
        pass
    return body, CONTENT_TYPE_LATEST


def mark_process_dead(pid: int) -> None:
    """A finished process's live gauges go; its counts stay summed (multiprocess mode only)."""
    if multiprocess():
        from prometheus_client import multiprocess as mp

        mp.mark_process_dead(pid)


def serve_worker_metrics(port: int) -> None:
    """Serve this host's process metrics from the worker's main process (a worker host with
    no receiver); needs multiprocess mode, or the pool children's counts would be missing."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=os.environ.get("MLCONNECTOR_WORKER_METRICS_ADDRESS", "0.0.0.0"),
                      registry=process_registry())
