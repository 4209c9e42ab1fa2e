"""Capped exponential backoff with full jitter. Pure apart from the random source, which is injectable."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    initial: float = 0.1
    maximum: float = 5.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _current: float = 0.0

    def next_delay(self) -> float:
        self._current = self.initial if self._current == 0 else min(self._current * self.factor, self.maximum)
        return self.rng.uniform(self._current / 2, self._current)

    def reset(self) -> None:
        self._current = 0.0
