"""Several lokal nodes in one process (see `tests.nodes`): the shape the relay tests use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sidecar.containerd import Store
from sidecar.membership import Peer
from sidecar.serve import Node
from sidecar.topology.policy import TopologyPolicy
from tests.nodes import NS, PREFER_ALWAYS, free_port_on_all, in_process_nodes

__all__ = ["NS", "cluster", "free_port_on_all"]


@asynccontextmanager
async def cluster(
    peers: list[Peer], stores: dict[str, Store], policy: TopologyPolicy | None = None
) -> AsyncIterator[tuple[dict[str, Node], int]]:
    async with in_process_nodes(peers, stores, policy or PREFER_ALWAYS) as (nodes, port, _):
        yield nodes, port
