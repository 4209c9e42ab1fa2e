"""The topology and the network plan, as pure data: no root needed."""

from __future__ import annotations

import ipaddress

import pytest
from lokal_lab.netplan import (
    LAB_RANGE,
    LinkKind,
    StartDelayLink,
    interregion_link_name,
    plan_network,
    rate_bits_per_second,
    setup_commands,
    tbf_burst,
)
from lokal_lab.topology import LabTopology, NodeSpec, TopologyError, example_topology


def three_regions() -> LabTopology:
    nodes = tuple(
        NodeSpec(f"n{i}", region, f"{region}-z{i % 2}")
        for i, region in enumerate(["eu", "eu", "us", "us", "ap", "ap", "eu"])
    )
    return LabTopology(nodes=nodes, upstream_rate="50mbit", interregion_rate="300mbit")


@pytest.mark.parametrize("topology", [example_topology(), example_topology(6), three_regions()])
def test_every_address_and_route_lies_inside_the_lab_range(topology: LabTopology) -> None:
    plan = plan_network(topology, "lk1-")
    addrs = [
        ipaddress.IPv4Interface(end.address) for link in plan.links for end in (link.a, link.b) if end.address
    ]
    addrs += [ipaddress.IPv4Interface(b.address) for b in plan.bridges]
    assert addrs
    for iface in addrs:
        assert iface.ip in LAB_RANGE, iface
        assert iface.network.subnet_of(LAB_RANGE), iface
    for route in plan.routes:
        assert ipaddress.IPv4Network(route.destination).subnet_of(LAB_RANGE), route
        assert ipaddress.IPv4Address(route.via) in LAB_RANGE, route


@pytest.mark.parametrize("topology", [example_topology(), three_regions()])
def test_addresses_are_unique(topology: LabTopology) -> None:
    plan = plan_network(topology, "lk1-")
    ips = [end.address.split("/")[0] for link in plan.links for end in (link.a, link.b) if end.address]
    ips += [b.address.split("/")[0] for b in plan.bridges]
    assert len(ips) == len(set(ips))
    assert len(set(plan.addresses.values())) == len(plan.addresses)


def test_node_and_service_namespaces_route_only_the_lab_range_never_a_default() -> None:
    plan = plan_network(three_regions(), "lk1-")
    for host in [*(n.name for n in three_regions().nodes), "upstream", "apiserver"]:
        routes = [r for r in plan.routes if r.netns == plan.netns(host)]
        assert [r.destination for r in routes] == [str(LAB_RANGE)], host
    assert all(r.destination not in ("default", "0.0.0.0/0") for r in plan.routes)
    assert not any("default" in argv for argv in setup_commands(plan))


def test_every_namespace_name_carries_the_lab_prefix_and_gets_loopback_up() -> None:
    plan = plan_network(example_topology(), "lk42x-")
    cmds = setup_commands(plan)
    for ns in plan.namespaces:
        assert ns.name.startswith("lk42x-")
        assert ["ip", "-n", ns.name, "link", "set", "lo", "up"] in cmds


def test_veth_ends_are_created_directly_inside_namespaces() -> None:
    plan = plan_network(example_topology(), "lk1-")
    created = [argv for argv in setup_commands(plan) if argv[:3] == ["ip", "link", "add"]]
    assert len(created) == len(plan.links)
    namespaces = {ns.name for ns in plan.namespaces}
    for argv in created:
        netns_at = [i for i, word in enumerate(argv) if word == "netns"]
        first_ns, peer_ns = argv[netns_at[0] + 1], argv[netns_at[1] + 1]
        assert {first_ns, peer_ns} <= namespaces, argv
    # Everything else acts inside a namespace too: `ip -n`, `tc -n` or `ip netns exec|add`.
    for argv in setup_commands(plan):
        assert not isinstance(argv, StartDelayLink)
        assert argv[1] in ("-n", "netns", "link"), argv


def test_regions_are_a_full_mesh_and_each_pair_has_its_own_link() -> None:
    plan = plan_network(three_regions(), "lk1-")
    names = {link.name for link in plan.links_of(LinkKind.INTERREGION)}
    assert names == {interregion_link_name(a, b) for a, b in [("eu", "us"), ("eu", "ap"), ("us", "ap")]}
    assert interregion_link_name("us", "eu") == interregion_link_name("eu", "us")


def test_only_the_interregion_and_upstream_links_are_shaped_both_ways() -> None:
    plan = plan_network(three_regions(), "lk1-")
    shaped = {
        (s[2], s[6]) for s in setup_commands(plan) if not isinstance(s, StartDelayLink) and s[0] == "tc"
    }
    expected = set()
    for link in plan.links:
        if link.kind is LinkKind.INTERREGION:
            assert link.rate == "300mbit"
        elif link.name == "upstream":
            assert link.rate == "50mbit"
        else:
            assert link.rate is None, link.name
            continue
        expected |= {(link.a.netns, link.a.ifname), (link.b.netns, link.b.ifname)}
    assert shaped == expected


def test_unshaped_topology_emits_no_tc_commands() -> None:
    topology = LabTopology(nodes=example_topology().nodes, upstream_rate=None, interregion_rate=None)
    steps = setup_commands(plan_network(topology, "lk1-"))
    assert not [s for s in steps if not isinstance(s, StartDelayLink) and s[0] == "tc"]


def test_example_topology_has_two_regions_and_three_zones() -> None:
    topology = example_topology(4)
    assert topology.regions == ("region-a", "region-b")
    assert len(topology.zones) == 3
    assert len(topology.nodes) == 4


def test_tbf_burst_holds_a_few_frames_and_scales_with_rate() -> None:
    assert rate_bits_per_second("100mbit") == 100e6
    assert rate_bits_per_second("1mbps") == 8e6
    assert int(tbf_burst("1mbit")) >= 16 * 1024
    assert int(tbf_burst("1gbit")) > int(tbf_burst("100mbit"))


@pytest.mark.parametrize(
    ("nodes", "kwargs", "names"),
    [
        ((), {}, "nodes"),
        ((NodeSpec("Node_1", "a", "z"),), {}, "Node_1"),
        ((NodeSpec("upstream", "a", "z"),), {}, "reserved"),
        ((NodeSpec("n1", "a", "z"), NodeSpec("n1", "a", "z")), {}, "twice"),
        ((NodeSpec("n1", "a", "z"), NodeSpec("n2", "b", "z")), {}, "zone 'z'"),
        ((NodeSpec("n1", "a", "z"),), {"upstream_rate": "fast"}, "upstream_rate"),
        ((NodeSpec("n1", "a", "z"),), {"upstream_delay_ms": -1}, "upstream_delay_ms"),
        ((NodeSpec("n1", "a", "z"),), {"registry_port": 5000}, "registry_port"),
        ((NodeSpec("n1", "a", "z"),), {"apiserver_port": 70000}, "apiserver_port"),
    ],
)
def test_bad_topology_is_refused_with_an_error_naming_the_input(
    nodes: tuple[NodeSpec, ...], kwargs: dict[str, object], names: str
) -> None:
    with pytest.raises(TopologyError, match=names):
        LabTopology(nodes=nodes, **kwargs)  # type: ignore[arg-type]


def test_too_many_regions_for_the_address_plan_is_refused() -> None:
    nodes = tuple(NodeSpec(f"n{i}", f"r{i}", f"z{i}") for i in range(17))
    with pytest.raises(TopologyError, match="regions"):
        LabTopology(nodes=nodes)


def test_bad_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        plan_network(example_topology(), "Bad Prefix")


def test_interregion_delay_turns_only_the_interregion_links_into_delay_links() -> None:
    topology = LabTopology(nodes=three_regions().nodes, interregion_delay_ms=25, mtu=9000)
    plan = plan_network(topology, "lk1-")
    steps = setup_commands(plan)
    started = {step.link.name for step in steps if isinstance(step, StartDelayLink)}
    assert started == {link.name for link in plan.links_of(LinkKind.INTERREGION)}
    created = [s for s in steps if not isinstance(s, StartDelayLink) and s[:3] == ["ip", "link", "add"]]
    assert len(created) == len(plan.links) - len(started)  # every other link is still a veth pair
    # Each delay link starts after its namespaces exist and before its devices get addresses.
    text = [s if isinstance(s, StartDelayLink) else " ".join(s) for s in steps]
    for at, step in enumerate(steps):
        if isinstance(step, StartDelayLink):
            a, b = step.link.a, step.link.b
            assert text.index(f"ip netns add {b.netns}") < at
            assert text.index(f"ip -n {a.netns} addr add {a.address} dev {a.ifname}") > at
            assert text.index(f"ip -n {b.netns} addr add {b.address} dev {b.ifname}") > at


def test_the_lab_mtu_reaches_every_link_and_bridge() -> None:
    topology = LabTopology(nodes=example_topology().nodes, mtu=9000)
    steps = [s for s in setup_commands(plan_network(topology, "lk1-")) if not isinstance(s, StartDelayLink)]
    for argv in steps:
        if argv[:2] == ["ip", "link"] or (len(argv) > 4 and argv[3:5] == ["link", "add"]):
            assert "9000" in argv, argv
    assert int(tbf_burst("1mbit", 9000)) >= 2 * 9000
