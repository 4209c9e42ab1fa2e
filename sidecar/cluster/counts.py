"""Node counts for the membership log line (all, ready, by region, by region/zone), kept up to date from
each change instead of recounted over the whole cluster.

Rules:
- Pure: `apply(before, after)` moves one node's contribution; a count that drops to zero disappears.
- `fields()` is what `membership_synced` / `membership_changed` log; an unlabelled region or zone is
  "unknown" there, as operators read it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sidecar.membership import Membership, Peer


class NodeCounts:
    def __init__(self) -> None:
        self.nodes = 0
        self.ready = 0
        self._by_region: Counter[str] = Counter()
        self._by_zone: Counter[str] = Counter()

    @classmethod
    def of(cls, membership: Membership) -> NodeCounts:
        counts = cls()
        for peer in membership.peers.values():
            counts.apply(None, peer)
        return counts

    def apply(self, before: Peer | None, after: Peer | None) -> None:
        """One node changed from `before` to `after` (None: absent)."""
        if before is not None:
            self._count(before, -1)
        if after is not None:
            self._count(after, 1)

    def fields(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "ready": self.ready,
            "by_region": dict(sorted(self._by_region.items())),
            "by_zone": dict(sorted(self._by_zone.items())),
        }

    def _count(self, peer: Peer, step: int) -> None:
        self.nodes += step
        self.ready += step if peer.ready else 0
        region = peer.region or "unknown"
        zone = f"{region}/{peer.zone or 'unknown'}"
        for counter, key in ((self._by_region, region), (self._by_zone, zone)):
            counter[key] += step
            if not counter[key]:
                del counter[key]
