"""One error taxonomy for every vendor, decided in one place.

Retriable (429, 5xx, timeouts, resets; may carry the vendor's Retry-After), auth (the
token was refused: refresh once), not found, and fatal (any other 4xx: the vendor's own
message is kept so a person can act on it). Connectors only extract the vendor's message;
the class is chosen here from the status code.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from mlconnector.redaction import redact, redact_text


class ConnectorError(Exception):
    """Base of every error a connector raises; message and details are already redacted."""

    retriable = False

    def __init__(
        self,
        message: str,
        *,
        vendor: str = "",
        status: int | None = None,
        details: Any = None,
        endpoint: str = "",
    ) -> None:
        self.message = redact_text(message)
        self.vendor = vendor
        self.status = status
        self.details = redact(details) if details is not None else None
        self.endpoint = endpoint
        prefix = f"{vendor} " if vendor else ""
        code = f"HTTP {status}: " if status else ""
        super().__init__(f"{prefix}{code}{self.message}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": type(self).__name__,
            "vendor": self.vendor,
            "status": self.status,
            "message": self.message,
            "details": self.details,
            "endpoint": self.endpoint,
        }


class RetriableError(ConnectorError):
    """Worth trying again later: rate limited, vendor down, network trouble."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class AuthError(ConnectorError):
    """Credentials or token refused. The client refreshes once; a second refusal surfaces."""


class NotFoundError(ConnectorError):
    """The record or path does not exist at the vendor."""


class FatalError(ConnectorError):
    """The vendor refused the request itself; retrying the same payload cannot help."""


RETRIABLE_STATUSES = frozenset(
    {HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.REQUEST_TIMEOUT}
)
AUTH_STATUSES = frozenset({HTTPStatus.UNAUTHORIZED})


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds, from either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def classify_response(
    status: int,
    message: str,
    *,
    vendor: str,
    endpoint: str = "",
    retry_after: str | None = None,
    details: Any = None,
) -> ConnectorError:
    """Turn a non-success status into the one error class the rest of the system acts on."""
    kwargs = {"vendor": vendor, "status": status, "details": details, "endpoint": endpoint}
    if status in RETRIABLE_STATUSES or status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        return RetriableError(message, retry_after=parse_retry_after(retry_after), **kwargs)
    if status in AUTH_STATUSES:
        return AuthError(message, **kwargs)
    if status == HTTPStatus.NOT_FOUND:
        return NotFoundError(message, **kwargs)
    return FatalError(message, **kwargs)
