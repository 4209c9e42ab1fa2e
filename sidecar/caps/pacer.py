"""Per-tier caps on the bytes lokal moves: each a token bucket that relays and peer uploads wait on.

Caps (`--cap-from-other-regions`, `--cap-to-peers`, bytes per second; unset: no cap):
- `from_other_regions`: body bytes this node receives from peers in other regions (relays);
- `to_peers`: body bytes this node sends to peers, all tiers together (uploads).

Rules:
- Bytes move in chunks of at most `TokenBucket.chunk_limit`, each after its wait, so the cap holds over
  any 1 s window (bucket.py says by how much).
- No wait is ever long: a transfer that would wait more than `MAX_WAIT_S` for its next chunk gets
  `CapExceeded` instead (the relay then resumes from another provider, or cuts the body so that containerd
  resumes upstream), and new transfers are refused while the backlog is over `ADMIT_BACKLOG_S` (a relay
  tries the next provider or answers 404; an upload answers 503, and the asking peer tries its next).
  containerd's own patience is far longer (10 s stall timeout between peers, minutes in the CRI).
- Time spent waiting is counted per cap: `lokal_cap_throttled_seconds_total{cap}`.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio

from sidecar.caps.bucket import TokenBucket
from sidecar.http.messages import FileBody, Response, StreamBody

FROM_OTHER_REGIONS = "from_other_regions"
TO_PEERS = "to_peers"
CAP_NAMES = (FROM_OTHER_REGIONS, TO_PEERS)
MAX_WAIT_S = 5.0
ADMIT_BACKLOG_S = 1.0


class CapExceeded(Exception):
    """Moving the next chunk under this cap would stall the transfer for too long."""


@dataclass
class Cap:
    name: str
    bucket: TokenBucket
    clock: Callable[[], float] = time.monotonic
    throttled_s: float = 0.0
    refused: int = 0
    bytes_moved: int = 0
    active: int = field(default=0)

    @property
    def rate(self) -> float:
        return self.bucket.rate

    @property
    def chunk_limit(self) -> int:
        return self.bucket.chunk_limit

    def admits(self) -> bool:
        """Whether a new transfer may start now; counts a refusal when not."""
        if self.bucket.backlog(self.clock()) > ADMIT_BACKLOG_S:
            self.refused += 1
            return False
        return True

    async def pace(self, size: int) -> None:
        """Wait until `size` bytes may move under this cap; CapExceeded if that would take too long."""
        delay = self.bucket.reserve(size, self.clock())
        if delay > MAX_WAIT_S:
            self.bucket.refund(size)
            self.refused += 1
            raise CapExceeded(f"cap {self.name} ({self.rate / 1e6:.2f} MB/s) would hold the next "
                              f"{size} bytes for {delay:.1f}s")
        self.bytes_moved += size
        if delay > 0:
            self.throttled_s += delay
            await anyio.sleep(delay)

    async def paced(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """`chunks`, cut to the cap's chunk limit, each yielded after its wait."""
        limit = self.chunk_limit
        self.active += 1
        try:
            async for chunk in chunks:
                for start in range(0, len(chunk), limit):
                    piece = chunk[start:start + limit]
                    await self.pace(len(piece))
                    yield piece
        finally:
            self.active -= 1

    def snapshot(self) -> dict[str, object]:
        return {"rate_bytes_per_s": self.rate, "throttled_s": round(self.throttled_s, 3),
                "refused": self.refused, "bytes": self.bytes_moved, "active": self.active}


@dataclass
class TierCaps:
    """The caps a node runs with; a missing cap is no cap."""

    from_other_regions: Cap | None = None
    to_peers: Cap | None = None

    @classmethod
    def of(cls, from_other_regions: float | None, to_peers: float | None) -> TierCaps:
        def cap(name: str, rate: float | None) -> Cap | None:
            return Cap(name, TokenBucket(rate)) if rate else None

        return cls(cap(FROM_OTHER_REGIONS, from_other_regions), cap(TO_PEERS, to_peers))

    def all(self) -> list[Cap]:
        return [c for c in (self.from_other_regions, self.to_peers) if c is not None]


def paced_response(response: Response, cap: Cap) -> Response:
    """The same response, its body paced by `cap`: a file body is read in chunks instead of one
    sendfile (only while a cap is set), a stream is re-cut to the cap's chunk limit."""
    body = response.body
    if isinstance(body, FileBody):
        close = body.close

        async def aclose() -> None:
            if close is not None:
                close()

        response.body = StreamBody(cap.paced(_file_chunks(body, cap.chunk_limit)), body.length, aclose)
    elif isinstance(body, StreamBody):
        response.body = StreamBody(cap.paced(body.chunks), body.length, body.aclose)
    elif body:
        response.body = StreamBody(cap.paced(_bytes_chunks(body)), len(body))
    return response


async def _file_chunks(body: FileBody, chunk: int) -> AsyncIterator[bytes]:
    offset, end = body.offset, body.offset + body.length
    while offset < end:
        data = os.pread(body.fd, min(chunk, end - offset), offset)  # page cache: a short blocking read
        if not data:
            raise OSError(f"file ended {end - offset} bytes short")
        offset += len(data)
        yield data


async def _bytes_chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data
