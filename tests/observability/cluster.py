"""Several instrumented lokal nodes in one process, built as `lokal serve` builds them (`tests.nodes`:
`serve.running_node` with in-memory parts), with what each node holds advertised in one shared
`InMemoryIndex`. Each node connects to its peers from its own loopback address, as production does.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from sidecar.containerd import MemoryStore, Store
from sidecar.http.client import PeerClient
from sidecar.membership import Peer
from sidecar.oci import digest_of
from sidecar.routing.router import InMemoryIndex
from sidecar.serve import Node
from sidecar.topology.policy import TopologyPolicy
from tests.nodes import NS, PREFER_ALWAYS, in_process_nodes

__all__ = ["NS", "Lab", "image", "lab"]


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
    stores: dict[str, Store] = {}
    held: dict[str, list[str]] = {}
    for peer in peers:
        store = stores[peer.name] = MemoryStore()
        held[peer.name] = [str(store.add_blob(blob)) for blob in holdings.get(peer.name, [])]
        for name, manifest in (images or {}).get(peer.name, {}).items():
            await store.set_image(name, digest_of(manifest))
    async with in_process_nodes(peers, stores, policy or PREFER_ALWAYS) as (nodes, port, index):
        for name, node in nodes.items():
            assert node.router is not None
            await node.router.advertise(held[name])  # held loose, as if pulled and not yet indexed
        yield Lab(nodes, port, index)


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
