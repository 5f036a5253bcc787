"""ServiceTitan webhooks: signed deliveries on a thread pool, retried on the vendor's schedule."""

from __future__ import annotations

import collections
import fnmatch
import heapq
import itertools
import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import requests

from sandboxes.servicetitan.vendor import WEBHOOK_LOG_LIMIT, WEBHOOK_WORKERS, iso, sign_webhook

if TYPE_CHECKING:
    from sandboxes.servicetitan import ServiceTitanSandbox

@dataclass
class Subscription:
    id: str
    url: str
    hmac_key: str | None
    events: tuple[str, ...]
    header: str
    encoding: str

    def wants(self, event_type: str) -> bool:
        return any(fnmatch.fnmatchcase(event_type, pattern) for pattern in self.events)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "events": list(self.events), "header": self.header,
                "encoding": self.encoding, "signed": bool(self.hmac_key)}


@dataclass
class Delivery:
    id: int
    subscription: Subscription
    event_id: str
    event_type: str
    body: bytes
    generation: int
    duplicate: bool = False
    state: str = "pending"  # pending | retrying | delivered | failed | dropped
    attempts: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "subscription_id": self.subscription.id, "url": self.subscription.url,
                "event_id": self.event_id, "event_type": self.event_type, "state": self.state,
                "duplicate": self.duplicate, "attempts": list(self.attempts)}


class WebhookHub:
    """Signed deliveries on a thread pool, retried on the vendor's schedule, never blocking."""

    def __init__(self, sandbox: "ServiceTitanSandbox", seed: int) -> None:
        self._sandbox = sandbox
        self._cond = threading.Condition()
        self._subs: dict[str, Subscription] = {}
        self._log: collections.deque[Delivery] = collections.deque(maxlen=WEBHOOK_LOG_LIMIT)
        self._retries: list[tuple[float, int, Delivery]] = []
        self._pending = 0
        self._generation = 0
        self._ids = itertools.count(1)
        self._rng = random.Random(seed + 3)
        # Threads start on the first delivery, not here.
        self._pool = ThreadPoolExecutor(max_workers=WEBHOOK_WORKERS, thread_name_prefix="st-webhook")
        self._scheduler: threading.Thread | None = None
        self._local = threading.local()

    # -- subscriptions
    def subscribe(self, url: str, hmac_key: str | None, events: Iterable[str], header: str, encoding: str) -> str:
        sub = Subscription(f"wh_{uuid.uuid4().hex[:12]}", url, hmac_key or None, tuple(events), header, encoding)
        with self._cond:
            self._subs[sub.id] = sub
        return sub.id

    def unsubscribe(self, sub_id: str) -> bool:
        with self._cond:
            return self._subs.pop(sub_id, None) is not None

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"subscriptions": [s.describe() for s in self._subs.values()],
                    "deliveries": [d.describe() for d in self._log], "pending": self._pending}

    # -- events
    def emit(self, event_type: str, tenant_id: int, data: dict[str, Any]) -> None:
        """Queue one event for every matching subscription; returns at once."""
        with self._cond:
            subs = [s for s in self._subs.values() if s.wants(event_type)]
            if not subs:
                return
            envelope = {"eventId": str(uuid.uuid4()), "eventType": event_type, "tenantId": tenant_id,
                        "createdOn": iso(self._sandbox.clock.now_us()), "data": data}
            body = json.dumps(envelope, separators=(",", ":")).encode()
            faults = self._sandbox.faults
            stats = self._sandbox.stats
            for sub in subs:
                copies = [Delivery(next(self._ids), sub, envelope["eventId"], event_type, body, self._generation)]
                self._log.append(copies[0])
                if faults.webhook_drop_rate and self._rng.random() < faults.webhook_drop_rate:
                    copies[0].state = "dropped"
                    stats.bump("webhooks_dropped")
                    continue
                if faults.webhook_duplicate_rate and self._rng.random() < faults.webhook_duplicate_rate:
                    copies.append(Delivery(next(self._ids), sub, envelope["eventId"], event_type, body,
                                           self._generation, duplicate=True))
                    self._log.append(copies[1])
                    stats.bump("webhooks_duplicated")
                for item in copies:
                    self._pending += 1
                    stats.bump("webhooks_emitted")
                    self._pool.submit(self._attempt, item)

    def wait_idle(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._pending == 0, timeout)

    def retry_now(self) -> None:
        """Make every scheduled retry due now (tests that do not want to wait)."""
        with self._cond:
            self._retries = [(0.0, n, d) for _, n, d in self._retries]
            heapq.heapify(self._retries)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._generation += 1
            self._subs.clear()
            self._log.clear()
            self._retries.clear()
            self._pending = 0
            self._cond.notify_all()

    # -- delivery machinery
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _attempt(self, delivery: Delivery) -> None:
        sub = delivery.subscription
        headers = {"Content-Type": "application/json"}
        if sub.hmac_key:
            headers[sub.header] = sign_webhook(sub.hmac_key, delivery.body, sub.encoding)
        status: int | None = None
        error: str | None = None
        started = self._sandbox.clock.now_us()
        try:
            response = self._session().post(sub.url, data=delivery.body, headers=headers,
                                             timeout=self._sandbox.webhook_timeout)
            status = response.status_code
            response.close()
        except requests.RequestException as exc:
            error = type(exc).__name__
        stats = self._sandbox.stats
        with self._cond:
            if delivery.generation != self._generation:
                return
            delivery.attempts.append({"at": iso(started), "status": status, "error": error})
            if status is not None and 200 <= status < 300:
                delivery.state = "delivered"
                stats.bump("webhooks_sent")
                self._finish()
                return
            stats.bump("webhooks_failed")
            schedule = self._sandbox.webhook_retry_schedule
            made = len(delivery.attempts)
            if made <= len(schedule):
                delay = schedule[made - 1] * self._sandbox.webhook_retry_scale
                delivery.state = "retrying"
                heapq.heappush(self._retries, (time.monotonic() + delay, delivery.id, delivery))
                self._ensure_scheduler()
                self._cond.notify_all()
            else:
                delivery.state = "failed"
                stats.bump("webhooks_given_up")
                self._finish()

    def _finish(self) -> None:
        self._pending -= 1
        self._cond.notify_all()

    def _ensure_scheduler(self) -> None:
        if self._scheduler is None or not self._scheduler.is_alive():
            self._scheduler = threading.Thread(target=self._run_scheduler, name="st-webhook-retries", daemon=True)
            self._scheduler.start()

    def _run_scheduler(self) -> None:
        while True:
            with self._cond:
                while not self._retries:
                    self._cond.wait()
                due, _, delivery = self._retries[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._retries)
                if delivery.generation != self._generation:
                    continue
            self._pool.submit(self._attempt, delivery)

