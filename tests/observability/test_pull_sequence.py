"""A scripted pull sequence on node a (local hit, same-zone relay, cross-region relay in prefer mode with
cross-region always, miss): exact metric values on the requesting and the serving nodes, and the `pull`
log lines of the same requests, parsed as JSON."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import pytest

from sidecar.logs import JsonFormatter
from sidecar.oci import digest_of
from tests.observability.cluster import NS, Lab, lab
from tests.observability.layout import (
    CONFIG,
    HOLDINGS,
    IMAGES,
    LAYER1,
    LAYER3,
    MISSING,
    PEERS,
    blob_path,
)

pytestmark = pytest.mark.anyio

SEQUENCE = [CONFIG, LAYER1, LAYER3, MISSING]  # local, same zone (b), other region (d), nobody


@pytest.fixture
async def pulled(caplog: pytest.LogCaptureFixture) -> AsyncIterator[tuple[Lab, list[dict[str, object]]]]:
    caplog.set_level(logging.INFO, logger="lokal")
    async with lab(PEERS, HOLDINGS, images=IMAGES) as cluster:
        answers = [await cluster.get("a", blob_path(blob)) for blob in SEQUENCE]
        assert [status for status, _ in answers] == [200, 200, 200, 404]
        assert [body for _, body in answers[:3]] == SEQUENCE[:3]
        await cluster.wait_finished({"a": 4, "b": 1, "d": 1})
        formatter = JsonFormatter()
        lines = [json.loads(formatter.format(r)) for r in caplog.records if r.getMessage() == "pull"]
        yield cluster, lines


async def test_requests_on_the_pulling_node_count_each_outcome_at_its_tier(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    cluster, _ = pulled
    expected = {
        ("blob", "local", "same_node"): 1,
        ("blob", "peer", "same_zone"): 1,
        ("blob", "peer", "other_region"): 1,
        ("blob", "miss", "upstream"): 1,
    }
    for (kind, result, tier), count in expected.items():
        assert cluster.sample("a", "lokal_requests_total", kind=kind, result=result, tier=tier) == count
    assert cluster.sample("a", "lokal_requests_total", kind="blob", result="peer", tier="same_region") == 0
    assert cluster.sample("a", "lokal_peer_requests_total", kind="blob", result="local",
                          tier="same_node") == 0


async def test_bytes_on_the_pulling_node_are_exact_by_tier_and_direction(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    cluster, _ = pulled
    expected = {
        ("to_containerd", "same_node"): len(CONFIG),
        ("to_containerd", "same_zone"): len(LAYER1),
        ("to_containerd", "other_region"): len(LAYER3),
        ("from_peer", "same_zone"): len(LAYER1),
        ("from_peer", "other_region"): len(LAYER3),
        ("from_peer", "same_node"): 0,
        ("to_peer", "same_zone"): 0,
    }
    for (direction, tier), count in expected.items():
        assert cluster.sample("a", "lokal_bytes_total", direction=direction, tier=tier) == count


async def test_latency_lookup_and_miss_metrics_on_the_pulling_node(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    cluster, _ = pulled
    for tier in ("same_node", "same_zone", "other_region"):
        assert cluster.sample("a", "lokal_time_to_first_byte_seconds_count", tier=tier) == 1
        assert cluster.sample("a", "lokal_transfer_duration_seconds_count", tier=tier) == 1
    assert cluster.sample("a", "lokal_time_to_first_byte_seconds_count", tier="upstream") == 0
    assert cluster.sample("a", "lokal_lookup_duration_seconds_count", outcome="hit") == 2
    assert cluster.sample("a", "lokal_lookup_duration_seconds_count", outcome="miss") == 1
    assert cluster.sample("a", "lokal_misses_total", registry=NS, kind="blob", reason="not_found") == 1
    assert cluster.sample("a", "lokal_relay_digest_mismatches_total") == 0
    assert cluster.sample("a", "lokal_peers_marked_bad_total") == 0


async def test_serving_nodes_count_what_they_served_at_the_asking_peers_tier(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    cluster, _ = pulled
    assert cluster.sample("b", "lokal_peer_requests_total", kind="blob", result="local",
                          tier="same_zone") == 1
    assert cluster.sample("b", "lokal_bytes_total", direction="to_peer", tier="same_zone") == len(LAYER1)
    assert cluster.sample("d", "lokal_peer_requests_total", kind="blob", result="local",
                          tier="other_region") == 1
    assert cluster.sample("d", "lokal_bytes_total", direction="to_peer", tier="other_region") == len(LAYER3)
    for name in ("b", "c", "d"):  # serving peers is not a containerd request: no hit ratio inflation
        for result in ("local", "peer", "miss"):
            for tier in ("same_node", "same_zone", "other_region", "upstream"):
                labels = {"kind": "blob", "result": result, "tier": tier}
                assert cluster.sample(name, "lokal_requests_total", **labels) == 0
    assert cluster.finished("c") == 0  # b ranks first in a's zone; c is never asked


async def test_state_gauges_describe_the_node_and_its_peers(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    cluster, _ = pulled
    info = {"node": "a", "region": "r1", "zone": "z1", "mode": "prefer", "cross_region": "always"}
    assert cluster.sample("a", "lokal_node_info", **info) == 1
    assert cluster.sample("a", "lokal_peers", region="r1", zone="z1", state="ready") == 1
    assert cluster.sample("a", "lokal_peers", region="r1", zone="z2", state="ready") == 1
    assert cluster.sample("a", "lokal_peers", region="r2", zone="z3", state="ready") == 1
    assert cluster.sample("a", "lokal_keys_advertised") == len(cluster.nodes["a"].store.keys()) > 0
    assert cluster.sample("a", "lokal_containerd_connected") == 1


async def test_each_request_logs_one_json_pull_line_with_its_outcome(
    pulled: tuple[Lab, list[dict[str, object]]],
) -> None:
    _, lines = pulled
    mine = [line for line in lines if line["requester"] == "containerd"]
    served = [line for line in lines if line["requester"] == "peer"]
    assert len(mine) == 4 and len(served) == 2
    by_digest = {line["digest"]: line for line in mine}
    local, zone, cross, miss = (by_digest[digest_of(blob).short] for blob in SEQUENCE)
    for line in mine:
        for field in ("kind", "repo", "ns", "digest", "result", "tier", "provider", "provider_zone",
                      "provider_region", "bytes", "ms", "megabytes_per_s", "attempts", "reason", "miss",
                      "ttfb_ms"):
            assert field in line, field
        assert line["kind"] == "blob" and line["repo"] == "app" and line["ns"] == NS
        assert line["event"] == "pull" and line["level"] == "info"
    assert (local["result"], local["tier"], local["provider"], local["bytes"]) == (
        "local", "same_node", None, len(CONFIG))
    assert (zone["result"], zone["tier"], zone["provider"], zone["provider_zone"], zone["provider_region"],
            zone["bytes"], zone["attempts"]) == ("peer", "same_zone", "b", "z1", "r1", len(LAYER1), 1)
    assert (cross["result"], cross["tier"], cross["provider"], cross["provider_zone"],
            cross["provider_region"], cross["bytes"]) == (
        "peer", "other_region", "d", "z3", "r2", len(LAYER3))
    assert isinstance(cross["megabytes_per_s"], float) and cross["megabytes_per_s"] > 0
    assert isinstance(cross["ms"], float)
    assert (miss["result"], miss["tier"], miss["bytes"], miss["miss"]) == (
        "miss", "upstream", 0, "not_found")
    assert miss["reason"] == "no peer in this region or others holds it"
    assert miss["lookup_ms"] is not None and local["lookup_ms"] is None
    assert {(line["provider"], line["result"], line["bytes"]) for line in served} == {
        (None, "local", len(LAYER1)), (None, "local", len(LAYER3))}
