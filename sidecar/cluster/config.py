"""Settings of the Node watch: where the API is, which node this is, what to watch, and how patiently.

Rules:
- Frozen dataclasses, validated on construction: a bad value raises ValueError naming the setting.
- `ClusterConfig` is what `lokal serve` maps its flags onto. `WatchTimings` holds the reflector's clocks;
  the defaults are the production values (client-go's), tests pass scaled-down ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sidecar.membership import REGION_LABEL, TopologyLabels, TopologyMode

AddressFamily = Literal["ipv4", "ipv6"]


@dataclass(frozen=True, slots=True)
class WatchTimings:
    # The server-side watch timeout is drawn uniformly from this range for every watch (client-go: 5-10 min)
    # so that a fleet of nodes does not re-watch in lockstep.
    watch_timeout_min_s: float = 300.0
    watch_timeout_max_s: float = 600.0
    connect_timeout_s: float = 10.0
    # Read timeout of list and get requests; a watch's read timeout is its server timeout plus this.
    read_timeout_s: float = 60.0
    backoff_initial_s: float = 0.8
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.5  # each delay is stretched by a random factor in [1, 1 + jitter]
    # After this long without an error the backoff starts again from backoff_initial_s.
    backoff_reset_after_s: float = 120.0
    # A watch that ends sooner than this without a single event counts as an error (no hot loop).
    short_watch_s: float = 1.0
    # Watch events are gathered this long into one membership snapshot: a burst of changes costs one
    # snapshot, not one per event. 0 publishes each change at once.
    batch_interval_s: float = 0.1

    def __post_init__(self) -> None:
        for name in (
            "watch_timeout_min_s",
            "connect_timeout_s",
            "read_timeout_s",
            "backoff_initial_s",
            "backoff_max_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"WatchTimings.{name} must be > 0, got {getattr(self, name)!r}")
        if self.watch_timeout_max_s < self.watch_timeout_min_s:
            raise ValueError("WatchTimings.watch_timeout_max_s must be >= watch_timeout_min_s")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("WatchTimings.backoff_max_s must be >= backoff_initial_s")
        if self.batch_interval_s < 0:
            raise ValueError(f"WatchTimings.batch_interval_s must be >= 0, got {self.batch_interval_s!r}")
        if self.backoff_jitter < 0:
            raise ValueError("WatchTimings.backoff_jitter must be >= 0")


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """What `lokal serve --discovery kubernetes` needs to learn its peers."""

    node_name: str  # --node-name / LOKAL_NODE_NAME (the DaemonSet passes spec.nodeName)
    kubeconfig: Path | None = None  # --kubeconfig; None means in-cluster (service account)
    topology_mode: TopologyMode = TopologyMode.PREFER
    address_family: AddressFamily = "ipv4"  # the family of lokal's listener: which InternalIP to use
    labels: TopologyLabels = field(default_factory=TopologyLabels)  # --region-label, --zone-label
    timings: WatchTimings = field(default_factory=WatchTimings)

    def __post_init__(self) -> None:
        if not self.node_name or self.node_name != self.node_name.strip():
            raise ValueError(
                f"--node-name (LOKAL_NODE_NAME) must be this node's name, got {self.node_name!r}"
            )
        if self.address_family not in ("ipv4", "ipv6"):
            raise ValueError(f"address family must be 'ipv4' or 'ipv6', got {self.address_family!r}")
        if not isinstance(self.topology_mode, TopologyMode):
            raise ValueError(f"--topology-mode must be one of {[m.value for m in TopologyMode]}")


def node_label_selector(mode: TopologyMode, own_region: str, region_label: str = REGION_LABEL) -> str | None:
    """The label selector of the Node list and watch: in isolate mode other regions are never listed."""
    if mode is TopologyMode.ISOLATE:
        return f"{region_label}={own_region}"
    return None


class ClusterConfigError(ValueError):
    """The cluster settings cannot work: wrong node name, unreadable kubeconfig, not in a cluster."""
