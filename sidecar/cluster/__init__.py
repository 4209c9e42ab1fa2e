"""Cluster membership: who the peers are, from Kubernetes Node objects.

The node parser is pure (the model it fills is `sidecar.membership`). `MembershipSource` is the I/O shell:
a reflector (list + watch) around the official `kubernetes` client, which is imported only when it starts.
"""

from sidecar.cluster.config import (
    AddressFamily,
    ClusterConfig,
    ClusterConfigError,
    WatchTimings,
    node_label_selector,
)
from sidecar.cluster.nodes import ParsedNode, parse_node
from sidecar.cluster.source import MembershipSource, MembershipSubscription, summarize

__all__ = [
    "AddressFamily",
    "ClusterConfig",
    "ClusterConfigError",
    "MembershipSource",
    "MembershipSubscription",
    "ParsedNode",
    "WatchTimings",
    "node_label_selector",
    "parse_node",
    "summarize",
]
