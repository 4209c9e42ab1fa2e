"""Helpers for the routing tests: digests, peers, an injected clock, small clusters in one process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sidecar.membership import Membership, Peer
from sidecar.routing import InProcessNetwork, OneHopRouter, RingSet, RoutingSettings
from sidecar.routing.leases import DownloadProbe


def digest(label: str) -> str:
    return "sha256:" + hashlib.sha256(label.encode()).hexdigest()


def peer(name: str, region: str = "r1", zone: str = "z1", index: int | None = None) -> Peer:
    number = index if index is not None else int(hashlib.sha256(name.encode()).hexdigest()[:4], 16)
    return Peer(name, f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}", region, zone)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Cluster:
    membership: Membership
    network: InProcessNetwork
    clock: Clock
    routers: dict[str, OneHopRouter] = field(default_factory=dict)


def build_cluster(
    layout: dict[str, int],
    settings: RoutingSettings | None = None,
    zones: int = 2,
    probe: DownloadProbe | None = None,
) -> Cluster:
    """`layout`: region -> node count. Nodes are named `<region>-n<i>` with distinct addresses."""
    peers: list[Peer] = []
    for r, (region, count) in enumerate(sorted(layout.items())):
        for i in range(count):
            peers.append(
                Peer(f"{region}-n{i}", f"10.{r}.{i // 256}.{i % 256 + 1}", region, f"{region}-z{i % zones}")
            )
    clock = Clock()
    network = InProcessNetwork(clock)
    first = Membership.of(peers[0].name, peers)
    rings = RingSet(first, (settings or RoutingSettings()).k)
    cluster = Cluster(first, network, clock)
    for p in peers:
        membership = Membership(p.name, first.peers)
        assert p.address is not None
        router = OneHopRouter(
            membership, network.transport(p.address), settings, rings=rings, clock=clock, probe=probe
        )
        network.attach(p.address, router.service)
        cluster.routers[p.name] = router
    return cluster
