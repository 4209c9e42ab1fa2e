"""Index keys: which strings may be advertised and looked up. Pure.

Rules:
- A key is a blob or manifest digest (`sha256:<64 hex>` or `sha512:<128 hex>`), or a tag key
  `<registry>/<repository>:<tag>` (the tag resolution index). Nothing else enters the index.
- Validation reuses the OCI grammar in `sidecar.oci`, so the index and the registry agree on what a key is.
"""

from __future__ import annotations

from sidecar.oci import is_digest, split_image_name

# registry host (255) + "/" + repository (255) + ":" + tag (128)
MAX_KEY_LENGTH = 640


def is_index_key(text: str) -> bool:
    """True for a digest or a tag key; False for anything else (never raises)."""
    if not isinstance(text, str) or len(text) > MAX_KEY_LENGTH:
        return False
    if text.startswith(("sha256:", "sha512:")):
        return is_digest(text)
    return split_image_name(text) is not None
