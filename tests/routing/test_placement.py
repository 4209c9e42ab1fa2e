"""Placement: rendezvous homes are stable, balanced enough, and move only what must move."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.membership import Membership, Peer
from sidecar.routing import (
    HomeTable,
    Ring,
    gained_homes,
    home_nodes,
    plan_membership_push,
    plan_push,
)
from sidecar.routing.placement import T
from tests.routing.cluster import digest

KEYS = [digest(f"k{i}") for i in range(3000)]


def names(n: int) -> list[str]:
    return [f"node-{i}" for i in range(n)]


def test_homes_are_k_distinct_ring_members_and_independent_of_ring_order() -> None:
    ring = names(20)
    for key in KEYS[:200]:
        homes = home_nodes(key, ring)
        assert len(homes) == len(set(homes)) == 3
        assert set(homes) <= set(ring)
        assert home_nodes(key, list(reversed(ring))) == homes


def test_a_ring_smaller_than_k_makes_every_member_a_home() -> None:
    assert set(home_nodes(KEYS[0], ["a", "b"])) == {"a", "b"}
    assert home_nodes(KEYS[0], []) == ()


def test_peers_and_names_get_the_same_homes() -> None:
    peers = [Peer(n, f"10.0.0.{i + 1}") for i, n in enumerate(names(12))]
    for key in KEYS[:50]:
        assert tuple(p.name for p in home_nodes(key, peers)) == home_nodes(key, names(12))


def test_placement_is_stable_across_processes_by_a_pinned_value() -> None:
    # blake2b-based, never Python's hash(): pinned so that a change of the function is a visible decision.
    assert home_nodes(digest("pinned"), names(10)) == ("node-2", "node-6", "node-9")


def test_load_is_spread_over_the_ring() -> None:
    ring = Ring(names(30))
    load: dict[str, int] = dict.fromkeys(ring.names, 0)
    for key in KEYS:
        for home in ring.home_names(key):
            load[home] += 1
    mean = 3 * len(KEYS) / 30
    assert max(load.values()) < 1.4 * mean
    assert min(load.values()) > 0.6 * mean


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=4, max_value=60), seed=st.integers(min_value=0, max_value=10_000))
def test_adding_a_node_moves_only_keys_whose_new_homes_include_it_about_k_over_n(
    size: int, seed: int
) -> None:
    old = Ring(names(size))
    new = Ring([*names(size), f"joiner-{seed}"])
    keys = KEYS[:600]
    moved = [k for k in keys if set(old.home_names(k)) != set(new.home_names(k))]
    for key in moved:
        assert f"joiner-{seed}" in new.home_names(key)
        assert gained_homes(key, old, new) == tuple(n for n in new.homes(key) if n == f"joiner-{seed}")
    expected = min(3, size + 1) / (size + 1) * len(keys)
    assert 0.5 * expected - 15 <= len(moved) <= 1.5 * expected + 15


@settings(max_examples=25, deadline=None)
@given(size=st.integers(min_value=5, max_value=60), leaver=st.integers(min_value=0, max_value=59))
def test_removing_a_node_moves_only_the_keys_it_was_a_home_of(size: int, leaver: int) -> None:
    everyone = names(size)
    gone = everyone[leaver % size]
    old, new = Ring(everyone), Ring([n for n in everyone if n != gone])
    for key in KEYS[:300]:
        before, after = old.home_names(key), new.home_names(key)
        if gone in before:
            assert set(before) - {gone} <= set(after)
        else:
            assert after == before


def test_memoised_homes_equal_fresh_ones_after_the_memo_bound_is_hit() -> None:
    ring = Ring(names(15), memo_size=10)
    first = [ring.homes(k) for k in KEYS[:50]]
    assert [ring.homes(k) for k in KEYS[:50]] == first == [home_nodes(k, names(15)) for k in KEYS[:50]]


# --- incremental placement: HomeTable / RingChange ---

POOL = [f"node-{i}" for i in range(40)]
REGIONS = ["r1", "r1", "r2", ""]  # this node's region r1 is the likeliest; "" is an unlabelled node


def drawn_peer(data: st.DataObject, name: str) -> Peer:
    index = POOL.index(name) + 1
    return Peer(
        name,
        data.draw(st.sampled_from([f"10.0.0.{index}", f"10.0.1.{index}", None])),
        data.draw(st.sampled_from(REGIONS)),
        data.draw(st.sampled_from(["z1", "z2"])),
        ready=data.draw(st.sampled_from([True, True, True, False])),
    )


def region_ring(peers: dict[str, Peer], k: int, memo_size: int = 65_536) -> Ring[Peer]:
    return Ring(Membership.of("observer", peers.values()).region_ring("r1"), k, memo_size)


def move(table: HomeTable[T], new: Ring[T]) -> dict[str, list[str]]:
    change = table.change(new)
    for key in change.keys:
        change.apply(key)
    return change.commit()


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_incremental_homes_equal_a_full_recompute_after_any_joins_leaves_and_relabels(
    data: st.DataObject,
) -> None:
    k = data.draw(st.integers(min_value=1, max_value=4), label="k")
    memo_size = data.draw(st.sampled_from([0, 3, 65_536]), label="memo_size")
    key_ids = data.draw(st.lists(st.integers(0, 5000), min_size=1, max_size=30, unique=True), label="keys")
    keys = [digest(f"key-{i}") for i in key_ids]
    members = data.draw(st.lists(st.sampled_from(POOL), unique=True), label="ring")
    peers = {n: drawn_peer(data, n) for n in members}
    table = HomeTable(region_ring(peers, k, memo_size))
    for key in keys:
        table.add(key)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4), label="changes")):
        old_reference = Membership.of("observer", peers.values()).region_ring("r1")
        for op in data.draw(st.lists(st.sampled_from(["join", "leave", "relabel"]), min_size=1, max_size=6)):
            absent = [n for n in POOL if n not in peers]
            if op == "join" and absent:
                name = data.draw(st.sampled_from(absent))
                peers[name] = drawn_peer(data, name)
            elif op == "leave" and peers:
                del peers[data.draw(st.sampled_from(sorted(peers)))]
            elif op == "relabel" and peers:  # region, zone, address or readiness may change
                name = data.draw(st.sampled_from(sorted(peers)))
                peers[name] = drawn_peer(data, name)
        new = region_ring(peers, k, memo_size)
        for key in data.draw(st.lists(st.sampled_from(keys), max_size=5), label="looked up first"):
            new.homes(key)  # a lookup may have memoised some keys on the new ring already
        new_reference = Membership.of("observer", peers.values()).region_ring("r1")
        in_order = list(table)

        gained = move(table, new)

        for key in in_order:
            assert table.homes(key) == home_nodes(key, new_reference, k)
            assert table.homes(key) == tuple(peers[p.name] for p in table.homes(key))  # never a stale peer
        expected: dict[str, list[str]] = {}
        for key in in_order:
            before = {p.name for p in home_nodes(key, old_reference, k)}
            for home in home_nodes(key, new_reference, k):
                if home.name not in before:
                    expected.setdefault(home.name, []).append(key)
        assert gained == expected
        assert plan_push(new, gained) == plan_membership_push(
            Ring(old_reference, k), Ring(new_reference, k), in_order
        )
        if data.draw(st.booleans(), label="local store changes"):  # keys come and go between changes
            table.discard(data.draw(st.sampled_from(keys)))
            table.add(digest(f"key-new-{data.draw(st.integers(0, 5000))}"))


def test_one_join_and_one_leave_rescore_only_the_keys_that_lost_a_home() -> None:
    everyone = names(400)
    old = Ring(everyone)
    table: HomeTable[str] = HomeTable(old)
    for key in KEYS:
        table.add(key)
    new = Ring([*everyone[1:], "joiner"])
    change = table.change(new)
    cost = sum(change.apply(key) for key in change.keys)
    change.commit()
    lost = [k for k in KEYS if "node-0" in old.home_names(k)]
    assert change.joined == ("joiner",) and change.left == {"node-0"}
    assert change.rescored == len(lost) > 0
    # per key: its own step plus one joiner scored; a full scan of the ring only for the keys that lost a home
    assert cost == len(KEYS) * 2 - len(lost) * 2 + len(lost) * len(new)
    assert cost < len(KEYS) * len(new) / 20
    assert all(table.home_names(k) == home_nodes(k, [*everyone[1:], "joiner"]) for k in KEYS)


def test_a_relabelled_home_is_resolved_to_its_new_peer_without_being_counted_as_gained() -> None:
    before = [Peer(n, f"10.0.0.{i + 1}", "r1", "z1") for i, n in enumerate(names(6))]
    after = [Peer(p.name, f"10.0.9.{i + 1}", "r1", "z2") for i, p in enumerate(before)]
    table = HomeTable(Ring(before))
    for key in KEYS[:50]:
        table.add(key)
    assert move(table, Ring(after)) == {}
    assert all(set(table.homes(k)) <= set(after) for k in KEYS[:50])


def test_a_change_of_k_or_a_wholly_new_ring_is_a_full_recompute_with_the_same_answers() -> None:
    table: HomeTable[str] = HomeTable(Ring(names(10)))
    for key in KEYS[:100]:
        table.add(key)
    move(table, Ring(names(10), k=2))
    assert all(table.home_names(k) == home_nodes(k, names(10), 2) for k in KEYS[:100])
    other = [f"other-{i}" for i in range(7)]
    change = table.change(Ring(other, k=2))
    for key in change.keys:
        change.apply(key)
    assert change.rescored == 100
    assert change.commit() and all(table.home_names(k) == home_nodes(k, other, 2) for k in KEYS[:100])


def test_a_ring_change_cannot_commit_over_a_table_that_changed_or_with_keys_not_applied() -> None:
    table: HomeTable[str] = HomeTable(Ring(names(8)))
    for key in KEYS[:10]:
        table.add(key)
    change = table.change(Ring(names(9)))
    for key in change.keys[:5]:
        change.apply(key)
    with pytest.raises(RuntimeError, match="not applied"):
        change.commit()
    for key in change.keys[5:]:
        change.apply(key)
    table.add(KEYS[10])
    with pytest.raises(RuntimeError, match="changed during a ring change"):
        change.commit()
    assert table.ring.names == tuple(sorted(names(8)))  # untouched: still exact for its old ring
    assert all(table.home_names(k) == home_nodes(k, names(8)) for k in KEYS[:11])
