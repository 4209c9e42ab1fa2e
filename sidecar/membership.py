"""Who the peers are and where they sit: the vocabulary that `cluster`, `topology`, `routing`, `registry`
and `debug` share.

Holds the membership model (`Peer`, `Membership`, `MembershipChange`, `diff`, `diff_of`), the topology
tiers (`Tier`) and the policy words (`TopologyMode`, `CrossRegion`, the label keys).

Rules:
- A leaf: imports nothing from lokal, so every part may import it and no cycle can go through it.
- Pure: no I/O, no clock. The reflector builds snapshots; everything else only reads them.
- A snapshot is never mutated. A change produces a new snapshot plus a `MembershipChange`.
- Unknown topology is the empty string, never None, so comparisons and sorting stay total.
- The enum values are the CLI spellings (`--topology-mode`, `--cross-region`) and metric label values;
  they never change meaning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

REGION_LABEL = "topology.kubernetes.io/region"
ZONE_LABEL = "topology.kubernetes.io/zone"
# Deprecated since Kubernetes 1.17: read only when the current label is absent.
LEGACY_REGION_LABEL = "failure-domain.beta.kubernetes.io/region"
LEGACY_ZONE_LABEL = "failure-domain.beta.kubernetes.io/zone"


@dataclass(frozen=True, slots=True)
class TopologyLabels:
    """The Node label keys that carry region and zone (`--region-label`, `--zone-label`). The deprecated
    failure-domain keys are read as a fallback only when the standard key is in use."""

    region: str = REGION_LABEL
    zone: str = ZONE_LABEL

    @property
    def region_keys(self) -> tuple[str, ...]:
        return (self.region, LEGACY_REGION_LABEL) if self.region == REGION_LABEL else (self.region,)

    @property
    def zone_keys(self) -> tuple[str, ...]:
        return (self.zone, LEGACY_ZONE_LABEL) if self.zone == ZONE_LABEL else (self.zone,)


class TopologyMode(StrEnum):
    ISOLATE = "isolate"  # only this node's region exists; other regions are never listed nor served
    PREFER = "prefer"  # every region exists; closer tiers first, crossing governed by CrossRegion


class CrossRegion(StrEnum):
    """Whether prefer mode may fetch from another region: never, always, or blob by blob when that beats
    upstream (`auto`, the rule in sidecar/topology/crossing.py)."""

    NEVER = "never"
    ALWAYS = "always"
    AUTO = "auto"

    @property
    def crosses(self) -> bool:
        """Whether providers in other regions are looked up and may be asked at all."""
        return self is not CrossRegion.NEVER


class Tier(StrEnum):
    SAME_NODE = "same_node"  # the local containerd content store
    SAME_ZONE = "same_zone"
    SAME_REGION = "same_region"
    OTHER_REGION = "other_region"
    UNKNOWN = "unknown"  # the provider or this node lacks region/zone labels
    UPSTREAM = "upstream"  # nobody close enough had it: containerd went to the registry


# Best first. UPSTREAM is the fallback, not a peer tier.
PEER_TIER_ORDER: tuple[Tier, ...] = (
    Tier.SAME_NODE,
    Tier.SAME_ZONE,
    Tier.SAME_REGION,
    Tier.UNKNOWN,
    Tier.OTHER_REGION,
)


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

    @property
    def names(self) -> frozenset[str]:
        """Every node that differs (a Peer's fields are covered: address, region, zone, ready)."""
        return frozenset((*self.joined, *self.left, *self.relabelled, *self.ready_changed))


@dataclass(frozen=True)
class Membership:
    """An immutable snapshot of the peers, keyed by node name (this node included).

    `updated` makes the next snapshot from the changed peers only: it copies two dicts (C speed) and does
    Python work in proportion to the changes, so a cluster of thousands pays per change, not per node."""

    self_name: str
    peers: Mapping[str, Peer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        peers = dict(self.peers)
        by_address: dict[str, Peer] = {}
        shared: set[str] = set()  # addresses more than one node claims (a misconfiguration, but possible)
        for peer in peers.values():
            if peer.address:
                if peer.address in by_address:
                    shared.add(peer.address)
                by_address[peer.address] = peer
        self._set_parts(peers, by_address, frozenset(shared))

    def _set_parts(self, peers: dict[str, Peer], by_address: dict[str, Peer], shared: frozenset[str]) -> None:
        object.__setattr__(self, "peers", MappingProxyType(peers))
        object.__setattr__(self, "_by_address", by_address)
        object.__setattr__(self, "_shared_addresses", shared)

    @classmethod
    def of(cls, self_name: str, peers: Iterable[Peer]) -> Membership:
        return cls(self_name, {p.name: p for p in peers})

    def updated(self, changes: Mapping[str, Peer | None]) -> Membership:
        """This snapshot with `changes` applied: node name -> its new Peer, or None when it is gone."""
        peers = dict(self.peers)
        by_address: dict[str, Peer] = dict(self._by_address)  # type: ignore[attr-defined]
        shared: set[str] = set(self._shared_addresses)  # type: ignore[attr-defined]
        freed: set[str] = set()
        for name, after in changes.items():
            before = peers.pop(name, None)
            if before is not None and before.address:
                if by_address.get(before.address) is before:
                    del by_address[before.address]
                if before.address in shared:
                    freed.add(before.address)
            if after is not None:
                peers[name] = after
        for after in changes.values():
            if after is not None and after.address:
                if after.address in by_address and by_address[after.address].name != after.name:
                    shared.add(after.address)
                by_address[after.address] = after
        for address in freed:  # rare: only a shared address needs a look at every node
            holders = [p for p in peers.values() if p.address == address]
            if holders:
                by_address[address] = holders[-1]
            if len(holders) < 2:
                shared.discard(address)
        snapshot = object.__new__(Membership)
        object.__setattr__(snapshot, "self_name", self.self_name)
        snapshot._set_parts(peers, by_address, frozenset(shared))
        return snapshot

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
    """What changed from `old` to `new` (looks at every node: see `diff_of` when the candidates are known)."""
    return diff_of(old, new, old.peers.keys() | new.peers.keys())


def diff_of(old: Membership, new: Membership, names: Iterable[str]) -> MembershipChange:
    """What changed from `old` to `new` among `names` (the nodes that may have changed): costs per name."""
    joined: list[str] = []
    left: list[str] = []
    relabelled: list[str] = []
    ready_changed: list[str] = []
    for name in names:
        before, after = old.peers.get(name), new.peers.get(name)
        if before is None:
            if after is not None:
                joined.append(name)
        elif after is None:
            left.append(name)
        elif before != after:
            if (before.region, before.zone, before.address) != (after.region, after.zone, after.address):
                relabelled.append(name)
            if before.ready != after.ready:
                ready_changed.append(name)
    return MembershipChange(
        joined=tuple(sorted(joined)),
        left=tuple(sorted(left)),
        relabelled=tuple(sorted(relabelled)),
        ready_changed=tuple(sorted(ready_changed)),
    )
