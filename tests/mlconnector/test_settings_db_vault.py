"""Settings, migrations on both databases, append-only audit, and the vault."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet


def test_wrong_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlconnector.settings import SettingsError, get_settings, reset_settings_cache

    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    reset_settings_cache()
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        get_settings()
    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("MLCONNECTOR_MAX_DELIVERIES", "zero")
    reset_settings_cache()
    with pytest.raises(SettingsError, match="MLCONNECTOR_MAX_DELIVERIES"):
        get_settings()
    reset_settings_cache()


def test_an_amqp_broker_without_a_shared_redis_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each process would otherwise keep its own rate limiter and token cache."""
    from mlconnector.settings import SettingsError, get_settings, reset_settings_cache

    monkeypatch.setenv("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.delenv("REDIS_URL", raising=False)
    reset_settings_cache()
    with pytest.raises(SettingsError, match=r"^invalid settings: CELERY_BROKER_URL is an AMQP broker, so REDIS_URL must be set"):
        get_settings()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    reset_settings_cache()
    assert get_settings().effective_redis_url == "redis://127.0.0.1:6379/0"
    reset_settings_cache()


def test_bad_secret_key_names_the_variable(configure) -> None:
    from mlconnector.settings import SettingsError, get_settings

    configure(MLCONNECTOR_SECRET_KEYS="not-a-key")
    with pytest.raises(SettingsError, match="MLCONNECTOR_SECRET_KEYS"):
        get_settings().fernet_keys()


def test_embedded_default_creates_a_private_key_file(configure, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from mlconnector.settings import get_settings

    configure()
    monkeypatch.delenv("MLCONNECTOR_SECRET_KEYS")
    from mlconnector.settings import reset_settings_cache

    reset_settings_cache()
    keys = get_settings().fernet_keys(create=True)  # sealing the first credential
    key_file = tmp_path / ".mlconnector-keys"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert get_settings().fernet_keys() == keys  # stable across calls
    assert get_settings().embedded
    assert get_settings().effective_database_url.startswith("sqlite")


def test_the_home_holds_env_key_file_and_database_wherever_a_command_runs(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path) -> None:
    from mlconnector.settings import get_settings, instance_home, reset_settings_cache

    for name in ("DATABASE_URL", "MLCONNECTOR_SECRET_KEYS", "MLCONNECTOR_KEY_FILE", "MLCONNECTOR_HOME",
                 "MLCONNECTOR_MAX_DELIVERIES"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "books"
    deep = home / "exports" / "2026"
    deep.mkdir(parents=True)
    (home / ".env").write_text("MLCONNECTOR_MAX_DELIVERIES=5\n")
    monkeypatch.chdir(home)
    reset_settings_cache()
    keys = get_settings().fernet_keys(create=True)  # the first credential sealed here makes the home's key file
    assert (home / ".mlconnector-keys").exists()

    monkeypatch.chdir(deep)  # a later command run from a subdirectory
    reset_settings_cache()
    assert instance_home() == home.resolve()
    assert get_settings().fernet_keys() == keys and not (deep / ".mlconnector-keys").exists()
    assert get_settings().effective_database_url == f"sqlite:///{home.resolve() / 'mlconnector.db'}"
    assert get_settings().max_deliveries == 5  # the home's .env, not the working directory's

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLCONNECTOR_HOME", str(home))  # named explicitly: the same files from anywhere
    reset_settings_cache()
    assert get_settings().fernet_keys() == keys and get_settings().max_deliveries == 5
    reset_settings_cache()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_and_append_only_audit(backend: str, tmp_path, fresh_pg: str) -> None:
    from mlconnector.db import migrate

    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else fresh_pg  # its own: no other test's rows
    migrate.downgrade(url)
    migrate.upgrade(url)
    assert migrate.current(url) == "0008"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    tables = set(sa.inspect(engine).get_table_names())
    assert {"integrations", "credentials", "inbound_events", "sync_records", "audit_events", "watermarks", "links"} <= tables
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO audit_events (at, kind, message) VALUES (CURRENT_TIMESTAMP, 'test', 'hello')"))
    for statement in ("UPDATE audit_events SET message = 'changed'", "DELETE FROM audit_events"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with engine.begin() as connection:
                connection.execute(sa.text(statement))
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO integrations (id, pair, name, enabled, config, created_at, updated_at) "
                                   "VALUES ('a', 'p', 'a', true, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        connection.execute(sa.text("INSERT INTO sync_records (integration_id, flow, source_id, status, deliveries, created_at, updated_at) "
                                   "VALUES ('a', 'f', '1', 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO sync_records (integration_id, flow, source_id, status, deliveries, created_at, updated_at) "
                                       "VALUES ('a', 'f', '1', 'pending', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    engine.dispose()
    migrate.downgrade(url)
    assert migrate.current(url) is None


def test_vault_round_trip_rotation_and_no_secret_at_rest_or_in_logs(configure, fresh_pg: str) -> None:
    from mlconnector import vault
    from mlconnector.db.models import Credential, Integration
    from mlconnector.db.session import session_scope
    from mlconnector.logging import configure_logging, get_logger
    from mlconnector.settings import reset_settings_cache

    old_key = Fernet.generate_key().decode()
    env = configure(fresh_pg, MLCONNECTOR_SECRET_KEYS=old_key)
    secret = "s3cr3t-client-secret-value-9f8e"
    with session_scope() as session:
        session.add(Integration(id="acme", pair="counter-test", name="acme", config={}))
        session.flush()
        vault.store(session, "acme", "counter", {"client_id": "abc", "client_secret": secret})
    with session_scope() as session:
        assert vault.load(session, "acme", "counter")["client_secret"] == secret
        raw = session.execute(sa.text("SELECT ciphertext FROM credentials")).scalar()
        assert secret.encode() not in bytes(raw)

    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    get_logger("test").info("calling vendor", client_secret=secret, note=f"token was {secret}")
    logging.getLogger("stdlib").warning("echo %s", secret)
    assert secret not in stream.getvalue()
    assert "calling vendor" in stream.getvalue()

    new_key = Fernet.generate_key().decode()
    os.environ["MLCONNECTOR_SECRET_KEYS"] = f"{new_key},{old_key}"
    reset_settings_cache()
    with session_scope() as session:
        assert vault.rotate(session) == 1
    os.environ["MLCONNECTOR_SECRET_KEYS"] = new_key  # the old key is gone for good
    reset_settings_cache()
    with session_scope() as session:
        assert vault.load(session, "acme", "counter")["client_secret"] == secret
        raw = bytes(session.scalar(sa.select(Credential.ciphertext)))
    assert Fernet(new_key.encode()).decrypt(raw)
    os.environ["MLCONNECTOR_SECRET_KEYS"] = old_key
    reset_settings_cache()
    with session_scope() as session:
        with pytest.raises(vault.VaultError, match="cannot be decrypted"):
            vault.load(session, "acme", "counter")
    del env


def test_cli_credentials_set_reads_stdin_not_argv(configure, tmp_path) -> None:
    from click.testing import CliRunner

    from mlconnector.cli import main
    from mlconnector.db import migrate
    from mlconnector.db.session import session_scope
    from mlconnector import vault

    configure()
    migrate.upgrade()
    runner = CliRunner()
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"systems": {"counter": {"base_url": "http://127.0.0.1:1"}}}))
    result = runner.invoke(main, ["integrations", "add", "acme", "--pair", "counter-test", "--config", str(config)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["credentials", "set", "acme", "counter", "--stdin"], input=json.dumps({"token": "tok-123456"}))
    assert result.exit_code == 0, result.output
    assert "tok-123456" not in result.output
    with session_scope() as session:
        assert vault.load(session, "acme", "counter") == {"token": "tok-123456"}
    result = runner.invoke(main, ["keys", "rotate"])
    assert result.exit_code == 0 and "1 credential" in result.output
    for group in ("db", "credentials", "keys", "integrations", "vendors", "sandbox"):
        assert runner.invoke(main, [group, "--help"]).exit_code == 0


def test_two_workers_linking_one_new_vendor_at_once_both_succeed(configure, fresh_pg: str) -> None:
    """Two bills of one new vendor in flight: both resolve and link it. The second waits
    for the first's row, gets the link the first stored, and fails on nothing."""
    import threading

    from mlconnector import links as link_store
    from mlconnector.db.session import session_scope
    from mlconnector.integrations import create_integration

    configure(fresh_pg, MLCONNECTOR_PAIR_MODULES="tests.fleet_pair")
    with session_scope() as session:
        create_integration(session, "acme", "counter-test", {"systems": {"counter": {"base_url": "http://127.0.0.1:9"}}})

    def link(session: Any, target: str, how: str, replace: bool = False) -> Any:
        return link_store.link(session, "acme", kind="vendor", source_system="servicetitan", source_id="77",
                               source_name="Rapid Supply", target_system="epicor", target_id=target,
                               target_name="RAPID SUPPLY", how=how, replace=replace)

    second_done = threading.Event()
    outcome: list[Any] = []

    def second() -> None:
        try:
            with session_scope() as other:
                stored = link(other, "502", "matched_by_name")
                outcome.append((stored.target_id, stored.how))
        except BaseException as error:  # noqa: BLE001 - reported below
            outcome.append(error)
        second_done.set()

    with session_scope() as first:
        link(first, "501", "created")
        thread = threading.Thread(target=second)
        thread.start()
        assert not second_done.wait(0.5)  # waits for the first worker's row
    thread.join(10)
    assert outcome == [("501", "created")]  # the first answer stands, for both
    with session_scope() as session:
        stored_links = link_store.list_links(session, "acme")
        assert [(l.target_id, l.how) for l in stored_links] == [("501", "created")]
        link(session, "503", "manual", replace=True)  # a person's link replaces it
    with session_scope() as session:
        assert [(l.target_id, l.how) for l in link_store.list_links(session, "acme")] == [("503", "manual")]


def test_a_named_lock_makes_a_second_transaction_wait_for_the_first(configure, fresh_pg: str) -> None:
    import threading

    from mlconnector import locks
    from mlconnector.db.session import session_scope

    configure(fresh_pg)
    order: list[str] = []

    def second(name: str) -> None:
        with session_scope() as other:
            locks.hold_until_commit(other, name)
            order.append(f"second:{name}")

    with session_scope() as first:
        locks.hold_until_commit(first, "epicor-vendor-create:acme:RAPID SUPPLY")
        waiting = threading.Thread(target=second, args=("epicor-vendor-create:acme:RAPID SUPPLY",))
        other_name = threading.Thread(target=second, args=("epicor-vendor-create:acme:OTHER SUPPLY",))
        waiting.start()
        other_name.start()
        other_name.join(5)
        waiting.join(0.5)
        assert order == ["second:epicor-vendor-create:acme:OTHER SUPPLY"]  # another name does not wait
        order.append("first commits")
    waiting.join(5)
    assert order[-2:] == ["first commits", "second:epicor-vendor-create:acme:RAPID SUPPLY"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_vendor_links_become_links_of_kind_vendor_without_losing_one(backend: str, tmp_path, fresh_pg: str) -> None:
    """Upgrading from 0001 keeps every vendor link (ids, names, how, date) as a link of kind
    'vendor', and a record held for a vendor becomes held for that link."""
    import sqlalchemy as sa

    from mlconnector.db import migrate

    url = f"sqlite:///{tmp_path / 'links.db'}" if backend == "sqlite" else fresh_pg
    migrate.downgrade(url)
    migrate.upgrade(url, revision="0001")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.execute(sa.text("INSERT INTO integrations (id, pair, name, enabled, config, created_at, updated_at) "
                                   "VALUES ('acme', 'servicetitan-epicor', 'acme', true, '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        for n, (source, target, how) in enumerate([("501", "28", "manual"), ("502", "29", "matched_by_name")]):
            connection.execute(sa.text(
                "INSERT INTO vendor_links (integration_id, source_system, source_vendor_id, source_vendor_name, target_system, "
                "target_vendor_id, target_vendor_name, how, created_at) VALUES ('acme', 'servicetitan', :s, :sn, 'epicor', :t, "
                ":tn, :how, '2026-11-30 10:00:00+00')"), {"s": source, "sn": f"Vendor {source}", "t": target, "tn": f"EP {target}", "how": how})
        connection.execute(sa.text(
            "INSERT INTO sync_records (integration_id, flow, source_id, status, deliveries, hold_key, hold_reason, created_at, updated_at) "
            "VALUES ('acme', 'inventory_bills', '70001', 'held', 1, 'vendor:servicetitan:777', 'no vendor', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    migrate.upgrade(url)
    with engine.begin() as connection:
        rows = connection.execute(sa.text(
            "SELECT kind, source_system, source_id, source_name, target_system, target_id, target_name, how FROM links ORDER BY source_id")).all()
        releases = connection.execute(sa.text("SELECT release_key FROM hold_releases")).scalars().all()
    assert [tuple(r) for r in rows] == [
        ("vendor", "servicetitan", "501", "Vendor 501", "epicor", "28", "EP 28", "manual"),
        ("vendor", "servicetitan", "502", "Vendor 502", "epicor", "29", "EP 29", "matched_by_name"),
    ]
    assert releases == ["link:vendor:servicetitan:777"]
    engine.dispose()
    migrate.downgrade(url)


def test_record_locks_and_the_alert_sender_live_in_separate_lock_spaces(configure, fresh_pg: str) -> None:
    """Record 7,340,001 and the alert sender once shared one advisory key; each space is its own now."""
    from mlconnector import locks
    from mlconnector.db.session import session_scope

    configure(fresh_pg)
    with session_scope() as first, session_scope() as second:
        with locks.try_lock(first, locks.LockSpace.RECORD, 7_340_001) as record_taken, \
                locks.try_lock(second, locks.LockSpace.ALERTS, 0) as alerts_taken:
            assert record_taken and alerts_taken
        with locks.try_lock(second, locks.LockSpace.RECORD, 7_340_001) as again:
            assert not again  # the same record is still held by the first transaction


def test_a_missing_key_file_is_never_replaced_while_sealed_credentials_exist(configure, monkeypatch, tmp_path) -> None:
    from mlconnector import vault
    from mlconnector.db import migrate
    from mlconnector.db.models import Integration
    from mlconnector.db.session import session_scope
    from mlconnector.settings import reset_settings_cache

    configure()
    monkeypatch.delenv("MLCONNECTOR_SECRET_KEYS")
    key_file = tmp_path / "keys" / "mlconnector.key"
    key_file.parent.mkdir()
    monkeypatch.setenv("MLCONNECTOR_KEY_FILE", str(key_file))
    reset_settings_cache()
    migrate.upgrade()
    with session_scope() as session:
        session.add(Integration(id="acme", pair="counter-test", name="acme", config={}))
        session.flush()
        vault.store(session, "acme", "counter", {"token": "first-secret"})  # nothing sealed yet: a key is made
    assert key_file.exists()
    key_file.unlink()
    with pytest.raises(vault.VaultError) as refused:
        with session_scope() as session:
            vault.store(session, "acme", "other", {"token": "second-secret"})
    assert "MLCONNECTOR_SECRET_KEYS is not set" in str(refused.value) and str(key_file) in str(refused.value)
    assert not key_file.exists()
    with pytest.raises(vault.VaultError):
        with session_scope() as session:
            vault.load(session, "acme", "counter")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_webhook_keys_leave_the_config_for_the_vault(backend: str, configure, tmp_path, fresh_pg: str) -> None:
    """Upgrading seals an integration's webhook keys and removes them from its config; after
    that, no table holds a key in plain text."""
    import sqlalchemy as sa

    from mlconnector import vault
    from mlconnector.db import migrate
    from mlconnector.db.session import session_scope

    url = f"sqlite:///{tmp_path / 'hooks.db'}" if backend == "sqlite" else fresh_pg
    configure(url)
    migrate.downgrade(url)
    migrate.upgrade(url, revision="0005")
    key, previous = "whk-current-0123456789abcdef", "whk-previous-0123456789abcdef"
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        connection.execute(sa.text(
            "INSERT INTO integrations (id, pair, name, enabled, config, created_at, updated_at) VALUES "
            "('acme', 'servicetitan-epicor', 'acme', true, :config, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"config": json.dumps({"systems": {}, "webhook": {"hmac_key": key, "previous_hmac_key": previous,
                                                               "signature_encoding": "base64"}})})
    migrate.upgrade(url)
    with session_scope() as session:
        assert vault.load(session, "acme", "webhook") == {"hmac_key": key, "previous_hmac_key": previous}
    with engine.begin() as connection:
        config = connection.execute(sa.text("SELECT config FROM integrations")).scalar()
        config = json.loads(config) if isinstance(config, str) else config
        assert config["webhook"] == {"signature_encoding": "base64"}
        for table in ("integrations", "credentials", "audit_events"):
            for row in connection.execute(sa.text(f"SELECT * FROM {table}")).all():
                text = " ".join(str(bytes(v) if isinstance(v, (bytes, memoryview)) else v) for v in row)
                assert key not in text and previous not in text, table
    engine.dispose()
    migrate.downgrade(url, revision="0005")
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.begin() as connection:
        config = connection.execute(sa.text("SELECT config FROM integrations")).scalar()
        config = json.loads(config) if isinstance(config, str) else config
        assert config["webhook"]["hmac_key"] == key
    engine.dispose()
    migrate.downgrade(url)


def test_a_webhook_key_in_the_config_is_refused_with_where_it_belongs() -> None:
    from mlconnector.config import ConfigError, validate_config
    from mlconnector.flows import get_pair

    with pytest.raises(ConfigError) as refused:
        validate_config(get_pair("servicetitan-epicor"), {"systems": {"servicetitan": {"tenant": 1},
                                                                     "epicor": {"api_base": "http://x", "company": "C"}},
                                                         "webhook": {"hmac_key": "k" * 20}})
    assert "webhook.hmac_key: webhook keys are secrets" in str(refused.value)
    assert "mlconnector credentials set <integration> webhook" in str(refused.value)


def test_a_poll_may_run_longer_than_a_record_before_it_is_stopped() -> None:
    """A backfill's first poll pages through a year of documents: killed at a record's limit,
    it would start again from the same position for ever."""
    import celeryconfig
    from mlconnector import tasks

    poll, record = tasks.poll, tasks.process_record
    assert (poll.soft_time_limit, poll.time_limit) == (3600, 3660)
    assert (record.soft_time_limit, record.time_limit) == (240, 300)  # the fleet-wide defaults
    assert celeryconfig.task_soft_time_limit == 240 and poll.soft_time_limit > 10 * celeryconfig.task_soft_time_limit
