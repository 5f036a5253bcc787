"""Structured logs: JSON lines in production, readable lines in a terminal.

Every event passes through the redactor last, so a secret handed to a log call by
mistake is masked before it is written anywhere.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from mlconnector.redaction import redact

_configured = False


def _redact_processor(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    return redact(event_dict)


def configure_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    global _configured
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not getattr(stream, "isatty", lambda: False)())
    renderer: Any = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    structlog.configure(
        processors=[*shared, _redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Route the standard library's records (celery, gunicorn, werkzeug) through the same redaction.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(getattr(logging, level))
    _configured = True


class _RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        from mlconnector.redaction import redact_text

        return redact_text(super().format(record))


def configure_from_settings() -> None:
    from mlconnector.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
