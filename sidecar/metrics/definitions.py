"""The metric definitions of one lokal node, on a registry of its own.

Rules:
- Every name starts with `lokal_`, the process collector's too (`lokal_process_*`). Labels are bounded
  sets: kind, result, tier, direction, outcome, miss reason, request, and `registry` (only mirrored
  registries reach the pull path; others are refused before a record exists, and `RegistryLabels` caps
  the set anyway). Never a digest, a repository or a peer name as a label.
- `lokal_requests_total` counts each body containerd asks for once: HEADs and Range continuations (a resume,
  or 2.1's parallel chunks) go to `lokal_followup_requests_total`, so the hit ratio is not skewed by them.
- One `CollectorRegistry` per node, never the global one, so that several nodes run in one process.
- Counters and histograms here are fed by `PullMetrics` (one call per finished request); gauges that
  mirror live state (peers, index, containerd) are computed at scrape time by `NodeStateCollector`.
"""

from __future__ import annotations

import importlib.metadata
import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

# Seconds. A local hit answers in well under a millisecond; a cross-region relay's headers take ~100 ms.
TTFB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Whole transfers: a manifest in a millisecond, a large layer across regions in minutes.
TRANSFER_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# The lookup is on every cold pull's path; its timeout is 100 ms by default.
LOOKUP_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)

MAX_REGISTRY_LABELS = 32  # registries beyond this many distinct ones are counted as "other"


class RegistryLabels:
    """Bounds the `registry` label: the first `limit` registries seen keep their name, later ones are
    'other'."""

    def __init__(self, limit: int = MAX_REGISTRY_LABELS) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, registry: str) -> str:
        if registry in self._seen:
            return registry
        if len(self._seen) >= self.limit:
            return "other"
        self._seen.add(registry)
        return registry


def lokal_version() -> str:
    try:
        return importlib.metadata.version("lokal")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The counters and histograms of one node, and its registry (`exposition()` renders them)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "lokal_requests", "Mirror requests from containerd on this node, by outcome and source tier",
            ["kind", "result", "tier"], registry=registry,
        )
        self.followups = Counter(
            "lokal_followup_requests",
            "containerd's HEAD requests and Range continuations (resumes, parallel chunks): kept out of "
            "lokal_requests_total and so out of the hit ratio",
            ["kind", "request", "result"], registry=registry,
        )
        self.peer_requests = Counter(
            "lokal_peer_requests", "Requests this node answered for peers, by the asking peer's tier",
            ["kind", "result", "tier"], registry=registry,
        )
        self.bytes = Counter(
            "lokal_bytes", "Body bytes: to_containerd (served here), to_peer (served to peers), "
            "from_peer (relayed in from peers), by tier", ["direction", "tier"], registry=registry,
        )
        self.ttfb = Histogram(
            "lokal_time_to_first_byte_seconds", "Time until the response headers of a hit were ready",
            ["tier"], buckets=TTFB_BUCKETS, registry=registry,
        )
        self.transfer = Histogram(
            "lokal_transfer_duration_seconds", "Whole-transfer time of a hit, request to last byte",
            ["tier"], buckets=TRANSFER_BUCKETS, registry=registry,
        )
        self.lookup = Histogram(
            "lokal_lookup_duration_seconds", "Index lookups, by outcome (hit: some node holds the key)",
            ["outcome"], buckets=LOOKUP_BUCKETS, registry=registry,
        )
        self.misses = Counter(
            "lokal_misses", "Requests answered 404 (containerd goes upstream), by registry and reason",
            ["registry", "kind", "reason"], registry=registry,
        )
        self.limit_hits = Counter(
            "lokal_limit_hits", "Times a bound said no (relays, relays_per_peer, peer_uploads), by limit",
            ["limit"], registry=registry,
        )
        self.refused = Counter(
            "lokal_refused_requests", "Requests refused before any store or peer was asked, by kind "
            "(not_mirrored, no_ns, latest, write, bad_name, bad_reference, ...)", ["kind"], registry=registry,
        )
        self.digest_mismatches = Counter(
            "lokal_relay_digest_mismatches", "Relayed content whose digest did not match", registry=registry,
        )
        self.registry_label = RegistryLabels()
        # RSS, open fds, CPU seconds, start time; on Linux from /proc, elsewhere nothing.
        ProcessCollector(namespace="lokal", registry=registry)
        build = Gauge("lokal_build_info", "Always 1: the running lokal's version and Python",
                      ["version", "python"], registry=registry)
        build.labels(lokal_version(), platform.python_version()).set(1)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, remembered: prometheus_client validates labels on every call, which
        costs more than the increment itself on the per-request path. Label values are bounded."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def limit_hit(self, limit: str) -> None:
        """The `LimitReporter.on_hit` hook. Limit names are the fixed gate names."""
        self.child(self.limit_hits, limit).inc()

    def refusal(self, kind: str) -> None:
        """The `RefusalLog.on_refused` hook. Kinds are the fixed `RefusalKind` values."""
        self.child(self.refused, kind).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
