"""The advertiser: one request per home node, chunking, changes at once, membership pushes."""

from __future__ import annotations

from collections import defaultdict

import anyio
import anyio.lowlevel
import pytest

from sidecar.membership import Membership, Peer
from sidecar.routing import (
    Advertiser,
    AdvertiseReply,
    AdvertiseRequest,
    LookupReply,
    LookupRequest,
    OneHopRouter,
    Ring,
    RingSet,
    plan_changes,
    plan_full,
    plan_membership_push,
)
from sidecar.routing.advertiser import _BATCH_BYTES
from tests.routing.cluster import build_cluster, digest

KEYS = [digest(f"layer-{i}") for i in range(200)]


def ring_of(n: int) -> Ring[Peer]:
    return Ring([Peer(f"n{i}", f"10.0.0.{i + 1}", "r1") for i in range(n)])


def test_a_full_advertise_sends_one_request_per_home_node_with_exactly_its_keys() -> None:
    ring = ring_of(12)
    batches = plan_full(ring, KEYS)
    assert len(batches) == len({b.home.name for b in batches})
    expected: dict[str, set[str]] = defaultdict(set)
    for key in KEYS:
        for home in ring.home_names(key):
            expected[home].add(key)
    assert {b.home.name: set(b.request.add) for b in batches} == expected


def test_large_batches_are_chunked_by_the_key_limit() -> None:
    ring = ring_of(4)
    batches = plan_full(ring, KEYS, max_keys=7)
    per_home: dict[str, list[int]] = defaultdict(list)
    for b in batches:
        assert len(b.request.add) <= 7
        per_home[b.home.name].append(len(b.request.add))
    for home, sizes in per_home.items():
        total = sum(1 for k in KEYS if home in ring.home_names(k))
        assert sum(sizes) == total and len(sizes) == -(-total // 7)


def test_chunks_also_respect_the_body_size_limit() -> None:
    tags = [f"registry.example/{'x' * 200}/app{i}:{'t' * 100}" for i in range(6000)]
    batches = plan_full(Ring([Peer("solo", "10.0.0.1")]), tags)
    assert len(batches) > 1
    assert all(sum(len(k) + 3 for k in b.request.add) <= _BATCH_BYTES for b in batches)


def test_additions_and_removals_for_one_home_travel_in_one_request() -> None:
    ring = ring_of(3)  # with k=3 every node is a home of every key
    batches = plan_changes(ring, added=KEYS[:2], removed=KEYS[2:4])
    assert len(batches) == 3
    assert all(b.request == AdvertiseRequest(tuple(KEYS[:2]), tuple(KEYS[2:4])) for b in batches)


def test_a_membership_push_goes_only_to_nodes_that_gained_keys_with_exactly_those_keys() -> None:
    old = ring_of(10)
    joiner = Peer("joiner", "10.0.1.1", "r1")
    new = Ring([*old.members, joiner])
    batches = plan_membership_push(old, new, KEYS)
    assert {b.home.name for b in batches} == {"joiner"}
    assert set(batches[0].request.add) == {k for k in KEYS if "joiner" in new.home_names(k)}
    assert batches[0].request.remove == ()


def test_after_a_home_leaves_the_remaining_nodes_that_inherit_keys_are_told() -> None:
    old = ring_of(10)
    new = Ring([p for p in old.members if p.name != "n3"])
    pushed: dict[str, set[str]] = {
        b.home.name: set(b.request.add) for b in plan_membership_push(old, new, KEYS)
    }
    for key in KEYS:
        for home in set(new.home_names(key)) - set(old.home_names(key)):
            assert key in pushed[home]
    assert "n3" not in pushed


class RecordingTransport:
    def __init__(self, refuse: int = 0) -> None:
        self.sent: list[tuple[str, AdvertiseRequest]] = []
        self.refuse = refuse

    async def advertise(self, peer: Peer, request: AdvertiseRequest) -> AdvertiseReply:
        self.sent.append((peer.name, request))
        return AdvertiseReply(len(request.add) - self.refuse, self.refuse)

    async def lookup(self, peer: Peer, request: LookupRequest) -> LookupReply:
        raise AssertionError("the advertiser never looks up")


@pytest.mark.anyio
async def test_the_runner_sends_changes_at_once_and_counts_holder_refusals() -> None:
    transport = RecordingTransport(refuse=1)
    advertiser = Advertiser(transport, ring_of(3), keys=KEYS[:1])
    report = await advertiser.added([KEYS[1], KEYS[0]])  # KEYS[0] is already known: not resent
    assert report.requests == 3 and report.refused_entries == 3
    assert {r.add for _, r in transport.sent} == {(KEYS[1],)}
    transport.sent.clear()
    await advertiser.removed([KEYS[1]])
    assert {r.remove for _, r in transport.sent} == {(KEYS[1],)}
    assert advertiser.keys == {KEYS[0]}


@pytest.mark.anyio
async def test_unreachable_homes_are_counted_and_do_not_stop_the_rest() -> None:
    cluster = build_cluster({"r1": 8})
    router = cluster.routers["r1-n0"]
    dead = cluster.routers["r1-n5"].service.membership.me
    assert dead is not None and dead.address is not None
    cluster.network.down.add(dead.address)
    report = await router.start(KEYS[:50])
    assert report.failed == 1 and report.requests > 1
    assert router.ready()


@pytest.mark.anyio
async def test_after_a_node_joins_lookups_find_keys_through_the_pushed_entries() -> None:
    cluster = build_cluster({"r1": 6})
    holder = cluster.routers["r1-n1"]
    await holder.start(KEYS[:40])
    # a new node joins: everyone adopts the new snapshot, the holder pushes keys the joiner now homes
    joiner = Peer("r1-new", "10.0.9.1", "r1", "r1-z0")
    peers = [*cluster.membership.peers.values(), joiner]
    rings = RingSet(Membership.of("r1-n0", peers))
    new_router = OneHopRouter(
        Membership.of("r1-new", peers),
        cluster.network.transport("10.0.9.1"),
        rings=rings,
        clock=cluster.clock,
    )
    cluster.network.attach("10.0.9.1", new_router.service)
    for name, router in cluster.routers.items():
        await router.membership_changed(Membership.of(name, peers), rings)
    joined_keys = {k for k in KEYS[:40] if "r1-new" in rings.ring("r1").home_names(k)}
    assert joined_keys  # with 7 nodes and k=3 some keys always move to the joiner
    assert new_router.service.store.entries == len(joined_keys)
    for key in joined_keys:
        assert new_router.service.store.lookup(key, cluster.clock()) == ("r1-n1",)
        assert await cluster.routers["r1-n4"].lookup(key) == ("r1-n1",)


def big_ring(n: int, prefix: str = "n") -> Ring[Peer]:
    return Ring([Peer(f"{prefix}{i}", f"10.1.{i // 250}.{i % 250 + 1}", "r1") for i in range(n)])


@pytest.mark.anyio
async def test_placing_many_keys_pauses_for_other_tasks_between_slices() -> None:
    advertiser = Advertiser(RecordingTransport(), big_ring(300), slice_cost=3_000)
    ticks: list[int] = []

    async def other_task() -> None:  # stands in for the blob serving that shares the event loop
        while True:
            ticks.append(advertiser.checkpoints)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as group:
        group.start_soon(other_task)
        await advertiser.load(KEYS)  # 200 keys x 300 hash mixes: 20 slices
        group.cancel_scope.cancel()
    assert advertiser.checkpoints == 200 * 300 // 3_000
    assert len(set(ticks)) >= advertiser.checkpoints  # the other task ran inside every pause
    assert all(advertiser.table.home_names(k) == advertiser.ring.home_names(k) for k in KEYS)


@pytest.mark.anyio
async def test_a_membership_change_pushes_what_the_full_recompute_would_and_checks_in_between() -> None:
    old = big_ring(300)
    transport = RecordingTransport()
    advertiser = Advertiser(transport, old, KEYS, slice_cost=50)
    joiners = [Peer(f"j{i}", f"10.2.0.{i + 1}", "r1") for i in range(5)]
    new = Ring([*[p for p in old.members if p.name not in {"n1", "n2"}], *joiners])
    reference = plan_membership_push(Ring(old.members), Ring(new.members), list(KEYS))
    await advertiser.membership_changed(new)
    assert advertiser.checkpoints > 0
    assert advertiser.ring is new
    assert sorted(transport.sent, key=lambda s: s[0]) == [(b.home.name, b.request) for b in reference]


@pytest.mark.anyio
async def test_a_key_added_during_a_membership_change_reaches_its_homes_on_the_new_ring() -> None:
    transport = RecordingTransport()
    advertiser = Advertiser(transport, big_ring(200), KEYS, slice_cost=100)
    new = big_ring(210)
    late = digest("arrived-during-the-change")
    async with anyio.create_task_group() as group:
        group.start_soon(advertiser.membership_changed, new)
        await anyio.lowlevel.checkpoint()  # the change has started and paused
        group.start_soon(advertiser.added, [late])
    told = {name for name, request in transport.sent if late in request.add}
    assert told >= set(new.home_names(late))
    assert advertiser.table.home_names(late) == new.home_names(late)
