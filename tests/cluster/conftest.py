"""Fixtures for the Node watch tests: the fake apiserver and a real one, a kubeconfig for each, fast timings.

- `fake_api` + `kubeconfig`: the fake on loopback, for what only a fake can do (inject errors, hang).
- `api` + `api_kubeconfig`: parametrized, the same test against the fake and against a real kube-apiserver
  1.20 with etcd (`real_apiserver`, one per session). Where the two differ, the fake is wrong.
- lokal's kubeconfig for the real one holds a ServiceAccount token from the TokenRequest API, for the
  ServiceAccount of manifests/, bound only by the ClusterRole of manifests/ (see `real_apiserver`).
- Timings are scaled down (watch timeouts of 1-2 s, backoff 50-300 ms) so that the scenarios take seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from lokal_lab.fake_apiserver import FakeApiServer, Node, RequestRecord, make_node
from lokal_lab.kube_apiserver import KubeApiServer

from sidecar.cluster import ClusterConfig, WatchTimings
from sidecar.membership import TopologyMode
from tests.conftest import LOKAL_NAMESPACE, LOKAL_SERVICE_ACCOUNT

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


class NodeApiUnderTest(Protocol):
    """What the shared tests use: the hooks the fake and the real apiserver harness both have."""

    @property
    def requests(self) -> list[RequestRecord]: ...
    @property
    def resource_version(self) -> int: ...
    def put_node(self, node: Node) -> int: ...
    def update_node(self, name: str, change: Callable[[Node], None]) -> int: ...
    def delete_node(self, name: str) -> int: ...
    def relabel(self, name: str, labels: dict[str, str | None]) -> int: ...
    def set_ready(self, name: str, ready: bool) -> int: ...
    def set_address(self, name: str, address: str) -> int: ...
    def compact(self) -> Any: ...
    def cut_off(self) -> Any: ...


@pytest.fixture
def fake_api() -> Iterator[FakeApiServer]:
    with FakeApiServer(CLUSTER, token="test-token", bookmark_interval_s=0.3) as api:
        yield api


@pytest.fixture
def kubeconfig(fake_api: FakeApiServer, tmp_path: Path) -> Path:
    return fake_api.write_kubeconfig(tmp_path / "kubeconfig")


@pytest.fixture
def lokal_token(real_apiserver: KubeApiServer) -> str:
    return real_apiserver.service_account_token(LOKAL_NAMESPACE, LOKAL_SERVICE_ACCOUNT)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_apiserver)])
def api(request: pytest.FixtureRequest) -> Iterator[NodeApiUnderTest]:
    """The fake or the real apiserver, holding exactly CLUSTER, its request log empty."""
    if request.param == "fake":
        with FakeApiServer(CLUSTER, token="test-token", bookmark_interval_s=0.3) as fake:
            yield fake
        return
    real: KubeApiServer = request.getfixturevalue("real_apiserver")
    watch_cache = request.node.get_closest_marker("etcd_watch") is None
    if real.watch_cache != watch_cache:
        real.restart_apiserver(watch_cache=watch_cache)
    real.sync_nodes(CLUSTER)
    real.clear_requests()
    yield real


@pytest.fixture
def api_kubeconfig(api: NodeApiUnderTest, request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    if isinstance(api, KubeApiServer):
        return api.write_kubeconfig(path, token=request.getfixturevalue("lokal_token"))
    assert isinstance(api, FakeApiServer)
    return api.write_kubeconfig(path)


def cluster_config(
    kubeconfig: Path, mode: TopologyMode = TopologyMode.PREFER, node: str = "a1", **timings: float
) -> ClusterConfig:
    return ClusterConfig(
        node_name=node,
        kubeconfig=kubeconfig,
        topology_mode=mode,
        timings=dataclasses.replace(FAST, **timings),
    )
