"""Who is signed in, and what they may do. Viewers see; operators act.

The session cookie holds the user name only; the user is read again on every request,
so disabling a user or changing a role takes effect at their next click.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import wraps
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from flask import abort, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue

from mlconnector.users import Role

OPEN_ENDPOINTS = frozenset({"console.signin"})  # the only console page that answers without a session

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class SignedIn:
    username: str
    role: str

    @property
    def may_act(self) -> bool:
        return self.role == Role.OPERATOR.value


def current_user() -> SignedIn | None:
    return getattr(g, "console_user", None)


def actor() -> str:
    """The name an action is audited under."""
    user = current_user()
    assert user is not None  # the guard ran
    return user.username


def guard() -> ResponseReturnValue | None:
    """Before every console request: a page for a signed-in, active user, or the sign-in page."""
    from mlconnector.db.models import ConsoleUser
    from mlconnector.db.session import session_scope
    from sqlalchemy import select

    if request.endpoint in OPEN_ENDPOINTS:
        return None
    name = session.get("user")
    if name:
        with session_scope() as db:
            row = db.execute(select(ConsoleUser.role, ConsoleUser.active).where(ConsoleUser.username == name)).first()
        if row is not None and row.active:
            g.console_user = SignedIn(name, row.role)
            return None
        session.clear()
    if request.method == "GET":
        return redirect(url_for("console.signin", next=request.full_path.rstrip("?")))
    abort(401, "sign in first")


def operator_only(view: F) -> F:
    """An action: operators only (a viewer gets 403 and a page saying who may)."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        user = current_user()
        if user is None or not user.may_act:
            abort(403, "only an operator can do this; ask an operator, or an administrator to make you one "
                       "(mlconnector users add NAME --role operator)")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path only, never another site."""
    if target and target.startswith("/console") and not urlsplit(target).netloc and not target.startswith("//"):
        return target
    return url_for("console.overview")
