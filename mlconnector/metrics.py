"""Prometheus metrics with fixed labels, around every outbound call and every task."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "mlconnector_http_requests_total",
    "Outbound vendor API calls",
    ["vendor", "endpoint", "status"],
)
HTTP_LATENCY = Histogram(
    "mlconnector_http_request_seconds",
    "Outbound vendor API call latency",
    ["vendor", "endpoint"],
)
HTTP_RETRIES = Counter(
    "mlconnector_http_retries_total", "Outbound calls retried after a transient error", ["vendor"]
)
TOKEN_REFRESHES = Counter(
    "mlconnector_token_refreshes_total", "Token requests made to vendors", ["vendor", "outcome"]
)
RATE_LIMIT_WAIT = Histogram(
    "mlconnector_rate_limit_wait_seconds", "Time spent waiting on the shared rate limiter", ["vendor"]
)
TASKS = Counter(
    "mlconnector_tasks_total", "Task runs by outcome", ["pair", "flow", "outcome"]
)
TASK_LATENCY = Histogram(
    "mlconnector_task_seconds", "Task run duration", ["pair", "flow"]
)
WEBHOOKS = Counter(
    "mlconnector_webhooks_total", "Inbound webhooks by outcome", ["vendor", "outcome"]
)
