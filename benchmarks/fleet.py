"""Starting the real fleet for a benchmark: a throwaway PostgreSQL database, Redis db 8,
vendor sandboxes in their own process, the integration, Celery workers and gunicorn.

Everything started here is stopped by `Fleet.close()` (databases dropped, processes ended
by their own process group).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("MLCONNECTOR_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MLCONNECTOR_BENCH_REDIS", "redis://127.0.0.1:6379/8")
HMAC_KEY = "bench-hmac-key-0123456789abcdef0123456789"
INTEGRATION = "bench"
PAIR = "servicetitan-epicor"
GL = {"default_account": "5100-100", "freight_account": "6500-100", "tax_account": "5000-000"}
LOG_DIR = Path("/tmp")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Any, timeout: float = 60.0, interval: float = 0.05, message: str = "") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise RuntimeError(message or "condition not met in time")


def _admin():  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    return sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")


def create_database() -> str:
    import sqlalchemy as sa

    from mlconnector.db import migrate

    name = f"mlc_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    migrate.upgrade(url)
    return url


def drop_database(url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    admin = _admin()
    with admin.connect() as connection:
        connection.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def configure(database_url: str, redis_url: str = REDIS_URL, broker_url: str | None = None) -> dict[str, str]:
    """Point this process (and the environment handed to children) at the benchmark's stores;
    the Celery broker is `redis_url` unless `broker_url` (a RabbitMQ vhost's) is given."""
    from cryptography.fernet import Fernet

    env = {"DATABASE_URL": database_url, "CELERY_BROKER_URL": broker_url or redis_url, "REDIS_URL": redis_url,
           "MLCONNECTOR_SECRET_KEYS": Fernet.generate_key().decode(), "MLCONNECTOR_LOG_FORMAT": "json",
           "MLCONNECTOR_LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    reset_process_state()
    from mlconnector.celery_app import reload_config

    reload_config()
    return env


def reset_process_state() -> None:
    from mlconnector.process_state import reset_process_state as reset

    reset()


class Process:
    """A subprocess in its own process group, its output kept in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], name: str, stdin: Any = None) -> None:
        self.log_path = LOG_DIR / f"mlc-bench-{name}-{uuid.uuid4().hex[:6]}.log"
        self.process = subprocess.Popen(args, cwd=str(ROOT), env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                        stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                        stdin=stdin, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[Any]:
        """This process's live descendants (psutil processes): pool children, gunicorn workers."""
        import psutil

        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def busiest_child(self, sample: float = 0.3) -> Any | None:
        """The child that spent the most CPU over `sample` seconds (likely mid-task), or None."""
        import psutil

        def cpu(child: Any) -> float:
            try:
                times = child.cpu_times()
                return times.user + times.system
            except psutil.Error:
                return -1.0

        children = self.children()
        if not children:
            return None
        before = {child.pid: cpu(child) for child in children}
        time.sleep(sample)
        return max(children, key=lambda child: cpu(child) - before[child.pid])

    def kill_child(self, sig: int = signal.SIGKILL, sample: float = 0.3) -> int | None:
        """Send `sig` to the busiest child alone (a Celery pool child, a gunicorn worker); its pid."""
        import psutil

        child = self.busiest_child(sample)
        if child is None:
            return None
        try:
            child.send_signal(sig)
        except psutil.NoSuchProcess:
            return None
        return child.pid

    def kill_main(self, sig: int = signal.SIGKILL, orphans_after: float | None = 0.5) -> None:
        """Send `sig` to the main process alone, as an OOM kill does; after `orphans_after`
        seconds what it left behind in its process group goes too (as its container or unit
        would end them). None leaves the orphans running."""
        if self.process.poll() is not None:
            return
        os.kill(self.process.pid, sig)
        self.process.wait(timeout=20)
        if orphans_after is not None:
            time.sleep(orphans_after)
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass


def tear_down(database_url: str, *, processes: Sequence[Process | None] = (), host: SandboxHost | None = None,
              sig: int = signal.SIGTERM) -> None:
    """What every benchmark leaves behind goes: its processes, its sandboxes, its database,
    its Redis keys, and this process's cached engines and connectors."""
    for process in processes:
        if process is not None:
            process.stop(sig=sig)
    if host is not None:
        host.stop()
    reset_process_state()
    drop_database(database_url)
    flush_redis()


LATENCY_ENV = "MLCONNECTOR_BENCH_LATENCY_MS"


def vendor_latency_ms() -> int:
    """The round trip each sandboxed vendor call is given (`run.py --latency-ms`): 0 measures
    our CPU against the vendors' on two shared cores; a vendor-like value measures what a
    customer sees, where the engine's own work overlaps the waits."""
    return int(os.environ.get(LATENCY_ENV) or 0)


class SandboxHost:
    """Sandboxes served by `benchmarks.sandbox_host` in a child process."""

    def __init__(self, spec: dict[str, list[Any]], stderr: Any = None) -> None:
        latency = vendor_latency_ms()
        if latency:  # every vendor call answers after this long, as a vendor across the internet does
            spec = {name: [vendor, {"latency_ms": latency, **options}] for name, (vendor, options) in spec.items()}
        self.process = subprocess.Popen(self.command(json.dumps(spec)), cwd=str(ROOT), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, "PYTHONPATH": str(ROOT)},
                                        start_new_session=True, text=True)
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"sandbox host did not start{self.started_badly()}")
        self.sandboxes: dict[str, dict[str, Any]] = json.loads(line)

    def command(self, spec_json: str) -> list[str]:
        """The sandbox host's command line (a host elsewhere wraps it)."""
        return [sys.executable, "-m", "benchmarks.sandbox_host", spec_json]

    def started_badly(self) -> str:
        """More to say when the host did not start (its log, where it keeps one)."""
        return ""

    def url(self, name: str) -> str:
        return self.sandboxes[name]["url"]

    def info(self, name: str) -> dict[str, Any]:
        return self.sandboxes[name]["info"]

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=15)
            except (subprocess.TimeoutExpired, OSError):
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def system_settings(st_info: dict[str, Any], ep_info: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """Connector config + credentials for both systems, retrying quickly, no client-side limiter."""
    from connectors import connector_class

    st_config, st_creds = connector_class("servicetitan").settings_from_sandbox_info(st_info)
    ep_config, ep_creds = connector_class("epicor").settings_from_sandbox_info(ep_info)
    for config in (st_config, ep_config):
        config["retry"] = {"base": 0.05, "max_wait": 2}
    st_config["rate_limit_per_second"] = 0  # the sandboxes run unthrottled: measure our cost, not a quota
    return st_config, st_creds, ep_config, ep_creds


def integration_config(st_config: dict[str, Any], ep_config: dict[str, Any], group: str) -> dict[str, Any]:
    return {"systems": {"servicetitan": st_config, "epicor": ep_config},
            # Look-alike vendor names are created, not held: every bill is written, so the figures
            # measure the whole path (the hold for a person has its own tests).
            "invoice_group": group, "counterparts": {"vendor": {"match": "name", "create": True, "similar": "create"}},
            "gl": dict(GL)}


def create_bench_integration(st_info: dict[str, Any], ep_info: dict[str, Any], group: str,
                             integration_id: str = INTEGRATION,
                             extra_config: dict[str, Any] | None = None,
                             st_settings: dict[str, Any] | None = None,
                             ep_settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bench integration, its credentials and its webhook signing key (HMAC_KEY) sealed in
    the vault; `extra_config` adds top-level config keys (e.g. `poll_seconds`), `st_settings`
    and `ep_settings` connector settings (e.g. `rate_limit_per_second`)."""
    from mlconnector import vault
    from mlconnector.config import WEBHOOK_SECRETS
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    st_config, st_creds, ep_config, ep_creds = system_settings(st_info, ep_info)
    st_config.update(st_settings or {})
    ep_config.update(ep_settings or {})
    config = {**integration_config(st_config, ep_config, group), **(extra_config or {})}
    with session_scope() as session:
        create_integration(session, integration_id, PAIR, config)
        session.flush()
        vault.store(session, integration_id, "servicetitan", st_creds)
        vault.store(session, integration_id, "epicor", ep_creds)
        vault.store(session, integration_id, WEBHOOK_SECRETS, {"hmac_key": HMAC_KEY})
    return config


def flush_redis(redis_url: str = REDIS_URL) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()


def start_worker(env: dict[str, str], concurrency: int, queues: str = f"mlconnector,{PAIR}") -> Process:
    worker = Process([sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "worker", "--loglevel", "INFO",
                      "--pool", "prefork", "--concurrency", str(concurrency), "-Q", queues, "--without-gossip",
                      "--without-mingle", "--without-heartbeat", "--hostname", f"bench-{uuid.uuid4().hex[:6]}@%h"],
                     env, "worker")
    try:
        wait_until(lambda: "ready." in worker.log() or not worker.alive(), timeout=90, interval=0.2,
                   message="worker not ready")
    except RuntimeError:
        worker.stop()  # never left behind to take the next run's tasks
        raise
    if not worker.alive():
        raise RuntimeError(f"worker exited: {worker.log()[-3000:]}")
    return worker


def start_gunicorn(env: dict[str, str], app: str = "mlconnector.web:create_app()", workers: int = 2,
                   extra: list[str] | None = None) -> tuple[str, Process]:
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The deployment's own settings (gunicorn.conf.py), bar the access log, for every app measured.
    service = Process([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind",
                       f"127.0.0.1:{port}", "--workers", str(workers), *(extra or []), app],
                      {**env, "GUNICORN_ACCESS_LOG": ""}, "gunicorn")

    def ready() -> bool:
        if not service.alive():
            raise RuntimeError(f"gunicorn exited: {service.log()[-3000:]}")
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_until(ready, timeout=60, interval=0.2, message="gunicorn not ready")
    return url, service


def start_beat(env: dict[str, str]) -> Process:
    """Celery beat with the platform's scheduler (polls, sweeper, alerts), kept in memory."""
    beat = Process([sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "beat", "--loglevel", "INFO"],
                   env, "beat")
    wait_until(lambda: "beat: Starting" in beat.log() or not beat.alive(), timeout=60, interval=0.2,
               message="beat not started")
    if not beat.alive():
        raise RuntimeError(f"beat exited: {beat.log()[-3000:]}")
    return beat
