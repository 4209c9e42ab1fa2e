"""Which other-region providers a relay may use: the `auto` decision and the cross-region cap, applied to
the ranked providers. The relay and `lokal where` both call `plan_crossing`, so `where` explains exactly
what the relay does.

Rules:
- Only providers in other regions are ever removed; closer ones are never touched.
- auto decides when the best provider is in another region (the estimates and rule: topology/crossing.py).
  When a closer provider is best, other-region providers are not kept as fallbacks in auto: a failed
  closer provider then means upstream, which costs no inter-region bytes.
- The `from_other_regions` cap, when its backlog is too long, removes other-region providers in every
  mode: the blob goes to a closer provider, or upstream, instead of waiting for the cap.
- `CrossingGate.filter` records the decision in the pull line (`auto_*` fields) and counts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from sidecar.caps.pacer import Cap, TierCaps
from sidecar.http.client import StreamedResponse
from sidecar.membership import CrossRegion, Tier, TopologyMode
from sidecar.oci import Digest
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.registry.speeds import SpeedBook
from sidecar.topology.crossing import PEER, CrossingDecision, decide_crossing
from sidecar.topology.policy import RankedProvider, TopologyPolicy

AUTO_UPSTREAM_REASON = "cross-region auto chose upstream"
CAPPED_REASON = "cross-region cap"


@dataclass(frozen=True, slots=True)
class CrossingPlan:
    kept: tuple[RankedProvider, ...]
    decision: CrossingDecision | None  # None: auto did not have to decide
    dropped_reason: str  # why other-region providers were removed ("" when none were)
    miss: Miss | None = None  # the miss it is, when nothing closer is left


def plan_crossing(
    ranked: Sequence[RankedProvider],
    *,
    policy: TopologyPolicy,
    size: int | None,
    registry: str,
    speeds: SpeedBook,
    now: float,
    cap_admits: bool = True,
    region_rate_cap: float | None = None,
) -> CrossingPlan:
    others = [p for p in ranked if p.tier is Tier.OTHER_REGION]
    if not others:
        return CrossingPlan(tuple(ranked), None, "")
    closer = tuple(p for p in ranked if p.tier is not Tier.OTHER_REGION)
    if not cap_admits:
        return CrossingPlan(closer, None, f"{CAPPED_REASON}: its backlog is too long, not waiting for it",
                            Miss.CAPPED)
    auto = policy.mode is TopologyMode.PREFER and policy.cross_region is CrossRegion.AUTO
    if not auto:
        return CrossingPlan(tuple(ranked), None, "")
    if ranked[0].tier is not Tier.OTHER_REGION:
        return CrossingPlan(closer, None, "")
    region = others[0].peer.region
    decision = decide_crossing(
        size=size, region=region, region_estimate=speeds.regions.get(region), registry=registry,
        upstream_estimate=speeds.upstream.get(registry), bias=policy.cross_region_bias, now=now,
        region_rate_cap=region_rate_cap,
    )
    if decision.choice == PEER:
        return CrossingPlan(tuple(ranked), decision, "")
    return CrossingPlan(closer, decision, f"{AUTO_UPSTREAM_REASON}: {decision.reason}", Miss.AUTO_UPSTREAM)


@dataclass
class CrossingGate:
    """The relay's hook: `filter` the ranked providers of one request."""

    policy: TopologyPolicy
    speeds: SpeedBook
    caps: TierCaps = field(default_factory=TierCaps)
    size_of: Callable[[Digest], int | None] = lambda digest: None  # containerd's ingest knows it
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (choice, basis) -> count

    def filter(
        self, ranked: Sequence[RankedProvider], registry: str, digest: Digest, record: PullRecord
    ) -> list[RankedProvider]:
        cap = self.caps.from_other_regions
        needs_size = any(p.tier is Tier.OTHER_REGION for p in ranked)
        # Only auto's estimate reads the size, and finding it scans containerd's ingests: skip it otherwise.
        auto = self.policy.mode is TopologyMode.PREFER and self.policy.cross_region is CrossRegion.AUTO
        decides = auto and bool(ranked) and ranked[0].tier is Tier.OTHER_REGION
        plan = plan_crossing(
            ranked, policy=self.policy, size=self.size_of(digest) if decides else None,
            registry=registry, speeds=self.speeds, now=self.speeds.clock(),
            cap_admits=cap is None or not needs_size or cap.admits(),
            region_rate_cap=cap_share(cap),
        )
        if plan.decision is not None:
            record.extra.update(plan.decision.fields())
            basis = "measured" if plan.decision.upstream_s is not None else "no_upstream_sample"
            self.decisions[(plan.decision.choice, basis)] += 1
        if plan.miss is not None and not plan.kept:
            record.missed(plan.miss, plan.dropped_reason)
        return list(plan.kept)


def cap_share(cap: Cap | None) -> float | None:
    """What one more relay would get of the cross-region cap (bytes/s): auto's bound on a region's rate."""
    return None if cap is None else cap.rate / (cap.active + 1)


def relay_chunks(
    response: StreamedResponse, tier: Tier, caps: TierCaps | None, stall_timeout: float
) -> AsyncIterator[bytes]:
    """A relayed body's chunks, paced by the cross-region cap when the provider is in another region."""
    cap = caps.from_other_regions if caps is not None and tier is Tier.OTHER_REGION else None
    if cap is None:
        return response.iter_chunks(stall_timeout=stall_timeout)
    response.limit_receive_buffer(cap.chunk_limit)  # the kernel doubles it: 2% of a second's worth
    return cap.paced(response.iter_chunks(stall_timeout=stall_timeout, max_chunk=cap.chunk_limit))
