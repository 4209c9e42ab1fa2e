"""The holder side of the index: which nodes hold which keys, with expiry, in bounded memory. Pure.

Rules:
- No clock: every call takes `now` (seconds, any monotonic origin). No I/O.
- Providers are node names the caller resolved from the request's source address; this store never sees
  a request body's claims.
- An entry is (key, provider) -> expiry. A re-advertise refreshes the expiry; entries expire after `ttl`
  (about three advertise intervals), so a node that vanished without withdrawing fades out.
- Memory bound: at most `max_entries` entries. The default is derived from a memory budget and the
  measured cost of the most expensive entry any member can make (a new 640-character key, one provider),
  so that no advertisements, however hostile, take the index past its budget (see the constants). When
  full, NEW entries are REFUSED (refreshes and removals still work) after one sweep of expired entries.
  Refusing rather than evicting keeps the entries that already serve lookups stable; the advertiser sees
  `refused` in the reply, and `bound_hit` / `refused_total` let lokal report it (metric and log). Expired
  entries are swept at most once per `sweep_every` seconds, so a full store does not rescan on every
  request.
- All entries of one request share one expiry float object: an entry costs a dict slot, not a float.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# RSS per entry, measured (tests/routing/test_index_memory.py measures it again, over HTTP): a new sha256
# key ~360 B, a new 640-character tag key (the longest a key may be) ~1,025 B, one more provider of a
# known key ~35 B. The bound assumes every entry is of the worst kind, with a margin.
WORST_ENTRY_BYTES = 1200
# The DaemonSet's limit is 384 MiB (manifests/base/daemonset); an idle lokal is ~50 MB. A quarter of the
# limit for the index leaves the rest for connections, relays and uploads at their own limits.
INDEX_MEMORY_BUDGET = 96 * 2**20
# 83,886; a node of a 5,000-node cluster holds ~9,000 (at most ~20,000, docs/benchmarks.md).
DEFAULT_MAX_ENTRIES = INDEX_MEMORY_BUDGET // WORST_ENTRY_BYTES
DEFAULT_SWEEP_EVERY = 60.0


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    stored: int  # entries added or refreshed
    refused: int  # new entries refused because the bound was hit


class HolderStore:
    def __init__(
        self, ttl: float, max_entries: int = DEFAULT_MAX_ENTRIES, sweep_every: float = DEFAULT_SWEEP_EVERY
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"holder ttl must be > 0 seconds, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"holder max entries must be >= 1, got {max_entries}")
        self.ttl = ttl
        self.max_entries = max_entries
        self.sweep_every = sweep_every
        self._entries: dict[str, dict[str, float]] = {}
        self._count = 0
        self._last_sweep = float("-inf")
        self.refused_total = 0  # new entries refused since start, for the metric
        self.bound_hit = False  # true while the store is at its bound

    @property
    def entries(self) -> int:
        return self._count

    @property
    def keys(self) -> int:
        return len(self._entries)

    def advertise(self, provider: str, add: Iterable[str], remove: Iterable[str], now: float) -> StoreOutcome:
        """Record that `provider` holds the keys of `add` and no longer holds those of `remove`."""
        for key in remove:
            providers = self._entries.get(key)
            if providers is not None and providers.pop(provider, None) is not None:
                self._count -= 1
                if not providers:
                    del self._entries[key]
        expiry = now + self.ttl
        stored = refused = 0
        for key in add:
            providers = self._entries.get(key)
            if providers is not None and provider in providers:
                providers[provider] = expiry
                stored += 1
                continue
            if self._count >= self.max_entries and not self._make_room(now):
                refused += 1
                continue
            if providers is None:
                self._entries[key] = {provider: expiry}
            else:
                providers[provider] = expiry
            self._count += 1
            stored += 1
        if refused:
            self.refused_total += refused
        self.bound_hit = self._count >= self.max_entries
        return StoreOutcome(stored, refused)

    def lookup(self, key: str, now: float) -> tuple[str, ...]:
        """The unexpired providers of `key`, oldest advertiser first."""
        providers = self._entries.get(key)
        if not providers:
            return ()
        live = tuple(name for name, expiry in providers.items() if expiry > now)
        if len(live) != len(providers):
            self._drop_expired(key, providers, now)
        return live

    def expire(self, now: float) -> int:
        """Drop every expired entry; returns how many. The service calls it now and then."""
        self._last_sweep = now
        dropped = 0
        for key, providers in list(self._entries.items()):
            dropped += self._drop_expired(key, providers, now)
        self.bound_hit = self._count >= self.max_entries
        return dropped

    def _make_room(self, now: float) -> bool:
        if now - self._last_sweep >= self.sweep_every:
            self.expire(now)
        return self._count < self.max_entries

    def _drop_expired(self, key: str, providers: dict[str, float], now: float) -> int:
        stale = [name for name, expiry in providers.items() if expiry <= now]
        for name in stale:
            del providers[name]
        self._count -= len(stale)
        if not providers:
            del self._entries[key]
        return len(stale)
