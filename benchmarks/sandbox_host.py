"""Vendor sandboxes served from a process of their own, so the client under test (a worker
fleet or a thread pool) never shares an interpreter lock with the servers.

    python -m benchmarks.sandbox_host '{"st": ["servicetitan", {"seed": 3, "records": 20, "rate_limit": 0}], ...}'

Prints one JSON line {name: {"url", "info"}} once every sandbox listens, then serves until
its standard input closes.
"""

from __future__ import annotations

import json
import sys

from sandboxes import SandboxOptions, create_sandbox, start_sandbox


def main(spec: dict[str, list]) -> None:
    running = {}
    for name, (vendor, options, *settings) in spec.items():
        sandbox = create_sandbox(vendor, SandboxOptions(**options), **(settings[0] if settings else {}))
        running[name] = start_sandbox(sandbox)
    print(json.dumps({name: {"url": r.url, "info": r.info()} for name, r in running.items()}), flush=True)
    sys.stdin.read()  # until the parent closes the pipe (or dies)
    for r in running.values():
        r.stop()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
