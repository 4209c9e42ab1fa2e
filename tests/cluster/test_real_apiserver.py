"""What only a real kube-apiserver shows: RBAC with lokal's ServiceAccount token, an apiserver restart, and
a cluster of 5,000 nodes. (The scenarios shared with the fake are in test_membership_source.py.)"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from pathlib import Path

import anyio
import pytest
from lokal_lab.fake_apiserver import make_node
from lokal_lab.kube_apiserver import KubeApiServer

from sidecar.cluster import MembershipSource
from sidecar.cluster.kube_api import ApiError, KubernetesNodeApi
from sidecar.membership import Membership
from tests.cluster.conftest import CLUSTER, FAST, cluster_config
from tests.cluster.test_membership_source import Recorder, running, wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.real_apiserver]

LARGE = 5_000


@pytest.fixture
def real(real_apiserver: KubeApiServer) -> KubeApiServer:
    real_apiserver.sync_nodes(CLUSTER)  # with or without the watch cache: these tests hold in both
    real_apiserver.clear_requests()
    return real_apiserver


@pytest.fixture
def lokal_kubeconfig(real: KubeApiServer, lokal_token: str, tmp_path: Path) -> Path:
    return real.write_kubeconfig(tmp_path / "kubeconfig", token=lokal_token)


def status_as(real: KubeApiServer, token: str, method: str, path: str) -> int:
    """The HTTP status the apiserver answers `token` for one request."""
    context = ssl.create_default_context(cafile=str(real.pki.path("ca.crt")))
    connection = http.client.HTTPSConnection("127.0.0.1", real.port, context=context, timeout=10)
    try:
        body = json.dumps({"metadata": {"labels": {"x": "y"}}}) if method == "PATCH" else None
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_lokals_token_may_get_list_and_watch_nodes_and_nothing_else(
    real: KubeApiServer, lokal_token: str
) -> None:
    allowed = [
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/nodes/a1"),
        ("GET", "/api/v1/nodes?watch=true&timeoutSeconds=1"),
    ]
    forbidden = [
        ("PATCH", "/api/v1/nodes/a1"),
        ("DELETE", "/api/v1/nodes/a1"),
        ("GET", "/api/v1/pods"),
        ("GET", "/api/v1/namespaces/lokal-system/secrets"),
        ("GET", "/api/v1/namespaces/lokal-system/configmaps"),
        ("GET", "/apis/apps/v1/daemonsets"),
    ]
    assert [status_as(real, lokal_token, m, p) for m, p in allowed] == [200] * len(allowed)
    assert [status_as(real, lokal_token, m, p) for m, p in forbidden] == [403] * len(forbidden)
    assert status_as(real, "not-a-token", "GET", "/api/v1/nodes") == 401


def test_without_the_cluster_role_binding_lokal_gets_403_not_an_empty_membership(
    real: KubeApiServer, lokal_kubeconfig: Path
) -> None:
    binding_path = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/lokal-node-reader"
    binding = real.admin.request("GET", binding_path)
    real.admin.request("DELETE", binding_path)
    try:
        api = KubernetesNodeApi(lokal_kubeconfig, FAST)
        try:
            deadline = time.monotonic() + 10  # RBAC is an informer cache: the removal lands within a moment
            while True:
                try:
                    api.list_nodes(None)
                except ApiError as error:
                    assert error.status == 403
                    break
                assert time.monotonic() < deadline, "lokal could still list nodes without its binding"
                time.sleep(0.05)
        finally:
            api.close()
    finally:
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            binding["metadata"].pop(key, None)
        real.apply(binding)


async def test_lokal_rides_out_an_apiserver_restart(real: KubeApiServer, lokal_kubeconfig: Path) -> None:
    source = MembershipSource(cluster_config(lokal_kubeconfig))
    recorder = Recorder()
    async with running(source) as first, anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        assert len(first.peers) == len(CLUSTER)
        await anyio.to_thread.run_sync(real.stop_apiserver)
        await anyio.sleep(0.5)  # lokal's watch is gone and its retries are refused
        assert source.current is first  # an outage never empties the membership
        await anyio.to_thread.run_sync(real.start_apiserver)
        real.delete_node("b1")
        real.put_node(make_node("a8", region="r1", zone="z1", address="10.1.0.8"))
        final = await wait_for(source, lambda m: "b1" not in m.peers and "a8" in m.peers)
        group.cancel_scope.cancel()
    assert sorted(final.peers) == ["a1", "a2", "a3", "a8", "b2"]
    assert recorder.left() == ["b1"]  # nothing else left and came back across the restart
    assert recorder.joined().count("a1") == 1


async def test_five_thousand_nodes_sync_and_follow_changes(
    real: KubeApiServer, lokal_kubeconfig: Path
) -> None:
    nodes = [
        make_node(f"n{i:05d}", region=f"r{i % 3}", zone=f"z{i % 7}", address=f"10.{i // 250}.{i % 250}.9")
        for i in range(LARGE)
    ]
    await anyio.to_thread.run_sync(real.seed_nodes, nodes)  # through etcd: the API takes ~4 ms a node
    try:
        source = MembershipSource(cluster_config(lokal_kubeconfig))
        async with running(source) as first:
            assert len(first.peers) == LARGE + len(CLUSTER)
            assert first.peers["n04999"].address == "10.19.249.9"
            real.relabel("n00042", {"topology.kubernetes.io/zone": "z99"})
            real.delete_node("n00043")
            changed = await wait_for(
                source, lambda m: m.peers["n00042"].zone == "z99" and "n00043" not in m.peers
            )
            assert len(changed.peers) == LARGE + len(CLUSTER) - 1
            assert_same_region_counts(changed)
    finally:
        await anyio.to_thread.run_sync(real.wipe_nodes)


def assert_same_region_counts(membership: Membership) -> None:
    by_region: dict[str, int] = {}
    for peer in membership.peers.values():
        by_region[peer.region] = by_region.get(peer.region, 0) + 1
    assert sum(by_region.values()) == len(membership.peers)
    assert set(by_region) == {"r0", "r1", "r2"}
