"""Gauges that mirror live state, computed at scrape time: this node's identity (`lokal_node_info`),
peers by region, zone and state, the index, containerd, and the peers marked bad.

Rules:
- `NodeState` is a plain snapshot; `NodeStateCollector` only turns one into metric families. Whoever
  builds the collector passes a function that takes the snapshot (sidecar/debug does, from the node).
- Peers are counted without this node. States: `ready`, `not_ready`, `no_address` (never tried).
- `lokal_node_info` is 1 with this node's labels, so per-region ratios are a join:
  `... * on(instance) group_left(region) lokal_node_info`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sidecar.membership import Peer


@dataclass(frozen=True, slots=True)
class NodeState:
    node: str
    region: str
    zone: str
    mode: str
    cross_region: str
    peers: Sequence[Peer] = ()  # the other nodes
    index_entries: int = 0  # entries this node holds for its region's index
    index_keys: int = 0  # distinct keys among them
    index_bound_hit: bool = False
    index_refused: int = 0  # new entries refused at the bound, since start
    keys_advertised: int = 0  # keys of the local store this node advertises
    containerd_connected: bool = False
    absent_blobs: int = 0
    peers_marked_bad: int = 0
    config_warnings: int = 0
    # Share while downloading, since start: claims (this node fetched upstream for its scope), follows
    # (it followed an in-progress provider), fallbacks (following failed: upstream), lease_expiries (claims
    # at this node, as a home, that died without a release), leases (claims this node keeps alive now).
    share: Mapping[str, int] = field(default_factory=dict)


SHARE_EVENTS = ("claims", "follows", "fallbacks", "lease_expiries")


def peer_state(peer: Peer) -> str:
    if not peer.ready:
        return "not_ready"
    if not peer.address:
        return "no_address"
    return "ready"


def peer_counts(peers: Iterable[Peer]) -> Counter[tuple[str, str, str]]:
    """(region, zone, state) -> number of peers; unlabelled topology shows as `unknown`."""
    return Counter((p.region or "unknown", p.zone or "unknown", peer_state(p)) for p in peers)


class NodeStateCollector(Collector):
    def __init__(self, state: Callable[[], NodeState]) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state()
        info = GaugeMetricFamily(
            "lokal_node_info", "This node's identity and policy (always 1)",
            labels=["node", "region", "zone", "mode", "cross_region"],
        )
        info.add_metric([s.node, s.region or "unknown", s.zone or "unknown", s.mode, s.cross_region], 1)
        yield info
        peers = GaugeMetricFamily(
            "lokal_peers", "Other nodes in the membership, by region, zone and state",
            labels=["region", "zone", "state"],
        )
        for (region, zone, state), count in sorted(peer_counts(s.peers).items()):
            peers.add_metric([region, zone, state], count)
        yield peers
        yield _gauge("lokal_index_entries", "Index entries this node holds for its region", s.index_entries)
        yield _gauge("lokal_index_keys", "Distinct keys among the index entries held", s.index_keys)
        yield _gauge("lokal_index_bound_hit", "1 while the holder store is at its memory bound",
                     int(s.index_bound_hit))
        yield CounterMetricFamily("lokal_index_entries_refused", "Index entries refused at the bound",
                                  value=s.index_refused)
        yield _gauge("lokal_keys_advertised", "Keys of the local store this node advertises",
                     s.keys_advertised)
        yield _gauge("lokal_containerd_connected", "1 while containerd answers", int(s.containerd_connected))
        yield _gauge("lokal_containerd_absent_blobs", "Blobs named by local manifests but absent",
                     s.absent_blobs)
        yield CounterMetricFamily("lokal_peers_marked_bad", "Peers marked bad (they sent wrong content)",
                                  value=s.peers_marked_bad)
        share = CounterMetricFamily(
            "lokal_share_events", "Share while downloading: claims made here (this node fetched upstream "
            "for its scope), follows of in-progress providers, fallbacks to upstream after a failed follow, "
            "and lease expiries of claims held here as a home", labels=["event"],
        )
        for event in SHARE_EVENTS:
            share.add_metric([event], s.share.get(event, 0))
        yield share
        yield _gauge("lokal_share_leases", "Claims this node keeps alive now (its downloads in progress)",
                     s.share.get("leases", 0))
        yield _gauge("lokal_config_warnings", "Warnings about configuration and state (see lokal status)",
                     s.config_warnings)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
