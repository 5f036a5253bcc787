"""Who may reach the console and what refuses them: no session, no CSRF token, a viewer's
role, too many sign-ins, the metrics token; and `mlconnector users add`."""

from __future__ import annotations

from typing import Any

from click.testing import CliRunner
from sqlalchemy import select

from tests.console.conftest import PASSWORD, add_user, clear_sign_in_counts, csrf_token, sign_in

SAMPLE = {"record_id": "1", "integration": "acme"}


def _console_rules(app: Any) -> list[tuple[str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/console") or rule.endpoint == "console.signin":
            continue
        path = rule.rule
        for name, value in SAMPLE.items():
            path = path.replace(f"<int:{name}>", value).replace(f"<{name}>", value)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((method, path))
    return out


def test_every_console_route_is_refused_without_a_session(app: Any) -> None:
    client = app.test_client()
    token = csrf_token(client.get("/console/signin").get_data(as_text=True))  # a token, but no user
    rules = _console_rules(app)
    assert len(rules) >= 14, rules
    for method, path in rules:
        if method == "GET":
            response = client.get(path)
            assert response.status_code == 302 and "/console/signin" in response.headers["Location"], (path, response.status)
        else:
            response = client.open(path, method=method, data={"csrf_token": token, "note": "x"})
            assert response.status_code == 401, (method, path, response.status)
            assert "Sign in" in response.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(app: Any) -> None:
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    add_user("olive", "operator")
    client = app.test_client()
    assert sign_in(client, "olive").status_code == 302
    refused = client.post("/console/signout", data={})
    assert refused.status_code == 400 and "CSRF" in refused.get_data(as_text=True)
    assert client.get("/console/").status_code == 200  # still signed in: the sign-out was refused
    with session_scope() as session:
        kinds = list(session.scalars(select(AuditEvent.kind).order_by(AuditEvent.id)))
    assert kinds == ["user_added", "console_signin"]


def test_a_viewer_sees_but_cannot_act(app: Any) -> None:
    add_user("vera", "viewer")
    client = app.test_client()
    assert sign_in(client, "vera").status_code == 302
    token = csrf_token(client.get("/console/").get_data(as_text=True))
    response = client.post("/console/records/1/resolve", data={"csrf_token": token, "note": "paid by cheque"})
    assert response.status_code == 403 and "only an operator" in response.get_data(as_text=True)


def test_sign_in_is_rate_limited_and_refusals_are_audited(app: Any) -> None:
    from mlconnector.db.models import AuditEvent
    from mlconnector.db.session import session_scope

    add_user("olive", "operator")
    client = app.test_client()
    statuses = [sign_in(client, "olive", "wrong password!").status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429], statuses
    assert sign_in(client, "olive", PASSWORD).status_code == 429  # the limit holds for the right password too
    with session_scope() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.kind == "console_signin_refused")).all()
    assert len(refused) == 5 and all(r.actor == "olive" for r in refused)


def test_metrics_need_the_token_when_one_is_set(configure, fresh_pg: str) -> None:
    from mlconnector.web import create_app

    configure(fresh_pg, MLCONNECTOR_METRICS_TOKEN="m3trics-t0ken")
    client = create_app().test_client()
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer m3trics-t0ken"}).status_code == 200


def test_users_add_hashes_the_password_and_audits_who_added_whom(console_env: dict[str, str]) -> None:
    from mlconnector.cli import main
    from mlconnector.db.models import AuditEvent, ConsoleUser
    from mlconnector.db.session import session_scope

    runner = CliRunner()
    short = runner.invoke(main, ["users", "add", "dana", "--role", "operator"], input="short\n")
    assert short.exit_code == 1 and "at least 12 characters" in short.output and "Traceback" not in short.output
    made = runner.invoke(main, ["users", "add", "dana", "--role", "operator"], input=PASSWORD + "\n")
    assert made.exit_code == 0, made.output
    again = runner.invoke(main, ["users", "add", "dana", "--role", "viewer"], input=PASSWORD + "\n")
    assert again.exit_code == 1 and "already exists" in again.output
    with session_scope() as session:
        user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == "dana"))
        assert user is not None and user.role == "operator"
        assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
        added = session.scalar(select(AuditEvent).where(AuditEvent.kind == "user_added"))
        assert added is not None and "dana added as operator" in added.message


def test_a_known_failure_is_one_line_with_the_next_step(app: Any) -> None:
    add_user("olive", "operator")
    client = app.test_client()
    assert sign_in(client, "olive").status_code == 302
    token = csrf_token(client.get("/console/").get_data(as_text=True))
    response = client.post("/console/records/999/resolve", data={"csrf_token": token, "note": "paid by cheque"})
    text = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="error-message">no record 999<' in text and "Traceback" not in text
    missing = client.get("/console/integrations/nowhere/maps")
    assert missing.status_code == 404 and "nowhere" in missing.get_data(as_text=True)


def test_the_session_cookie_is_secure_http_only_and_same_site_by_default(configure, fresh_pg: str, redis_url: str) -> None:
    from mlconnector.web import create_app

    clear_sign_in_counts(redis_url)
    configure(fresh_pg, REDIS_URL=redis_url)
    add_user("olive", "operator")
    client = create_app().test_client()
    signed_in = sign_in(client, "olive")
    assert signed_in.status_code == 302
    cookie = next(v for k, v in signed_in.headers.items() if k == "Set-Cookie" and v.startswith("mlconnector_console="))
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
