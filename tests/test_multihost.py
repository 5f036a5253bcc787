"""The fleet across hosts (network namespaces on this machine): two worker hosts, beat, the
stores and the sandboxes each on a host of their own; one worker host dies mid-backfill.

Slow (about a minute and a half) and needs root and `ip netns`: it runs only with
MLCONNECTOR_MULTIHOST=1, e.g.

    MLCONNECTOR_MULTIHOST=1 .venv/bin/python -m pytest -n 0 -m slow tests/test_multihost.py

The benchmark (benchmarks/bench_multihost.py) runs at a small size in a process of its own,
so the environment it configures never reaches the other tests, and writes no result file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECORDS = 20  # bills in the kill phase; 10 more with one host and 10 with two before it
# The connectors' shared limiter at 80% of each vendor's limit. The limiter admits on Redis's
# clock and the vendor counts arrivals: on this shared 2-core machine a call held up between
# the two for longer than the limiter's 3% margin can meet a later one in the vendor's window
# (the benchmark at 95% saw 1 refused call in 1,850). 80% leaves room for that, and one host
# alone still asks for more than the limit, so the limit is only held if both hosts share it.
CLIENT_SHARE = 0.8


def _unavailable() -> str | None:
    if os.environ.get("MLCONNECTOR_MULTIHOST") != "1":
        return "set MLCONNECTOR_MULTIHOST=1 to run the multi-host test"
    from benchmarks import netns

    try:
        netns.check()
    except netns.NetnsUnavailable as error:
        return str(error)
    return None


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "MLCONNECTOR_PAIR_MODULES"}
    env["PYTHONPATH"] = str(ROOT)
    code = ("import json; from benchmarks import bench_multihost as b; "
            f"print('RESULT ' + json.dumps(b.main({RECORDS}, write=False, client_share={CLIENT_SHARE})))")
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), env=env, capture_output=True, text=True,
                          timeout=840)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, f"benchmark failed ({done.returncode}): {done.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_every_record_written_exactly_once_after_a_worker_host_dies(run: dict[str, Any]) -> None:
    assert run["processes_killed"], "worker1's host was never killed"
    assert run["records_running_at_kill"] >= 1
    assert run["records"] == 2 * RECORDS
    assert run["written_exactly_once"] == run["records"], run["problems"]
    assert run["lost"] == 0 and run["duplicated"] == 0 and run["wrong_amount_or_lines"] == 0
    assert run["odata_vs_table_disagreements"] == 0
    assert run["ledger_statuses"] == {"written": run["records"]}


def test_the_shared_limiter_holds_each_vendor_limit_across_hosts(run: dict[str, Any]) -> None:
    assert run["epicor_429s"] == 0 and run["st_429s"] == 0
    assert run["epicor_peak_in_1s"] <= run["epicor_limit_per_s"]
    assert run["st_peak_in_1s"] <= run["st_limit_per_s"]
    # the shared limit, not the hosts, set the pace: the busiest second came up to it (the
    # limiter's window is 3% longer than the vendor's, so a second may hold one or two fewer)
    assert run["epicor_peak_in_1s"] >= run["epicor_client_limit_per_s"] - 2


def test_one_token_request_per_expiry_fleet_wide(run: dict[str, Any]) -> None:
    for vendor in ("epicor", "st"):
        assert run[f"{vendor}_early_token_requests"] == 0
        needed = run[f"{vendor}_token_renewals_needed"]
        assert needed >= 3, f"{vendor}: the run crossed too few token expiries to tell"
        assert abs(run[f"{vendor}_token_requests"] - needed) <= 1, run["vendors_by_endpoint"][
            "ep" if vendor == "epicor" else "st"]
