"""Bounded gates for concurrent work, and one log line per limit per interval when a limit is hit.

A `Gate` never waits: past its capacity `try_enter` says no at once, and the caller answers fast
(a 404 to containerd, which then goes upstream; a 503 to a peer, which then tries another provider).
A `Throttle` keeps any repeated event (a limit hit, a refused request) to one log line per interval,
each line carrying how many occurrences it stands for, so a flood can never flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.logs import get_logger, log_event

log = get_logger("limits")


@dataclass
class Throttle:
    """Per key (a bounded set): the first occurrence is due at once, later ones once per `interval_s`."""

    interval_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _pending: dict[str, int] = field(default_factory=dict)
    _logged_at: dict[str, float] = field(default_factory=dict)

    def due(self, key: str) -> int:
        """Count one occurrence of `key`. Returns how many occurrences a log line written now stands for
        (this one and those held back since the last line), or 0 when no line is due yet."""
        pending = self._pending[key] = self._pending.get(key, 0) + 1
        now = self.clock()
        last = self._logged_at.get(key)
        if last is not None and now - last < self.interval_s:
            return 0
        self._logged_at[key] = now
        self._pending[key] = 0
        return pending


@dataclass
class LimitReporter:
    """Counts limit hits and logs each limit at most once per `interval_s`, with the count since."""

    interval_s: float = 60.0
    clock: Callable[[], float] = time.monotonic
    on_hit: Callable[[str], None] | None = None  # e.g. a metrics counter
    totals: dict[str, int] = field(default_factory=dict)
    _throttle: Throttle = field(init=False)

    def __post_init__(self) -> None:
        self._throttle = Throttle(self.interval_s, self.clock)

    def hit(self, limit: str, **context: object) -> None:
        self.totals[limit] = self.totals.get(limit, 0) + 1
        if self.on_hit is not None:
            self.on_hit(limit)
        hits = self._throttle.due(limit)
        if hits:
            log_event(log, "limit_reached", logging.WARNING, limit=limit, hits=hits, **context)


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
