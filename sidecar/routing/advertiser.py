"""The advertiser: telling each key's home nodes (in this node's region) that this node holds it.

Theory of operation: the planning functions are pure. They take keys and rings and return `Batch`es,
one request per home node (chunked when larger than the protocol allows). `Advertiser` is the thin async
shell that keeps the set of local keys and sends plans through a `PeerTransport`.

Rules:
- Startup and every `interval` seconds: a full advertise of every local key (holders expire entries after
  about three intervals, so one lost round is harmless).
- A change of the local store (`added` / `removed`) is sent at once, adds and withdrawals for one home in
  one request.
- A membership change: each node that became a home of some local keys gets exactly those keys.
  Nodes that stopped being homes are not told; their entries expire.
- A failed send is counted and logged, never retried here: the next full advertise repairs it.
- The homes of the local keys live in a `HomeTable`, moved to each new ring incrementally (placement.py),
  so a membership change costs about keys x joined nodes hash mixes, not keys x ring size.
- The event loop is never held for long: placing keys (startup, large additions) and moving the table to
  a new ring run in slices of about `slice_cost` hash mixes with a checkpoint between slices. A lock
  serialises the table's users; plans are made under it, requests are sent outside it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence, Set
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from sidecar.logs import get_logger, log_event
from sidecar.membership import Peer
from sidecar.routing.placement import HomeTable, Ring
from sidecar.routing.protocol import MAX_BODY_BYTES, MAX_KEYS, AdvertiseRequest
from sidecar.routing.transport import PeerTransport, PeerUnavailable

DEFAULT_INTERVAL = 600.0
DEFAULT_WORKERS = 8
# Hash mixes between two checkpoints: a few milliseconds of CPU (a full scan of a 1,667-node ring is 1,667).
DEFAULT_SLICE_COST = 20_000
# Encoded size of one key in a list: the key, two quotes and a comma. Leave room for the envelope.
_BATCH_BYTES = MAX_BODY_BYTES - 1024

_log = get_logger("routing")


@dataclass(frozen=True, slots=True)
class Batch:
    home: Peer
    request: AdvertiseRequest


def _requests(tagged: list[tuple[str, bool]], max_keys: int) -> Iterator[AdvertiseRequest]:
    """Cut (key, is_add) pairs into requests within the protocol's key count and body size limits."""
    add: list[str] = []
    remove: list[str] = []
    size = 0
    for key, is_add in tagged:
        if (add or remove) and (len(add) + len(remove) >= max_keys or size + len(key) + 3 > _BATCH_BYTES):
            yield AdvertiseRequest(tuple(add), tuple(remove))
            add, remove, size = [], [], 0
        (add if is_add else remove).append(key)
        size += len(key) + 3
    if add or remove:
        yield AdvertiseRequest(tuple(add), tuple(remove))


class Placement(Protocol):
    """Where keys live: a `Ring` (any key) or a `HomeTable` (the keys it holds)."""

    def home_names(self, key: str) -> Sequence[str]: ...

    def member(self, name: str) -> Peer: ...


def _group(keys: Iterable[str], names_of: Callable[[str], Iterable[str]]) -> dict[str, list[str]]:
    """Home node name -> its keys. By name: a home's `Peer` is resolved once per batch, not per key."""
    grouped: dict[str, list[str]] = {}
    for key in keys:
        for name in names_of(key):
            found = grouped.get(name)
            if found is None:
                grouped[name] = [key]
            else:
                found.append(key)
    return grouped


def plan_changes(
    ring: Placement, added: Iterable[str] = (), removed: Iterable[str] = (), max_keys: int = MAX_KEYS
) -> list[Batch]:
    """Requests that tell every home node of these keys about them: one per home node (chunked)."""
    adds = _group(added, ring.home_names)
    removes = _group(removed, ring.home_names)
    batches: list[Batch] = []
    for name in sorted(adds.keys() | removes.keys()):
        home = ring.member(name)
        tagged = [(k, True) for k in adds.get(name, ())] + [(k, False) for k in removes.get(name, ())]
        batches.extend(Batch(home, request) for request in _requests(tagged, max_keys))
    return batches


def plan_full(ring: Placement, keys: Iterable[str], max_keys: int = MAX_KEYS) -> list[Batch]:
    """The full advertise: every key to each of its home nodes, one request per home node."""
    return plan_changes(ring, added=keys, max_keys=max_keys)


def plan_membership_push(
    old: Ring[Peer], new: Ring[Peer], keys: Iterable[str], max_keys: int = MAX_KEYS
) -> list[Batch]:
    """After a membership change: each node that gained home duty for some keys gets exactly those.

    The reference form: it scores every key against the whole new ring (keys x ring size hash mixes).
    `Advertiser` gets the same batches from its `HomeTable` incrementally (`plan_push`)."""

    def gained(key: str) -> Iterator[str]:
        before = old.home_names(key)
        return (n for n in new.home_names(key) if n not in before)

    return plan_push(new, _group(keys, gained), max_keys)


def plan_push(new: Ring[Peer], gained: Mapping[str, Sequence[str]], max_keys: int = MAX_KEYS) -> list[Batch]:
    """The push of a membership change from `RingChange.commit()`: node name -> the keys it gained."""
    return [
        Batch(new.member(name), request)
        for name in sorted(gained)
        for request in _requests([(k, True) for k in gained[name]], max_keys)
    ]


@dataclass(slots=True)
class SendReport:
    requests: int = 0
    failed: int = 0
    refused_entries: int = 0  # entries a holder refused: its bound was hit


class Advertiser:
    """Keeps this node's keys advertised to their home nodes in this node's region.

    `keys` given here are placed at once, synchronously (fine for tests and for a ring whose memo already
    knows them); `load` places a large set in slices."""

    def __init__(
        self,
        transport: PeerTransport,
        ring: Ring[Peer],
        keys: Iterable[str] = (),
        max_keys: int = MAX_KEYS,
        workers: int = DEFAULT_WORKERS,
        slice_cost: int = DEFAULT_SLICE_COST,
    ) -> None:
        self.transport = transport
        self.table = HomeTable(ring)
        for key in keys:
            self.table.add(key)
        self.max_keys = max_keys
        self.workers = max(1, workers)
        self.slice_cost = max(1, slice_cost)
        self.total = SendReport()
        self.checkpoints = 0  # pauses taken inside long placement work (tests watch it)
        self._lock: anyio.Lock | None = None

    @property
    def ring(self) -> Ring[Peer]:
        return self.table.ring

    @property
    def keys(self) -> Set[str]:
        """The local keys (a live view: copy it before awaiting)."""
        return self.table.keys()

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        if self._lock is None:  # made on first use, inside the event loop that will use it
            self._lock = anyio.Lock()
        async with self._lock:
            yield

    async def _sliced(self, items: Iterable[str], work: Callable[[str], int]) -> None:
        """Run `work` on every item, pausing at a checkpoint whenever `slice_cost` hash mixes were spent."""
        spent = 0
        for item in items:
            spent += work(item)
            if spent >= self.slice_cost:
                spent = 0
                self.checkpoints += 1
                await anyio.lowlevel.checkpoint()

    async def load(self, keys: Iterable[str]) -> None:
        """Make `keys` the local key set (no requests): placing new keys runs in slices."""
        wanted = dict.fromkeys(keys)
        async with self._exclusive():
            for key in [k for k in self.table if k not in wanted]:
                self.table.discard(key)
            await self._sliced(wanted, self.table.add)

    async def advertise_all(self) -> SendReport:
        async with self._exclusive():
            batches = plan_full(self.table, sorted(self.table), self.max_keys)
        return await self.send(batches)

    async def added(self, keys: Iterable[str]) -> SendReport:
        async with self._exclusive():
            new = [k for k in dict.fromkeys(keys) if k not in self.table]
            await self._sliced(new, self.table.add)
            batches = plan_changes(self.table, added=new, max_keys=self.max_keys)
        return await self.send(batches)

    async def removed(self, keys: Iterable[str]) -> SendReport:
        async with self._exclusive():
            gone = [k for k in dict.fromkeys(keys) if k in self.table]
            batches = plan_changes(self.table, removed=gone, max_keys=self.max_keys)
            for key in gone:
                self.table.discard(key)
        return await self.send(batches)

    async def membership_changed(self, new_ring: Ring[Peer]) -> SendReport:
        """Move the local keys to `new_ring` (incrementally, in slices) and push each gained home its keys."""
        async with self._exclusive():
            change = self.table.change(new_ring)
            await self._sliced(change.keys, change.apply)
            batches = plan_push(new_ring, change.commit(), self.max_keys)
        log_event(
            _log,
            "membership_rehomed",
            logging.DEBUG,
            keys=len(change.keys),
            joined=len(change.joined),
            left=len(change.left),
            rescored=change.rescored,
            pushes=len(batches),
        )
        return await self.send(batches)

    async def send(self, batches: list[Batch]) -> SendReport:
        """Send batches with up to `workers` requests in flight; failures are counted, not raised."""
        report = SendReport()
        pending = iter(batches)

        async def worker() -> None:
            for batch in pending:  # the workers share one iterator: each batch is sent once
                report.requests += 1
                try:
                    reply = await self.transport.advertise(batch.home, batch.request)
                except PeerUnavailable as exc:
                    report.failed += 1
                    log_event(_log, "advertise_failed", logging.DEBUG, home=batch.home.name, error=str(exc))
                    continue
                report.refused_entries += reply.refused

        if self.workers == 1 or len(batches) <= 1:
            await worker()
        else:
            async with anyio.create_task_group() as group:
                for _ in range(min(self.workers, len(batches))):
                    group.start_soon(worker)
        self.total.requests += report.requests
        self.total.failed += report.failed
        self.total.refused_entries += report.refused_entries
        if report.refused_entries:
            log_event(_log, "advertise_refused_by_holder", logging.WARNING, entries=report.refused_entries)
        return report
