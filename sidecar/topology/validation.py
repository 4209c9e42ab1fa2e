"""Startup checks of the topology settings against this node's own labels.

Rules:
- Pure: the caller reads its own Node and passes the parsed Peer in.
- A node without a region label never stops lokal (kubeadm, kind and bare-metal nodes usually have none):
  in isolate mode it is a region of its own, in prefer mode its peers rank in the `unknown` tier. The
  warning says which, names the label key, and is logged once and shown by `lokal status`.
"""

from __future__ import annotations

from sidecar.membership import Peer, TopologyLabels, TopologyMode
from sidecar.topology.policy import TopologyPolicy


def unlabelled_node_warning(mode: TopologyMode, me: Peer, labels: TopologyLabels) -> str | None:
    """What a missing region label means for this node in `mode`; None when the node has a region."""
    if me.region:
        return None
    label = " or ".join(labels.region_keys)
    if mode is TopologyMode.ISOLATE:
        return (
            f"this node ({me.name!r}) has no region label ({label}): in isolate mode it is a region of its "
            "own and shares with no other node; label the nodes (or set --region-label) and restart lokal"
        )
    return f"this node ({me.name!r}) has no region label ({label}): its peers rank in the 'unknown' tier"


def policy_warnings(policy: TopologyPolicy) -> list[str]:
    """Combinations that work but may surprise: `lokal serve` logs each at startup."""
    warnings = []
    if policy.mode is TopologyMode.ISOLATE and policy.allow_unknown_clients:
        warnings.append(
            "--allow-unknown-clients with --topology-mode isolate: other regions are never listed, so their "
            "nodes look unknown and will be served"
        )
    return warnings
