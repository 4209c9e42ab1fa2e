"""The one manifest walker (oci.walk_documents): kinds, platforms, document order, pruning and the depth
bound, over documents held in a dict."""

from __future__ import annotations

import json

import pytest

from sidecar.oci import Digest, digest_of
from sidecar.oci.walk import MAX_DEPTH, Visit, walk_documents

pytestmark = pytest.mark.anyio
INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def descriptor(data: bytes, media_type: str, platform: str | None = None) -> dict[str, object]:
    entry: dict[str, object] = {"mediaType": media_type, "digest": str(digest_of(data)), "size": len(data)}
    if platform:
        os, arch = platform.split("/")
        entry["platform"] = {"os": os, "architecture": arch}
    return entry


def manifest(config: bytes, *layers: bytes) -> bytes:
    layer_type = "application/vnd.oci.image.layer.v1.tar"
    return json.dumps({"schemaVersion": 2, "mediaType": MANIFEST,
                       "config": descriptor(config, "application/vnd.oci.image.config.v1+json"),
                       "layers": [descriptor(layer, layer_type) for layer in layers]}).encode()


def index(*entries: dict[str, object]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": list(entries)}).encode()


async def walked(root: bytes, documents: list[bytes], prune: frozenset[Digest] = frozenset()) -> list[Visit]:
    held = {digest_of(d): d for d in [root, *documents]}
    seen: list[Visit] = []

    async def read(digest: Digest) -> bytes | None:
        return held.get(digest)

    async def visit(node: Visit) -> bool:
        seen.append(node)
        return node.digest not in prune

    await walk_documents(digest_of(root), read, visit)
    return seen


async def test_an_index_is_walked_in_document_order_with_kinds_and_platforms() -> None:
    amd, arm = manifest(b"c1", b"l1", b"l2"), manifest(b"c2", b"l3")
    root = index(descriptor(amd, MANIFEST, "linux/amd64"), descriptor(arm, MANIFEST, "linux/arm64"))
    visits = await walked(root, [amd, arm])
    assert [(v.kind, v.depth) for v in visits] == [
        ("index", 0), ("manifest", 1), ("config", 2), ("layer", 2), ("layer", 2),
        ("manifest", 1), ("config", 2), ("layer", 2),
    ]
    assert visits[3].digest == digest_of(b"l1") and visits[3].size == 2
    assert visits[3].platforms == ("linux/amd64",) and visits[7].platforms == ("linux/arm64",)
    assert visits[0].data == root and visits[2].data is None  # blobs are named, never read


async def test_an_absent_manifest_is_visited_without_data_and_ends_its_branch() -> None:
    absent = manifest(b"c", b"l")
    visits = await walked(index(descriptor(absent, MANIFEST)), [])
    assert [(v.kind, v.data) for v in visits] == [("index", visits[0].data), ("manifest", None)]


async def test_the_visitor_prunes_and_the_depth_is_bounded() -> None:
    leaf = manifest(b"c", b"l")
    pruned = await walked(index(descriptor(leaf, MANIFEST)), [leaf], prune=frozenset({digest_of(leaf)}))
    assert [v.kind for v in pruned] == ["index", "manifest"]
    documents, top = [leaf], leaf
    for _ in range(MAX_DEPTH + 2):  # an index of indexes deeper than the bound
        top = index(descriptor(top, INDEX if b"manifests" in top else MANIFEST))
        documents.append(top)
    assert max(v.depth for v in await walked(top, documents)) == MAX_DEPTH
