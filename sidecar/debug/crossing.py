"""What `lokal status` and `/metrics` show about `--cross-region auto` and the tier caps: the learned
speeds (upstream per registry, each region), the decisions so far, and each cap's state.

Rules:
- `crossing_state` is the one reading of live state: the status page and the metrics collector both use
  it, so they never disagree.
- Label values are bounded: registries (the speed book tracks at most 32), regions (from the membership),
  cap names, and the decision's (choice, basis) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from sidecar.debug.view import NodeView


def crossing_state(node: NodeView) -> dict[str, Any]:
    speeds, caps, gate = node.speeds, node.caps, node.crossing
    state: dict[str, Any] = {
        "bias": node.policy.cross_region_bias,
        "upstream": {},
        "regions": {},
        "decisions": [],
        "caps": {},
    }
    if speeds is not None:
        state.update(speeds.snapshot())
    if gate is not None:
        state["decisions"] = [
            {"choice": choice, "basis": basis, "count": count}
            for (choice, basis), count in sorted(gate.decisions.items())
        ]
    if caps is not None:
        state["caps"] = {cap.name: cap.snapshot() for cap in caps.all()}
    return state


class CrossingCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        s = self.state()
        rate = GaugeMetricFamily("lokal_upstream_rate_bytes",
                                 "Learned upstream throughput per registry (bytes/s), from containerd's "
                                 "fetches after lokal's 404s", labels=["registry"])
        first = GaugeMetricFamily("lokal_upstream_first_byte_seconds",
                                  "Learned upstream first-byte latency per registry", labels=["registry"])
        samples = GaugeMetricFamily("lokal_upstream_samples", "Throughput samples behind the upstream "
                                    "estimate (reset when it goes stale)", labels=["registry"])
        for registry, est in s["upstream"].items():
            _add(rate, first, samples, registry, est)
        yield from (rate, first, samples)
        rate = GaugeMetricFamily("lokal_region_rate_bytes", "Learned relay throughput from each region "
                                 "(bytes/s)", labels=["region"])
        first = GaugeMetricFamily("lokal_region_first_byte_seconds",
                                  "Learned time to a relay's headers from each region", labels=["region"])
        samples = GaugeMetricFamily("lokal_region_samples", "Throughput samples behind the region estimate",
                                    labels=["region"])
        for region, est in s["regions"].items():
            _add(rate, first, samples, region, est)
        yield from (rate, first, samples)
        decisions = CounterMetricFamily("lokal_auto_decisions", "cross-region auto decisions, by choice "
                                        "(peer, upstream) and basis (measured, no_upstream_sample)",
                                        labels=["choice", "basis"])
        for row in s["decisions"]:
            decisions.add_metric([row["choice"], row["basis"]], row["count"])
        yield decisions
        throttled = CounterMetricFamily("lokal_cap_throttled_seconds", "Time transfers waited on a tier "
                                        "cap", labels=["cap"])
        refused = CounterMetricFamily("lokal_cap_refused", "Transfers a tier cap refused or cut rather "
                                      "than stall them", labels=["cap"])
        cap_rate = GaugeMetricFamily("lokal_cap_rate_bytes", "A tier cap's rate (bytes/s)", labels=["cap"])
        for name, cap in s["caps"].items():
            throttled.add_metric([name], cap["throttled_s"])
            refused.add_metric([name], cap["refused"])
            cap_rate.add_metric([name], cap["rate_bytes_per_s"])
        yield from (throttled, refused, cap_rate)


def _add(rate: GaugeMetricFamily, first: GaugeMetricFamily, samples: GaugeMetricFamily, label: str,
         est: dict[str, Any]) -> None:
    if est["rate_mbps"] is not None:
        rate.add_metric([label], est["rate_mbps"] * 1e6)
    if est["first_byte_ms"] is not None:
        first.add_metric([label], est["first_byte_ms"] / 1000)
    samples.add_metric([label], est["rate_samples"] if est["fresh"] else 0)
