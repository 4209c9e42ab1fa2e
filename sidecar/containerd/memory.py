"""An in-memory `Store` for tests of the parts above it (registry, routing).

Blobs are served as real file descriptors (memfd), so the zero-copy path is exercised even without
containerd; `serve_as="grpc"` serves them as a stream instead.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Literal

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from sidecar.containerd.broadcast import ChangeBroadcast
from sidecar.containerd.cri_config import ConfigCheck
from sidecar.containerd.store import (
    BlobInfo,
    FileBlob,
    KeyChange,
    Manifest,
    OpenBlob,
    StoreHealth,
    StreamBlob,
)
from sidecar.containerd.walk import walk_image
from sidecar.oci import Digest, NotAManifest, digest_of, load_manifest, tag_key

CHUNK = 1024 * 1024


class MemoryStore:
    def __init__(self, serve_as: Literal["file", "grpc"] = "file") -> None:
        self.serve_as = serve_as
        self._blobs: dict[Digest, tuple[bytes, dict[str, str]]] = {}
        self._images: dict[str, Digest] = {}
        self._image_keys: dict[str, frozenset[str]] = {}  # per image, so a change re-walks one image
        self._index: frozenset[str] = frozenset()
        self._changes = ChangeBroadcast()
        self.available = True
        self.aborted: list[Digest] = []  # abort_ingests calls, for tests

    # -- test set-up -------------------------------------------------------------------------------

    def add_blob(self, data: bytes, labels: Mapping[str, str] | None = None) -> Digest:
        digest = digest_of(data)
        self._blobs[digest] = (data, dict(labels or {}))
        return digest

    async def set_image(self, name: str, target: Digest) -> None:
        self._images[name] = target
        self._image_keys[name] = frozenset((await walk_image(name, target, self._read, self._exists)).keys)
        self._reindex()

    async def delete_image(self, name: str) -> None:
        self._images.pop(name, None)
        self._image_keys.pop(name, None)
        self._reindex()

    # -- Store -------------------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()  # nothing to follow: changes come from the test's calls

    async def aclose(self) -> None:
        self._changes.close()

    def health(self) -> StoreHealth:
        return StoreHealth(connected=self.available)

    async def check_config(self, hosts_dir: str, config_file: str) -> ConfigCheck:
        return ConfigCheck(source="memory")

    async def info(self, digest: Digest) -> BlobInfo | None:
        entry = self._blobs.get(digest)
        return BlobInfo(digest, len(entry[0]), entry[1]) if entry else None

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        entry = self._blobs.get(digest)
        if entry is None:
            return None
        data = entry[0]
        if self.serve_as == "grpc":
            return StreamBlob(len(data), lambda offset, length: _chunks(data, offset, length))
        fd = os.memfd_create("lokal-blob", os.MFD_CLOEXEC)
        os.write(fd, data)
        return FileBlob(fd, len(data))

    async def read_manifest(self, digest: Digest) -> Manifest | None:
        entry = self._blobs.get(digest)
        if entry is None:
            return None
        try:
            media_type, _ = load_manifest(entry[0])
        except NotAManifest:
            return None
        return Manifest(digest, media_type, entry[0])

    async def resolve_tag(self, registry: str, repository: str, tag: str) -> Digest | None:
        return self._images.get(tag_key(registry, repository, tag))

    async def list_keys(self) -> frozenset[str]:
        keys: set[str] = set()
        for name, target in self._images.items():
            result = await walk_image(name, target, self._read, self._exists)
            keys |= result.keys
        return frozenset(keys)

    def keys(self) -> frozenset[str]:
        return self._index

    async def abort_ingests(self, digest: Digest) -> int:
        self.aborted.append(digest)
        return 0

    def subscribe(self) -> MemoryObjectReceiveStream[KeyChange]:
        return self._changes.subscribe()

    async def ready(self) -> bool:
        return self.available

    # -- internals ---------------------------------------------------------------------------------

    async def _read(self, digest: Digest) -> bytes | None:
        entry = self._blobs.get(digest)
        return entry[0] if entry else None

    async def _exists(self, digest: Digest) -> bool:
        return digest in self._blobs

    def _reindex(self) -> None:
        new = frozenset().union(*self._image_keys.values())
        change = KeyChange(added=new - self._index, removed=self._index - new)
        self._index = new
        self._changes.publish(change)


async def _chunks(data: bytes, offset: int, length: int) -> AsyncIterator[bytes]:
    end = offset + length
    for start in range(offset, end, CHUNK):
        yield data[start : min(start + CHUNK, end)]
