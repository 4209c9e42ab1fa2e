"""Several lokal nodes in one process, each on its own loopback address (127.0.0.2, .3, ...) and the same
port, so that peers are told apart by address as on a real network. The index is an `InMemoryIndex`."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from sidecar.containerd import MemoryStore, Store
from sidecar.http import HttpServer, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.membership import CrossRegion, Membership, Peer, TopologyMode
from sidecar.registry import RegistryHandler, RouteConfig
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.relay import PeerRelay
from sidecar.routing.router import InMemoryIndex
from sidecar.topology.admission import admit_request
from sidecar.topology.policy import TopologyPolicy

NS = "registry.example"


@dataclass
class TestNode:
    peer: Peer
    store: Store
    handler: RegistryHandler
    book: PeerBook = field(default_factory=PeerBook)


def free_port_on_all(addresses: list[str]) -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as other:
                    other.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def admission(membership: Membership, policy: TopologyPolicy):  # type: ignore[no-untyped-def]
    def admit(client: str) -> tuple[bool, str]:
        verdict = admit_request(client, membership, policy)
        return verdict.allowed, verdict.reason

    return admit


@asynccontextmanager
async def cluster(
    peers: list[Peer],
    stores: dict[str, Store],
    policy: TopologyPolicy | None = None,
) -> AsyncIterator[tuple[dict[str, TestNode], int]]:
    policy = policy or TopologyPolicy(TopologyMode.PREFER, CrossRegion.ALWAYS)
    index = InMemoryIndex()
    port = free_port_on_all([p.address or "" for p in peers])
    nodes: dict[str, TestNode] = {}
    async with PeerClient() as client, anyio.create_task_group() as tg:
        servers = []
        for peer in peers:
            membership = Membership.of(peer.name, [
                Peer(p.name, p.address, p.region, p.zone, True, p.name == peer.name) for p in peers
            ])
            store = stores.get(peer.name) or MemoryStore()
            router = index.router(peer.name, peer.region)
            await router.advertise(store.keys())
            book = PeerBook()
            relay = PeerRelay(
                router, lambda m=membership: m, policy, client, port, book,  # type: ignore[misc]
                on_mismatch=store.abort_ingests,
            )
            handler = RegistryHandler(store, RouteConfig(mirrored_registries=(NS,)), relay)
            handler.admit = admission(membership, policy)
            server = HttpServer(handler, ServerLimits(header_timeout=5, drain_timeout=0.5))
            await tg.start(server.serve, (peer.address, port))
            servers.append(server)
            nodes[peer.name] = TestNode(peer, store, handler, book)
        yield nodes, port
        for server in servers:
            await server.shutdown()
