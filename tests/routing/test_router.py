"""The Router seam: the one-hop router and the in-memory one give the same answers (a small
conformance kit other parts can trust when they test against the in-memory router)."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from sidecar.routing import InMemoryIndex, Router, RoutingSettings
from tests.routing.cluster import build_cluster, digest

pytestmark = pytest.mark.anyio

KEY = digest("layer")


def one_hop() -> Callable[[str], Router]:
    # no cache: the kit checks fresh answers
    cluster = build_cluster({"a": 5, "b": 5}, RoutingSettings(cache_ttl=0))
    return lambda name: cluster.routers[name]


def in_memory() -> Callable[[str], Router]:
    index = InMemoryIndex()
    return lambda name: index.router(name, name.split("-")[0])


@pytest.mark.parametrize("make", [one_hop, in_memory], ids=["one_hop", "in_memory"])
async def test_router_conformance(make: Callable[[], Callable[[str], Router]]) -> None:
    router = make()
    with anyio.fail_after(5):
        await router("a-n0").start([])  # the startup advertise (nothing held): ready afterwards
        assert router("a-n0").ready()
        assert await router("a-n0").lookup(KEY) == ()
        await router("a-n3").advertise([KEY])
        await router("b-n1").advertise([KEY])
        assert await router("a-n0").lookup(KEY) == ("a-n3",)
        assert await router("b-n2").lookup(KEY) == ("b-n1",)
        await router("a-n3").withdraw([KEY])
        assert await router("a-n0").lookup(KEY) == ()  # isolate / cross-region never
        assert await router("a-n0").lookup(KEY, ["b"]) == ("b-n1",)  # prefer with always


async def test_the_one_hop_router_is_ready_after_its_startup_advertise() -> None:
    cluster = build_cluster({"a": 4})
    router = cluster.routers["a-n1"]
    assert not router.ready()
    with anyio.fail_after(5):
        await router.start([KEY])
    assert router.ready()
    assert await cluster.routers["a-n2"].lookup(KEY) == ("a-n1",)


def test_invalid_routing_settings_name_the_setting() -> None:
    with pytest.raises(ValueError, match="advertise_interval"):
        RoutingSettings(advertise_interval=0)
