"""A real lab (2 regions, 3 zones, 4 nodes) in network namespaces: reachability, isolation, counters."""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator

import pytest
from lokal_lab import blackhole
from lokal_lab.netplan import LAB_RANGE
from lokal_lab.network import Lab
from lokal_lab.topology import example_topology

from .conftest import echo_send, netns_names, require_lab, start_echo_server

pytestmark = pytest.mark.lab

DELAY_MS = 30


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_lab()
    with Lab(example_topology(4, upstream_delay_ms=DELAY_MS)) as built:
        yield built


def test_the_example_lab_has_two_regions_three_zones_and_four_nodes(lab: Lab) -> None:
    assert lab.topology.regions == ("region-a", "region-b")
    assert len(lab.topology.zones) == 3
    assert lab.nodes == ("node-1", "node-2", "node-3", "node-4")
    assert {ns.name for ns in lab.plan.namespaces} <= netns_names()


def test_nodes_reach_each_other_within_a_region_and_across_regions(lab: Lab) -> None:
    # node-1 and node-2 are in region-a, node-3 is in region-b.
    server = start_echo_server(lab, "node-3", lab.address("node-3"), 7001, connections=2)
    across = echo_send(lab, "node-1", lab.address("node-3"), 7001, 100_000)
    server_a = start_echo_server(lab, "node-1", lab.address("node-1"), 7002, connections=1)
    within_region = echo_send(lab, "node-2", lab.address("node-1"), 7002, 100_000)
    back = echo_send(lab, "node-3", lab.address("node-3"), 7001, 1000)  # its own address, second connection
    for report in (across, within_region, back):
        assert report["intact"] and report["bytes"] > 0, report
    server.wait(timeout=10)
    server_a.wait(timeout=10)


def test_lokal_can_listen_on_loopback_inside_every_node(lab: Lab) -> None:
    server = start_echo_server(lab, "node-2", "127.0.0.1", 7100, connections=1)
    assert echo_send(lab, "node-2", "127.0.0.1", 7100, 1000)["intact"]
    server.wait(timeout=10)


def test_node_namespaces_have_no_default_route_and_only_the_lab_range(lab: Lab) -> None:
    for host in (*lab.nodes, "upstream", "apiserver"):
        routes = json.loads(lab.run(host, ["ip", "-j", "route", "show"]).stdout)
        destinations = {r["dst"] for r in routes}
        assert "default" not in destinations, host
        for dst in destinations:
            assert ipaddress.ip_network(dst).subnet_of(LAB_RANGE), (host, dst)


def test_the_root_namespace_has_the_blackhole_and_no_lab_address_while_the_lab_lives(lab: Lab) -> None:
    assert blackhole.route_present()
    addrs = json.loads(
        subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    )
    for dev in addrs:
        for info in dev.get("addr_info", []):
            if info.get("family") == "inet":
                assert ipaddress.ip_address(info["local"]) not in LAB_RANGE, dev["ifname"]


def test_the_upstream_is_reached_through_the_delay_proxy_with_data_intact(lab: Lab) -> None:
    # Stand-in for the registry: an echo server on registry_listen, behind the lab's delay proxy.
    host, port = lab.registry_listen.split(":")
    server = start_echo_server(lab, "upstream", host, int(port), connections=2)
    up_host, up_port = lab.upstream_endpoint.split(":")
    small = echo_send(lab, "node-3", up_host, int(up_port), 100)
    bulk = echo_send(lab, "node-1", up_host, int(up_port), 2 * 1024 * 1024)
    print(
        f"\nupstream via delay proxy ({DELAY_MS} ms each way, {lab.topology.upstream_rate}): "
        f"100 B echo {small['seconds'] * 1000:.1f} ms, 2 MiB echo {bulk['seconds']:.2f} s"
    )
    assert small["intact"] and bulk["intact"]
    assert small["seconds"] >= DELAY_MS / 2 / 1000  # generous: a round trip adds 2 x delay
    server.wait(timeout=10)


def test_a_transfer_across_regions_shows_on_the_interregion_link_and_one_within_does_not(lab: Lab) -> None:
    nbytes = 1024 * 1024
    before = lab.link_bytes()["region-a~region-b"]
    server = start_echo_server(lab, "node-3", lab.address("node-3"), 7200, connections=1)
    assert echo_send(lab, "node-1", lab.address("node-3"), 7200, nbytes)["intact"]
    after = lab.link_bytes()["region-a~region-b"]
    print(
        f"\nregion-a~region-b: +{after.a_to_b - before.a_to_b} B a->b, +{after.b_to_a - before.b_to_a} B b->a"
    )
    assert after.a_to_b - before.a_to_b >= nbytes  # node-1 -> node-3
    assert after.b_to_a - before.b_to_a >= nbytes  # the echo back
    server.wait(timeout=10)

    cross_before = lab.cross_region_bytes()
    server = start_echo_server(lab, "node-2", lab.address("node-2"), 7201, connections=1)
    assert echo_send(lab, "node-1", lab.address("node-2"), 7201, nbytes)["intact"]
    assert lab.cross_region_bytes() - cross_before < 64 * 1024  # at most stray control packets
    server.wait(timeout=10)


def test_the_upstream_link_counts_what_the_upstream_sent(lab: Lab) -> None:
    host, port = lab.registry_listen.split(":")
    server = start_echo_server(lab, "upstream", host, int(port), connections=1)
    before = lab.upstream_bytes()
    up_host, up_port = lab.upstream_endpoint.split(":")
    assert echo_send(lab, "node-2", up_host, int(up_port), 512 * 1024)["intact"]
    after = lab.upstream_bytes()
    assert after.b_to_a - before.b_to_a >= 512 * 1024  # b is the upstream host
    assert after.a == "core" and after.b == "upstream"
    server.wait(timeout=10)
