"""Which peers may provide a blob to this node, and in what order to try them.

Rules:
- Pure: no I/O, no clock. Times (`now`, `last_failure_at`) are numbers the caller passes in, all from the
  same monotonic clock.
- Deterministic: the same input gives the same order. Every tie is broken by the node name.
- Never crash on odd labels: a peer (or this node) without a region is in the UNKNOWN tier.

Theory of operation:
- `tier_of(me, other)` says where `other` is relative to `me`: same node, same zone, same region, unknown,
  other region. Unknown region on either side gives UNKNOWN; a known common region with an unknown zone
  gives SAME_REGION (the region is proven, only the zone is not).
- `eligibility` applies the mode: isolate admits only peers whose region equals this node's (unknown is
  not proof, so it is refused); prefer admits everything except other regions under `cross_region=never`.
  UNKNOWN stays allowed in prefer mode: clusters without topology labels must still share blobs.
  Peers that are not ready or have no address are never tried.
- `rank_providers` orders the eligible peers: by tier (PEER_TIER_ORDER), then recently failed ones last,
  then by expected speed (recent throughput shared by the transfers in flight), then fewer in flight, then
  name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from sidecar.membership import PEER_TIER_ORDER, CrossRegion, Peer, Tier, TopologyMode

_TIER_RANK = {tier: index for index, tier in enumerate(PEER_TIER_ORDER)}


@dataclass(frozen=True, slots=True)
class TopologyPolicy:
    mode: TopologyMode = TopologyMode.PREFER
    cross_region: CrossRegion = CrossRegion.NEVER
    allow_unknown_clients: bool = False
    # A peer whose last failure is younger than this goes to the end of its tier.
    failure_memory_s: float = 60.0
    # Throughput assumed for a peer never measured, so that new peers get tried between fast and slow ones.
    default_throughput_bps: float = 50e6
    # --cross-region-bias: auto crosses when bias x over-region time < upstream time (crossing.py).
    cross_region_bias: float = 1.0


@dataclass(frozen=True, slots=True)
class PeerStats:
    """What this node measured about one peer recently."""

    throughput_bps: float | None = None  # recent bytes/s from this peer; None when never measured
    in_flight: int = 0  # transfers from this peer running now
    last_failure_at: float | None = None  # monotonic time of the last failed transfer


@dataclass(frozen=True, slots=True)
class Eligibility:
    allowed: bool
    tier: Tier
    reason: str


@dataclass(frozen=True, slots=True)
class RankedProvider:
    peer: Peer
    tier: Tier
    reason: str


def tier_of(me: Peer, other: Peer) -> Tier:
    """Where `other` is, seen from `me`."""
    if other.name == me.name:
        return Tier.SAME_NODE
    if not me.region or not other.region:
        return Tier.UNKNOWN
    if me.region != other.region:
        return Tier.OTHER_REGION
    if me.zone and me.zone == other.zone:
        return Tier.SAME_ZONE
    return Tier.SAME_REGION


def eligibility(me: Peer, other: Peer, policy: TopologyPolicy) -> Eligibility:
    """May `other` be asked for a blob, under `policy`? With the reason either way."""
    tier = tier_of(me, other)
    if not other.ready:
        return Eligibility(False, tier, "not ready")
    if not other.address and tier is not Tier.SAME_NODE:
        return Eligibility(False, tier, "no InternalIP of the listener's family")
    if policy.mode is TopologyMode.ISOLATE:
        if tier is Tier.SAME_NODE or (me.region and other.region == me.region):
            return Eligibility(True, tier, f"isolate: same region {me.region!r}")
        return Eligibility(False, tier, f"isolate: region {other.region!r} is not {me.region!r}")
    if tier is Tier.OTHER_REGION and policy.cross_region is CrossRegion.NEVER:
        return Eligibility(False, tier, f"cross-region never: region {other.region!r}")
    return Eligibility(True, tier, f"prefer: {tier.value}")


def rank_providers(
    me: Peer,
    candidates: Iterable[Peer],
    stats: Mapping[str, PeerStats],
    policy: TopologyPolicy,
    *,
    now: float,
) -> list[RankedProvider]:
    """The eligible candidates in the order to try them, best first, each with its tier and the reason."""
    keyed: list[tuple[tuple[int, bool, float, int, str], RankedProvider]] = []
    seen: set[str] = set()
    for peer in candidates:
        if peer.name in seen:  # the same provider listed twice by two home nodes
            continue
        seen.add(peer.name)
        verdict = eligibility(me, peer, policy)
        if not verdict.allowed:
            continue
        peer_stats = stats.get(peer.name, PeerStats())
        failed = _recently_failed(peer_stats, policy, now)
        speed = _expected_speed(peer_stats, policy)
        in_flight = max(peer_stats.in_flight, 0)
        reason = f"{verdict.reason}; {_speed_text(peer_stats, speed)}, {in_flight} in flight"
        if failed:
            reason += f"; failed {now - (peer_stats.last_failure_at or now):.0f}s ago"
        key = (_TIER_RANK[verdict.tier], failed, -speed, in_flight, peer.name)
        keyed.append((key, RankedProvider(peer, verdict.tier, reason)))
    keyed.sort(key=lambda item: item[0])
    return [ranked for _, ranked in keyed]


def _recently_failed(stats: PeerStats, policy: TopologyPolicy, now: float) -> bool:
    if stats.last_failure_at is None:
        return False
    return now - stats.last_failure_at < policy.failure_memory_s


def _expected_speed(stats: PeerStats, policy: TopologyPolicy) -> float:
    """Bytes/s one more transfer could expect: the recent throughput shared with those in flight."""
    measured = stats.throughput_bps
    if measured is None or not measured >= 0:  # `not >=` also catches NaN
        measured = policy.default_throughput_bps
    return min(measured, 1e15) / (max(stats.in_flight, 0) + 1)


def _speed_text(stats: PeerStats, speed: float) -> str:
    if stats.throughput_bps is None:
        return f"unmeasured (assumed {speed / 1e6:.1f} MB/s)"
    return f"{speed / 1e6:.1f} MB/s expected"
