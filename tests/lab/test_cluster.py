"""LabCluster end to end (real namespaces, containerd, docker-registry, lokal serve, fake apiserver) and the
pure parts of `lokal demo` (where a layer came from, totals, table, JSON)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from lokal_lab import demo
from lokal_lab.cluster import (
    LabCluster,
    UpstreamGet,
    is_local_client,
    node_objects,
    parse_pull_lines,
    parse_registry_log,
    short_digest,
)
from lokal_lab.demo import BlobSpec, LayerRow, NodeRow, UpstreamFetch
from lokal_lab.images import Blob, BuiltImage, build_image
from lokal_lab.processes import wait_for
from lokal_lab.topology import LabTopology, NodeSpec, example_topology

from sidecar.routing.placement import home_nodes
from tests.conftest import REAL_PARTS_MISSING, skip_or_fail
from tests.lab.conftest import netns_names, require_lab

H1 = "sha256:" + "1" * 64
H2 = "sha256:" + "2" * 64


# ---------------------------------------------------------------------------------------------------------
# Pure: the demo's evidence, totals and text


def pull_line(digest: str, result: str, **fields: Any) -> dict[str, Any]:
    line = {
        "event": "pull",
        "kind": "blob",
        "method": "GET",
        "digest": short_digest(digest),
        "result": result,
        "bytes": 0,
        "ms": 1.0,
        "client": "127.0.0.1",
        "ts": "2026-11-27T03:37:19.500Z",
    }
    return {**line, **fields}


def test_layer_sizes_split_the_image_into_several_unequal_layers_adding_up_to_its_size() -> None:
    sizes = demo.layer_sizes(40)
    assert len(sizes) >= 3
    assert sizes == sorted(sizes, reverse=True) and sizes[0] > sizes[-1]
    assert abs(sum(sizes) - 40_000_000) < len(sizes)


@pytest.mark.parametrize("bad", [0, -5, demo.MAX_IMAGE_MB + 1])
def test_layer_sizes_name_the_flag_when_the_size_is_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError, match="--image-mb"):
        demo.layer_sizes(bad)


def test_a_blob_the_registry_served_in_the_nodes_window_came_from_upstream_even_after_a_lokal_miss() -> None:
    blob = BlobSpec("layer 1", H1, 1000)
    lines = [pull_line(H1, "miss", ts="2026-11-27T03:37:19.500Z")]
    ask = demo.event_epoch(lines[0])
    assert ask is not None
    row = demo.classify_blob(
        blob, lines, [UpstreamFetch(H1, 200, 1000), UpstreamFetch(H2, 200, 7)], ask + 2.5
    )
    assert (row.source, row.bytes, row.provider) == ("upstream", 1000, "")
    assert row.seconds == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("tier", "source"),
    [("same_zone", "same zone"), ("same_region", "same region"), ("other_region", "other region")],
)
def test_a_blob_relayed_by_lokal_takes_the_source_of_its_tier_and_names_the_provider(
    tier: str, source: str
) -> None:
    lines = [pull_line(H1, "peer", tier=tier, provider="node-7", bytes=1000, ms=250.0)]
    row = demo.classify_blob(BlobSpec("layer 1", H1, 1000), lines, [UpstreamFetch(H2, 200, 5)])
    assert (row.source, row.bytes, row.provider, row.seconds) == (source, 1000, "node-7", 0.25)


def test_a_blob_served_from_the_nodes_own_store_is_local_and_unmatched_digests_are_unknown() -> None:
    lines = [pull_line(H1, "local", tier="same_node", bytes=10)]
    assert demo.classify_blob(BlobSpec("config", H1, 10), lines, []).source == "local"
    assert demo.classify_blob(BlobSpec("config", H2, 10), lines, []).source == "unknown"


def test_an_upstream_time_that_would_be_negative_is_left_out_rather_than_made_up() -> None:
    lines = [pull_line(H1, "miss")]
    row = demo.classify_blob(BlobSpec("layer 1", H1, 1), lines, [UpstreamFetch(H1, 200, 1)], committed_at=0.0)
    assert row.seconds is None


def sample_nodes() -> list[NodeRow]:
    def row(source: str, size: int) -> LayerRow:
        return LayerRow("layer 1", H1, source, size, 0.5, "node-1" if source != "upstream" else "")

    return [
        NodeRow("node-1", "region-a", "zone-a1", 2.0, (row("upstream", 100), row("upstream", 50))),
        NodeRow("node-2", "region-a", "zone-a1", 0.5, (row("same zone", 100), row("same zone", 50))),
        NodeRow("node-3", "region-b", "zone-b1", 0.9, (row("other region", 100), row("upstream", 50))),
    ]


def test_bytes_by_tier_adds_every_layer_of_every_node_to_its_tier_and_lists_every_tier() -> None:
    tiers = demo.bytes_by_tier(sample_nodes())
    assert tiers == {
        "same_node": 0,
        "same_zone": 150,
        "same_region": 0,
        "other_region": 100,
        "upstream": 200,
        "unknown": 0,
    }


def test_the_summary_compares_upstream_bytes_with_one_full_fetch_per_node_and_keeps_the_json_keys() -> None:
    summary = demo.summarize(
        sample_nodes(), image_bytes=150, upstream_wire_bytes=210, cross_region_wire_bytes=120
    )
    assert summary["baseline_upstream_bytes"] == 450
    assert summary["upstream_bytes"] == 200
    assert summary["upstream_saved_ratio"] == pytest.approx(1 - 200 / 450, abs=1e-4)
    assert summary["cross_region_bytes"] == 100
    assert summary["cross_region_wire_bytes"] == 120
    assert {"image_bytes", "upstream_bytes", "cross_region_bytes", "bytes_by_tier", "nodes"} <= set(summary)
    node = summary["nodes"][2]
    assert (node["name"], node["region"], node["zone"], node["pull_seconds"]) == (
        "node-3",
        "region-b",
        "zone-b1",
        0.9,
    )
    assert {"digest", "source", "bytes", "seconds"} <= set(node["layers"][0])
    json.dumps(summary)  # JSON-ready as it is


def test_the_table_shows_each_node_and_each_layers_source_provider_and_size() -> None:
    table = demo.format_table(sample_nodes())
    assert "node-3  (region-b / zone-b1)  pulled in 0.90 s" in table
    row = next(line for line in table.splitlines() if "other region" in line)
    assert short_digest(H1) in row and "node-1" in row and "100 B" in row
    totals = demo.format_totals(demo.summarize(sample_nodes(), 150, 210, 120))
    assert "without a mirror 450 B" in totals and "56% less" in totals
    assert "cross-region: 100 B relayed by lokal; 120 B on the inter-region links" in totals


def test_human_bytes_uses_decimal_units() -> None:
    assert [demo.human_bytes(n) for n in (5, 1500, 40_000_000, 2_500_000_000)] == [
        "5 B",
        "1.5 kB",
        "40.0 MB",
        "2.5 GB",
    ]


def test_blob_specs_name_manifest_config_and_numbered_layers() -> None:
    manifest = Blob("sha256:" + "a" * 64, 10, "application/vnd.oci.image.manifest.v1+json")
    config = Blob("sha256:" + "b" * 64, 5, "application/vnd.oci.image.config.v1+json")
    layers = [Blob("sha256:" + c * 64, 100, "application/vnd.oci.image.layer.v1.tar") for c in "cd"]
    names = [s.name for s in demo.blob_specs([manifest, config, *layers], layers)]
    assert names == ["manifest", "config", "layer 1", "layer 2"]


def test_event_epoch_reads_lokals_timestamps_and_ignores_garbage() -> None:
    assert demo.event_epoch({"ts": "1970-01-01T00:00:01.250Z"}) == pytest.approx(1.25)
    assert demo.event_epoch({"ts": "yesterday"}) is None
    assert demo.event_epoch({}) is None


def demo_args(**given: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"json": None, "nodes": 5, "image_mb": 40, **given})


def test_the_demo_says_why_and_exits_non_zero_where_the_lab_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(demo, "unsupported_reason", lambda: "the lab needs root (network namespaces)")
    assert demo.run(demo_args()) == demo.EXIT_UNSUPPORTED != 0
    assert "cannot run here: the lab needs root" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "flag"),
    [({"nodes": 2}, "--nodes"), ({"image_mb": 0}, "--image-mb"), ({"containerd": "1.5"}, "--containerd 1.5")],
)
def test_the_demo_rejects_bad_flags_naming_them(
    given: dict[str, int], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.run(demo_args(**given)) == demo.EXIT_BAD_INPUT
    assert flag in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# Pure: the cluster's log readers


REGISTRY_LINE = (
    'time="2026-11-27T03:37:20.249Z" level=info msg="response completed" go.version=go1.19.8 '
    'http.request.host="198.18.0.2:5000" http.request.method=GET http.request.remoteaddr="127.0.0.1:35088" '
    f'http.request.uri="/v2/demo/app/blobs/{H1}" http.request.useragent="containerd/1.6.20~ds1" '
    "http.response.contenttype=application/octet-stream http.response.duration=17.71878ms "
    "http.response.status=200 http.response.written=2007040"
)


def test_registry_log_lines_become_requests_with_digest_size_and_duration() -> None:
    access = f'127.0.0.1 - - [27/Nov/2026:03:37:20 +0000] "GET /v2/demo/app/blobs/{H1} HTTP/1.1" 200 2007040'
    tag_head = REGISTRY_LINE.replace(f"blobs/{H1}", "manifests/v1").replace("method=GET", "method=HEAD")
    found = parse_registry_log("\n".join([REGISTRY_LINE, access, tag_head, "garbage"]))
    assert replace(found[0], seconds=None) == UpstreamGet("GET", "blob", "demo/app", H1, 200, 2007040, None)
    assert found[0].seconds == pytest.approx(0.01771878)
    assert (found[1].method, found[1].kind, found[1].reference) == ("HEAD", "manifest", "v1")
    assert len(found) == 2


def test_pull_lines_are_picked_from_lokals_log_and_torn_or_other_lines_are_skipped() -> None:
    good = json.dumps(pull_line(H1, "peer"))
    text = "\n".join([good, '{"event":"config"}', good[:30], "not json", '{"event":"pull"'])
    assert parse_pull_lines(text) == [json.loads(good)]
    assert is_local_client({"client": "127.0.0.1"}) and not is_local_client({"client": "198.18.1.11"})


def test_node_objects_carry_region_zone_the_lab_address_and_ready() -> None:
    topology = example_topology(3)
    nodes = node_objects(topology, lambda name: {"node-1": "198.18.1.11"}.get(name, "198.18.9.9"))
    labels = nodes[0]["metadata"]["labels"]
    assert labels["topology.kubernetes.io/region"] == "region-a"
    assert labels["topology.kubernetes.io/zone"] == "zone-a1"
    assert {"type": "InternalIP", "address": "198.18.1.11"} in nodes[0]["status"]["addresses"]
    assert {"type": "Ready", "status": "True", "reason": "KubeletReady"} in nodes[0]["status"]["conditions"]


# ---------------------------------------------------------------------------------------------------------
# In the lab: real namespaces, containerd, registry, lokal


def require_cluster() -> None:
    require_lab()
    if REAL_PARTS_MISSING:
        skip_or_fail(f"lab cluster tests: {REAL_PARTS_MISSING}")


@dataclass
class Pulled:
    """One node's pull: its lokal's GET lines for its own containerd, and what the registry served."""

    lines: list[dict[str, Any]]
    upstream: list[UpstreamGet]
    cross_region_bytes: int

    def line(self, digest: str) -> dict[str, Any]:
        return [e for e in self.lines if e["digest"] == short_digest(digest)][-1]

    @property
    def upstream_blobs(self) -> set[str]:
        return {g.reference for g in self.upstream if g.kind == "blob" and g.status in (200, 206)}


def pull(cluster: LabCluster, node: str, reference: str, image: BuiltImage) -> Pulled:
    mark, seen = cluster.upstream_mark(), len(cluster.pull_events(node))
    cross = cluster.lab.cross_region_bytes()
    result = cluster.pull(node, reference)
    assert result.image_ref == image.configs["linux/amd64"].digest
    events = cluster.wait_for_pull_events(node, [b.digest for b in image.blobs_for("linux/amd64")])[seen:]
    lines = [e for e in events if is_local_client(e) and e["method"] == "GET"]
    return Pulled(lines, cluster.upstream_gets(mark), cluster.lab.cross_region_bytes() - cross)


def fetched_blobs(image: BuiltImage) -> set[str]:
    return {b.digest for b in [image.configs["linux/amd64"], *image.layers["linux/amd64"]]}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("images")

    def make(name: str, seed: int) -> BuiltImage:
        return build_image(root / name, "v1", [700_000, 300_000, 90_000], seed=seed)

    yield make


@pytest.mark.lab
def test_a_cluster_comes_up_pulls_through_its_lokal_mirror_and_leaves_nothing_behind(
    images: Any,
) -> None:
    require_cluster()
    image = images("basic", 101)
    with LabCluster(example_topology(3)) as cluster:
        prefix = cluster.lab.lab_id
        assert sorted(n for n in netns_names() if n.startswith(prefix))  # the lab is there
        synced = [
            json.loads(line)
            for line in cluster.lokal_log("node-3").read_text().splitlines()
            if '"membership_synced"' in line
        ]
        assert synced and synced[0]["nodes"] == 3
        reference = cluster.push(image, "basic/app")
        pulled = pull(cluster, "node-1", reference, image)
        processes = cluster.processes()
        assert len(processes) == 1 + 1 + 2 * 3  # apiserver, registry, containerd and lokal per node
    # containerd asked its lokal first (the mirror entry), got a fast miss, then fetched upstream.
    assert pulled.line(image.manifests["linux/amd64"].digest)["result"] in ("local", "miss")
    assert {pulled.line(d)["result"] for d in fetched_blobs(image)} <= {"local", "miss"}
    assert pulled.upstream_blobs == fetched_blobs(image)
    assert [n for n in netns_names() if n.startswith(prefix)] == []
    assert all(p.poll() is not None for p in processes)
    live = subprocess.run(
        ["ps", "-o", "pid=", "-p", ",".join(str(p.pid) for p in processes)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert live == []


PREFER_TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a1"),
        NodeSpec("node-3", "region-a", "zone-a1"),
        NodeSpec("node-4", "region-a", "zone-a2"),
        NodeSpec("node-5", "region-b", "zone-b1"),
    ),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)


@pytest.fixture(scope="module")
def prefer_cluster() -> Iterator[LabCluster]:
    require_cluster()
    with LabCluster(PREFER_TOPOLOGY, topology_mode="prefer", cross_region="never") as cluster:
        yield cluster


@pytest.mark.lab
def test_rolling_pull_in_one_zone_reaches_upstream_only_for_the_first_node(
    prefer_cluster: LabCluster, images: Any, record_property: Any
) -> None:
    image = images("rolling", 201)
    reference = prefer_cluster.push(image, "rolling/app")
    first = pull(prefer_cluster, "node-1", reference, image)
    assert first.upstream_blobs == fetched_blobs(image)
    miss_ms = sorted(e["ms"] for e in first.lines if e["result"] == "miss")
    record_property("miss_404_ms", miss_ms)  # how fast the misses were; measured, not asserted
    print(f"lokal 404s on a cold pull, ms: {miss_ms}")
    for node in ("node-2", "node-3"):
        later = pull(prefer_cluster, node, reference, image)
        assert later.upstream_blobs == set(), f"{node} fetched blobs upstream"
        for digest in fetched_blobs(image):
            line = later.line(digest)
            assert (line["result"], line["tier"]) == ("peer", "same_zone"), line
            assert line["provider"] in ("node-1", "node-2")


@pytest.mark.lab
def test_with_the_upstream_registry_down_a_node_pulls_by_tag_what_a_peer_holds(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("tagpeer", 210)
    reference = prefer_cluster.push(image, "tagpeer/app")  # registry/tagpeer/app:v1, a tag
    pull(prefer_cluster, "node-3", reference, image)
    seen = len(prefer_cluster.pull_events("node-4"))
    with prefer_cluster.upstream_down():
        result = prefer_cluster.pull("node-4", reference)  # by tag, nothing reachable upstream
    assert result.image_ref == image.configs["linux/amd64"].digest
    events = prefer_cluster.pull_events("node-4")[seen:]
    lines = [e for e in events if is_local_client(e) and e["method"] == "GET"]
    # containerd resolves the tag first (HEAD, then GET by digest): lokal answers it from node-3.
    by_tag = [e for e in events if is_local_client(e) and e["kind"] == "manifest" and e["digest"] == "tag:v1"]
    assert by_tag and by_tag[0]["result"] == "peer" and by_tag[0]["provider"] == "node-3", events
    assert {e["result"] for e in lines if e["kind"] == "blob"} == {"peer"}


@pytest.mark.lab
def test_a_same_zone_holder_is_preferred_to_an_other_zone_holder(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("zones", 202)
    reference = prefer_cluster.push(image, "zones/app")
    pull(prefer_cluster, "node-4", reference, image)  # zone-a2 holds it
    via_region = pull(prefer_cluster, "node-1", reference, image)  # zone-a1 now too, via node-4
    assert {via_region.line(d)["tier"] for d in fetched_blobs(image)} == {"same_region"}
    both = pull(prefer_cluster, "node-2", reference, image)  # node-1 (same zone) and node-4 (other zone)
    assert both.upstream_blobs == set()
    for digest in fetched_blobs(image):
        line = both.line(digest)
        assert (line["tier"], line["provider"]) == ("same_zone", "node-1"), line


@pytest.mark.lab
def test_prefer_with_cross_region_never_goes_upstream_for_what_only_another_region_holds(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("never", 203)
    reference = prefer_cluster.push(image, "never/app")
    pull(prefer_cluster, "node-1", reference, image)
    other = pull(prefer_cluster, "node-5", reference, image)
    assert other.upstream_blobs == fetched_blobs(image)
    assert {other.line(d)["result"] for d in fetched_blobs(image)} == {"miss"}


@pytest.mark.lab
def test_prefer_with_cross_region_always_fetches_from_the_other_region(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("always", 204)
    reference = prefer_cluster.push(image, "always/app")
    pull(prefer_cluster, "node-1", reference, image)
    prefer_cluster.stop_lokal("node-5")
    prefer_cluster.start_lokal("node-5", extra_args=["--cross-region", "always"])
    try:
        other = pull(prefer_cluster, "node-5", reference, image)
    finally:
        prefer_cluster.stop_lokal("node-5")
        prefer_cluster.start_lokal("node-5")
    assert other.upstream_blobs == set()
    for digest in fetched_blobs(image):
        line = other.line(digest)
        assert (line["result"], line["tier"]) == ("peer", "other_region"), line
    layer_bytes = sum(b.size for b in image.layers["linux/amd64"])
    assert other.cross_region_bytes >= layer_bytes  # the inter-region links carried them


ISOLATE_TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a2"),
        NodeSpec("node-3", "region-b", "zone-b1"),
    ),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)


@pytest.mark.lab
def test_isolate_mode_sends_not_one_byte_across_regions_and_refuses_the_other_regions_requests(
    images: Any,
) -> None:
    require_cluster()
    image = images("isolate", 301)
    with LabCluster(ISOLATE_TOPOLOGY, topology_mode="isolate") as cluster:
        reference = cluster.push(image, "isolate/app")
        pull(cluster, "node-1", reference, image)
        in_region = pull(cluster, "node-2", reference, image)  # relays still work inside the region
        region_b = pull(cluster, "node-3", reference, image)
        b_address = cluster.lab.address("node-3")
        served_to_b = [
            e for n in ("node-1", "node-2") for e in cluster.pull_events(n) if e.get("client") == b_address
        ]
        layer = image.layers["linux/amd64"][0].digest
        url = f"{cluster.lokal_url('node-1')}/v2/isolate/app/blobs/{layer}?ns={cluster.registry_name}"
        direct, _ = cluster.http_get("node-3", url, headers={"x-lokal-local-only": "1"})
        same_region, _ = cluster.http_get("node-2", url, headers={"x-lokal-local-only": "1"})
    assert {in_region.line(d)["tier"] for d in fetched_blobs(image)} == {"same_region"}
    assert region_b.upstream_blobs == fetched_blobs(image)
    assert {region_b.line(d)["result"] for d in fetched_blobs(image)} == {"miss"}
    assert region_b.cross_region_bytes == 0
    assert served_to_b == []
    assert direct == 403
    assert same_region == 200


@pytest.mark.lab
def test_lokal_demo_writes_the_json_results_and_tears_the_lab_down(tmp_path: Path) -> None:
    require_cluster()
    before = {n for n in netns_names() if n.startswith(f"lk{os.getpid()}")}
    output = tmp_path / "demo.json"
    code = demo.run(demo_args(json=output, nodes=3, image_mb=3))
    assert code == 0
    results = json.loads(output.read_text())
    assert results["upstream_bytes"] <= results["image_bytes"] < results["baseline_upstream_bytes"]
    assert set(results["bytes_by_tier"]) >= {
        "same_node",
        "same_zone",
        "same_region",
        "other_region",
        "upstream",
    }
    assert [n["name"] for n in results["nodes"]] == ["node-1", "node-2", "node-3"]
    assert results["nodes"][2]["layers"][-1]["source"] == "other region"
    assert {n for n in netns_names() if n.startswith(f"lk{os.getpid()}")} == before


@pytest.mark.lab
def test_a_provider_serving_corrupt_bytes_is_caught_and_the_pull_still_completes_with_correct_content(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("corrupt", 205)
    reference = prefer_cluster.push(image, "corrupt/app")
    pull(prefer_cluster, "node-4", reference, image)  # the only holder
    bad = image.layers["linux/amd64"][0]
    held = prefer_cluster.containerd("node-4").content_root / "blobs" / "sha256" / bad.digest.split(":")[1]
    data = bytearray(held.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte wrong: only a hash check can tell
    held.write_bytes(bytes(data))
    # containerd resumes a cut body on top of the bytes it has, so the attempt that met the corrupt
    # peer fails its commit; lokal aborted that ingest, and the kubelet's next attempt starts clean.
    try:
        result = prefer_cluster.pull("node-3", reference)
        first_attempt_failed = False
    except grpc.RpcError:
        first_attempt_failed = True
        result = prefer_cluster.pull("node-3", reference)
    print(f"first attempt failed: {first_attempt_failed}")
    assert result.image_ref == image.configs["linux/amd64"].digest  # containerd verified every digest
    got = prefer_cluster.containerd("node-3").content_root / "blobs" / "sha256" / bad.digest.split(":")[1]
    assert "sha256:" + hashlib.sha256(got.read_bytes()).hexdigest() == bad.digest
    events = prefer_cluster.wait_for_pull_events("node-3", [bad.digest])
    relayed = [e for e in events if e["digest"] == short_digest(bad.digest) and is_local_client(e)]
    assert any(e.get("digest_mismatch") for e in relayed), relayed
    log = prefer_cluster.lokal_log("node-3").read_text()
    assert '"event":"peer_marked_bad"' in log and '"peer":"node-4"' in log


@pytest.mark.lab
def test_lookups_succeed_through_the_other_homes_while_a_home_node_is_down(
    prefer_cluster: LabCluster, images: Any
) -> None:
    image = images("homes", 206)
    reference = prefer_cluster.push(image, "homes/app")
    pull(prefer_cluster, "node-1", reference, image)
    region_a = [n.name for n in PREFER_TOPOLOGY.nodes if n.region == "region-a"]
    homes = {d: home_nodes(d, region_a) for d in fetched_blobs(image)}
    down = max(("node-2", "node-4"), key=lambda n: sum(n in h for h in homes.values()))
    assert any(down in h for h in homes.values())
    prefer_cluster.stop_lokal(down, kill=True)
    try:
        later = pull(prefer_cluster, "node-3", reference, image)
    finally:
        prefer_cluster.start_lokal(down)
    assert later.upstream_blobs == set()
    for digest in fetched_blobs(image):
        line = later.line(digest)
        assert (line["result"], line["provider"]) == ("peer", "node-1"), line


def ingest_bytes(cluster: LabCluster, node: str) -> int:
    """Bytes of the largest blob `node`'s containerd is downloading right now."""
    ingest = cluster.containerd(node).content_root / "ingest"
    sizes = [p.stat().st_size for p in ingest.glob("*/data")] if ingest.exists() else []
    return max(sizes, default=0)


def serving_to(cluster: LabCluster, provider: str, client: str) -> bool:
    """Whether `provider`'s lokal has a connection open from `client` (ss inside its namespace)."""
    out = cluster.lab.run(provider, ["ss", "-Htn", "state", "established", "( sport = :5050 )"]).stdout
    return f"{client}:" in out.decode()


@pytest.mark.lab
def test_a_provider_killed_mid_layer_is_resumed_from_another_provider(
    prefer_cluster: LabCluster, tmp_path: Path
) -> None:
    # A big layer over the shaped inter-region link (200 mbit): slow enough to kill its provider midway.
    image = build_image(tmp_path / "layout", "v1", [40_000_000, 100_000], seed=207)
    big = image.layers["linux/amd64"][0].digest
    reference = prefer_cluster.push(image, "killed/app")
    pull(prefer_cluster, "node-1", reference, image)
    pull(prefer_cluster, "node-2", reference, image)  # two providers in region-a
    prefer_cluster.stop_lokal("node-5")
    prefer_cluster.start_lokal("node-5", extra_args=["--cross-region", "always"])
    b_address = prefer_cluster.lab.address("node-5")
    killed: list[str] = []
    try:
        with ThreadPoolExecutor(1) as pool:
            mark, seen = prefer_cluster.upstream_mark(), len(prefer_cluster.pull_events("node-5"))
            pulling = pool.submit(prefer_cluster.pull, "node-5", reference)
            wait_for(
                lambda: ingest_bytes(prefer_cluster, "node-5") > 4_000_000 or pulling.done(),
                30,
                what="node-5 to be midway through the big layer",
            )
            assert not pulling.done(), "the layer arrived before the provider could be killed"
            provider = next(n for n in ("node-1", "node-2") if serving_to(prefer_cluster, n, b_address))
            prefer_cluster.stop_lokal(provider, kill=True)
            killed.append(provider)
            result = pulling.result(timeout=120)
    finally:
        for node in ("node-5", *killed):
            prefer_cluster.stop_lokal(node)
            prefer_cluster.start_lokal(node)
    assert result.image_ref == image.configs["linux/amd64"].digest
    events = prefer_cluster.wait_for_pull_events("node-5", [big])[seen:]
    lines = [
        e for e in events if e["digest"] == short_digest(big) and is_local_client(e) and e["method"] == "GET"
    ]
    survivor = ({"node-1", "node-2"} - set(killed)).pop()
    assert lines[-1]["result"] == "peer" and lines[-1]["provider"] == survivor, lines
    assert big not in {g.reference for g in prefer_cluster.upstream_gets(mark)}  # resumed, not refetched
