"""Known failures as a page with one line and the next step, never a traceback."""

from __future__ import annotations

from flask import render_template
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from mlconnector.console.blueprint import blueprint

NEXT_STEP = {
    400: "Go back, reload the page and try again.",
    401: "Sign in, then try again.",
    403: "Ask an operator to do it.",
    404: "Go back to the exceptions queue.",
    429: "Too many attempts: wait a minute before signing in again.",
}


def error_page(code: int, message: str) -> ResponseReturnValue:
    return render_template("error.html", code=code, message=message, next_step=NEXT_STEP.get(code, "")), code


def http_error(error: HTTPException) -> ResponseReturnValue:
    """The app's handler calls this for console paths (CSRF and rate-limit refusals come before any view)."""
    from flask_wtf.csrf import CSRFError

    if isinstance(error, CSRFError):
        return error_page(400, f"the form was refused ({error.description}); reload the page and submit it again")
    return error_page(error.code or 500, error.description or error.name)


@blueprint.errorhandler(LookupError)
def _not_found(error: LookupError) -> ResponseReturnValue:
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return error_page(404, message)


@blueprint.errorhandler(ValueError)
def _refused(error: ValueError) -> ResponseReturnValue:
    """NotResolvable, ConfigError and other refusals the platform explains in words."""
    problems = getattr(error, "problems", None)
    return error_page(422, "; ".join(problems) if problems else str(error))


def _connector_error(error: Exception) -> ResponseReturnValue:
    return render_template("error.html", code=502, message=str(error),
                           next_step="Check that the system is reachable and the integration's credentials are right "
                                     "(mlconnector check <integration>), then try again."), 502


def register_connector_errors() -> None:
    from mlconnector.http import ConnectorError

    blueprint.register_error_handler(ConnectorError, _connector_error)


register_connector_errors()
