"""Nodes built by the production builder talk to their peers as the tests prove (issue 15, item 7): the
peer client connects from the node's own InternalIP, so the index and the relay work on a node whose
kernel would pick another source address (here every other request would come from 127.0.0.1)."""

from __future__ import annotations

import anyio
import pytest

from sidecar.containerd import Store
from sidecar.http.client import PeerClient
from sidecar.membership import Peer
from sidecar.oci import digest_of
from sidecar.serve import source_address
from tests.nodes import NS, holding, in_process_nodes

pytestmark = pytest.mark.anyio

A = Peer("a", "127.0.0.2", "r1", "z1")
B = Peer("b", "127.0.0.3", "r1", "z1")
LAYER = bytes(range(256)) * 4096


async def test_a_production_node_advertises_and_relays_from_its_own_address() -> None:
    stores: dict[str, Store] = {"b": await holding(LAYER)}
    digest = str(digest_of(LAYER))
    async with in_process_nodes([A, B], stores, one_hop=True) as (nodes, port, _):
        holders_at_a = nodes["a"].router.holders() if nodes["a"].router else None
        assert holders_at_a is not None
        with anyio.fail_after(5):  # b's advertisement reached a: a accepted it as coming from b
            while holders_at_a.lookup(digest, 0.0) != ("b",):
                await anyio.sleep(0.01)
        async with PeerClient() as containerd:  # containerd on node a, from loopback
            response = await containerd.get(A.address or "", port, f"/v2/app/blobs/{digest}?ns={NS}")
            async with response:
                body = await response.read(len(LAYER) + 1)
        assert response.status == 200 and body == LAYER  # relayed from b, asked from a's address


def test_the_source_address_is_the_internal_ip_when_this_host_has_it_else_the_kernels_choice() -> None:
    assert source_address(Peer("a", "127.0.0.2")) == "127.0.0.2"
    assert source_address(Peer("a", "192.0.2.77")) is None  # TEST-NET-1: not an address of this host
    assert source_address(Peer("a", None)) is None
