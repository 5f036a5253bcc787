"""Chaos: received ServiceTitan purchase orders become Epicor AP invoices exactly once while
the fleet is knocked about.

    python -m benchmarks.bench_chaos [orders] [--broker redis|rabbitmq]

The real fleet for servicetitan-epicor: two Celery worker processes, beat, the gunicorn
receiver, PostgreSQL and Redis (the benchmark's own database, `fleet.REDIS_URL`), the vendor
sandboxes in a process of their own. The broker is that Redis database, or with `--broker
rabbitmq` RabbitMQ quorum queues in a virtual host of the run's own on 127.0.0.1:5672
(deleted at the end; every process of the fleet and this one on it), Redis staying the
shared rate limiter and token cache; the figures then go to results/chaos_rabbitmq.json.
Vendors are synced first (untimed, as after onboarding). Then `orders` purchase orders are received in ServiceTitan at ORDER_RATE per
second (each creates its inventory bill and two webhooks) while a storm lasts:

- ServiceTitan duplicates ~25% and drops ~20% of its webhook deliveries (sandbox faults);
- both vendors answer ~5% of API calls with a 5xx (500, 502, 503 in turn), and ~10% with a
  429: the sandboxes have a 429 *burst* control, not a 429 rate, so every TICK_SECONDS a
  burst as long as that share of the calls made since the last tick is armed;
- Epicor loses the answer of a few UpdateMaster calls (it acts, then answers 504);
- both vendors revoke every token they issued, once;
- one Celery pool child is SIGKILLed; one worker main process is SIGKILLed (its pool goes
  with it, as its container would end it) and a new worker started in its place;
- the broker's Redis database is flushed once (FLUSHDB of the benchmark's own db only); on
  RabbitMQ every queue of the vhost (the celery_delayed_* levels too) is purged, every
  message waiting in it lost, and the Redis database is flushed as well (the limiter and
  token cache it holds there too);
- a few hundred malformed requests hit the receiver (the fuzz section).

Beat's catch-up poll (every CATCH_UP_POLL_SECONDS, set through the integration's
`poll_seconds`) and sweeper (the platform's SWEEP_EVERY_SECONDS, with sweep_after_seconds
shortened to SWEEP_AFTER_SECONDS so lost work comes back within the run) find what was
dropped or lost. The storm lasts as long as the drive; then the vendors behave and the
fleet drains (`drain_s`: from the last order to every bill final and nothing pending). Every
bill ServiceTitan holds is then checked in Epicor twice, in the sandbox's own tables and
through the Epicor connector's reads: exactly one AP invoice carrying it, of the right
vendor, amount and lines. Nothing is asserted: what went wrong is counted, with the ledger
rows and audit trail of the bills concerned under `evidence`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Callable

import requests

from benchmarks import fleet
from benchmarks import rabbitmq as amqp
from benchmarks.common import write_result

WORKER_PROCESSES = 2
WORKER_CONCURRENCY = 2  # pool children per worker process: four in all on a 2-core machine
GUNICORN_WORKERS = 2
ORDER_RATE = 4.0  # received purchase orders per second while driving
GROUP = "BCHAOS"  # the Epicor AP invoice group the bench integration writes to

WEBHOOK_DUPLICATE_RATE = 0.25
WEBHOOK_DROP_RATE = 0.20
RATE_429 = 0.10  # share of each vendor's API calls answered 429
RATE_5XX = 0.05  # share of each vendor's API calls answered 5xx
ERROR_STATUSES = (500, 502, 503)  # taken in turn, a tick each: not every 5xx means "not acted on"
LOST_ANSWER_STATUS = 504  # an acted-upon UpdateMaster answered as a gateway timeout
TICK_SECONDS = 0.25  # how often the 429 bursts are sized to the calls since the last tick, and the 5xx changes
CATCH_UP_POLL_SECONDS = 10.0  # beat's inventory_bills poll; the pair's default is 300
SWEEP_AFTER_SECONDS = 10  # the sweeper re-sends work idle this long; the default (120) outlasts the run
SWEEP_EVERY_SECONDS = 30.0  # the platform's sweeper cadence (mlconnector.celery_app), not changed here
FUZZ_REQUESTS = 300
BROKERS = ("redis", "rabbitmq")

FINAL = ("written", "skipped", "held", "failed")
UNFINISHED = ("pending", "running")
EVIDENCE_BILLS = 8  # problem bills whose ledger row and audit trail are kept in the result
EVIDENCE_LINES = 25
CENT = Decimal("0.01")


# ---- sandboxes' control API ---------------------------------------------------------------


def _stats(url: str) -> dict[str, Any]:
    return requests.get(f"{url}/_sandbox/stats", timeout=10).json()


def _set_faults(url: str, **faults: Any) -> dict[str, Any]:
    response = requests.post(f"{url}/_sandbox/faults", json=faults, timeout=10)
    response.raise_for_status()
    return response.json()


def _entities(url: str, entity: str) -> list[dict[str, Any]]:
    response = requests.get(f"{url}/_sandbox/entities/{entity}", timeout=60)
    response.raise_for_status()
    return response.json()


class Storm(threading.Thread):
    """The vendors' bad weather while it runs: ServiceTitan duplicates and drops webhook
    deliveries; both vendors answer about RATE_5XX of their API calls with a 5xx (500, 502
    and 503 in turn) and about RATE_429 with a 429. The sandboxes offer a 429 *burst*, not a
    rate, so every TICK_SECONDS a burst as long as that share of the calls made since the
    previous tick is armed. `stop()` clears every fault."""

    def __init__(self, urls: dict[str, str]) -> None:
        super().__init__(name="chaos-storm", daemon=True)
        self.urls = urls
        self._halt = threading.Event()

    def start(self) -> None:
        error_rate = RATE_5XX / (1 - RATE_429)  # drawn only for calls a 429 burst did not take
        for name, url in self.urls.items():
            webhooks = ({"webhook_duplicate_rate": WEBHOOK_DUPLICATE_RATE, "webhook_drop_rate": WEBHOOK_DROP_RATE}
                        if name == "st" else {})
            _set_faults(url, error_rate=error_rate, error_status=ERROR_STATUSES[0], retry_after=1, **webhooks)
        super().start()

    def run(self) -> None:
        last = {name: _stats(url)["total"] for name, url in self.urls.items()}
        owed = {name: 0.0 for name in self.urls}
        tick = 0
        while not self._halt.wait(TICK_SECONDS):
            tick += 1
            for name, url in self.urls.items():
                try:
                    total = _stats(url)["total"]
                    owed[name] += RATE_429 * max(0, total - last[name])
                    last[name] = total
                    whole = int(owed[name])
                    left = requests.get(f"{url}/_sandbox/faults", timeout=10).json().get("burst_429", 0)
                    _set_faults(url, burst_429=left + whole, error_status=ERROR_STATUSES[tick % len(ERROR_STATUSES)])
                    owed[name] -= whole
                except requests.RequestException:
                    continue

    def stop(self) -> dict[str, dict[str, Any]]:
        """Clear every fault; each vendor's request statistics as the storm ends."""
        self._halt.set()
        self.join(timeout=10)
        for url in self.urls.values():
            _set_faults(url, replace=True)
        return {name: _stats(url) for name, url in self.urls.items()}


# ---- the chaos schedule ---------------------------------------------------------------------


@dataclass
class Chaos:
    """Faults done to the fleet itself, each at a share of the drive, run in one thread."""

    env: dict[str, str]
    workers: list[fleet.Process]
    urls: dict[str, str]
    timeline: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    vhost: str | None = None  # the RabbitMQ vhost the fleet's broker is, or None on Redis

    def note(self, action: str, **detail: Any) -> None:
        self.counts[action] = self.counts.get(action, 0) + 1
        self.timeline.append({"at_s": round(time.perf_counter() - self.started, 2), "action": action, **detail})

    def revoke_tokens(self) -> None:
        for name, url in self.urls.items():
            requests.post(f"{url}/_sandbox/revoke-tokens", timeout=10).raise_for_status()
            self.note("token_revocation", vendor=name)

    def lose_answer(self, skip: int) -> None:
        requests.post(f"{self.urls['ep']}/_sandbox/epicor/lost-answers", timeout=10, json={
            "count": 1, "skip": skip, "path_contains": "UpdateMaster", "status": LOST_ANSWER_STATUS}).raise_for_status()
        self.note("lost_answer_armed", skip=skip)

    def kill_pool_child(self) -> None:
        pid = self.workers[0].kill_child()
        self.note("kill_pool_child", worker_pid=self.workers[0].pid, child_pid=pid)

    def kill_worker_main(self) -> None:
        victim = self.workers[1]
        victim.kill_main()
        self.note("kill_worker_main", worker_pid=victim.pid)
        began = time.perf_counter()
        replacement = fleet.start_worker(self.env, WORKER_CONCURRENCY)
        self.workers.append(replacement)
        self.note("worker_restarted", worker_pid=replacement.pid, seconds=round(time.perf_counter() - began, 2))

    def flush_broker(self) -> None:
        import redis

        client = redis.Redis.from_url(fleet.REDIS_URL)
        if self.vhost is not None:  # every message waiting in the broker lost, then the limiter and tokens
            purged = amqp.purge(self.vhost)
            keys = client.dbsize()
            client.flushdb()
            self.note("broker_flush", **purged, vhost=self.vhost, keys_dropped=keys,
                      redis=fleet.REDIS_URL.rsplit("@", 1)[-1])
            return
        keys = client.dbsize()
        client.flushdb()  # the benchmark's own database: never FLUSHALL, never another db
        self.note("broker_flush", keys_dropped=keys, redis=fleet.REDIS_URL.rsplit("@", 1)[-1])

    def schedule(self) -> list[tuple[float, Callable[[], None]]]:
        return [
            (0.10, lambda: self.lose_answer(skip=3)),
            (0.20, self.revoke_tokens),
            (0.30, lambda: self.lose_answer(skip=5)),
            (0.35, self.kill_pool_child),
            (0.50, self.flush_broker),
            (0.55, lambda: self.lose_answer(skip=2)),
            (0.65, self.kill_worker_main),
            (0.80, lambda: self.lose_answer(skip=4)),
        ]

    def run(self, drive_seconds: float) -> threading.Thread:
        self.started = time.perf_counter()

        def play() -> None:
            for share, action in self.schedule():
                pause = self.started + share * drive_seconds - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                try:
                    action()
                except Exception as error:  # a fault that could not be done is reported, not fatal
                    self.note("chaos_error", error=f"{type(error).__name__}: {error}")

        thread = threading.Thread(target=play, name="chaos", daemon=True)
        thread.start()
        return thread


# ---- receiver fuzz ----------------------------------------------------------------------------


SIGNATURE = b"X-ServiceTitan-Signature"
FUZZ_SHARES = {  # share of FUZZ_REQUESTS per case (each variant at least once)
    "bad_signature": 0.2, "bad_json": 0.2, "oversized": 0.01, "url_nul": 0.07, "url_non_ascii": 0.08,
    "header_nul": 0.07, "header_non_ascii": 0.08, "long_event_id": 0.12, "deep_nesting": 0.1, "nul_in_body": 0.06,
}


def _mac(body: bytes, key: str = fleet.HMAC_KEY) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest().encode()


def _event(**overrides: Any) -> bytes:
    """A well-formed event of a type no flow takes (the worker ignores it)."""
    envelope = {"eventId": f"fuzz-{uuid.uuid4().hex}", "eventType": "fuzz.probe", "tenantId": 1,
                "createdOn": "2024-01-01T00:00:00.000Z", "data": {"id": 1}}
    envelope.update(overrides)
    return json.dumps(envelope, separators=(",", ":")).encode()


def _fuzz_event(data: bytes) -> bytes:
    """A fuzz event whose data is given as raw JSON text (what json.dumps would not write)."""
    return b'{"eventId":"fuzz-%s","eventType":"fuzz.probe","data":%s}' % (uuid.uuid4().hex.encode(), data)


def _nested(depth: int, kind: str) -> bytes:
    inner = b"[" * depth + b"]" * depth if kind == "array" else b'{"a":' * depth + b"1" + b"}" * depth
    return _fuzz_event(b'{"deep":' + inner + b"}")


def _raw(path: bytes, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, *, sign: bool = True,
         chunked: bool = False, length: int | None = None) -> bytes:
    """One HTTP/1.1 request as bytes, so anything can go anywhere: signed with the bench key
    unless `sign` is false, framed by Content-Length (`length` may lie) or chunked."""
    head = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close",
            b"Content-Type: application/json"]
    if sign:
        head.append(SIGNATURE + b": " + _mac(body))
    head += [name + b": " + value for name, value in headers or []]
    if chunked:
        head.append(b"Transfer-Encoding: chunked")
        step = 64 * 1024
        payload = b"".join(b"%x\r\n" % len(body[i:i + step]) + body[i:i + step] + b"\r\n"
                           for i in range(0, len(body), step)) + b"0\r\n\r\n"
    else:
        head.append(b"Content-Length: %d" % (len(body) if length is None else length))
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


def fuzz_cases(path: str, limit_bytes: int) -> list[tuple[str, str, bytes]]:
    """(case, variant, request bytes): about FUZZ_REQUESTS malformed or hostile requests."""
    own = path.encode()
    base = own.rsplit(b"/", 1)[0]  # the receiver's path without the integration id
    too_big = b'{"eventType":"fuzz.probe","pad":"' + b"x" * (limit_bytes + 64 * 1024) + b'"}'

    def post(body: bytes | None = None, headers: list[tuple[bytes, bytes]] | None = None, *, to: bytes = own,
             **framing: Any) -> bytes:
        return _raw(to, _event() if body is None else body, headers, **framing)

    def signed_as(value: Callable[[bytes], bytes], body: bytes | None = None) -> bytes:
        body = _event() if body is None else body
        return post(body, [(SIGNATURE, value(body))], sign=False)

    variants: dict[str, list[tuple[str, Callable[[], bytes]]]] = {
        "bad_signature": [
            ("missing", lambda: post(sign=False)),
            ("empty", lambda: signed_as(lambda _: b"")),
            ("wrong_key", lambda: signed_as(lambda body: _mac(body, "another-key"))),
            ("other_body", lambda: signed_as(lambda _: _mac(_event()))),
            ("truncated", lambda: signed_as(lambda body: _mac(body)[:32])),
            ("not_hex", lambda: signed_as(lambda _: b"zz" * 32)),
            ("base64_of_digest", lambda: signed_as(
                lambda body: base64.b64encode(hmac.new(fleet.HMAC_KEY.encode(), body, hashlib.sha256).digest()))),
            ("signed_then_changed", lambda: signed_as(lambda _: _mac(_event(data={"id": 2})))),
            ("9k_header", lambda: signed_as(lambda _: b"a" * 9000)),
            ("second_wrong_header", lambda: post(headers=[(SIGNATURE, b"0" * 64)])),
        ],
        "bad_json": [
            ("open_brace", lambda: post(b"{")),
            ("text", lambda: post(b"not json at all")),
            ("truncated", lambda: post(_event()[:-7])),
            ("invalid_utf8", lambda: post(b'{"eventType":"fuzz.probe","x":"\xff\xfe"}')),
            ("utf16", lambda: post(_event().decode().encode("utf-16"))),
            ("array", lambda: post(b"[1,2,3]")),
            ("null", lambda: post(b"null")),
            ("no_event_type", lambda: post(b'{"eventId":"x","data":{}}')),
            ("nan", lambda: post(_fuzz_event(b'{"x":NaN}'))),
            ("infinity", lambda: post(_fuzz_event(b'{"x":1e999}'))),
            ("lone_surrogate", lambda: post(_fuzz_event(b'{"x":"\\ud800"}'))),
            ("empty", lambda: post(b"")),
        ],
        "oversized": [
            ("content_length", lambda: post(too_big)),
            ("chunked", lambda: post(too_big, chunked=True)),
            ("declared_only", lambda: post(length=10 * limit_bytes)),  # says 10x the limit, sends a small event
        ],
        "url_nul": [
            ("percent_00", lambda: post(to=own + b"%00")),
            ("percent_00_id", lambda: post(to=base + b"/%00")),
            ("raw_nul", lambda: post(to=own + b"\x00")),
            ("percent_00_query", lambda: post(to=own + b"?x=%00")),
        ],
        "url_non_ascii": [
            ("percent_utf8", lambda: post(to=base + b"/b%C3%A9nch")),
            ("raw_utf8", lambda: post(to=base + "/bénch".encode())),
            ("raw_latin1", lambda: post(to=base + b"/b\xe9nch")),
            ("percent_ff", lambda: post(to=base + b"/%FF%FE")),
            ("emoji", lambda: post(to=base + b"/%F0%9F%92%A5")),
        ],
        "header_nul": [
            ("signature_nul", lambda: signed_as(lambda body: _mac(body) + b"\x00")),
            ("other_header_nul", lambda: post(headers=[(b"X-Fuzz", b"a\x00b")])),
            ("name_nul", lambda: post(headers=[(b"X-Fu\x00zz", b"a")])),
        ],
        "header_non_ascii": [
            ("signature_latin1", lambda: signed_as(lambda _: b"\xe9" * 64)),
            ("signature_utf8", lambda: signed_as(lambda _: "é".encode() * 32)),
            ("other_header_utf8", lambda: post(headers=[(b"X-Fuzz", "Ünïcødé".encode())])),
            ("name_non_ascii", lambda: post(headers=[("X-Füzz".encode(), b"1")])),
            ("content_type_utf8", lambda: post(headers=[(b"Content-Type", "application/jsön".encode())])),
        ],
        "long_event_id": [
            *((f"event_id_{n}", lambda n=n: post(_event(eventId="e" * n)))
              for n in (200, 201, 256, 1000, 10_000, 100_000)),
            *((f"event_type_{n}", lambda n=n: post(_event(eventType="fuzz." + "t" * n))) for n in (101, 1000)),
        ],
        "deep_nesting": [
            (f"{kind}_{depth}", lambda depth=depth, kind=kind: post(_nested(depth, kind)))
            for kind in ("array", "object") for depth in (100, 1000, 10_000, 100_000)
        ],
        "nul_in_body": [
            ("data_value", lambda: post(_event(data={"id": 1, "note": "a\u0000b"}))),
            ("data_key", lambda: post(_event(data={"id": 1, "a\u0000": 1}))),
            ("event_id", lambda: post(_event(eventId=f"fuzz-\u0000-{uuid.uuid4().hex}"))),
            ("event_type", lambda: post(_event(eventType="fuzz.\u0000probe"))),
        ],
    }
    cases: list[tuple[str, str, bytes]] = []
    for case, options in variants.items():
        count = max(len(options), round(FUZZ_SHARES[case] * FUZZ_REQUESTS))
        cases += [(case, options[i % len(options)][0], options[i % len(options)][1]()) for i in range(count)]
    random.Random(5).shuffle(cases)
    return cases


def _send(host: str, port: int, data: bytes, timeout: float = 30.0) -> tuple[int | None, bytes]:
    """Send raw bytes, read the answer until the server closes; (status or None, answer)."""
    answer = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:  # the server answered early and closed (e.g. 413 before the body)
            pass
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    match = re.match(rb"HTTP/\d\.\d (\d{3})", answer)
    return (int(match.group(1)) if match else None), answer


def run_fuzz(receiver_url: str, path: str, limit_bytes: int) -> dict[str, Any]:
    host, port = receiver_url.split("//", 1)[1].split(":")
    by_class = {"2xx": 0, "4xx": 0, "5xx": 0, "no_answer": 0}
    by_case: dict[str, dict[str, int]] = {}
    by_status: dict[str, int] = {}
    slowest: dict[str, float] = {}
    server_errors: list[dict[str, Any]] = []
    started = time.perf_counter()
    cases = fuzz_cases(path, limit_bytes)
    for case, variant, data in cases:
        sent = time.perf_counter()
        try:
            status, answer = _send(host, int(port), data)
        except OSError:
            status, answer = None, b""
        took = time.perf_counter() - sent
        slowest[case] = round(max(slowest.get(case, 0.0), took), 3)
        klass = f"{status // 100}xx" if status else "no_answer"
        klass = klass if klass in by_class else "other"
        by_class[klass] = by_class.get(klass, 0) + 1
        by_case.setdefault(case, {})
        by_case[case][klass] = by_case[case].get(klass, 0) + 1
        by_status[str(status)] = by_status.get(str(status), 0) + 1
        if (status is None or status >= 500) and not any(e["variant"] == variant for e in server_errors):
            body = answer.split(b"\r\n\r\n", 1)[-1][:200].decode("utf-8", "replace")
            server_errors.append({"case": case, "variant": variant, "status": status, "answer": body,
                                  "seconds": round(took, 2)})
    return {"requests": len(cases), "by_class": by_class, "by_status": by_status, "by_case": by_case,
            "server_errors": server_errors, "slowest_s_by_case": slowest,
            "seconds": round(time.perf_counter() - started, 2)}


# ---- what ServiceTitan says each bill should become -----------------------------------------


def _money(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0)).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return Decimal("NaN")


def _qty(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value not in (None, "") else 0)).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    except InvalidOperation:
        return Decimal("NaN")


@dataclass(frozen=True)
class Expected:
    bill_id: str
    order_id: str
    st_vendor_id: str
    invoice_num: str
    amount: Decimal
    lines: tuple[tuple[Decimal, Decimal, Decimal], ...]  # (quantity, unit cost, extended cost) in line order
    description: str = ""
    own_description: bool = False  # the description names this bill alone (it has no summary)


def expected_invoice(bill: dict[str, Any]) -> Expected:
    """What an AP invoice of this bill holds, read off the bill alone: a line per item in
    item order, then tax and freight when not zero; the bill's amount."""
    lines = []
    for item in sorted(bill.get("items") or [], key=lambda i: (i.get("order") or 0, i.get("id") or 0)):
        qty, cost = _qty(item.get("quantity")), _money(item.get("cost"))
        lines.append((qty, cost, (qty * cost).quantize(CENT, rounding=ROUND_HALF_UP)))
    for name in ("taxAmount", "shippingAmount"):
        amount = _money(bill.get(name))
        if amount:
            lines.append((_qty(1), amount, amount))
    amount = _money(bill.get("billAmount")) or sum((line[2] for line in lines), Decimal("0"))
    number = (bill.get("referenceNumber") or "").strip() or f"ST-{bill['id']}"
    summary = (bill.get("summary") or "").strip()
    return Expected(str(bill["id"]), str(bill.get("purchaseOrderId")), str((bill.get("vendor") or {}).get("id")),
                    number, amount, tuple(lines), summary or f"ServiceTitan bill {bill['id']}", not summary)


def invoice_differences(want: Expected, vendor_num: int | None, header: dict[str, Any],
                        lines: list[dict[str, Any]]) -> list[str]:
    """How an Epicor invoice (header and lines as plain dicts) differs from the bill's."""
    problems = []
    if vendor_num is not None and int(header.get("VendorNum") or 0) != vendor_num:
        problems.append(f"vendor {header.get('VendorNum')} != {vendor_num}")
    stored = _money(header.get("InvoiceVendorAmt"))
    if stored != want.amount:
        problems.append(f"amount {stored} != {want.amount}")
    have = [(_qty(line.get("VendorQty")), _money(line.get("UnitCost")), _money(line.get("ExtCost")))
            for line in sorted(lines, key=lambda line: int(line.get("InvoiceLine") or 0))]
    if len(have) != len(want.lines):
        problems.append(f"{len(have)} lines != {len(want.lines)}")
    else:
        for number, (got, wanted) in enumerate(zip(have, want.lines), start=1):
            if got != wanted:
                problems.append(f"line {number} {tuple(str(v) for v in got)} != {tuple(str(v) for v in wanted)}")
    return problems


# ---- the ledger --------------------------------------------------------------------------------


def _records(flow: str = "inventory_bills") -> dict[str, Any]:
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.scalars(select(SyncRecord).where(SyncRecord.integration_id == fleet.INTEGRATION,
                                                        SyncRecord.flow == flow)).all()
        return {r.source_id: {"id": r.id, "status": r.status, "deliveries": r.deliveries, "target_id": r.target_id,
                              "last_error": r.last_error, "hold_reason": r.hold_reason,
                              "written_at": r.written_at.timestamp() if r.written_at else None} for r in rows}


def _unfinished() -> tuple[int, int]:
    """Records of any flow still pending or running, and inbound events still pending."""
    from sqlalchemy import func, select

    from mlconnector.db.models import InboundEvent, SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        records = session.scalar(select(func.count()).select_from(SyncRecord).where(SyncRecord.status.in_(UNFINISHED)))
        events = session.scalar(select(func.count()).select_from(InboundEvent).where(InboundEvent.status == "pending"))
    return int(records or 0), int(events or 0)


def _linked_vendors() -> dict[str, int]:
    """ServiceTitan vendor id -> the Epicor VendorNum the vendors flow linked it to."""
    from sqlalchemy import select

    from mlconnector.db.models import Link
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(Link.source_id, Link.target_id).where(
            Link.integration_id == fleet.INTEGRATION, Link.kind == "vendor")).all()
    return {str(source): int(target) for source, target in rows if str(target).isdigit()}


def _events_by_entity() -> tuple[dict[str, int], dict[str, int], int]:
    """Accepted webhooks per entity id ('po:<id>' / 'bill:<id>'), event statuses, duplicates noted."""
    from sqlalchemy import select

    from mlconnector.db.models import InboundEvent
    from mlconnector.db.session import session_scope

    seen: dict[str, int] = {}
    statuses: dict[str, int] = {}
    duplicates = 0
    with session_scope() as session:
        rows = session.execute(select(InboundEvent.event_type, InboundEvent.payload, InboundEvent.status,
                                      InboundEvent.duplicates)
                               .where(InboundEvent.integration_id == fleet.INTEGRATION)).all()
    for event_type, payload, status, dups in rows:
        statuses[status] = statuses.get(status, 0) + 1
        duplicates += dups or 0
        data = (payload or {}).get("data") if isinstance(payload, dict) else None
        entity_id = str((data or {}).get("id")) if isinstance(data, dict) else ""
        kind = ("po" if event_type.startswith("purchase-order.")
                else "bill" if event_type.startswith("inventory-bill.") else "")
        if kind:
            seen[f"{kind}:{entity_id}"] = seen.get(f"{kind}:{entity_id}", 0) + 1
    return seen, statuses, duplicates


def _audit_kinds() -> dict[str, int]:
    from sqlalchemy import func, select

    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return dict(session.execute(select(AuditEvent.kind, func.count()).group_by(AuditEvent.kind)).all())


def _created_twice() -> dict[str, list[int]]:
    """Sync records whose audit trail says the target was created more than once, per flow."""
    from sqlalchemy import func, select

    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.execute(select(AuditEvent.flow, AuditEvent.sync_record_id).where(
            AuditEvent.kind == "written", AuditEvent.message.like("created %"))
            .group_by(AuditEvent.flow, AuditEvent.sync_record_id).having(func.count() > 1)).all()
    out: dict[str, list[int]] = {}
    for flow, record_id in rows:
        out.setdefault(flow or "", []).append(int(record_id))
    return out


def _trail(record_id: int) -> list[str]:
    from mlconnector import audit
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = audit.trail(session, record_id)
        return [f"{row.at:%H:%M:%S.%f}"[:-3] + f" {row.kind}: {row.message}"
                + (f" [{row.http_status}]" if row.http_status else "")
                + (f" error={row.error[:160]}" if row.error else "") for row in rows]


# ---- Epicor's own data --------------------------------------------------------------------------


def _connector_reads(host: fleet.SandboxHost, keys: dict[str, tuple[int, str]]) -> tuple[dict[str, Any], list[str]]:
    """Each bill's invoice as the Epicor connector reads it (GetByID), by its expected key."""
    from connectors import connector_class
    from mlconnector.http.runtime import get_runtime

    _, _, ep_config, ep_creds = fleet.system_settings(host.info("st"), host.info("ep"))
    epicor = connector_class("epicor").create(ep_config, ep_creds, get_runtime())
    found: dict[str, Any] = {}
    errors: list[str] = []
    for bill_id, (vendor_num, invoice_num) in keys.items():
        try:
            invoice = epicor.get_ap_invoice(vendor_num, invoice_num)
        except Exception as error:  # reported: a read the connector cannot make is a finding too
            errors.append(f"bill {bill_id}: {type(error).__name__}: {str(error)[:160]}")
            continue
        if invoice is not None:
            found[bill_id] = (invoice.model_dump(mode="json"), [line.model_dump(mode="json") for line in invoice.lines])
    return found, errors


def _broker_clients() -> int:
    """Connections to the benchmark's Redis database other than this process's own."""
    import redis

    client = redis.Redis.from_url(fleet.REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    return sum(1 for c in client.client_list() if int(c.get("db", -1)) == db) - 1


def _worker_log_errors(processes: list[fleet.Process]) -> dict[str, Any]:
    """Tracebacks in the fleet's logs, and the distinct exception lines that ended them: in
    plain text lines, and inside JSON log entries (see _log_exceptions)."""
    tracebacks = 0
    kinds: dict[str, int] = {}
    for process in processes:
        try:
            text = process.log()
        except OSError:
            continue
        tracebacks += text.count("Traceback (most recent call last)")
        for match in re.finditer(r"^([A-Za-z_][\w.]*(?:Error|Exception|Lost\w*)): ?(.{0,120})", text, re.M):
            key = f"{match.group(1)}: {match.group(2)}".strip()
            kinds[key] = kinds.get(key, 0) + 1
    for key, count in _log_exceptions(processes)["by_exception"].items():
        kinds[key] = kinds.get(key, 0) + count
    top = sorted(kinds.items(), key=lambda kv: -kv[1])[:8]
    return {"tracebacks": tracebacks, "exceptions": dict(top)}


EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(?:Error|Exception|Reject|Exit|Lost\w*)\b")


def _log_exceptions(processes: list[fleet.Process]) -> dict[str, Any]:
    """What ended each traceback in the fleet's JSON logs: per logger and last traceback
    line, how many log entries carried one, a task id of each kind to look it up by, and the
    record ids of the record tasks the worker rejected (their message dropped, not re-queued)."""
    kinds: dict[str, int] = {}
    tasks: dict[str, str] = {}
    rejected: set[int] = set()
    for process in processes:
        try:
            text = process.log()
        except OSError:
            continue
        for line in text.splitlines():
            if not line.startswith("{") or "Traceback" not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            data = entry.get("data") if isinstance(entry.get("data"), dict) else {}
            trace = str(entry.get("exception") or data.get("traceback") or "")
            lines = [part.strip() for part in trace.splitlines()]
            last = next((part for part in reversed(lines) if EXCEPTION_LINE.match(part)),
                        str(entry.get("event") or entry.get("message") or ""))
            key = f"{entry.get('logger')}: {last[:160]}"
            kinds[key] = kinds.get(key, 0) + 1
            if data.get("id"):
                tasks.setdefault(key, f"{data['id']} {data.get('args') or ''}".strip())
            if data.get("description") == "rejected" and str(data.get("args") or "").startswith("("):
                rejected.add(int(str(data["args"])[1:].split(",")[0].strip(")")))
    return {"entries": sum(kinds.values()), "by_exception": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
            "a_task_of_each": tasks, "rejected_record_ids": sorted(rejected)}


# ---- the run -----------------------------------------------------------------------------------


def main(orders: int = 60, broker: str = "redis") -> dict[str, Any]:
    """The run on `broker`: "redis" (the benchmark's Redis db) or "rabbitmq" (a vhost of its own)."""
    if broker not in BROKERS:
        raise ValueError(f"broker must be one of {', '.join(BROKERS)}, not {broker!r}")
    if broker == "redis":
        return _chaos(orders)
    why = amqp.unavailable()
    if why:
        raise RuntimeError(f"chaos_rabbitmq: {why}")
    before = os.environ.get("CELERY_BROKER_URL")
    vhost = amqp.create_vhost()
    try:
        return _chaos(orders, vhost)
    finally:
        try:
            amqp.delete_vhost(vhost)
        finally:  # this process off the deleted vhost, as it was before the run
            if before is None:
                os.environ.pop("CELERY_BROKER_URL", None)
            else:
                os.environ["CELERY_BROKER_URL"] = before
            fleet.reset_process_state()
            from mlconnector.celery_app import reload_config

            reload_config()


def run_rabbitmq(orders: int) -> dict[str, Any]:
    """benchmarks.run's chaos_rabbitmq: the figures, or {"skipped": why} where RabbitMQ cannot be used."""
    why = amqp.unavailable()
    if why:
        print(f"chaos_rabbitmq: skipped: {why}", file=sys.stderr)
        return {"skipped": why}
    return main(orders, "rabbitmq")


def _transport(worker: fleet.Process) -> str:
    """The broker a worker's banner names ("amqp://guest:**@127.0.0.1:5672/<vhost>", ...)."""
    line = next((line for line in worker.log().splitlines() if "transport:" in line), "")
    return line.split("transport:", 1)[-1].strip()


def _on_broker(worker: fleet.Process, vhost: str | None) -> None:
    """On RabbitMQ, stop the run if the worker is not on its vhost."""
    if vhost is not None and not _transport(worker).endswith(f"/{vhost}"):
        raise RuntimeError(f"the worker is not on RabbitMQ vhost {vhost}: {worker.log()[-2000:]}")


def _chaos(orders: int, vhost: str | None = None) -> dict[str, Any]:
    from benchmarks.bench_pipeline import run_flow

    database_url = fleet.create_database()
    services: list[fleet.Process] = []
    workers: list[fleet.Process] = []
    host: fleet.SandboxHost | None = None
    storm: Storm | None = None
    try:
        env = fleet.configure(database_url, broker_url=amqp.url(vhost) if vhost else None)
        env = {**env, "MLCONNECTOR_SWEEP_AFTER_SECONDS": str(SWEEP_AFTER_SECONDS)}
        foreign_clients = _broker_clients()  # anyone else on this Redis db would take the fleet's tasks
        foreign_amqp = amqp.connections(vhost) if vhost else None  # on RabbitMQ: anyone else on the vhost
        fleet.flush_redis()
        host = fleet.SandboxHost({
            "st": ["servicetitan", {"seed": 11, "records": 2, "rate_limit": 0}],
            "ep": ["epicor", {"seed": 11, "records": 6}],
        })
        st, ep = host.url("st"), host.url("ep")
        fleet.create_bench_integration(host.info("st"), host.info("ep"), GROUP, extra_config={
            "poll_seconds": {"inventory_bills": CATCH_UP_POLL_SECONDS}})
        for _ in range(WORKER_PROCESSES):
            workers.append(fleet.start_worker(env, WORKER_CONCURRENCY))
            _on_broker(workers[-1], vhost)
        run_flow("vendors")  # untimed: every vendor linked, as in production after onboarding
        linked = _linked_vendors()
        vendors = [v["id"] for v in _entities(st, "vendors") if v.get("active", True) and str(v["id"]) in linked]
        receiver_url, receiver = fleet.start_gunicorn(env, "mlconnector.web:create_app()", GUNICORN_WORKERS)
        services.append(receiver)
        webhook_path = f"/webhooks/servicetitan/{fleet.INTEGRATION}"
        requests.post(f"{st}/_sandbox/webhooks", timeout=10, json={
            "url": f"{receiver_url}{webhook_path}", "hmac_key": fleet.HMAC_KEY, "events": ["*"]}).raise_for_status()
        services.append(fleet.start_beat(env))
        invoices_before = {(r["VendorNum"], r["InvoiceNum"]) for r in _entities(ep, "ap_invoices")}
        vendors_before = len(_entities(ep, "vendors"))
        for url in (st, ep):
            requests.post(f"{url}/_sandbox/stats/reset", timeout=10).raise_for_status()

        storm = Storm({"st": st, "ep": ep})
        storm.start()

        drive_seconds = orders / ORDER_RATE
        chaos = Chaos(env, workers, {"st": st, "ep": ep}, vhost=vhost)
        fuzz: dict[str, Any] = {}
        limit = int(env.get("MLCONNECTOR_WEBHOOK_MAX_BYTES") or 1_048_576)
        fuzz_thread = threading.Thread(target=lambda: fuzz.update(run_fuzz(receiver_url, webhook_path, limit)),
                                       name="fuzz", daemon=True)
        created_orders: list[str] = []
        late = 0
        chaos_thread = chaos.run(drive_seconds)
        started = time.perf_counter()
        with requests.Session() as http:
            for index in range(orders):
                if index == int(0.1 * orders):
                    fuzz_thread.start()
                pause = started + index / ORDER_RATE - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                elif pause < -0.25:
                    late += 1
                response = http.post(f"{st}/_sandbox/entities/purchase_orders", timeout=30,
                                     json={"vendorId": vendors[index % len(vendors)], "status": "Received"})
                response.raise_for_status()
                created_orders.append(str(response.json()["id"]))
        driven = time.perf_counter() - started
        chaos_thread.join(timeout=120)
        # The storm lasts as long as the drive; then the vendors behave and the fleet drains.
        storm_stats = storm.stop()
        requests.post(f"{ep}/_sandbox/epicor/lost-answers", json={"count": 0}, timeout=10).raise_for_status()
        fuzz_thread.join(timeout=300)

        # Every bill ServiceTitan holds is expected in Epicor: the received orders' and the
        # seeded tenant's own (which only the catch-up poll can find).
        orders_set = set(created_orders)
        bills = {str(b["id"]): b for b in _entities(st, "inventory_bills")}
        seeded = sum(1 for b in bills.values() if str(b.get("purchaseOrderId")) not in orders_set)
        expected = {bill_id: expected_invoice(bill) for bill_id, bill in bills.items()}

        def drained() -> bool:
            records = _records()
            if any(records.get(b, {}).get("status") not in FINAL for b in expected):
                return False
            return _unfinished() == (0, 0)

        timeout = max(120.0, 0.6 * orders)
        try:
            fleet.wait_until(drained, timeout=timeout, interval=0.5)
            drain_s: float | None = round(time.perf_counter() - started - driven, 2)
        except RuntimeError:
            drain_s = None
        vendor_stats = {name: _stats(url) for name, url in (("st", st), ("ep", ep))}
        deliveries = requests.get(f"{st}/_sandbox/webhooks", timeout=30).json()["deliveries"]

        figures = _verify(expected, linked, host, invoices_before, vendors_before)
        figures.update(_faults(storm_stats, deliveries, chaos))
        seen, event_statuses, duplicates_noted = _events_by_entity()
        missed = [b for b, want in expected.items() if want.order_id in orders_set
                  and not seen.get(f"bill:{b}") and not seen.get(f"po:{want.order_id}")]
        records = _records()
        last = max((b for b in expected if records.get(b, {}).get("written_at")),
                   key=lambda b: records[b]["written_at"], default=None)
        figures.update({
            "last_written": None if last is None else {
                "bill": last, "record_id": records[last]["id"], "deliveries": records[last]["deliveries"],
                "audit": _trail(records[last]["id"])[-EVIDENCE_LINES:]},
            "catch_up": {
                "bills_missed_by_webhooks": len(missed),
                "found_by_catch_up": sum(1 for b in missed
                                         if records.get(b, {}).get("status") in ("written", "skipped")),
                "not_found": sorted(b for b in missed if b not in records)[:20],
            },
            "receiver": {
                "events": event_statuses,
                "duplicate_deliveries_noted": duplicates_noted,
                "delivery_attempts_5xx": sum(1 for d in deliveries for a in d["attempts"]
                                             if (a.get("status") or 0) >= 500),
                "delivery_attempts_failed": sum(1 for d in deliveries for a in d["attempts"]
                                                if not a.get("status") or a["status"] >= 300),
                "deliveries_given_up": vendor_stats["st"].get("webhooks_given_up", 0),
            },
            "audit_kinds": _audit_kinds(),
            "records_created_twice": _created_twice(),
            "fleet_log_errors": _worker_log_errors([*workers, *services]),
            "fleet_log_exceptions": _log_exceptions([*workers, *services]),
            "fuzz": fuzz,
            "foreign_broker_clients_at_start": foreign_clients,
        })
        figures["rejected_records"] = {  # how each record whose message a worker dropped came back
            record_id: _trail(record_id)[-EVIDENCE_LINES:]
            for record_id in figures["fleet_log_exceptions"]["rejected_record_ids"][:EVIDENCE_BILLS]}
        if vhost is not None:
            figures.update({
                "foreign_broker_clients_at_start": foreign_amqp,
                "foreign_redis_clients_at_start": foreign_clients,
                "queues_by_type": amqp.queue_types(vhost),
                "messages_left_in_queues": {name: n for name, n in amqp.waiting(vhost).items() if n},
                "worker_transports": sorted({_transport(w) for w in workers}),  # the replacement's too
            })
    finally:
        try:
            if storm is not None and storm.is_alive():
                storm.stop()
        finally:
            fleet.tear_down(database_url, processes=[*workers, *services], host=host, sig=2)

    records_expected = figures["records_expected"]
    result: dict[str, Any] = {
        "orders": orders,
        "seeded_bills": seeded,
        "records_expected": records_expected,
        "written_exactly_once": figures["written_exactly_once"],
        "exactly_once_ratio": round(figures["written_exactly_once"] / max(records_expected, 1), 4),
        "lost": figures["lost"],
        "duplicated": figures["duplicated"],
        "wrong_amount_or_lines": figures["wrong_amount_or_lines"],
        "stuck": figures["stuck"],
        "held": figures["held"],
        "failed": figures["failed"],
        "lost_ratio": round(figures["lost"] / max(records_expected, 1), 4),
        "duplicated_ratio": round(figures["duplicated"] / max(records_expected, 1), 4),
        "drained": drain_s is not None,
        "drain_s": drain_s,
        "storm_s": round(driven, 2),
        "drain_timeout_s": timeout,
        "drive_s": round(driven, 2),
        "driver_late_posts": late,
        "faults": figures.pop("faults"),
        "fuzz_requests": fuzz.get("requests", 0),
        "fuzz_by_class": fuzz.get("by_class", {}),
        "fuzz_5xx": fuzz.get("by_class", {}).get("5xx", 0),
        "fuzz_5xx_ratio": round(fuzz.get("by_class", {}).get("5xx", 0) / max(fuzz.get("requests", 0), 1), 4),
        **{k: v for k, v in figures.items() if k not in ("records_expected", "written_exactly_once", "lost",
                                                           "duplicated", "wrong_amount_or_lines", "stuck",
                                                           "held", "failed")},
        "settings": {"worker_processes": WORKER_PROCESSES, "worker_concurrency": WORKER_CONCURRENCY,
                     "gunicorn_workers": GUNICORN_WORKERS, "order_rate_per_s": ORDER_RATE,
                     "catch_up_poll_s": CATCH_UP_POLL_SECONDS, "sweep_after_s": SWEEP_AFTER_SECONDS,
                     "sweep_every_s": SWEEP_EVERY_SECONDS, "rate_429": RATE_429, "rate_5xx": RATE_5XX,
                     "webhook_duplicate_rate": WEBHOOK_DUPLICATE_RATE, "webhook_drop_rate": WEBHOOK_DROP_RATE},
        "timeline": chaos.timeline,
    }
    if vhost is not None:
        result["broker"] = "rabbitmq"
        from mlconnector.settings import get_settings

        result["settings"]["broker"] = {"rabbitmq": amqp.url(vhost).rsplit("@", 1)[-1],
                                        "queue_type": get_settings().amqp_queue_type,
                                        "redis_limiter_and_tokens": fleet.REDIS_URL.rsplit("@", 1)[-1]}
    write_result("chaos_rabbitmq" if vhost else "chaos", result)
    return result


def _faults(stats: dict[str, dict[str, Any]], deliveries: list[dict[str, Any]], chaos: Chaos) -> dict[str, Any]:
    def status_count(name: str, test: Callable[[int], bool]) -> int:
        return sum(n for status, n in stats[name]["by_status"].items() if status.isdigit() and test(int(status)))

    by_vendor = {}
    for name in ("st", "ep"):
        total = stats[name]["total"]
        by_vendor[name] = {
            "calls": total,
            "429s": stats[name]["rate_limited"],
            "5xx": status_count(name, lambda s: s >= 500 and s != LOST_ANSWER_STATUS),
            "lost_answers": status_count(name, lambda s: s == LOST_ANSWER_STATUS) if name == "ep" else 0,
            "401s": status_count(name, lambda s: s == 401),
            "429_share": round(stats[name]["rate_limited"] / max(total, 1), 3),
            "5xx_share": round(status_count(name, lambda s: s >= 500 and s != LOST_ANSWER_STATUS) / max(total, 1), 3),
            "5xx_by_status": {status: n for status, n in stats[name]["by_status"].items()
                              if status.startswith("5") and status != str(LOST_ANSWER_STATUS)},
            "tokens_issued": stats[name]["tokens_issued"],
        }
    originals = sum(1 for d in deliveries if not d.get("duplicate"))
    sent = originals - stats["st"].get("webhooks_dropped", 0)  # the sandbox duplicates only what it sends
    return {"faults": {
        "429s": sum(v["429s"] for v in by_vendor.values()),
        "5xx": sum(v["5xx"] for v in by_vendor.values()),
        "lost_answers": by_vendor["ep"]["lost_answers"],
        "duplicates": stats["st"].get("webhooks_duplicated", 0),
        "drops": stats["st"].get("webhooks_dropped", 0),
        "duplicate_share": round(stats["st"].get("webhooks_duplicated", 0) / max(sent, 1), 3),
        "drop_share": round(stats["st"].get("webhooks_dropped", 0) / max(originals, 1), 3),
        "kills": {"pool_child": chaos.counts.get("kill_pool_child", 0),
                  "worker_main": chaos.counts.get("kill_worker_main", 0)},
        "flushes": chaos.counts.get("broker_flush", 0),
        "token_revocations": chaos.counts.get("token_revocation", 0),
        "auth_401s_after_revocation": sum(v["401s"] for v in by_vendor.values()),
        "chaos_errors": chaos.counts.get("chaos_error", 0),
    }, "faults_by_vendor": by_vendor}


def _shared_numbers(expected: dict[str, Expected]) -> int:
    numbers = [w.invoice_num.casefold() for w in expected.values()]
    return sum(1 for n in numbers if numbers.count(n) > 1)


def carriers(expected: dict[str, Expected], linked: dict[str, int],
             invoices: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per bill, every Epicor invoice that carries it: its invoice number (told apart by
    vendor when two bills share a number), or, for a bill without a summary, the
    description only it gets ("ServiceTitan bill <id>"), whatever number the invoice has."""
    numbers: dict[str, list[str]] = {}
    for bill_id, want in expected.items():
        numbers.setdefault(want.invoice_num.casefold(), []).append(bill_id)
    by_description = {want.description.casefold(): bill_id for bill_id, want in expected.items()
                      if want.own_description}
    found: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = {bill_id: {} for bill_id in expected}
    for row in invoices:
        key = (row["VendorNum"], row["InvoiceNum"])
        sharing = numbers.get(str(row["InvoiceNum"]).casefold(), [])
        if len(sharing) > 1:
            sharing = [b for b in sharing if linked.get(expected[b].st_vendor_id) == row["VendorNum"]]
        for bill_id in sharing:
            found[bill_id][key] = row
        owner = by_description.get(str(row.get("Description") or "").casefold())
        if owner is not None:
            found[owner][key] = row
    return {bill_id: list(rows.values()) for bill_id, rows in found.items()}


def classify(want: Expected, vendor_num: int | None, rows: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """exactly_once, lost, duplicated or wrong, with what Epicor holds when it is not right."""
    if not rows:
        return "lost", {}
    shown = [f"{r['VendorNum']}/{r['InvoiceNum']} {r.get('InvoiceVendorAmt')} group {r.get('GroupID')}" for r in rows]
    if len(rows) > 1:
        return "duplicated", {"epicor": shown}
    differences = invoice_differences(want, vendor_num, rows[0], rows[0].get("APInvDtls") or [])
    if want.invoice_num.casefold() != str(rows[0]["InvoiceNum"]).casefold():
        differences.insert(0, f"invoice number {rows[0]['InvoiceNum']} != {want.invoice_num}")
    return ("wrong", {"differences": differences, "epicor": shown}) if differences else ("exactly_once", {})


def _verify(expected: dict[str, Expected], linked: dict[str, int], host: fleet.SandboxHost,
            invoices_before: set[tuple[Any, Any]], vendors_before: int) -> dict[str, Any]:
    """Every expected bill against Epicor's tables and the connector's reads, and the ledger."""
    ep = host.url("ep")
    invoices = [r for r in _entities(ep, "ap_invoices") if (r["VendorNum"], r["InvoiceNum"]) not in invoices_before]
    records = _records()
    keys = {b: (linked[w.st_vendor_id], w.invoice_num) for b, w in expected.items() if w.st_vendor_id in linked}
    read, read_errors = _connector_reads(host, keys)
    found = carriers(expected, linked, invoices)

    outcome: dict[str, list[str]] = {"exactly_once": [], "lost": [], "duplicated": [], "wrong": []}
    problems: dict[str, dict[str, Any]] = {}
    disagreements: list[str] = []
    for bill_id, want in sorted(expected.items(), key=lambda kv: int(kv[0])):
        vendor_num = linked.get(want.st_vendor_id)
        rows = found[bill_id]
        kind, detail = classify(want, vendor_num, rows)
        outcome[kind].append(bill_id)
        if kind != "exactly_once":
            problems[bill_id] = {"problem": kind, **detail}
        in_table = next((r for r in rows if r["VendorNum"] == vendor_num and r["InvoiceNum"] == want.invoice_num), None)
        via_connector = read.get(bill_id)
        if (via_connector is None) != (in_table is None):
            disagreements.append(f"bill {bill_id}: table {'has' if in_table else 'lacks'} it, "
                                 f"connector {'finds' if via_connector else 'does not find'} it")
        elif via_connector is not None and in_table is not None:
            by_table = invoice_differences(want, vendor_num, in_table, in_table.get("APInvDtls") or [])
            by_connector = invoice_differences(want, vendor_num, *via_connector)
            if by_connector != by_table:
                disagreements.append(f"bill {bill_id}: table says {by_table or 'right'}, connector says "
                                     f"{by_connector or 'right'}")
    claimed = {(r["VendorNum"], r["InvoiceNum"]) for rows in found.values() for r in rows}

    statuses: dict[str, int] = {}
    for bill_id in expected:
        status = records.get(bill_id, {}).get("status", "absent")
        statuses[status] = statuses.get(status, 0) + 1
        if status in ("pending", "running", "held", "failed", "absent") and bill_id not in problems:
            problems[bill_id] = {"problem": status if status != "absent" else "never in the ledger"}
        elif status in ("pending", "running", "held", "failed", "absent"):
            problems[bill_id]["ledger_status"] = status
    unexpected = [f"{r['VendorNum']}/{r['InvoiceNum']} group {r.get('GroupID')}" for r in invoices
                  if (r["VendorNum"], r["InvoiceNum"]) not in claimed]
    vendors_after = len(_entities(ep, "vendors"))

    evidence = []
    for bill_id, problem in sorted(problems.items(), key=lambda kv: int(kv[0]))[:EVIDENCE_BILLS]:
        record = records.get(bill_id)
        entry: dict[str, Any] = {"bill": bill_id, "order": expected[bill_id].order_id,
                                 "invoice_num": expected[bill_id].invoice_num, **problem}
        if record:
            entry["record"] = {k: record[k] for k in ("id", "status", "deliveries", "target_id", "last_error",
                                                      "hold_reason")}
            entry["audit"] = _trail(record["id"])[-EVIDENCE_LINES:]
        evidence.append(entry)
    return {
        "records_expected": len(expected),
        "written_exactly_once": len(outcome["exactly_once"]),
        "lost": len(outcome["lost"]),
        "duplicated": len(outcome["duplicated"]),
        "wrong_amount_or_lines": len(outcome["wrong"]),
        "stuck": statuses.get("pending", 0) + statuses.get("running", 0),
        "held": statuses.get("held", 0),
        "failed": statuses.get("failed", 0),
        "never_in_ledger": statuses.get("absent", 0),
        "ledger_statuses": statuses,
        "problem_bills": {k: sorted(v, key=int) for k, v in outcome.items() if k != "exactly_once" and v},
        "epicor_check": {
            "invoices_new": len(invoices),
            "unexpected_invoices": unexpected[:20],
            "connector_found": len(read),
            "connector_read_errors": read_errors[:10],
            "table_vs_connector_disagreements": disagreements[:20],
            "bills_sharing_an_invoice_number": _shared_numbers(expected),
            "epicor_vendors_created_during_run": vendors_after - vendors_before,
        },
        "evidence": evidence,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("orders", nargs="?", type=int, default=60, help="purchase orders received (default 60)")
    parser.add_argument("--broker", choices=BROKERS, default="redis", help="the fleet's Celery broker (default redis)")
    options = parser.parse_args()
    why = amqp.unavailable() if options.broker == "rabbitmq" else None
    if why:
        print(f"chaos_rabbitmq: skipped: {why}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(main(options.orders, options.broker)))
