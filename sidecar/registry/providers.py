"""Which holders of a digest the relay asks, in what order, and why the others are not asked. Pure.

The relay uses it on every miss of the local store; `lokal where` uses it to explain that choice, so the
explanation can never drift from the behaviour.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from sidecar.membership import Membership, Peer
from sidecar.registry.pulls import Miss
from sidecar.topology.policy import PeerStats, RankedProvider, TopologyPolicy, eligibility, rank_providers

MAX_PROVIDERS_TRIED = 4


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    ranked: tuple[RankedProvider, ...]  # every allowed holder, best first (the relay tries the first few)
    refused: tuple[tuple[Peer, str], ...]  # holders not asked, with the reason
    strangers: tuple[str, ...]  # holders that are not (or no longer) members
    reason: str  # why nobody can be asked; "" when someone can
    busy: int = 0  # holders skipped because they already serve the per-peer maximum to this node
    miss: Miss | None = None  # the category of `reason`; None when someone can be asked

    @property
    def to_try(self) -> tuple[RankedProvider, ...]:
        return self.ranked[:MAX_PROVIDERS_TRIED]


def choose_providers(
    me: Peer,
    holders: Sequence[str],
    membership: Membership,
    stats: Mapping[str, PeerStats],
    policy: TopologyPolicy,
    *,
    now: float,
    quarantined: Collection[str] = (),
    per_peer_cap: int | None = None,
    scope: str = "this region",
) -> ProviderChoice:
    candidates = [membership.peers[n] for n in holders if n in membership.peers and n != me.name]
    strangers = tuple(n for n in holders if n not in membership.peers)
    if not candidates:
        why = "only nodes outside the membership hold it" if strangers else f"no peer in {scope} holds it"
        return ProviderChoice((), (), strangers, why, miss=Miss.NOT_FOUND)
    refused: list[tuple[Peer, str]] = [
        (peer, "quarantined: recently sent bytes that failed their digest")
        for peer in candidates
        if peer.name in quarantined
    ]
    trusted = [peer for peer in candidates if peer.name not in quarantined]
    ranked = rank_providers(me, trusted, stats, policy, now=now)
    allowed = {provider.peer.name for provider in ranked}
    seen = {peer.name for peer, _ in refused}
    for peer in trusted:
        if peer.name not in allowed and peer.name not in seen:
            seen.add(peer.name)
            refused.append((peer, eligibility(me, peer, policy).reason))
    busy = 0
    if per_peer_cap is not None:
        free = [p for p in ranked if p.peer.name not in stats or stats[p.peer.name].in_flight < per_peer_cap]
        busy = len(ranked) - len(free)
        refused += [(p.peer, f"already serves {per_peer_cap} relays to this node") for p in ranked
                    if p not in free]
        ranked = free
    if ranked:
        return ProviderChoice(tuple(ranked), tuple(refused), strangers, "", busy)
    shunned = [p for p in candidates if p.name in quarantined and eligibility(me, p, policy).allowed]
    miss, reason = _none_reason(refused, shunned, busy, per_peer_cap)
    return ProviderChoice((), tuple(refused), strangers, reason, busy, miss)


def _none_reason(
    refused: list[tuple[Peer, str]],
    shunned: list[Peer],
    busy: int,
    per_peer_cap: int | None,
) -> tuple[Miss, str]:
    """Why no holder can be asked. A limit (cap, quarantine) outranks the policy: without the limit, a
    holder the policy allows would have been asked. `shunned`: quarantined holders the policy allows."""
    if busy:
        return Miss.PER_PEER_CAP, f"every allowed holder already serves {per_peer_cap} relays to this node"
    if shunned:
        return Miss.QUARANTINED, "every allowed holder recently sent corrupt data (quarantined)"
    return Miss.FORBIDDEN, "forbidden by policy: " + join_reasons(why for _, why in refused)


def join_reasons(reasons: Iterable[str]) -> str:
    """Several holders' reasons as one text, each rule said once: `cross-region never: region 'b'` and
    `cross-region never: region 'c'` become `cross-region never: region 'b', region 'c'`."""
    details: dict[str, list[str]] = {}
    for reason in sorted(set(reasons)):
        rule, sep, detail = reason.partition(": ")
        details.setdefault(rule, [])
        if sep:
            details[rule].append(detail)
    return "; ".join(f"{rule}: {', '.join(found)}" if found else rule for rule, found in details.items())
