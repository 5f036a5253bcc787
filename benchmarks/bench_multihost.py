"""More than one host: the servicetitan-epicor fleet across network namespaces, one worker
host killed mid-backfill.

    python -m benchmarks.bench_multihost [records] [client_share]

Five hosts on this machine (benchmarks/netns.py: a namespace each, a bridge on a private
/24; needs root and `ip netns`):

- `db`: a PostgreSQL 15 cluster of the run's own (initdb into a temporary directory, run as
  the postgres user, trust for the subnet, listening on the host's address) and a
  redis-server of its own (broker, shared rate limiter, token cache and token lock);
- `sandboxes`: the ServiceTitan and Epicor sandboxes, both rate limited (ServiceTitan at
  ST_LIMIT, Epicor at EP_LIMIT calls/s) and issuing tokens that live TOKEN_TTL seconds;
- `beat`: Celery beat (the sweeper; the integration's polls are turned off so the phases
  below are sent by the benchmark);
- `worker1`, `worker2`: a Celery prefork worker each (WORKER_CONCURRENCY children) on the
  default and the pair's queue.

The benchmark itself runs in the machine's own namespace and reaches every host through
the bridge, as an operator's machine would. The integration's connectors are configured
at `client_share` (CLIENT_SHARE, 95%) of the vendors' limits, so the fleet's shared Redis
limiter is what keeps both hosts together under them.

Phases (ServiceTitan inventory bills -> Epicor AP invoices; vendors linked first, untimed):

1. one host: `records // 2` bills with worker2 alone;
2. two hosts: `records // 2` more with worker1 and worker2;
3. kill: `records` more with both; when KILL_AT of them are final, worker1's host dies (its
   link goes down, then SIGKILL to every process in its namespace). worker2 and beat's
   sweeper (work idle SWEEP_AFTER_SECONDS comes back) finish the backfill.

Then, through Epicor's own API (OData reads of the run's invoice group, with Basic auth so
no token is asked for) and the sandbox's tables: every bill ServiceTitan holds is in Epicor
exactly once with the right vendor, amount and lines. From the sandboxes' request logs:
429s, the peak number of calls that reached each vendor in any window of its length
(ratio to its limit), and the token requests against the ones a single fleet-wide token
cache needs for the calls made (`tokens_per_expiry`, target 1.0; `early_token_requests`:
a token asked for while the previous one was still fresh, target 0).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet, netns
from benchmarks.common import write_result

HOSTS = ("db", "sandboxes", "beat", "worker1", "worker2")
PG_BIN = Path(os.environ.get("MLCONNECTOR_PG_BIN", "/usr/lib/postgresql/15/bin"))
WORKER_CONCURRENCY = 2  # pool children per worker host
EP_LIMIT = 20  # Epicor calls per second: the sandbox's window and the connector's shared limiter
ST_LIMIT = 60  # ServiceTitan's documented 60/s per app + tenant, sandbox and connector alike
# The connectors' shared limiter is set this share of the vendor's limit. It admits a call on
# Redis's clock with a 3% longer window than the vendor's; a call held up between admission
# and arrival by more than that (a busy host) lands in the vendor's window beside one admitted
# a window later. At 1.0 on this shared 2-core machine the vendor refused a few calls a run
# (429, retried): 6 of ~1,840 Epicor calls, 21 in its busiest second against 20.
CLIENT_SHARE = 0.95
TOKEN_TTL = 20  # seconds a token lives at both vendors: a run crosses many renewals
SWEEP_AFTER_SECONDS = 10  # the sweeper re-sends work idle this long (default 120 outlasts the run)
SWEEP_EVERY_SECONDS = 30.0  # the platform's sweeper cadence (mlconnector.celery_app), not changed
PG_KEEPALIVE_IDLE = 5  # seconds: PostgreSQL's server-side keepalives (idle 5 s, then 3 probes 2 s apart)
PG_USER_TIMEOUT_MS = 10_000  # PostgreSQL's tcp_user_timeout: unacknowledged data to a dead host
KILL_AT = 0.35  # share of the kill phase's records final when worker1's host dies
GROUP = "BMHOST"  # the Epicor AP invoice group the run writes to
FINAL = ("written", "skipped", "held", "failed")
FLOW = "inventory_bills"
REFRESH_AHEAD_SECONDS = 60  # mlconnector.http.auth: a token is renewed when min(60, lifetime/2) is left


# ---- the sandbox host (runs inside the `sandboxes` namespace) ------------------------------------


def _rate_windows(sandbox: Any) -> list[Any]:
    from sandboxes.base import RateWindow

    found = []
    for value in vars(sandbox).values():
        if isinstance(value, RateWindow) and value not in found:
            found.append(value)
    return found


def _instrument(sandbox: Any) -> None:
    """Log every call the vendor's rate window judged (time, key, admitted) and every token
    it issued, served at GET /_sandbox/bench/calls (a path the vendor's stats ignore)."""
    from flask import jsonify, request

    lock = threading.Lock()
    log: dict[str, list[Any]] = {"window": [], "tokens": []}

    for window in _rate_windows(sandbox):
        original = window.hit

        def hit(key: str, original: Any = original) -> tuple[bool, float, int]:
            now = time.time()
            allowed, wait, remaining = original(key)
            with lock:
                log["window"].append((now, key, allowed))
            return allowed, wait, remaining

        window.hit = hit

    def after(response: Any) -> Any:
        path = request.path.lower()
        if not path.startswith("/_sandbox/") and "token" in path and request.method == "POST" \
                and response.status_code == 200:
            with lock:
                log["tokens"].append(time.time())
        return response

    sandbox.app.after_request(after)

    def calls() -> Any:
        with lock:
            return jsonify({"window": log["window"], "tokens": log["tokens"], "now": time.time(),
                            "limits": [w.limit for w in _rate_windows(sandbox)]})

    sandbox.app.add_url_rule("/_sandbox/bench/calls", "bench_calls", calls)


def serve_sandboxes(address: str, spec: dict[str, list[Any]]) -> None:
    """Like benchmarks.sandbox_host, but listening on this host's address: one JSON line
    {name: {"url", "info"}} once every sandbox listens, then serve until stdin closes."""
    from sandboxes import SandboxOptions, create_sandbox, start_sandbox

    running = {}
    for name, (vendor, options) in spec.items():
        sandbox = create_sandbox(vendor, SandboxOptions(**options))
        _instrument(sandbox)
        running[name] = start_sandbox(sandbox, host=address)
    print(json.dumps({name: {"url": f"http://{address}:{r.port}", "info": r.info()} for name, r in running.items()}),
          flush=True)
    sys.stdin.read()
    for r in running.values():
        r.stop()


class Sandboxes(fleet.SandboxHost):
    """The sandbox host's process, started in its namespace and listening on its address."""

    def __init__(self, net: netns.Network, spec: dict[str, list[Any]]) -> None:
        self.net = net
        self.log_path = fleet.LOG_DIR / f"mlc-bench-mh-sandboxes-{uuid.uuid4().hex[:6]}.log"
        super().__init__(spec, stderr=self.log_path.open("w"))

    def command(self, spec_json: str) -> list[str]:
        return self.net.command("sandboxes", [sys.executable, "-m", "benchmarks.bench_multihost", "serve-sandboxes",
                                              self.net.address("sandboxes"), spec_json])

    def started_badly(self) -> str:
        return f": {self.log_path.read_text()[-2000:]}"


# ---- the db host: PostgreSQL and Redis of the run's own -------------------------------------------


def _as_postgres(args: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *args]


def start_postgres(net: netns.Network, workdir: Path) -> tuple[fleet.Process, str]:
    """initdb into workdir/pg (as postgres), trust for the subnet, listening on the db host."""
    data = workdir / "pg"
    data.mkdir()
    shutil.chown(data, "postgres", "postgres")
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                                 "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
    (data / "pg_hba.conf").write_text(f"local all all trust\nhost all all 127.0.0.1/32 trust\n"
                                      f"host all all {net.cidr} trust\n")
    address = net.address("db")
    # A worker holds its record's transaction (row lock, advisory lock) across the vendor
    # write. When its host vanishes no FIN ever comes, and the backend would keep that
    # transaction, and the locks the sweeper skips, until TCP gives up (~15 minutes of
    # retransmissions when an answer was in flight). Keepalives end an idle connection to a
    # dead peer and tcp_user_timeout one with unacknowledged data, both within ~11 s.
    settings = {"listen_addresses": address, "port": "5432", "unix_socket_directories": str(data),
                "max_connections": "200", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                "tcp_keepalives_idle": str(PG_KEEPALIVE_IDLE), "tcp_keepalives_interval": "2",
                "tcp_keepalives_count": "3", "tcp_user_timeout": str(PG_USER_TIMEOUT_MS)}
    args = [str(PG_BIN / "postgres"), "-D", str(data)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    process = fleet.Process(net.command("db", _as_postgres(args)), {}, "mh-postgres")
    admin = f"postgresql://postgres@{address}:5432/postgres"

    def ready() -> bool:
        if not process.alive():
            raise RuntimeError(f"postgres exited: {process.log()[-2000:]}")
        return "ready to accept connections" in process.log()

    fleet.wait_until(ready, timeout=60, interval=0.2, message="postgres not ready")
    return process, admin


def start_redis(net: netns.Network, workdir: Path) -> tuple[fleet.Process, str]:
    address = net.address("db")
    process = fleet.Process(net.command("db", ["redis-server", "--bind", address, "--port", "6379", "--save", "",
                                               "--appendonly", "no", "--protected-mode", "no", "--dir", str(workdir),
                                               "--tcp-keepalive", "5"]), {}, "mh-redis")
    fleet.wait_until(lambda: "Ready to accept connections" in process.log() or not process.alive(), timeout=30,
                     interval=0.1, message="redis not ready")
    if not process.alive():
        raise RuntimeError(f"redis exited: {process.log()[-2000:]}")
    return process, f"redis://{address}:6379/0"


# ---- the fleet's hosts --------------------------------------------------------------------------


def start_worker(net: netns.Network, host: str, env: dict[str, str], queue: str) -> fleet.Process:
    worker = fleet.Process(net.command(host, [
        sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "worker", "--loglevel", "INFO", "--pool",
        "prefork", "--concurrency", str(WORKER_CONCURRENCY), "-Q", f"mlconnector,{queue}",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "--hostname", f"{host}@{net.prefix}"]),
        env, f"mh-{host}")
    fleet.wait_until(lambda: "ready." in worker.log() or not worker.alive(), timeout=120, interval=0.2,
                     message=f"{host}: worker not ready")
    if not worker.alive():
        raise RuntimeError(f"{host}: worker exited: {worker.log()[-3000:]}")
    return worker


def start_beat(net: netns.Network, env: dict[str, str]) -> fleet.Process:
    beat = fleet.Process(net.command("beat", [sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "beat",
                                              "--loglevel", "INFO"]), env, "mh-beat")
    fleet.wait_until(lambda: "beat: Starting" in beat.log() or not beat.alive(), timeout=90, interval=0.2,
                     message="beat not started")
    if not beat.alive():
        raise RuntimeError(f"beat exited: {beat.log()[-3000:]}")
    return beat


# ---- the integration and the ledger -----------------------------------------------------------------


def create_integration(host: Sandboxes, client_share: float) -> None:
    from mlconnector.flows import all_pairs

    # The fleet's shared Redis limiter just under each vendor's limit; beat sends no polls
    # during the run (the phases are sent by the benchmark), it sweeps.
    no_polls = {flow.name: 0 for flow in all_pairs()[fleet.PAIR].flows if flow.poll_seconds}
    fleet.create_bench_integration(host.info("st"), host.info("ep"), GROUP, extra_config={"poll_seconds": no_polls},
                                   st_settings={"rate_limit_per_second": int(ST_LIMIT * client_share)},
                                   ep_settings={"rate_limit_per_second": int(EP_LIMIT * client_share)})


def _statuses() -> dict[str, int]:
    return pipeline.statuses(FLOW)


def _final() -> int:
    return sum(v for k, v in _statuses().items() if k in FINAL)


def _written_times() -> list[float]:
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.scalars(select(SyncRecord.written_at).where(SyncRecord.flow == FLOW,
                                                                   SyncRecord.written_at.is_not(None))).all()
    return sorted(r.timestamp() for r in rows)


def _add_bills(st: str, vendors: list[Any], count: int) -> None:
    with requests.Session() as http:
        for index in range(count):
            http.post(f"{st}/_sandbox/entities/purchase_orders", json={
                "vendorId": vendors[index % len(vendors)], "status": "Received"}, timeout=30).raise_for_status()


def _send_poll(flow: str) -> Any:
    from mlconnector import engine
    from mlconnector.tasks import send

    result = engine.poll_flow(fleet.INTEGRATION, flow)
    send(result.enqueue)
    return result


class Calls:
    """One vendor's request statistics at a moment: API calls and token requests so far."""

    def __init__(self, url: str) -> None:
        stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
        self.tokens = sum(sum(v.values()) for k, v in stats["by_endpoint"].items() if "token" in k.lower())
        self.api = stats["total"] - self.tokens
        self.rate_limited = stats["rate_limited"]
        self.stats = stats


def _phase(name: str, st: str, ep: str, queued: int, sent_at: float, done_at: float, before: dict[str, Calls],
           hosts: int) -> dict[str, Any]:
    after = {"st": Calls(st), "ep": Calls(ep)}
    seconds = max(done_at - sent_at, 1e-6)
    ep_calls = after["ep"].api - before["ep"].api
    st_calls = after["st"].api - before["st"].api
    return {"phase": name, "worker_hosts": hosts, "records": queued, "seconds": round(seconds, 2),
            "records_per_s": round(queued / seconds, 2),
            "epicor_calls": ep_calls, "st_calls": st_calls,
            "epicor_calls_per_record": round(ep_calls / max(queued, 1), 2),
            "st_calls_per_record": round(st_calls / max(queued, 1), 2),
            "epicor_calls_per_s": round(ep_calls / seconds, 2),
            "epicor_calls_per_s_vs_limit": round(ep_calls / seconds / EP_LIMIT, 3),
            "epicor_429s": after["ep"].rate_limited - before["ep"].rate_limited,
            "st_429s": after["st"].rate_limited - before["st"].rate_limited}


def run_phase(name: str, host: Sandboxes, vendors: list[Any], count: int, hosts: int,
              on_progress: Any = None, timeout: float = 600) -> dict[str, Any]:
    """Add `count` bills, send a poll, wait until every record it queued is final."""
    st, ep = host.url("st"), host.url("ep")
    _add_bills(st, vendors, count)
    before = {"st": Calls(st), "ep": Calls(ep)}
    already = _final()
    sent_at = time.time()
    poll = _send_poll(FLOW)
    deadline = time.time() + timeout
    while True:
        done = _final() - already
        if on_progress is not None:
            on_progress(done, poll.queued)
        if done >= poll.queued:
            break
        if time.time() > deadline:
            raise RuntimeError(f"{name}: not every record final: {_statuses()}")
        time.sleep(0.25)
    written = [t for t in _written_times() if t >= sent_at]
    done_at = written[-1] if written else time.time()
    return _phase(name, st, ep, poll.queued, sent_at, done_at, before, hosts)


# ---- what the vendors saw ----------------------------------------------------------------------------


def peak_in_window(times: list[float], window: float) -> int:
    """The most calls in any span of `window` seconds (the vendor's sliding window)."""
    best, start = 0, 0
    for end in range(len(times)):
        while times[end] - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def ideal_tokens(call_times: list[float], renew_every: float) -> int:
    """Token requests one fleet-wide cache makes for these calls: a new token whenever a call
    comes `renew_every` or more after the last one was issued."""
    count, last = 0, float("-inf")
    for t in call_times:
        if t - last >= renew_every:
            count += 1
            last = t
    return count


def vendor_view(url: str, limit: float, ttl: float) -> dict[str, Any]:
    log = requests.get(f"{url}/_sandbox/bench/calls", timeout=30).json()
    stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
    api_keys = [row for row in log["window"] if row[1] != "token"]  # Epicor judges token requests apart
    times = sorted(row[0] for row in api_keys)
    tokens = sorted(log["tokens"])
    renew_every = ttl - min(REFRESH_AHEAD_SECONDS, ttl / 2)
    gaps = [b - a for a, b in zip(tokens, tokens[1:])]
    ideal = ideal_tokens(times, renew_every)
    peak = peak_in_window(times, 1.0)
    return {
        "limit_per_s": limit,
        "api_calls": len(times),
        "refused_by_window": sum(1 for row in api_keys if not row[2]),
        "refused_at": [row[0] for row in api_keys if not row[2]][:50],
        "429s": stats["rate_limited"],
        "peak_calls_in_any_1s": peak,
        "peak_vs_limit": round(peak / limit, 3) if limit else None,
        "busy_s": round(times[-1] - times[0], 1) if times else 0.0,
        "token_ttl_s": ttl,
        "token_renew_every_s": renew_every,
        "token_requests": len(tokens),
        "token_renewals_needed": ideal,
        "tokens_per_expiry": round(len(tokens) / ideal, 3) if ideal else None,
        # a token asked for while the last one had more than the refresh margin left: two
        # hosts (or two processes) renewing for the same expiry
        "early_token_requests": sum(1 for gap in gaps if gap < renew_every - 1.0),
        "shortest_token_gap_s": round(min(gaps), 2) if gaps else None,
        "by_endpoint": stats["by_endpoint"],
        "calls_by_method": {k[len("calls:"):]: v for k, v in stats.items() if k.startswith("calls:")},
    }


# ---- Epicor's own answer ---------------------------------------------------------------------------


def odata_invoices(info: dict[str, Any], group: str) -> list[dict[str, Any]]:
    """The group's AP invoices with their lines, read through Epicor's OData API (Basic auth,
    paged by $top/$skip, paced under the vendor's limit, a 429 waited out)."""
    creds = info["credentials"]
    url = f"{info['api_base']}/api/v2/odata/{creds['company']}/Erp.BO.APInvoiceSvc/APInvoices"
    rows: list[dict[str, Any]] = []
    with requests.Session() as http:
        http.auth = (creds["username"], creds["password"])
        http.headers["x-api-key"] = creds["api_key"]
        skip = 0
        while True:
            params = {"$filter": f"GroupID eq '{group}'", "$expand": "APInvDtls", "$orderby": "VendorNum,InvoiceNum",
                      "$top": "100", "$skip": str(skip)}
            response = http.get(url, params=params, timeout=60)
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After") or 1))
                continue
            response.raise_for_status()
            page = response.json().get("value") or []
            rows += page
            if len(page) < 100:
                return rows
            skip += len(page)
            time.sleep(2.0 / EP_LIMIT)


def verify(host: Sandboxes, invoices_before: set[tuple[Any, Any]]) -> dict[str, Any]:
    """Every bill ServiceTitan holds against Epicor: exactly once, right vendor, amount, lines."""
    from benchmarks.bench_chaos import _entities, _linked_vendors, _records, carriers, classify, expected_invoice

    st, ep = host.url("st"), host.url("ep")
    bills = {str(b["id"]): b for b in _entities(st, "inventory_bills")}
    expected = {bill_id: expected_invoice(bill) for bill_id, bill in bills.items()}
    linked = _linked_vendors()
    via_api = [r for r in odata_invoices(host.info("ep"), GROUP) if (r["VendorNum"], r["InvoiceNum"]) not in invoices_before]
    in_table = [r for r in _entities(ep, "ap_invoices")
                if r.get("GroupID") == GROUP and (r["VendorNum"], r["InvoiceNum"]) not in invoices_before]
    outcome: dict[str, list[str]] = {"exactly_once": [], "lost": [], "duplicated": [], "wrong": []}
    problems: dict[str, Any] = {}
    found = carriers(expected, linked, via_api)
    for bill_id, want in sorted(expected.items(), key=lambda kv: int(kv[0])):
        kind, detail = classify(want, linked.get(want.st_vendor_id), found[bill_id])
        outcome[kind].append(bill_id)
        if kind != "exactly_once" and len(problems) < 10:
            problems[bill_id] = {"problem": kind, **detail}
    api_keys = {(r["VendorNum"], r["InvoiceNum"]) for r in via_api}
    table_keys = {(r["VendorNum"], r["InvoiceNum"]) for r in in_table}
    records = _records(FLOW)
    statuses: dict[str, int] = {}
    for bill_id in expected:
        status = records.get(bill_id, {}).get("status", "absent")
        statuses[status] = statuses.get(status, 0) + 1
    return {
        "records_expected": len(expected),
        "written_exactly_once": len(outcome["exactly_once"]),
        "lost": len(outcome["lost"]),
        "duplicated": len(outcome["duplicated"]),
        "wrong_amount_or_lines": len(outcome["wrong"]),
        "epicor_invoices_in_group": len(via_api),
        "odata_vs_table_disagreements": len(api_keys ^ table_keys),
        "ledger_statuses": statuses,
        "problems": problems,
    }


# ---- the run ------------------------------------------------------------------------------------------


def main(records: int = 80, write: bool = True, client_share: float = CLIENT_SHARE) -> dict[str, Any]:
    """The run; `write` false leaves benchmarks/results alone (the slow test's small run)."""
    from benchmarks.bench_chaos import _entities, _linked_vendors
    from benchmarks.bench_pipeline import run_flow
    from mlconnector.flows import all_pairs

    net = netns.Network(HOSTS)
    workdir = Path(tempfile.mkdtemp(prefix="mlc-multihost-"))
    os.chmod(workdir, 0o755)  # postgres walks into its data directory
    processes: dict[str, fleet.Process] = {}
    host: Sandboxes | None = None
    timeline: list[dict[str, Any]] = []
    started = time.time()

    def note(event: str, **detail: Any) -> None:
        timeline.append({"at_s": round(time.time() - started, 2), "event": event, **detail})

    saved_admin = fleet.PG_ADMIN_URL
    try:
        net.up()
        processes["postgres"], admin_url = start_postgres(net, workdir)
        processes["redis"], redis_url = start_redis(net, workdir)
        fleet.PG_ADMIN_URL = admin_url  # fleet.create_database makes the run's database there
        database_url = fleet.create_database()
        env = fleet.configure(database_url, redis_url)
        env["MLCONNECTOR_SWEEP_AFTER_SECONDS"] = str(SWEEP_AFTER_SECONDS)
        os.environ["MLCONNECTOR_SWEEP_AFTER_SECONDS"] = str(SWEEP_AFTER_SECONDS)
        note("stores_ready", db=net.address("db"))
        sandbox_options = {"seed": 13, "rate_limit": None, "token_ttl": TOKEN_TTL}
        host = Sandboxes(net, {
            "st": ["servicetitan", {**sandbox_options, "records": 2, "rate_limit": ST_LIMIT}],
            "ep": ["epicor", {**sandbox_options, "records": 6, "rate_limit": EP_LIMIT}],
        })
        st, ep = host.url("st"), host.url("ep")
        create_integration(host, client_share)
        queue = all_pairs()[fleet.PAIR].queue
        processes["worker2"] = start_worker(net, "worker2", env, queue)
        processes["beat"] = start_beat(net, env)
        note("fleet_ready", hosts=["worker2", "beat"])

        run_flow("vendors")  # untimed: every vendor linked, as after onboarding
        linked = _linked_vendors()
        vendors = [v["id"] for v in _entities(st, "vendors") if v.get("active", True) and str(v["id"]) in linked]
        invoices_before = {(r["VendorNum"], r["InvoiceNum"]) for r in _entities(ep, "ap_invoices")}
        note("vendors_linked", vendors=len(linked))

        half = max(1, records // 2)
        phases = [run_phase("one_host", host, vendors, half, hosts=1)]
        note("phase_done", **phases[-1])
        processes["worker1"] = start_worker(net, "worker1", env, queue)
        note("worker1_ready")
        phases.append(run_phase("two_hosts", host, vendors, half, hosts=2))
        note("phase_done", **phases[-1])

        killed: dict[str, Any] = {}

        def kill_when_due(done: int, queued: int) -> None:
            if not killed and queued and done >= KILL_AT * queued:
                running = _statuses().get("running", 0)
                pids = net.kill_host("worker1")
                processes["worker1"].process.wait(timeout=10)
                killed.update({"at_final": done, "of": queued, "pids": len(pids), "running_at_kill": running,
                               "at": time.time()})
                note("worker1_host_killed", final=done, of=queued, processes_killed=len(pids),
                     records_running=running)

        phases.append(run_phase("kill", host, vendors, records, hosts=2, on_progress=kill_when_due,
                                timeout=max(300.0, 3.0 * records)))
        note("phase_done", **phases[-1])
        written = _written_times()
        after_kill = [t for t in written if killed and t > killed["at"]]
        ended = time.time()

        views = {"st": vendor_view(st, ST_LIMIT, TOKEN_TTL), "ep": vendor_view(ep, EP_LIMIT, TOKEN_TTL)}
        for view in views.values():
            view["refused_at_s"] = [round(t - started, 2) for t in view.pop("refused_at")]
        checked = verify(host, invoices_before)
        log_errors = _log_errors([processes[k] for k in ("worker1", "worker2", "beat") if k in processes])
    finally:
        fleet.PG_ADMIN_URL = saved_admin
        try:
            for name in ("worker1", "worker2", "beat"):
                if name in processes:
                    processes[name].stop()
            if host is not None:
                host.stop()
            fleet.reset_process_state()  # this process's engines and connections to the run's stores
            if "redis" in processes:
                processes["redis"].stop()
            if "postgres" in processes:
                processes["postgres"].stop(sig=signal.SIGINT)  # fast shutdown
        finally:
            net.close()
            shutil.rmtree(workdir, ignore_errors=True)

    one, two, kill = phases
    expected = checked["records_expected"]
    figures: dict[str, Any] = {
        "records": expected,
        "worker_hosts": 2,
        "worker_concurrency": WORKER_CONCURRENCY,
        "one_host_records_per_s": one["records_per_s"],
        "two_hosts_records_per_s": two["records_per_s"],
        "two_hosts_vs_one": round(two["records_per_s"] / max(one["records_per_s"], 1e-9), 3),
        "records_per_s_at_epicor_limit": round(int(EP_LIMIT * client_share) / max(two["epicor_calls_per_record"], 1e-9), 2),
        "kill_phase_records": kill["records"],
        "kill_phase_s": kill["seconds"],
        "killed_at_final": killed.get("at_final"),
        "records_running_at_kill": killed.get("running_at_kill"),
        "processes_killed": killed.get("pids"),
        "recovered_s": round(after_kill[-1] - killed["at"], 1) if after_kill else None,
        "written_exactly_once": checked["written_exactly_once"],
        "exactly_once_ratio": round(checked["written_exactly_once"] / max(expected, 1), 4),
        "lost": checked["lost"],
        "duplicated": checked["duplicated"],
        "wrong_amount_or_lines": checked["wrong_amount_or_lines"],
        "odata_vs_table_disagreements": checked["odata_vs_table_disagreements"],
        "ledger_statuses": checked["ledger_statuses"],
        "epicor_calls_per_record": two["epicor_calls_per_record"],
        "st_calls_per_record": two["st_calls_per_record"],
        "epicor_limit_per_s": EP_LIMIT,
        "epicor_client_limit_per_s": int(EP_LIMIT * client_share),
        "epicor_calls": views["ep"]["api_calls"],
        "epicor_429s": views["ep"]["429s"],
        "epicor_peak_in_1s": views["ep"]["peak_calls_in_any_1s"],
        "epicor_peak_vs_limit": views["ep"]["peak_vs_limit"],
        "st_limit_per_s": ST_LIMIT,
        "st_429s": views["st"]["429s"],
        "st_peak_in_1s": views["st"]["peak_calls_in_any_1s"],
        "st_peak_vs_limit": views["st"]["peak_vs_limit"],
        "token_ttl_s": TOKEN_TTL,
        "epicor_token_requests": views["ep"]["token_requests"],
        "epicor_token_renewals_needed": views["ep"]["token_renewals_needed"],
        "epicor_tokens_per_expiry": views["ep"]["tokens_per_expiry"],
        "epicor_early_token_requests": views["ep"]["early_token_requests"],
        "st_token_requests": views["st"]["token_requests"],
        "st_token_renewals_needed": views["st"]["token_renewals_needed"],
        "st_tokens_per_expiry": views["st"]["tokens_per_expiry"],
        "st_early_token_requests": views["st"]["early_token_requests"],
        "run_s": round(ended - started, 1),
        "phases": phases,
        "vendors_by_endpoint": views,
        "fleet_log_errors": log_errors,
        "problems": checked["problems"],
        "settings": {"hosts": list(HOSTS), "subnet": net.cidr, "worker_concurrency": WORKER_CONCURRENCY,
                     "epicor_limit_per_s": EP_LIMIT, "st_limit_per_s": ST_LIMIT, "client_share_of_limit": client_share,
                     "token_ttl_s": TOKEN_TTL,
                     "sweep_after_s": SWEEP_AFTER_SECONDS, "sweep_every_s": SWEEP_EVERY_SECONDS,
                     "kill_at": KILL_AT,
                     "postgres": f"own cluster, fsync off, tcp_keepalives 5 s/2 s x3, tcp_user_timeout {PG_USER_TIMEOUT_MS} ms",
                     "redis": "own server, no persistence, tcp-keepalive 5"},
        "timeline": timeline,
    }
    if write:
        write_result("multihost", figures)
    return figures


def _log_errors(processes: list[fleet.Process]) -> dict[str, Any]:
    from benchmarks.bench_chaos import _worker_log_errors

    return _worker_log_errors(processes)


def run(records: int) -> dict[str, Any]:
    """benchmarks.run's entry: the figures, or {"skipped": why} where namespaces cannot be made."""
    try:
        netns.check()
    except netns.NetnsUnavailable as error:
        print(f"multihost: skipped: {error}", file=sys.stderr)
        return {"skipped": str(error)}
    return main(records)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve-sandboxes":
        serve_sandboxes(sys.argv[2], json.loads(sys.argv[3]))
        sys.exit(0)
    try:
        netns.check()
    except netns.NetnsUnavailable as error:
        print(f"multihost: skipped: {error}", file=sys.stderr)
        sys.exit(2)
    records = int(sys.argv[1]) if len(sys.argv) > 1 else 80
    share = float(sys.argv[2]) if len(sys.argv) > 2 else CLIENT_SHARE
    result = main(records, client_share=share)
    print(json.dumps({k: v for k, v in result.items() if k not in ("timeline", "vendors_by_endpoint", "phases", "problems")}))
