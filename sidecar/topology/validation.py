"""Startup checks of the topology settings against this node's own labels.

Rules:
- Pure: the caller reads its own Node and passes the parsed Peer in.
- A broken combination raises `TopologyConfigError` whose message names the setting and the node, so that
  `lokal serve` can print it and exit instead of running with a policy it cannot honour.
"""

from __future__ import annotations

from sidecar.cluster.model import Peer
from sidecar.topology.modes import LEGACY_REGION_LABEL, REGION_LABEL, TopologyMode
from sidecar.topology.policy import TopologyPolicy


class TopologyConfigError(ValueError):
    """The topology settings cannot work on this node."""


def validate_own_node(mode: TopologyMode, me: Peer) -> None:
    """Raise `TopologyConfigError` when `mode` cannot work with this node's labels."""
    if mode is TopologyMode.ISOLATE and not me.region:
        raise TopologyConfigError(
            f"--topology-mode isolate needs this node ({me.name!r}) to carry the label {REGION_LABEL} "
            f"(or the deprecated {LEGACY_REGION_LABEL}), but it has none: label the node, or use "
            "--topology-mode prefer"
        )


def policy_warnings(policy: TopologyPolicy) -> list[str]:
    """Combinations that work but may surprise: `lokal serve` logs each at startup."""
    warnings = []
    if policy.mode is TopologyMode.ISOLATE and policy.allow_unknown_clients:
        warnings.append(
            "--allow-unknown-clients with --topology-mode isolate: other regions are never listed, so their "
            "nodes look unknown and will be served"
        )
    return warnings
