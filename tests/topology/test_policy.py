"""The topology policy: tiers, eligibility and ranking. Pure, so property-tested over random clusters."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.membership import PEER_TIER_ORDER, CrossRegion, Peer, Tier, TopologyMode
from sidecar.topology import PeerStats, TopologyPolicy, rank_providers, tier_of

ME = Peer("me", "10.0.0.1", region="r1", zone="z1")
NOW = 1000.0

# Odd labels on purpose: empty, unicode, very long, look-alikes.
labels = st.sampled_from(["", "r1", "r2", "r3", "z1", "z2", "R1", " r1", "ü", "x" * 80])
peers = st.builds(
    Peer,
    name=st.text(alphabet="abcdefgh", min_size=1, max_size=4),
    address=st.sampled_from([None, "10.0.0.2", "10.0.0.3", "fd00::2"]),
    region=labels,
    zone=labels,
    ready=st.booleans(),
)
clusters = st.lists(peers, max_size=12, unique_by=lambda p: p.name)
stats_values = st.builds(
    PeerStats,
    throughput_bps=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    in_flight=st.integers(min_value=-1, max_value=50),
    last_failure_at=st.one_of(st.none(), st.floats(min_value=0, max_value=NOW)),
)
stats_maps = st.dictionaries(st.text(alphabet="abcdefgh", min_size=1, max_size=4), stats_values, max_size=8)
policies = st.builds(
    TopologyPolicy,
    mode=st.sampled_from(list(TopologyMode)),
    cross_region=st.sampled_from(list(CrossRegion)),
)
mes = st.builds(Peer, name=st.just("me"), address=st.just("10.0.0.1"), region=labels, zone=labels)

PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(me=mes, cluster=clusters, stats=stats_maps)
def test_isolate_never_yields_a_peer_of_another_region(me: Peer, cluster: list[Peer], stats: dict) -> None:
    policy = TopologyPolicy(mode=TopologyMode.ISOLATE, cross_region=CrossRegion.ALWAYS)
    for ranked in rank_providers(me, cluster, stats, policy, now=NOW):
        assert ranked.peer.region == me.region and me.region != ""


@PROPERTY
@given(me=mes, cluster=clusters, stats=stats_maps, policy=policies)
def test_a_worse_tier_never_comes_before_a_better_one(
    me: Peer, cluster: list[Peer], stats: dict, policy: TopologyPolicy
) -> None:
    ranked = rank_providers(me, cluster, stats, policy, now=NOW)
    order = [PEER_TIER_ORDER.index(r.tier) for r in ranked]
    assert order == sorted(order)
    assert all(r.tier is tier_of(me, r.peer) for r in ranked)


@PROPERTY
@given(me=mes, cluster=clusters, stats=stats_maps)
def test_cross_region_never_yields_no_peer_of_another_region(
    me: Peer, cluster: list[Peer], stats: dict
) -> None:
    policy = TopologyPolicy(mode=TopologyMode.PREFER, cross_region=CrossRegion.NEVER)
    for ranked in rank_providers(me, cluster, stats, policy, now=NOW):
        assert ranked.tier is not Tier.OTHER_REGION
        assert not (me.region and ranked.peer.region and ranked.peer.region != me.region)


@PROPERTY
@given(me=mes, cluster=clusters, stats=stats_maps, policy=policies, seed=st.integers())
def test_ranking_is_deterministic_whatever_the_candidate_order(
    me: Peer, cluster: list[Peer], stats: dict, policy: TopologyPolicy, seed: int
) -> None:
    shuffled = list(cluster)
    random.Random(seed).shuffle(shuffled)
    first = rank_providers(me, cluster, stats, policy, now=NOW)
    assert rank_providers(me, cluster, stats, policy, now=NOW) == first
    assert rank_providers(me, shuffled, stats, policy, now=NOW) == first


@PROPERTY
@given(me=mes, cluster=clusters, stats=stats_maps, policy=policies)
def test_only_ready_addressable_peers_are_ranked_and_each_once(
    me: Peer, cluster: list[Peer], stats: dict, policy: TopologyPolicy
) -> None:
    ranked = rank_providers(me, cluster + cluster, stats, policy, now=NOW)
    names = [r.peer.name for r in ranked]
    assert len(names) == len(set(names))
    assert all(r.peer.ready and r.peer.address and r.reason for r in ranked)


def test_tiers_from_the_point_of_view_of_this_node() -> None:
    assert tier_of(ME, ME) is Tier.SAME_NODE
    assert tier_of(ME, Peer("a", "x", "r1", "z1")) is Tier.SAME_ZONE
    assert tier_of(ME, Peer("a", "x", "r1", "z2")) is Tier.SAME_REGION
    assert tier_of(ME, Peer("a", "x", "r1", "")) is Tier.SAME_REGION  # region proven, zone not
    assert tier_of(ME, Peer("a", "x", "r2", "z1")) is Tier.OTHER_REGION
    assert tier_of(ME, Peer("a", "x", "", "z1")) is Tier.UNKNOWN
    assert tier_of(Peer("me", "y"), Peer("a", "x", "r1", "z1")) is Tier.UNKNOWN


def test_prefer_orders_same_zone_then_same_region_then_unknown_then_other_region_when_crossing_allowed() -> (
    None
):
    cluster = [
        Peer("far", "10.0.9.1", "r2", "z1"),
        Peer("nolabel", "10.0.9.2"),
        Peer("region", "10.0.9.3", "r1", "z2"),
        Peer("zone", "10.0.9.4", "r1", "z1"),
    ]
    policy = TopologyPolicy(cross_region=CrossRegion.ALWAYS)
    ranked = rank_providers(ME, cluster, {}, policy, now=NOW)
    assert [r.peer.name for r in ranked] == ["zone", "region", "nolabel", "far"]
    assert [r.tier for r in ranked] == [Tier.SAME_ZONE, Tier.SAME_REGION, Tier.UNKNOWN, Tier.OTHER_REGION]


def test_within_a_tier_faster_and_less_loaded_first_and_recently_failed_last() -> None:
    cluster = [
        Peer(n, f"10.0.1.{i}", "r1", "z1") for i, n in enumerate(["slow", "fast", "busy", "failed", "new"])
    ]
    stats = {
        "slow": PeerStats(throughput_bps=10e6),
        "fast": PeerStats(throughput_bps=500e6),
        "busy": PeerStats(throughput_bps=500e6, in_flight=9),  # 50 MB/s each
        "failed": PeerStats(throughput_bps=900e6, last_failure_at=NOW - 5),
    }
    policy = TopologyPolicy(default_throughput_bps=30e6)
    ranked = rank_providers(ME, cluster, stats, policy, now=NOW)
    assert [r.peer.name for r in ranked] == ["fast", "busy", "new", "slow", "failed"]
    assert "failed 5s ago" in ranked[-1].reason


def test_an_old_failure_is_forgotten() -> None:
    cluster = [Peer("a", "10.0.1.1", "r1", "z1"), Peer("b", "10.0.1.2", "r1", "z1")]
    stats = {
        "a": PeerStats(throughput_bps=9e8, last_failure_at=NOW - 600),
        "b": PeerStats(throughput_bps=1e6),
    }
    ranked = rank_providers(ME, cluster, stats, TopologyPolicy(failure_memory_s=60), now=NOW)
    assert [r.peer.name for r in ranked] == ["a", "b"]


def test_isolate_refuses_unlabelled_peers_and_prefer_uses_them() -> None:
    cluster = [Peer("nolabel", "10.0.9.2")]
    assert rank_providers(ME, cluster, {}, TopologyPolicy(mode=TopologyMode.ISOLATE), now=NOW) == []
    assert len(rank_providers(ME, cluster, {}, TopologyPolicy(), now=NOW)) == 1
