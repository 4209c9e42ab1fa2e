"""Topology tiers: where a byte came from, relative to the node that asked for it.

The tier names are also metric label values and log fields, so they are stable and snake_case.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    SAME_NODE = "same_node"  # the local containerd content store
    SAME_ZONE = "same_zone"
    SAME_REGION = "same_region"
    OTHER_REGION = "other_region"
    UNKNOWN = "unknown"  # the provider or this node lacks region/zone labels
    UPSTREAM = "upstream"  # nobody close enough had it: containerd went to the registry


# Best first. UPSTREAM is the fallback, not a peer tier.
PEER_TIER_ORDER: tuple[Tier, ...] = (
    Tier.SAME_NODE,
    Tier.SAME_ZONE,
    Tier.SAME_REGION,
    Tier.UNKNOWN,
    Tier.OTHER_REGION,
)
