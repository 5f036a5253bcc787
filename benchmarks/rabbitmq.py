"""RabbitMQ for the benchmarks that run the fleet on it (bench_broker, bench_chaos): a virtual
host of the run's own on 127.0.0.1:5672 (guest/guest, made and deleted with `rabbitmqctl`,
which needs root), its queues listed and purged, and a CPU meter that counts the RabbitMQ
server (the Erlang VM, beam.smp) among the servers."""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from typing import Any

from benchmarks.common import CpuMeter

RABBITMQ = ("127.0.0.1", 5672)
DELAYED_PREFIX = "celery_delayed_"  # Celery's native delayed delivery: the levels a countdown waits in


def unavailable() -> str | None:
    """Why RabbitMQ cannot be used here, or None."""
    try:
        socket.create_connection(RABBITMQ, timeout=2).close()
    except OSError as error:
        return f"RabbitMQ is not reachable on {RABBITMQ[0]}:{RABBITMQ[1]} ({error})"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH: the run's virtual host cannot be made"
    return None


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def url(vhost: str) -> str:
    """The broker URL of `vhost` (CELERY_BROKER_URL)."""
    return f"amqp://guest:guest@{RABBITMQ[0]}:{RABBITMQ[1]}/{vhost}"


def create_vhost(prefix: str = "mlc_bench") -> str:
    """A new virtual host that the guest user may use fully; its name starts with `prefix`."""
    vhost = f"{prefix}_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except BaseException:
        rabbitmqctl("delete_vhost", vhost)
        raise
    return vhost


def delete_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)


def _rows(*args: str) -> list[list[str]]:
    """rabbitmqctl's table without its header line, as columns."""
    lines = rabbitmqctl(*args).splitlines()
    if lines and lines[0].startswith("name"):
        lines = lines[1:]
    return [line.split("\t") for line in lines if "\t" in line]


def queues(vhost: str) -> dict[str, dict[str, Any]]:
    """The vhost's queues: name -> type, exclusive, messages ready and unacknowledged."""
    rows = _rows("list_queues", "-p", vhost, "name", "type", "exclusive", "messages_ready", "messages_unacknowledged")
    return {name: {"type": kind, "exclusive": exclusive == "true", "ready": int(ready or 0), "unacked": int(unacked or 0)}
            for name, kind, exclusive, ready, unacked in (row[:5] for row in rows)}


def queue_types(vhost: str) -> dict[str, list[str]]:
    """The vhost's queues by type (quorum, classic, ...)."""
    by_type: dict[str, list[str]] = {}
    for name, kind in (row[:2] for row in _rows("list_queues", "-p", vhost, "name", "type")):
        by_type.setdefault(kind, []).append(name)
    shown: dict[str, list[str]] = {}
    for kind, names in sorted(by_type.items()):
        delayed = [n for n in names if n.startswith(DELAYED_PREFIX)]
        shown[kind] = sorted(n for n in names if n not in delayed) + ([f"{DELAYED_PREFIX}* ({len(delayed)})"] if delayed else [])
    return shown


def connections(vhost: str) -> int:
    """Client connections open to `vhost`."""
    return sum(1 for row in _rows("list_connections", "vhost") if row[0] == vhost)


def waiting(vhost: str) -> dict[str, int]:
    """Messages waiting (ready) in each of the vhost's queues, as the broker answers (see
    mlconnector.fleet_metrics.amqp_depths)."""
    from mlconnector.fleet_metrics import amqp_depths

    return amqp_depths(url(vhost), sorted(queues(vhost)))


def purge(vhost: str) -> dict[str, Any]:
    """Every message waiting in the vhost's queues dropped: each queue (the delayed-delivery
    levels too) purged over AMQP, which answers how many messages each purge removed.
    Messages a consumer holds unacknowledged are not waiting and stay (rabbitmqctl's count
    of them, which lags by seconds on quorum queues); exclusive queues (another connection's
    own) cannot be purged and are named."""
    from kombu import Connection

    listed = queues(vhost)
    dropped: dict[str, int] = {}
    skipped: list[str] = []
    with Connection(url(vhost), connect_timeout=10) as connection:
        channel = connection.channel()
        for name, queue in sorted(listed.items()):
            if queue["exclusive"]:
                skipped.append(name)
                continue
            try:
                dropped[name] = int(channel.queue_purge(name) or 0)
            except connection.channel_errors:  # gone (auto-delete) since it was listed: nothing to drop
                channel = connection.channel()
    return {
        "messages_dropped": sum(dropped.values()),
        "queues_purged": len(dropped),
        "delayed_queues_purged": sum(1 for n in dropped if n.startswith(DELAYED_PREFIX)),
        "dropped_by_queue": {n: c for n, c in sorted(dropped.items()) if c},
        "unacked_listed_not_dropped": sum(q["unacked"] for q in listed.values()),
        "exclusive_not_purged": skipped,
    }


class Meter(CpuMeter):
    """CpuMeter with the RabbitMQ server (the Erlang VM) among the servers."""

    SERVERS = {**CpuMeter.SERVERS, "rabbitmq": ("beam.smp",)}
