"""One record per mirror request, finished when its body is done: the `pull` log line.

An operator reading `kubectl logs` sees, per request: what (kind, repo, ns, digest), the outcome (result,
tier, provider), how much and how fast (bytes, ms, MB/s), and on a miss the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sidecar.logs import get_logger, log_event

log = get_logger("registry")


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
    source: str = ""  # "file" | "grpc" | "relay"
    status: int = 0
    bytes: int = 0
    reason: str = ""
    attempts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    _finished: bool = False

    def finish(self, ok: bool = True) -> None:
        """Log the line once. `ok` False means the body broke off after the headers went out."""
        if self._finished:
            return
        self._finished = True
        elapsed = time.monotonic() - self.started
        if not ok:
            self.result = "error"
            self.reason = self.reason or "body cut off"
        fields: dict[str, Any] = {
            "kind": self.kind,
            "method": self.method,
            "repo": self.repo,
            "ns": self.ns,
            "digest": self.digest,
            "result": self.result,
            "status": self.status,
            "bytes": self.bytes,
            "ms": round(elapsed * 1000, 2),
            "client": self.client,
        }
        if self.tier:
            fields["tier"] = self.tier
        if self.source:
            fields["source"] = self.source
        if self.provider:
            fields["provider"] = self.provider
        if self.bytes and elapsed > 0:
            fields["mbps"] = round(self.bytes / elapsed / 1e6, 1)
        if self.attempts:
            fields["attempts"] = self.attempts
        if self.reason:
            fields["reason"] = self.reason
        fields.update(self.extra)
        log_event(log, "pull", **fields)
