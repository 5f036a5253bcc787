"""Worker memory against backfill size: peak RSS of the Celery worker (the pool process that
runs the poll, and the whole process tree) for an N-record and a 10×N-record backfill of
ServiceTitan inventory bills. Target: large ÷ small ≤ 1.1, which holds only if the source
is paged as a stream and neither the poll nor the ledger writes keep every record.

    python -m benchmarks.bench_memory [N] [written_per_run]

Each run: a ServiceTitan sandbox seeded with exactly that many received purchase orders and
their bills (purchasing scope), a fresh database, a worker with 4 pool processes. The
catch-up poll is sent to the worker as a Celery task, as beat sends it: it pages through
every bill, upserts the ledger in batches and queues one task per bill. What grows with N
is that walk; each record's write is its own task of the same size whatever N is, so the
run lets the pool write the first `written_per_run` bills beside the poll, then stops
(the rest of the queue is dropped). RSS is sampled every 50 ms across the worker tree.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from benchmarks import fleet
from benchmarks.common import write_result

CONCURRENCY = 4
SAMPLE_SECONDS = 0.05
FINAL = ("written", "skipped", "held", "failed")


class RssSampler:
    """Peak resident memory of one process tree: the largest single process and the sum."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_process = 0
        self.peak_process_role = ""  # "main" (the worker's consumer) or "pool" (a pool process)
        self.peak_tree = 0
        self.idle_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        sizes: list[tuple[int, str]] = []
        for process in processes:
            try:
                sizes.append((process.memory_info().rss, "main" if process.pid == self.pid else "pool"))
            except psutil.NoSuchProcess:
                continue
        if sizes:
            largest = max(sizes)
            if largest[0] > self.peak_process:
                self.peak_process, self.peak_process_role = largest
            self.peak_tree = max(self.peak_tree, sum(size for size, _ in sizes))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_SECONDS)

    def __enter__(self) -> "RssSampler":
        self._sample()
        self.idle_tree = self.peak_tree  # the tree before any work, for reference
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sample()


def _counts() -> tuple[int, int]:
    """(ledger rows, rows in a final state) for the bills flow."""
    from sqlalchemy import func, select

    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        rows = dict(session.execute(select(SyncRecord.status, func.count())
                                    .where(SyncRecord.flow == "inventory_bills").group_by(SyncRecord.status)).all())
    return sum(rows.values()), sum(v for k, v in rows.items() if k in FINAL)


def _polled() -> bool:
    from sqlalchemy import select

    from mlconnector.db.models import Watermark
    from mlconnector.db.session import session_scope

    with session_scope() as session:
        return session.scalar(select(Watermark.last_poll_at).where(Watermark.flow == "inventory_bills")) is not None


def run(records: int, written: int) -> dict[str, Any]:
    database_url = fleet.create_database()
    host: fleet.SandboxHost | None = None
    worker: fleet.Process | None = None
    try:
        env = fleet.configure(database_url)
        fleet.flush_redis()
        host = fleet.SandboxHost({
            "st": ["servicetitan", {"seed": 3, "records": records, "rate_limit": 0}, {"seed_scope": "purchasing"}],
            "ep": ["epicor", {"seed": 3, "records": 6}],
        })
        fleet.create_bench_integration(host.info("st"), host.info("ep"), "BMEM")
        worker = fleet.start_worker(env, CONCURRENCY)
        from mlconnector.tasks import poll

        with RssSampler(worker.process.pid) as sampler:
            started = time.perf_counter()
            poll.apply_async(args=(fleet.INTEGRATION, "inventory_bills"))
            fleet.wait_until(_polled, timeout=1800, interval=0.5, message="the poll did not finish")
            poll_seconds = time.perf_counter() - started
            fleet.wait_until(lambda: _counts()[1] >= min(written, records), timeout=600, interval=0.5,
                             message=f"fewer than {written} bills written")
        ledger_rows, final = _counts()
        return {"records": records, "ledger_rows": ledger_rows, "final_when_stopped": final,
                "poll_seconds": round(poll_seconds, 1), "idle_tree_mb": round(sampler.idle_tree / 2**20, 1),
                "peak_process_mb": round(sampler.peak_process / 2**20, 1),
                "peak_process_role": sampler.peak_process_role,
                "peak_tree_mb": round(sampler.peak_tree / 2**20, 1)}
    finally:
        fleet.tear_down(database_url, processes=[worker], host=host, sig=9)


def main(n: int = 10_000, written: int | None = None) -> dict[str, Any]:
    written = written or max(50, min(200, n // 20))
    small = run(n, written)
    large = run(10 * n, written)
    figures = {
        "small": small,
        "large": large,
        "records_small": n,
        "records_large": 10 * n,
        "peak_process_large_vs_small": round(large["peak_process_mb"] / small["peak_process_mb"], 3),
        "peak_tree_large_vs_small": round(large["peak_tree_mb"] / small["peak_tree_mb"], 3),
        "written_per_run": written,
        "target_ratio": 1.1,
    }
    write_result("memory", figures)
    return figures


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(main(*args)))
