"""Scenarios: the official client, configured by kubeconfig, drives an apiserver over loopback.

Tests taking `api` run twice: against the fake and against a real kube-apiserver 1.20 with etcd, RBAC and
a ServiceAccount token (see conftest.py). Tests taking `fake_api` need what only the fake can do: inject
error statuses, hang, or store a Node that the real apiserver's validation would refuse."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from lokal_lab.fake_apiserver import FakeApiServer, make_node

from sidecar.cluster import ClusterConfigError, MembershipSource
from sidecar.membership import Membership, MembershipChange, TopologyLabels, TopologyMode
from tests.cluster.conftest import NodeApiUnderTest, cluster_config

pytestmark = pytest.mark.anyio

GUARD_S = 15  # a hang guard, not a timing assertion

REGION = "topology.kubernetes.io/region"
ZONE = "topology.kubernetes.io/zone"


@asynccontextmanager
async def running(source: MembershipSource) -> AsyncIterator[Membership]:
    async with anyio.create_task_group() as group:
        with anyio.fail_after(GUARD_S):
            first = await group.start(source.run)
        try:
            yield first
        finally:
            group.cancel_scope.cancel()


async def wait_for(source: MembershipSource, predicate: Callable[[Membership], bool]) -> Membership:
    with anyio.fail_after(GUARD_S):
        return await source.wait_for(predicate)


def heartbeat(node: dict[str, object], beat: int) -> None:
    conditions = node["status"]["conditions"]  # type: ignore[index]
    for condition in conditions:  # type: ignore[attr-defined]
        condition["lastHeartbeatTime"] = f"2026-01-01T00:00:{beat:02d}Z"


class Recorder:
    """Collects what one subscriber receives."""

    def __init__(self) -> None:
        self.changes: list[MembershipChange] = []

    async def follow(self, source: MembershipSource) -> None:
        async for _, change in source.subscribe():
            self.changes.append(change)

    def joined(self) -> list[str]:
        return [name for change in self.changes for name in change.joined]

    def left(self) -> list[str]:
        return [name for change in self.changes for name in change.left]


def lists(api: NodeApiUnderTest) -> list[dict[str, str]]:
    return [dict(r.query) for r in api.requests if r.path == "/api/v1/nodes" and not r.is_watch]


def watches(api: NodeApiUnderTest) -> list[dict[str, str]]:
    return [dict(r.query) for r in api.requests if r.path == "/api/v1/nodes" and r.is_watch]


async def test_startup_lists_every_node_and_marks_this_one(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig))
    async with running(source) as first:
        assert sorted(first.peers) == ["a1", "a2", "a3", "b1", "b2"]
        assert first.me is not None and first.me.is_self and first.me.address == "10.1.0.1"
        assert (first.peers["b2"].region, first.peers["b2"].zone) == ("r2", "z2")
        assert source.own_node is not None and source.own_node.region == "r1"
        with anyio.fail_after(GUARD_S):
            while not watches(api):
                await anyio.sleep(0.01)
        watch = watches(api)[0]
        assert watch["allowWatchBookmarks"] == "true"
        assert 1 <= int(watch["timeoutSeconds"]) <= 2
        assert watch["resourceVersion"] == str(api.resource_version)


async def test_nodes_join_leave_turn_not_ready_change_zone_and_address(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig))
    recorder = Recorder()
    async with running(source), anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        api.put_node(make_node("a4", region="r1", zone="z2", address="10.1.0.4"))
        await wait_for(source, lambda m: "a4" in m.peers)
        api.delete_node("a2")
        await wait_for(source, lambda m: "a2" not in m.peers)
        api.set_ready("a3", False)
        await wait_for(source, lambda m: not m.peers["a3"].ready)
        api.relabel("b1", {ZONE: "z9"})
        last = await wait_for(source, lambda m: m.peers["b1"].zone == "z9")
        assert last.peers["a3"].ready is False
        api.set_address("b2", "10.2.0.22")
        last = await wait_for(source, lambda m: m.peers["b2"].address == "10.2.0.22")
        assert last.by_address("10.2.0.22") is last.peers["b2"] and last.by_address("10.2.0.2") is None
        with anyio.fail_after(GUARD_S):
            while not any("b2" in c.relabelled for c in recorder.changes):
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert recorder.joined() == ["a1", "a2", "a3", "b1", "b2", "a4"]
    assert recorder.left() == ["a2"]
    assert [n for c in recorder.changes for n in c.ready_changed] == ["a3"]
    assert [n for c in recorder.changes for n in c.relabelled] == ["b1", "b2"]


async def test_heartbeat_updates_that_change_nothing_publish_nothing(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig))
    recorder = Recorder()
    async with running(source), anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        for beat in range(3):  # what a kubelet does every 10 s: a new lastHeartbeatTime on its conditions
            api.update_node("a2", lambda n, beat=beat: heartbeat(n, beat))
        api.put_node(make_node("a5", region="r1", zone="z1", address="10.1.0.5"))
        await wait_for(source, lambda m: "a5" in m.peers)
        with anyio.fail_after(GUARD_S):
            while len(recorder.changes) < 2:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert [c.joined for c in recorder.changes] == [("a1", "a2", "a3", "b1", "b2"), ("a5",)]


async def test_watch_drop_resumes_from_the_last_version_without_duplicate_or_missed_event(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    # Watches of 20 s: the one cut is the one that saw x (no timeout and no bookmark moves the resume point).
    source = MembershipSource(cluster_config(api_kubeconfig, watch_timeout_min_s=20, watch_timeout_max_s=20))
    recorder = Recorder()
    async with running(source), anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        seen_rv = api.put_node(make_node("x", region="r1", zone="z1", address="10.1.0.8"))
        await wait_for(source, lambda m: "x" in m.peers)
        watches_before = len(watches(api))
        with api.cut_off():
            api.put_node(make_node("y", region="r1", zone="z1", address="10.1.0.9"))  # during the gap
        await wait_for(source, lambda m: "y" in m.peers)
        group.cancel_scope.cancel()
    resumed = watches(api)[watches_before]
    assert resumed["resourceVersion"] == str(seen_rv)  # neither older (duplicates) nor newer (missed y)
    assert len(lists(api)) == 1  # resumed, not relisted
    assert recorder.joined().count("x") == 1 and recorder.joined().count("y") == 1


async def compaction_relists_and_removes_the_nodes_deleted_in_the_gap(
    api: NodeApiUnderTest, kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(kubeconfig, watch_timeout_min_s=20, watch_timeout_max_s=20))
    recorder = Recorder()
    async with running(source), anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        with anyio.fail_after(GUARD_S):
            while not watches(api):
                await anyio.sleep(0.01)
        with api.cut_off():
            api.delete_node("a3")
            api.delete_node("b2")
            api.put_node(make_node("a6", region="r1", zone="z1", address="10.1.0.6"))
            api.compact()
        final = await wait_for(source, lambda m: "a3" not in m.peers)
        group.cancel_scope.cancel()
    assert sorted(final.peers) == ["a1", "a2", "a6", "b1"]
    assert sorted(recorder.left()) == ["a3", "b2"]
    assert len(lists(api)) == 2  # the first list and the relist after 410


async def test_compaction_answered_with_http_410_relists_too(
    fake_api: FakeApiServer, kubeconfig: Path
) -> None:
    fake_api.expired_watch_as_http_410 = True  # the ApiException(410) path: the real 1.20 sends ERROR events
    await compaction_relists_and_removes_the_nodes_deleted_in_the_gap(fake_api, kubeconfig)


@pytest.mark.parametrize("mode", ["reset", "hang"])
async def test_api_outage_keeps_the_last_membership_and_recovers(
    fake_api: FakeApiServer, kubeconfig: Path, mode: str
) -> None:
    source = MembershipSource(cluster_config(kubeconfig, read_timeout_s=0.3))
    async with running(source) as before:
        fake_api.set_outage("reset" if mode == "reset" else "hang")
        with anyio.fail_after(GUARD_S):
            failed_before = len(fake_api.requests)
            while len(fake_api.requests) < failed_before + 3:  # the client keeps trying, with backoff
                await anyio.sleep(0.05)
        assert source.current is before  # no empty or partial membership during the outage
        fake_api.delete_node("b1")
        fake_api.set_outage(None)
        after = await wait_for(source, lambda m: "b1" not in m.peers)
        assert sorted(after.peers) == ["a1", "a2", "a3", "b2"]


async def test_bookmarks_move_the_resume_point_past_changes_the_selector_hides(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    # Watches of 5 s: the apiserver sends a BOOKMARK about 2 s before a watch's deadline (give or take its
    # 1 s timer), none to watches shorter than that.
    timeouts = {"watch_timeout_min_s": 5.0, "watch_timeout_max_s": 5.0}
    source = MembershipSource(cluster_config(api_kubeconfig, TopologyMode.ISOLATE, **timeouts))
    async with running(source):
        listed_rv = api.resource_version
        hidden_rv = api.relabel("b2", {ZONE: "z3"})  # another region: no event reaches the client
        with anyio.fail_after(GUARD_S):
            while not any(int(w["resourceVersion"]) >= hidden_rv for w in watches(api)):
                await anyio.sleep(0.05)
    assert hidden_rv > listed_rv
    assert len(lists(api)) == 1


async def test_isolate_mode_on_a_node_without_a_region_label_is_a_region_of_its_own_with_a_warning(
    api: NodeApiUnderTest, api_kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # kubeadm, kind and bare-metal nodes usually have no region label: lokal must run, never crash-loop.
    api.relabel("a1", {REGION: None})
    source = MembershipSource(cluster_config(api_kubeconfig, TopologyMode.ISOLATE))
    with caplog.at_level(logging.WARNING, logger="lokal"):
        async with running(source) as first:
            assert list(first.peers) == ["a1"] and first.me is not None and first.me.region == ""
            assert first.region_ring("") == (first.me,)
            await anyio.sleep(0.3)  # nothing else arrives: no other node is listed or watched
            assert source.current is first
    assert lists(api) == [] and watches(api) == []
    warnings = [r.lokal_fields["warning"] for r in caplog.records if r.getMessage() == "config_warning"]
    assert len(warnings) == 1 and "region of its own" in warnings[0] and REGION in warnings[0]


async def test_the_region_and_zone_label_keys_are_settings(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    site, rack = "example.com/site", "example.com/rack"
    for name, (region, zone) in {"a1": ("s1", "k1"), "a2": ("s1", "k2"), "b1": ("s2", "k1")}.items():
        api.relabel(name, {REGION: None, ZONE: None, site: region, rack: zone})
    config = dataclasses.replace(
        cluster_config(api_kubeconfig, TopologyMode.ISOLATE), labels=TopologyLabels(region=site, zone=rack)
    )
    async with running(MembershipSource(config)) as first:
        assert {name: (p.region, p.zone) for name, p in first.peers.items()} == {
            "a1": ("s1", "k1"), "a2": ("s1", "k2")
        }
    assert all(query.get("labelSelector") == f"{site}=s1" for query in lists(api))


async def test_a_wrong_node_name_is_a_configuration_error(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig, node="nope"))
    with anyio.fail_after(GUARD_S), pytest.raises(ClusterConfigError, match="--node-name 'nope'"):
        await source.run()  # raises before it reports started


async def test_an_unreadable_kubeconfig_is_a_configuration_error(tmp_path: Path) -> None:
    source = MembershipSource(cluster_config(tmp_path / "missing"))
    with anyio.fail_after(GUARD_S), pytest.raises(ClusterConfigError, match="--kubeconfig") as raised:
        await source.run()  # raises before it reports started
    # Says what is wrong: the client's own words ("Invalid kube-config file") send people to the syntax.
    assert str(raised.value) == f"--kubeconfig {tmp_path / 'missing'}: does not exist"


async def test_api_errors_are_retried_with_backoff_until_the_list_succeeds(
    fake_api: FakeApiServer, kubeconfig: Path
) -> None:
    fake_api.fail_next(500, count=2, kind="list")
    fake_api.fail_next(429, count=1, kind="list")
    source = MembershipSource(cluster_config(kubeconfig))
    async with running(source) as first:
        assert len(first.peers) == 5
    assert len(lists(fake_api)) == 4
    assert source.current is first  # kept after stopping too


async def test_stopping_is_prompt_even_while_a_watch_is_open(
    fake_api: FakeApiServer, kubeconfig: Path
) -> None:
    source = MembershipSource(cluster_config(kubeconfig, watch_timeout_min_s=30, watch_timeout_max_s=30))
    async with running(source):
        with anyio.fail_after(GUARD_S):
            while fake_api.active_watches == 0:
                await anyio.sleep(0.01)
    assert await anyio.to_thread.run_sync(source.wait_stopped, 5.0)
    with anyio.fail_after(GUARD_S):
        while fake_api.active_watches:
            await anyio.sleep(0.01)


async def test_a_malformed_node_is_kept_without_address_and_reported_once(
    fake_api: FakeApiServer, kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    odd = make_node("odd", region="r1", address=None, labels={ZONE: "not a valid value!"})
    odd["status"]["conditions"] = "garbage"
    fake_api.put_node(odd)
    source = MembershipSource(cluster_config(kubeconfig))
    with caplog.at_level(logging.INFO, logger="lokal.cluster"):
        async with running(source) as first:
            assert first.peers["odd"].address is None
            assert first.peers["odd"].ready is False
            assert first.peers["odd"].zone == ""
            for beat in range(3):
                fake_api.update_node("odd", lambda n, beat=beat: n["metadata"].update(generation=beat))
            fake_api.put_node(make_node("marker", region="r1", zone="z1", address="10.1.0.99"))
            await wait_for(source, lambda m: "marker" in m.peers)
    problems = [r for r in caplog.records if r.getMessage() == "node_problem"]
    assert len(problems) == 1
    fields = problems[0].lokal_fields  # type: ignore[attr-defined]
    assert fields["node"] == "odd"
    assert any("InternalIP" in p for p in fields["problems"])
    assert any("Ready" in p for p in fields["problems"])


async def test_membership_is_logged_with_counts_by_region_and_zone(
    api: NodeApiUnderTest, api_kubeconfig: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig))
    with caplog.at_level(logging.INFO, logger="lokal.cluster"):
        async with running(source):
            api.delete_node("b2")
            await wait_for(source, lambda m: "b2" not in m.peers)
    logged = {r.getMessage(): r.lokal_fields for r in caplog.records}  # type: ignore[attr-defined]
    assert logged["membership_synced"]["by_region"] == {"r1": 3, "r2": 2}
    assert logged["membership_synced"]["by_zone"] == {"r1/z1": 2, "r1/z2": 1, "r2/z1": 1, "r2/z2": 1}
    assert logged["membership_changed"]["by_region"] == {"r1": 3, "r2": 1}
    assert logged["membership_changed"]["left"] == ["b2"]


# With the real apiserver, these run without its watch cache: last, so that it restarts once.


@pytest.mark.etcd_watch  # a real 410 needs the watch served by etcd, which the compaction expires
async def test_compaction_relists_and_removes_the_nodes_deleted_in_the_gap(
    api: NodeApiUnderTest, api_kubeconfig: Path
) -> None:
    await compaction_relists_and_removes_the_nodes_deleted_in_the_gap(api, api_kubeconfig)


@pytest.mark.etcd_watch  # the relist is forced by a compaction
async def test_isolate_mode_never_lists_another_region(api: NodeApiUnderTest, api_kubeconfig: Path) -> None:
    source = MembershipSource(cluster_config(api_kubeconfig, TopologyMode.ISOLATE))
    recorder = Recorder()
    async with running(source) as first, anyio.create_task_group() as group:
        group.start_soon(recorder.follow, source)
        assert sorted(first.peers) == ["a1", "a2", "a3"]
        api.relabel("b1", {REGION: "r1"})  # moves into this region: arrives as ADDED
        await wait_for(source, lambda m: "b1" in m.peers)
        api.relabel("a3", {REGION: "r2"})  # moves out: arrives as DELETED
        api.put_node(make_node("b3", region="r2", zone="z1", address="10.2.0.3"))
        await wait_for(source, lambda m: "a3" not in m.peers)
        with api.cut_off():
            api.put_node(make_node("a7", region="r1", zone="z1", address="10.1.0.7"))
            api.compact()  # forces a relist, which must be selected too
        final = await wait_for(source, lambda m: "a7" in m.peers)
        group.cancel_scope.cancel()
    assert sorted(final.peers) == ["a1", "a2", "a7", "b1"]
    assert all(p.region == "r1" for p in final.peers.values())
    node_requests = [r for r in api.requests if r.path == "/api/v1/nodes"]
    assert len(lists(api)) == 2 and node_requests
    assert all(r.label_selector == f"{REGION}=r1" for r in node_requests)
    assert "b3" not in recorder.joined() and "b2" not in recorder.joined()
