"""Where a worker's CPU goes for one record, by part: the engine's own code (ledger, audit,
resolver, locks), the pair's handlers and mappings, the vendor clients, and the libraries
under them (SQLAlchemy and psycopg2, requests and urllib3, Redis, pydantic, JSON, logging).

    python -m benchmarks.profile_records [pair] [N]     # pair: acumatica, servicenow, procore, syspro, pipeline

The pair's benchmark fleet is set up as its benchmark does (sandboxes on their own host,
PostgreSQL, the untimed onboarding flow run by a real worker); then the worker is stopped and
this process polls the timed flow and delivers each record itself under cProfile, one after
another, exactly as a pool process runs `process_record`. CPU is attributed by the file each
function lives in (self time), so the parts add up to the total. Broker hand-off and the
Celery task wrapper are not in it (they are measured by the pair benchmarks' worker CPU).
"""

from __future__ import annotations

import cProfile
import importlib
import json
import pstats
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks.common import write_result


@dataclass(frozen=True)
class PairProfile:
    module: str  # the pair's benchmark module
    flow: str  # the timed flow
    onboarding: Callable[[Any, Any], Any]  # (benchmark module, setup) -> untimed prerequisite


PAIRS: dict[str, PairProfile] = {
    "pipeline": PairProfile("bench_pipeline", "inventory_bills", lambda m, s: None),
    "acumatica": PairProfile("bench_acumatica", "invoices", lambda m, s: m.sync_customers(s)),
    "servicenow": PairProfile("bench_servicenow", "purchase_orders", lambda m, s: m.sync_vendors(s)),
    "procore": PairProfile("bench_procore", "purchase_orders", lambda m, s: pipeline.run_flow("vendors")),
    "syspro": PairProfile("bench_syspro", "invoices", lambda m, s: pipeline.run_flow("vendors")),
}

# First match wins: a path fragment -> the part it belongs to.
PARTS: tuple[tuple[str, str], ...] = (
    ("/mlconnector/http/", "engine: http client kit"),
    ("/mlconnector/", "engine"),
    ("/tasks/", "pair handlers"),
    ("/mappings/", "pair mappings"),
    ("/connectors/", "vendor clients"),
    ("/sqlalchemy/", "sqlalchemy"),
    ("/psycopg2/", "psycopg2"),
    ("/requests/", "requests+urllib3"),
    ("/urllib3/", "requests+urllib3"),
    ("/http/client.py", "requests+urllib3"),
    ("/redis/", "redis"),
    ("/pydantic", "pydantic"),
    ("/json/", "json"),
    ("/structlog/", "logging"),
    ("/logging/", "logging"),
    ("/prometheus_client/", "metrics"),
    ("/cryptography/", "cryptography"),
    ("/celery/", "celery"),
    ("/kombu/", "celery"),
    ("/xml/", "xml"),
)


def part_of(filename: str, function: str) -> str:
    for fragment, part in PARTS:
        if fragment in filename:
            return part
    if filename == "~":  # built-ins: named after the call ({method 'execute' of 'psycopg2...'})
        if "psycopg2" in function:
            return "psycopg2"
        if "socket" in function or "ssl" in function or "select" in function or "poll" in function:
            return "sockets"
        if "json" in function:
            return "json"
        return "builtins"
    return "python stdlib/other"


def by_part(profile: cProfile.Profile) -> dict[str, float]:
    """Self CPU seconds per part."""
    totals: dict[str, float] = {}
    stats = pstats.Stats(profile)
    for (filename, _, function), (_, _, self_time, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        part = part_of(filename, function)
        totals[part] = totals.get(part, 0.0) + self_time
    return totals


def _deliver(engine: Any, ids: list[int]) -> tuple[float, dict[str, int]]:
    """Deliver each record in this process; the CPU seconds it took and the outcomes."""
    outcomes: dict[str, int] = {}
    started = time.process_time()
    for record_id in ids:
        try:
            outcome = engine.process_record(record_id).outcome
        except engine.RetryLater:
            outcome = "retry"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return time.process_time() - started, outcomes


def _record_ids(flow: str) -> list[int]:
    from sqlalchemy import select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return list(session.scalars(select(SyncRecord.id).where(SyncRecord.flow == flow, SyncRecord.status == "pending")
                                    .order_by(SyncRecord.id)))


def _count_statements() -> dict[str, Any]:
    """Statements and commits this process sends from now on (SQLAlchemy engine events)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: dict[str, Any] = {"statements": 0, "commits": 0, "kinds": {}}

    def statement(_conn: Any, _cursor: Any, text: str, *_: Any) -> None:
        counts["statements"] += 1
        kind = " ".join(text.split()[:4])[:60]
        counts["kinds"][kind] = counts["kinds"].get(kind, 0) + 1

    def commit(*_: Any) -> None:
        counts["commits"] += 1

    event.listen(Engine, "before_cursor_execute", statement)
    event.listen(Engine, "commit", commit)
    return counts


def profile_pair(name: str, n: int) -> dict[str, Any]:
    spec = PAIRS[name]
    module = importlib.import_module(f"benchmarks.{spec.module}")
    s = module.setup(n, 4)
    try:
        spec.onboarding(module, s)
        if s.worker is not None:  # this process delivers the timed flow itself
            s.worker.stop()
            s.worker = None
        from mlconnector import engine

        engine.poll_flow(fleet.INTEGRATION, spec.flow)
        ids = _record_ids(spec.flow)
        _, outcomes = _deliver(engine, ids[:2])  # warm: connectors built, statements compiled
        ids = ids[2:]
        half = len(ids) // 2
        plain_cpu, first = _deliver(engine, ids[:half])
        for outcome, count in first.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count  # unprofiled: the true CPU per record
        statements = _count_statements()
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        profiled_cpu, more = _deliver(engine, ids[half:])
        profile.disable()
        for outcome, count in more.items():
            outcomes[outcome] = outcomes.get(outcome, 0) + count
    finally:
        s.close()
    profile.dump_stats(f"/tmp/profile_{name}.prof")  # for pstats / snakeviz
    per = max(len(ids) - half, 1)
    true_ms = plain_cpu * 1000 / max(half, 1)
    scale = true_ms / max(profiled_cpu * 1000 / per, 1e-9)  # the profiler's own cost taken out, pro rata
    parts = {part: round(seconds * 1000 / per * scale, 3)
             for part, seconds in sorted(by_part(profile).items(), key=lambda kv: -kv[1])}
    top = pstats.Stats(profile)
    ours = sorted(((k, v) for k, v in top.stats.items()  # type: ignore[attr-defined]
                   if any(f in k[0] for f in ("/mlconnector/", "/tasks/", "/mappings/", "/connectors/"))),
                  key=lambda kv: -kv[1][3])[:15]
    return {
        "pair": name, "records": len(ids), "outcomes": outcomes,
        "sql_statements_per_record": round(statements["statements"] / per, 2),
        "commits_per_record": round(statements["commits"] / per, 2),
        "statements_per_record_by_kind": {k: round(v / per, 2) for k, v in sorted(statements["kinds"].items(), key=lambda kv: -kv[1])},
        "cpu_ms_per_record": round(true_ms, 3),
        "cpu_ms_per_record_by_part": parts,  # profiled, scaled to the unprofiled total
        "our_functions_cumulative_ms_per_record": {f"{k[0].split('/work/main/')[-1]}:{k[1]}:{k[2]}": round(v[3] * 1000 / per, 3)
                                                   for k, v in ours},
    }


def main(pair: str = "acumatica", n: int = 200) -> dict[str, Any]:
    figures = profile_pair(pair, n)
    write_result(f"profile_{pair}", figures)
    return figures


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(main(args[0] if args else "acumatica", int(args[1]) if len(args) > 1 else 200), indent=1))
