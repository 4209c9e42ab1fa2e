"""Walking images: an index names manifests; a manifest names a config and layers. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sidecar.oci.digest import Digest, InvalidDigest, parse_digest
from sidecar.oci.mediatypes import INDEX_TYPES, NotAManifest, load_manifest


@dataclass(frozen=True, slots=True)
class Descriptor:
    digest: Digest
    media_type: str
    size: int
    platform: str | None = None  # "os/arch" of an index entry that names one


def children(data: bytes) -> tuple[str, list[Descriptor]]:
    """The media type of a manifest and the descriptors it references, in document order."""
    media_type, document = load_manifest(data)
    if media_type in INDEX_TYPES:
        entries = document.get("manifests", [])
    else:
        entries = [document.get("config"), *document.get("layers", [])]
    return media_type, [_descriptor(entry) for entry in entries]


def _descriptor(entry: Any) -> Descriptor:
    if not isinstance(entry, dict):
        raise NotAManifest("a descriptor is not a JSON object")
    media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise NotAManifest("a descriptor lacks mediaType or digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise NotAManifest("a descriptor has no valid size")
    platform = entry.get("platform")
    os_arch = None
    if isinstance(platform, dict) and isinstance(platform.get("os"), str):
        os_arch = f"{platform['os']}/{platform.get('architecture', '')}"
    try:
        return Descriptor(parse_digest(digest), media_type, size, os_arch)
    except InvalidDigest as exc:
        raise NotAManifest(str(exc)) from None
