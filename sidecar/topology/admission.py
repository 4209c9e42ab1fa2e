"""The serving side's question: may a request from this source address be served?

Rules:
- Pure: the caller passes the source address, the current membership and the policy.
- Loopback is always served (containerd on this node). A known node is served, except, in isolate mode,
  a node of another region. An address that is no known node is refused unless allow_unknown_clients.
- The sender is identified by its source address among the nodes' InternalIPs, never by anything it
  claims. IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack listener sees) counts as the IPv4 address.
- Note: in isolate mode the other regions are never listed, so their nodes look unknown: with
  allow_unknown_clients they would be served. `lokal serve` should warn about that combination.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from sidecar.membership import Membership, Peer, TopologyMode
from sidecar.topology.policy import TopologyPolicy


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    reason: str
    peer: Peer | None = None  # the known node the request came from, if any


_LOOPBACK_TEXT = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
_LOOPBACK = Admission(True, "loopback")


def normalize_address(source: str) -> str | None:
    """The canonical text of an IP address (zone id dropped, IPv4-mapped unwrapped), or None if not an IP."""
    text = source[1:-1] if source.startswith("[") and source.endswith("]") else source
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_loopback(source: str) -> bool:
    """Whether a request's source address (any spelling `normalize_address` reads) is this host's."""
    address = normalize_address(source)
    return address is not None and ipaddress.ip_address(address).is_loopback


def admit_request(source: str, membership: Membership, policy: TopologyPolicy) -> Admission:
    """Whether a request from `source` may be served, with the reason (for the log and the 403 body)."""
    if source in _LOOPBACK_TEXT:  # containerd on this node: every request, so skip the parsing
        return _LOOPBACK
    address = normalize_address(source)
    if address is None:
        return Admission(False, f"source address {source!r} is not an IP address")
    if is_loopback(address):
        return _LOOPBACK
    peer = membership.by_address(address)
    if peer is None:
        if policy.allow_unknown_clients:
            return Admission(True, f"{address} is no known node; allowed by --allow-unknown-clients")
        return Admission(False, f"{address} is no known node (set --allow-unknown-clients to serve it)")
    if policy.mode is TopologyMode.ISOLATE:
        me = membership.me
        my_region = me.region if me else ""
        if peer.name != membership.self_name and (not my_region or peer.region != my_region):
            return Admission(
                False,
                f"isolate mode: node {peer.name!r} is in region {peer.region!r}, this node in {my_region!r}",
                peer,
            )
    return Admission(True, f"known node {peer.name!r}", peer)
