"""Requests refused before any store or peer was asked: one log line per kind per interval, and a count.

Rules:
- Every refusal is counted (`totals`, and `on_refused`, the metrics hook) by its bounded `RefusalKind`.
- The `refused` log line is rate-limited per kind (`Throttle`): the first at once, then at most one per
  interval, carrying how many refusals it stands for (`count`) and the latest one's client, method, path
  and message. A hostile client can therefore never flood the log, and no refusal goes unseen.
- The path is cut to 200 characters; a query string is never logged (it is not ours to keep).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.logs import log_event
from sidecar.registry.pulls import log
from sidecar.registry.routes import RefusalKind
from sidecar.security import Throttle

MAX_PATH_LOGGED = 200


@dataclass
class RefusalLog:
    interval_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    on_refused: Callable[[str], None] | None = None  # e.g. a metrics counter, by kind
    totals: Counter[str] = field(default_factory=Counter)
    _throttle: Throttle = field(init=False)

    def __post_init__(self) -> None:
        self._throttle = Throttle(self.interval_s, self.clock)

    def refused(self, kind: RefusalKind, *, status: int, client: str, method: str, path: str,
                message: str) -> None:
        self.totals[kind.value] += 1
        if self.on_refused is not None:
            self.on_refused(kind.value)
        count = self._throttle.due(kind.value)
        if count:
            log_event(log, "refused", kind=kind.value, status=status, count=count, client=client,
                      method=method[:16], path=path[:MAX_PATH_LOGGED], reason=message)
