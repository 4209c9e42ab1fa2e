"""Lookup: which nodes hold a key, asking its home nodes in parallel. The async shell around placement.

Rules:
- Ask the k home nodes of the key in this region at once. Take the first answer that lists providers,
  merged with whatever else arrives within `merge_window` seconds. A miss is one round: every home answered
  empty or failed, or `timeout` passed (a silent home costs at most `timeout`, never a stall).
- Cross-region: only after a miss at home, and only to the regions the caller passes, in that order
  (prefer mode with cross-region "always"; the policy decides, not this module).
- Positive answers are cached for `cache_ttl` seconds (bounded LRU-ish: oldest first out); misses are not
  cached, so content that just arrived is found on the next pull.
- Concurrent lookups of one key share one flight (single-flight): N waiting pulls cost one round.
- `clock` is injected (the cache's notion of time); timeouts use the event loop's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import anyio

from sidecar.membership import Peer
from sidecar.routing.placement import Ring
from sidecar.routing.protocol import LookupRequest
from sidecar.routing.transport import PeerTransport, PeerUnavailable

DEFAULT_TIMEOUT = 0.1
DEFAULT_MERGE_WINDOW = 0.003
DEFAULT_CACHE_TTL = 5.0
DEFAULT_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Found:
    providers: tuple[str, ...]  # node names, in the order the homes answered; empty on a miss
    region: str | None = None  # the region whose index answered; None on a miss
    messages: int = 0  # requests this call sent (0 when cached or shared)
    cached: bool = False
    shared: bool = False  # joined another caller's flight


class _Flight:
    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: Found | None = None


class Lookup:
    def __init__(
        self,
        transport: PeerTransport,
        ring_of: Callable[[str], Ring[Peer]],
        region: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        merge_window: float = DEFAULT_MERGE_WINDOW,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        cache_size: int = DEFAULT_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"lookup timeout must be > 0 seconds, got {timeout}")
        self.transport = transport
        self.ring_of = ring_of
        self.region = region
        self.timeout = timeout
        self.merge_window = max(0.0, merge_window)
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.clock = clock
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, Found]] = {}
        self._flights: dict[tuple[str, tuple[str, ...]], _Flight] = {}

    def forget(self) -> None:
        """Drop cached answers (after a membership change that may have removed providers)."""
        self._cache.clear()

    async def find(self, key: str, other_regions: Sequence[str] = ()) -> Found:
        """Providers of `key`: this region first, then `other_regions` in order, on a miss only."""
        flight_key = (key, tuple(r for r in other_regions if r != self.region))
        hit = self._cache.get(flight_key)
        if hit is not None:
            if hit[0] > self.clock():
                return Found(hit[1].providers, hit[1].region, 0, cached=True)
            del self._cache[flight_key]
        flight = self._flights.get(flight_key)
        if flight is not None:
            await flight.done.wait()
            if flight.result is not None:
                return Found(flight.result.providers, flight.result.region, 0, shared=True)
            return await self.find(key, other_regions)  # the leader was cancelled: try ourselves
        flight = self._flights[flight_key] = _Flight()
        try:
            flight.result = await self._resolve(key, flight_key[1])
        finally:
            del self._flights[flight_key]
            flight.done.set()
        if flight.result.providers and self.cache_ttl > 0:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[flight_key] = (self.clock() + self.cache_ttl, flight.result)
        return flight.result

    async def _resolve(self, key: str, other_regions: tuple[str, ...]) -> Found:
        messages = 0
        for region in (self.region, *other_regions):
            providers, sent = await self.ask_homes(key, self.ring_of(region).homes(key))
            messages += sent
            if providers:
                return Found(providers, region, messages)
        return Found((), None, messages)

    async def ask_homes(self, key: str, homes: Sequence[Peer]) -> tuple[tuple[str, ...], int]:
        """One round to `homes` in parallel: (providers, requests sent)."""
        if not homes:
            return (), 0
        send, receive = anyio.create_memory_object_stream[tuple[str, ...] | None](len(homes))
        request = LookupRequest((key,))

        async def ask(home: Peer) -> None:
            try:
                reply = await self.transport.lookup(home, request)
                answer: tuple[str, ...] | None = reply.providers.get(key, ())
            except PeerUnavailable:
                answer = None
            send.send_nowait(answer)  # never blocks: the buffer holds one answer per home

        merged: dict[str, None] = {}
        async with anyio.create_task_group() as group:
            for home in homes:
                group.start_soon(ask, home)
            deadline = anyio.current_time() + self.timeout
            for _ in homes:
                answer = None
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    answer = await receive.receive()
                if anyio.current_time() >= deadline and answer is None:
                    break
                if answer:
                    if not merged:
                        deadline = min(deadline, anyio.current_time() + self.merge_window)
                    merged.update(dict.fromkeys(answer))
            group.cancel_scope.cancel()
        send.close()
        receive.close()
        return tuple(merged), len(homes)
