"""What a pair's throughput benchmark shares: the fleet's run of one flow against a thread
pool making the same vendor calls, each side metered, its vendor calls counted by the
sandboxes themselves, and the figures both sides are compared by.

A pair's benchmark (bench_acumatica, bench_servicenow) says only what is its own: the
sandboxes, how records are added, the baseline's calls for one record, and the minimum.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import requests

from benchmarks import bench_pipeline as pipeline
from benchmarks import fleet
from benchmarks.common import CpuMeter


class HostedSandbox:
    """A sandbox served by the benchmark's sandbox host, in the shape the pair harness reads."""

    def __init__(self, host: fleet.SandboxHost, name: str) -> None:
        self.host, self.name = host, name

    @property
    def url(self) -> str:
        return self.host.url(self.name)

    def info(self) -> dict[str, Any]:
        return self.host.info(self.name)


def sandbox_set(host: fleet.SandboxHost, systems: dict[str, str]) -> Any:
    """The pair's systems ({system: sandbox name on the host}) as the harness's SandboxSet."""
    from mlconnector.harness import SandboxSet

    return SandboxSet({system: HostedSandbox(host, name) for system, name in systems.items()})


def meter(host: fleet.SandboxHost, worker: fleet.Process | None) -> CpuMeter:
    trees = {"sandboxes": host.process.pid}
    if worker is not None:
        trees["workers"] = worker.process.pid
    return CpuMeter(trees)


def stats(host: fleet.SandboxHost, names: Iterable[str], reset: bool = False) -> dict[str, dict[str, Any]]:
    return {name: pipeline.sandbox_stats(host, name, reset=reset) for name in names}


def reset(host: fleet.SandboxHost, names: Iterable[str]) -> None:
    for name in names:
        requests.post(f"{host.url(name)}/_sandbox/stats/reset", timeout=10).raise_for_status()


def run_engine(host: fleet.SandboxHost, worker: fleet.Process | None, flow: str, names: tuple[str, ...]) -> dict[str, Any]:
    """One poll of `flow` and the work it sends, timed and metered; the calls the poll made
    and the calls the work made are read apart."""
    from mlconnector import engine
    from mlconnector.tasks import send

    def final() -> int:
        return sum(v for k, v in pipeline.statuses(flow).items() if k in pipeline.FINAL)

    already = final()
    reset(host, names)
    metered = meter(host, worker).start()
    poll_started = time.time()
    result = engine.poll_flow(fleet.INTEGRATION, flow)
    poll_seconds = time.time() - poll_started
    poll_stats = stats(host, names, reset=True)  # before the clock starts: the poll is counted apart
    sent_at = time.time()
    send(result.enqueue)
    queued = result.queued
    fleet.wait_until(lambda: final() >= already + queued, timeout=600, interval=0.1,
                     message=f"{flow}: not every record final: {pipeline.statuses(flow)}")
    seen_done = time.time()
    metered.stop()
    work_stats = stats(host, names)
    last = pipeline._last_written(flow) or seen_done
    done = min(seen_done, max(last, sent_at))
    return {"found": result.found, "queued": queued, "poll_seconds": poll_seconds, "seconds": done - sent_at,
            "statuses": pipeline.statuses(flow), "cpu_seconds": metered.seconds,
            "poll_stats": poll_stats, "work_stats": work_stats}


def run_pool(host: fleet.SandboxHost, worker: fleet.Process | None, names: tuple[str, ...], concurrency: int,
             one: Callable[[Any], str], ids: list[Any]) -> dict[str, Any]:
    """The baseline: `one(id)` for every id from a plain thread pool, timed, metered, counted."""
    reset(host, names)
    outcomes: dict[str, int] = {}
    metered = meter(host, worker).start()
    started = time.time()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for outcome in pool.map(one, ids):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    seconds = time.time() - started
    metered.stop()
    return {"records": len(ids), "seconds": seconds, "statuses": outcomes, "cpu_seconds": metered.seconds,
            "work_stats": stats(host, names)}


def idle_poll(host: fleet.SandboxHost, flow: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The calls a poll of `flow` makes when nothing changed."""
    from mlconnector import engine
    from mlconnector.tasks import send

    reset(host, names)
    result = engine.poll_flow(fleet.INTEGRATION, flow)
    send(result.enqueue)
    counted = stats(host, names)
    return {"found": result.found, "queued": result.queued, "calls": sum(v["total"] for v in counted.values()),
            "by_endpoint": {name: v["by_endpoint"] for name, v in counted.items() if v["total"]}}


def merge_endpoints(runs: list[dict[str, Any]], name: str, key: str = "work_stats") -> dict[str, dict[str, int]]:
    merged: dict[str, dict[str, int]] = {}
    for run in runs:
        for endpoint, statuses in run[key][name]["by_endpoint"].items():
            into = merged.setdefault(endpoint, {})
            for status, count in statuses.items():
                into[status] = into.get(status, 0) + count
    return merged


def calls(runs: list[dict[str, Any]], name: str, key: str = "work_stats") -> int:
    return sum(r[key][name]["total"] for r in runs)


def throughput_figures(engine_runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]],
                       concurrency: int) -> dict[str, Any]:
    """Records/s of each side and their ratio, overall and per round, with CPU per record."""
    engine_totals = pipeline._totals(engine_runs, "queued")
    base_totals = pipeline._totals(baseline_runs, "records")
    return {
        "records": engine_totals["records"],
        "concurrency": concurrency,
        "rounds": len(engine_runs),
        "engine_records_per_s": round(engine_totals["rate"], 1),
        "baseline_records_per_s": round(base_totals["rate"], 1),
        "engine_vs_baseline": round(engine_totals["rate"] / base_totals["rate"], 3),
        "round_ratios": [round((e["queued"] / e["seconds"]) / (b["records"] / b["seconds"]), 3)
                         for e, b in zip(engine_runs, baseline_runs)],
        "target_ratio": 0.8,
        "engine_seconds": round(engine_totals["seconds"], 3),
        "engine_poll_seconds": round(sum(r["poll_seconds"] for r in engine_runs), 3),
        "baseline_seconds": round(base_totals["seconds"], 3),
        "baseline_outcomes": base_totals["statuses"],
        "baseline_records": base_totals["records"],
        "cpu_ms_per_record": {"engine": engine_totals["cpu_ms"], "baseline": base_totals["cpu_ms"]},
    }


def call_figures(engine_runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]], records: int,
                 baseline_records: int, sides: list[tuple[str, str, str, str, int]],
                 idle: dict[str, dict[str, Any]], idle_targets: dict[str, int]) -> dict[str, Any]:
    """Vendor calls per record against the minimum, per system and in all, and per idle poll.

    `sides`: one (label, system, engine sandbox, baseline sandbox, minimum calls for all the
    records) per system; `idle`: idle_poll() results by flow.
    """
    per = max(records, 1)
    figures: dict[str, Any] = {}
    made = minimum = baseline = 0
    for label, _, engine_name, base_name, least in sides:
        count = calls(engine_runs, engine_name)
        figures[f"{label}_calls"] = count
        figures[f"{label}_calls_per_record"] = round(count / per, 3)
        figures[f"minimum_{label}_per_record"] = round(least / per, 3)
        made, minimum, baseline = made + count, minimum + least, baseline + calls(baseline_runs, base_name)
    figures.update({
        "calls_per_record": round(made / per, 3),
        "minimum_per_record": round(minimum / per, 3),
        "calls_vs_minimum": round(made / max(minimum, 1), 3),
        "baseline_calls_per_record": round(baseline / max(baseline_records, 1), 3),
        "poll_calls": [sum(v["total"] for v in r["poll_stats"].values()) for r in engine_runs],
        **{f"idle_poll_{flow}_calls": result["calls"] for flow, result in idle.items()},
        "idle_poll_target_calls": dict(idle_targets),
        "by_endpoint": {system: merge_endpoints(engine_runs, e) for _, system, e, _, _ in sides},
        "baseline_by_endpoint": {system: merge_endpoints(baseline_runs, b) for _, system, _, b, _ in sides},
        "poll_by_endpoint": {system: merge_endpoints(engine_runs, e, "poll_stats") for _, system, e, _, _ in sides},
        "idle_poll_by_endpoint": {flow: result["by_endpoint"] for flow, result in idle.items()},
    })
    return figures


@dataclass
class PairSetup:
    """A pair's benchmark fleet: its database, sandbox host, worker, and the source records
    the timed flow will move (`ids`, replaced as rounds add more)."""

    concurrency: int
    database_url: str
    host: fleet.SandboxHost
    ids: list[Any]
    worker: fleet.Process | None = None

    def close(self) -> None:
        fleet.tear_down(self.database_url, processes=[self.worker], host=self.host)


def start(pair: str, sandboxes: dict[str, list[Any]], systems: dict[str, str], source_ids: Callable[[fleet.SandboxHost], list[Any]],
          concurrency: int, queues: str, overrides: dict[str, Any], webhook_key: str | None = None) -> PairSetup:
    """Database, sandboxes (`sandboxes`: name -> [vendor, options] for the host), the pair's
    integration registered on `systems` ({system: sandbox name}), and a worker; everything
    started is stopped again if a step fails."""
    from mlconnector.harness import register

    database_url = fleet.create_database()
    env = fleet.configure(database_url)
    fleet.flush_redis()
    host = fleet.SandboxHost(sandboxes)
    worker = None
    try:
        ids = source_ids(host)
        register(fleet.INTEGRATION, pair, sandbox_set(host, systems), overrides=overrides,
                 **({"webhook_key": webhook_key} if webhook_key else {}))
        worker = fleet.start_worker(env, concurrency, queues=queues)
        return PairSetup(concurrency, database_url, host, ids, worker)
    except BaseException:
        if worker is not None:
            worker.stop()
        host.stop()
        fleet.drop_database(database_url)
        raise


def baseline_connectors(host: Any, pair: str, systems: dict[str, str], overrides: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a baseline thread pool calls with: the pair's integration config against the
    sandboxes (`systems`: system -> sandbox name on the host) and one connector per system,
    built as a worker process builds them (Redis token cache, shared limiter). Returns
    (config, connectors by system)."""
    from connectors import connector_class
    from mlconnector.flows import get_pair
    from mlconnector.harness import sandbox_integration_config
    from mlconnector.http.runtime import get_runtime

    sandboxes = sandbox_set(host, systems)
    config = sandbox_integration_config(get_pair(pair), sandboxes, overrides)
    runtime = get_runtime()
    connectors = {system: connector_class(system).create(config["systems"][system], sandboxes.credentials(system), runtime)
                  for system in systems}
    return config, connectors
