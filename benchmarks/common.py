"""What every benchmark shares: machine facts and writing results as JSON."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    try:
        import psutil

        memory = psutil.virtual_memory().total
    except ImportError:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import redis
    import sqlalchemy

    return {"cores": os.cpu_count(), "memory_bytes": memory, "python": sys.version.split()[0],
            "platform": platform.platform(), "redis_py": redis.__version__, "sqlalchemy": sqlalchemy.__version__}


def write_result(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    RESULTS.mkdir(exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **figures}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2))
    return payload


class CpuMeter:
    """CPU seconds spent by each part of the system between `start()` and `stop()`.

    On a small machine every part (sandboxes, workers, receiver, PostgreSQL, Redis) shares
    the same cores, so CPU per record says where capacity goes better than wall time does.
    Parts are process trees given by pid, this process alone ("bench"), and servers found
    by process name.
    """

    SERVERS = {"postgres": ("postgres",), "redis": ("redis-server",)}

    def __init__(self, trees: dict[str, int]) -> None:
        self.trees = trees
        self._start: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    @staticmethod
    def _tree(pid: int) -> float:
        import psutil

        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        return sum(_cpu(p) for p in processes)

    def _servers(self, names: tuple[str, ...]) -> float:
        import psutil

        return sum(_cpu(p) for p in psutil.process_iter(["name"]) if (p.info["name"] or "") in names)

    def read(self) -> dict[str, float]:
        import psutil

        values = {name: self._tree(pid) for name, pid in self.trees.items()}
        values["bench"] = _cpu(psutil.Process())
        values.update({name: self._servers(names) for name, names in self.SERVERS.items()})
        return values

    def start(self) -> "CpuMeter":
        self._start = self.read()
        return self

    def stop(self) -> dict[str, float]:
        end = self.read()
        self.seconds = {name: max(0.0, end[name] - self._start.get(name, 0.0)) for name in end}
        return self.seconds

    def per_record_ms(self, records: int) -> dict[str, float]:
        parts = {name: round(value * 1000 / max(records, 1), 1) for name, value in self.seconds.items()}
        parts["total"] = round(sum(self.seconds.values()) * 1000 / max(records, 1), 1)
        return parts


def _cpu(process: Any) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except Exception:  # gone between listing and reading
        return 0.0
