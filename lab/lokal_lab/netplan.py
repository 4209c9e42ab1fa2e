"""Topology -> network plan: namespaces, bridges, veth links, addresses, routes, shaping, as plain data.

Rules:
- Pure: no I/O, no clock. `network.Lab` runs `setup_commands(plan)` as they come, so a plan test is a test of
  what the lab really builds.
- Every address and every route destination lies inside LAB_RANGE (198.18.0.0/15, reserved for benchmarks).
- Node, upstream and apiserver namespaces get exactly one route, to LAB_RANGE: never a default route.
- Every veth end is created directly inside its namespace; nothing lab-addressed lives in the root namespace.

Shape (one router namespace per region, a core namespace for the services, a full mesh between regions so
that a link's byte counters are exactly the traffic between two regions):

    node ns --veth--> [bridge br0 in router ns of its region] --veth "ir-*"--> router ns of another region
                                  |  uplink veth
                                  v
                        core ns: bridge svc (198.18.0.0/24) --veth--> upstream ns, apiserver ns

Address plan:
- services 198.18.0.0/24: core .1, upstream .2, apiserver .3;
- region i (0-based) 198.18.(i+1).0/24: its router .1, its nodes .11, .12, ...;
- uplink of region i to core 198.19.0.(4i)/30: core .1 of the /30, router .2;
- inter-region link number p (pairs i<j in order) 198.19.(p+1).0/30: router i .1, router j .2.

An inter-region link is a veth pair, or, when the topology asks for inter-region delay, two TUN devices
joined by a delay_link process (same names, addresses and shaping): setup_commands emits a StartDelayLink
step in place of `ip link add`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import Enum
from itertools import combinations

from lokal_lab.topology import APISERVER, UPSTREAM, LabTopology

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
SERVICES_NET = ipaddress.IPv4Network("198.18.0.0/24")
UPLINK_BLOCK = ipaddress.IPv4Network("198.19.0.0/24")
CORE = "core"
NODE_HOST_OFFSET = 11
TBF_LATENCY = "400ms"


class LinkKind(Enum):
    ACCESS = "access"  # node <-> its region's bridge
    UPLINK = "uplink"  # region router <-> core
    INTERREGION = "interregion"  # region router <-> region router
    SERVICE = "service"  # core bridge <-> upstream or apiserver host


@dataclass(frozen=True)
class Namespace:
    name: str  # the real `ip netns` name, prefixed
    host: str  # logical: a node name, "upstream", "apiserver", "router:<region>" or "core"
    forwarding: bool


@dataclass(frozen=True)
class Endpoint:
    netns: str
    ifname: str
    address: str | None  # "ip/prefixlen", None for a bridge port
    bridge: str | None = None


@dataclass(frozen=True)
class Bridge:
    netns: str
    name: str
    address: str


@dataclass(frozen=True)
class Link:
    """A veth pair. `name` is the label used for byte counters: "region-a~region-b", "upstream", ..."""

    name: str
    kind: LinkKind
    a: Endpoint
    b: Endpoint
    rate: str | None
    delay_ms: int = 0  # > 0: two TUN devices joined by a delay_link process instead of a veth pair


@dataclass(frozen=True)
class StartDelayLink:
    """A setup step for the I/O shell: start the delay_link process that creates `link`'s two devices."""

    link: Link


SetupStep = list[str] | StartDelayLink


@dataclass(frozen=True)
class Route:
    netns: str
    destination: str
    via: str


@dataclass(frozen=True)
class NetworkPlan:
    prefix: str
    namespaces: tuple[Namespace, ...]
    bridges: tuple[Bridge, ...]
    links: tuple[Link, ...]
    routes: tuple[Route, ...]
    addresses: dict[str, str]  # host (node name, "upstream", "apiserver") -> its lab IP
    mtu: int = 1500

    def netns(self, host: str) -> str:
        for ns in self.namespaces:
            if ns.host == host:
                return ns.name
        raise KeyError(f"no lab host {host!r}; known: {', '.join(ns.host for ns in self.namespaces)}")

    def link(self, name: str) -> Link:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(f"no lab link {name!r}")

    def links_of(self, kind: LinkKind) -> tuple[Link, ...]:
        return tuple(link for link in self.links if link.kind is kind)


def router_host(region: str) -> str:
    return f"router:{region}"


def interregion_link_name(region_a: str, region_b: str) -> str:
    """The label of the link between two regions, whatever order they are given in."""
    first, second = sorted((region_a, region_b))
    return f"{first}~{second}"


def plan_network(topology: LabTopology, prefix: str) -> NetworkPlan:
    """The whole network of one lab; `prefix` (e.g. "lk1234a-") makes its namespace names unique."""
    if not re.match(r"^[a-z0-9]{1,12}-$", prefix):
        raise ValueError(f"prefix={prefix!r}: expected 1-12 chars of [a-z0-9] then '-'")
    regions = topology.regions
    core = prefix + CORE
    namespaces = [Namespace(core, CORE, forwarding=True)]
    namespaces += [
        Namespace(prefix + "upstream", UPSTREAM, False),
        Namespace(prefix + "apiserver", APISERVER, False),
    ]
    namespaces += [Namespace(f"{prefix}r-{r}", router_host(r), True) for r in regions]
    namespaces += [Namespace(f"{prefix}n-{n.name}", n.name, False) for n in topology.nodes]
    ns_of = {ns.host: ns.name for ns in namespaces}

    svc = list(SERVICES_NET.hosts())
    svc_plen = SERVICES_NET.prefixlen
    bridges = [Bridge(core, "svc", f"{svc[0]}/{svc_plen}")]
    links: list[Link] = []
    routes: list[Route] = []
    addresses = {UPSTREAM: str(svc[1]), APISERVER: str(svc[2])}
    for host, ip, rate in ((UPSTREAM, svc[1], topology.upstream_rate), (APISERVER, svc[2], None)):
        links.append(
            Link(
                name=host,
                kind=LinkKind.SERVICE,
                a=Endpoint(core, f"h-{host}", None, bridge="svc"),
                b=Endpoint(ns_of[host], "eth0", f"{ip}/{svc_plen}"),
                rate=rate,
            )
        )
        routes.append(Route(ns_of[host], str(LAB_RANGE), str(svc[0])))

    region_net = {r: ipaddress.IPv4Network(f"198.18.{i + 1}.0/24") for i, r in enumerate(regions)}
    for i, region in enumerate(regions):
        router = ns_of[router_host(region)]
        net = region_net[region]
        gateway = net.network_address + 1
        bridges.append(Bridge(router, "br0", f"{gateway}/{net.prefixlen}"))
        for j, node in enumerate(topology.nodes_in(region)):
            ip = net.network_address + NODE_HOST_OFFSET + j
            addresses[node.name] = str(ip)
            links.append(
                Link(
                    name=f"access:{node.name}",
                    kind=LinkKind.ACCESS,
                    a=Endpoint(router, f"p-{j}", None, bridge="br0"),
                    b=Endpoint(ns_of[node.name], "eth0", f"{ip}/{net.prefixlen}"),
                    rate=None,
                )
            )
            routes.append(Route(ns_of[node.name], str(LAB_RANGE), str(gateway)))
        # The uplink carries only service traffic (upstream, apiserver): regions talk over the mesh.
        uplink = ipaddress.IPv4Network(f"{UPLINK_BLOCK.network_address + 4 * i}/30")
        core_ip, router_ip = uplink.network_address + 1, uplink.network_address + 2
        links.append(
            Link(
                name=f"uplink:{region}",
                kind=LinkKind.UPLINK,
                a=Endpoint(core, f"r{i}", f"{core_ip}/30"),
                b=Endpoint(router, "uplink", f"{router_ip}/30"),
                rate=None,
            )
        )
        routes.append(Route(router, str(SERVICES_NET), str(core_ip)))
        routes.append(Route(core, str(net), str(router_ip)))

    for p, (i, j) in enumerate(combinations(range(len(regions)), 2)):
        transit = ipaddress.IPv4Network(f"198.19.{p + 1}.0/30")
        ip_i, ip_j = transit.network_address + 1, transit.network_address + 2
        ra, rb = regions[i], regions[j]
        links.append(
            Link(
                name=interregion_link_name(ra, rb),
                kind=LinkKind.INTERREGION,
                a=Endpoint(ns_of[router_host(ra)], f"ir-{j}", f"{ip_i}/30"),
                b=Endpoint(ns_of[router_host(rb)], f"ir-{i}", f"{ip_j}/30"),
                rate=topology.interregion_rate,
                delay_ms=topology.interregion_delay_ms,
            )
        )
        routes.append(Route(ns_of[router_host(ra)], str(region_net[rb]), str(ip_j)))
        routes.append(Route(ns_of[router_host(rb)], str(region_net[ra]), str(ip_i)))

    return NetworkPlan(
        prefix, tuple(namespaces), tuple(bridges), tuple(links), tuple(routes), addresses, topology.mtu
    )


def setup_commands(plan: NetworkPlan) -> list[SetupStep]:
    """The `ip`/`tc`/`sysctl` commands that build `plan`, in order (plus a StartDelayLink step for each
    delayed link). Run from the root namespace, but every one of them acts inside a lab namespace
    (`ip -n`, `tc -n`, `ip netns exec`)."""
    cmds: list[SetupStep] = []
    mtu = ["mtu", str(plan.mtu)]
    for ns in plan.namespaces:
        cmds.append(["ip", "netns", "add", ns.name])
        cmds.append(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        # No IPv6 on lab links: router solicitations and MLD would only add noise to the byte counters.
        cmds.append(_sysctl(ns.name, "net.ipv6.conf.default.disable_ipv6", "1"))
        if ns.forwarding:
            cmds.append(_sysctl(ns.name, "net.ipv4.ip_forward", "1"))
    for br in plan.bridges:
        cmds.append(["ip", "-n", br.netns, "link", "add", br.name, *mtu, "type", "bridge"])
        cmds.append(["ip", "-n", br.netns, "addr", "add", br.address, "dev", br.name])
        cmds.append(["ip", "-n", br.netns, "link", "set", br.name, "up"])
    for link in plan.links:
        a, b = link.a, link.b
        if link.delay_ms > 0:
            cmds.append(StartDelayLink(link))
        else:
            veth = ["type", "veth", "peer", "name", b.ifname, "netns", b.netns, *mtu]
            cmds.append(["ip", "link", "add", a.ifname, "netns", a.netns, *mtu, *veth])
        for end in (a, b):
            if end.bridge:
                cmds.append(["ip", "-n", end.netns, "link", "set", end.ifname, "master", end.bridge])
            if end.address:
                cmds.append(["ip", "-n", end.netns, "addr", "add", end.address, "dev", end.ifname])
            if link.delay_ms > 0:
                cmds.append(["ip", "-n", end.netns, "link", "set", end.ifname, *mtu])
            cmds.append(["ip", "-n", end.netns, "link", "set", end.ifname, "up"])
            if link.rate:
                # Both directions are shaped: tbf works on egress only.
                tbf = ["rate", link.rate, "burst", tbf_burst(link.rate, plan.mtu), "latency", TBF_LATENCY]
                cmds.append(["tc", "-n", end.netns, "qdisc", "add", "dev", end.ifname, "root", "tbf", *tbf])
    for route in plan.routes:
        cmds.append(["ip", "-n", route.netns, "route", "add", route.destination, "via", route.via])
    return cmds


def _sysctl(netns: str, key: str, value: str) -> list[str]:
    return ["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"]


_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12}
_BYTE_UNITS = {"bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12}


def rate_bits_per_second(rate: str) -> float:
    """tc's rate syntax ("100mbit", "12mbps") in bits per second."""
    m = re.match(r"^([0-9]+(?:\.[0-9]+)?)([a-z]+)$", rate)
    if not m or m.group(2) not in {**_UNITS, **_BYTE_UNITS}:
        raise ValueError(f"rate={rate!r}: expected a tc rate like '100mbit'")
    unit = m.group(2)
    return float(m.group(1)) * (_UNITS.get(unit) or _BYTE_UNITS[unit])


def tbf_burst(rate: str, mtu: int = 1500) -> str:
    """Bucket size: 5 ms worth of the rate, at least 16 KiB and two frames (tbf drops a frame larger than
    its bucket)."""
    return str(max(16 * 1024, 2 * (mtu + 64), int(rate_bits_per_second(rate) / 8 * 0.005)))
