"""Membership churn over real HTTP: several nodes' one-hop indexes on their own loopback addresses (peers
are told apart by source address, as on a network). When a node leaves or joins, the keys whose home set
gained a node are pushed to it at once, so lookups find the content without waiting for a re-advertise."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from sidecar.http import HttpServer, Request, Response, ServerLimits
from sidecar.http.client import PeerClient
from sidecar.membership import Membership, Peer
from sidecar.oci import digest_of
from sidecar.routing.http_endpoint import peer_endpoint
from sidecar.routing.http_transport import HttpPeerTransport, LocalIndex
from sidecar.routing.placement import home_nodes
from sidecar.routing.router import OneHopRouter, RoutingSettings, index_service
from tests.registry.peers import free_port_on_all

pytestmark = pytest.mark.anyio

NAMES = [f"n{i}" for i in range(1, 8)]
ADDRESSES = {name: f"127.0.0.{30 + i}" for i, name in enumerate(NAMES)}
KEYS = [str(digest_of(f"layer {i}".encode())) for i in range(60)]
# A long advertise interval: nothing is re-advertised during the test, only pushed.
SETTINGS = RoutingSettings(advertise_interval=3600, lookup_timeout=0.5)


def peer(name: str) -> Peer:
    return Peer(name, ADDRESSES[name], "r1", "z1" if name < "n4" else "z2")


def membership(self_name: str, names: list[str]) -> Membership:
    return Membership.of(self_name, [
        Peer(p.name, p.address, p.region, p.zone, True, p.name == self_name) for p in map(peer, names)
    ])


@dataclass
class IndexNode:
    name: str
    router: OneHopRouter
    server: HttpServer
    scope: anyio.CancelScope

    def holders(self, key: str) -> tuple[str, ...]:
        return self.router.service.store.lookup(key, time.monotonic())


Nodes = tuple[dict[str, IndexNode], AsyncExitStack, anyio.abc.TaskGroup]


@asynccontextmanager
async def index_nodes(port: int) -> AsyncIterator[Nodes]:
    nodes: dict[str, IndexNode] = {}
    async with AsyncExitStack() as stack, anyio.create_task_group() as tg:
        yield nodes, stack, tg
        for node in nodes.values():
            node.scope.cancel()
        tg.cancel_scope.cancel()


async def start_node(
    name: str, names: list[str], port: int, stack: AsyncExitStack, tg: anyio.abc.TaskGroup
) -> IndexNode:
    address = ADDRESSES[name]
    client = await stack.enter_async_context(PeerClient(local_host=address))
    first = membership(name, names)
    service = index_service(first, SETTINGS)
    transport = HttpPeerTransport(client, port, lookup_timeout=0.5, local=LocalIndex(name, address, service))
    router = OneHopRouter(first, transport, SETTINGS, service=service)
    endpoint = peer_endpoint(service)

    async def handle(request: Request) -> Response:
        return await endpoint(request, request.path.removeprefix("/_lokal/v1/"))

    server = HttpServer(handle, ServerLimits(drain_timeout=0.2))
    scope = anyio.CancelScope()

    async def serve(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await server.serve((address, port), task_status=task_status)

    await tg.start(serve)
    return IndexNode(name, router, server, scope)


async def test_a_leaving_home_and_a_joining_node_get_their_keys_pushed_and_lookups_still_find_them() -> None:
    first = NAMES[:6]
    port = free_port_on_all(list(ADDRESSES.values()))
    async with index_nodes(port) as (nodes, stack, tg):
        for name in first:
            nodes[name] = await start_node(name, first, port, stack, tg)
        holder = nodes["n1"]
        await holder.router.start(KEYS)
        for key in KEYS:
            for home in home_nodes(key, first):
                assert nodes[home].holders(key) == ("n1",)

        # n3 leaves: its server goes away and every remaining node sees the new membership.
        leaving = "n3"
        nodes.pop(leaving).scope.cancel()
        remaining = [n for n in first if n != leaving]
        moved = [k for k in KEYS if leaving in home_nodes(k, first)]
        assert moved, "the test needs keys homed on the leaving node"
        for name in remaining:
            await nodes[name].router.membership_changed(membership(name, remaining))
        for key in moved:  # the node that became a home of each moved key got it pushed
            gained = set(home_nodes(key, remaining)) - set(home_nodes(key, first))
            assert gained and all(nodes[g].holders(key) == ("n1",) for g in gained), key

        # n7 joins.
        joined = [*remaining, "n7"]
        nodes["n7"] = await start_node("n7", joined, port, stack, tg)
        for name in remaining:
            await nodes[name].router.membership_changed(membership(name, joined))
        homed_on_new = [k for k in KEYS if "n7" in home_nodes(k, joined)]
        assert homed_on_new and all(nodes["n7"].holders(k) == ("n1",) for k in homed_on_new)

        # With the other homes of such a key gone, the new node alone answers the lookup.
        key = next(k for k in homed_on_new if not {"n1", "n2"} & set(home_nodes(k, joined)))
        for other in set(home_nodes(key, joined)) - {"n7"}:
            nodes.pop(other).scope.cancel()
        assert await nodes["n2"].router.lookup(key) == ("n1",)
