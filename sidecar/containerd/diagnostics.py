"""Silent misconfigurations of the containerd side, put into words: pure functions, no I/O but a look at the
content root.

Rules:
- Each check returns one warning (naming the setting to change) or None. `ContainerdStore.warnings` runs
  them; the log (`config_warning`, once per new warning), `/readyz` details and `lokal status` show them.
- A wrong namespace is only claimed when another namespace does hold images: a node with no image at all
  (a fresh one, a test) is not misconfigured. On a real node lokal's own image is always in `k8s.io`.
- The content root is checked as lokal would use it: it and its blob directory must be searchable and
  readable.
  Without it every blob is streamed through containerd's gRPC Read, about 3x slower than sendfile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

BLOB_DIR = "blobs/sha256"


def content_root_warning(root: str | None, holds_content: bool = True) -> str | None:
    """Why blobs cannot be read from files under `root` (None: containerd did not say, nor the setting).

    A missing root is only a problem once containerd holds content: 2.x creates the directory with its
    first blob, so a fresh 2.x node has none, and that is not a wrong mount.
    """
    if not root:
        return (
            "the content store root is unknown (containerd's Introspection did not report it and "
            "--content-root is not set): every blob is read through containerd's gRPC API, about 3x slower"
        )
    blobs = f"{root.rstrip('/')}/{BLOB_DIR}"
    if not os.path.isdir(root):
        if not holds_content:
            return None
        problem = "does not exist here (is the content store mounted at the same path as on the host?)"
    elif not all(os.access(d, os.R_OK | os.X_OK) for d in (root, blobs) if os.path.isdir(d)):
        problem = "is not readable by lokal (it must run as root: the directory is 0700 root)"
    else:
        return None  # (a fresh containerd has no blobs directory yet: nothing to read either way)
    return (
        f"the content store {root} {problem}: every blob is read through containerd's gRPC API, about 3x "
        "slower; set --content-root or fix the content-store mount (k3s and RKE2 keep it elsewhere, see "
        "docs/operating.md)"
    )


def namespace_warning(namespace: str, images: int, images_by_namespace: Mapping[str, int]) -> str | None:
    """The configured namespace holds no image while others do: lokal would have nothing to share."""
    if images:
        return None
    busy = {name: count for name, count in images_by_namespace.items() if count and name != namespace}
    if not busy:
        return None
    listed = ", ".join(f"{name!r} ({count} images)" for name, count in sorted(busy.items()))
    return (
        f"--containerd-namespace {namespace!r} holds no image, but {listed} does: lokal has nothing to "
        "share; Kubernetes uses 'k8s.io'"
    )
