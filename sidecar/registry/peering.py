"""`Peering`: the handler's way to peers, which exist only once the first membership is known.

`lokal serve` listens (and serves its own store) before the Kubernetes API has answered its first Node
list: the API may be slow or down, and the probes must pass meanwhile. Until then a miss says that peers
are not known yet, and the peer protocol answers 503. The composition root connects the relay, the router
and the index endpoint once, in one place, when the first membership arrives; nothing else changes them.
With `--discovery none` nothing is ever connected: a miss says there is no discovery.

Rules:
- One state change only: not connected -> connected (`connect` twice is a programming error).
"""

from __future__ import annotations

import anyio

from sidecar.http.messages import Request, Response
from sidecar.oci import Digest, ErrorCode, oci_error
from sidecar.registry.handler import PeerHandler, PeersNotKnownYet, Relay
from sidecar.registry.pulls import PullRecord
from sidecar.registry.routes import BlobRequest, ManifestRequest
from sidecar.routing.router import Router


class Peering(Relay):
    def __init__(self, discovery: bool) -> None:
        self.relay: Relay = PeersNotKnownYet() if discovery else Relay()
        self.router: Router | None = None
        self._endpoint: PeerHandler | None = None
        self._connected = anyio.Event()

    @property
    def connected(self) -> bool:
        return self.router is not None

    def connect(self, router: Router, relay: Relay, endpoint: PeerHandler | None) -> None:
        """The first membership is known: relay through `relay`, answer peers with `endpoint`."""
        if self.router is not None:
            raise RuntimeError("peering is connected once")
        self.router, self.relay, self._endpoint = router, relay, endpoint
        self._connected.set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def fetch(
        self, plan: BlobRequest | ManifestRequest, digest: Digest, byte_range: str | None, record: PullRecord
    ) -> Response | None:
        return await self.relay.fetch(plan, digest, byte_range, record)

    async def fetch_tag(self, plan: ManifestRequest, tag: str, record: PullRecord) -> Response | None:
        return await self.relay.fetch_tag(plan, tag, record)

    async def handle(self, request: Request, path: str) -> Response:
        """The peer protocol (`/_lokal/v1/...`): 503 until the index exists."""
        if self._endpoint is None:
            return oci_error(503, ErrorCode.UNSUPPORTED, "peers not known yet: no index on this node yet")
        return await self._endpoint(request, path)
