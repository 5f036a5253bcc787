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
