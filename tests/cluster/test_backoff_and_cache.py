"""The reflector's pure parts: the backoff schedule and the peer cache's change detection."""

from __future__ import annotations

import random

import pytest
from lokal_lab.fake_apiserver import make_node

from sidecar.backoff import Backoff
from sidecar.cluster.cache import PeerCache
from sidecar.cluster.config import ClusterConfig, WatchTimings
from sidecar.cluster.nodes import NodeProblemLog


def backoff(jitter: float = 0.0) -> Backoff:
    return Backoff(0.8, 30.0, jitter=jitter, reset_after=120.0, rng=random.Random(7))


def test_backoff_doubles_from_0_8_s_up_to_30_s() -> None:
    b = backoff()
    delays = [b.next_delay(float(t)) for t in range(8)]
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]


def test_backoff_jitter_stretches_each_delay_within_bounds() -> None:
    b = backoff(jitter=0.5)
    base = 0.8
    for t in range(10):
        delay = b.next_delay(float(t))
        assert min(base, 30.0) <= delay <= min(base * 1.5, 30.0)
        base = min(base * 2, 30.0)


def test_backoff_starts_over_after_a_healthy_period() -> None:
    b = backoff()
    for t in range(6):
        b.next_delay(float(t))
    assert b.next_delay(10.0) == 30.0  # still failing
    assert b.next_delay(10.0 + 121.0) == 0.8  # two healthy minutes later


def test_bad_timings_and_config_name_the_setting() -> None:
    with pytest.raises(ValueError, match="backoff_initial_s"):
        WatchTimings(backoff_initial_s=0)
    with pytest.raises(ValueError, match="--node-name"):
        ClusterConfig(node_name="")


def cache() -> PeerCache:
    return PeerCache("a", "ipv4", NodeProblemLog(lambda name, problems: None))


def test_the_cache_reports_only_changes_lokal_uses() -> None:
    c = cache()
    node = make_node("a", region="r1", zone="z1")
    assert c.apply("ADDED", node)
    node["status"]["heartbeat"] = "later"
    node["metadata"]["resourceVersion"] = "99"
    assert not c.apply("MODIFIED", node)
    node["metadata"]["labels"]["topology.kubernetes.io/zone"] = "z2"
    assert c.apply("MODIFIED", node)
    assert c.snapshot().peers["a"].zone == "z2"
    assert c.apply("DELETED", node)
    assert not c.apply("DELETED", node)


def test_a_relist_removes_nodes_that_vanished_and_keeps_unchanged_ones() -> None:
    c = cache()
    c.replace([make_node("a", region="r1", zone="z1"), make_node("b", region="r1", zone="z1")])
    assert not c.replace([make_node("a", region="r1", zone="z1"), make_node("b", region="r1", zone="z1")])
    assert c.replace([make_node("a", region="r1", zone="z1")])
    assert sorted(c.snapshot().peers) == ["a"]
    assert c.snapshot().me is not None
