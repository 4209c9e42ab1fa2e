"""The `Store` seam: everything lokal reads from the node's content store.

Two implementations stand behind it: `ContainerdStore` (the real one, gRPC plus direct file reads) and
`MemoryStore` (for tests of other parts). `tests/containerd/test_conformance.py` runs one suite against both.

Rules:
- Digests arrive validated (`sidecar.oci.Digest`): no method here ever sees raw request text.
- "Not here" is `None`, never an exception. `StoreUnavailable` means the store itself cannot be asked.
- A key is a digest string (`sha256:...`) or a tag key `<registry>/<repo>:<tag>`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream

from sidecar.containerd.cri_config import ConfigCheck
from sidecar.oci import Digest


class StoreUnavailable(RuntimeError):
    """The content store cannot be reached right now (containerd down or restarting)."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    digest: Digest
    size: int
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class FileBlob:
    """An open blob file, for zero-copy serving with sendfile. The receiver must `close()` it."""

    fd: int
    size: int
    source: Literal["file"] = "file"

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(slots=True)
class StreamBlob:
    """A blob that can only be streamed (containerd's gRPC Read): the fallback path."""

    size: int
    read: Callable[[int, int], AsyncIterator[bytes]]  # (offset, length) -> chunks
    source: Literal["grpc"] = "grpc"

    def close(self) -> None:
        pass


OpenBlob = FileBlob | StreamBlob


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyChange:
    """Keys this node started or stopped being able to serve."""

    added: frozenset[str] = frozenset()
    removed: frozenset[str] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


@dataclass(frozen=True, slots=True)
class StoreHealth:
    connected: bool  # the store answers (containerd connected); an in-memory store always does
    absent_blobs: int = 0  # blobs a present manifest names but the store lacks (discarded layers?)
    warnings: tuple[str, ...] = ()  # what makes the store slower or emptier than it should be, now
    version: str = ""  # containerd's, once connected


class Store(Protocol):
    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the store's source until cancelled; started once the index is first read (or the
        source is found away: lokal serves 404s meanwhile)."""

    async def aclose(self) -> None:
        """Release connections; subscribers' streams end."""

    def health(self) -> StoreHealth:
        """The store's state now, without I/O."""

    async def check_config(self, hosts_dir: str, config_file: str) -> ConfigCheck:
        """Warnings about the source's configuration (will containerd ask lokal, and keep its layers?),
        once the source answers: this may wait. `config_file`: containerd's, where mounted."""

    async def info(self, digest: Digest) -> BlobInfo | None:
        """Size and labels of a blob in the configured namespace, or None."""

    async def open_blob(self, digest: Digest) -> OpenBlob | None:
        """The blob, open for serving: a file when readable, else a gRPC stream; None if absent."""

    async def read_manifest(self, digest: Digest) -> Manifest | None:
        """A manifest's bytes and its media type (from its JSON); None if absent or not a manifest."""

    async def resolve_tag(self, registry: str, repository: str, tag: str) -> Digest | None:
        """The manifest digest an image name `<registry>/<repository>:<tag>` points at."""

    async def list_keys(self) -> frozenset[str]:
        """Every key this node can serve, from a fresh walk of every image."""

    def keys(self) -> frozenset[str]:
        """The current index, without I/O."""

    async def abort_ingests(self, digest: Digest) -> int:
        """Discard in-progress downloads of `digest` (a relay fed them bytes that failed verification:
        containerd would otherwise resume on top of them and never commit). Returns how many."""

    def subscribe(self) -> MemoryObjectReceiveStream[KeyChange]:
        """A stream of index changes; close it to unsubscribe."""

    async def ready(self) -> bool:
        """Whether the store answers right now."""
