"""One relay per blob, shared by the ranged requests containerd 2.1 makes for it.

containerd 2.1 with `concurrent_layer_fetch_buffer` set fetches one layer as open-ended ranges
(`bytes=0-`, then `bytes=C-`, `bytes=2C-`, ..., a few at a time) and hangs up on each once it has read
its chunk. Relayed one by one, every range ran ahead of its client by the socket buffers before the
hang-up showed, and the providing node sent many times the layer (11x for 1 MiB chunks of 64 MiB).

Theory of operation: the first request (`bytes=0-`) opens one provider stream for the whole blob, through
the same verifying relay body as a whole-blob relay. Later ranges of that digest join it. Readers take
their bytes from a window of the stream kept in memory; a reader that needs bytes not yet there pulls
the stream forward. Bytes pulled past a reader that hung up are not lost: the next chunks' readers take
them. So the bytes between the nodes are the blob once, whatever the chunk size and however the client
hangs up.

Rules:
- One puller at a time, and the pull of one chunk is shielded: a reader cancelled mid-pull never breaks
  the shared stream.
- The window keeps every byte from the lowest open reader's position, and at least the last
  `KEEP_BEHIND` bytes (the next chunks' requests start behind a reader that ran ahead), up to
  `MAX_WINDOW` bytes; beyond it the oldest bytes go, and a reader left behind fails (its client resumes
  with a new request).
- A range that starts before the window (its bytes are gone) does not join: the caller relays it alone.
- The blob is hashed as a whole and its last bytes are held back until the digest matches (the relay
  body's rule), so a chunk that completes the blob is never sent unverified. When the stream fails (a
  digest mismatch, no provider left), every reader fails with it and the fetch is dropped.
- A fetch without readers is closed after `LINGER` seconds, when the next ranged request looks (there is
  no timer task); at most `MAX_FETCHES` are open: more ranged requests are relayed alone. A stream is
  never closed under a reader that may be pulling it: a fetch replaced or dropped while read is closed
  by a later sweep, once its readers are gone.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count

import anyio

from sidecar.topology.policy import RankedProvider

MAX_WINDOW = 32 << 20
# Kept behind the stream's end even with no reader there: a reader whose client hung up runs ahead by the
# socket buffers (several MiB) before it notices, and the next chunks' requests come after it.
KEEP_BEHIND = 16 << 20
PIECE = 256 << 10  # what a reader hands the server at once
LINGER = 5.0
MAX_FETCHES = 8
_ids = count()


class SharedFetchFailed(Exception):
    """A reader cannot get its bytes: the stream failed, or the window moved past the reader."""


@dataclass
class SharedFetch:
    """The stream of one blob from one provider, read by several ranged requests."""

    digest: str
    size: int
    provider: RankedProvider
    source: AsyncIterator[bytes]  # the verified relay body: its last bytes come only after the digest
    close_source: Callable[[], Awaitable[None]]
    # The window: the stream's chunks as they came (never copied or moved), `starts[i]` the blob offset of
    # `pieces[i]`; the ones before `head` are dropped (the lists are compacted now and then).
    pieces: list[bytes] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    head: int = 0
    end: int = 0  # bytes pulled so far
    done: bool = False
    failed: BaseException | None = None
    positions: dict[int, int] = field(default_factory=dict)  # reader id -> its next offset
    idle_since: float = field(default_factory=time.monotonic)
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def base(self) -> int:
        """The blob offset of the window's first byte."""
        return self.starts[self.head] if self.head < len(self.starts) else self.end

    def can_serve(self, start: int) -> bool:
        return self.failed is None and self.base <= start < self.size

    async def read(self, start: int, length: int) -> AsyncIterator[bytes]:
        """Bytes [start, start + length) of the blob, pulling the stream forward as needed."""
        reader = next(_ids)
        position, stop = start, start + length
        self.positions[reader] = position
        try:
            while position < stop:
                if position < self.base:
                    raise SharedFetchFailed(f"{self.digest}: bytes at {position} left the window")
                if position < self.end:
                    index = bisect_right(self.starts, position, self.head) - 1
                    offset = position - self.starts[index]
                    piece = self.pieces[index][offset : offset + min(stop - position, PIECE)]
                    position += len(piece)
                    self.positions[reader] = position
                    yield piece
                    continue
                if self.failed is not None:
                    raise SharedFetchFailed(f"{self.digest}: {self.failed}") from self.failed
                if self.done:
                    raise SharedFetchFailed(f"{self.digest}: the stream ended at {self.end} of {self.size}")
                await self._pull(position)
        finally:
            del self.positions[reader]
            if not self.positions:
                self.idle_since = time.monotonic()

    async def _pull(self, wanted: int) -> None:
        async with self._lock:
            if self.end > wanted or self.done or self.failed is not None:
                return  # another reader pulled while this one waited
            with anyio.CancelScope(shield=True):
                try:
                    chunk = await self.source.__anext__()
                except StopAsyncIteration:
                    self.done = True
                    return
                except Exception as exc:  # the relay body's failure: every reader sees it
                    self.failed = exc
                    return
            if chunk:
                self.pieces.append(chunk)
                self.starts.append(self.end)
                self.end += len(chunk)
                self._trim()

    def _trim(self) -> None:
        """Drop what no open reader still needs, and what exceeds the window in any case."""
        lowest = min(self.positions.values(), default=self.end)
        keep_from = max(min(lowest, self.end - KEEP_BEHIND), self.end - MAX_WINDOW)
        pieces, starts = self.pieces, self.starts
        while self.head < len(pieces) and starts[self.head] + len(pieces[self.head]) <= keep_from:
            self.head += 1  # whole chunks only: a reader inside one keeps it
        if self.head > 256:
            del self.pieces[: self.head], self.starts[: self.head]
            self.head = 0

    async def aclose(self) -> None:
        await self.close_source()


@dataclass
class SharedFetches:
    """The open shared fetches of this node, by digest."""

    fetches: dict[str, SharedFetch] = field(default_factory=dict)
    displaced: list[SharedFetch] = field(default_factory=list)  # replaced by a newer one: closed by sweep

    def find(self, digest: str, start: int) -> SharedFetch | None:
        fetch = self.fetches.get(digest)
        return fetch if fetch is not None and fetch.can_serve(start) else None

    def room(self) -> bool:
        return len(self.fetches) < MAX_FETCHES

    def add(self, fetch: SharedFetch) -> None:
        older = self.fetches.get(fetch.digest)
        if older is not None:
            self.displaced.append(older)
        self.fetches[fetch.digest] = fetch

    async def sweep(self) -> None:
        """Close the fetches that failed, or that nobody has read for `LINGER` seconds."""
        now = time.monotonic()
        busy = [fetch for fetch in self.displaced if fetch.positions]  # its readers finish first
        idle = [fetch for fetch in self.displaced if not fetch.positions]
        self.displaced = busy
        for fetch in idle:
            with anyio.CancelScope(shield=True):
                await fetch.aclose()
        for digest, fetch in list(self.fetches.items()):
            unread = not fetch.positions and now - fetch.idle_since >= LINGER
            if fetch.failed is not None or unread:  # a failed fetch's readers fail on their own
                del self.fetches[digest]
                if fetch.positions:
                    self.displaced.append(fetch)  # never close a stream under a reader that pulls it
                    continue
                with anyio.CancelScope(shield=True):
                    await fetch.aclose()
