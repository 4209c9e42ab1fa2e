"""`PeerTransport` over HTTP: the protocol's encodings POSTed to `http://<InternalIP>:<port>/_lokal/v1/`.

Every failure (refused, reset, timeout, non-200, undecodable) becomes `PeerUnavailable`, so the lookup
and the advertiser never see transport details.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sidecar.http.client import PeerClient, PeerHttpError
from sidecar.membership import Peer
from sidecar.routing.protocol import (
    ADVERTISE_PATH,
    FETCHING_PATH,
    LOOKUP_PATH,
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
from sidecar.routing.service import IndexService
from sidecar.routing.transport import PeerUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class LocalIndex:
    """This node's own index service: a home node that is this node is asked in-process, not over HTTP
    (about a third of a miss's CPU went to talking to itself)."""

    name: str
    address: str
    service: IndexService
    clock: Callable[[], float] = time.monotonic


class HttpPeerTransport:
    def __init__(
        self,
        client: PeerClient,
        port: int,
        *,
        lookup_timeout: float = 0.5,
        advertise_timeout: float = 10.0,
        extra_headers: Callable[[], list[tuple[str, str]]] = list,
        local: LocalIndex | None = None,
    ) -> None:
        self.client = client
        self.port = port
        self.lookup_timeout = lookup_timeout
        self.advertise_timeout = advertise_timeout
        self.extra_headers = extra_headers
        self.local = local

    async def advertise(self, peer: Peer, request: AdvertiseRequest) -> AdvertiseReply:
        local = self.local
        if local is not None and peer.name == local.name:
            return local.service.advertise(local.address, request, local.clock())
        body = await self._post(peer, ADVERTISE_PATH, encode_advertise(request), self.advertise_timeout)
        return _decoded(peer, decode_advertise_reply, body)

    async def lookup(self, peer: Peer, request: LookupRequest) -> LookupReply:
        local = self.local
        if local is not None and peer.name == local.name:
            return local.service.lookup(local.address, request, local.clock())
        body = await self._post(peer, LOOKUP_PATH, encode_lookup(request), self.lookup_timeout)
        return _decoded(peer, decode_lookup_reply, body)

    async def fetching(self, peer: Peer, request: FetchingRequest) -> FetchingReply:
        local = self.local
        if local is not None and peer.name == local.name:
            return local.service.fetching(local.address, request, local.clock())
        body = await self._post(peer, FETCHING_PATH, encode_fetching(request), self.lookup_timeout * 4)
        return _decoded(peer, decode_fetching_reply, body)

    async def _post(self, peer: Peer, path: str, body: bytes, limit_s: float) -> bytes:
        if not peer.address:
            raise PeerUnavailable(f"{peer.name} has no address")
        try:
            response = await self.client.post(
                peer.address, self.port, path, body, self.extra_headers(),
                connect_timeout=min(limit_s, 2.0), total_timeout=limit_s,
            )
        except PeerHttpError as exc:
            raise PeerUnavailable(f"{peer.name} ({peer.address}): {exc}") from exc
        if response.status != 200:
            raise PeerUnavailable(f"{peer.name} answered {response.status}")
        return response.body


def _decoded(peer: Peer, decode: Callable[[bytes], T], body: bytes) -> T:
    try:
        return decode(body)
    except ProtocolError as exc:
        raise PeerUnavailable(f"{peer.name} sent an invalid reply: {exc}") from exc
