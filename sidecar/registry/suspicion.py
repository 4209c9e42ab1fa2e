"""Bodies mixed from several providers that failed their digest: who may have lied, and how one more
try finds out. Pure, apart from the clock it is given.

Rules:
- A whole blob whose bytes came from several providers and fail the digest shows none of them to be the
  liar: each is suspect for that digest (the relay quarantines nobody for it).
- The next try of that digest asks first the provider that sent the body's tail: it did not break off,
  so it can send the whole blob. If its whole blob is wrong, it is shown to lie (the relay's whole-body
  rule). If its whole blob is right and exactly one other contributor remains, that one sent the bad
  bytes: it is shown, and `verified` names it. With two or more others left, they stay suspect.
- A suspicion lasts `window` seconds; at most `max_digests` are kept (the oldest go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

SUSPICION_WINDOW_S = 300.0
MAX_DIGESTS = 1024


@dataclass
class MixedMismatches:
    clock: Callable[[], float] = time.monotonic
    window: float = SUSPICION_WINDOW_S
    max_digests: int = MAX_DIGESTS
    _by_digest: dict[str, tuple[tuple[str, ...], float]] = field(default_factory=dict)

    def record(self, digest: str, contributors: list[str]) -> None:
        """`contributors` sent the failed body's bytes, in the order they sent them."""
        if len(self._by_digest) >= self.max_digests:
            self._by_digest.pop(next(iter(self._by_digest)))
        self._by_digest.pop(digest, None)
        self._by_digest[digest] = (tuple(contributors), self.clock() + self.window)

    def first_to_ask(self, digest: str) -> str | None:
        """The provider the next try of `digest` should ask first: the failed body's tail sender."""
        contributors = self._live(digest)
        return contributors[-1] if contributors else None

    def verified(self, digest: str, sender: str) -> str | None:
        """`sender` alone sent `digest` whole and right: the contributor now shown to have lied, if one."""
        contributors = self._live(digest)
        if sender not in contributors:
            return None
        del self._by_digest[digest]
        others = [name for name in contributors if name != sender]
        return others[0] if len(others) == 1 else None

    def _live(self, digest: str) -> tuple[str, ...]:
        found = self._by_digest.get(digest)
        if found is None:
            return ()
        contributors, until = found
        if until <= self.clock():
            del self._by_digest[digest]
            return ()
        return contributors
