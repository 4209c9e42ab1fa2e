"""Bounded gates for concurrent work, and one log line per limit per interval when a limit is hit.

A `Gate` never waits: past its capacity `try_enter` says no at once, and the caller answers fast
(a 404 to containerd, which then goes upstream; a 503 to a peer, which then tries another provider).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.logs import get_logger, log_event

log = get_logger("limits")


@dataclass
class LimitReporter:
    """Counts limit hits and logs each limit at most once per `interval_s`, with the count since."""

    interval_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    on_hit: Callable[[str], None] | None = None  # e.g. a metrics counter
    _pending: dict[str, int] = field(default_factory=dict)
    _logged_at: dict[str, float] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def hit(self, limit: str, **context: object) -> None:
        self.totals[limit] = self.totals.get(limit, 0) + 1
        self._pending[limit] = self._pending.get(limit, 0) + 1
        if self.on_hit is not None:
            self.on_hit(limit)
        now = self.clock()
        last = self._logged_at.get(limit)
        if last is None or now - last >= self.interval_s:
            log_event(log, "limit_reached", level=30, limit=limit, hits=self._pending[limit], **context)
            self._logged_at[limit] = now
            self._pending[limit] = 0


@dataclass
class Gate:
    """At most `capacity` holders at once; `try_enter` never blocks."""

    name: str
    capacity: int
    reporter: LimitReporter | None = None
    held: int = 0

    def try_enter(self, **context: object) -> bool:
        if self.held >= self.capacity:
            if self.reporter is not None:
                self.reporter.hit(self.name, capacity=self.capacity, **context)
            return False
        self.held += 1
        return True

    def leave(self) -> None:
        self.held = max(0, self.held - 1)
