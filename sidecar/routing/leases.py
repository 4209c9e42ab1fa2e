"""The fetcher side of claims: keep this node's claims alive while its containerd downloads, drop them after.

When a lookup recorded this node as fetching a key (claimant or follower), the node must renew that lease
at the claim's homes while the download is alive, and release it when the download is over, so that
others follow only live downloads.

Rules:
- `lease_action` is the whole decision, pure: given what the ingest shows now, renew or drop.
  - The key is indexed (the image is complete and advertised as held): drop; holders take over.
  - The ingest exists and its size changed since the last look: renew. Unchanged for `stall` seconds: drop
    (the pull was cancelled or upstream stalled; followers see the same bound on their side).
  - No ingest and the blob is committed: renew for up to `commit_grace` seconds (the image's other blobs
    may still be coming, and the blob is advertised only when the image is complete), then drop.
  - No ingest and nothing committed: renew for `appear` seconds from the claim (containerd opens the
    ingest before it asks for bytes, but may be slow to start), then drop.
- `LeaseKeeper.tick` applies the decisions and sends one `fetching` message per home with every key to
  renew or drop; a home that does not answer costs nothing more (its leases run out on their own).
- Every renewal interval is short against the lease (`DEFAULT_LEASE` / `RENEW_EVERY` >= 4), so one lost
  message never kills a live claim.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio

from sidecar.containerd.ingest import APPEAR_TIMEOUT, STALL_TIMEOUT, IngestProgress
from sidecar.membership import Peer
from sidecar.routing.protocol import FetchingRequest
from sidecar.routing.transport import PeerTransport, PeerUnavailable

RENEW_EVERY = 1.0
COMMIT_GRACE = 60.0

Action = Literal["renew", "drop"]


class DownloadProbe(Protocol):
    """What this node's content store shows about one key's download."""

    def progress(self, key: str) -> IngestProgress | None:
        """The ingest's progress; None when there is no ingest (not started, committed or aborted)."""
        ...

    def committed(self, key: str) -> bool:
        """The blob is in the content store."""
        ...

    def indexed(self, key: str) -> bool:
        """The key is in the local index (advertised as held)."""
        ...


@dataclass(slots=True)
class Lease:
    scope: str
    homes: tuple[str, ...]
    claimed_at: float
    claimant: bool
    last_offset: int = -1
    last_change: float = 0.0
    committed_at: float | None = None


def lease_action(
    lease: Lease,
    progress: IngestProgress | None,
    committed: bool,
    indexed: bool,
    now: float,
    *,
    stall: float = STALL_TIMEOUT,
    appear: float = APPEAR_TIMEOUT,
    commit_grace: float = COMMIT_GRACE,
) -> Action:
    """Renew or drop one lease (updates its growth bookkeeping)."""
    if indexed:
        return "drop"
    if progress is not None:
        if progress.offset != lease.last_offset:
            lease.last_offset, lease.last_change = progress.offset, now
        return "renew" if now - max(lease.last_change, lease.claimed_at) <= stall else "drop"
    if committed:
        if lease.committed_at is None:
            lease.committed_at = now
        return "renew" if now - lease.committed_at <= commit_grace else "drop"
    return "renew" if now - lease.claimed_at <= appear else "drop"


class LeaseKeeper:
    def __init__(
        self,
        transport: PeerTransport,
        probe: DownloadProbe,
        peers: Callable[[], Mapping[str, Peer]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.transport = transport
        self.probe = probe
        self.peers = peers
        self.clock = clock
        self.leases: dict[str, Lease] = {}

    def hold(self, key: str, scope: str, homes: Iterable[str], claimant: bool) -> None:
        """This node was recorded as fetching `key` at `homes`."""
        if key not in self.leases:
            self.leases[key] = Lease(scope, tuple(homes), self.clock(), claimant)

    def holding(self, key: str) -> Lease | None:
        return self.leases.get(key)

    async def run(self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        while True:
            await sleep(RENEW_EVERY)
            await self.tick()

    async def tick(self) -> None:
        now = self.clock()
        messages: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
        for key, lease in list(self.leases.items()):
            action = lease_action(
                lease, self.probe.progress(key), self.probe.committed(key), self.probe.indexed(key), now
            )
            if action == "drop":
                del self.leases[key]
            for home in lease.homes:
                renew, done = messages.setdefault((home, lease.scope), ([], []))
                (renew if action == "renew" else done).append(key)
        peers = self.peers()
        async with anyio.create_task_group() as tg:
            for (home, scope), (renew, done) in messages.items():
                peer = peers.get(home)
                if peer is not None:
                    tg.start_soon(self._send, peer, FetchingRequest(scope, tuple(renew), tuple(done)))

    async def _send(self, peer: Peer, request: FetchingRequest) -> None:
        with contextlib.suppress(PeerUnavailable):  # the home's leases run out on their own
            await self.transport.fetching(peer, request)
