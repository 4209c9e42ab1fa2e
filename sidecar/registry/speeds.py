"""How fast each way of getting bytes has been on this node: upstream per registry, and each region.

Fed by the relay (time to headers and body throughput of every relay, by the provider's region) and by
the upstream watcher (containerd's own fetches after our 404s, sidecar/containerd/upstream_watch.py).
Read by the `auto` decision, `lokal status`, `lokal where` and the metrics. The estimates themselves are
pure (sidecar/topology/crossing.py); this holds them and the clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sidecar.containerd.upstream_watch import UpstreamSample
from sidecar.topology.crossing import LinkEstimate, add_sample

MAX_REGISTRIES = 32  # registries beyond this many are not tracked (bounded memory and metric labels)


@dataclass
class SpeedBook:
    clock: Callable[[], float] = time.monotonic
    upstream: dict[str, LinkEstimate] = field(default_factory=dict)
    regions: dict[str, LinkEstimate] = field(default_factory=dict)

    def region_first_byte(self, region: str, seconds: float) -> None:
        if region:
            estimate = self.regions.get(region)
            self.regions[region] = add_sample(estimate, now=self.clock(), first_byte_s=seconds)

    def region_body(self, region: str, size: int, seconds: float) -> None:
        if region:
            self.regions[region] = add_sample(
                self.regions.get(region), now=self.clock(), size=size, transfer_s=seconds
            )

    def upstream_fetch(
        self,
        registry: str,
        *,
        size: int = 0,
        transfer_s: float | None = None,
        first_byte_s: float | None = None,
    ) -> None:
        if registry not in self.upstream and len(self.upstream) >= MAX_REGISTRIES:
            return
        self.upstream[registry] = add_sample(
            self.upstream.get(registry), now=self.clock(), size=size, transfer_s=transfer_s,
            first_byte_s=first_byte_s,
        )

    def upstream_seen(self, sample: UpstreamSample) -> None:
        """One watch of containerd's upstream fetch (sidecar/containerd/upstream_watch.py)."""
        self.upstream_fetch(sample.registry, size=sample.size, transfer_s=sample.transfer_s,
                            first_byte_s=sample.first_byte_s)

    def snapshot(self) -> dict[str, Any]:
        """For `lokal status`: every estimate with its rate, first byte, sample counts and age."""
        now = self.clock()
        return {
            "upstream": {name: describe(est, now) for name, est in sorted(self.upstream.items())},
            "regions": {name: describe(est, now) for name, est in sorted(self.regions.items())},
        }


def describe(est: LinkEstimate, now: float) -> dict[str, Any]:
    rate = est.rate_bps
    return {
        "rate_mbps": None if rate is None else round(rate / 1e6, 2),
        "first_byte_ms": None if est.first_byte_s is None else round(est.first_byte_s * 1000, 1),
        "rate_samples": est.rate_samples,
        "latency_samples": est.latency_samples,
        "age_s": round(now - est.updated_at, 1),
        "fresh": est.measured(now),
    }
