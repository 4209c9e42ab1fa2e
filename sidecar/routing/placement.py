"""Placement: the home nodes of a key in one region's ring, by rendezvous (highest random weight) hashing.

Rules:
- Pure and deterministic: every node computes the same homes from the same ring, in any process, on any
  Python version. So the hash is blake2b (never Python's `hash`), and node order in the ring does not matter.
- Score(key, node) = mix64(h(key) XOR salt(node)), with salt(node) = h(node name) computed once per ring
  and mix64 the splitmix64 finalizer. Homes are the k highest scores; ties break on the node name.
- Rendezvous moves only what must move: when a node joins, a key moves only if the new node enters its
  top k; when a node leaves, only the keys it was a home of move. About k/N of the keys per node changed.
- A `Ring` is immutable (one per membership snapshot), so it may memoise homes per key; the memo is bounded.
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar, overload

from sidecar.cluster.model import Peer

DEFAULT_K = 3
DEFAULT_MEMO_SIZE = 65_536

_M64 = (1 << 64) - 1
_C1 = 0xBF58476D1CE4E5B9
_C2 = 0x94D049BB133111EB

T = TypeVar("T", Peer, str)


def key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8, person=b"lokal-key").digest())


def node_salt(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8, person=b"lokal-node").digest())


def score(key: str, node_name: str) -> int:
    """The rendezvous weight of one (key, node) pair; homes are the highest."""
    y = ((key_hash(key) ^ node_salt(node_name)) * _C1) & _M64
    return ((y ^ (y >> 27)) * _C2) & _M64


def _name(member: Peer | str) -> str:
    return member if isinstance(member, str) else member.name


class Ring(Generic[T]):
    """The members of one region's ring (peers or plain names) with their salts precomputed."""

    __slots__ = ("_memo", "_memo_size", "_name_set", "_salts", "k", "members", "names")

    def __init__(self, members: Iterable[T], k: int = DEFAULT_K, memo_size: int = DEFAULT_MEMO_SIZE) -> None:
        if k < 1:
            raise ValueError(f"k (home nodes per key) must be >= 1, got {k}")
        unique: dict[str, T] = {}
        for member in members:
            unique[_name(member)] = member
        self.names: tuple[str, ...] = tuple(sorted(unique))
        self.members: tuple[T, ...] = tuple(unique[n] for n in self.names)
        self._name_set = frozenset(self.names)
        self.k = k
        self._salts = [node_salt(n) for n in self.names]
        self._memo: dict[str, tuple[T, ...]] = {}
        self._memo_size = memo_size

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._name_set

    def homes(self, key: str) -> tuple[T, ...]:
        """The k home nodes of `key`, best first (fewer when the ring is smaller than k)."""
        found = self._memo.get(key)
        if found is not None:
            return found
        h = key_hash(key)
        scores = [((y := ((h ^ s) * _C1) & _M64) ^ (y >> 27)) * _C2 & _M64 for s in self._salts]
        best = heapq.nlargest(self.k, zip(scores, self.names, range(len(scores)), strict=True))
        found = tuple(self.members[i] for _, _, i in best)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()  # a cheap bound: the ring is rebuilt on every membership change anyway
        self._memo[key] = found
        return found

    def home_names(self, key: str) -> tuple[str, ...]:
        return tuple(_name(m) for m in self.homes(key))


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
