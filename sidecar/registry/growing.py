"""Serving a blob that containerd is still downloading, to a peer that follows this node's download.

A peer that was told this node is fetching a blob (an in-progress provider, see routing/claims.py) asks
with `GROWING_HEADER`. If the blob is not committed yet, the answer streams containerd's ingest as it grows
(`sidecar.containerd.ingest`).

Rules:
- Only for peers (the request also carries the local-only header), only for blobs.
- The ingest must appear within `appear` seconds, else 404 (the asker moves on); a blob committed
  meanwhile is served from the store as usual (`Committed`).
- Headers say the whole size from the ingest's `total`; a Range is answered 206 once its start is written.
- The body never carries a byte containerd has not written, holds back the blob's last byte until the
  commit, and ends short when the ingest is abandoned or stalls for `stall` seconds: the follower resumes
  elsewhere or goes upstream, and never receives a wrong whole blob.
- At most `gate.capacity` growing bodies at once (the fan-out bound of one provider); past it, 503.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio

from sidecar.containerd import OpenBlob, Store
from sidecar.containerd.ingest import APPEAR_TIMEOUT, STALL_TIMEOUT, GrowingBlob, find_ingest
from sidecar.http.messages import Response, StreamBody
from sidecar.oci import Digest, ErrorCode, oci_error
from sidecar.registry.headers import blob_headers
from sidecar.registry.pulls import Miss, PullRecord
from sidecar.registry.ranges import Unsatisfiable, parse_range
from sidecar.security import Gate

GROWING_HEADER = "x-lokal-growing"
POLL = 0.02


class Committed:
    """The blob was committed while we looked for its ingest: serve it from the store."""


@dataclass
class GrowingSource:
    content_root: Callable[[], str | None]
    namespace: str
    in_namespace: Callable[[Digest], Awaitable[bool]]
    gate: Gate
    appear: float = APPEAR_TIMEOUT
    stall: float = STALL_TIMEOUT

    async def committed_blob(self, store: Store, digest: Digest) -> OpenBlob | None:
        """The blob just committed, once containerd has recorded it in the namespace (bounded wait)."""
        deadline = anyio.current_time() + COMMIT_SETTLE
        while True:
            blob = await store.open_blob(digest)
            if blob is not None or anyio.current_time() >= deadline:
                return blob
            await anyio.sleep(POLL)

    async def serve(
        self, digest: Digest, range_header: str | None, record: PullRecord
    ) -> Response | Committed | None:
        root = self.content_root()
        if not root:
            record.missed(Miss.NOT_FOUND, "content root not known yet")
            return None
        blob_path = Path(root) / "blobs" / digest.algorithm / digest.hex
        deadline = anyio.current_time() + self.appear
        while True:
            if _exists(blob_path):
                return Committed()
            ingest = find_ingest(root, digest, self.namespace)
            if ingest is not None:
                break
            if anyio.current_time() >= deadline:
                record.missed(Miss.NOT_FOUND, f"no download of it started here within {self.appear:.0f} s")
                return None
            await anyio.sleep(POLL)
        if ingest.total <= 0:
            record.missed(Miss.NOT_FOUND, "its download does not say its size")
            return None
        try:
            byte_range = parse_range(range_header, ingest.total)
        except Unsatisfiable:
            record.missed(Miss.RANGE, "range not satisfiable")
            return oci_error(416, ErrorCode.RANGE_INVALID, "range not satisfiable",
                             [("Content-Range", f"bytes */{ingest.total}")])
        if not self.gate.try_enter():
            record.missed(Miss.UPLOAD_LIMIT, "in-progress upload limit reached")
            record.status = 503
            return oci_error(503, ErrorCode.UNSUPPORTED, "this node serves its maximum of followers")
        blob = GrowingBlob.open(ingest, blob_path)
        if blob is None:
            self.gate.leave()
            return Committed() if _exists(blob_path) else None
        start, length = (byte_range.start, byte_range.length) if byte_range else (0, ingest.total)
        headers = blob_headers(digest, length, byte_range.content_range(ingest.total) if byte_range else None)
        record.result, record.tier, record.source = "local", "same_node", "ingest"
        record.bytes = length

        async def in_namespace() -> bool:
            return await self.in_namespace(digest)

        async def release() -> None:
            blob.close()
            self.gate.leave()

        chunks = blob.follow(start, length, stall=self.stall, in_namespace=in_namespace)
        return Response(206 if byte_range else 200, headers, StreamBody(chunks, length, release))


COMMIT_SETTLE = 1.0  # containerd renames the file before it records the blob in the namespace


def _exists(path: Path) -> bool:
    return path.exists()
