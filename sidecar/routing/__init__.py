"""Content routing: a one-hop index over the Kubernetes membership (see docs/architecture.md).

Layers, pure first: `keys` (what may be indexed), `placement` (rendezvous home nodes), `protocol` (the
/_lokal/v1/ messages and codec), `holders` (the holder-side store), `service` (the holder-side handler),
`advertiser` (what to send to whom, and a thin sender), `transport` (the seam to peers), `lookup`,
and `router` (the `Router` seam the registry uses).
"""

from sidecar.routing.advertiser import (
    Advertiser,
    Batch,
    plan_changes,
    plan_full,
    plan_membership_push,
    plan_push,
)
from sidecar.routing.holders import HolderStore
from sidecar.routing.keys import is_index_key
from sidecar.routing.lookup import Found, Lookup
from sidecar.routing.placement import HomeTable, Ring, RingChange, gained_homes, home_nodes
from sidecar.routing.protocol import (
    ADVERTISE_PATH,
    LOOKUP_PATH,
    AdvertiseReply,
    AdvertiseRequest,
    BodyTooLarge,
    LookupReply,
    LookupRequest,
    ProtocolError,
)
from sidecar.routing.router import (
    InMemoryIndex,
    InMemoryRouter,
    OneHopRouter,
    RingSet,
    Router,
    RoutingSettings,
)
from sidecar.routing.service import IndexService, NotAMember
from sidecar.routing.transport import InProcessNetwork, PeerTransport, PeerUnavailable

__all__ = [
    "ADVERTISE_PATH",
    "LOOKUP_PATH",
    "AdvertiseReply",
    "AdvertiseRequest",
    "Advertiser",
    "Batch",
    "BodyTooLarge",
    "Found",
    "HolderStore",
    "HomeTable",
    "InMemoryIndex",
    "InMemoryRouter",
    "InProcessNetwork",
    "IndexService",
    "Lookup",
    "LookupReply",
    "LookupRequest",
    "NotAMember",
    "OneHopRouter",
    "PeerTransport",
    "PeerUnavailable",
    "ProtocolError",
    "Ring",
    "RingChange",
    "RingSet",
    "Router",
    "RoutingSettings",
    "gained_homes",
    "home_nodes",
    "is_index_key",
    "plan_changes",
    "plan_full",
    "plan_membership_push",
    "plan_push",
]
