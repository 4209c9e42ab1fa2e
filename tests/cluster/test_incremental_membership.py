"""Membership built from the changes only: every incremental piece equals what a full rebuild gives.

Random change sequences (seeded) drive the incremental paths (`Membership.updated`, `diff_of`,
`NodeCounts.apply`, `PeerCache.take_changes`, `Ring.updated`, `RingSet.updated`) and compare each step with
the full computation it replaces."""

from __future__ import annotations

import random
import threading
import time

import pytest
from lokal_lab.fake_apiserver import make_node

from sidecar.cluster import ClusterConfig, MembershipSource
from sidecar.cluster import source as source_module
from sidecar.cluster.batcher import MembershipUpdate, SnapshotBatcher, whole
from sidecar.cluster.cache import PeerCache
from sidecar.cluster.counts import NodeCounts
from sidecar.cluster.nodes import NodeProblemLog
from sidecar.membership import Membership, Peer, diff, diff_of
from sidecar.routing.placement import HomeTable, Ring
from sidecar.routing.router import RingSet

SEEDS = range(8)


def random_peer(rng: random.Random, name: str) -> Peer:
    # Few addresses, so that some nodes share one (a misconfiguration lokal must still survive).
    address = rng.choice([None, *(f"10.0.0.{i}" for i in range(12))])
    return Peer(name, address, rng.choice(["r1", "r2", ""]), rng.choice(["z1", "z2"]), rng.random() < 0.8)


def random_changes(rng: random.Random, current: Membership) -> dict[str, Peer | None]:
    changes: dict[str, Peer | None] = {}
    for _ in range(rng.randint(1, 6)):
        name = f"n{rng.randint(0, 24)}"
        changes[name] = None if rng.random() < 0.3 and name in current.peers else random_peer(rng, name)
    return changes


def by_address_is_exact(membership: Membership) -> None:
    holders: dict[str, set[str]] = {}
    for peer in membership.peers.values():
        if peer.address:
            holders.setdefault(peer.address, set()).add(peer.name)
    for address, names in holders.items():
        found = membership.by_address(address)
        assert found is not None and found.name in names and membership.peers[found.name] is found
    assert membership.by_address("10.9.9.9") is None


@pytest.mark.parametrize("seed", SEEDS)
def test_updated_snapshots_and_their_diffs_equal_full_rebuilds(seed: int) -> None:
    rng = random.Random(seed)
    current = Membership("n0")
    counts = NodeCounts()
    for _ in range(60):
        changes = random_changes(rng, current)
        new = current.updated(changes)
        rebuilt = Membership("n0", {**{n: p for n, p in current.peers.items() if n not in changes},
                                    **{n: p for n, p in changes.items() if p is not None}})  # fmt: skip
        assert new == rebuilt and new.me == rebuilt.me
        by_address_is_exact(new)
        assert diff_of(current, new, changes) == diff(current, new)
        for name in changes:
            counts.apply(current.peers.get(name), new.peers.get(name))
        assert counts.fields() == NodeCounts.of(new).fields()
        current = new


def test_a_shared_address_resolves_to_the_node_still_holding_it() -> None:
    first = Membership.of("a", [Peer("a", "10.0.0.1"), Peer("b", "10.0.0.1"), Peer("c", "10.0.0.2")])
    after_b_left = first.updated({"b": None})
    assert after_b_left.by_address("10.0.0.1") == Peer("a", "10.0.0.1")
    after_a_left = first.updated({"a": None})
    assert after_a_left.by_address("10.0.0.1") == Peer("b", "10.0.0.1")
    moved = after_b_left.updated({"a": Peer("a", "10.0.0.3")})
    assert moved.by_address("10.0.0.1") is None and moved.by_address("10.0.0.3") == Peer("a", "10.0.0.3")


def cache() -> PeerCache:
    return PeerCache("a", "ipv4", NodeProblemLog(lambda name, problems: None))


def test_the_cache_hands_out_only_changes_that_did_not_cancel_out() -> None:
    c = cache()
    c.replace([make_node("a", region="r1", zone="z1", address="10.0.0.1")])
    assert set(c.take_changes()) == {"a"}
    c.apply("ADDED", make_node("b", region="r1", zone="z1", address="10.0.0.2"))
    c.apply("DELETED", make_node("b"))  # came and went between two takes: nothing to publish
    c.apply("MODIFIED", make_node("a", region="r1", zone="z2", address="10.0.0.1"))
    c.apply("MODIFIED", make_node("a", region="r1", zone="z1", address="10.0.0.1"))  # and back
    assert c.take_changes() == {}
    c.apply("MODIFIED", make_node("a", region="r1", zone="z3", address="10.0.0.1"))
    ((name, (before, after)),) = c.take_changes().items()
    assert (
        name == "a" and before is not None and after is not None and (before.zone, after.zone) == ("z1", "z3")
    )
    c.replace([])  # a relist without a: gone
    assert c.take_changes() == {"a": (after, None)}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_between_two_flushes_is_one_snapshot_with_the_net_change() -> None:
    published: list[MembershipUpdate] = []
    c = cache()
    batcher = SnapshotBatcher("a", published.append, interval=0.1)
    batcher.attach(c)
    c.replace([make_node("a", region="r1", zone="z1", address="10.0.0.1")])
    batcher.flush()
    for i in range(50):
        c.apply("ADDED", make_node(f"n{i}", region="r1", zone="z1", address=f"10.0.1.{i}"))
    c.apply("DELETED", make_node("n7"))
    update = batcher.flush()
    assert update is not None and len(published) == 2
    assert update.change.joined == tuple(sorted(f"n{i}" for i in range(50) if i != 7))
    assert update.counts["nodes"] == 50 and update.counts["by_zone"] == {"r1/z1": 50}
    assert update.membership == c.snapshot()
    assert batcher.flush() is None  # nothing new: nothing published


def test_the_batcher_thread_waits_out_the_interval_but_not_for_an_urgent_change() -> None:
    published: list[MembershipUpdate] = []
    arrived = threading.Event()
    c = cache()
    clock = Clock()

    def publish(update: MembershipUpdate) -> None:
        published.append(update)
        arrived.set()

    batcher = SnapshotBatcher("a", publish, interval=10.0, clock=clock)
    batcher.attach(c)
    batcher.start()
    try:
        c.replace([make_node("a", region="r1", zone="z1", address="10.0.0.1")])
        batcher.notify(urgent=True)  # the first list: at once
        assert arrived.wait(5)
        arrived.clear()
        c.apply("ADDED", make_node("b", region="r1", zone="z1", address="10.0.0.2"))
        batcher.notify()
        assert not arrived.wait(0.3)  # the interval (10 s on this clock) has not passed
        clock.now = 11.0
        c.apply("ADDED", make_node("c", region="r1", zone="z1", address="10.0.0.3"))
        batcher.notify()  # wakes the thread, which now finds the batch due
        assert arrived.wait(5)
    finally:
        batcher.stop()
        batcher.join(5)
    assert [u.change.joined for u in published] == [("a",), ("b", "c")]


@pytest.mark.parametrize("seed", SEEDS)
def test_updated_rings_equal_rebuilt_rings_and_move_keys_the_same(seed: int) -> None:
    rng = random.Random(seed)
    current = Membership.of("n0", [random_peer(rng, f"n{i}") for i in range(25)])
    rings = RingSet(current)
    for scope in ("r1", "r2", "*"):
        rings.ring(scope)
    keys = [f"sha256:{rng.getrandbits(64):016x}" for _ in range(40)]
    table = HomeTable(rings.ring("r1"))
    for key in keys:
        table.add(key)
    for _ in range(30):
        new = current.updated(random_changes(rng, current))
        updated, rebuilt = rings.updated(new, diff(current, new).names), RingSet(new)
        for scope in ("r1", "r2", "*"):
            mine, reference = updated.ring(scope), rebuilt.ring(scope)
            assert mine.names == reference.names and mine.members == reference.members
            assert [mine.home_names(k) for k in keys] == [reference.home_names(k) for k in keys]
        reference_table = HomeTable(table.ring)
        for key in keys:
            reference_table.add(key)
        change, reference_change = (
            table.change(updated.ring("r1")),
            reference_table.change(Ring(updated.ring("r1").members)),
        )
        for key in change.keys:
            change.apply(key)
        for key in reference_change.keys:
            reference_change.apply(key)
        assert change.commit() == reference_change.commit()
        assert [table.home_names(k) for k in keys] == [reference_table.home_names(k) for k in keys]
        current, rings = new, updated


def test_after_a_failed_batch_the_next_one_is_rebuilt_from_the_whole_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[MembershipUpdate] = []
    real_updated = Membership.updated
    failures = [RuntimeError("a bug while building the snapshot")]

    def updated_failing_once(self: Membership, changes: dict[str, Peer | None]) -> Membership:
        if failures:
            raise failures.pop()  # after the batch's changes were taken from the cache
        return real_updated(self, changes)

    c = cache()
    batcher = SnapshotBatcher("a", published.append, interval=0.0)
    batcher.attach(c)
    c.replace([make_node("a", region="r1", zone="z1", address="10.0.0.1")])
    batcher.flush()
    monkeypatch.setattr(Membership, "updated", updated_failing_once)
    batcher.start()
    try:
        c.apply("ADDED", make_node("b", region="r1", zone="z1", address="10.0.0.2"))
        batcher.notify()  # this batch fails, and b's change is gone from the cache's pending changes
        for _ in range(100):
            if not failures:
                break
            time.sleep(0.02)
        c.apply("ADDED", make_node("c", region="r1", zone="z1", address="10.0.0.3"))
        batcher.notify()
        for _ in range(100):
            if len(published) == 2:
                break
            time.sleep(0.02)
    finally:
        batcher.stop()
        batcher.join(5)
    assert len(published) == 2
    assert published[-1].membership == c.snapshot()  # b is there although its batch failed
    assert published[-1].change.joined == ("b", "c")
    assert published[-1].counts == NodeCounts.of(c.snapshot()).fields()


@pytest.mark.anyio
@pytest.mark.parametrize("log_names", [20_000, 1])
async def test_a_subscriber_that_fell_behind_gets_the_net_change_since_it_last_looked(
    log_names: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_module, "_RECENT_NAMES", log_names)  # 1: the log no longer reaches back
    source = MembershipSource(ClusterConfig(node_name="a"))
    m0 = Membership.of("a", [Peer("a", "10.0.0.1"), Peer("d", "10.0.0.4")])
    source._publish(whole(m0))
    subscription = source.subscribe()
    assert await subscription.__anext__() == (m0, diff(Membership("a"), m0))
    snapshots = [m0]
    for changes in (
        {"b": Peer("b", "10.0.0.2")},
        {"b": None, "c": Peer("c", "10.0.0.3")},  # b came and went while the subscriber looked away
        {"a": Peer("a", "10.0.0.9"), "d": None},
    ):
        new = snapshots[-1].updated(changes)
        source._publish(MembershipUpdate(new, diff(snapshots[-1], new), frozenset(changes)))
        snapshots.append(new)
    membership, change = await subscription.__anext__()
    assert membership is snapshots[-1]
    assert change == diff(m0, snapshots[-1])
    assert (change.joined, change.left, change.relabelled) == (("c",), ("d",), ("a",))
