"""OCI and Docker media types, and how to tell a manifest's type from its JSON.

The content store keeps no media types, so a manifest's type comes from its own `mediaType` field, or from
its shape when the field is absent (allowed for OCI manifests).
"""

from __future__ import annotations

import json
from typing import Any

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
ALL_MANIFEST_TYPES = INDEX_TYPES | MANIFEST_TYPES

# A manifest larger than this is not a manifest: distribution itself refuses over 4 MiB.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


class NotAManifest(ValueError):
    """The bytes are not an OCI or Docker index or image manifest."""


def load_manifest(data: bytes) -> tuple[str, dict[str, Any]]:
    """Parse manifest bytes into (media type, JSON object)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise NotAManifest(f"{len(data)} bytes is too large for a manifest")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotAManifest(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise NotAManifest("not a JSON object")
    declared = document.get("mediaType")
    if isinstance(declared, str) and declared in ALL_MANIFEST_TYPES:
        return declared, document
    if declared is not None:
        raise NotAManifest(f"unsupported mediaType {declared!r}")
    # OCI allows an absent mediaType: fall back to the shape.
    if isinstance(document.get("manifests"), list):
        return OCI_INDEX, document
    if isinstance(document.get("layers"), list) and isinstance(document.get("config"), dict):
        return OCI_MANIFEST, document
    raise NotAManifest("neither an index nor an image manifest")
