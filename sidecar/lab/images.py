"""OCI images made on the spot: random layers, a config, a manifest per platform, an index.

Written as an OCI image layout directory and pushed with skopeo, so that containerd later pulls them from
a real registry and labels them as a real pull does.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

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

    @property
    def size_for_amd64(self) -> int:
        return sum(b.size for b in self.blobs_for("linux/amd64"))


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
            tar_bytes = _tar_of(f"layer{l_index}.bin", rng.randbytes(size))
            diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
            data = gzip.compress(tar_bytes, compresslevel=1, mtime=0) if compress else tar_bytes
            layers.append(_write(blobs_dir, data, OCI_LAYER_GZIP if compress else OCI_LAYER_TAR))
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


def _tar_of(name: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mode = 0o755
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


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
