"""Several instrumented lokal nodes in one process, each a real `serve.Node` with `observe()` wired as
`lokal serve` wires it, on its own loopback address (127.0.0.2, .3, ...) and one shared port, so that
peers are told apart by address as on a real network. The index is an `InMemoryIndex` (routing's seam).

One seam is bent for the loopback lab: each node's `PeerClient` connects from the node's own address
(`BoundPeerClient`), as a real node's kernel would. Without it every relay would come from 127.0.0.1 and
the serving node could not tell which peer asked (a real network has no such problem).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from sidecar.containerd import MemoryStore
from sidecar.debug import observe
from sidecar.http import HttpServer, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.membership import CrossRegion, Membership, Peer, TopologyMode
from sidecar.oci import Digest, digest_of
from sidecar.registry import RegistryHandler, RouteConfig
from sidecar.registry.peerstats import PeerBook
from sidecar.registry.relay import PeerRelay
from sidecar.routing.router import InMemoryIndex
from sidecar.serve import Node
from sidecar.topology.admission import admit_request
from sidecar.topology.policy import TopologyPolicy

NS = "registry.example"


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


@dataclass
class Lab:
    nodes: dict[str, Node]
    port: int
    index: InMemoryIndex

    def address(self, name: str) -> str:
        node = self.nodes[name]
        membership = node.current_membership()
        assert membership is not None and membership.me is not None and membership.me.address
        return membership.me.address

    def sample(self, name: str, metric: str, **labels: str) -> float:
        """A metric's current value on one node; 0 when the series does not exist yet."""
        observability = self.nodes[name].observability
        assert observability is not None
        value = observability.metrics.registry.get_sample_value(metric, labels)
        return 0.0 if value is None else value

    def finished(self, name: str) -> int:
        """How many requests node `name` has finished (recorded in its tally)."""
        observability = self.nodes[name].observability
        assert observability is not None
        tally = observability.pulls.tally
        return sum(tally.by_result.values()) + tally.peer_requests

    async def get(self, name: str, path: str) -> tuple[int, bytes]:
        """GET from node `name` as containerd on that node would (from loopback), the whole body."""
        async with PeerClient() as client:
            response = await client.get(self.address(name), self.port, path)
            async with response:
                return response.status, await response.read(64 * 1024 * 1024)

    async def wait_finished(self, counts: dict[str, int]) -> None:
        """Until each node has finished its expected number of requests (their bodies may still be
        closing when the client has read the last byte); bounded at 5 s."""
        with anyio.fail_after(5):
            while any(self.finished(n) < c for n, c in counts.items()):
                await anyio.sleep(0.01)


@asynccontextmanager
async def lab(
    peers: list[Peer],
    holdings: dict[str, list[bytes]],
    policy: TopologyPolicy | None = None,
    images: dict[str, dict[str, bytes]] | None = None,
) -> AsyncIterator[Lab]:
    """`holdings`: node -> blobs it holds (advertised in the index); `images`: node -> {name: manifest}."""
    policy = policy or TopologyPolicy(TopologyMode.PREFER, CrossRegion.ALWAYS)
    index = InMemoryIndex()
    port = free_port_on_all([p.address or "" for p in peers])
    nodes: dict[str, Node] = {}
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        servers: list[HttpServer] = []
        for peer in peers:
            membership = Membership.of(peer.name, [
                Peer(p.name, p.address, p.region, p.zone, p.ready, p.name == peer.name) for p in peers
            ])
            store = MemoryStore()
            held: list[Digest] = [store.add_blob(blob) for blob in holdings.get(peer.name, [])]
            for name, manifest in (images or {}).get(peer.name, {}).items():
                await store.set_image(name, digest_of(manifest))
            router = index.router(peer.name, peer.region)
            await router.advertise([str(d) for d in held])
            client = await stack.enter_async_context(PeerClient(local_host=peer.address or ""))
            book = PeerBook()
            relay = PeerRelay(router, _constant(membership), policy, client, port, book)
            handler = RegistryHandler(store, RouteConfig(mirrored_registries=(NS,)), relay)
            handler.admit = _admission(membership, policy)
            server = HttpServer(handler, ServerLimits(header_timeout=5))
            settings: dict[str, Any] = {
                "node_name": peer.name, "discovery": "kubernetes", "topology_mode": policy.mode.value,
                "cross_region": policy.cross_region.value, "mirrored_registries": (NS,),
            }
            node = Node(store, handler, server, policy, settings, membership=membership, book=book)
            node.router = router  # type: ignore[assignment]  # the in-memory Router stands in
            node.observability = observe(node)
            await tg.start(server.serve, (peer.address, port))
            servers.append(server)
            nodes[peer.name] = node
        try:
            yield Lab(nodes, port, index)
        finally:
            for server in servers:
                await server.shutdown()


def _constant(membership: Membership) -> Callable[[], Membership]:
    return lambda: membership


def _admission(membership: Membership, policy: TopologyPolicy) -> Callable[[str], tuple[bool, str]]:
    def admit(client: str) -> tuple[bool, str]:
        verdict = admit_request(client, membership, policy)
        return verdict.allowed, verdict.reason

    return admit


def image(config: bytes, layers: list[bytes]) -> bytes:
    """An OCI image manifest naming `config` and `layers`."""
    def descriptor(data: bytes, media_type: str) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": str(digest_of(data)), "size": len(data)}

    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor(config, "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(layer, "application/vnd.oci.image.layer.v1.tar+gzip") for layer in layers],
    }).encode()
