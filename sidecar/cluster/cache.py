"""The reflector's store: the current Peer of every watched node, fed by lists and watch events.

Rules:
- Pure: no I/O, no clock. Problems with nodes go to the injected `NodeProblemLog`.
- Every method returns True only when the membership really changed (a Peer field changed, a node came or
  went). Most Node MODIFIED events are status heartbeats that change nothing lokal uses: they must not
  produce a new snapshot.
- `replace` (after a list) is a diff against the cache: nodes deleted while the watch was away are removed.
- Changes wait for `take_changes`: the first change of a node after a take remembers the Peer it had, so a
  take returns only the nodes that really differ from the last take (changes that cancel out vanish).
- The reflector thread writes, the snapshot batcher's thread takes: a lock guards the two dicts.
"""

from __future__ import annotations

import threading
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
        self._taken: dict[str, Peer | None] = {}  # name -> its Peer at the last take, for changed names
        self._lock = threading.Lock()

    def replace(self, objects: Iterable[object]) -> bool:
        """Make the cache exactly the listed nodes."""
        fresh: dict[str, Peer] = {}
        for obj in objects:
            peer = self._parse(obj)
            if peer is not None:
                fresh[peer.name] = peer
        with self._lock:
            for gone in set(self._peers) - set(fresh):
                self._problems.forget(gone)
                self._remember(gone)
            changed = False
            for name, peer in fresh.items():
                if self._peers.get(name) != peer:
                    self._remember(name)
                    changed = True
            changed = changed or len(fresh) != len(self._peers)
            self._peers = fresh
        return changed

    def apply(self, event_type: str, obj: object) -> bool:
        """Apply one watch event (ADDED, MODIFIED or DELETED)."""
        if event_type == "DELETED":
            name = _name_of(obj)
            self._problems.forget(name or "")
            if name is None or name not in self._peers:
                return False
            with self._lock:
                self._remember(name)
                del self._peers[name]
            return True
        peer = self._parse(obj)
        if peer is None or self._peers.get(peer.name) == peer:
            return False
        with self._lock:
            self._remember(peer.name)
            self._peers[peer.name] = peer
        return True

    def take_changes(self) -> dict[str, tuple[Peer | None, Peer | None]]:
        """The nodes that differ since the last take: name -> (Peer then, Peer now), None when absent."""
        with self._lock:
            taken, self._taken = self._taken, {}
            peers = self._peers
            return {
                name: (before, after)
                for name, before in taken.items()
                if before != (after := peers.get(name))
            }

    def snapshot(self) -> Membership:
        with self._lock:
            return Membership(self._self_name, dict(self._peers))

    def _remember(self, name: str) -> None:
        """Called with the lock held, before `name` changes."""
        if name not in self._taken:
            self._taken[name] = self._peers.get(name)

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
