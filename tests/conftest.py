"""Shared fixtures: real PostgreSQL and Redis, a configured environment, Celery workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("MLCONNECTOR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _redis_test_url() -> str:
    """One Redis db per test process (pytest-xdist's gw0, gw1): 9 and 10 by default; from a
    given base db N (MLCONNECTOR_TEST_REDIS), N and N + 2, so two runs on two bases never meet."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    given = os.environ.get("MLCONNECTOR_TEST_REDIS")
    if not given:
        return f"redis://127.0.0.1:6379/{9 + worker}"
    base, _, db = given.rpartition("/")
    return f"{base}/{int(db) + 2 * worker}" if db.isdigit() else given


REDIS_TEST_URL = _redis_test_url()


def _reset_process_state() -> None:
    from mlconnector.process_state import reset_process_state

    reset_process_state()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    import sqlalchemy as sa

    name = f"mlc_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg2://"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as error:  # pragma: no cover - environment problem, say so plainly
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for these tests: {error}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    _reset_process_state()
    with admin.connect() as connection:
        connection.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_TEST_URL)
    try:
        client.ping()
    except Exception as error:  # pragma: no cover
        pytest.fail(f"Redis at {REDIS_TEST_URL} is required for these tests: {error}")
    return REDIS_TEST_URL


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A RabbitMQ virtual host of this test's own (its queues, exchanges and messages go with
    it), as the broker URL. Skipped where no RabbitMQ runs: it is the optional broker."""
    from benchmarks import rabbitmq

    why = rabbitmq.unavailable()
    if why:
        pytest.skip(f"{why} (start it: rabbitmq-server -detached)")
    vhost = rabbitmq.create_vhost("mlc_test")
    try:
        yield rabbitmq.url(vhost)
    finally:
        rabbitmq.delete_vhost(vhost)


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Point settings at the given database/broker for one test; caches reset around it."""
    from cryptography.fernet import Fernet

    def apply(database_url: str | None = None, broker_url: str | None = None, **extra: str) -> dict[str, str]:
        env = {
            "DATABASE_URL": database_url or f"sqlite:///{tmp_path / 'test.db'}",
            "MLCONNECTOR_SECRET_KEYS": extra.pop("MLCONNECTOR_SECRET_KEYS", Fernet.generate_key().decode()),
            "MLCONNECTOR_PAIR_MODULES": "tests.fleet_pair",
            "MLCONNECTOR_LOG_FORMAT": "json",
            **extra,
        }
        if broker_url:
            env["CELERY_BROKER_URL"] = broker_url
        else:
            monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        _reset_process_state()
        _reload_celery_config()
        return env

    yield apply
    _reset_process_state()


def _reload_celery_config() -> None:
    """celeryconfig reads settings at import; re-read it for this test's environment."""
    from mlconnector.celery_app import reload_config

    reload_config()


@pytest.fixture
def fresh_pg(pg_url: str) -> Iterator[str]:
    """The session database, migrated, with every table emptied before the test."""
    import sqlalchemy as sa

    from mlconnector.db import migrate

    migrate.upgrade(pg_url)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE audit_events DISABLE TRIGGER USER"))
        tables = [t for t in sa.inspect(connection).get_table_names() if t != "alembic_version"]
        connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        connection.execute(sa.text("ALTER TABLE audit_events ENABLE TRIGGER USER"))
    engine.dispose()
    yield pg_url


def serve_wsgi(app: Any) -> tuple[str, Any]:
    """Serve a WSGI app on a free loopback port in a daemon thread; returns (url, server)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


class WorkerProcess:
    """A real `celery worker` (prefork) in a subprocess."""

    def __init__(self, env: dict[str, str], queues: str, concurrency: int = 2, log_path: Path | None = None) -> None:
        self.log_path = log_path or Path(f"/tmp/mlc-worker-{uuid.uuid4().hex[:6]}.log")
        self.node = f"test-{uuid.uuid4().hex[:6]}"
        full_env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "mlconnector.celery_app", "worker", "--loglevel", "INFO",
             "--pool", "prefork", "--concurrency", str(concurrency), "-Q", queues, "--without-gossip",
             "--without-mingle", "--hostname", f"{self.node}@%h"],
            cwd=str(ROOT), env=full_env, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if "ready." in self.log_path.read_text():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready: {self.log_path.read_text()[-3000:]}")

    def hostname(self) -> str:
        """The worker's Celery node name, as remote-control replies give it."""
        import socket

        return f"{self.node}@{socket.gethostname()}"

    def children(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def stop(self) -> None:
        """The worker and its pool children at once: a test discards them, and what they had
        in hand is the next test's fresh database and broker, not this one's (a cold
        shutdown took two seconds a test)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def start_worker() -> Iterator[Any]:
    workers: list[WorkerProcess] = []

    def start(env: dict[str, str], queues: str = "mlconnector,counter-test", concurrency: int = 2) -> WorkerProcess:
        worker = WorkerProcess(env, queues, concurrency)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.1, message: str | Any = "") -> Any:
    """`predicate()`'s first true value within `timeout` seconds. `message` may be a callable,
    read when the wait runs out: the state at the failure, not at the start of the wait."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError((message() if callable(message) else message) or "condition not met in time")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """A long-running subprocess (gunicorn, celery beat) with its log kept for failures."""

    def __init__(self, args: list[str], env: dict[str, str], ready: Any) -> None:
        self.log_path = Path(f"/tmp/mlc-proc-{uuid.uuid4().hex[:6]}.log")
        self.process = subprocess.Popen(args, cwd=str(ROOT), env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                                        stdout=self.log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{args[0]} exited: {self.log_path.read_text()[-3000:]}")
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{args[0]} not ready: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # gunicorn and beat: quick shutdown
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def start_service() -> Iterator[Any]:
    services: list[ServiceProcess] = []

    def start(args: list[str], env: dict[str, str], ready: Any) -> ServiceProcess:
        service = ServiceProcess(args, env, ready)
        services.append(service)
        return service

    yield start
    for service in services:
        service.stop()


def start_gunicorn(start_service: Any, env: dict[str, str], workers: int = 2) -> str:
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return requests.get(f"{url}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    config = Path(__file__).resolve().parents[1] / "gunicorn.conf.py"  # the deployment's settings
    start_service([sys.executable, "-m", "gunicorn", "-c", str(config), "--bind", f"127.0.0.1:{port}",
                   "--workers", str(workers), "mlconnector.web:create_app()"], env, ready)
    return url


def pytest_collection_modifyitems(items: list[Any]) -> None:
    """A fleet test (worker processes, brokers, sandboxes over HTTP, timed waits) that fails is
    run once more before it counts: the two test processes share two cores, and a wait sized
    for an idle machine can run out under the other's load. A failure that repeats still fails,
    and the first failure is printed in the report (R)."""
    for item in items:
        timed = item.get_closest_marker("fleet") is not None or any(
            word in item.nodeid for word in ("_e2e.py", "_browser.py", "test_demo.py", "test_fleet"))
        if timed and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


_RERUN_FAILURES: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: Any) -> None:
    if report.outcome == "rerun":
        _RERUN_FAILURES.append((report.nodeid, report.longreprtext))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Why each rerun test failed the first time (its failure's last lines), so a flake is
    seen and can be fixed rather than only counted."""
    if not _RERUN_FAILURES:
        return
    terminalreporter.section("first failures of rerun tests")
    for nodeid, text in _RERUN_FAILURES:
        terminalreporter.write_line(nodeid)
        for line in text.splitlines()[-25:]:
            terminalreporter.write_line("    " + line)
