"""Placement: the home nodes of a key in one region's ring, by rendezvous (highest random weight) hashing.

Rules:
- Pure and deterministic: every node computes the same homes from the same ring, in any process, on any
  Python version. So the hash is blake2b (never Python's `hash`), and node order in the ring does not matter.
- Score(key, node) = mix64(h(key) XOR salt(node)), with salt(node) = h(node name) computed once per ring
  and mix64 the splitmix64 finalizer. Homes are the k highest (score, name) pairs: ties break on the name.
- Rendezvous moves only what must move: when a node joins, a key moves only if the new node enters its
  top k; when a node leaves, only the keys it was a home of move. About k/N of the keys per node changed.
- A `Ring` is immutable (one per membership snapshot), so it may memoise homes per key; the memo is bounded
  and holds node names (members are resolved from the ring, so a relabelled peer is never stale).
- `Ring.updated` makes the next snapshot's ring from the nodes that changed: salts are hashed once per node
  name (cached), the rest is C-speed copying, and it records what came and went so that `RingChange` need
  not compare the two rings name by name. When no name came or went, the memo carries over and no key moves.
- `HomeTable` keeps the homes of this node's own keys and moves them to a new ring incrementally
  (`RingChange`): a key is rescored against the whole new ring only if one of its homes left; otherwise only
  the joined nodes are scored against its current k-th best. A change of J joins and L leaves costs about
  keys x J + (k L / N) x keys x N hash mixes instead of keys x N. Each step reports its cost in hash mixes,
  so the async shell can pause between steps (see `advertiser.py`).
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import operator
from collections.abc import Iterable, Iterator, KeysView, Sequence
from typing import Generic, TypeVar, overload

from sidecar.membership import Peer

DEFAULT_K = 3
DEFAULT_MEMO_SIZE = 65_536

_M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

T = TypeVar("T", Peer, str)
V = TypeVar("V")


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, person=b"lokal-key").digest())


def node_salt(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, person=b"lokal-node").digest())


# A node's salt never changes: rings made by `updated` hash only the names that joined.
_cached_salt = functools.lru_cache(maxsize=65_536)(node_salt)


def _pick(mapping: dict[str, V], names: tuple[str, ...]) -> tuple[V, ...]:
    """mapping[n] for every n of names, in C (itemgetter returns a bare value for one name)."""
    if not names:
        return ()
    if len(names) == 1:
        return (mapping[names[0]],)
    picked: tuple[V, ...] = operator.itemgetter(*names)(mapping)
    return picked


def _mix(x: int) -> int:
    y = (x * _C1) & _M64
    return ((y ^ (y >> 27)) * _C2) & _M64


def score(key: str, node_name: str) -> int:
    """The rendezvous weight of one (key, node) pair; homes are the highest."""
    return _mix(key_hash(key) ^ node_salt(node_name))


def _name(member: Peer | str) -> str:
    return member if isinstance(member, str) else member.name


class Ring(Generic[T]):
    """The members of one region's ring (peers or plain names) with their salts precomputed."""

    __slots__ = (
        "_base",
        "_by_name",
        "_joined",
        "_left",
        "_memo",
        "_memo_size",
        "_salt_of",
        "_salts",
        "k",
        "members",
        "names",
    )

    def __init__(self, members: Iterable[T], k: int = DEFAULT_K, memo_size: int = DEFAULT_MEMO_SIZE) -> None:
        if k < 1:
            raise ValueError(f"k (home nodes per key) must be >= 1, got {k}")
        unique: dict[str, T] = {}
        for member in members:
            unique[_name(member)] = member
        self.names: tuple[str, ...] = tuple(sorted(unique))
        self.members: tuple[T, ...] = tuple(unique[n] for n in self.names)
        self._by_name: dict[str, T] = {n: unique[n] for n in self.names}
        self.k = k
        self._salts = [node_salt(n) for n in self.names]
        self._salt_of = dict(zip(self.names, self._salts, strict=True))
        self._memo: dict[str, tuple[str, ...]] = {}
        self._memo_size = memo_size
        self._base: Ring[T] | None = None  # set by `updated`: the ring this one was made from...
        self._joined: tuple[str, ...] = ()  # ...and the names it gained and lost against it
        self._left: frozenset[str] = frozenset()

    def updated(self, upserts: Iterable[T], removed: Iterable[str]) -> Ring[T]:
        """This ring with `upserts` added or replaced (a relabelled peer) and `removed` gone. The Python
        work follows the changes; the rest is C-speed copying. Homes memoised here carry over when no
        name came or went (homes depend on names only)."""
        by_name = dict(self._by_name)
        salt_of = dict(self._salt_of)
        left = {name for name in removed if by_name.pop(name, None) is not None}
        for name in left:
            del salt_of[name]
        joined = []
        for member in upserts:
            name = _name(member)
            if name not in by_name:
                salt_of[name] = _cached_salt(name)
                joined.append(name)
            by_name[name] = member
        ring: Ring[T] = Ring.__new__(Ring)
        ring.k, ring._memo_size = self.k, self._memo_size
        if joined or left:
            ring.names = tuple(sorted(by_name))  # one sorted run plus a few: near-linear, in C
            ring._memo = {}
        else:
            ring.names, ring._memo = self.names, self._memo
        ring.members = _pick(by_name, ring.names)
        ring._by_name = by_name
        ring._salt_of = salt_of
        ring._salts = list(_pick(salt_of, ring.names))
        ring._base, ring._joined, ring._left = self, tuple(sorted(joined)), frozenset(left)
        return ring

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def member(self, name: str) -> T:
        """The member called `name` (KeyError when it is not in this ring)."""
        return self._by_name[name]

    def homes(self, key: str) -> tuple[T, ...]:
        """The k home nodes of `key`, best first (fewer when the ring is smaller than k)."""
        by_name = self._by_name
        return tuple(by_name[n] for n in self.home_names(key))

    def home_names(self, key: str) -> tuple[str, ...]:
        """The names of the k home nodes of `key`, best first. One full scan of the ring, memoised."""
        found = self._memo.get(key)
        if found is not None:
            return found
        h = key_hash(key)
        scores = [((y := ((h ^ s) * _C1) & _M64) ^ (y >> 27)) * _C2 & _M64 for s in self._salts]
        found = tuple(n for _, n in heapq.nlargest(self.k, zip(scores, self.names, strict=True)))
        self._remember(key, found)
        return found

    def _known(self, key: str) -> tuple[str, ...] | None:
        return self._memo.get(key)

    def _remember(self, key: str, names: tuple[str, ...]) -> None:
        # Only this module writes the memo, and only exact homes (the property tests hold it to that).
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # a cheap bound: the ring is rebuilt on every membership change anyway
        self._memo[key] = names


@overload
def home_nodes(key: str, ring: Sequence[Peer], k: int = DEFAULT_K) -> tuple[Peer, ...]: ...
@overload
def home_nodes(key: str, ring: Sequence[str], k: int = DEFAULT_K) -> tuple[str, ...]: ...
def home_nodes(key: str, ring: Sequence[Peer] | Sequence[str], k: int = DEFAULT_K) -> tuple[Peer | str, ...]:
    """The k home nodes of `key` among `ring` (peers or node names), best first. One-shot form of `Ring`."""
    if all(isinstance(m, str) for m in ring):
        return Ring([m for m in ring if isinstance(m, str)], k, memo_size=0).homes(key)
    return Ring([m for m in ring if isinstance(m, Peer)], k, memo_size=0).homes(key)


def gained_homes(key: str, old: Ring[T], new: Ring[T]) -> tuple[T, ...]:
    """The members that are homes of `key` in `new` but were not in `old`: who must be told about it."""
    before = set(old.home_names(key))
    return tuple(m for m in new.homes(key) if _name(m) not in before)


class HomeTable(Generic[T]):
    """The exact homes (names, best first) of a set of keys on `ring`: this node's own keys.

    Not thread-safe and not reentrant: the async shell serialises its callers."""

    def __init__(self, ring: Ring[T]) -> None:
        self.ring: Ring[T] = ring
        self._homes: dict[str, tuple[str, ...]] = {}
        self.version = 0  # bumped by every add and discard, so a stale `RingChange` cannot commit

    def __len__(self) -> int:
        return len(self._homes)

    def __contains__(self, key: object) -> bool:
        return key in self._homes

    def __iter__(self) -> Iterator[str]:
        return iter(self._homes)

    def keys(self) -> KeysView[str]:
        return self._homes.keys()

    def home_names(self, key: str) -> tuple[str, ...]:
        return self._homes[key]

    def member(self, name: str) -> T:
        return self.ring.member(name)

    def homes(self, key: str) -> tuple[T, ...]:
        """The home members of a key of this table (KeyError for other keys), resolved in the current ring."""
        member = self.ring.member
        return tuple(member(n) for n in self._homes[key])

    def add(self, key: str) -> int:
        """Place `key` on the ring; returns the cost in hash mixes (0 when already placed or memoised)."""
        if key in self._homes:
            return 0
        ring = self.ring
        found = ring._known(key)
        cost = 0
        if found is None:
            found, cost = ring.home_names(key), len(ring)
        self._homes[key] = found
        self.version += 1
        return cost

    def discard(self, key: str) -> None:
        if self._homes.pop(key, None) is not None:
            self.version += 1

    def change(self, new: Ring[T]) -> RingChange[T]:
        """Start moving this table to `new`: call `apply` on every key of `change.keys`, then `commit`."""
        return RingChange(self, new)


class RingChange(Generic[T]):
    """One move of a `HomeTable` to a new ring, one key at a time, so that the caller may pause between keys.

    The table is untouched until `commit`: a change abandoned half-way (cancelled) leaves it exact for its
    old ring, and the next change starts from there. Joins and leaves are the difference of the two rings'
    names, so a node that became unready, lost its address or changed region is a leave (or a join) here.
    """

    def __init__(self, table: HomeTable[T], new: Ring[T]) -> None:
        self.old: Ring[T] = table.ring
        old = self.old
        self.table: HomeTable[T] = table
        self.new: Ring[T] = new
        self._version = table.version
        if new._base is old:  # made by old.updated(): it knows what came and went
            self.joined: tuple[str, ...] = new._joined
            self.left: frozenset[str] = new._left
        else:
            self.joined = tuple(n for n in new.names if n not in old)
            self.left = frozenset(n for n in old.names if n not in new)
        self._joined_salts = [(new._salt_of[n], n) for n in self.joined]
        # With no member in common (this node moved to another region, say) scoring the joiners is a full
        # scan anyway; a different k changes every key's home count.
        self._full = old.k != new.k or len(self.joined) >= len(new)
        # No name came or went (a zone or an address changed): every key keeps its homes.
        self._same_names = not (self._full or self.joined or self.left)
        self.keys: tuple[str, ...] = () if self._same_names else tuple(table)
        self._homes: dict[str, tuple[str, ...]] = {}
        self.gained: dict[str, list[str]] = {}  # node name -> keys it became a home of
        self.rescored = 0  # keys scored against the whole new ring

    def apply(self, key: str) -> int:
        """Compute the homes of one key of `keys` on the new ring; returns the cost in hash mixes."""
        before = self.table.home_names(key)
        new = self.new
        after = new._known(key)
        cost = 1
        if after is None:
            if self._full or (self.left and not self.left.isdisjoint(before)):
                after = new.home_names(key)  # lost a home: anyone in the ring may replace it
                cost = max(1, len(new))
                self.rescored += 1
            else:
                after = self._with_joiners(key, before) if self._joined_salts else before
                cost += len(self._joined_salts)
                new._remember(key, after)  # exact; lets lookups (and other tables in one process) reuse it
        self._homes[key] = after
        if after is not before:
            for name in after:
                if name not in before:
                    self.gained.setdefault(name, []).append(key)
        return cost

    def _with_joiners(self, key: str, before: tuple[str, ...]) -> tuple[str, ...]:
        # Every old home stayed, so a member outside `before` still ranks below all of them: the new top k
        # is among `before` and the joiners, and a joiner matters only if it beats the current k-th best.
        h = key_hash(key)
        salt_of = self.table.ring._salt_of
        beats: list[tuple[int, str]] = []
        if len(before) < self.new.k:  # the old ring was smaller than k: every joiner gets in
            for salt, name in self._joined_salts:
                beats.append((_mix(h ^ salt), name))
        else:
            floor = (_mix(h ^ salt_of[before[-1]]), before[-1])
            for salt, name in self._joined_salts:
                y = ((h ^ salt) * _C1) & _M64
                scored = (((y ^ (y >> 27)) * _C2) & _M64, name)
                if scored > floor:
                    beats.append(scored)
            if not beats:
                return before
        ranked = [(_mix(h ^ salt_of[n]), n) for n in before]
        ranked.extend(beats)
        return tuple(n for _, n in heapq.nlargest(self.new.k, ranked))

    def commit(self) -> dict[str, list[str]]:
        """Install the new homes (every key must have been applied); returns node name -> keys it gained."""
        if self.table.version != self._version or self.table.ring is not self.old:
            raise RuntimeError("the home table changed during a ring change; start the change again")
        missing = len(self.keys) - len(self._homes)
        if missing:
            raise RuntimeError(f"ring change committed with {missing} keys not applied")
        self.table.ring = self.new
        if not self._same_names:
            self.table._homes = self._homes
        return self.gained
