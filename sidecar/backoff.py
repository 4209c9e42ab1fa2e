"""Exponential backoff with jitter, reset after a healthy period: the Node watch and the containerd
connection both retry with it.

Rules:
- Pure: the caller passes the current monotonic time and a random source; nothing sleeps here.
- Delays double from `initial` up to `maximum`, each stretched by a random factor in [1, 1 + jitter] and
  capped at `maximum`. A failure that comes more than `reset_after` after the previous one starts again
  from `initial` (client-go's backoff manager does the same).
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        initial: float,
        maximum: float,
        *,
        jitter: float,
        reset_after: float,
        rng: random.Random,
    ) -> None:
        self._initial = initial
        self._maximum = maximum
        self._jitter = jitter
        self._reset_after = reset_after
        self._rng = rng
        self._base = initial
        self._last_failure: float | None = None

    def next_delay(self, now: float) -> float:
        """Record a failure at `now` and return how long to wait before trying again."""
        if self._last_failure is not None and now - self._last_failure > self._reset_after:
            self._base = self._initial
        self._last_failure = now
        delay = min(self._base * self._rng.uniform(1.0, 1.0 + self._jitter), self._maximum)
        self._base = min(self._base * 2.0, self._maximum)
        return delay
