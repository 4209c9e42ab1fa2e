"""From one finished `PullRecord` to metric updates: `classify` (pure) says what to count, `PullMetrics`
applies it to a node's `Metrics` and `PullTally`.

Rules:
- containerd's requests (the mirror path) go to `lokal_requests_total`; requests a peer made with the
  local-only header go to `lokal_peer_requests_total`, with the asking peer's tier as seen from here. So a
  hit ratio computed from `lokal_requests_total` is never inflated by serving peers.
- containerd's HEADs and Range continuations go to `lokal_followup_requests_total` instead: each body
  counts once in the hit ratio, however many requests it took. Their bytes still count.
- Bytes: a hit for containerd counts `to_containerd` at its source tier, and a peer hit also `from_peer`
  (what was read from the peer: a HEAD by tag resolved through a peer reads the manifest);
  a request served to a peer counts `to_peer` at the peer's tier. Bytes of a body that broke off count
  what was sent.
- Time to first byte and transfer time are observed for hits (local, peer) only, by tier; a miss has no
  transfer of ours. A lookup is observed whenever one ran.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sidecar.membership import Membership, Tier
from sidecar.metrics.definitions import Metrics
from sidecar.metrics.tally import PullTally
from sidecar.registry.pulls import PullRecord
from sidecar.topology.admission import is_loopback, normalize_address
from sidecar.topology.policy import tier_of

HITS = ("local", "peer")


@dataclass(frozen=True, slots=True)
class PullOutcome:
    counter: str  # "requests" | "peer_requests" | "followups"
    kind: str
    result: str
    tier: str
    bytes: tuple[tuple[str, str, int], ...] = ()  # (direction, tier, count)
    ttfb: float | None = None
    transfer: float | None = None
    lookup: tuple[str, float] | None = None  # (outcome, seconds)
    miss: tuple[str, str, str] | None = None  # (registry, kind, reason)
    request: str = ""  # for followups: "head" | "range"
    digest_mismatch: bool = False


def classify(record: PullRecord, asker_tier: str = Tier.SAME_NODE.value) -> PullOutcome:
    """What one finished request adds to the metrics. `asker_tier`: where a peer requester is."""
    tier = record.tier or Tier.UNKNOWN.value
    mismatch = bool(record.extra.get("digest_mismatch"))
    if record.for_peer:
        served = (("to_peer", asker_tier, record.bytes),) if record.bytes else ()
        return PullOutcome("peer_requests", record.kind, record.result, asker_tier, served)
    flows: list[tuple[str, str, int]] = []
    if record.bytes:
        flows.append(("to_containerd", tier, record.bytes))
    received = record.bytes if record.received_from_peer is None else record.received_from_peer
    if received and (record.result == "peer" or (record.result == "error" and record.provider)):
        flows.append(("from_peer", tier, received))
    hit = record.result in HITS
    lookup = None
    if record.lookup_s is not None:
        lookup = ("hit" if record.lookup_hit else "miss", record.lookup_s)
    miss_reason = record.miss
    followup = "head" if record.method == "HEAD" else "range" if record.continuation else ""
    return PullOutcome(
        "followups" if followup else "requests",
        record.kind,
        record.result,
        tier,
        tuple(flows),
        ttfb=record.ttfb if hit else None,
        transfer=record.elapsed if hit and not followup else None,  # a whole body's time only
        lookup=lookup,
        miss=(record.ns, record.kind, miss_reason.value) if miss_reason else None,
        digest_mismatch=mismatch,
        request=followup,
    )


def asker_tier(client: str, membership: Membership | None) -> str:
    """The tier of the node a request came from, by its source address."""
    address = normalize_address(client)
    if address is None:
        return Tier.UNKNOWN.value
    me = membership.me if membership is not None else None
    peer = membership.by_address(address) if membership is not None else None
    if me is not None and peer is not None:  # members first: a lab's nodes may sit on 127.0.0.x
        return tier_of(me, peer).value
    if is_loopback(address):
        return Tier.SAME_NODE.value
    return Tier.UNKNOWN.value


def apply(metrics: Metrics, outcome: PullOutcome) -> None:
    child = metrics.child
    if outcome.counter == "followups":
        child(metrics.followups, outcome.kind, outcome.request, outcome.result).inc()
    else:
        counter = metrics.requests if outcome.counter == "requests" else metrics.peer_requests
        child(counter, outcome.kind, outcome.result, outcome.tier).inc()
    for direction, tier, count in outcome.bytes:
        child(metrics.bytes, direction, tier).inc(count)
    if outcome.ttfb is not None:
        child(metrics.ttfb, outcome.tier).observe(outcome.ttfb)
    if outcome.transfer is not None:
        child(metrics.transfer, outcome.tier).observe(outcome.transfer)
    if outcome.lookup is not None:
        child(metrics.lookup, outcome.lookup[0]).observe(outcome.lookup[1])
    if outcome.miss is not None:
        registry, kind, reason = outcome.miss
        child(metrics.misses, metrics.registry_label(registry), kind, reason).inc()
    if outcome.digest_mismatch:
        metrics.digest_mismatches.inc()


@dataclass
class PullMetrics:
    """The `PullObserver` a node's `RegistryHandler` calls for every finished request."""

    metrics: Metrics
    membership: Callable[[], Membership | None]
    tally: PullTally = field(default_factory=lambda: PullTally(time.time()))

    def __call__(self, record: PullRecord) -> None:
        tier = asker_tier(record.client, self.membership()) if record.for_peer else Tier.SAME_NODE.value
        outcome = classify(record, tier)
        apply(self.metrics, outcome)
        summary = dict(record.fields())
        if record.for_peer:
            summary["peer_tier"] = tier
        self.tally.add(summary, followup=outcome.counter == "followups")
