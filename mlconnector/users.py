"""Console users: a name, an argon2 hash of the password and a role.

Passwords are hashed with argon2id (argon2-cffi's defaults, the OWASP recommendation);
the password itself is never stored or logged. A hash made under older parameters is
re-hashed at the next successful sign-in.
"""

from __future__ import annotations

from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from mlconnector import audit
from mlconnector.db.models import ConsoleUser, utcnow

MIN_PASSWORD_LENGTH = 12  # NIST SP 800-63B asks for at least 8; a shared back-office tool deserves more

_hasher = PasswordHasher()
# Verifying against this when the name is unknown makes an unknown name cost as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class Role(str, Enum):
    VIEWER = "viewer"  # sees everything
    OPERATOR = "operator"  # also acts: replay, resolve, link, change maps


class NewUser(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=MIN_PASSWORD_LENGTH, max_length=1000)
    role: Role

    @field_validator("username")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c.isspace() for c in value):
            raise ValueError("a user name is one word, without spaces")
        return value


class UserError(ValueError):
    """A user cannot be added or changed; the message says why."""


def add_user(session: Session, new: NewUser, *, actor: str) -> ConsoleUser:
    if session.scalar(select(ConsoleUser).where(ConsoleUser.username == new.username)) is not None:
        raise UserError(f"user {new.username!r} already exists; change a password with: mlconnector users password {new.username}")
    user = ConsoleUser(username=new.username, password_hash=_hasher.hash(new.password), role=new.role.value, active=True,
                       created_at=utcnow())
    session.add(user)
    session.flush()
    audit.append(session, "user_added", f"console user {new.username} added as {new.role.value} by {actor}", actor=actor)
    return user


def set_password(session: Session, username: str, password: str, *, actor: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    user = _get(session, username)
    user.password_hash = _hasher.hash(password)
    audit.append(session, "user_changed", f"password of console user {username} changed by {actor}", actor=actor)


def set_active(session: Session, username: str, active: bool, *, actor: str) -> None:
    user = _get(session, username)
    user.active = active
    audit.append(session, "user_changed", f"console user {username} {'enabled' if active else 'disabled'} by {actor}",
                 actor=actor)


def list_users(session: Session) -> list[ConsoleUser]:
    return list(session.scalars(select(ConsoleUser).order_by(ConsoleUser.username)))


def authenticate(session: Session, username: str, password: str) -> ConsoleUser | None:
    """The active user with this name and password, else None (the same time either way)."""
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == username.strip()))
    try:
        _hasher.verify(user.password_hash if user is not None else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.last_signin_at = utcnow()
    return user


def _get(session: Session, username: str) -> ConsoleUser:
    user = session.scalar(select(ConsoleUser).where(ConsoleUser.username == username))
    if user is None:
        raise UserError(f"no console user {username!r}; list them with: mlconnector users list")
    return user
