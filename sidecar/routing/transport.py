"""The transport seam: how the routing code talks to other nodes' index services.

Rules:
- The routing logic (advertiser, lookup) depends only on `PeerTransport`. The HTTP implementation (the
  peer client in `sidecar/http/`, wired by the lead) POSTs the `protocol` encodings to
  `http://<peer.address>:<port>/_lokal/v1/...`; `InProcessNetwork` below is for tests and the simulation.
- Every failure to get a valid answer (refused, reset, timeout, non-200 status, undecodable reply) is
  raised as `PeerUnavailable`; callers never see transport-specific errors.
- A transport sends from one node: the receiver identifies the sender by that node's source address.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Protocol

import anyio

from sidecar.membership import Peer
from sidecar.routing.protocol import (
    AdvertiseReply,
    AdvertiseRequest,
    FetchingReply,
    FetchingRequest,
    LookupReply,
    LookupRequest,
    ProtocolError,
    decode_advertise_reply,
    decode_fetching_reply,
    decode_lookup_reply,
    encode_advertise,
    encode_fetching,
    encode_lookup,
)
from sidecar.routing.service import IndexService, NotAMember


class PeerUnavailable(Exception):
    """The peer gave no valid answer (down, refused, timed out, or answered with an error)."""


class PeerTransport(Protocol):
    async def advertise(self, peer: Peer, request: AdvertiseRequest) -> AdvertiseReply:
        """POST /_lokal/v1/advertise to `peer`."""
        ...

    async def lookup(self, peer: Peer, request: LookupRequest) -> LookupReply:
        """POST /_lokal/v1/lookup to `peer`."""
        ...

    async def fetching(self, peer: Peer, request: FetchingRequest) -> FetchingReply:
        """POST /_lokal/v1/fetching to `peer`."""
        ...


class InProcessNetwork:
    """Index services reachable by address, inside one process.

    `codec=True` round-trips every message through the real encode/decode (tests); the simulation turns
    it off for speed. `silent` addresses never answer (a dead node: the caller's timeout must fire);
    `down` addresses refuse at once. `messages` counts requests by endpoint and outcome.
    """

    def __init__(self, now: Callable[[], float], codec: bool = True) -> None:
        self.services: dict[str, IndexService] = {}
        self.now = now
        self.codec = codec
        self.down: set[str] = set()
        self.silent: set[str] = set()
        self.delay: dict[str, float] = {}  # address -> seconds before answering
        self.messages: Counter[str] = Counter()

    def attach(self, address: str, service: IndexService) -> None:
        self.services[address] = service

    def detach(self, address: str) -> None:
        self.services.pop(address, None)

    def transport(self, source_address: str) -> InProcessTransport:
        return InProcessTransport(self, source_address)


class InProcessTransport:
    def __init__(self, network: InProcessNetwork, source_address: str) -> None:
        self.network = network
        self.source_address = source_address

    async def _reach(self, peer: Peer, endpoint: str) -> IndexService:
        net = self.network
        net.messages[endpoint] += 1
        address = peer.address or ""
        if address in net.silent:
            await anyio.sleep(math.inf)
        delay = net.delay.get(address)
        if delay:
            await anyio.sleep(delay)
        service = net.services.get(address)
        if service is None or address in net.down:
            net.messages[endpoint + "_failed"] += 1
            raise PeerUnavailable(f"{peer.name} ({address}) is not reachable")
        return service

    async def advertise(self, peer: Peer, request: AdvertiseRequest) -> AdvertiseReply:
        service = await self._reach(peer, "advertise")
        try:
            if not self.network.codec:
                return service.advertise(self.source_address, request, self.network.now())
            body = service.handle_advertise(
                self.source_address, encode_advertise(request), self.network.now()
            )
            return decode_advertise_reply(body)
        except (ProtocolError, NotAMember) as exc:
            raise PeerUnavailable(f"{peer.name} answered {exc.status}: {exc}") from exc

    async def lookup(self, peer: Peer, request: LookupRequest) -> LookupReply:
        service = await self._reach(peer, "lookup")
        try:
            if not self.network.codec:
                return service.lookup(self.source_address, request, self.network.now())
            body = service.handle_lookup(self.source_address, encode_lookup(request), self.network.now())
            return decode_lookup_reply(body)
        except (ProtocolError, NotAMember) as exc:
            raise PeerUnavailable(f"{peer.name} answered {exc.status}: {exc}") from exc

    async def fetching(self, peer: Peer, request: FetchingRequest) -> FetchingReply:
        service = await self._reach(peer, "fetching")
        try:
            if not self.network.codec:
                return service.fetching(self.source_address, request, self.network.now())
            body = service.handle_fetching(
                self.source_address, encode_fetching(request), self.network.now()
            )
            return decode_fetching_reply(body)
        except (ProtocolError, NotAMember) as exc:
            raise PeerUnavailable(f"{peer.name} answered {exc.status}: {exc}") from exc
