"""Metrics in the lab, with real containerd pulls: after a scripted sequence (a miss that goes upstream,
a same-zone relay, a cross-region relay in prefer mode with cross-region always, a local hit), the
counters on the requesting and the serving nodes equal the image's own blob counts and sizes exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lokal_lab.cluster import LabCluster
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.topology import LabTopology, NodeSpec
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.test_cluster import require_cluster

pytestmark = pytest.mark.lab

TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a1"),
        NodeSpec("node-3", "region-b", "zone-b1"),
    ),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LabCluster]:
    require_cluster()
    with LabCluster(TOPOLOGY, topology_mode="prefer", cross_region="always") as lab_cluster:
        yield lab_cluster


def metrics(cluster: LabCluster, node: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a node's /metrics, read as containerd would reach it (its own loopback)."""
    status, body = cluster.http_get(node, "http://127.0.0.1:5050/metrics")
    assert status == 200, body[:200]
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def blobs(image: BuiltImage) -> list[int]:
    """Sizes of what containerd GETs as blobs: the config and the layers."""
    return [image.configs["linux/amd64"].size, *(layer.size for layer in image.layers["linux/amd64"])]


def test_counts_and_bytes_by_tier_equal_the_images_blobs_on_both_sides(
    cluster: LabCluster, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "layout", "v1", [900_000, 400_000, 70_000], seed=4242)
    reference = cluster.push(image, "metrics/app")
    sizes = blobs(image)
    count, total = len(sizes), sum(sizes)
    manifest = image.manifests["linux/amd64"].size
    # A node that lacks the tag resolves it through a holder: it reads the manifest (checked against its
    # digest) for containerd's HEAD by tag, then again for the GET by digest. Both reads cross the link.
    manifest_reads = 2 * manifest

    cluster.pull("node-1", reference)  # nobody has it: every blob is a miss, fetched upstream
    cluster.pull("node-2", reference)  # same zone as node-1
    cluster.pull("node-3", reference)  # another region (prefer, cross-region always)
    layer = image.layers["linux/amd64"][0]
    status, body = cluster.http_get(
        "node-2", f"http://127.0.0.1:5050/v2/metrics/app/blobs/{layer.digest}?ns={cluster.registry_name}"
    )
    assert status == 200 and len(body) == layer.size  # a local hit on node-2
    for node in ("node-1", "node-2", "node-3"):
        cluster.wait_for_pull_events(node, [b.digest for b in image.blobs_for("linux/amd64")])

    one, two, three = (metrics(cluster, n) for n in ("node-1", "node-2", "node-3"))
    ns = cluster.registry_name
    assert value(one, "lokal_requests_total", kind="blob", result="miss", tier="upstream") == count
    # Share while downloading is on: node-1, first to want each blob, claimed it and fetched it upstream.
    assert value(one, "lokal_misses_total", registry=ns, kind="blob", reason="claimed") == count

    assert value(two, "lokal_requests_total", kind="blob", result="peer", tier="same_zone") == count
    assert value(two, "lokal_requests_total", kind="blob", result="local", tier="same_node") == 1
    assert value(two, "lokal_requests_total", kind="manifest", result="peer", tier="same_zone") == 1
    assert value(two, "lokal_bytes_total", direction="from_peer", tier="same_zone") == total + manifest_reads
    assert value(two, "lokal_bytes_total", direction="to_containerd", tier="same_node") == layer.size

    assert value(three, "lokal_requests_total", kind="blob", result="peer", tier="other_region") == count
    from_other_region = value(three, "lokal_bytes_total", direction="from_peer", tier="other_region")
    assert from_other_region == total + manifest_reads

    # The serving side: region-a answered node-2 (same zone) and node-3 (other region), whoever held it.
    served = [one, two]
    to_zone = sum(value(m, "lokal_bytes_total", direction="to_peer", tier="same_zone") for m in served)
    to_region = sum(value(m, "lokal_bytes_total", direction="to_peer", tier="other_region") for m in served)
    assert to_zone == total + manifest_reads  # only node-1 held it when node-2 pulled
    assert to_region == total + manifest_reads
    assert value(two, "lokal_bytes_total", direction="to_peer", tier="same_zone") == 0
    for samples, node in ((one, "node-1"), (two, "node-2"), (three, "node-3")):
        region = "region-b" if node == "node-3" else "region-a"
        info = [labels for (name, labels) in samples if name == "lokal_node_info"]
        assert info and ("region", region) in info[0] and ("node", node) in info[0]
