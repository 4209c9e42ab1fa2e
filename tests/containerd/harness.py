"""One way to put images into either Store implementation, so one conformance suite runs on both.

The containerd harness pushes to the real registry and pulls through CRI, as a kubelet would. The memory
harness reproduces what such a pull leaves behind: the target, the linux/amd64 manifest, its config and
layers, and the three image records CRI creates.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Protocol

from lokal_lab.containerd import ContainerdInstance
from lokal_lab.cri import CriClient
from lokal_lab.images import BuiltImage, build_image, push_image
from lokal_lab.registry import RegistryInstance

from sidecar.containerd import ContainerdStore, MemoryStore, Store
from sidecar.oci import parse_digest

_seeds = itertools.count(1000)


class Harness(Protocol):
    store: Store
    registry_name: str

    async def pull(self, image: BuiltImage, repository: str) -> str: ...
    async def remove(self, reference: str) -> None: ...


def make_image(directory: Path, tag: str = "v1", multi_platform: bool = True) -> BuiltImage:
    platforms = ("linux/amd64", "linux/arm64") if multi_platform else ("linux/amd64",)
    seed = next(_seeds)
    return build_image(directory / f"layout-{seed}", tag, [300_000, 1_200_000], platforms, seed=seed)


class MemoryHarness:
    registry_name = "registry.example"

    def __init__(self, serve_as: str = "file") -> None:
        self.store = MemoryStore(serve_as="grpc" if serve_as == "grpc" else "file")
        self._names: dict[str, list[str]] = {}

    async def pull(self, image: BuiltImage, repository: str) -> str:
        store = self.store
        blobs_dir = image.layout / "blobs" / "sha256"
        for blob in image.blobs_for("linux/amd64"):
            store.add_blob((blobs_dir / blob.digest.removeprefix("sha256:")).read_bytes())
        reference = f"{self.registry_name}/{repository}:{image.tag}"
        target = parse_digest(image.target.digest)
        names = [reference, f"{self.registry_name}/{repository}@{target}"]
        for name in names:
            await store.set_image(name, target)
        self._names[reference] = names
        return reference

    async def remove(self, reference: str) -> None:
        for name in self._names.pop(reference):
            await self.store.delete_image(name)


class ContainerdHarness:
    def __init__(
        self, containerd: ContainerdInstance, registry: RegistryInstance, **store_options: str
    ) -> None:
        self.containerd = containerd
        self.registry = registry
        self.registry_name = registry.address
        self.store = ContainerdStore(str(containerd.socket), **store_options)  # type: ignore[arg-type]

    async def pull(self, image: BuiltImage, repository: str) -> str:
        import anyio

        reference = push_image(image, self.registry.address, repository)
        with CriClient(self.containerd.socket) as cri:
            await anyio.to_thread.run_sync(cri.pull, reference)
        return reference

    async def remove(self, reference: str) -> None:
        import anyio

        with CriClient(self.containerd.socket) as cri:
            await anyio.to_thread.run_sync(cri.remove, reference)
