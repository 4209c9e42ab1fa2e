"""What `lokal status` shows, gathered from a running node: who it is and its policy, its peers with their
health, the index, containerd, warnings, and requests since start.

Rules:
- `node_state` is the one reading of live state; the metrics collector and this report both use it, so
  `lokal status` and `/metrics` never disagree.
- `peer_rows` is pure: the membership, the peer book's stats and the policy in, rows out.
- Nothing secret: node names, addresses, labels and counts only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.debug.crossing import crossing_state
from sidecar.debug.view import NodeView
from sidecar.debug.warnings import runtime_warnings, settings_warnings
from sidecar.membership import Membership, Peer, TopologyLabels
from sidecar.metrics.state import NodeState, peer_state
from sidecar.metrics.tally import PullTally
from sidecar.topology.policy import PeerStats, TopologyPolicy, eligibility
from sidecar.topology.validation import policy_warnings, unlabelled_node_warning


def all_warnings(node: NodeView) -> list[str]:
    """Startup warnings (settings, containerd's CRI config) and the conditions that hold right now."""
    membership = node.current_membership()
    me = membership.me if membership else None
    holders = node.router.holders() if node.router is not None else None
    health = node.store.health()
    return [
        *policy_warnings(node.policy),
        *settings_warnings(node.settings),
        *node.config_warnings,
        *health.warnings,  # content root, namespace (containerd.diagnostics)
        *runtime_warnings(
            containerd_connected=health.connected,
            absent_blobs=health.absent_blobs,
            index_bound_hit=bool(holders is not None and holders.bound_hit),
            membership_known=me is not None,
        ),
        *([] if me is None else _unlabelled(node, me)),
    ]


def _unlabelled(node: NodeView, me: Peer) -> list[str]:
    labels = TopologyLabels(node.settings.region_label, node.settings.zone_label)
    warning = unlabelled_node_warning(node.policy.mode, me, labels)
    return [warning] if warning is not None else []


def node_state(node: NodeView) -> NodeState:
    membership = node.current_membership()
    me = membership.me if membership else None
    holders = node.router.holders() if node.router is not None else None
    health = node.store.health()
    return NodeState(
        node=me.name if me else (node.settings.node_name or "local"),
        region=me.region if me else "",
        zone=me.zone if me else "",
        mode=node.policy.mode.value,
        cross_region=node.policy.cross_region.value,
        peers=[p for p in membership.peers.values() if not p.is_self and p.name != membership.self_name]
        if membership else [],
        index_entries=holders.entries if holders is not None else 0,
        index_keys=holders.keys if holders is not None else 0,
        index_bound_hit=bool(holders is not None and holders.bound_hit),
        index_refused=holders.refused_total if holders is not None else 0,
        keys_advertised=len(node.store.keys()),
        containerd_connected=health.connected,
        absent_blobs=health.absent_blobs,
        peers_marked_bad=node.book.marked_bad,
        config_warnings=len(all_warnings(node)),
        share=share_counts(node),
    )


def share_counts(node: NodeView) -> dict[str, int]:
    """Share-while-downloading counters: the relay's claims, follows and fallbacks; the home side's lease
    expiries; the leases this node keeps alive."""
    counts = dict(getattr(node.relay, "counts", {}))
    claims = getattr(getattr(node.router, "service", None), "claims", None)
    if claims is not None:
        counts["lease_expiries"] = claims.expired_total
    leases = getattr(node.router, "leases", None)
    if leases is not None:
        counts["leases"] = len(leases.leases)
    return counts


def peer_rows(
    me: Peer, membership: Membership, stats: Mapping[str, PeerStats], policy: TopologyPolicy, now: float
) -> list[dict[str, Any]]:
    """The other nodes, by region, zone and name, with health and what the policy says about them."""
    rows = []
    others = [p for p in membership.peers.values() if p.name != me.name]
    for peer in sorted(others, key=lambda p: (p.region, p.zone, p.name)):
        stat = stats.get(peer.name, PeerStats())
        verdict = eligibility(me, peer, policy)
        health = peer_state(peer)
        failed_ago = None if stat.last_failure_at is None else now - stat.last_failure_at
        if health == "ready" and failed_ago is not None and failed_ago < policy.failure_memory_s:
            health = f"failed {failed_ago:.0f}s ago"
        rows.append({
            "name": peer.name,
            "region": peer.region,
            "zone": peer.zone,
            "address": peer.address,
            "health": health,
            "tier": verdict.tier.value,
            "eligible": verdict.allowed,
            "policy": verdict.reason,
            "throughput_mbps": None if stat.throughput_bps is None else round(stat.throughput_bps / 1e6, 1),
            "in_flight": stat.in_flight,
        })
    return rows


def status_report(node: NodeView, tally: PullTally, now: float) -> dict[str, Any]:
    membership = node.current_membership()
    me = membership.me if membership else None
    state = node_state(node)
    policy = node.policy
    policy_text = policy.mode.value
    if policy.mode.value == "prefer":
        policy_text += f", cross-region {policy.cross_region.value}"
    router = node.router
    return {
        "node": {"name": state.node, "region": state.region, "zone": state.zone,
                 "address": me.address if me else None},
        "mode": policy.mode.value,
        "cross_region": policy.cross_region.value,
        "policy": policy_text,
        "discovery": node.settings.discovery.value,
        "membership_known": me is not None,
        "peers": peer_rows(me, membership, node.book.snapshot(), policy, now) if me and membership else [],
        "index": {
            "entries_held": state.index_entries,
            "keys_held": state.index_keys,
            "bound_hit": state.index_bound_hit,
            "refused": state.index_refused,
            "keys_advertised": state.keys_advertised,
            "ready": bool(router.ready()) if router is not None else None,
        },
        "containerd": {
            "state": "connected" if state.containerd_connected else "disconnected",
            "absent_blobs": state.absent_blobs,
            # How containerd's config was checked; on 2.x it may not be possible, and this says why.
            "config_check": "; ".join(getattr(node, "config_check", ())) or None,
        },
        "peers_marked_bad": state.peers_marked_bad,
        "crossing": crossing_state(node),
        "warnings": all_warnings(node),
        "requests": tally.snapshot(),
    }
