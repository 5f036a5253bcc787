"""The Celery application: configured from celeryconfig.py, one queue per pair, and a
beat that sends the enabled integrations' polls (see poll_schedule.py).

Worker:  celery -A mlconnector.celery_app worker --loglevel INFO
Beat:    celery -A mlconnector.celery_app beat --loglevel INFO
"""

from __future__ import annotations

import math
import re
import time
from typing import Any

from celery import Celery
from celery.beat import Scheduler
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown, worker_ready
from celery.utils.log import get_logger
from celery.worker.control import inspect_command
from kombu import Exchange, Queue
from kombu.transport.native_delayed_delivery import MAX_NUMBER_OF_BITS_TO_USE

from mlconnector.flows import all_pairs

DEFAULT_QUEUE = "mlconnector"
SWEEP_EVERY_SECONDS = 30.0  # how soon lost work comes back after a broker failure
ALERT_EVERY_SECONDS = 60.0  # alert summaries: one message per minute at most, per integration
SCHEDULE_REFRESH_SECONDS = 60.0  # integrations added or disabled reach beat within a minute

beat_log = get_logger("celery.beat")  # the logger (and the "Sending due task" line) beat's own entries use


def broker_queues() -> list[Queue]:
    """The default queue and one per pair, declared for the configured broker.

    On RabbitMQ each is a quorum queue (`MLCONNECTOR_AMQP_QUEUE_TYPE`) on a topic exchange of
    its own name: a quorum queue survives the loss of a broker node, and Celery's native
    delayed delivery, which carries a retry's countdown on quorum queues (a worker cannot hold
    delayed messages there by raising its prefetch), routes only through topic exchanges. On
    Redis a queue is a list and takes no arguments."""
    from mlconnector.settings import get_settings

    names = list(dict.fromkeys([DEFAULT_QUEUE, *(pair.queue for pair in all_pairs().values())]))
    settings = get_settings()
    if not settings.celery_broker_url.startswith("amqp://"):
        return [Queue(name) for name in names]
    arguments = {"x-queue-type": settings.amqp_queue_type}
    return [Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=arguments) for name in names]


def broker_countdown(seconds: float | None) -> float | None:
    """A countdown the broker can carry. On quorum queues a countdown waits in RabbitMQ's
    delay queues, whose levels count whole seconds: Celery turns the countdown into an int and
    refuses anything under one second, and inside a task's retry that refusal rejects the
    message, so a 0.25 s retry would be dropped and its record left for the sweeper. There a
    countdown is rounded up to whole seconds, at least one; elsewhere it is kept as it is."""
    if not seconds or seconds <= 0:
        return seconds
    from mlconnector.settings import get_settings

    settings = get_settings()
    if settings.celery_broker_url.startswith("amqp://") and settings.amqp_queue_type == "quorum":
        return float(max(1, math.ceil(seconds)))
    return seconds


# A message that waited in RabbitMQ's delay queues arrives with its routing key behind one
# binary digit per delay level ("0.1.0. ... .<queue>").
_DELAY_LEVELS = re.compile(r"^(?:[01]\.){%d}" % MAX_NUMBER_OF_BITS_TO_USE)


def home_queue(routing_key: str | None) -> str | None:
    """The fleet queue a delivery's routing key names, or None. A retry is sent with the
    routing key it was delivered with but no queue, and Celery then puts it on the default
    queue (with RabbitMQ's delayed delivery it is routed there too): a pair's retries would
    leave the pair's queue and its workers."""
    if not routing_key:
        return None
    name = _DELAY_LEVELS.sub("", routing_key, count=1)
    return name if name in app.amqp.queues else None


def build_beat_schedule() -> dict[str, dict[str, Any]]:
    """Beat's fixed entries; the polls are the PollPlan's (see IntegrationScheduler)."""
    return {
        "sweep": {"task": "mlconnector.sweep", "schedule": SWEEP_EVERY_SECONDS},
        "alerts": {"task": "mlconnector.send_alerts", "schedule": ALERT_EVERY_SECONDS},
    }


def create_app() -> Celery:
    app = Celery("mlconnector")
    app.config_from_object("celeryconfig")
    app.conf.task_queues = broker_queues()
    app.conf.task_default_queue = DEFAULT_QUEUE
    app.conf.imports = ("mlconnector.tasks",)
    app.conf.beat_scheduler = "mlconnector.celery_app:IntegrationScheduler"
    return app


def reload_config() -> None:
    """Read the settings again into the running app: the broker, its queue declarations and
    celeryconfig's values. A process that changes its environment after import (a test for
    each broker, a benchmark's fleet) calls this; the app drops the connection pools,
    declarations and routes it made for the previous broker (kombu keys its shared pools by
    connection, so old ones stay usable by whoever holds them)."""
    import importlib

    import celeryconfig

    importlib.reload(celeryconfig)
    app.conf.update({k: getattr(celeryconfig, k) for k in dir(celeryconfig) if k.islower() and not k.startswith("_")})
    app.conf.task_queues = broker_queues()
    for cached in ("queues", "default_queue", "router"):
        app.amqp.__dict__.pop(cached, None)
    app._pool = None
    app.amqp._producer_pool = None


class IntegrationScheduler(Scheduler):
    """Beat: the sweeper and alerts as Celery entries, and every enabled integration's polls
    from a PollPlan (spread over each interval, refreshed incrementally every minute).

    Kept in memory: a missed tick is harmless (polls catch up from their watermark), and
    a poll takes a row lock on its watermark, so a duplicate tick does no harm either.
    """

    def setup_schedule(self) -> None:
        from mlconnector.poll_schedule import PollPlan

        self.install_default_entries(self.data)
        self.merge_inplace(build_beat_schedule())
        self.polls = PollPlan()
        self._refresh_polls()

    def _refresh_polls(self) -> None:
        from mlconnector.db.session import session_scope

        try:
            with session_scope() as session:
                self.polls.refresh(session)
        except Exception as error:  # no database yet (first start), or it is away: the plan as it was
            beat_log.warning("poll schedule not refreshed: %s", error)
        self._refreshed = time.monotonic()

    def _send_polls(self) -> None:
        due = self.polls.due()
        if not due:
            return
        try:
            producer = self.producer
            for spec in due:
                beat_log.info("Scheduler: Sending due task %s (mlconnector.poll)", spec.name)
                self.app.send_task("mlconnector.poll", args=(spec.integration_id, spec.flow), queue=spec.queue,
                                   producer=producer)
        except Exception as error:  # the broker is away: these polls run at their next time
            beat_log.error("could not send polls: %s", error)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() - getattr(self, "_refreshed", 0.0) > SCHEDULE_REFRESH_SECONDS:
            self._refresh_polls()
        self._send_polls()
        wait = min(super().tick(*args, **kwargs), SCHEDULE_REFRESH_SECONDS)
        until_poll = self.polls.seconds_until_next()
        return wait if until_poll is None else min(wait, until_poll)


app = create_app()


@worker_init.connect
def _queues_declarable(**_: Any) -> None:
    """On RabbitMQ, stop a worker whose queues the broker holds declared otherwise with one
    line and the next step, before Celery meets the refusal (see broker_declarations)."""
    from mlconnector.settings import get_settings

    url = get_settings().celery_broker_url
    if not url.startswith("amqp://"):
        return
    from mlconnector.broker_declarations import declaration_problem

    queues = app.amqp.queues  # narrowed to the worker's -Q by the time this signal is sent
    problem = declaration_problem(url, (queues.consume_from or queues).values())
    if problem:
        from mlconnector.logging import configure_logging

        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)  # Celery sets up its logging after this signal
        get_logger("mlconnector.worker").critical(problem)
        raise SystemExit(1)


@worker_process_init.connect
def _fresh_connections(**_: Any) -> None:
    """Each forked worker process opens its own database and HTTP connections."""
    from mlconnector.process_state import reset_process_state

    reset_process_state(settings=False)


@worker_process_shutdown.connect
def _forget_process_metrics(pid: int | None = None, **_: Any) -> None:
    """A pool child that ends drops its live gauges; its counts stay in the host's totals."""
    import os

    from mlconnector.fleet_metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())


@worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    """With MLCONNECTOR_WORKER_METRICS_PORT set, the worker's main process serves the host's
    process metrics (vendor calls, task outcomes, token refreshes, rate-limit waits)."""
    from mlconnector.settings import get_settings

    port = get_settings().worker_metrics_port
    if port:
        from mlconnector.fleet_metrics import serve_worker_metrics

        serve_worker_metrics(port)


@setup_logging.connect
def _one_log_format(loglevel: Any = None, **_: Any) -> None:
    """Celery's loggers (and kombu's, and every task's) use the platform's renderer instead of
    Celery's own: one format across the fleet, JSON lines in production. The level is the
    worker's --loglevel, as a Celery operator expects; the format MLCONNECTOR_LOG_FORMAT."""
    import logging

    from mlconnector.logging import configure_logging
    from mlconnector.settings import get_settings

    settings = get_settings()
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else (loglevel or settings.log_level)
    level = str(level).upper()
    configure_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else settings.log_level,
                      settings.log_format)


@inspect_command()
def key_fingerprints(state: Any, **_: Any) -> dict[str, Any]:
    """The encryption keys this worker was started with (fingerprints, newest first): `keys
    rotate` asks every worker, and warns about one not restarted with the new key list."""
    from mlconnector.settings import SettingsError, get_settings
    from mlconnector.vault import fingerprints

    try:
        return {"keys": fingerprints(get_settings().fernet_keys())}
    except SettingsError as error:
        return {"keys": [], "error": str(error)}
