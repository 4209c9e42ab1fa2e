"""The lab's shape as plain data: regions, zones, nodes, the shaping of the slow links.

Rules:
- Pure data and validation only: no I/O. `netplan.plan_network` turns a topology into namespaces and links.
- Names end up in namespace and interface names, so they are short, lower-case `[a-z0-9-]`.
- "upstream" (the registry host) and "apiserver" (the fake Kubernetes API) are special hosts, never nodes.
- Rates are tc rate strings (`"100mbit"`), or None for an unshaped link.
- Latency: the upstream's comes from a TCP delay proxy (delay_proxy.py); the inter-region links' from
  user-space packet links (delay_link.py) when `interregion_delay_ms` > 0, since this kernel has no netem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UPSTREAM = "upstream"
APISERVER = "apiserver"
RESERVED_HOSTS = frozenset({UPSTREAM, APISERVER})

MAX_REGIONS = 16
MAX_NODES_PER_REGION = 200

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_RATE = re.compile(r"^[0-9]+(\.[0-9]+)?(bit|kbit|mbit|gbit|tbit|bps|kbps|mbps|gbps|tbps)$")


class TopologyError(ValueError):
    """A lab topology that cannot be built; the message names the setting or the input."""


@dataclass(frozen=True)
class NodeSpec:
    """One simulated Kubernetes node."""

    name: str
    region: str
    zone: str


@dataclass(frozen=True)
class LabTopology:
    """Regions, zones and nodes of one lab, plus how the upstream and inter-region links are shaped.

    `upstream_port` is where nodes reach the registry (the delay proxy listens there, on the upstream host's
    lab address); `registry_port` is where the registry itself must listen, on 127.0.0.1 inside the upstream
    namespace, behind the proxy.
    """

    nodes: tuple[NodeSpec, ...]
    upstream_rate: str | None = "100mbit"
    interregion_rate: str | None = "200mbit"
    upstream_delay_ms: int = 20
    interregion_delay_ms: int = 0  # > 0: inter-region links become user-space delay links (delay_link.py)
    mtu: int = 1500  # of every lab link; 9000 keeps the delay links' packet rate low
    upstream_port: int = 5000
    registry_port: int = 5001
    apiserver_port: int = 6443

    def __post_init__(self) -> None:
        validate(self)

    @property
    def regions(self) -> tuple[str, ...]:
        """Region names in the order their first node appears."""
        return tuple(dict.fromkeys(n.region for n in self.nodes))

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.zone for n in self.nodes))

    def nodes_in(self, region: str) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.region == region)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in the lab topology")


def example_topology(node_count: int = 4, **shaping: object) -> LabTopology:
    """2 regions, 3 zones: region-a has zones a1 and a2, region-b has zone b1. Nodes are dealt round-robin
    over the three zones, so 4 nodes give a1:2, a2:1, b1:1."""
    if node_count < 3:
        raise TopologyError(f"node_count={node_count}: the example needs at least 3 nodes (one per zone)")
    zones = [("region-a", "zone-a1"), ("region-a", "zone-a2"), ("region-b", "zone-b1")]
    nodes = tuple(
        NodeSpec(name=f"node-{i + 1}", region=zones[i % 3][0], zone=zones[i % 3][1])
        for i in range(node_count)
    )
    return LabTopology(nodes=nodes, **shaping)  # type: ignore[arg-type]


def validate(topology: LabTopology) -> None:
    """Raise TopologyError naming the first bad input."""
    if not topology.nodes:
        raise TopologyError("nodes: the lab needs at least one node")
    seen: set[str] = set()
    zone_region: dict[str, str] = {}
    for node in topology.nodes:
        for what, value in (("name", node.name), ("region", node.region), ("zone", node.zone)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise TopologyError(
                    f"node {node.name!r}: {what}={value!r} must be 1-32 chars of [a-z0-9-], "
                    "starting and ending with a letter or digit"
                )
        if node.name in RESERVED_HOSTS:
            raise TopologyError(f"node name {node.name!r} is reserved for a special lab host")
        if node.name in seen:
            raise TopologyError(f"node name {node.name!r} appears twice")
        seen.add(node.name)
        if zone_region.setdefault(node.zone, node.region) != node.region:
            raise TopologyError(
                f"zone {node.zone!r} is in region {zone_region[node.zone]!r} and in {node.region!r}"
            )
    if len(topology.regions) > MAX_REGIONS:
        raise TopologyError(f"regions: {len(topology.regions)} given, the address plan holds {MAX_REGIONS}")
    for region in topology.regions:
        if len(topology.nodes_in(region)) > MAX_NODES_PER_REGION:
            raise TopologyError(f"region {region!r}: more than {MAX_NODES_PER_REGION} nodes")
    for setting in ("upstream_rate", "interregion_rate"):
        rate = getattr(topology, setting)
        if rate is not None and not (isinstance(rate, str) and _RATE.match(rate)):
            raise TopologyError(f"{setting}={rate!r}: expected a tc rate like '100mbit', or None")
    for setting in ("upstream_delay_ms", "interregion_delay_ms"):
        delay = getattr(topology, setting)
        if not isinstance(delay, int) or not 0 <= delay <= 10_000:
            raise TopologyError(f"{setting}={delay!r}: expected 0..10000")
    if not isinstance(topology.mtu, int) or not 1280 <= topology.mtu <= 65000:
        raise TopologyError(f"mtu={topology.mtu!r}: expected 1280..65000")
    ports = {s: getattr(topology, s) for s in ("upstream_port", "registry_port", "apiserver_port")}
    for setting, port in ports.items():
        if not isinstance(port, int) or not 1 <= port <= 65535:
            raise TopologyError(f"{setting}={port!r}: expected a TCP port 1..65535")
    if topology.upstream_port == topology.registry_port:
        raise TopologyError("upstream_port and registry_port must differ (the delay proxy sits between them)")
