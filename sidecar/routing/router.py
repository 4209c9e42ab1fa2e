"""The `Router` seam the registry depends on, the one-hop implementation, and an in-memory one for tests.

Rules:
- The registry sees only `Router`: ready, lookup, advertise, withdraw. Providers come back as node names;
  ranking them (zone, region, policy) is the registry's job with the topology policy.
- The composition root (`sidecar.serve`) drives the life cycle every `Router` has: `start`, `run`,
  `reconcile` (make the advertised set equal the store's keys) and `membership_changed`.
- `OneHopRouter` is one node's whole index: its holder store, claim table and service (the HTTP layer
  serves `router.service`), its advertiser, its lookup and its lease keeper (claims this node holds).
  The settings come from one `RoutingSettings`.
- `find(key, claim=scope)` records this node as fetching the key where nobody holds it (share while
  downloading); only a router with a `DownloadProbe` (it can tell whether its download is alive) claims.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import anyio

from sidecar.membership import Membership, Peer
from sidecar.routing.advertiser import DEFAULT_INTERVAL, Advertiser, SendReport
from sidecar.routing.claims import CLUSTER, DEFAULT_FAN_OUT, DEFAULT_LEASE, ClaimTable
from sidecar.routing.holders import DEFAULT_MAX_ENTRIES, HolderStore
from sidecar.routing.leases import DownloadProbe, LeaseKeeper
from sidecar.routing.lookup import DEFAULT_CACHE_TTL, DEFAULT_MERGE_WINDOW, DEFAULT_TIMEOUT, Found, Lookup
from sidecar.routing.placement import DEFAULT_K, Ring
from sidecar.routing.protocol import MAX_KEYS
from sidecar.routing.service import IndexService
from sidecar.routing.transport import PeerTransport


class Router(Protocol):
    def ready(self) -> bool:
        """True once this node can answer lookups and has advertised its content."""
        ...

    async def lookup(self, key: str, other_regions: Sequence[str] = ()) -> tuple[str, ...]:
        """Node names that hold `key`: this region first, then `other_regions` in order on a miss."""
        ...

    async def find(self, key: str, other_regions: Sequence[str] = (), claim: str | None = None) -> Found:
        """`lookup` with the details; with `claim` (a scope) also claim the key where nobody holds it."""
        ...

    async def in_progress(self, key: str, scope: str) -> tuple[str, ...]:
        """Nodes downloading `key` right now in `scope` (for `lokal where`; records nothing)."""
        ...

    async def advertise(self, keys: Iterable[str]) -> None:
        """This node now holds `keys`."""
        ...

    async def withdraw(self, keys: Iterable[str]) -> None:
        """This node no longer holds `keys`."""
        ...

    async def start(self, keys: Iterable[str]) -> object:
        """Advertise every local key once; `ready()` afterwards."""
        ...

    async def reconcile(self, keys: Iterable[str]) -> None:
        """Make the advertised set equal `keys`: advertise what is new, withdraw what is gone."""
        ...

    async def run(self) -> None:
        """Periodic upkeep (re-advertise, expiry) until cancelled."""
        ...

    async def membership_changed(
        self, membership: Membership, *, changed: Iterable[str] | None = None
    ) -> object:
        """Adopt a new membership snapshot; `changed`, when given, names every node that differs from the
        snapshot adopted last (so the router may update instead of rebuild)."""
        ...

    def holders(self) -> HolderStore | None:
        """The entries other nodes advertised here (for status and metrics); None if none are kept."""
        ...


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    k: int = DEFAULT_K
    advertise_interval: float = DEFAULT_INTERVAL  # --advertise-interval
    holder_ttl_intervals: float = 3.0  # holders keep an entry this many intervals
    max_entries: int = DEFAULT_MAX_ENTRIES  # holder memory bound
    lookup_timeout: float = DEFAULT_TIMEOUT
    merge_window: float = DEFAULT_MERGE_WINDOW
    cache_ttl: float = DEFAULT_CACHE_TTL
    max_batch_keys: int = MAX_KEYS
    claim_lease: float = DEFAULT_LEASE  # seconds a claim lives without a renewal
    claim_fan_out: int = DEFAULT_FAN_OUT  # followers handed to one in-progress provider

    def __post_init__(self) -> None:
        for name in ("advertise_interval", "lookup_timeout", "holder_ttl_intervals"):
            if not getattr(self, name) > 0:
                raise ValueError(f"routing setting {name} must be > 0, got {getattr(self, name)}")
        if self.k < 1 or self.max_entries < 1 or self.max_batch_keys < 1 or self.claim_fan_out < 1:
            raise ValueError("routing settings k, max_entries, max_batch_keys and claim_fan_out must be >= 1")
        if not self.claim_lease > 0:
            raise ValueError(f"routing setting claim_lease must be > 0, got {self.claim_lease}")


def index_service(membership: Membership, settings: RoutingSettings) -> IndexService:
    """The holder side of one node's index: what peers advertise to it and look up on it."""
    ttl = settings.advertise_interval * settings.holder_ttl_intervals
    claims = ClaimTable(settings.claim_lease, settings.claim_fan_out)
    return IndexService(HolderStore(ttl, settings.max_entries), membership, claims)


class RingSet:
    """The rings of one membership snapshot, built on first use. Share one among routers of a snapshot."""

    def __init__(self, membership: Membership, k: int = DEFAULT_K, memo_size: int = 65_536) -> None:
        self.membership = membership
        self.k = k
        self.memo_size = memo_size
        self._rings: dict[str, Ring[Peer]] = {}

    def ring(self, region: str) -> Ring[Peer]:
        """The ring of `region`, or of the whole cluster for `CLUSTER` (the scope of cross-region claims)."""
        ring = self._rings.get(region)
        if ring is None:
            if region == CLUSTER:
                members = tuple(p for p in self.membership.peers.values() if p.ready and p.address)
            else:
                members = self.membership.region_ring(region)
            ring = self._rings[region] = Ring(members, self.k, self.memo_size)
        return ring

    def updated(self, membership: Membership, changed: Iterable[str]) -> RingSet:
        """The rings of `membership`, a later snapshot in which only the nodes `changed` differ: every ring
        built so far is carried over with just those nodes moved (`Ring.updated`)."""
        rings = RingSet(membership, self.k, self.memo_size)
        names = tuple(changed)
        peers = membership.peers
        for scope, ring in self._rings.items():
            upserts: list[Peer] = []
            removed: list[str] = []
            for name in names:
                peer = peers.get(name)
                if peer is not None and peer.ready and peer.address and scope in (CLUSTER, peer.region):
                    upserts.append(peer)
                elif name in ring:
                    removed.append(name)
            rings._rings[scope] = ring.updated(upserts, removed) if upserts or removed else ring
        return rings


class OneHopRouter:
    def __init__(
        self,
        membership: Membership,
        transport: PeerTransport,
        settings: RoutingSettings | None = None,
        *,
        rings: RingSet | None = None,
        clock: Callable[[], float] = time.monotonic,
        probe: DownloadProbe | None = None,
        service: IndexService | None = None,
    ) -> None:
        self.settings = settings or RoutingSettings()
        me = membership.me
        if me is None:
            raise ValueError(f"this node {membership.self_name!r} is not in the membership")
        self.region = me.region
        self.clock = clock
        self.rings = rings or RingSet(membership, self.settings.k)
        # The service is made first when something else (the in-process LocalIndex) needs it too.
        self.service = service or index_service(membership, self.settings)
        self.advertiser = Advertiser(
            transport, self.rings.ring(self.region), max_keys=self.settings.max_batch_keys
        )
        self.finder = Lookup(
            transport,
            self._ring,  # late-bound: membership changes replace self.rings
            self.region,
            timeout=self.settings.lookup_timeout,
            merge_window=self.settings.merge_window,
            cache_ttl=self.settings.cache_ttl,
            clock=clock,
        )
        self.leases = (
            LeaseKeeper(transport, probe, lambda: self.service.membership.peers, clock) if probe else None
        )
        self._ready = False

    def _ring(self, region: str) -> Ring[Peer]:
        return self.rings.ring(region)

    def ready(self) -> bool:
        return self._ready

    async def start(self, keys: Iterable[str]) -> SendReport:
        """The startup advertise of every local key; the router is ready afterwards."""
        await self.advertiser.load(keys)
        report = await self.advertiser.advertise_all()
        self._ready = True
        return report

    async def reconcile(self, keys: Iterable[str]) -> None:
        wanted = frozenset(keys)
        held = frozenset(self.advertiser.keys)
        await self.advertiser.removed(held - wanted)
        await self.advertiser.added(wanted - held)

    def holders(self) -> HolderStore:
        return self.service.store

    async def run(self, sleep: Callable[[float], Awaitable[None]] = anyio.sleep) -> None:
        """Re-advertise and sweep expired holder entries every interval, and keep this node's claims
        alive, until cancelled."""
        if self.leases is not None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.leases.run, sleep)
                tg.start_soon(self._advertise_periodically, sleep)
        else:
            await self._advertise_periodically(sleep)

    async def _advertise_periodically(self, sleep: Callable[[float], Awaitable[None]]) -> None:
        while True:
            await sleep(self.settings.advertise_interval)
            self.service.store.expire(self.clock())
            self.service.claims.expire(self.clock())
            await self.advertiser.advertise_all()

    async def membership_changed(
        self, membership: Membership, rings: RingSet | None = None, changed: Iterable[str] | None = None
    ) -> SendReport:
        """Adopt a new snapshot and push keys to the nodes that became their homes. With `changed` (the
        nodes that differ from the snapshot adopted last) the rings are updated, not rebuilt."""
        if rings is None and changed is not None and self.rings.membership.self_name == membership.self_name:
            rings = self.rings.updated(membership, changed)
        self.rings = rings or RingSet(membership, self.settings.k)
        self.service.update_membership(membership)
        self.finder.forget()
        return await self.advertiser.membership_changed(self.rings.ring(self.region))

    async def find(self, key: str, other_regions: Sequence[str] = (), claim: str | None = None) -> Found:
        if self.leases is None:
            claim = None  # a claim nobody renews would make others follow a download that may not exist
        found = await self.finder.find(key, other_regions, claim)
        if claim is not None and found.claim_homes and not found.shared and self.leases is not None:
            self.leases.hold(key, claim, found.claim_homes, found.claimed)
        return found

    async def lookup(self, key: str, other_regions: Sequence[str] = ()) -> tuple[str, ...]:
        return (await self.finder.find(key, other_regions)).providers

    async def in_progress(self, key: str, scope: str) -> tuple[str, ...]:
        """Nodes downloading `key` right now in `scope` (for `lokal where`; records nothing)."""
        return await self.finder.in_progress(key, scope)

    async def advertise(self, keys: Iterable[str]) -> None:
        await self.advertiser.added(keys)

    async def withdraw(self, keys: Iterable[str]) -> None:
        await self.advertiser.removed(keys)


class InMemoryIndex:
    """A shared dictionary index for tests of other parts: key -> {node name: region}."""

    def __init__(self) -> None:
        self.holders: dict[str, dict[str, str]] = {}

    def router(self, node: str, region: str = "") -> InMemoryRouter:
        return InMemoryRouter(self, node, region)


class InMemoryRouter:
    """A `Router` over an `InMemoryIndex`: same answers as the real one, no network, always ready."""

    def __init__(self, index: InMemoryIndex, node: str, region: str = "") -> None:
        self.index = index
        self.node = node
        self.region = region

    def ready(self) -> bool:
        return True

    async def find(self, key: str, other_regions: Sequence[str] = (), claim: str | None = None) -> Found:
        providers = await self.lookup(key, other_regions)
        return Found(providers, self.region if providers else None)

    async def in_progress(self, key: str, scope: str) -> tuple[str, ...]:
        return ()  # nobody claims downloads in the in-memory index

    def advertised(self) -> frozenset[str]:
        return frozenset(k for k, holders in self.index.holders.items() if self.node in holders)

    async def start(self, keys: Iterable[str]) -> None:
        await self.advertise(keys)

    async def reconcile(self, keys: Iterable[str]) -> None:
        wanted = frozenset(keys)
        held = self.advertised()
        await self.withdraw(held - wanted)
        await self.advertise(wanted - held)

    async def run(self) -> None:
        await anyio.sleep_forever()

    async def membership_changed(
        self, membership: Membership, *, changed: Iterable[str] | None = None
    ) -> None:
        pass

    def holders(self) -> None:
        return None

    async def lookup(self, key: str, other_regions: Sequence[str] = ()) -> tuple[str, ...]:
        holders = self.index.holders.get(key, {})
        for region in (self.region, *other_regions):
            found = tuple(sorted(n for n, r in holders.items() if r == region))
            if found:
                return found
        return ()

    async def advertise(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.index.holders.setdefault(key, {})[self.node] = self.region

    async def withdraw(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.index.holders.get(key, {}).pop(self.node, None)
