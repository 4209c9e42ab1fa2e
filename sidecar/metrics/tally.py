"""What `lokal status` shows about requests since start: totals by result and tier, and the last ones.

Pure bookkeeping: the metrics observer feeds it one summary per finished request.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RECENT = 20


@dataclass
class PullTally:
    started_at: float  # wall-clock seconds, for "since"
    by_result: Counter[str] = field(default_factory=Counter)  # containerd's requests
    bytes_by_tier: Counter[str] = field(default_factory=Counter)  # served to containerd, by source tier
    bytes_to_peers_by_tier: Counter[str] = field(default_factory=Counter)
    peer_requests: int = 0
    recent: deque[Mapping[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))

    def add(self, summary: Mapping[str, Any], followup: bool = False) -> None:
        """One finished request, as `PullRecord.fields()` gives it. A `followup` (a HEAD, a Range
        continuation) shows in `recent` and its bytes count, but it is not a request of the hit ratio."""
        self.recent.append(summary)
        tier = summary.get("tier") or "unknown"
        if summary.get("requester") == "peer":
            self.peer_requests += 1
            self.bytes_to_peers_by_tier[str(summary.get("peer_tier") or "unknown")] += summary["bytes"]
            return
        if not followup:
            self.by_result[summary["result"]] += 1
        if summary["bytes"]:
            self.bytes_by_tier[tier] += summary["bytes"]

    @property
    def hit_ratio(self) -> float | None:
        """Share of containerd's requests answered from this node or a peer; None before any."""
        total = sum(self.by_result.values())
        if not total:
            return None
        return (self.by_result["local"] + self.by_result["peer"]) / total

    def snapshot(self) -> dict[str, Any]:
        return {
            "since": self.started_at,
            "requests": sum(self.by_result.values()),
            "by_result": dict(sorted(self.by_result.items())),
            "hit_ratio": self.hit_ratio,
            "bytes_by_tier": dict(sorted(self.bytes_by_tier.items())),
            "peer_requests": self.peer_requests,
            "bytes_to_peers_by_tier": dict(sorted(self.bytes_to_peers_by_tier.items())),
            "recent": list(self.recent),
        }
