"""The shared fetch on its own (sidecar/registry/shared_fetch.py): ranged readers of one blob stream, with
a source that counts what it was asked for, so the rules are checked without a network."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import anyio
import pytest

from sidecar.registry import shared_fetch
from sidecar.registry.shared_fetch import SharedFetch, SharedFetches, SharedFetchFailed

pytestmark = pytest.mark.anyio

BLOB = os.urandom(3 << 20)
PIECE = 64 << 10


class Source:
    """The provider's stream: `pieces` of the blob in order, then optionally a failure."""

    def __init__(self, data: bytes, fail_at: int | None = None) -> None:
        self.data, self.fail_at, self.sent, self.closed = data, fail_at, 0, False

    async def chunks(self) -> AsyncIterator[bytes]:
        while self.sent < len(self.data):
            if self.fail_at is not None and self.sent >= self.fail_at:
                raise RuntimeError("digest mismatch")
            piece = self.data[self.sent : self.sent + PIECE]
            self.sent += len(piece)
            await anyio.lowlevel.checkpoint()
            yield piece

    async def close(self) -> None:
        self.closed = True


def fetch_of(source: Source) -> SharedFetch:
    return SharedFetch("sha256:x", len(source.data), provider=None, source=source.chunks(),  # type: ignore[arg-type]
                       close_source=source.close)


async def read(fetch: SharedFetch, start: int, length: int, hang_up_after: int | None = None) -> bytes:
    got = b""
    async for piece in fetch.read(start, length):
        got += piece
        if hang_up_after is not None and len(got) >= hang_up_after:
            break  # the client hung up: the server stops iterating
    return got


async def test_chunked_readers_get_exact_bytes_and_the_provider_sends_the_blob_once() -> None:
    source = Source(BLOB)
    fetch = fetch_of(source)
    chunk = 1 << 20
    results: dict[int, bytes] = {}

    async def one(offset: int) -> None:  # an open-ended range, hung up after its chunk
        results[offset] = (await read(fetch, offset, len(BLOB) - offset, hang_up_after=chunk))[:chunk]

    async with anyio.create_task_group() as tg:
        for offset in range(0, len(BLOB), chunk):
            tg.start_soon(one, offset)
    assert b"".join(results[o] for o in sorted(results)) == BLOB
    assert source.sent == len(BLOB)  # once, however many readers


async def test_a_reader_behind_the_window_fails_and_a_range_before_it_cannot_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shared_fetch, "MAX_WINDOW", 512 << 10)
    monkeypatch.setattr(shared_fetch, "KEEP_BEHIND", 256 << 10)
    fetch = fetch_of(Source(BLOB))
    slow = fetch.read(0, len(BLOB))
    assert len(await slow.__anext__()) > 0  # the slow reader holds its place at the start...
    await read(fetch, 0, len(BLOB))  # ...while a fast one pulls the whole blob through the window
    assert fetch.base > 0 and not fetch.can_serve(0)
    with pytest.raises(SharedFetchFailed):
        async for _ in slow:
            pass


async def test_a_failing_stream_fails_every_reader_and_the_sweep_drops_it() -> None:
    source = Source(BLOB, fail_at=1 << 20)
    fetches = SharedFetches()
    fetch = fetch_of(source)
    fetches.add(fetch)
    with pytest.raises(SharedFetchFailed):
        await read(fetch, 2 << 20, 1 << 20)
    assert not fetch.can_serve(0)
    await fetches.sweep()
    assert fetches.find("sha256:x", 0) is None and source.closed


async def test_a_fetch_replaced_by_a_newer_one_for_the_same_blob_is_closed_by_the_next_sweep() -> None:
    fetches = SharedFetches()
    first, second = Source(BLOB), Source(BLOB)
    fetches.add(fetch_of(first))
    fetches.add(fetch_of(second))
    await fetches.sweep()
    assert first.closed and not second.closed
    assert fetches.find("sha256:x", 0) is not None
