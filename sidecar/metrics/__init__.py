"""Prometheus metrics of one lokal node: definitions on a per-node registry (`Metrics`), the recording
of finished requests (`PullMetrics`), and the scrape-time gauges of live state (`NodeStateCollector`).

Names all start with `lokal_`; docs/operating.md lists them with PromQL for the usual questions.
"""

from sidecar.metrics.definitions import Metrics
from sidecar.metrics.pulls import PullMetrics, PullOutcome, classify
from sidecar.metrics.state import NodeState, NodeStateCollector
from sidecar.metrics.tally import PullTally

__all__ = [
    "Metrics", "NodeState", "NodeStateCollector", "PullMetrics", "PullOutcome", "PullTally", "classify",
]
