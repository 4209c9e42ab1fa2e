"""`plan_crossing`: which other-region providers the relay keeps, by mode, decision and cap."""

from __future__ import annotations

from sidecar.debug.render import _crossing_lines, format_where
from sidecar.debug.where import plan_sources
from sidecar.membership import CrossRegion, Membership, Peer, Tier, TopologyMode
from sidecar.registry.crossing import AUTO_UPSTREAM_REASON, CAPPED_REASON, CrossingPlan, plan_crossing
from sidecar.registry.speeds import SpeedBook
from sidecar.topology.policy import RankedProvider, TopologyPolicy

MB = 1_000_000


def provider(name: str, region: str, tier: Tier) -> RankedProvider:
    return RankedProvider(Peer(name, region=region, zone=region + "1", address="198.18.1.1"), tier, "")


FAR = provider("far", "eu", Tier.OTHER_REGION)
NEAR = provider("near", "us", Tier.SAME_REGION)


def book(upstream_bps: float | None, region_bps: float | None) -> SpeedBook:
    speeds = SpeedBook(clock=lambda: 100.0)
    if upstream_bps:
        speeds.upstream_fetch("docker.io", size=50 * MB, transfer_s=50 * MB / upstream_bps, first_byte_s=0.05)
    if region_bps:
        speeds.region_first_byte("eu", 0.05)
        speeds.region_body("eu", 50 * MB, 50 * MB / region_bps)
    return speeds


def plan(ranked: list[RankedProvider], speeds: SpeedBook, cross: CrossRegion = CrossRegion.AUTO,
         cap_admits: bool = True) -> CrossingPlan:
    policy = TopologyPolicy(mode=TopologyMode.PREFER, cross_region=cross)
    return plan_crossing(ranked, policy=policy, size=100 * MB, registry="docker.io", speeds=speeds, now=100.0,
                         cap_admits=cap_admits)


def test_auto_keeps_the_far_provider_when_it_is_faster() -> None:
    p = plan([FAR], book(upstream_bps=5 * MB, region_bps=50 * MB))
    assert p.kept == (FAR,) and p.decision is not None and p.decision.choice == "peer"


def test_auto_drops_it_when_upstream_is_faster_and_says_why() -> None:
    p = plan([FAR], book(upstream_bps=50 * MB, region_bps=5 * MB))
    assert p.kept == () and p.dropped_reason.startswith(AUTO_UPSTREAM_REASON)
    assert "upstream faster" in p.dropped_reason


def test_auto_without_an_upstream_sample_goes_upstream() -> None:
    p = plan([FAR], book(upstream_bps=None, region_bps=500 * MB))
    assert p.kept == () and "no recent upstream sample" in p.dropped_reason


def test_a_closer_best_provider_needs_no_decision_and_keeps_no_far_fallback() -> None:
    p = plan([NEAR, FAR], book(upstream_bps=5 * MB, region_bps=50 * MB))
    assert p.kept == (NEAR,) and p.decision is None


def test_always_keeps_everything_unless_the_cap_is_backed_up() -> None:
    speeds = book(upstream_bps=50 * MB, region_bps=5 * MB)
    assert plan([NEAR, FAR], speeds, CrossRegion.ALWAYS).kept == (NEAR, FAR)
    capped = plan([NEAR, FAR], speeds, CrossRegion.ALWAYS, cap_admits=False)
    assert capped.kept == (NEAR,) and capped.dropped_reason.startswith(CAPPED_REASON)
    alone = plan([FAR], speeds, CrossRegion.ALWAYS, cap_admits=False)
    assert alone.kept == ()


def test_where_shows_the_auto_decision_and_the_holder_it_would_not_ask() -> None:
    me = Peer("me", region="us", zone="us1", address="198.18.1.2")
    far = Peer("far", region="eu", zone="eu1", address="198.18.2.2")
    membership = Membership.of("me", [me, far])
    policy = TopologyPolicy(mode=TopologyMode.PREFER, cross_region=CrossRegion.AUTO)
    fast_upstream = book(upstream_bps=50 * MB, region_bps=5 * MB)
    plan_up = plan_sources(me, ["far"], membership, {}, policy, now=100.0, held_locally=False,
                           speeds=fast_upstream, size=100 * MB, registry="docker.io")
    assert plan_up.verdict == "upstream" and plan_up.why.startswith(AUTO_UPSTREAM_REASON)
    assert plan_up.auto is not None and plan_up.auto["auto_choice"] == "upstream"
    assert [s.node for s in plan_up.refused] == ["far"] and plan_up.order == ()
    slow_upstream = book(upstream_bps=5 * MB, region_bps=50 * MB)
    plan_peer = plan_sources(me, ["far"], membership, {}, policy, now=100.0, held_locally=False,
                             speeds=slow_upstream, size=100 * MB, registry="docker.io")
    assert plan_peer.verdict == "peer" and "auto: region faster" in plan_peer.why
    text = format_where({"registry": "docker.io", "repository": "a/b", "digest": "sha256:x", "node": "me",
                         "mode": "prefer", "cross_region": "auto",
                         "blobs": [{"kind": "layer", "short": "sha256:x", "size": 100 * MB,
                                    "verdict": plan_up.verdict, "why": plan_up.why, "auto": plan_up.auto,
                                    "order": [], "refused": [], "strangers": []}]})
    assert "auto: upstream (over eu" in text


def test_status_text_lists_the_learned_speeds_decisions_and_caps() -> None:
    speeds = book(upstream_bps=40 * MB, region_bps=60 * MB)
    crossing = {"bias": 1.5, **speeds.snapshot(),
                "decisions": [{"choice": "peer", "basis": "measured", "count": 2}],
                "caps": {"to_peers": {"rate_bytes_per_s": 3e6, "throttled_s": 1.25, "refused": 1, "bytes": 9,
                                      "active": 0}}}
    lines = _crossing_lines(crossing)
    text = "\n".join(lines)
    assert "auto bias 1.5" in text
    assert "upstream docker.io" in text and "40.0 MB/s" in text
    assert "region   eu" in text and "60.0 MB/s" in text
    assert "auto decisions: peer (measured) 2" in text
    assert "cap to_peers: 3.0 MB/s, throttled 1.25s, refused 1" in text
