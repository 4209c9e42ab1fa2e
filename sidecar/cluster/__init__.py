"""Cluster membership: who the peers are, from Kubernetes Node objects."""

from sidecar.cluster.model import Membership, MembershipChange, Peer, diff

__all__ = ["Membership", "MembershipChange", "Peer", "diff"]
