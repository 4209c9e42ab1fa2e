"""The response headers of a blob or a manifest, written once for every path that serves one (the local
store, a relay, a shared chunked fetch, a growing download): containerd needs exactly these, on HEAD too."""

from __future__ import annotations

from sidecar.oci import Digest


def blob_headers(
    digest: Digest | str, length: int, content_range: str | None = None
) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", "application/octet-stream"),
        ("Docker-Content-Digest", str(digest)),
        ("Accept-Ranges", "bytes"),
        ("Content-Length", str(length)),
    ]
    if content_range is not None:
        headers.append(("Content-Range", content_range))
    return headers


def manifest_headers(media_type: str, digest: Digest, length: int) -> list[tuple[str, str]]:
    return [
        ("Content-Type", media_type),
        ("Docker-Content-Digest", str(digest)),
        ("Content-Length", str(length)),
    ]
