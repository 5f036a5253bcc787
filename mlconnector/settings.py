"""Process settings, read once from the environment and the home's `.env`.

Every setting names its environment variable; a wrong value stops the process at start
with a message naming that variable, instead of failing later inside a task.

The embedded default keeps three files in one place, its *home*: `.env`, the key file and
the SQLite database. The home is `MLCONNECTOR_HOME` when set; otherwise the nearest
directory, from the working directory upward, holding the key file or the database (as git
finds its repository), else the working directory. A command run from a subdirectory so
finds the same database and key, instead of making an empty database and a new key there.
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_FILE = "mlconnector.db"
DEFAULT_KEY_FILE = ".mlconnector-keys"
ENV_FILE = ".env"
HOME_ENV = "MLCONNECTOR_HOME"
HOME_MARKERS = (DEFAULT_KEY_FILE, DEFAULT_SQLITE_FILE)  # only our own files: a stray .env upward is not a home


def instance_home(start: Path | None = None) -> Path:
    """Where the embedded default's `.env`, key file and SQLite database live (module doc)."""
    explicit = os.environ.get(HOME_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if any((directory / marker).exists() for marker in HOME_MARKERS):
            return directory
    return here


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the environment variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(default="", validation_alias="DATABASE_URL")
    celery_broker_url: str = Field(default="", validation_alias="CELERY_BROKER_URL")
    celery_result_backend: str = Field(default="", validation_alias="CELERY_RESULT_BACKEND")
    redis_url: str = Field(default="", validation_alias="REDIS_URL")
    # On a RabbitMQ broker: quorum queues (replicated, and what Celery's native delayed delivery
    # of retry countdowns needs) or classic ones (a single node). Redis brokers ignore it.
    amqp_queue_type: Literal["quorum", "classic"] = Field(default="quorum", validation_alias="MLCONNECTOR_AMQP_QUEUE_TYPE")
    secret_keys: str = Field(default="", validation_alias="MLCONNECTOR_SECRET_KEYS")
    key_file: Path = Field(default=Path(DEFAULT_KEY_FILE), validation_alias="MLCONNECTOR_KEY_FILE")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias="MLCONNECTOR_LOG_LEVEL"
    )
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", validation_alias="MLCONNECTOR_LOG_FORMAT"
    )
    max_deliveries: int = Field(default=8, ge=1, validation_alias="MLCONNECTOR_MAX_DELIVERIES")
    # A vendor's maintenance window can last hours: transient errors keep a record pending this
    # long (backing off up to retry_ceiling_seconds) before it fails; crashes count deliveries.
    retry_window_hours: float = Field(default=24.0, gt=0, validation_alias="MLCONNECTOR_RETRY_WINDOW_HOURS")
    retry_ceiling_seconds: float = Field(default=3600.0, ge=1, validation_alias="MLCONNECTOR_RETRY_CEILING_SECONDS")
    # A catch-up poll walks everything changed since its position, a year of documents on a
    # first backfill: it may run far longer than a record's task (see celeryconfig).
    poll_time_limit_seconds: int = Field(default=3600, ge=60, validation_alias="MLCONNECTOR_POLL_TIME_LIMIT_SECONDS")
    # A worker host with no receiver serves its processes' metrics here (0: not served).
    worker_metrics_port: int = Field(default=0, ge=0, le=65535, validation_alias="MLCONNECTOR_WORKER_METRICS_PORT")
    sweep_after_seconds: int = Field(
        default=120, ge=1, validation_alias="MLCONNECTOR_SWEEP_AFTER_SECONDS"
    )
    webhook_max_bytes: int = Field(
        default=1_048_576, ge=1024, validation_alias="MLCONNECTOR_WEBHOOK_MAX_BYTES"
    )
    alert_webhook_url: str = Field(default="", validation_alias="MLCONNECTOR_ALERT_WEBHOOK_URL")
    alert_smtp_url: str = Field(default="", validation_alias="MLCONNECTOR_ALERT_SMTP_URL")
    alert_email_to: str = Field(default="", validation_alias="MLCONNECTOR_ALERT_EMAIL_TO")
    # The browser console (mlconnector/console). Its session cookie is signed with this secret;
    # unset, one is derived from the newest credential key, so every web process shares it.
    console_secret: str = Field(default="", validation_alias="MLCONNECTOR_CONSOLE_SECRET")
    # Secure cookies travel over HTTPS only; turn off only for a console served on plain http.
    console_cookie_secure: bool = Field(default=True, validation_alias="MLCONNECTOR_CONSOLE_COOKIE_SECURE")
    console_session_minutes: int = Field(default=480, ge=5, validation_alias="MLCONNECTOR_CONSOLE_SESSION_MINUTES")
    # Sign-in attempts per client address (Flask-Limiter notation); kept in Redis when one is configured.
    console_signin_limit: str = Field(default="10 per minute", validation_alias="MLCONNECTOR_CONSOLE_SIGNIN_LIMIT")
    # When set, /metrics answers only with `Authorization: Bearer <token>`.
    metrics_token: str = Field(default="", validation_alias="MLCONNECTOR_METRICS_TOKEN")

    @field_validator("database_url")
    @classmethod
    def _database_url_scheme(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError("must start with sqlite:// or postgresql://")
        if value.startswith("postgres://"):
            return "postgresql://" + value[len("postgres://"):]
        return value

    @field_validator("celery_broker_url", "redis_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "amqp://", "memory://")):
            raise ValueError("must start with redis://, rediss:// or amqp://")
        return value

    @model_validator(mode="after")
    def _fleet_shares_one_redis(self) -> "Settings":
        """Workers on an AMQP broker still need one Redis between them: without it each
        process would keep its own rate limiter and token cache, and the fleet would call a
        vendor, and ask it for tokens, as many times over as it has processes."""
        if self.celery_broker_url.startswith("amqp://") and not self.redis_url:
            raise ValueError("CELERY_BROKER_URL is an AMQP broker, so REDIS_URL must be set too (redis://host:6379/0): "
                             "the fleet's rate limiter and token cache are shared through it")
        return self

    @property
    def embedded(self) -> bool:
        """No broker configured: tasks run eagerly in this process (the embedded default)."""
        return not self.celery_broker_url

    def console_signing_secret(self) -> str:
        """The console's cookie-signing secret: set explicitly, or derived from the newest
        credential key (so it is as secret, and the same in every web process).

        With no key yet, none is made here (a key file is made only to seal the first
        credential): this process signs with a random secret, so sessions last until it stops."""
        if self.console_secret:
            return self.console_secret
        import hashlib
        import secrets

        try:
            newest = self.fernet_keys()[0]
        except MissingKeyError:
            import structlog

            structlog.get_logger(__name__).warning(
                "no credential key yet: console sessions end when this process stops; set MLCONNECTOR_CONSOLE_SECRET")
            return secrets.token_hex(32)
        return hashlib.sha256(b"mlconnector-console-session:" + newest.encode()).hexdigest()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{instance_home() / DEFAULT_SQLITE_FILE}"

    @property
    def effective_key_file(self) -> Path:
        """MLCONNECTOR_KEY_FILE, a relative path taken from the home, not the working directory."""
        path = self.key_file.expanduser()
        return path if path.is_absolute() else instance_home() / path

    @property
    def effective_redis_url(self) -> str:
        """Redis for the fleet's shared token cache and rate limiter, if there is one."""
        if self.redis_url:
            return self.redis_url
        if self.celery_broker_url.startswith(("redis://", "rediss://")):
            return self.celery_broker_url
        return ""

    def fernet_keys(self, *, create: bool = False) -> list[str]:
        """Fernet keys, newest first. The embedded default keeps one in a 0600 key file,
        made only when `create` (the first credential is being sealed): a missing key file is
        never silently replaced by a new key that could not open what is already sealed."""
        if self.secret_keys:
            keys = [k.strip() for k in self.secret_keys.split(",") if k.strip()]
            for key in keys:
                try:
                    Fernet(key.encode())
                except (ValueError, TypeError) as exc:
                    raise SettingsError(
                        "MLCONNECTOR_SECRET_KEYS: every comma-separated entry must be a "
                        "url-safe base64 Fernet key of 32 bytes"
                    ) from exc
            return keys
        return [_local_key(self.effective_key_file, create=create)]


class MissingKeyError(SettingsError):
    """No key to open sealed credentials with."""


def _local_key(path: Path, *, create: bool) -> str:
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SettingsError(
                f"MLCONNECTOR_KEY_FILE: {path} is readable by others (mode {mode:o}); chmod 600 it"
            )
        return path.read_text().strip().splitlines()[0]
    if not create:
        raise MissingKeyError(
            f"MLCONNECTOR_SECRET_KEYS is not set and the key file {path.resolve()} is missing: restore the key file "
            "(or set MLCONNECTOR_SECRET_KEYS to the keys the credentials were sealed with)"
        )
    key = Fernet.generate_key().decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    import structlog

    structlog.get_logger(__name__).warning(
        "created local encryption key file; set MLCONNECTOR_SECRET_KEYS in production",
        path=str(path.resolve()),
    )
    return key


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    try:
        return Settings(_env_file=instance_home() / ENV_FILE)  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a rule across settings: its message names them
                problems.append(str(error["msg"]).removeprefix("Value error, "))
                continue
            name = str(error["loc"][0])
            field = Settings.model_fields.get(name)
            env_name = field.validation_alias if field and field.validation_alias else name
            problems.append(f"{env_name}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


def reset_settings_cache() -> None:
    get_settings.cache_clear()
