"""The one walk of an image's documents: an index names manifests (and indexes), a manifest names a config
and layers. Used by the store's key index (containerd.walk) and by `lokal where` (debug.where).

Rules:
- The walker reads documents through the caller's `read` (a store, or a store then the peers) and calls
  the caller's `visit` once per node, parent before children, in document order. `visit` returns whether
  to descend into that node's children, so a caller can prune (already seen, too many entries).
- Only an index or a manifest is read; a config or a layer is only named (with its descriptor's size).
- Depth is bounded (`MAX_DEPTH`): an index of indexes is legal, a cycle is not.
- A document that is absent or not a manifest ends its branch; it is still visited (with `data` None,
  or without children), so the caller can report it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from sidecar.oci.digest import Digest
from sidecar.oci.manifest import Descriptor, children
from sidecar.oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES, NotAManifest

MAX_DEPTH = 4

ReadDocument = Callable[[Digest], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class Visit:
    digest: Digest
    kind: str | None  # "index", "manifest", "config", "layer"; None: the root, not read (yet)
    media_type: str | None
    size: int | None
    depth: int
    platforms: tuple[str, ...] = ()  # the platforms the index entries above it name, outermost first
    data: bytes | None = None  # an index's or a manifest's bytes, when it could be read


Visitor = Callable[[Visit], Awaitable[bool]]


async def walk_documents(
    root: Digest, read: ReadDocument, visit: Visitor, *, root_kind: str | None = None,
    root_data: bytes | None = None,
) -> None:
    """Visit `root` and what it names. `root_data`: the root's bytes when the caller already read them."""
    await _step(Visit(root, root_kind, None, None, 0), read, visit, root_data)


async def _step(node: Visit, read: ReadDocument, visit: Visitor, data: bytes | None = None) -> None:
    if data is None and node.kind in (None, "index", "manifest"):
        data = await read(node.digest)
    descriptors: list[Descriptor] = []
    if data is not None:
        media_type: str | None = node.media_type
        with contextlib.suppress(NotAManifest):  # not a manifest after all: visited, nothing below it
            media_type, descriptors = children(data)
        kind = "index" if media_type in INDEX_TYPES else "manifest"
        node = replace(node, kind=kind, media_type=media_type, size=len(data), data=data)
    if not await visit(node) or data is None or node.depth >= MAX_DEPTH:
        return
    index = node.kind == "index"
    for position, child in enumerate(descriptors):
        platforms = node.platforms
        if index or child.media_type in INDEX_TYPES | MANIFEST_TYPES:
            kind = "index" if child.media_type in INDEX_TYPES else "manifest"
            if child.platform:  # an index entry's platform applies to everything below it
                platforms = (*platforms, child.platform)
        else:
            kind = "config" if position == 0 else "layer"
        await _step(Visit(child.digest, kind, child.media_type, child.size, node.depth + 1, platforms), read,
                    visit)
