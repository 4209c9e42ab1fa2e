"""The home side of share-while-downloading: who is fetching which key right now, with leases. Pure.

A node that is about to fetch a key (its containerd asked for a blob that no peer holds) asks the key's
home nodes with a claim. A home answers from this table:
- nobody is fetching the key in the claim's scope: the asker becomes the claimant (it goes upstream);
- someone is: the asker gets in-progress providers to follow, and is recorded as fetching too, so that
  later askers may follow it (a follower serves from its own growing download: a tree, not a star).

Rules:
- No clock and no I/O: every call takes `now`. Names are node names the service resolved from the
  request's source address, never from a body.
- A scope is a region name (isolate mode, prefer mode with cross-region never) or `CLUSTER` (prefer mode
  with cross-region always); one table serves both, keyed by (scope, key).
- Every entry has a lease of `lease` seconds. The fetcher renews it while its download grows and drops it
  when done; a fetcher that dies simply stops renewing, and its entry is gone within `lease` seconds.
  Expired entries are counted (`expired_total`: the metric of dead claims).
- A follower that asks again is offered only fetchers nearer the upstream download than itself (smaller
  depth): never its own followers, whose bytes come from it (a cycle would stall both). When none is left
  (its sources died) it becomes the claimant.
- Fan-out is bounded: a fetcher is handed to at most `fan_out` followers. When every fetcher is full, the
  least loaded one is handed out anyway (capacity grows by `fan_out` with every follower, so this only
  happens when followers arrive faster than they register).
- Which fetchers an asker is offered, best first: those with room under the fan-out, in the `prefer`
  order the caller gives (same zone, same region, other regions), then nearest the upstream download
  (fewest hops: a wide, shallow tree), then the least loaded. At most `offer` names.
- Memory bound: at most `max_keys` keys. A claim past it records nothing and answers `recorded=False`:
  the asker behaves as before claims existed (it goes upstream; nobody follows it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

CLUSTER = "*"  # the scope of prefer mode with cross-region always: the whole cluster's ring
DEFAULT_LEASE = 10.0  # renewed every second: a loaded node that misses a few renewals keeps its claim
DEFAULT_FAN_OUT = 3
DEFAULT_OFFER = 3
DEFAULT_MAX_KEYS = 50_000


@dataclass(slots=True)
class Fetcher:
    expiry: float
    claimant: bool
    followers: int = 0  # askers this fetcher was handed to as their first choice
    depth: int = 0  # hops from the claimant's upstream download (0: the claimant)


@dataclass(frozen=True, slots=True)
class ClaimAnswer:
    claimant: bool  # the asker is the first fetcher: it goes upstream
    fetching: tuple[str, ...] = ()  # in-progress providers to follow, best first
    recorded: bool = True  # False: the table was full and nothing was recorded


class ClaimTable:
    def __init__(
        self,
        lease: float = DEFAULT_LEASE,
        fan_out: int = DEFAULT_FAN_OUT,
        offer: int = DEFAULT_OFFER,
        max_keys: int = DEFAULT_MAX_KEYS,
    ) -> None:
        if lease <= 0 or fan_out < 1 or offer < 1 or max_keys < 1:
            raise ValueError("claim table: lease must be > 0 and fan_out, offer, max_keys >= 1")
        self.lease = lease
        self.fan_out = fan_out
        self.offer = offer
        self.max_keys = max_keys
        self._table: dict[tuple[str, str], dict[str, Fetcher]] = {}
        self.claims_total = 0  # askers made claimant
        self.follows_total = 0  # askers handed in-progress providers
        self.expired_total = 0  # leases that ran out without a renewal or a release

    def __len__(self) -> int:
        return len(self._table)

    def claim(
        self,
        scope: str,
        key: str,
        asker: str,
        now: float,
        prefer: Callable[[str], int] = lambda name: 0,
    ) -> ClaimAnswer:
        """`asker` is about to fetch `key`: make it the claimant, or hand it fetchers to follow. `prefer`
        ranks a fetcher's name for this asker (lower is better: same zone 0, same region 1, ...)."""
        fetchers = self._live(scope, key, now)
        if fetchers is None:
            if len(self._table) >= self.max_keys:
                return ClaimAnswer(claimant=False, recorded=False)
            fetchers = self._table[(scope, key)] = {}
        mine = fetchers.get(asker)
        if mine is not None and mine.claimant:  # asked again (a retry): it stays the one that fetches
            mine.expiry = now + self.lease
            return ClaimAnswer(claimant=True)
        others = [(name, f) for name, f in fetchers.items() if name != asker]
        if mine is not None:  # a follower asking again (a resume, or 2.1's next chunk): only its sources
            others = [(name, f) for name, f in others if f.depth < mine.depth]
        if not others:
            fetchers[asker] = Fetcher(now + self.lease, claimant=True)
            self.claims_total += 1
            return ClaimAnswer(claimant=True)
        ranked = sorted(
            others, key=lambda item: (item[1].followers >= self.fan_out, prefer(item[0]), item[1].depth,
                                      item[1].followers, item[0])
        )
        source = ranked[0][1]
        source.followers += 1
        if mine is None:
            fetchers[asker] = Fetcher(now + self.lease, claimant=False, depth=source.depth + 1)
            self.follows_total += 1
        else:
            mine.expiry = now + self.lease
        return ClaimAnswer(claimant=False, fetching=tuple(name for name, _ in ranked[: self.offer]))

    def renew(self, scope: str, keys: Sequence[str], node: str, now: float) -> int:
        """`node` is still fetching `keys`: extend its leases (an expired entry comes back as a follower,
        so that it can be followed again). Returns how many were renewed."""
        renewed = 0
        for key in keys:
            fetchers = self._live(scope, key, now)
            if fetchers is None:
                if len(self._table) >= self.max_keys:
                    continue
                fetchers = self._table[(scope, key)] = {}
            entry = fetchers.get(node)
            if entry is None:
                fetchers[node] = Fetcher(now + self.lease, claimant=False)
            else:
                entry.expiry = now + self.lease
            renewed += 1
        return renewed

    def release(self, scope: str, keys: Sequence[str], node: str) -> None:
        """`node` is done with `keys` (committed, advertised as a holder, or gave up)."""
        for key in keys:
            fetchers = self._table.get((scope, key))
            if fetchers is not None and fetchers.pop(node, None) is not None and not fetchers:
                del self._table[(scope, key)]

    def fetching(self, scope: str, key: str, now: float) -> dict[str, Fetcher]:
        """The live fetchers of `key` in `scope` (for `lokal where`)."""
        return dict(self._live(scope, key, now) or {})

    def expire(self, now: float) -> int:
        """Drop every expired lease; returns how many."""
        before = self.expired_total
        for scope, key in list(self._table):
            self._live(scope, key, now)
        return self.expired_total - before

    def _live(self, scope: str, key: str, now: float) -> dict[str, Fetcher] | None:
        fetchers = self._table.get((scope, key))
        if fetchers is None:
            return None
        stale = [name for name, f in fetchers.items() if f.expiry <= now]
        for name in stale:
            del fetchers[name]
        self.expired_total += len(stale)
        if not fetchers:
            del self._table[(scope, key)]
            return None
        return fetchers
