"""The key walk of one image (oci.walk_documents): index -> manifests -> config + layers, skipping what
the store lacks.

Absent children are normal: a CRI pull fetches one platform of an index, and `discard_unpacked_layers`
deletes layers after unpack. They are counted, so that the second case can be reported.

`ctr images pull` on 2.x stores the manifests and configs of every platform of an index, but layers
only for the node's own: what a manifest of another platform (or an attestation, `unknown/unknown`)
names is `foreign`, and its absence is never counted.
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sidecar.oci import Digest, split_image_name, tag_key
from sidecar.oci.walk import Visit, walk_documents

ReadBytes = Callable[[Digest], Awaitable[bytes | None]]
Exists = Callable[[Digest], Awaitable[bool]]

# Python's machine names -> OCI architectures (GOARCH).
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                  "armv7l": "arm", "armv6l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
                  "riscv64": "riscv64", "i686": "386", "i386": "386"}


def host_platform() -> str:
    """This node's platform as an index names it ("linux/amd64")."""
    machine = platform.machine().lower()
    return f"{platform.system().lower()}/{_ARCHITECTURES.get(machine, machine)}"


@dataclass
class WalkResult:
    keys: set[str] = field(default_factory=set)
    absent: set[str] = field(default_factory=set)  # named by a present manifest, missing from the store
    foreign: set[str] = field(default_factory=set)  # named only for another platform: may be absent
    own: set[str] = field(default_factory=set)  # config and layers named by the node's own manifests
    sizes: dict[str, int] = field(default_factory=dict)  # digest -> size, from the descriptors


async def walk_image(
    name: str, target: Digest, read: ReadBytes, exists: Exists, node_platform: str | None = None
) -> WalkResult:
    """The keys an image makes servable: its present blobs, plus its tag key when `name` is a tag.

    `node_platform` ("linux/amd64", default this host's) decides which manifests of an index are the
    node's own: only their absent blobs count as `absent`."""
    result = WalkResult()
    data = await read(target)
    if data is None:
        return result
    parts = split_image_name(name)
    if parts is not None:
        result.keys.add(tag_key(*parts))
    mine = node_platform or host_platform()

    async def visit(node: Visit) -> bool:
        if node.kind in ("index", "manifest"):
            if node.data is not None:  # a document absent from the store makes nothing servable
                result.keys.add(str(node.digest))
                result.sizes[str(node.digest)] = len(node.data)
            return True
        own = all(platform == mine for platform in node.platforms)
        (result.own if own else result.foreign).add(str(node.digest))
        if await exists(node.digest):
            result.keys.add(str(node.digest))
            result.sizes[str(node.digest)] = node.size or 0
        elif own:
            result.absent.add(str(node.digest))
        return False

    await walk_documents(target, read, visit, root_data=data)
    result.foreign -= result.own  # a layer shared with the node's own platform must be there
    return result
