"""The operations console: the browser pages finance and operations staff work in.

Served by the receiver's Flask app under /console. Every page needs a signed-in user;
every form carries a CSRF token; sign-in is rate limited; every action goes through the
same platform functions as the command line, and is audited with the person's name.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from mlconnector.console.blueprint import blueprint
from mlconnector.console.security import csrf, limiter


def init_console(app: Flask) -> None:
    """Configure sessions, CSRF and rate limiting on `app`, and mount the console's pages."""
    from mlconnector.settings import get_settings

    settings = get_settings()
    app.config.update(
        SECRET_KEY=settings.console_signing_secret(),
        SESSION_COOKIE_NAME="mlconnector_console",
        SESSION_COOKIE_SECURE=settings.console_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.console_session_minutes),
        WTF_CSRF_TIME_LIMIT=settings.console_session_minutes * 60,
        RATELIMIT_STORAGE_URI=settings.effective_redis_url or "memory://",
        RATELIMIT_KEY_PREFIX="mlconnector-console",
        RATELIMIT_HEADERS_ENABLED=True,
    )
    csrf.init_app(app)
    limiter.init_app(app)
    from mlconnector.console import views  # noqa: F401  (the pages register on the blueprint)

    app.register_blueprint(blueprint)
