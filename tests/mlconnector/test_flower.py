"""Flower answers only with basic auth, started exactly as the Procfile starts it.

Flower shows task arguments and the broker and its API can revoke tasks and stop workers,
so a real Flower process on the test Redis must turn away anonymous and wrong callers, and
the launcher must refuse to start it at all without credentials.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mlconnector.flower_launch import RefusedError, check_basic_auth
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.fleet

USER, PASSWORD = "ops", "correct-horse-battery"
LAUNCHER = "mlconnector.flower_launch"


def procfile_flower_command(port: int) -> list[str]:
    """The Procfile's flower line, with this interpreter and port: the test runs what ships."""
    line = next(
        entry for entry in (ROOT / "Procfile").read_text().splitlines() if entry.startswith("flower:")
    )
    text = re.sub(r"\$\{FLOWER_PORT(:-\d+)?\}", str(port), line.split(":", 1)[1])
    argv = shlex.split(text)
    assert argv[:3] == ["python", "-m", LAUNCHER], f"Procfile flower must use the launcher: {line}"
    return [sys.executable, *argv[1:]]


def _without_flower_env(env: dict[str, str]) -> dict[str, str]:
    """A child environment with no FLOWER_* variable from the developer's shell."""
    return {key: value for key, value in env.items() if not key.startswith("FLOWER_")}


@pytest.fixture
def flower_url(configure: Any, redis_url: str, start_service: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real Flower process on the test broker with basic auth from the environment."""
    for key in [key for key in os.environ if key.startswith("FLOWER_")]:
        monkeypatch.delenv(key)
    env = configure(broker_url=redis_url, FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD},viewer:other-secret")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def listening() -> bool:
        try:
            requests.get(f"{url}/healthcheck", timeout=1)
        except requests.RequestException:
            return False
        return True

    service = start_service(procfile_flower_command(port), env, listening)
    yield url
    service.stop()  # by the pid this test started (its own session), before the fixture's own check
    assert service.process.poll() is not None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", ["/", "/api/tasks", "/broker"])
def test_anonymous_and_wrong_credentials_get_401(flower_url: str, path: str) -> None:
    anonymous = requests.get(flower_url + path, timeout=10, allow_redirects=False)
    assert anonymous.status_code == 401, anonymous.text[:200]
    if not path.startswith("/api/"):  # pages ask the browser for credentials; the API just refuses
        assert anonymous.headers.get("WWW-Authenticate", "").startswith("Basic")
    for auth in [(USER, "wrong"), ("nobody", PASSWORD), (USER, "")]:
        wrong = requests.get(flower_url + path, auth=auth, timeout=10, allow_redirects=False)
        assert wrong.status_code == 401, (auth[0], wrong.status_code)
    bearer = requests.get(flower_url + path, headers={"Authorization": f"Bearer {PASSWORD}"}, timeout=10)
    assert bearer.status_code == 401


@pytest.mark.timeout(60)
def test_right_credentials_get_200(flower_url: str) -> None:
    page = requests.get(flower_url + "/", auth=(USER, PASSWORD), timeout=15)
    assert page.status_code == 200 and "Flower" in page.text
    tasks = requests.get(flower_url + "/api/tasks", auth=(USER, PASSWORD), timeout=15)
    assert tasks.status_code == 200 and isinstance(tasks.json(), dict)
    second_user = requests.get(flower_url + "/api/tasks", auth=("viewer", "other-secret"), timeout=15)
    assert second_user.status_code == 200


@pytest.mark.parametrize("value", [None, "", "ops", "ops:", ":secret", "ops:secret,", "ops:secret, viewer:x"])
def test_launcher_refuses_without_valid_credentials(value: str | None, tmp_path: Path) -> None:
    env = _without_flower_env(dict(os.environ))
    if value is not None:
        env["FLOWER_BASIC_AUTH"] = value
    port = free_port()
    result = subprocess.run(
        procfile_flower_command(port), cwd=str(ROOT), env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=20,
    )
    assert result.returncode == 2, (result.returncode, result.stderr[-500:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FLOWER_BASIC_AUTH" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    if value:
        assert "secret" not in lines[0]  # the message never echoes a password


def test_check_basic_auth_accepts_several_users() -> None:
    assert check_basic_auth("ops:pw,viewer:p:w") == ["ops:pw", "viewer:p:w"]
    with pytest.raises(RefusedError):
        check_basic_auth("   ")


def test_compose_requires_credentials_and_binds_loopback() -> None:
    flower = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert flower["command"][:3] == ["python", "-m", LAUNCHER]
    assert all(str(mapping).startswith("127.0.0.1:") for mapping in flower["ports"])


@pytest.mark.timeout(120)
def test_flower_lists_record_tasks_by_pair_and_flow_and_shows_a_failed_record_as_failed(
        flower_url: str, fresh_pg: str, redis_url: str, configure: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each record task shows its pair, flow and source record, and a record that ended
    failed is a failed task, not a green row."""
    import time

    from cryptography.fernet import Fernet

    from mlconnector import engine, vault
    from mlconnector.db import migrate
    from mlconnector.db.models import SyncRecord
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration
    from tests.conftest import wait_until

    env = dict(os.environ)
    env.update({"DATABASE_URL": fresh_pg, "CELERY_BROKER_URL": redis_url, "MLCONNECTOR_SECRET_KEYS": os.environ.get(
        "MLCONNECTOR_SECRET_KEYS") or Fernet.generate_key().decode(), "MLCONNECTOR_MAX_DELIVERIES": "1"})
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    configure(fresh_pg, redis_url, MLCONNECTOR_MAX_DELIVERIES="1", FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}")
    migrate.upgrade(fresh_pg)
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}})
        session.flush()
        vault.store(session, "acme", "counter", {"token": "t"})
        session.add(SyncRecord(integration_id="acme", flow="items", source_id="INV-77", status="pending", deliveries=1))
    with session_scope() as session:
        record_id = session.query(SyncRecord.id).filter_by(source_id="INV-77").scalar()
    start_worker(dict(os.environ))
    from mlconnector.celery_app import app
    from mlconnector.tasks import send

    app.control.enable_events()  # what Flower does on its own every few seconds; done now to not wait for it
    time.sleep(1)
    send(engine.Enqueue(records={"counter-test": [record_id]}, labels={record_id: ("items", "INV-77")}))

    def listed() -> dict[str, Any]:
        tasks = requests.get(f"{flower_url}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
        return next((t for t in tasks.values() if t.get("name") == "counter-test.items" and t.get("state") == "FAILURE"), {})

    try:
        task = wait_until(listed, timeout=60)
    except AssertionError:
        seen = requests.get(f"{flower_url}/api/tasks", auth=(USER, PASSWORD), timeout=10).json()
        raise AssertionError(f"no failed counter-test.items task in Flower: {seen}") from None
    assert "INV-77" in (task.get("args") or "")
    assert "failed" in (task.get("exception") or "")
