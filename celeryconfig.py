"""Celery settings for the fleet, from the environment (see mlconnector/settings.py).

The values encode the invariants in ARCHITECTURE.md: a task is acknowledged only after it
ran (acks_late) and is re-queued if its worker dies; each worker holds one task at a time;
JSON only; every task has time limits; and the broker's visibility timeout exceeds the
longest task plus the longest retry countdown, so Redis never re-delivers a task that is
still legitimately waiting or running.
"""

from __future__ import annotations

from mlconnector.settings import get_settings

_settings = get_settings()

TASK_SOFT_TIME_LIMIT = 240  # seconds; a record that takes longer is stuck, not slow
TASK_TIME_LIMIT = 300  # hard kill shortly after the soft limit
LONGEST_COUNTDOWN = 60  # retry countdowns stay short; longer waits use next_attempt_at
VISIBILITY_TIMEOUT = 2 * (TASK_TIME_LIMIT + LONGEST_COUNTDOWN)

broker_url = _settings.celery_broker_url or "memory://"
result_backend = _settings.celery_result_backend or None
task_always_eager = _settings.embedded
task_eager_propagates = True
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
worker_pool = "prefork"
task_soft_time_limit = TASK_SOFT_TIME_LIMIT
task_time_limit = TASK_TIME_LIMIT
# A poll is not a record: a backfill's first poll pages through every document of the period
# and must not be killed at a record's limit and started again from the same position for
# ever. A copy the broker re-delivers meanwhile (after VISIBILITY_TIMEOUT) finds the flow's
# watermark row locked by the running poll and skips.
task_annotations = {"mlconnector.poll": {"soft_time_limit": _settings.poll_time_limit_seconds,
                                         "time_limit": _settings.poll_time_limit_seconds + 60}}
task_ignore_result = True
broker_transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
broker_connection_retry_on_startup = True
task_default_queue = "mlconnector"
# Task events cost three Redis publishes per task. Flower switches them on (it broadcasts
# enable_events every few seconds while it runs), so workers pay for them only while watched.
worker_send_task_events = False
task_send_sent_event = False  # a second Redis publish per task; Flower sees tasks once received
timezone = "UTC"
enable_utc = True
