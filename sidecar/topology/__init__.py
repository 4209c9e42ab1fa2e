"""Topology policy: which peers may serve this node, and in what order. Pure: no I/O, no clock."""

from sidecar.topology.tiers import PEER_TIER_ORDER, Tier

__all__ = ["PEER_TIER_ORDER", "Tier"]
