"""The key walk of one image: index -> manifests -> config + layers, skipping what the store lacks.

Absent children are normal: a CRI pull fetches one platform of an index, and `discard_unpacked_layers`
deletes layers after unpack. They are counted, so that the second case can be reported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.oci import Digest, NotAManifest, children, split_image_name, tag_key
from sidecar.oci.mediatypes import INDEX_TYPES, MANIFEST_TYPES

ReadBytes = Callable[[Digest], Awaitable[bytes | None]]
Exists = Callable[[Digest], Awaitable[bool]]

MAX_DEPTH = 4  # an index of indexes is legal; a cycle is not, and depth bounds it


@dataclass
class WalkResult:
    keys: set[str] = field(default_factory=set)
    absent: set[str] = field(default_factory=set)  # named by a present manifest, missing from the store
    sizes: dict[str, int] = field(default_factory=dict)  # digest -> size, from the descriptors


async def walk_image(name: str, target: Digest, read: ReadBytes, exists: Exists) -> WalkResult:
    """The keys an image makes servable: its present blobs, plus its tag key when `name` is a tag."""
    result = WalkResult()
    data = await read(target)
    if data is None:
        return result
    parts = split_image_name(name)
    if parts is not None:
        result.keys.add(tag_key(*parts))
    await _walk(target, data, read, exists, result, depth=0)
    return result


async def _walk(
    digest: Digest, data: bytes, read: ReadBytes, exists: Exists, result: WalkResult, depth: int
) -> None:
    result.keys.add(str(digest))
    result.sizes[str(digest)] = len(data)
    if depth >= MAX_DEPTH:
        return
    try:
        media_type, descriptors = children(data)
    except NotAManifest:
        return
    for child in descriptors:
        if media_type in INDEX_TYPES or child.media_type in INDEX_TYPES | MANIFEST_TYPES:
            child_data = await read(child.digest)
            if child_data is not None:
                await _walk(child.digest, child_data, read, exists, result, depth + 1)
        elif await exists(child.digest):
            result.keys.add(str(child.digest))
            result.sizes[str(child.digest)] = child.size
        else:
            result.absent.add(str(child.digest))
