"""Fixtures for the Node watch tests: the fake apiserver on loopback, a kubeconfig for it, fast timings.

The official client reaches the fake through its normal configuration: a kubeconfig file with a token.
Timings are scaled down (watch timeouts of 1-2 s, backoff 50-300 ms) so that the scenarios take seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from lokal_lab.fake_apiserver import FakeApiServer, Node, make_node

from sidecar.cluster import ClusterConfig, WatchTimings
from sidecar.membership import TopologyMode

FAST = WatchTimings(
    watch_timeout_min_s=1.0,
    watch_timeout_max_s=2.0,
    connect_timeout_s=1.0,
    read_timeout_s=1.0,
    backoff_initial_s=0.05,
    backoff_max_s=0.3,
    backoff_reset_after_s=5.0,
    short_watch_s=0.1,
)

# Two regions; this node is "a1" in r1/z1.
CLUSTER: list[Node] = [
    make_node("a1", region="r1", zone="z1", address="10.1.0.1"),
    make_node("a2", region="r1", zone="z1", address="10.1.0.2"),
    make_node("a3", region="r1", zone="z2", address="10.1.0.3"),
    make_node("b1", region="r2", zone="z1", address="10.2.0.1"),
    make_node("b2", region="r2", zone="z2", address="10.2.0.2"),
]


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(CLUSTER, token="test-token", bookmark_interval_s=0.3) as api:
        yield api


@pytest.fixture
def kubeconfig(fake_api: FakeApiServer, tmp_path: Path) -> Path:
    return fake_api.write_kubeconfig(tmp_path / "kubeconfig")


def cluster_config(
    kubeconfig: Path, mode: TopologyMode = TopologyMode.PREFER, node: str = "a1", **timings: float
) -> ClusterConfig:
    return ClusterConfig(
        node_name=node,
        kubeconfig=kubeconfig,
        topology_mode=mode,
        timings=dataclasses.replace(FAST, **timings),
    )
