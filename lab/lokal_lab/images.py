"""OCI images made on the spot: random layers, a config, a manifest per platform, an index.

Written as an OCI image layout directory and pushed with skopeo, so that containerd later pulls them from
a real registry and labels them as a real pull does.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str


@dataclass
class BuiltImage:
    layout: Path
    tag: str
    target: Blob  # the index (multi-platform) or the manifest
    manifests: dict[str, Blob] = field(default_factory=dict)  # platform "os/arch" -> manifest
    configs: dict[str, Blob] = field(default_factory=dict)
    layers: dict[str, list[Blob]] = field(default_factory=dict)

    def blobs_for(self, platform: str) -> list[Blob]:
        """Every blob a pull of `platform` fetches: target, manifest, config, layers."""
        own = [self.manifests[platform], self.configs[platform], *self.layers[platform]]
        return own if self.target == self.manifests[platform] else [self.target, *own]


def build_image(
    layout: Path,
    tag: str,
    layer_sizes: list[int],
    platforms: tuple[str, ...] = ("linux/amd64",),
    seed: int = 0,
    compress: bool = False,
) -> BuiltImage:
    """Write an OCI layout at `layout` with one image under `tag`. Layers hold random, incompressible
    bytes from `seed`, so that two images share a layer only when they share a seed and size."""
    blobs_dir = layout / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    image = BuiltImage(layout, tag, target=Blob("", 0, ""))
    for p_index, platform in enumerate(platforms):
        os_name, arch = platform.split("/")
        layers, diff_ids = [], []
        for l_index, size in enumerate(layer_sizes):
            rng = random.Random(seed * 1_000_003 + p_index * 1009 + l_index)
            layer, diff_id = _write_layer(blobs_dir, f"layer{l_index}.bin", rng, size, compress)
            diff_ids.append(diff_id)
            layers.append(layer)
        config = {
            "architecture": arch,
            "os": os_name,
            "config": {"Cmd": ["/layer0.bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"lokal test image {tag} seed {seed}"}],
        }
        config_blob = _write(blobs_dir, _json(config), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(config_blob),
            "layers": [_descriptor(layer) for layer in layers],
        }
        image.manifests[platform] = _write(blobs_dir, _json(manifest), OCI_MANIFEST)
        image.configs[platform] = config_blob
        image.layers[platform] = layers
    if len(platforms) == 1:
        image.target = image.manifests[platforms[0]]
    else:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**_descriptor(image.manifests[p]), "platform": _platform(p)} for p in platforms
            ],
        }
        image.target = _write(blobs_dir, _json(index), OCI_INDEX)
    top = {
        "schemaVersion": 2,
        "manifests": [
            {**_descriptor(image.target), "annotations": {"org.opencontainers.image.ref.name": tag}}
        ],
    }
    (layout / "index.json").write_text(json.dumps(top))
    return image


def push_image(image: BuiltImage, registry: str, repository: str, netns: str | None = None) -> str:
    """Push with skopeo to a plain-HTTP registry; returns `registry/repository:tag`."""
    reference = f"{registry}/{repository}:{image.tag}"
    argv = [
        "skopeo", "--insecure-policy", "copy", "--quiet", "--all", "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{image.layout}:{image.tag}", f"docker://{reference}",
    ]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return reference


def _write_layer(
    blobs_dir: Path, name: str, rng: random.Random, size: int, compress: bool
) -> tuple[Blob, str]:
    """Stream a one-file tar of `size` random bytes to disk (gzip-compressed if asked), hashing on the
    way: layers of any size, in bounded memory. Returns the blob and the diff_id (the tar's digest)."""
    partial = blobs_dir / f".partial-{name}-{rng.random()}"
    with open(partial, "wb") as out:
        blob_writer = _HashingWriter(out)
        gz = gzip.GzipFile(fileobj=blob_writer, mode="wb", compresslevel=1, mtime=0) if compress else None
        tar_writer = _HashingWriter(gz if gz is not None else blob_writer)
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=tar_writer, mode="w", format=tarfile.PAX_FORMAT, copybufsize=4 * 1024 * 1024
        ) as tar:
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o755
            tar.addfile(info, _RandomReader(rng, size))
        if gz is not None:
            gz.close()
    hex_digest = blob_writer.sha256.hexdigest()
    partial.replace(blobs_dir / hex_digest)
    media_type = OCI_LAYER_GZIP if compress else OCI_LAYER_TAR
    diff_id = "sha256:" + tar_writer.sha256.hexdigest()
    return Blob(f"sha256:{hex_digest}", blob_writer.size, media_type), diff_id


class _RandomReader:
    """`size` seeded random bytes, read in chunks (tarfile copies a member's data from it)."""

    def __init__(self, rng: random.Random, size: int) -> None:
        self._rng = rng
        self._left = size

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left, 16 * 1024 * 1024)
        self._left -= n
        return self._rng.randbytes(n)


class _HashingWriter:
    """A write-only file that hashes what goes through it (tarfile needs write and tell)."""

    def __init__(self, out: BinaryIO | _HashingWriter | gzip.GzipFile) -> None:
        self._out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        pass


def _write(blobs_dir: Path, data: bytes, media_type: str) -> Blob:
    digest = hashlib.sha256(data).hexdigest()
    path = blobs_dir / digest
    if not path.exists():
        path.write_bytes(data)
    return Blob(f"sha256:{digest}", len(data), media_type)


def _descriptor(blob: Blob) -> dict[str, object]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def _platform(platform: str) -> dict[str, str]:
    os_name, arch = platform.split("/")
    return {"os": os_name, "architecture": arch}


def _json(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
