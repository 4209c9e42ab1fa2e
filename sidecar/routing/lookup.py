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
- Claims (share while downloading, see `claims.py`): `find(key, claim=scope)` also records this node as
  fetching the key where nobody holds it.
  - Scope = this region: the same single round to the region's homes carries the claim.
  - Scope = the cluster (`CLUSTER`): after a miss in every region asked, one more round goes to the homes
    of the key in the whole cluster's ring, with the claim.
  - The homes of a round may disagree (two askers reached them in different orders). The answer of the
    first home in rendezvous order that answered is authoritative for the claim, so every asker that
    reaches the same homes agrees on one claimant; holders are still merged from every answer.
  - Answers carrying claims are never cached: every fetch must reach the homes.
  - A region claim that this node won still asks `other_regions` (prefer + auto): holders there are
    returned with `claimed`, and the relay's auto rule decides between them and upstream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import anyio

from sidecar.membership import Peer
from sidecar.routing.claims import CLUSTER
from sidecar.routing.placement import Ring
from sidecar.routing.protocol import LookupReply, LookupRequest
from sidecar.routing.transport import PeerTransport, PeerUnavailable

DEFAULT_TIMEOUT = 0.1
# A claim round waits longer for a slow home: its answer decides who fetches upstream, and a home that
# times out for one asker but not another is how two claimants happen. Only a silent home costs it.
DEFAULT_CLAIM_TIMEOUT = 0.5
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
    fetching: tuple[str, ...] = ()  # in-progress providers to follow (a claim that someone else won)
    claimed: bool = False  # this node is the claimant: nobody fetches the key, it goes upstream
    claim_homes: tuple[str, ...] = ()  # where the claim was recorded (renewals go there)


@dataclass(frozen=True, slots=True)
class _Round:
    providers: tuple[str, ...]
    sent: int
    fetching: tuple[str, ...] = ()
    claimed: bool = False

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
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"lookup timeout must be > 0 seconds, got {timeout}")
        self.transport = transport
        self.ring_of = ring_of
        self.region = region
        self.timeout = timeout
        self.claim_timeout = max(timeout, claim_timeout)
        self.merge_window = max(0.0, merge_window)
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.clock = clock
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, Found]] = {}
        self._flights: dict[tuple[str, tuple[str, ...], str | None], _Flight] = {}

    def forget(self) -> None:
        """Drop cached answers (after a membership change that may have removed providers)."""
        self._cache.clear()

    async def find(self, key: str, other_regions: Sequence[str] = (), claim: str | None = None) -> Found:
        """Providers of `key`: this region first, then `other_regions` in order, on a miss only. With
        `claim` (a scope), a miss also records this node as fetching the key (see the module rules)."""
        cache_key = (key, tuple(r for r in other_regions if r != self.region))
        flight_key = (*cache_key, claim)
        hit = self._cache.get(cache_key)
        if hit is not None:
            if hit[0] > self.clock():
                return Found(hit[1].providers, hit[1].region, 0, cached=True)
            del self._cache[cache_key]
        flight = self._flights.get(flight_key)
        if flight is not None:
            await flight.done.wait()
            if flight.result is not None:
                return replace(flight.result, messages=0, shared=True)
            return await self.find(key, other_regions, claim)  # the leader was cancelled: try ourselves
        flight = self._flights[flight_key] = _Flight()
        try:
            flight.result = await self._resolve(key, cache_key[1], claim)
        finally:
            del self._flights[flight_key]
            flight.done.set()
        if flight.result.providers and not flight.result.claimed and self.cache_ttl > 0:
            if len(self._cache) >= self.cache_size:
                del self._cache[next(iter(self._cache))]
            self._cache[cache_key] = (self.clock() + self.cache_ttl, flight.result)
        return flight.result

    async def _resolve(self, key: str, other_regions: tuple[str, ...], claim: str | None) -> Found:
        messages = 0
        region_claim = claim if claim is not None and claim != CLUSTER else None
        claim_homes: tuple[str, ...] = ()
        for region in (self.region, *other_regions):
            homes = self.ring_of(region).homes(key)
            found = await self._round(key, homes, region_claim if region == self.region else None)
            messages += found.sent
            if found.providers:
                return Found(found.providers, region, messages, claimed=bool(claim_homes),
                             claim_homes=claim_homes)
            if region == self.region and region_claim is not None:
                claim_homes = tuple(h.name for h in homes)
                if found.fetching or not found.claimed or not other_regions:
                    return Found((), None, messages, fetching=found.fetching, claimed=found.claimed,
                                 claim_homes=claim_homes)
                # Claimed here, and other regions may be asked (prefer + auto): their holders still count,
                # so that auto can weigh them against upstream; this node stays the region's fetcher.
        if claim_homes:
            return Found((), None, messages, claimed=True, claim_homes=claim_homes)
        if claim == CLUSTER:
            homes = self.ring_of(CLUSTER).homes(key)
            found = await self._round(key, homes, CLUSTER)
            messages += found.sent
            return Found(found.providers, None, messages, fetching=found.fetching, claimed=found.claimed,
                         claim_homes=tuple(h.name for h in homes))
        return Found((), None, messages)

    async def in_progress(self, key: str, scope: str) -> tuple[str, ...]:
        """The nodes downloading `key` now, as the homes of `scope` know them (read only: no claim)."""
        homes = self.ring_of(scope).homes(key)
        names: dict[str, None] = {}
        with anyio.move_on_after(self.timeout * 5):
            for home in homes:
                try:
                    reply = await self.transport.lookup(home, LookupRequest((key,)))
                except PeerUnavailable:
                    continue
                names.update(dict.fromkeys(reply.fetching.get(key, ())))
        return tuple(names)

    async def _round(self, key: str, homes: Sequence[Peer], claim: str | None) -> _Round:
        """One round to `homes` in parallel. Without a claim the first answer with providers wins (plus the
        merge window); with one, the round also waits for the authoritative claim answer."""
        if not homes:
            return _Round((), 0)
        send, receive = anyio.create_memory_object_stream[tuple[int, LookupReply | None]](len(homes))
        request = LookupRequest((key,), claim)

        async def ask(index: int, home: Peer) -> None:
            reply: LookupReply | None
            try:
                reply = await self.transport.lookup(home, request)
            except PeerUnavailable:
                reply = None
            send.send_nowait((index, reply))  # never blocks: the buffer holds one answer per home

        answers: dict[int, LookupReply | None] = {}
        merged: dict[str, None] = {}
        async with anyio.create_task_group() as group:
            for index, home in enumerate(homes):
                group.start_soon(ask, index, home)
            deadline = anyio.current_time() + (self.timeout if claim is None else self.claim_timeout)
            while len(answers) < len(homes):
                got: tuple[int, LookupReply | None] | None = None
                with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                    got = await receive.receive()
                if got is None:
                    break  # the deadline passed
                index, reply = got
                answers[index] = reply
                providers = reply.providers.get(key, ()) if reply is not None else ()
                if providers:
                    if not merged:
                        deadline = min(deadline, anyio.current_time() + self.merge_window)
                    merged.update(dict.fromkeys(providers))
                if claim is not None and not merged and _authority(answers, len(homes)) is not None:
                    break
            group.cancel_scope.cancel()
        send.close()
        receive.close()
        if merged or claim is None:
            return _Round(tuple(merged), len(homes))
        authority = _authority(answers, len(homes), final=True)
        if authority is None:  # no home answered: nothing was recorded, behave as before claims
            return _Round((), len(homes))
        return _Round((), len(homes), authority.fetching.get(key, ()), key in authority.claimed)


def _authority(answers: dict[int, LookupReply | None], homes: int, final: bool = False) -> LookupReply | None:
    """The answer of the first home, in rendezvous order, that answered; None while an earlier home may
    still answer (or when none did). `final`: the round is over, a home that did not answer failed."""
    for index in range(homes):
        if index not in answers:
            if final:
                continue
            return None
        reply = answers[index]
        if reply is not None:
            return reply
    return None
