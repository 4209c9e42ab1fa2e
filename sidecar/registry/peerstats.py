"""What this node measured about each peer: throughput, transfers in flight, last failure, and the
time to headers that the hedge deadline adapts to. Fed by the relay; read by the topology ranking."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sidecar.registry.suspicion import MixedMismatches
from sidecar.topology.policy import PeerStats

EWMA = 0.3
BAD_PEER_QUARANTINE_S = 300.0  # a peer that sent bytes failing their digest is not asked for this long


@dataclass
class PeerBook:
    clock: Callable[[], float] = time.monotonic
    _throughput: dict[str, float] = field(default_factory=dict)
    _in_flight: dict[str, int] = field(default_factory=dict)
    _failed_at: dict[str, float] = field(default_factory=dict)
    _bad_until: dict[str, float] = field(default_factory=dict)
    _suspect_until: dict[str, float] = field(default_factory=dict)
    _headers_s: float | None = None
    marked_bad: int = 0
    marked_suspect: int = 0
    mixed: MixedMismatches = field(init=False)  # suspicions, per digest

    def __post_init__(self) -> None:
        self.mixed = MixedMismatches(self.clock)

    def snapshot(self) -> Mapping[str, PeerStats]:
        names = set(self._throughput) | set(self._in_flight) | set(self._failed_at)
        return {
            name: PeerStats(
                self._throughput.get(name), self._in_flight.get(name, 0), self._failed_at.get(name)
            )
            for name in names
        }

    def started(self, name: str) -> None:
        self._in_flight[name] = self._in_flight.get(name, 0) + 1

    def ended(self, name: str) -> None:
        self._in_flight[name] = max(0, self._in_flight.get(name, 0) - 1)

    def headers_after(self, seconds: float) -> None:
        previous = self._headers_s
        self._headers_s = seconds if previous is None else previous + EWMA * (seconds - previous)

    def transferred(self, name: str, size: int, seconds: float) -> None:
        if size < 256 * 1024 or seconds <= 0:
            return  # small bodies measure latency, not throughput
        rate = size / seconds
        previous = self._throughput.get(name)
        self._throughput[name] = rate if previous is None else previous + EWMA * (rate - previous)

    def failed(self, name: str, *, bad: bool = False) -> None:
        now = self.clock()
        self._failed_at[name] = now
        if bad:
            self.marked_bad += 1
            self._bad_until[name] = now + BAD_PEER_QUARANTINE_S

    def suspect(self, name: str) -> None:
        """`name` sent part of a body that failed its digest, and so did another peer: nobody is shown to
        be the liar, so none is quarantined. It ranks as recently failed; `mixed` says how the next try
        finds out who it was."""
        self.failed(name)
        self.marked_suspect += 1
        self._suspect_until[name] = self.clock() + BAD_PEER_QUARANTINE_S

    def suspects(self) -> frozenset[str]:
        now = self.clock()
        return frozenset(name for name, until in self._suspect_until.items() if until > now)

    def quarantined(self) -> frozenset[str]:
        """The peers that recently sent bytes failing their digest."""
        now = self.clock()
        return frozenset(name for name, until in self._bad_until.items() if until > now)

    def hedge_delay(self, floor: float = 0.05, ceiling: float = 1.0, default: float = 0.25) -> float:
        """How long to wait for a provider's headers before asking the next one too."""
        if self._headers_s is None:
            return default
        return min(ceiling, max(floor, 4 * self._headers_s))
