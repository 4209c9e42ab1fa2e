"""One record per mirror request, finished when its body is done: the `pull` log line and its metrics.

An operator reading `kubectl logs` sees, per request: what (kind, repo, ns, digest), who asked (containerd
on this node, or a peer), the outcome (result, tier, provider node, zone and region), how much and how
fast (bytes, ms, MB/s, time to first byte), how many providers were asked, and on a miss the reason in
words (`reason`) and as a bounded category (`miss`, a `Miss` set where the miss is decided).

Rules:
- `finish` runs exactly once per request, when the outcome is final (the body sent, cut off, or none).
  It is the single place a request's outcome is known, so it writes the log line and then hands the
  record to `observer` (the metrics); an observer's failure is logged and never reaches the client.
- Every field is always present in the line (null when it does not apply), so log queries never have
  to guess whether a field is missing or empty.
- `bytes` counts body bytes sent: 0 for HEAD, the bytes sent so far for a body that broke off.
- A miss's `tier` is `upstream`: containerd fetches those bytes from the registry after our 404.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sidecar.logs import get_logger, log_event
from sidecar.membership import Peer, Tier

log = get_logger("registry")

PullObserver = Callable[["PullRecord"], None]

class Miss(StrEnum):
    """Why a request was answered without content: the `miss` log field and the `reason` label of
    lokal_misses_total. Bounded on purpose; set by whoever decides the miss, never parsed from text."""

    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden_by_policy"
    PROVIDERS_FAILED = "providers_failed"
    NO_MEMBERSHIP = "no_membership"
    NO_DISCOVERY = "no_discovery"
    CONTAINERD = "containerd_unavailable"
    RANGE = "range_not_satisfiable"
    # Limits: a holder exists, but a bound of ours (or the provider's) said no this time.
    RELAY_LIMIT = "relay_limit"  # --max-relays on this node
    PER_PEER_CAP = "per_peer_cap"  # --max-relays-per-peer: every allowed holder already serves that many
    QUARANTINED = "quarantined"  # every allowed holder recently sent bytes failing their digest
    UPLOAD_LIMIT = "upload_limit"  # --max-peer-uploads: the provider (or, for a peer, this node) is full
    CAPPED = "capped"  # a tier cap (--cap-*) would have made the transfer wait too long
    # --cross-region auto: the best provider is in another region, and upstream is estimated cheaper.
    AUTO_UPSTREAM = "auto_chose_upstream"
    # Share while downloading: this node claimed the blob (it fetches it upstream for its scope), or
    # following another node's download failed a moment ago (containerd resumes upstream).
    CLAIMED = "claimed"
    FOLLOW_FAILED = "follow_failed"

    @property
    def is_limit(self) -> bool:
        return self in LIMIT_MISSES


LIMIT_MISSES = frozenset(
    {Miss.RELAY_LIMIT, Miss.PER_PEER_CAP, Miss.QUARANTINED, Miss.UPLOAD_LIMIT, Miss.CAPPED}
)
MISS_CATEGORIES = tuple(m.value for m in Miss)


@dataclass
class PullRecord:
    kind: str  # "manifest" | "blob"
    method: str
    repo: str
    ns: str
    digest: str  # short form, or the tag for a tag request
    client: str
    started: float = field(default_factory=time.monotonic)
    result: str = "miss"  # "local" | "peer" | "miss" | "error"
    tier: str = ""
    provider: str = ""
    provider_zone: str = ""
    provider_region: str = ""
    source: str = ""  # "file" | "grpc" | "relay"
    status: int = 0
    bytes: int = 0
    # Bytes read from peers when they differ from `bytes`: a HEAD by tag resolved through a peer reads
    # the manifest (to check it against its digest) and sends containerd no body. None: same as `bytes`.
    received_from_peer: int | None = None
    reason: str = ""  # in words, for the log; `why` is the bounded category
    why: Miss | None = None
    attempts: int = 0
    providers_busy: int = 0  # providers that answered 503 (their upload limit), among `attempts`
    for_peer: bool = False  # asked by a peer with the local-only header, not by containerd
    continuation: bool = False  # a Range request past byte 0: the rest of a body already asked for
    lookup_s: float | None = None  # how long the index lookup took, when there was one
    lookup_hit: bool | None = None  # whether the lookup named any provider (before the policy's say)
    responded_at: float | None = None  # when the response headers were ready
    elapsed: float = 0.0  # set by finish
    observer: PullObserver | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _finished: bool = False
    _fields: dict[str, Any] | None = None

    # -- what the handler and the relay report along the way --------------------------------------

    def provided_by(self, peer: Peer, tier: Tier) -> None:
        """The bytes come (now) from `peer`, at `tier`; called again when a relay resumes elsewhere."""
        self.provider, self.tier = peer.name, tier.value
        self.provider_zone, self.provider_region = peer.zone, peer.region

    def missed(self, why: Miss, reason: str) -> None:
        """No content, for this category and this reason in words (the last call wins)."""
        self.why, self.reason = why, reason

    def looked_up(self, seconds: float, providers: int) -> None:
        self.lookup_s = seconds
        self.lookup_hit = providers > 0

    def responded(self) -> None:
        """The response headers are ready: the time to first byte ends here."""
        if self.responded_at is None:
            self.responded_at = time.monotonic()

    # -- the end ----------------------------------------------------------------------------------

    @property
    def miss(self) -> Miss | None:
        if self.result != "miss":
            return None
        return self.why or Miss.NOT_FOUND

    @property
    def ttfb(self) -> float | None:
        return None if self.responded_at is None else max(0.0, self.responded_at - self.started)

    def finish(self, ok: bool = True) -> None:
        """Log the line once and record the metrics. `ok` False: the body broke off after the headers."""
        if self._finished:
            return
        self._finished = True
        self.elapsed = time.monotonic() - self.started
        if not ok:
            self.result = "error"
            self.reason = self.reason or "body cut off"
        if self.method == "HEAD":
            self.bytes = 0
        if self.result == "miss":
            self.tier = Tier.UPSTREAM.value
        self._fields = self._build_fields()
        log_event(log, "pull", **self._fields)
        if self.observer is not None:
            try:
                self.observer(self)
            except Exception as exc:  # metrics must never break serving
                log_event(log, "metrics_failed", logging.WARNING, error=repr(exc)[:200])

    def fields(self) -> dict[str, Any]:
        """The log line's fields, every one present (built once the record is finished)."""
        return self._fields if self._fields is not None else self._build_fields()

    def _build_fields(self) -> dict[str, Any]:
        elapsed = self.elapsed
        ttfb = self.ttfb
        fields: dict[str, Any] = {
            "kind": self.kind,
            "method": self.method,
            "repo": self.repo,
            "ns": self.ns,
            "digest": self.digest,
            "requester": "peer" if self.for_peer else "containerd",
            "result": self.result,
            "tier": self.tier or None,
            "provider": self.provider or None,
            "provider_zone": self.provider_zone or None,
            "provider_region": self.provider_region or None,
            "source": self.source or None,
            "status": self.status,
            "bytes": self.bytes,
            "ms": round(elapsed * 1000, 2),
            "ttfb_ms": None if ttfb is None else round(ttfb * 1000, 2),
            "megabytes_per_s": round(self.bytes / elapsed / 1e6, 1) if self.bytes and elapsed > 0 else None,
            "attempts": self.attempts,
            "lookup_ms": None if self.lookup_s is None else round(self.lookup_s * 1000, 2),
            "miss": None if self.miss is None else self.miss.value,
            "reason": self.reason or None,
            "client": self.client,
        }
        fields.update(self.extra)
        return fields
