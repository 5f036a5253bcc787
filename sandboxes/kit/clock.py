"""The one server clock of the sandboxes.

Vendors stamp changes with the server's time and clients page by those stamps (`ge` the
last one seen), so a stamp must never run backwards, even if the host's clock does; equal
stamps are normal and allowed. Each vendor keeps a different precision, so the clock is
read at a stated resolution and offered in the forms the sandboxes store.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
from typing import Callable

MILLISECOND_US = 1_000
SECOND_US = 1_000_000
_EPOCH = datetime(1970, 1, 1)


class Clock:
    """Non-decreasing UTC time, truncated to `resolution_us` microseconds."""

    def __init__(self, resolution_us: int = MILLISECOND_US, source: Callable[[], int] = time.time_ns) -> None:
        if resolution_us < 1:
            raise ValueError("resolution_us must be at least 1")
        self.resolution_us = resolution_us
        self._source = source  # nanoseconds since the epoch; a test may pass its own
        self._last = 0
        self._lock = threading.Lock()

    def now_us(self) -> int:
        """Microseconds since the epoch, a multiple of the resolution, never less than before."""
        current = self._source() // 1_000 // self.resolution_us * self.resolution_us
        with self._lock:
            if current > self._last:
                self._last = current
            return self._last

    def now_seconds(self) -> float:
        """Seconds since the epoch (a float, as `time.time()` gives)."""
        return self.now_us() / SECOND_US

    def now_whole_seconds(self) -> int:
        return self.now_us() // SECOND_US

    def now_datetime(self) -> datetime:
        """Naive UTC, as the vendors that store server-local time with no zone (UTC here) do."""
        return _EPOCH + timedelta(microseconds=self.now_us())
