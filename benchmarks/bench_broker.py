"""Broker: Redis against RabbitMQ quorum queues as the fleet's Celery broker, measured in one
run on the ServiceTitan inventory bills -> Epicor AP invoices pipeline.

    python -m benchmarks.bench_broker [N]

One database, one set of vendor sandboxes (their own process, rate limits off) and one bench
integration serve the whole run; the broker is switched between phases (this process's app
and every process started for the phase). Redis (`fleet.REDIS_URL`, db 8) stays the shared
rate limiter and token cache on both; RabbitMQ is 127.0.0.1:5672 in a virtual host of the
run's own, deleted at the end. The integration's own polls are off: the benchmark sends
each backfill's poll itself. Vendors are synced first and the seeded bills written by an
untimed warm-up round.

1. Throughput: four rounds of N new bills each, Redis, RabbitMQ, RabbitMQ, Redis (machine
   drift weighs on both alike), each through a real `celery worker` (prefork, CONCURRENCY
   children, as bench_pipeline) started on that round's broker. Clock: as bench_pipeline's
   engine (`run_flow`): from the poll's work sent to the last record final. CPU per record:
   the worker tree, the sandboxes, this process, PostgreSQL, redis-server, and on RabbitMQ
   rounds the RabbitMQ server (beam.smp) too. Headline: `rabbitmq_vs_redis` (records/s).
2. A worker host lost mid-backfill, on each broker: two workers (KILL_WORKERS x
   KILL_CONCURRENCY children) and a real beat (`fleet.start_beat`: its sweeper every
   SWEEP_EVERY_SECONDS, re-sending work pending/running longer than SWEEP_AFTER_SECONDS,
   the same on both brokers); N new bills; when a third of them are written, one worker's
   main process is SIGKILLed and its pool children at once after it, as when its host is lost
   (`fleet.Process.kill_main`).
   `recovered_s`: from the kill to the last bill written. How the killed worker's in-hand
   tasks (received, per its log, and never finished) came back is read from the survivor's
   log: the same task id received again (the broker handed the unacknowledged message back)
   or its record re-sent by a sweep (a new task for the record id).

At the end every bill of every round is looked up in Epicor through its OData API (the run's
invoice group, lines expanded) and in the sandbox's table: exactly once, right vendor,
amount and lines; lost, duplicated and wrong are counted per phase. Nothing is estimated:
every figure is measured in this run. Skipped (`{"skipped": why}`) when RabbitMQ does not
answer on 127.0.0.1:5672 or `rabbitmqctl` is missing.
"""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from datetime import datetime
from typing import Any

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks.common import write_result
from benchmarks.rabbitmq import Meter, create_vhost, delete_vhost, queue_types, unavailable
from benchmarks.rabbitmq import url as rabbitmq_url

BROKERS = ("redis", "rabbitmq")
ROUNDS = ("redis", "rabbitmq", "rabbitmq", "redis")
CONCURRENCY = 4  # pool children of the throughput rounds' worker (bench_pipeline's default)
KILL_WORKERS = 2
KILL_CONCURRENCY = 2  # per worker process: four children in all, as in the throughput rounds
KILL_AT = 1 / 3  # share of the phase's bills written when one worker dies
SWEEP_AFTER_SECONDS = 30  # MLCONNECTOR_SWEEP_AFTER_SECONDS on both brokers (default 120 outlasts the run)
GROUP = "BBROKER"  # the Epicor AP invoice group the run writes to
FLOW = "inventory_bills"
UNFINISHED = ("pending", "running")


# ---- the run's fleet -------------------------------------------------------------------------------


class Run:
    """The run's stores, sandboxes and integration, and the broker the fleet is on now."""

    def __init__(self, vhost: str) -> None:
        self.urls = {"redis": fleet.REDIS_URL, "rabbitmq": rabbitmq_url(vhost)}
        self.vhost = vhost
        self.database_url = fleet.create_database()
        self.host: fleet.SandboxHost | None = None
        self.processes: list[fleet.Process] = []
        self.vendors: list[Any] = []
        try:
            self.base = fleet.configure(self.database_url)  # Redis as broker first
            fleet.flush_redis()
            self.host = fleet.SandboxHost({
                "st": ["servicetitan", {"seed": 3, "records": 4, "rate_limit": 0}],
                "ep": ["epicor", {"seed": 3, "records": 6}],
            })
            from mlconnector.flows import all_pairs

            no_polls = {flow.name: 0 for flow in all_pairs()[fleet.PAIR].flows if flow.poll_seconds}
            fleet.create_bench_integration(self.host.info("st"), self.host.info("ep"), GROUP,
                                           extra_config={"poll_seconds": no_polls})
        except BaseException:
            self.close()
            raise

    def env(self, broker: str, **extra: str) -> dict[str, str]:
        return {**self.base, "CELERY_BROKER_URL": self.urls[broker], **extra}

    def use(self, broker: str, **extra: str) -> dict[str, str]:
        """This process on `broker` (polls' work is sent there); the env for its fleet."""
        env = self.env(broker, **extra)
        os.environ.update(env)
        fleet.reset_process_state()
        from mlconnector.celery_app import reload_config

        reload_config()
        return env

    def start_worker(self, env: dict[str, str], concurrency: int, broker: str) -> fleet.Process:
        worker = fleet.start_worker(env, concurrency)
        self.processes.append(worker)
        scheme = self.urls[broker].split("://")[0]
        if f"transport:   {scheme}://" not in worker.log():
            raise RuntimeError(f"the worker is not on {broker}: {worker.log()[-2000:]}")
        return worker

    def add_bills(self, count: int) -> list[str]:
        st = self.host.url("st")  # type: ignore[union-attr]
        before = {b["id"] for b in pipeline._bills(st)}
        with requests.Session() as http:
            for index in range(count):
                http.post(f"{st}/_sandbox/entities/purchase_orders", timeout=30, json={
                    "vendorId": self.vendors[index % len(self.vendors)], "status": "Received"}).raise_for_status()
        return sorted(str(b["id"]) for b in pipeline._bills(st) if b["id"] not in before)

    def close(self) -> None:
        fleet.tear_down(self.database_url, processes=self.processes, host=self.host)


def _meter(run: Run, worker: fleet.Process) -> Meter:
    return Meter({"sandboxes": run.host.process.pid, "workers": worker.pid})  # type: ignore[union-attr]


def _cpu_ms(seconds: dict[str, float], records: int, broker: str) -> dict[str, float]:
    """CPU ms per record by part; the total counts the RabbitMQ server only where it is the broker."""
    parts = {name: round(value * 1000 / max(records, 1), 2) for name, value in seconds.items()}
    counted = [name for name in seconds if broker == "rabbitmq" or name != "rabbitmq"]
    parts["total"] = round(sum(seconds[name] for name in counted) * 1000 / max(records, 1), 2)
    if broker != "rabbitmq":
        parts["rabbitmq_idle_not_counted"] = parts.pop("rabbitmq", 0.0)
    return parts


def throughput_round(run: Run, broker: str, n: int) -> dict[str, Any]:
    env = run.use(broker)
    worker = run.start_worker(env, CONCURRENCY, broker)
    try:
        bills = run.add_bills(n)
        meter = _meter(run, worker).start()
        flow = pipeline.run_flow(FLOW)
        meter.stop()
    finally:
        worker.stop()
    return {"broker": broker, "records": flow["queued"], "seconds": round(flow["seconds"], 3),
            "records_per_s": round(flow["queued"] / flow["seconds"], 1), "cpu_seconds": meter.seconds,
            "bills": bills, "log_errors": _log_errors([worker])}


# ---- the kill -----------------------------------------------------------------------------------


def _written_since(bills: set[str]) -> tuple[int, list[float]]:
    """How many of `bills` are written, and when each was (sorted)."""
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = session.scalars(select(SyncRecord.written_at).where(
            SyncRecord.flow == FLOW, SyncRecord.source_id.in_(sorted(bills)), SyncRecord.written_at.is_not(None))).all()
    times = sorted(r.timestamp() for r in rows)
    return len(times), times


def _records() -> dict[str, Any]:
    from benchmarks.bench_chaos import _records as records

    return records(FLOW)


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _task_lines(process: fleet.Process) -> list[dict[str, Any]]:
    lines = []
    for line in process.log().splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry.get("data"), dict) and entry["data"].get("id"):
            lines.append(entry)
    return lines


def _is_record_task(name: str | None) -> bool:
    """A record's delivery: `<pair>.<flow>` (as send() names them) or the generic process_record."""
    return name in ("mlconnector.process_record", f"{fleet.PAIR}.{FLOW}")


def _victim_tasks(victim: fleet.Process) -> tuple[dict[str, int], set[str]]:
    """The victim's record tasks: task id -> record id of those it received and never
    finished (in hand at the kill), and the ids of those it finished."""
    received: dict[str, int] = {}
    finished: set[str] = set()
    for entry in _task_lines(victim):
        data = entry["data"]
        if entry.get("logger") == "celery.worker.strategy" and _is_record_task(data.get("name")):
            args = ast.literal_eval(data.get("args") or "()")
            received[data["id"]] = int(args[0])
        elif entry.get("logger") == "celery.app.trace":
            finished.add(data["id"])
    return {task: record for task, record in received.items() if task not in finished}, finished & set(received)


def _came_back(in_hand: dict[str, int], done: set[str], survivor: fleet.Process, killed_at: float) -> dict[str, Any]:
    """How the victim's in-hand tasks came back, from the survivor's log: the same task id
    received again (the broker returned the unacknowledged message), or a new task for the
    same record (the sweeper re-sent it)."""
    redelivered: dict[str, float] = {}
    done_again: set[str] = set()
    resent_records: dict[int, float] = {}
    sweeps: list[dict[str, Any]] = []
    for entry in _task_lines(survivor):
        at = _timestamp(entry["timestamp"])
        data = entry["data"]
        if at < killed_at:
            continue
        if entry.get("logger") == "celery.worker.strategy" and _is_record_task(data.get("name")):
            if data["id"] in in_hand:
                redelivered.setdefault(data["id"], at)
            elif data["id"] in done:  # finished by the victim's child, its ack lost with the main process
                done_again.add(data["id"])
            else:
                record = int(ast.literal_eval(data.get("args") or "()")[0])
                resent_records.setdefault(record, at)
        elif entry.get("logger") == "celery.app.trace" and data.get("name") == "mlconnector.sweep":
            try:
                value = ast.literal_eval(data.get("return_value") or "{}")
            except (ValueError, SyntaxError):
                value = {}
            sweeps.append({"at_s": round(at - killed_at, 2), **value})
    by_broker = set(redelivered)
    by_sweep = {task for task, record in in_hand.items() if task not in by_broker and record in resent_records}
    firsts = sorted(redelivered.values())
    swept = sorted(resent_records[in_hand[task]] for task in by_sweep)
    return {
        "in_hand_at_kill": len(in_hand),
        "returned_by_broker": len(by_broker),
        "returned_by_sweeper": len(by_sweep),
        "not_returned": len(in_hand) - len(by_broker) - len(by_sweep),
        "first_broker_return_s": round(firsts[0] - killed_at, 2) if firsts else None,
        "last_broker_return_s": round(firsts[-1] - killed_at, 2) if firsts else None,
        "first_sweeper_return_s": round(swept[0] - killed_at, 2) if swept else None,
        "last_sweeper_return_s": round(swept[-1] - killed_at, 2) if swept else None,
        "finished_but_unacked_redelivered": len(done_again),
        "sweeps_after_kill": sweeps,
    }


def kill_phase(run: Run, broker: str, n: int) -> dict[str, Any]:
    from mlconnector import engine
    from mlconnector.tasks import send

    env = run.use(broker, MLCONNECTOR_SWEEP_AFTER_SECONDS=str(SWEEP_AFTER_SECONDS))
    workers = [run.start_worker(env, KILL_CONCURRENCY, broker) for _ in range(KILL_WORKERS)]
    beat = fleet.start_beat(env)
    run.processes.append(beat)
    beat_started = time.time()
    try:
        bills = run.add_bills(n)
        wanted = set(bills)
        sent_at = time.time()
        poll = engine.poll_flow(fleet.INTEGRATION, FLOW)
        send(poll.enqueue)
        fleet.wait_until(lambda: _written_since(wanted)[0] >= KILL_AT * n, timeout=300, interval=0.05,
                         message=f"{broker}: a third of the bills never written: {pipeline.statuses(FLOW)}")
        at_kill = pipeline.statuses(FLOW)
        written_at_kill = _written_since(wanted)[0]
        victim, survivor = workers
        killed_at = time.time()
        victim.kill_main(orphans_after=0.0)  # a host lost: its pool children go with it, their tasks unfinished
        kill_took = time.time() - killed_at

        def done() -> bool:
            records = _records()
            return all(records.get(b, {}).get("status") in pipeline.FINAL for b in wanted)

        fleet.wait_until(done, timeout=max(300.0, 2.0 * n), interval=0.25,
                         message=f"{broker}: not every bill final after the kill: {pipeline.statuses(FLOW)}")
        _, times = _written_since(wanted)
        finished_at = time.time()
        in_hand, victim_done = _victim_tasks(victim)
        records = _records()
        deliveries: dict[str, int] = {}
        for bill in wanted:
            key = str(records.get(bill, {}).get("deliveries"))
            deliveries[key] = deliveries.get(key, 0) + 1
        figures = {
            "broker": broker,
            "records": poll.queued,
            "written_at_kill": written_at_kill,
            "running_at_kill": at_kill.get("running", 0),
            "kill_s": round(kill_took, 2),
            "recovered_s": round(times[-1] - killed_at, 2) if times else None,
            "backfill_s": round(times[-1] - sent_at, 2) if times else None,
            "kill_after_send_s": round(killed_at - sent_at, 2),
            "beat_started_before_kill_s": round(killed_at - beat_started, 2),
            **_came_back(in_hand, victim_done, survivor, killed_at),
            "deliveries_per_record": dict(sorted(deliveries.items())),
            "statuses": {k: v for k, v in _statuses_of(wanted, records).items()},
            "waited_s": round(finished_at - killed_at, 1),
            "bills": bills,
            "log_errors": _log_errors([*workers, beat]),
        }
        if broker == "rabbitmq":
            figures["queues_by_type"] = queue_types(run.vhost)
    finally:
        for process in (*workers, beat):
            process.stop()
    return figures


def _statuses_of(bills: set[str], records: dict[str, Any]) -> dict[str, int]:
    statuses: dict[str, int] = {}
    for bill in bills:
        status = records.get(bill, {}).get("status", "absent")
        statuses[status] = statuses.get(status, 0) + 1
    return statuses


def _log_errors(processes: list[fleet.Process]) -> dict[str, Any]:
    from benchmarks.bench_chaos import _worker_log_errors

    return _worker_log_errors(processes)


# ---- Epicor's answer ----------------------------------------------------------------------------


def verify(run: Run, invoices_before: set[tuple[Any, Any]], phases: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Every bill of each phase against Epicor's OData API and the sandbox's table."""
    from benchmarks.bench_chaos import _entities, _linked_vendors, carriers, classify, expected_invoice
    from benchmarks.bench_multihost import odata_invoices

    assert run.host is not None
    bills = {str(b["id"]): b for b in _entities(run.host.url("st"), "inventory_bills")}
    expected = {bill_id: expected_invoice(bill) for bill_id, bill in bills.items()}
    linked = _linked_vendors()
    via_api = [r for r in odata_invoices(run.host.info("ep"), GROUP) if (r["VendorNum"], r["InvoiceNum"]) not in invoices_before]
    in_table = [r for r in _entities(run.host.url("ep"), "ap_invoices")
                if r.get("GroupID") == GROUP and (r["VendorNum"], r["InvoiceNum"]) not in invoices_before]
    found = carriers(expected, linked, via_api)
    by_table = carriers(expected, linked, in_table)
    records = _records()
    out: dict[str, dict[str, Any]] = {}
    for phase, ids in phases.items():
        counts = {"exactly_once": 0, "lost": 0, "duplicated": 0, "wrong": 0}
        problems: dict[str, Any] = {}
        disagreements = 0
        for bill_id in ids:
            want = expected.get(bill_id)
            if want is None:
                counts["lost"] += 1
                problems[bill_id] = {"problem": "not in ServiceTitan"}
                continue
            kind, detail = classify(want, linked.get(want.st_vendor_id), found[bill_id])
            counts[kind] += 1
            if len(found[bill_id]) != len(by_table[bill_id]):
                disagreements += 1
            if kind != "exactly_once" and len(problems) < 5:
                problems[bill_id] = {"problem": kind, **detail,
                                     "ledger": {k: records.get(bill_id, {}).get(k) for k in ("status", "deliveries",
                                                                                           "last_error")}}
        out[phase] = {"bills": len(ids), "written_exactly_once": counts["exactly_once"], "lost": counts["lost"],
                      "duplicated": counts["duplicated"], "wrong_amount_or_lines": counts["wrong"],
                      "odata_vs_table_disagreements": disagreements, "problems": problems}
    return out


# ---- the run ------------------------------------------------------------------------------------


def _sum_rounds(rounds: list[dict[str, Any]], broker: str) -> dict[str, Any]:
    mine = [r for r in rounds if r["broker"] == broker]
    records = sum(r["records"] for r in mine)
    seconds = sum(r["seconds"] for r in mine)
    cpu: dict[str, float] = {}
    for r in mine:
        for key, value in r["cpu_seconds"].items():
            cpu[key] = cpu.get(key, 0.0) + value
    return {"records": records, "seconds": seconds, "rate": records / seconds, "cpu_ms": _cpu_ms(cpu, records, broker)}


def main(n: int = 60) -> dict[str, Any]:
    from benchmarks.bench_chaos import _entities, _linked_vendors

    why = unavailable()
    if why:
        raise RuntimeError(f"broker: {why}")
    started = time.time()
    vhost = create_vhost()
    run: Run | None = None
    try:
        run = Run(vhost)
        assert run.host is not None
        # Untimed: vendors linked and the seeded bills written, on Redis, as after onboarding.
        env = run.use("redis")
        warm = run.start_worker(env, CONCURRENCY, "redis")
        try:
            pipeline.run_flow("vendors")
            pipeline.run_flow(FLOW)
        finally:
            warm.stop()
        linked = _linked_vendors()
        run.vendors = [v["id"] for v in _entities(run.host.url("st"), "vendors")
                       if v.get("active", True) and str(v["id"]) in linked]
        invoices_before = {(r["VendorNum"], r["InvoiceNum"]) for r in _entities(run.host.url("ep"), "ap_invoices")}

        rounds = [throughput_round(run, broker, n) for broker in ROUNDS]
        kills = {broker: kill_phase(run, broker, n) for broker in BROKERS}
        phases = {f"round{i + 1}_{r['broker']}": r["bills"] for i, r in enumerate(rounds)}
        phases.update({f"kill_{broker}": k["bills"] for broker, k in kills.items()})
        checked = verify(run, invoices_before, phases)
        stuck = sum(v for k, v in pipeline.statuses(FLOW).items() if k in UNFINISHED)
    finally:
        try:
            if run is not None:
                run.close()
        finally:
            delete_vhost(vhost)

    totals = {broker: _sum_rounds(rounds, broker) for broker in BROKERS}
    redis, rabbit = totals["redis"], totals["rabbitmq"]
    throughput_checked = [v for k, v in checked.items() if k.startswith("round")]
    figures: dict[str, Any] = {
        "records": n,
        "concurrency": CONCURRENCY,
        "rounds": [r["broker"] for r in rounds],
        "redis_records_per_s": round(redis["rate"], 1),
        "rabbitmq_records_per_s": round(rabbit["rate"], 1),
        "rabbitmq_vs_redis": round(rabbit["rate"] / redis["rate"], 3),
        "round_records_per_s": [[r["broker"], r["records_per_s"]] for r in rounds],
        "redis_cpu_ms_per_record": redis["cpu_ms"]["total"],
        "rabbitmq_cpu_ms_per_record": rabbit["cpu_ms"]["total"],
        "rabbitmq_vs_redis_cpu": round(rabbit["cpu_ms"]["total"] / max(redis["cpu_ms"]["total"], 1e-9), 3),
        "cpu_ms_per_record": {"redis": redis["cpu_ms"], "rabbitmq": rabbit["cpu_ms"]},
        "throughput_written_exactly_once": sum(c["written_exactly_once"] for c in throughput_checked),
        "throughput_lost": sum(c["lost"] for c in throughput_checked),
        "throughput_duplicated": sum(c["duplicated"] for c in throughput_checked),
    }
    for broker, kill in kills.items():
        check = checked[f"kill_{broker}"]
        figures.update({
            f"{broker}_recovered_s": kill["recovered_s"],
            f"{broker}_kill_written_exactly_once": check["written_exactly_once"],
            f"{broker}_kill_lost": check["lost"],
            f"{broker}_kill_duplicated": check["duplicated"],
            f"{broker}_in_hand_at_kill": kill["in_hand_at_kill"],
            f"{broker}_returned_by_broker": kill["returned_by_broker"],
            f"{broker}_returned_by_sweeper": kill["returned_by_sweeper"],
        })
    if kills["redis"]["recovered_s"] and kills["rabbitmq"]["recovered_s"] is not None:
        figures["rabbitmq_vs_redis_recovered_s"] = round(kills["rabbitmq"]["recovered_s"] / kills["redis"]["recovered_s"], 3)
    figures.update({
        "lost": sum(c["lost"] for c in checked.values()),
        "duplicated": sum(c["duplicated"] for c in checked.values()),
        "wrong_amount_or_lines": sum(c["wrong_amount_or_lines"] for c in checked.values()),
        "stuck": stuck,
        "kill": {broker: {k: v for k, v in kill.items() if k != "bills"} for broker, kill in kills.items()},
        "epicor_check": {phase: {k: v for k, v in c.items()} for phase, c in checked.items()},
        "round_log_errors": [r["log_errors"] for r in rounds],
        "settings": {"sweep_after_s": SWEEP_AFTER_SECONDS, "sweep_every_s": _sweep_every(),
                     "sweeper": "a real celery beat (fleet.start_beat) in each kill phase, on that phase's broker",
                     "visibility_timeout_s": _visibility_timeout(), "kill_workers": KILL_WORKERS,
                     "kill_concurrency": KILL_CONCURRENCY, "kill_at_written_share": round(KILL_AT, 3),
                     "rabbitmq_queue_type": "quorum", "bills_per_round": n},
        "run_s": round(time.time() - started, 1),
    })
    write_result("broker", figures)
    return figures


def _sweep_every() -> float:
    from mlconnector.celery_app import SWEEP_EVERY_SECONDS

    return SWEEP_EVERY_SECONDS


def _visibility_timeout() -> int:
    import celeryconfig

    return celeryconfig.VISIBILITY_TIMEOUT


def run(n: int) -> dict[str, Any]:
    """benchmarks.run's entry: the figures, or {"skipped": why} where RabbitMQ cannot be used."""
    why = unavailable()
    if why:
        print(f"broker: skipped: {why}", file=sys.stderr)
        return {"skipped": why}
    return main(n)


if __name__ == "__main__":
    why = unavailable()
    if why:
        print(f"broker: skipped: {why}", file=sys.stderr)
        sys.exit(2)
    result = main(*(int(a) for a in sys.argv[1:2]))
    print(json.dumps({k: v for k, v in result.items() if k not in ("epicor_check", "round_log_errors")}))
