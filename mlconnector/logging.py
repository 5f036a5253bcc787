"""Structured logs: JSON lines in production, readable lines in a terminal.

One renderer for every logger: structlog's own and the standard library's (celery, kombu,
backoff, alembic, gunicorn, werkzeug) pass through the same processors, so a production log
is one JSON object per line whoever wrote it. Values bound with `log_context` (the record,
event, integration and flow being worked on) appear on every line written inside it, from
either kind of logger. Every event passes through the redactor last, so a secret handed to a
log call by mistake is masked before it is written anywhere.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

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
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, _redact_processor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # The standard library's records go through the same chain and renderer.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.format_exc_info,
                    _redact_processor, _RedactedText(renderer)],
    ))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(getattr(logging, level))
    _configured = True


class _RedactedText:
    """The renderer, then the redactor over its text: a secret inside a library's own message
    (a URL with a token in it) is masked too, not only secrets in named fields."""

    def __init__(self, renderer: Any) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: dict[str, Any]) -> str:
        from mlconnector.redaction import redact_text

        return redact_text(self.renderer(logger, name, event_dict))


@contextmanager
def log_context(**values: Any) -> Iterator[Callable[..., None]]:
    """Bind `values` to every log line written inside (structlog and standard library alike);
    the yielded function binds more once they are known. All are unbound on exit, so a worker
    process's next task starts clean."""
    tokens = dict(structlog.contextvars.bind_contextvars(**values))

    def bind(**more: Any) -> None:
        for key, token in structlog.contextvars.bind_contextvars(**more).items():
            tokens.setdefault(key, token)

    try:
        yield bind
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def configure_from_settings() -> None:
    from mlconnector.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
