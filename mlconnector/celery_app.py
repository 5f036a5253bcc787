"""The Celery application: configured from celeryconfig.py, one queue per pair, and a
beat schedule built from the enabled integrations.

Worker:  celery -A mlconnector.celery_app worker --loglevel INFO
Beat:    celery -A mlconnector.celery_app beat --loglevel INFO
"""

from __future__ import annotations

from typing import Any

import time

from celery import Celery
from celery.beat import Scheduler
from celery.signals import setup_logging, worker_process_init, worker_process_shutdown, worker_ready
from celery.worker.control import inspect_command
from kombu import Queue

from mlconnector.flows import all_pairs

DEFAULT_QUEUE = "mlconnector"
SWEEP_EVERY_SECONDS = 30.0  # how soon lost work comes back after a broker failure
ALERT_EVERY_SECONDS = 60.0  # alert summaries: one message per minute at most, per integration
SCHEDULE_REFRESH_SECONDS = 60.0  # integrations added or disabled reach beat within a minute


def _queues() -> list[Queue]:
    return [Queue(DEFAULT_QUEUE)] + [Queue(pair.queue) for pair in all_pairs().values()]


def build_beat_schedule() -> dict[str, dict[str, Any]]:
    """Sweeper and alerts always; one poll entry per enabled integration's polled flow."""
    schedule: dict[str, dict[str, Any]] = {
        "sweep": {"task": "mlconnector.sweep", "schedule": SWEEP_EVERY_SECONDS},
        "alerts": {"task": "mlconnector.send_alerts", "schedule": ALERT_EVERY_SECONDS},
    }
    try:
        from mlconnector.db.session import session_scope
        from mlconnector.integrations import list_integrations

        with session_scope() as session:
            integrations = list_integrations(session, enabled_only=True)
    except Exception:  # no database yet (first start): sweeper only, polls on next beat start
        return schedule
    pairs = all_pairs()
    for integration in integrations:
        pair = pairs.get(integration.pair)
        if pair is None:
            continue
        try:
            overrides = pair.parse_config(integration.config or {}).poll_seconds
        except ValueError:  # a config that no longer validates: its polls wait for `integrations set-config`
            continue
        for flow in pair.flows:
            every = overrides.get(flow.name, flow.poll_seconds)
            if every:
                schedule[f"poll:{integration.id}:{flow.name}"] = {
                    "task": "mlconnector.poll",
                    "schedule": float(every),
                    "args": (integration.id, flow.name),
                    "options": {"queue": pair.queue},
                }
    return schedule


def create_app() -> Celery:
    app = Celery("mlconnector")
    app.config_from_object("celeryconfig")
    app.conf.task_queues = _queues()
    app.conf.task_default_queue = DEFAULT_QUEUE
    app.conf.imports = ("mlconnector.tasks",)
    app.conf.beat_scheduler = "mlconnector.celery_app:IntegrationScheduler"
    return app


class IntegrationScheduler(Scheduler):
    """Beat's schedule is the enabled integrations' flows, re-read every minute.

    Kept in memory: a missed tick is harmless (polls catch up from their watermark), and
    a poll takes a row lock on its watermark, so a duplicate tick does no harm either.
    """

    def setup_schedule(self) -> None:
        self.install_default_entries(self.data)
        self.merge_inplace(build_beat_schedule())
        self._refreshed = time.monotonic()

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if time.monotonic() - getattr(self, "_refreshed", 0.0) > SCHEDULE_REFRESH_SECONDS:
            self.merge_inplace(build_beat_schedule())
            self._refreshed = time.monotonic()
        return min(super().tick(*args, **kwargs), SCHEDULE_REFRESH_SECONDS)


app = create_app()


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
