"""Idle tenants: what N enabled integrations that have nothing new cost the fleet.

    python -m benchmarks.bench_idle [N]

One sandbox process serves every integration (an integration is a config row pointing at a
sandbox URL). Each integration's flow watermarks start at "now", so every poll asks for
what changed since and gets nothing. The same run measures N/10 and then N integrations,
each with a fresh Celery beat (the platform's scheduler) and the same worker, over two poll
intervals after one interval of warm-up:

- beat's CPU (its schedule work), the worker tree's CPU, polls per minute;
- how the polls spread over the interval: the most beat sent, and the most workers started,
  in any one second vs the mean (the worker queue smooths a burst into a backlog);
- the broker's queue depth and Redis commands, PostgreSQL commits and rows touched;
- ratios at N vs N/10 per idle integration-hour: a fleet whose idle cost grows with
  tenants (a schedule re-read whole, a burst at the top of the interval) shows above 1.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import psutil

from benchmarks import fleet
from benchmarks.common import write_result

POLLED_FLOW = "inventory_bills"  # one polled flow per tenant keeps the poll rate within a 2-core machine
SAMPLE_SECONDS = 0.5  # watermark sampling: shorter than the gap between two polls of one flow
WARM_UP_INTERVALS = 1.0  # beat's first pass of the schedule is not the steady state
WINDOW_INTERVALS = 2.0


def _interval(n: int) -> float:
    """Seconds between polls of one flow: about 17 polls/s at the larger size, whatever it is."""
    return max(30.0, round(n / 17.0))


def _add_integrations(start: int, stop: int, st_info: dict[str, Any], ep_info: dict[str, Any],
                      interval: float) -> None:
    """Integrations start..stop-1, their credentials sealed, their watermarks at now (idle)."""
    from cryptography.fernet import MultiFernet

    from mlconnector import vault
    from mlconnector.db.models import Watermark
    from mlconnector.db.session import session_scope
    from mlconnector.flows import get_pair
    from mlconnector.integrations import create_integration

    st_config, st_creds, ep_config, ep_creds = fleet.system_settings(st_info, ep_info)
    pair = get_pair(fleet.PAIR)
    polls = {flow.name: (interval if flow.name == POLLED_FLOW else 0.0) for flow in pair.flows}
    now = datetime.now(timezone.utc)
    with session_scope() as session:
        cipher: MultiFernet | None = None
        for index in range(start, stop):
            integration_id = f"idle-{index:05d}"
            config = {**fleet.integration_config(st_config, ep_config, "BIDL"), "poll_seconds": polls}
            create_integration(session, integration_id, fleet.PAIR, config)
            session.flush()
            if cipher is None:
                cipher = vault._sealing_cipher(session)
            vault.store(session, integration_id, "servicetitan", st_creds, cipher)
            vault.store(session, integration_id, "epicor", ep_creds, cipher)
            for flow in pair.flows:
                session.add(Watermark(integration_id=integration_id, flow=flow.name, value=now, last_poll_found=0))


class PollSampler:
    """Every poll started, read from the watermarks' `last_poll_at` (the poll's start time)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str, datetime]] = set()
        self.max_queue = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import redis
        import sqlalchemy as sa

        from mlconnector.db.session import get_engine

        broker = redis.Redis.from_url(fleet.REDIS_URL)
        queue = _pair_queue()
        while not self._stop.is_set():
            with get_engine().connect() as connection:
                rows = connection.execute(sa.text(
                    "SELECT integration_id, flow, last_poll_at FROM watermarks WHERE last_poll_at IS NOT NULL")).all()
            self.seen.update((r[0], r[1], r[2] if r[2].tzinfo else r[2].replace(tzinfo=timezone.utc)) for r in rows)
            self.max_queue = max(self.max_queue, int(broker.llen(queue)))
            self._stop.wait(SAMPLE_SECONDS)

    def start(self) -> "PollSampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        return sorted(at for _, _, at in self.seen if start <= at < end)


def _sends(beat_log: str, start: datetime, end: datetime) -> list[datetime]:
    """When beat sent each poll, from its log ("Sending due task poll:..."): the dispatch
    spread itself, before any worker queue smooths it."""
    import json

    sent = []
    for line in beat_log.splitlines():
        if "Sending due task poll:" not in line or not line.startswith("{"):
            continue
        at = datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00"))
        if start <= at < end:
            sent.append(at)
    return sent


def _spread(moments: list[datetime], start: datetime, seconds: float) -> tuple[int, float | None]:
    """The most in any one second, and that over the mean per second."""
    per_second = Counter(int((at - start).total_seconds()) for at in moments)
    busiest = max(per_second.values(), default=0)
    return busiest, (round(busiest / (len(moments) / seconds), 2) if moments else None)


def _pair_queue() -> str:
    from mlconnector.flows import get_pair

    return get_pair(fleet.PAIR).queue


def _cpu(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        return sum(p.cpu_times().user + p.cpu_times().system for p in [root, *root.children(recursive=True)])
    except psutil.NoSuchProcess:
        return 0.0


def _rss_mb(pid: int) -> float:
    """Resident memory of a process tree: what the worker keeps per tenant it has polled."""
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2 ** 20
    except psutil.NoSuchProcess:
        return 0.0


def _db_counters() -> dict[str, int]:
    import sqlalchemy as sa

    from mlconnector.db.session import get_engine

    with get_engine().connect() as connection:
        row = connection.execute(sa.text(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_fetched FROM pg_stat_database "
            "WHERE datname = current_database()")).one()
    return {"commits": int(row[0]), "inserted": int(row[1]), "updated": int(row[2]), "fetched": int(row[3])}


def _redis_commands() -> int:
    import redis

    return int(redis.Redis.from_url(fleet.REDIS_URL).info("stats")["total_commands_processed"])


def _phase(n: int, interval: float, env: dict[str, str], worker: fleet.Process) -> dict[str, Any]:
    """Start beat over n integrations, warm up, then measure WINDOW_INTERVALS intervals."""
    sampler = PollSampler().start()
    beat = fleet.start_beat(env)
    try:
        time.sleep(interval * WARM_UP_INTERVALS)
        began = datetime.now(timezone.utc)
        cpu0 = {"beat": _cpu(beat.pid), "worker": _cpu(worker.pid)}
        db0, redis0, t0 = _db_counters(), _redis_commands(), time.perf_counter()
        time.sleep(interval * WINDOW_INTERVALS)
        seconds = time.perf_counter() - t0
        cpu = {"beat": _cpu(beat.pid) - cpu0["beat"], "worker": _cpu(worker.pid) - cpu0["worker"]}
        db1, redis1, rss = _db_counters(), _redis_commands(), _rss_mb(worker.pid)
        ended = began + timedelta(seconds=seconds)
        time.sleep(2 * SAMPLE_SECONDS)
    finally:
        beat.stop()
        sampler.stop()
    starts = sampler.between(began, ended)
    sends = _sends(beat.log(), began, ended)
    polls = len(starts)
    busiest, spread = _spread(starts, began, seconds)
    busiest_send, send_spread = _spread(sends, began, seconds)
    hours = n * seconds / 3600  # idle integration-hours in the window
    db = {k: db1[k] - db0[k] for k in db0}
    return {
        "integrations": n, "window_s": round(seconds, 1), "polls": polls,
        "polls_per_minute": round(polls * 60 / seconds, 1),
        "polls_expected_per_minute": round(n * 60 / interval, 1),
        "max_polls_in_one_second": busiest, "mean_polls_per_second": round(polls / seconds, 2),
        "spread_max_vs_mean": spread,
        "beat_sends": len(sends), "max_sends_in_one_second": busiest_send, "send_spread_max_vs_mean": send_spread,
        "max_queue_depth": sampler.max_queue, "worker_rss_mb": round(rss, 1),
        "beat_cpu_s": round(cpu["beat"], 3), "worker_cpu_s": round(cpu["worker"], 3),
        "beat_cpu_ms_per_integration_hour": round(cpu["beat"] * 1000 / hours, 2),
        "worker_cpu_ms_per_integration_hour": round(cpu["worker"] * 1000 / hours, 1),
        "worker_cpu_ms_per_poll": round(cpu["worker"] * 1000 / max(polls, 1), 2),
        "db_commits_per_poll": round(db["commits"] / max(polls, 1), 2),
        "db_rows_written_per_poll": round((db["inserted"] + db["updated"]) / max(polls, 1), 2),
        "db_rows_read_per_poll": round(db["fetched"] / max(polls, 1), 1),
        "db_commits_per_integration_hour": round(db["commits"] / hours, 1),
        "redis_commands_per_poll": round((redis1 - redis0) / max(polls, 1), 2),
        "redis_commands_per_integration_hour": round((redis1 - redis0) / hours, 1),
    }


def main(n: int = 1000) -> dict[str, Any]:
    small = max(1, n // 10)
    interval = _interval(n)
    database_url = fleet.create_database()
    env = fleet.configure(database_url)
    fleet.flush_redis()
    host = fleet.SandboxHost({
        "st": ["servicetitan", {"seed": 3, "records": 5, "rate_limit": 0}],
        "ep": ["epicor", {"seed": 3, "records": 5}],
    })
    worker: fleet.Process | None = None
    try:
        _add_integrations(0, small, host.info("st"), host.info("ep"), interval)
        worker = fleet.start_worker(env, 2)
        phases = {"small": _phase(small, interval, env, worker)}
        _add_integrations(small, n, host.info("st"), host.info("ep"), interval)
        phases["large"] = _phase(n, interval, env, worker)
    finally:
        fleet.tear_down(database_url, processes=[worker], host=host)
    large, low = phases["large"], phases["small"]

    def ratio(key: str) -> float | None:
        return round(large[key] / low[key], 2) if low.get(key) else None

    figures: dict[str, Any] = {
        "integrations": n, "integrations_small": small, "poll_interval_s": interval,
        "polls_per_minute": large["polls_per_minute"], "polls_expected_per_minute": large["polls_expected_per_minute"],
        "polls_done_vs_expected": round(large["polls_per_minute"] / large["polls_expected_per_minute"], 2),
        "spread_max_vs_mean": large["spread_max_vs_mean"], "max_polls_in_one_second": large["max_polls_in_one_second"],
        "send_spread_max_vs_mean": large["send_spread_max_vs_mean"],
        "max_sends_in_one_second": large["max_sends_in_one_second"],
        "max_queue_depth": large["max_queue_depth"],
        "beat_cpu_ms_per_integration_hour": large["beat_cpu_ms_per_integration_hour"],
        "worker_cpu_ms_per_integration_hour": large["worker_cpu_ms_per_integration_hour"],
        "worker_cpu_ms_per_poll": large["worker_cpu_ms_per_poll"],
        "db_commits_per_poll": large["db_commits_per_poll"], "db_rows_written_per_poll": large["db_rows_written_per_poll"],
        "redis_commands_per_poll": large["redis_commands_per_poll"],
        "worker_rss_mb_large_vs_small": round(large["worker_rss_mb"] / low["worker_rss_mb"], 2),
        "beat_cpu_per_integration_hour_large_vs_small": ratio("beat_cpu_ms_per_integration_hour"),
        "worker_cpu_per_integration_hour_large_vs_small": ratio("worker_cpu_ms_per_integration_hour"),
        "db_commits_per_integration_hour_large_vs_small": ratio("db_commits_per_integration_hour"),
        "redis_commands_per_integration_hour_large_vs_small": ratio("redis_commands_per_integration_hour"),
        "phases": phases,
    }
    write_result("idle", figures)
    return figures


if __name__ == "__main__":
    import json

    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000), indent=2))
