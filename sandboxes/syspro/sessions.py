"""e.net sessions: logons, each holding a licence seat until Logoff or idle expiry."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from sandboxes.base import Stats
from sandboxes.kit.tokens import TokenStore

COUNTERS = ("logons", "logoffs", "logon_failures", "seat_refusals", "sessions_expired", "stale_session_calls")


@dataclass
class EnetSession:
    user_id: str
    operator: str
    company: str
    last_used: float
    expired: bool = False


class SessionStore(TokenStore):
    """Logged-on e.net sessions. `expire_all`/`revoke_all` serve the shared control API."""

    def __init__(self, seats: Callable[[], int], idle_seconds: Callable[[], float], stats: Callable[[], Stats]) -> None:
        super().__init__()
        self._seats, self._idle, self._stats = seats, idle_seconds, stats
        self._sessions: dict[str, EnetSession] = {}
        self._guard = threading.Lock()  # the base class's lock is not re-entrant; keep ours apart
        self.peak_open = 0

    def _live(self, user_id: str, now: float, touch: bool = False) -> EnetSession | None:
        """The session if it is live (refreshing its idle clock when `touch`); a dead one is dropped."""
        session = self._sessions.get(user_id.strip().upper())
        if session is not None and (session.expired or now - session.last_used > self._idle()):
            del self._sessions[session.user_id]
            self._stats().bump("sessions_expired")
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
            if self._purge_idle() >= self._seats():
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

    def describe(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._guard:
            return [{"user_id_prefix": s.user_id[:4], "operator": s.operator, "company": s.company,
                     "idle_seconds": round(now - s.last_used, 1), "expired": s.expired} for s in self._sessions.values()]

    def expire_all(self) -> None:
        with self._guard:
            for session in self._sessions.values():
                session.expired = True
        super().expire_all()

    def revoke_all(self) -> None:
        with self._guard:
            self._sessions.clear()
            self.peak_open = 0
        super().revoke_all()


class SysproStats(Stats):
    """Request statistics plus live session gauges (open, peak) read at snapshot time."""

    def __init__(self, gauges: Callable[[], dict[str, int]]) -> None:
        self._gauges = gauges
        super().__init__()

    def snapshot(self) -> dict[str, Any]:
        snapshot = super().snapshot()
        for name in COUNTERS:
            snapshot.setdefault(name, 0)
        return {**snapshot, **self._gauges()}
