"""Who the peers are and where they sit: the vocabulary that `cluster`, `topology`, `routing`, `registry`
and `debug` share.

Holds the membership model (`Peer`, `Membership`, `MembershipChange`, `diff`), the topology tiers (`Tier`)
and the policy words (`TopologyMode`, `CrossRegion`, the label keys).

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
