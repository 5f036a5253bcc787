"""Beat's poll plan: when each enabled integration's polled flows run, kept in one heap.

Why not one Celery beat entry per integration and flow: beat compares its whole schedule
with the previous one on every tick (quadratic in tenants over an interval), entries made
at one start fall due together (a burst of every tenant at the top of the interval), and
re-reading every integration and validating every config each minute makes an idle tenant
cost more the more tenants there are.

Here each (integration, flow) polls on a fixed grid, `phase + k * every`, its phase a hash
of its name: polls spread evenly over the interval, stay spread across beat restarts, and
a restart neither bursts nor skips. The plan is refreshed from the integrations changed
since the last read (by `updated_at`, with an overlap for late commits and clock skew
between hosts);
a cheap count notices removals, and a full read now and then catches anything else.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlconnector.db.models import Integration, utcnow
from mlconnector.flows import all_pairs

REFRESH_OVERLAP = timedelta(minutes=5)  # re-read rows this far behind the newest seen: a late commit is not missed
FULL_READ_SECONDS = 3600.0  # belt and braces: a change that bypassed updated_at reaches beat within the hour


@dataclass(frozen=True)
class PollSpec:
    """One polled flow of one integration: how often, and on which queue."""

    integration_id: str
    flow: str
    every: float
    queue: str

    @property
    def name(self) -> str:
        return f"poll:{self.integration_id}:{self.flow}"


def phase(integration_id: str, flow: str, every: float) -> float:
    """Seconds into each interval at which this flow polls: stable, spread uniformly."""
    digest = hashlib.blake2b(f"{integration_id}\0{flow}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64 * every


def next_due(spec: PollSpec, after: float) -> float:
    """The first grid time of `spec` strictly after `after` (epoch seconds)."""
    offset = phase(spec.integration_id, spec.flow, spec.every)
    return offset + (math.floor((after - offset) / spec.every) + 1) * spec.every


def specs_for(integration: Integration) -> list[PollSpec]:
    """The polled flows of one integration; none when it is disabled, its pair unknown, or
    its config no longer validates (its polls wait for `integrations set-config`)."""
    pair = all_pairs().get(integration.pair)
    if pair is None or not integration.enabled:
        return []
    try:
        overrides = pair.parse_config(integration.config or {}).poll_seconds
    except ValueError:
        return []
    specs = []
    for flow in pair.flows:
        every = overrides.get(flow.name, flow.poll_seconds)
        if every:
            specs.append(PollSpec(integration.id, flow.name, float(every), pair.queue))
    return specs


@dataclass
class PollPlan:
    """The polls of every enabled integration, due times in a heap (O(log n) per poll sent)."""

    specs: dict[str, list[PollSpec]] = field(default_factory=dict)  # by integration id, enabled ones only
    _heap: list[tuple[float, str, int]] = field(default_factory=list)  # (due, poll name, generation)
    _current: dict[str, tuple[int, PollSpec]] = field(default_factory=dict)  # poll name -> live generation
    _generation: int = 0
    _last_read: datetime | None = None  # when the previous read began (this host's clock)
    _full_read_at: float | None = None
    rows_read: int = 0  # integrations read by the last refresh: what keeping the schedule costs

    def refresh(self, session: Session, now: float | None = None) -> int:
        """Bring the plan up to date with the integrations table; returns the rows read."""
        now = time.time() if now is None else now
        full = (self._last_read is None or self._full_read_at is None
                or now - self._full_read_at >= FULL_READ_SECONDS)
        query = select(Integration)
        if not full:
            assert self._last_read is not None
            query = query.where(Integration.updated_at >= self._last_read - REFRESH_OVERLAP)
        self._last_read = utcnow()
        rows = list(session.scalars(query))
        if full:
            for gone in set(self.specs) - {row.id for row in rows if row.enabled}:
                self._set(gone, [], now)
            self._full_read_at = now
        for row in rows:
            self._set(row.id, specs_for(row) if row.enabled else None, now)
        self.rows_read = len(rows)
        if not full:
            enabled = session.scalar(select(func.count()).select_from(Integration).where(Integration.enabled.is_(True)))
            if enabled != len(self.specs):  # one was removed, or changed around updated_at: read all now
                self._full_read_at = None
                read = self.refresh(session, now)
                self.rows_read += read
        return self.rows_read

    def _set(self, integration_id: str, specs: list[PollSpec] | None, now: float) -> None:
        """None: the integration is disabled or gone; [] enabled with nothing to poll."""
        old = self.specs.get(integration_id)
        if old == specs:
            return
        for spec in old or []:
            self._current.pop(spec.name, None)  # its heap entry is dropped when it surfaces
        for spec in specs or []:
            self._generation += 1
            self._current[spec.name] = (self._generation, spec)
            heapq.heappush(self._heap, (next_due(spec, now), spec.name, self._generation))
        if specs is None:
            self.specs.pop(integration_id, None)
        else:
            self.specs[integration_id] = specs

    def _live(self, name: str, generation: int) -> PollSpec | None:
        current = self._current.get(name)
        return current[1] if current is not None and current[0] == generation else None

    def due(self, now: float | None = None) -> list[PollSpec]:
        """The polls due by `now`, each rescheduled to its next grid time."""
        now = time.time() if now is None else now
        ready: list[PollSpec] = []
        while self._heap and self._heap[0][0] <= now:
            when, name, generation = heapq.heappop(self._heap)
            spec = self._live(name, generation)
            if spec is None:
                continue
            ready.append(spec)
            heapq.heappush(self._heap, (next_due(spec, max(when, now)), name, generation))
        return ready

    def seconds_until_next(self, now: float | None = None) -> float | None:
        """How long beat may sleep before the next poll falls due (None: no polls at all)."""
        now = time.time() if now is None else now
        while self._heap and self._live(self._heap[0][1], self._heap[0][2]) is None:
            heapq.heappop(self._heap)
        return max(0.0, self._heap[0][0] - now) if self._heap else None

    def __len__(self) -> int:
        return len(self._current)

    def all(self) -> Iterable[PollSpec]:
        return (spec for _, spec in self._current.values())
