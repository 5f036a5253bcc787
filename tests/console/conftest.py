"""Console fixtures: a configured app on the real PostgreSQL and Redis, and users to sign in as."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest
import redis

PASSWORD = "correct horse battery staple"


def add_user(name: str, role: str) -> None:
    from mlconnector.db.session import session_scope
    from mlconnector.users import NewUser, Role, add_user as add

    with session_scope() as session:
        add(session, NewUser(username=name, password=PASSWORD, role=Role(role)), actor="test")


def csrf_token(html: str) -> str:
    found = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def clear_sign_in_counts(redis_url: str) -> None:
    """Forget earlier tests' sign-in attempts (the limiter counts per address in Redis)."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("*mlconnector-console*"):
        client.delete(key)


@pytest.fixture
def console_env(configure, fresh_pg: str, redis_url: str) -> Iterator[dict[str, str]]:
    """PostgreSQL for the ledger, Redis for the sign-in limiter (no broker: work runs in-process)."""
    clear_sign_in_counts(redis_url)
    env = configure(fresh_pg, REDIS_URL=redis_url, MLCONNECTOR_CONSOLE_COOKIE_SECURE="false",
                    MLCONNECTOR_CONSOLE_SIGNIN_LIMIT="5 per minute")
    yield env


@pytest.fixture
def app(console_env: dict[str, str]) -> Any:
    from mlconnector.web import create_app

    app = create_app()
    app.config["TESTING"] = False  # CSRF and the limiter stay on, as in production
    return app


def sign_in(client: Any, name: str, password: str = PASSWORD) -> Any:
    page = client.get("/console/signin")
    return client.post("/console/signin", data={"username": name, "password": password,
                                                 "csrf_token": csrf_token(page.get_data(as_text=True))})
