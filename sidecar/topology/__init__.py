"""Topology policy: which peers may serve this node, and in what order. Pure: no I/O, no clock."""

from sidecar.topology.admission import Admission, admit_request, normalize_address
from sidecar.topology.policy import (
    Eligibility,
    PeerStats,
    RankedProvider,
    TopologyPolicy,
    eligibility,
    rank_providers,
    tier_of,
)
from sidecar.topology.validation import policy_warnings, unlabelled_node_warning

__all__ = [
    "Admission",
    "Eligibility",
    "PeerStats",
    "RankedProvider",
    "TopologyPolicy",
    "admit_request",
    "eligibility",
    "normalize_address",
    "policy_warnings",
    "rank_providers",
    "tier_of",
    "unlabelled_node_warning",
]
