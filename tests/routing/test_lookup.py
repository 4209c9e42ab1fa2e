"""Lookup: one parallel round to the homes, first answer or merge, dead homes, other regions, cache,
single-flight. Every test is bounded by fail_after so that a regression hangs no one."""

from __future__ import annotations

import anyio
import pytest

from sidecar.routing import RoutingSettings
from tests.routing.cluster import Cluster, build_cluster, digest

pytestmark = pytest.mark.anyio

KEY = digest("popular-layer")


def address(cluster: Cluster, name: str) -> str:
    peer = cluster.membership.peers[name]
    assert peer.address is not None
    return peer.address


def homes(cluster: Cluster, region: str, key: str = KEY) -> tuple[str, ...]:
    return cluster.routers[f"{region}-n0"].rings.ring(region).home_names(key)


async def test_a_hit_asks_the_k_homes_once_and_returns_the_provider() -> None:
    cluster = build_cluster({"r1": 10})
    await cluster.routers["r1-n7"].advertise([KEY])
    with anyio.fail_after(5):
        found = await cluster.routers["r1-n2"].find(KEY)
    assert found.providers == ("r1-n7",) and found.region == "r1" and found.messages == 3


async def test_a_miss_costs_one_round_of_k_messages() -> None:
    cluster = build_cluster({"r1": 10})
    before = cluster.network.messages["lookup"]
    with anyio.fail_after(5):
        found = await cluster.routers["r1-n2"].find(KEY)
    assert found.providers == () and found.region is None
    assert found.messages == 3 == cluster.network.messages["lookup"] - before


async def test_answers_within_the_merge_window_are_merged() -> None:
    cluster = build_cluster({"r1": 10}, RoutingSettings(merge_window=0.5))
    # two providers whose entries reach different homes: give each home its own view
    first, second, _ = homes(cluster, "r1")
    now = cluster.clock()
    cluster.routers[first].service.store.advertise("r1-n8", [KEY], [], now)
    cluster.routers[second].service.store.advertise("r1-n9", [KEY], [], now)
    with anyio.fail_after(5):
        found = await cluster.routers["r1-n1"].find(KEY)
    assert set(found.providers) == {"r1-n8", "r1-n9"}


async def test_the_first_answer_with_providers_wins_over_a_slow_home() -> None:
    cluster = build_cluster({"r1": 10}, RoutingSettings(merge_window=0.001))
    first, second, _ = homes(cluster, "r1")
    now = cluster.clock()
    cluster.routers[first].service.store.advertise("r1-n8", [KEY], [], now)
    cluster.routers[second].service.store.advertise("r1-n9", [KEY], [], now)
    cluster.network.delay[address(cluster, second)] = 1.0
    with anyio.fail_after(5):
        found = await cluster.routers["r1-n1"].find(KEY)
    assert found.providers == ("r1-n8",)


async def test_a_silent_dead_home_does_not_stall_the_lookup() -> None:
    cluster = build_cluster({"r1": 10}, RoutingSettings(lookup_timeout=0.05))
    await cluster.routers["r1-n7"].advertise([KEY])
    first = homes(cluster, "r1")[0]
    cluster.network.silent.add(address(cluster, first))
    with anyio.fail_after(5):
        assert await cluster.routers["r1-n2"].lookup(KEY) == ("r1-n7",)
        assert await cluster.routers["r1-n2"].lookup(digest("nobody-has-it")) == ()


async def test_all_homes_down_is_a_miss_not_an_error() -> None:
    cluster = build_cluster({"r1": 6})
    await cluster.routers["r1-n4"].advertise([KEY])
    for home in homes(cluster, "r1"):
        cluster.network.down.add(address(cluster, home))
    with anyio.fail_after(5):
        assert await cluster.routers["r1-n5"].lookup(KEY) == ()


async def test_a_miss_at_home_goes_on_to_the_allowed_regions_in_order() -> None:
    cluster = build_cluster({"a": 6, "b": 6, "c": 6})
    await cluster.routers["b-n3"].advertise([KEY])
    await cluster.routers["c-n2"].advertise([KEY])
    asker = cluster.routers["a-n1"]
    with anyio.fail_after(5):
        assert await asker.lookup(KEY) == ()  # cross-region not allowed: a miss
        found = await asker.find(KEY, ["c", "b"])
    assert found.providers == ("c-n2",) and found.region == "c" and found.messages == 6


async def test_the_own_region_is_asked_first_and_other_regions_only_on_a_miss() -> None:
    cluster = build_cluster({"a": 6, "b": 6})
    await cluster.routers["a-n3"].advertise([KEY])
    await cluster.routers["b-n3"].advertise([KEY])
    with anyio.fail_after(5):
        found = await cluster.routers["a-n1"].find(KEY, ["b"])
    assert found.providers == ("a-n3",) and found.messages == 3


async def test_positive_answers_are_cached_for_a_few_seconds_and_misses_are_not() -> None:
    cluster = build_cluster({"r1": 8}, RoutingSettings(cache_ttl=5))
    asker = cluster.routers["r1-n1"]
    with anyio.fail_after(5):
        assert (await asker.find(KEY)).messages == 3  # miss
        await cluster.routers["r1-n6"].advertise([KEY])
        assert (await asker.find(KEY)).providers == ("r1-n6",)  # the miss was not cached
        again = await asker.find(KEY)
        assert again.cached and again.messages == 0 and again.providers == ("r1-n6",)
        cluster.clock.now += 6
        assert (await asker.find(KEY)).messages == 3


async def test_concurrent_lookups_of_one_key_share_one_round() -> None:
    cluster = build_cluster({"r1": 8})
    await cluster.routers["r1-n6"].advertise([KEY])
    for home in homes(cluster, "r1"):
        cluster.network.delay[address(cluster, home)] = 0.05
    asker = cluster.routers["r1-n1"]
    before = cluster.network.messages["lookup"]
    results: list[tuple[str, ...]] = []

    async def one() -> None:
        results.append(await asker.lookup(KEY))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(10):
                group.start_soon(one)
    assert results == [("r1-n6",)] * 10
    assert cluster.network.messages["lookup"] - before == 3


async def test_a_withdrawn_key_is_no_longer_found_after_the_cache_expires() -> None:
    cluster = build_cluster({"r1": 8}, RoutingSettings(cache_ttl=1))
    holder = cluster.routers["r1-n6"]
    await holder.advertise([KEY])
    with anyio.fail_after(5):
        assert await cluster.routers["r1-n1"].lookup(KEY) == ("r1-n6",)
        await holder.withdraw([KEY])
        cluster.clock.now += 2
        assert await cluster.routers["r1-n1"].lookup(KEY) == ()
