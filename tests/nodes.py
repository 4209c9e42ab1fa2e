"""Several lokal nodes in one process, each built by `sidecar.serve.running_node` exactly as `lokal serve`
builds it, with in-memory parts where a test needs them: a `MemoryStore`, a `FixedMembership` and one
shared `InMemoryIndex`. Each node listens on its own loopback address (127.0.0.2, .3, ...) and one shared
port, so peers are told apart by source address as on a real network; the peer client connects from the
node's own address because production does (`serve.source_address`).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

from sidecar.cluster.feed import FixedMembership
from sidecar.containerd import MemoryStore, Store
from sidecar.membership import CrossRegion, Membership, Peer, TopologyMode
from sidecar.routing.router import InMemoryIndex
from sidecar.serve import Node, running_node
from sidecar.settings import ServeSettings
from sidecar.topology.policy import TopologyPolicy

NS = "registry.example"
PREFER_ALWAYS = TopologyPolicy(TopologyMode.PREFER, CrossRegion.ALWAYS)


async def holding(data: bytes, store: MemoryStore | None = None) -> MemoryStore:
    """A store holding `data` as an indexed key: named by a manifest of an image, as after a real pull."""
    store = store or MemoryStore()
    digest = store.add_blob(data)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "c", "digest": str(digest), "size": len(data)},
                           "layers": []}).encode()
    await store.set_image(f"{NS}/app:v1", store.add_blob(manifest))
    return store


def status_of(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    """The status of one plain HTTP request to 127.0.0.1:`port` (blocking: run it in a thread)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


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


def membership_seen_by(peer: Peer, peers: list[Peer]) -> Membership:
    return Membership.of(peer.name, [replace(p, is_self=p.name == peer.name) for p in peers])


def node_settings(peer: Peer, policy: TopologyPolicy, **overrides: object) -> ServeSettings:
    base = ServeSettings(
        node_name=peer.name,
        topology_mode=policy.mode,
        cross_region=policy.cross_region,
        allow_unknown_clients=policy.allow_unknown_clients,
        mirrored_registries=(NS,),
        header_timeout=5,
        drain_timeout=0.5,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@asynccontextmanager
async def in_process_nodes(
    peers: list[Peer],
    stores: dict[str, Store],
    policy: TopologyPolicy = PREFER_ALWAYS,
    *,
    one_hop: bool = False,
    **settings: object,
) -> AsyncIterator[tuple[dict[str, Node], int, InMemoryIndex]]:
    """(nodes by name, the shared port, the shared index). Each node advertises its store's keys.

    `one_hop`: the production index over HTTP between the nodes instead of the shared in-memory one."""
    index = InMemoryIndex()
    port = free_port_on_all([p.address or "" for p in peers])
    nodes: dict[str, Node] = {}
    async with AsyncExitStack() as stack:
        for peer in peers:
            nodes[peer.name] = await stack.enter_async_context(running_node(
                node_settings(peer, policy, **settings),
                store=stores.get(peer.name) or MemoryStore(),
                membership=FixedMembership(membership_seen_by(peer, peers)),
                router=None if one_hop else lambda _m, p=peer: index.router(p.name, p.region),  # type: ignore[misc]
                listen=(peer.address or "", port),
            ))
        for node in nodes.values():
            await node.peering.wait_connected()
        yield nodes, port, index
