"""The membership model: immutable snapshots of the cluster's nodes, and what changed between two.

Rules:
- Pure: no I/O, no clock. The reflector builds snapshots; everything else only reads them.
- A snapshot is never mutated. A change produces a new snapshot plus a `MembershipChange`.
- Unknown topology is the empty string, never None, so comparisons and sorting stay total.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Peer:
    """One node of the cluster as lokal sees it."""

    name: str
    address: str | None  # InternalIP of the listener's family; None when the node has none.
    region: str = ""  # "" when unlabelled
    zone: str = ""
    ready: bool = True
    is_self: bool = False


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """What differs between two snapshots, by node name."""

    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    relabelled: tuple[str, ...] = ()  # region, zone or address changed
    ready_changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.joined or self.left or self.relabelled or self.ready_changed)


@dataclass(frozen=True)
class Membership:
    """An immutable snapshot of the peers, keyed by node name (this node included)."""

    self_name: str
    peers: Mapping[str, Peer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "peers", MappingProxyType(dict(self.peers)))
        by_address = {p.address: p for p in self.peers.values() if p.address}
        object.__setattr__(self, "_by_address", by_address)

    @classmethod
    def of(cls, self_name: str, peers: Iterable[Peer]) -> Membership:
        return cls(self_name, {p.name: p for p in peers})

    @property
    def me(self) -> Peer | None:
        return self.peers.get(self.self_name)

    def by_address(self, address: str) -> Peer | None:
        """The node whose InternalIP is `address`: how a request's sender is identified."""
        found: Peer | None = self._by_address.get(address)  # type: ignore[attr-defined]
        return found

    def region_ring(self, region: str) -> tuple[Peer, ...]:
        """The ready, addressable nodes of one region, sorted by name: the ring keys are placed on."""
        return tuple(
            sorted(
                (p for p in self.peers.values() if p.region == region and p.ready and p.address),
                key=lambda p: p.name,
            )
        )

    def regions(self) -> tuple[str, ...]:
        return tuple(sorted({p.region for p in self.peers.values()}))


def diff(old: Membership, new: Membership) -> MembershipChange:
    """What changed from `old` to `new`."""
    old_names, new_names = set(old.peers), set(new.peers)
    both = old_names & new_names
    return MembershipChange(
        joined=tuple(sorted(new_names - old_names)),
        left=tuple(sorted(old_names - new_names)),
        relabelled=tuple(
            sorted(
                n
                for n in both
                if (old.peers[n].region, old.peers[n].zone, old.peers[n].address)
                != (new.peers[n].region, new.peers[n].zone, new.peers[n].address)
            )
        ),
        ready_changed=tuple(sorted(n for n in both if old.peers[n].ready != new.peers[n].ready)),
    )
