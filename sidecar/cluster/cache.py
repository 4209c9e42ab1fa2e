"""The reflector's store: the current Peer of every watched node, fed by lists and watch events.

Rules:
- Pure: no I/O, no clock. Problems with nodes go to the injected `NodeProblemLog`.
- Every method returns True only when the membership really changed (a Peer field changed, a node came or
  went). Most Node MODIFIED events are status heartbeats that change nothing lokal uses: they must not
  produce a new snapshot.
- `replace` (after a list) is a diff against the cache: nodes deleted while the watch was away are removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sidecar.cluster.config import AddressFamily
from sidecar.cluster.nodes import DEFAULT_LABELS, NodeProblemLog, parse_node
from sidecar.membership import Membership, Peer, TopologyLabels


class PeerCache:
    def __init__(
        self,
        self_name: str,
        family: AddressFamily,
        problems: NodeProblemLog,
        labels: TopologyLabels = DEFAULT_LABELS,
    ) -> None:
        self._self_name = self_name
        self._labels = labels
        self._family = family
        self._problems = problems
        self._peers: dict[str, Peer] = {}

    def replace(self, objects: Iterable[object]) -> bool:
        """Make the cache exactly the listed nodes."""
        fresh: dict[str, Peer] = {}
        for obj in objects:
            peer = self._parse(obj)
            if peer is not None:
                fresh[peer.name] = peer
        for gone in set(self._peers) - set(fresh):
            self._problems.forget(gone)
        changed = fresh != self._peers
        self._peers = fresh
        return changed

    def apply(self, event_type: str, obj: object) -> bool:
        """Apply one watch event (ADDED, MODIFIED or DELETED)."""
        if event_type == "DELETED":
            name = _name_of(obj)
            self._problems.forget(name or "")
            return name is not None and self._peers.pop(name, None) is not None
        peer = self._parse(obj)
        if peer is None or self._peers.get(peer.name) == peer:
            return False
        self._peers[peer.name] = peer
        return True

    def snapshot(self) -> Membership:
        return Membership(self._self_name, dict(self._peers))

    def _parse(self, obj: object) -> Peer | None:
        parsed = parse_node(obj, self_name=self._self_name, family=self._family, labels=self._labels)
        name = parsed.peer.name if parsed.peer else (_name_of(obj) or "<unnamed>")
        self._problems.note(name, parsed.problems)
        return parsed.peer


def _name_of(obj: object) -> str | None:
    if isinstance(obj, Mapping):
        metadata: Any = obj.get("metadata")
        if isinstance(metadata, Mapping):
            name = metadata.get("name")
            return name if isinstance(name, str) and name else None
    return None
