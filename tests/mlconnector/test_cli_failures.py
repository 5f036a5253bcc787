"""Known failures through the real command line (a subprocess each): one line naming the
thing and the next step, exit status 1, never a traceback (unless --debug)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from tests.conftest import ROOT


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "MLCONNECTOR_SECRET_KEYS": Fernet.generate_key().decode()}
    env.pop("CELERY_BROKER_URL", None)
    env.pop("MLCONNECTOR_PAIR_MODULES", None)

    def run(*args: str, stdin: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mlconnector.cli", *args], cwd=tmp_path, env={**env, **extra},
                              input=stdin, capture_output=True, text=True, timeout=60)

    run.tmp = tmp_path  # type: ignore[attr-defined]
    return run


def _one_line_failure(done: subprocess.CompletedProcess[str], *expected: str) -> str:
    text = done.stdout + done.stderr
    assert done.returncode == 1, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for words in expected:
        assert words in text, text
    return errors[0]


def _integration(cli: Any, enabled: bool = True) -> None:
    assert cli("db", "upgrade").returncode == 0
    config = cli.tmp / "acme.json"
    config.write_text(json.dumps({"systems": {"servicetitan": {"tenant": 1, "api_base": "http://127.0.0.1:9",
                                                               "token_url": "http://127.0.0.1:9/connect/token"},
                                              "epicor": {"api_base": "http://127.0.0.1:9/KineticLive", "company": "C"}}}))
    added = cli("integrations", "add", "acme", "--pair", "servicetitan-epicor", "--config", str(config))
    assert added.returncode == 0, added.stdout + added.stderr
    if not enabled:
        assert cli("integrations", "disable", "acme").returncode == 0


def test_an_unreachable_database_is_one_line(cli: Any) -> None:
    _one_line_failure(cli("status", DATABASE_URL="postgresql://nobody@127.0.0.1:9/none"), "database:", "DATABASE_URL")


def test_an_unmigrated_database_says_to_migrate(cli: Any) -> None:
    _one_line_failure(cli("status"), "mlconnector db upgrade")


def test_unknown_integration_pair_and_flow(cli: Any) -> None:
    _integration(cli)
    _one_line_failure(cli("sync", "nosuch"), "no integration 'nosuch'")
    _one_line_failure(cli("sync", "acme", "--flow", "bills"), "has no flow 'bills'")
    _one_line_failure(cli("integrations", "template", "acme-erp"), "unknown pair 'acme-erp'")


def test_bad_json_and_a_refused_config_name_the_problem(cli: Any) -> None:
    _integration(cli)
    broken = cli.tmp / "broken.json"
    broken.write_text('{"systems": ')
    _one_line_failure(cli("integrations", "set-config", "acme", "--config", str(broken)), "not JSON")
    typo = cli.tmp / "typo.json"
    typo.write_text(json.dumps({"systems": {}, "invoice_grop": "X"}))
    done = cli("integrations", "set-config", "acme", "--config", str(typo))
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "invoice_grop: unknown key" in done.stdout and "systems.epicor: required" in done.stdout


def test_missing_credentials_and_a_disabled_integration(cli: Any) -> None:
    _integration(cli, enabled=False)
    _one_line_failure(cli("check", "acme"), "no credentials for servicetitan", "mlconnector credentials set acme servicetitan")
    _one_line_failure(cli("sync", "acme"), "disabled", "mlconnector integrations enable acme")
    bad = cli("credentials", "set", "acme", "servicetitan", "--stdin", stdin='{"client_id": "a"}')
    assert bad.returncode == 1 and "client_secret: required" in bad.stdout and "Traceback" not in bad.stdout + bad.stderr


def test_check_against_an_unreachable_host_answers_in_seconds_and_names_it(cli: Any) -> None:
    _integration(cli)
    secrets = {"servicetitan": {"client_id": "a", "client_secret": "b", "app_key": "c"},
               "epicor": {"username": "u", "password": "p", "api_key": "k"}}
    for system, values in secrets.items():
        stored = cli("credentials", "set", "acme", system, "--stdin", stdin=json.dumps(values))
        assert stored.returncode == 0, stored.stdout + stored.stderr
    started = time.monotonic()
    done = cli("check", "acme")
    assert time.monotonic() - started < 20
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "127.0.0.1:9 refused the connection" in done.stdout and "not tried: the host cannot be reached" in done.stdout
    assert "backoff" not in done.stderr.lower()


def test_reach_names_what_failed_dns_tcp_or_nothing() -> None:
    from mlconnector.reach import reach

    assert "does not resolve" in reach("https://no-such-host.invalid/api").detail
    refused = reach("http://127.0.0.1:9/")
    assert not refused.ok and refused.where == "127.0.0.1:9" and "refused" in refused.detail
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        reached = reach(f"http://127.0.0.1:{listening.getsockname()[1]}/odata")
    assert reached.ok and "TCP" in reached.detail


def test_a_port_in_use_is_one_line(cli: Any) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        _one_line_failure(cli("serve", "--port", str(port)), f"port {port} on 127.0.0.1 is already in use")


def test_debug_shows_the_traceback(cli: Any) -> None:
    done = cli("--debug", "status", DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    assert done.returncode != 0 and "Traceback" in done.stderr
