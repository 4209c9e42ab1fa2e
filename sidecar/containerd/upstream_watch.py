"""Watching containerd fetch a blob from upstream after our 404, to learn how fast upstream is.

lokal never talks to the upstream registry. After it answers a blob 404, containerd fetches the blob from
upstream into an ingest (`<content root>/ingest/<dir>/` with `ref`, `total` and a growing `data`; on commit
`data` is renamed into `blobs/`). Watching `data` grow gives the registry's first-byte latency (from our
404 to the first new byte) and throughput (bytes grown over the time they took).

Rules:
- Files only, read-only: the digest's ingest, then a stat of its `data` per look. No gRPC call on this path.
- Bounded: at most `MAX_WATCHES` watches at once (more are dropped, never queued), each ends after
  `STALL_S` without growth, when the ingest goes away, or after `MAX_WATCH_S`.
- A watch reports at most one sample, and only what it saw: bytes grown between its first and last
  observation of growth (an aborted ingest still measured the link while it grew). The bytes that arrived
  before the first look that saw growth are not counted: their start time is unknown.
- The ingest is found with sidecar/containerd/ingest.py (the share-while-downloading locator); only the
  configured namespace's ingests count.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from sidecar.containerd.ingest import Ingest, find_ingest
from sidecar.logs import get_logger, log_event
from sidecar.oci import Digest

log = get_logger("upstream_watch")

POLL_S = 0.02
FIND_S = 3.0  # containerd opens its ingest before it asks the mirror; give it a moment anyway
STALL_S = 10.0
MAX_WATCH_S = 600.0
MAX_WATCHES = 8


def ingest_size(store: object, digest: Digest) -> int | None:
    """The size containerd expects for `digest`, from its ingest of it (containerd opens the ingest before
    it asks the mirror), or None: no content root known, no ingest, or no size given."""
    root = getattr(store, "content_root", None)
    namespace = getattr(store, "namespace", None)
    if not isinstance(root, str) or not root or not isinstance(namespace, str):
        return None
    ingest = find_ingest(root, digest, namespace)
    return ingest.total if ingest is not None and ingest.total > 0 else None


def _data_size(ingest: Ingest) -> int | None:
    try:
        return os.stat(ingest.data_path).st_size
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class UpstreamSample:
    registry: str
    size: int  # bytes seen arriving
    transfer_s: float | None  # None: too little seen for a rate
    first_byte_s: float | None


Report = Callable[[UpstreamSample], None]


class UpstreamWatcher:
    """`missed()` from the relay after a blob 404; `run()` in the node's task group does the watching."""

    def __init__(self, content_root: Callable[[], str | None], namespace: str, report: Report,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.content_root = content_root
        self.namespace = namespace
        self.report = report
        self.clock = clock
        self.active = 0
        self.dropped = 0
        self._send: MemoryObjectSendStream[tuple[str, Digest, float]]
        self._receive: MemoryObjectReceiveStream[tuple[str, Digest, float]]
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Digest, float]](MAX_WATCHES)

    def missed(self, registry: str, digest: Digest) -> None:
        """lokal just answered 404 for this blob: containerd goes upstream now."""
        if self.active >= MAX_WATCHES:
            self.dropped += 1
            return
        try:
            self._send.send_nowait((registry, digest, self.clock()))
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self.dropped += 1

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            async for registry, digest, answered_at in self._receive:
                if self.active >= MAX_WATCHES:
                    self.dropped += 1
                    continue
                self.active += 1
                tg.start_soon(self._watch_one, registry, digest, answered_at)

    async def _watch_one(self, registry: str, digest: Digest, answered_at: float) -> None:
        try:
            sample = await self.watch(registry, digest, answered_at)
        except Exception as exc:  # a watch is an observation: it must never take the node down
            log_event(log, "upstream_watch_failed", logging.WARNING, digest=digest.short,
                      error=repr(exc)[:200])
            sample = None
        finally:
            self.active -= 1
        if sample is not None:
            self.report(sample)

    async def watch(self, registry: str, digest: Digest, answered_at: float) -> UpstreamSample | None:
        root = self.content_root()
        if not root:
            return None
        clock = self.clock
        ingest = None
        while ingest is None:
            ingest = find_ingest(root, digest, self.namespace)
            if ingest is None:
                if clock() - answered_at > FIND_S:
                    return None
                await anyio.sleep(POLL_S * 5)
        first_size = _data_size(ingest) or 0
        last_size = first_size
        first_growth: tuple[float, int] | None = None
        last_growth_at = clock()
        while clock() - answered_at < MAX_WATCH_S:
            await anyio.sleep(POLL_S)
            now = clock()
            size = _data_size(ingest)
            if size is None:  # committed (renamed into blobs/) or aborted
                committed = _committed_size(root, digest)
                if first_growth is None or committed is None or committed < last_size:
                    break
                # The last bytes arrived between our last look and the rename: count them at now.
                last_size, last_growth_at = committed, now
                break
            if size > last_size:
                if first_growth is None:  # what arrived before this look has no known start: not counted
                    first_growth = (now, size)
                last_size, last_growth_at = size, now
            elif now - last_growth_at > STALL_S:
                break
        if first_growth is None:
            return None
        started_at, base = first_growth
        grown = last_size - base
        transfer = last_growth_at - started_at
        return UpstreamSample(registry, grown, transfer if transfer > 0 else None, started_at - answered_at)


def _committed_size(content_root: str, digest: Digest) -> int | None:
    try:
        return os.stat(os.path.join(content_root, "blobs", digest.algorithm, digest.hex)).st_size
    except OSError:
        return None
