"""Acumatica's licence counts sessions: the fleet-wide session cap and the login-limit wait,
against the sandbox over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import requests

from connectors.acumatica import AcumaticaConnector
from mlconnector.http import RetriableError
from mlconnector.http.runtime import build_runtime
from sandboxes.acumatica import AcumaticaSandbox, AcumaticaSettings, LicenseLimits
from sandboxes.base import SandboxOptions, start_sandbox

FAST = {"retry": {"base": 0.05, "max_wait": 0.2, "max_tries": 1}, "action_poll_interval": 0.01}


@pytest.fixture
def running() -> Any:
    # A real instance refuses a sign-in over the API-user limit with a status that is not 429.
    run = start_sandbox(AcumaticaSandbox(SandboxOptions(seed=2, records=5), settings=AcumaticaSettings(processing_ms=150),
                                         limits=LicenseLimits(api_users=1, login_limit_status=500)))
    yield run
    run.stop()


def connect(running: Any, runtime: Any = None, **config: Any) -> AcumaticaConnector:
    settings, credentials = AcumaticaConnector.settings_from_sandbox_info(running.info())
    return AcumaticaConnector.create({**settings, **FAST, "auth_mode": "cookie", **config}, credentials,
                                     runtime or build_runtime(""))


def _squat(running: Any) -> requests.Session:
    creds = running.info()["credentials"]
    squatter = requests.Session()
    assert squatter.post(f"{running.url}/entity/auth/login", timeout=5,
                         json={"name": creds["username"], "password": creds["password"]}).status_code == 204
    return squatter


def test_a_login_limit_refusal_is_a_wait_whatever_its_status(running: Any) -> None:
    requests.post(f"{running.url}/_sandbox/license", json={"login_limit_status": 401}, timeout=5)
    squatter = _squat(running)
    with pytest.raises(RetriableError) as caught:
        connect(running).get("accounts", "40000")
    assert "API Login Limit" in str(caught.value) and caught.value.retry_after
    # With in-call retries, the sign-in waits for the other session to end, then succeeds.
    threading.Timer(0.5, lambda: squatter.post(f"{running.url}/entity/auth/logout", timeout=5)).start()
    patient = connect(running, retry={"base": 0.2, "max_wait": 1, "max_tries": 8})
    assert patient.get("accounts", "40000").AccountCD == "40000"
    assert running.sandbox.active_sessions() == 0


def test_an_oauth_token_refused_for_the_login_limit_is_a_wait_too(running: Any) -> None:
    requests.post(f"{running.url}/_sandbox/settings", json={"oauth_sessions_count": True}, timeout=5).raise_for_status()
    requests.post(f"{running.url}/_sandbox/license", json={"login_limit_status": 403}, timeout=5).raise_for_status()
    connect(running, auth_mode="oauth").get("accounts", "40000")  # this token now holds the one API user
    with pytest.raises(RetriableError) as caught:
        connect(running, auth_mode="oauth").get("accounts", "40000")  # a new process: a token of its own
    assert "API Login Limit" in str(caught.value)


def test_the_session_cap_keeps_concurrent_workers_within_the_licence(running: Any) -> None:
    runtime = build_runtime("")  # one process's runtime; in the fleet its slots live in Redis
    results: list[Any] = []

    def work() -> None:
        connector = connect(running, runtime, max_sessions=1)
        try:
            results.append(connector.get("accounts", "40000").AccountCD)
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            results.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == ["40000"] * 4
    stats = requests.get(f"{running.url}/_sandbox/stats", timeout=5).json()
    assert stats.get("login_limit_refused", 0) == 0
    assert runtime.slots.in_use("acumatica:" + running.url.split("://", 1)[1]) == 0


def test_without_the_cap_the_same_workers_are_refused_by_the_licence(running: Any) -> None:
    """The control for the test above: it can fail."""
    runtime = build_runtime("")
    errors: list[Exception] = []

    def work() -> None:
        try:
            connect(running, runtime).get("accounts", "40000")
        except RetriableError as error:
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors and all("API Login Limit" in str(e) for e in errors)


def test_a_slot_waited_for_too_long_is_retriable(running: Any) -> None:
    runtime = build_runtime("")
    name = "acumatica:" + running.url.split("://", 1)[1]
    with runtime.slots.hold(name, 1):
        started = time.monotonic()
        with pytest.raises(RetriableError) as caught:
            connect(running, runtime, max_sessions=1, session_wait=0.3).get("accounts", "40000")
        assert time.monotonic() - started >= 0.3
    assert "session slot" in str(caught.value)
    assert running.sandbox.active_sessions() == 0


def test_the_default_login_limit_answer_is_a_500_the_connector_waits_out() -> None:
    """Round 2: over the API-user limit a real instance answers "API Login Limit" with a status
    that is not 429 (the sandbox's default: 500, the usual error body). The connector takes it
    for "too many sessions now": even a write waits and retries, and if the limit persists the
    error is retriable, says so on one line and carries the wait."""
    with start_sandbox(AcumaticaSandbox(SandboxOptions(seed=2, records=5), limits=LicenseLimits(api_users=1))) as run:
        assert LicenseLimits().login_limit_status == 500
        squatter = _squat(run)
        creds = run.info()["credentials"]
        refused = requests.post(f"{run.url}/entity/auth/login", json={"name": creds["username"],
                                                                      "password": creds["password"]}, timeout=5)
        assert refused.status_code == 500 and "Retry-After" not in refused.headers
        assert {"message", "exceptionMessage", "exceptionType"} <= set(refused.json())
        assert refused.json()["exceptionMessage"].startswith("API Login Limit")
        with pytest.raises(RetriableError) as caught:
            connect(run).put("customers", {"CustomerName": "Waiting Customer"})
        text = str(caught.value)
        assert "too many sessions now" in text and "API Login Limit" in text and "\n" not in text
        assert caught.value.retry_after and caught.value.not_acted_on  # type: ignore[attr-defined]
        threading.Timer(0.5, lambda: squatter.post(f"{run.url}/entity/auth/logout", timeout=5)).start()
        patient = connect(run, retry={"base": 0.2, "max_wait": 1, "max_tries": 8})
        assert patient.put("customers", {"CustomerName": "Waiting Customer"}).CustomerName == "Waiting Customer"
        assert run.sandbox.active_sessions() == 0
