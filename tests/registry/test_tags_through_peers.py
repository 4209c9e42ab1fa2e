"""A tag this node does not hold is resolved through a peer that holds the image (issue 16, part 3): the
tag key is advertised into the index, looked up, and the holder answers the manifest by tag."""

from __future__ import annotations

import http.client
import json

import anyio
import pytest

from sidecar.containerd import MemoryStore, Store
from sidecar.membership import CrossRegion, Peer, TopologyMode
from sidecar.oci import Digest, digest_of
from sidecar.topology.policy import TopologyPolicy
from tests.nodes import NS, in_process_nodes

pytestmark = pytest.mark.anyio

A = Peer("a", "127.0.0.2", "r1", "z1")
B = Peer("b", "127.0.0.3", "r1", "z1")
OTHER_REGION = Peer("c", "127.0.0.4", "r2", "z2")
CONFIG = b'{"architecture":"amd64","os":"linux"}'
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(digest_of(CONFIG)),
               "size": len(CONFIG)},
    "layers": [],
}).encode()


class LyingStore(MemoryStore):
    """Resolves the tag to a digest whose manifest is not the one it serves."""

    async def resolve_tag(self, registry: str, repository: str, tag: str) -> Digest | None:
        found = await super().resolve_tag(registry, repository, tag)
        return None if found is None else digest_of(b"something else")

    async def read_manifest(self, digest: Digest):  # type: ignore[no-untyped-def]
        return await super().read_manifest(digest_of(MANIFEST))


async def holding(store: MemoryStore | None = None, tags: tuple[str, ...] = ("v1",)) -> MemoryStore:
    store = store or MemoryStore()
    store.add_blob(CONFIG)
    manifest = store.add_blob(MANIFEST)
    for tag in tags:
        await store.set_image(f"{NS}/app:{tag}", manifest)
    return store


def get_manifest(address: str, port: int, tag: str) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection(address, port, timeout=10)
    try:
        connection.request("GET", f"/v2/app/manifests/{tag}?ns={NS}")
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def ask(address: str, port: int, tag: str) -> tuple[int, dict[str, str], bytes]:
    return await anyio.to_thread.run_sync(get_manifest, address, port, tag)


async def test_a_node_without_the_image_resolves_its_tag_through_a_peer_that_holds_it() -> None:
    stores: dict[str, Store] = {"b": await holding()}
    async with in_process_nodes([A, B], stores) as (_, port, _index):
        status, headers, body = await ask(A.address or "", port, "v1")
    assert status == 200 and body == MANIFEST
    assert headers["docker-content-digest"] == str(digest_of(MANIFEST))


async def test_a_tag_nobody_holds_and_a_lying_holder_are_fast_misses() -> None:
    stores: dict[str, Store] = {"b": await holding(LyingStore())}
    async with in_process_nodes([A, B], stores) as (nodes, port, _index):
        assert (await ask(A.address or "", port, "v2"))[0] == 404  # nobody holds v2
        assert (await ask(A.address or "", port, "v1"))[0] == 404  # b's body does not match its digest
        assert nodes["a"].book.snapshot()["b"].last_failure_at is not None


async def test_isolate_mode_never_resolves_a_tag_in_another_region() -> None:
    isolate = TopologyPolicy(TopologyMode.ISOLATE, CrossRegion.NEVER)
    stores: dict[str, Store] = {"c": await holding()}
    async with in_process_nodes([A, OTHER_REGION], stores, isolate) as (_, port, _index):
        assert (await ask(A.address or "", port, "v1"))[0] == 404


async def test_latest_is_resolved_through_peers_only_with_resolve_latest() -> None:
    stores: dict[str, Store] = {"b": await holding(tags=("latest",))}
    async with in_process_nodes([A, B], stores) as (_, port, _index):
        assert (await ask(A.address or "", port, "latest"))[0] == 404
    async with in_process_nodes([A, B], {"b": await holding(tags=("latest",))}, resolve_latest=True) as (
        _, port, _index
    ):
        assert (await ask(A.address or "", port, "latest"))[0] == 200
