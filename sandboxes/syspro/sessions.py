"""e.net sessions: logons, each holding a licence seat until Logoff or idle expiry."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sandboxes.base import Stats

if TYPE_CHECKING:
    from .sandbox import SysproSandbox

COUNTERS = ("logons", "logoffs", "logon_failures", "seat_refusals", "sessions_expired", "stale_session_calls")


@dataclass
class EnetSession:
    user_id: str
    operator: str
    company: str
    last_used: float
    expired: bool = False


class SessionStore:
    """Logged-on e.net sessions; the sandbox's token store, so the shared control API's
    `expire-tokens` and `revoke-tokens` reach them. Seats and idle expiry are read from the
    owner's settings at each call, as they may change at run time."""

    def __init__(self, owner: SysproSandbox) -> None:
        self.owner = owner
        self._sessions: dict[str, EnetSession] = {}
        self._guard = threading.Lock()
        self.peak_open = 0

    def _live(self, user_id: str, now: float, touch: bool = False) -> EnetSession | None:
        """The session if it is live (refreshing its idle clock when `touch`); a dead one is dropped."""
        session, idle = self._sessions.get(user_id.strip().upper()), self.owner.settings.session_idle_seconds
        if session is not None and (session.expired or now - session.last_used > idle):
            del self._sessions[session.user_id]
            self.owner.stats.bump("sessions_expired")
            return None
        if session is not None and touch:
            session.last_used = now
        return session

    def _purge_idle(self) -> int:
        now = time.time()
        return sum(1 for user_id in list(self._sessions) if self._live(user_id, now))

    def open(self, operator: str, company: str) -> str | None:
        """A new UserId (34 uppercase hex characters), or None when every licence seat is taken."""
        with self._guard:
            if self._purge_idle() >= self.owner.settings.seats:
                return None
            user_id = secrets.token_hex(17).upper()
            self._sessions[user_id] = EnetSession(user_id, operator, company, time.time())
            self.peak_open = max(self.peak_open, len(self._sessions))
            return user_id

    def use(self, user_id: str) -> EnetSession | None:
        """The live session for `user_id` (trailing blanks allowed), refreshing its idle clock."""
        with self._guard:
            return self._live(user_id, time.time(), touch=True)

    def close(self, user_id: str) -> bool:
        with self._guard:
            session = self._live(user_id, time.time())
            if session is not None:
                del self._sessions[session.user_id]
            return session is not None

    def open_count(self) -> int:
        with self._guard:
            return self._purge_idle()

    def describe(self) -> dict[str, Any]:
        """What `/_sandbox/syspro/sessions` answers."""
        count = self.open_count()
        now = time.time()
        with self._guard:
            return {"open": count, "peak": self.peak_open, "sessions": [
                {"user_id_prefix": s.user_id[:4], "operator": s.operator, "company": s.company,
                 "idle_seconds": round(now - s.last_used, 1), "expired": s.expired} for s in self._sessions.values()]}

    def expire_all(self) -> None:
        with self._guard:
            for session in self._sessions.values():
                session.expired = True

    def revoke_all(self) -> None:
        with self._guard:
            self._sessions.clear()
            self.peak_open = 0


class SysproStats(Stats):
    """Request statistics, the session counters (0 until they happen) and live session gauges."""

    def __init__(self, sessions: SessionStore) -> None:
        self.sessions = sessions
        super().__init__()

    def snapshot(self) -> dict[str, Any]:
        return {**dict.fromkeys(COUNTERS, 0), **super().snapshot(), "open_sessions": self.sessions.open_count(),
                "peak_open_sessions": self.sessions.peak_open}
