"""A holder exists but a bound says no: each such miss has its own typed category (never `not_found`),
is counted under that reason in lokal_misses_total, and a gate's refusal reaches lokal_limit_hits_total
through the limit reporter's hook. Real HTTP between two in-process nodes; b holds the layer, a pulls.
Refused requests reach lokal_refused_requests_total the same way, through `observe`'s hook."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sidecar.registry.pulls import LIMIT_MISSES, Miss, PullRecord
from sidecar.registry.relay import PeerRelay
from sidecar.security import Gate
from sidecar.serve import Node
from tests.observability.cluster import NS, lab
from tests.observability.layout import LAYER1, PEERS, blob_path

pytestmark = pytest.mark.anyio


def relay_limit_of_zero(a: Node, b: Node) -> None:
    relay = a.relay
    assert isinstance(relay, PeerRelay)
    relay.relays = Gate("relays", 0, a.limits)


def b_already_serves_its_cap(a: Node, b: Node) -> None:
    relay = a.relay
    assert isinstance(relay, PeerRelay)
    relay.relays = Gate("relays", 64, a.limits)  # as `lokal serve` wires it
    relay.max_per_peer = 1
    a.book.started("b")  # one relay from b in flight


def b_is_quarantined(a: Node, b: Node) -> None:
    a.book.failed("b", bad=True)


def b_serves_its_maximum_of_peers(a: Node, b: Node) -> None:
    b.handler.uploads = Gate("peer_uploads", 0, b.limits)


@pytest.mark.parametrize(
    ("setup", "miss", "limit_on"),
    [
        (relay_limit_of_zero, Miss.RELAY_LIMIT, ("a", "relays")),
        (b_already_serves_its_cap, Miss.PER_PEER_CAP, ("a", "relays_per_peer")),
        (b_is_quarantined, Miss.QUARANTINED, None),
        (b_serves_its_maximum_of_peers, Miss.UPLOAD_LIMIT, ("b", "peer_uploads")),
    ],
)
async def test_a_miss_caused_by_a_bound_is_counted_as_that_limit_not_as_not_found(
    setup: Callable[[Node, Node], None], miss: Miss, limit_on: tuple[str, str] | None
) -> None:
    async with lab(PEERS[:2], {"b": [LAYER1]}) as cluster:
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        setup(a, b)
        records: list[PullRecord] = []
        observer = a.handler.pull_observer
        assert observer is not None

        def keep(record: PullRecord) -> None:
            records.append(record)
            observer(record)

        a.handler.pull_observer = keep
        status, _ = await cluster.get("a", blob_path(LAYER1))
        assert status == 404
        await cluster.wait_finished({"a": 1})
        assert [r.miss for r in records] == [miss] and miss in LIMIT_MISSES
        assert cluster.sample("a", "lokal_misses_total", registry=NS, kind="blob", reason=miss.value) == 1
        assert cluster.sample("a", "lokal_misses_total", registry=NS, kind="blob", reason="not_found") == 0
        if limit_on is not None:
            node, limit = limit_on
            assert cluster.sample(node, "lokal_limit_hits_total", limit=limit) == 1


async def test_refused_requests_reach_the_nodes_metrics_by_kind() -> None:
    async with lab(PEERS[:1], {}) as cluster:
        for path in ("/v2/app/manifests/v1?ns=other.io", "/v2/app/manifests/v1?ns=other.io",
                     f"/v2/app/manifests/latest?ns={NS}"):
            assert (await cluster.get("a", path))[0] == 404
        assert cluster.sample("a", "lokal_refused_requests_total", kind="not_mirrored") == 2
        assert cluster.sample("a", "lokal_refused_requests_total", kind="latest") == 1
