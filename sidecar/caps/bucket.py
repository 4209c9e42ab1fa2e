"""A token bucket that paces bytes: `reserve(n, now)` says how long to wait before those bytes may move. Pure.

Rules:
- No clock, no sleeping: the caller passes `now` (one monotonic clock) and does the waiting.
- Reservations may take the bucket into debt; a later reservation waits for the debt too, so concurrent
  streams share the rate in the order they asked. Bytes released up to time t are at most
  `burst + rate x t`: with `burst` a small share of the rate (`BURST_SHARE`), any 1 s window moves at most
  the rate plus that share, plus one chunk, which the caller keeps small (`chunk_limit`).
- `backlog(now)`: seconds until a new reservation would move without waiting. The callers refuse new work
  when it is too long, so that no transfer waits past containerd's patience (see sidecar/caps/pacer.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

BURST_SHARE = 0.02  # of one second's worth of tokens
MIN_BURST = 16 * 1024
CHUNK_SHARE = 0.01  # largest chunk the callers move at once, as a share of one second's worth


@dataclass
class TokenBucket:
    rate: float  # bytes per second, > 0
    burst: float = 0.0  # 0: BURST_SHARE of the rate, at least MIN_BURST
    _tokens: float = field(default=0.0, init=False)
    _at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate={self.rate!r}: must be > 0")
        if self.burst <= 0:
            self.burst = max(self.rate * BURST_SHARE, MIN_BURST)
        self._tokens = self.burst

    def _refill(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        if self._at is None or now > self._at:
            self._at = now

    def reserve(self, size: int, now: float) -> float:
        """Take `size` bytes' worth of tokens; the seconds to wait before moving them (0: now)."""
        self._refill(now)
        self._tokens -= max(size, 0)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def backlog(self, now: float) -> float:
        """Seconds until the debt is paid (0 when the bucket has tokens)."""
        self._refill(now)
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    @property
    def chunk_limit(self) -> int:
        """The largest chunk to move at once, so that one chunk never breaks the 1 s bound by much."""
        return max(int(self.rate * CHUNK_SHARE), 4096)

    def refund(self, size: int) -> None:
        """Give back tokens reserved for bytes that will not move after all."""
        self._tokens = min(self.burst, self._tokens + max(size, 0))
