"""The holder-side request handler: who is asking, and what the index answers. No sockets, no clock.

Rules:
- The sender is the member whose InternalIP equals the request's source address (`Membership.by_address`).
  A sender outside the membership is refused with `NotAMember` (HTTP 403). In isolate mode the membership
  holds only this region, so other regions are refused by the same rule.
- Node names in a body are never trusted; the advertise schema does not even carry one.
- Lookup replies list only providers that are still members, at most `MAX_PROVIDERS` per key: those in the
  asker's zone first, then the rest, rotated per request so that popular keys spread their load.
- A lookup with a claim (share while downloading, `claims.py`): for a key with providers in a region scope
  nothing is recorded; otherwise the asker is recorded as fetching it, and learns whether it is the
  claimant or which in-progress providers to follow (same zone, then same region, then the rest). The
  scope must be the asker's own region or the cluster; a claim for another region is refused (400).
- The HTTP layer maps: `ProtocolError.status` (400 / 413), `NotAMember` -> 403; success -> 200 with the
  bytes returned here and Content-Type `protocol.CONTENT_TYPE`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from itertools import islice

from sidecar.logs import get_logger, log_event
from sidecar.membership import Membership
from sidecar.routing.claims import CLUSTER, ClaimTable
from sidecar.routing.holders import HolderStore
from sidecar.routing.protocol import (
    MAX_PROVIDERS,
    AdvertiseReply,
    AdvertiseRequest,
    FetchingReply,
    FetchingRequest,
    LookupReply,
    LookupRequest,
    ProtocolError,
    decode_advertise,
    decode_fetching,
    decode_lookup,
    encode_advertise_reply,
    encode_fetching_reply,
    encode_lookup_reply,
)

_log = get_logger("routing")


class NotAMember(PermissionError):
    """The request came from an address that is no known node's InternalIP (answer 403)."""

    status = 403


class IndexService:
    def __init__(self, store: HolderStore, membership: Membership, claims: ClaimTable | None = None) -> None:
        self.store = store
        self.membership = membership
        self.claims = claims or ClaimTable()
        self._rotation = 0
        self._was_bound_hit = False

    def update_membership(self, membership: Membership) -> None:
        self.membership = membership

    def _sender(self, source_address: str) -> tuple[str, str]:
        peer = self.membership.by_address(source_address)
        if peer is None:
            raise NotAMember(f"{source_address} is not the InternalIP of a known node")
        return peer.name, peer.zone

    # --- message level (the in-process transport calls these directly) ---

    def advertise(self, source_address: str, request: AdvertiseRequest, now: float) -> AdvertiseReply:
        provider, _ = self._sender(source_address)
        outcome = self.store.advertise(provider, request.add, request.remove, now)
        if self.store.bound_hit != self._was_bound_hit:
            self._was_bound_hit = self.store.bound_hit
            log_event(
                _log,
                "holder_bound_hit" if self.store.bound_hit else "holder_bound_cleared",
                logging.WARNING if self.store.bound_hit else logging.INFO,
                entries=self.store.entries,
                max_entries=self.store.max_entries,
                refused_total=self.store.refused_total,
            )
        return AdvertiseReply(outcome.stored, outcome.refused)

    def lookup(self, source_address: str, request: LookupRequest, now: float) -> LookupReply:
        asker, zone = self._sender(source_address)
        scope = request.claim
        if scope is not None:
            self._check_scope(asker, scope)
        self._rotation += 1
        found: dict[str, tuple[str, ...]] = {}
        fetching: dict[str, tuple[str, ...]] = {}
        claimed: list[str] = []
        for key in request.keys:
            providers = self._rank(self.store.lookup(key, now), zone)
            if providers:
                found[key] = providers
            if scope is None:
                if not providers:  # a plain lookup (lokal where) also sees downloads in progress
                    names = self._in_progress(asker, key, now)
                    if names:
                        fetching[key] = names
                continue
            if providers and scope != CLUSTER:
                continue
            answer = self.claims.claim(scope, key, asker, now, self._nearness(asker))
            if answer.claimant:
                claimed.append(key)
            else:
                names = tuple(n for n in answer.fetching if n in self.membership.peers)
                if names:
                    fetching[key] = names
        return LookupReply(found, fetching, tuple(claimed))

    def fetching(self, source_address: str, request: FetchingRequest, now: float) -> FetchingReply:
        """The sender still fetches `renew` (its download grows) and is done with `done`."""
        node, _ = self._sender(source_address)
        self._check_scope(node, request.scope)
        self.claims.release(request.scope, request.done, node)
        return FetchingReply(self.claims.renew(request.scope, request.renew, node, now))

    def _in_progress(self, asker: str, key: str, now: float) -> tuple[str, ...]:
        region = self.membership.peers[asker].region
        names = {**self.claims.fetching(region, key, now), **self.claims.fetching(CLUSTER, key, now)}
        return tuple(n for n in names if n in self.membership.peers and n != asker)[:MAX_PROVIDERS]

    def _check_scope(self, node: str, scope: str) -> None:
        peer = self.membership.peers[node]
        if scope not in (CLUSTER, peer.region):
            raise ProtocolError(f"claim scope {scope[:63]!r} is neither the sender's region nor the cluster")

    def _nearness(self, asker: str) -> Callable[[str], int]:
        peers = self.membership.peers
        me = peers[asker]

        def nearness(name: str) -> int:
            peer = peers.get(name)
            if peer is None:
                return 3
            if peer.region == me.region:
                return 0 if me.zone and peer.zone == me.zone else 1
            return 2

        return nearness

    def _rank(self, providers: tuple[str, ...], zone: str) -> tuple[str, ...]:
        peers = self.membership.peers
        if len(providers) > MAX_PROVIDERS:
            start = self._rotation % len(providers)
            providers = providers[start:] + providers[:start]
        near: list[str] = []
        far: list[str] = []
        for name in providers:
            peer = peers.get(name)
            if peer is None:
                continue  # left the cluster; its entries fade out with their expiry
            (near if zone and peer.zone == zone else far).append(name)
            if len(near) >= MAX_PROVIDERS:
                break
        return tuple(islice((*near, *far), MAX_PROVIDERS))

    # --- byte level (the HTTP layer calls these) ---

    def handle_advertise(self, source_address: str, body: bytes, now: float) -> bytes:
        """Raises ProtocolError (400/413) or NotAMember (403)."""
        self._sender(source_address)  # refuse non-members before parsing their bytes
        return encode_advertise_reply(self.advertise(source_address, decode_advertise(body), now))

    def handle_lookup(self, source_address: str, body: bytes, now: float) -> bytes:
        """Raises ProtocolError (400/413) or NotAMember (403)."""
        self._sender(source_address)
        return encode_lookup_reply(self.lookup(source_address, decode_lookup(body), now))

    def handle_fetching(self, source_address: str, body: bytes, now: float) -> bytes:
        """Raises ProtocolError (400/413) or NotAMember (403)."""
        self._sender(source_address)
        return encode_fetching_reply(self.fetching(source_address, decode_fetching(body), now))
