"""A CRI pull relayed from a peer, on every containerd version (1.6, 1.7, 2.1), and containerd 2.1's
chunked fetch of a relayed layer: the bytes between the nodes, and what lokal guarantees against a lying
peer when a single chunk cannot be checked against the blob's digest.

Two nodes in one zone share one cluster per version (`containerd_matrix`: the module's cluster is built
once per version). On 2.1 every containerd runs with concurrent_layer_fetch_buffer = 1 MiB, so one layer
arrives as parallel open-ended ranged requests.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import LOKAL_PORT, LabCluster, is_local_client, short_digest
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.topology import LabTopology, NodeSpec

from tests.lab.test_cluster import require_cluster

pytestmark = [pytest.mark.lab, pytest.mark.containerd_matrix]

TWO_NODES = LabTopology(
    nodes=(NodeSpec("node-1", "region-a", "zone-a1"), NodeSpec("node-2", "region-a", "zone-a1")),
)
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(containerd_version: str | None) -> Iterator[LabCluster]:
    require_cluster()
    with LabCluster(TWO_NODES) as built:
        yield built


def blob_bytes(image: BuiltImage, digest: str) -> bytes:
    return (image.layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def held_file(cluster: LabCluster, node: str, digest: str) -> Path:
    return cluster.containerd(node).content_root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def chunked_fetch(cluster: LabCluster, node: str, repo: str, digest: str, out: Path) -> dict[str, Any]:
    """containerd 2.1's pattern (1 MiB open-ended ranges, three at a time, a hang-up after each chunk),
    against `node`'s own lokal, from inside `node`."""
    url = f"http://127.0.0.1:{LOKAL_PORT}/v2/{repo}/blobs/{digest}?ns={cluster.registry_name}"
    argv = [sys.executable, "-m", "lokal_lab.chunked_fetch", url, "--chunk", str(MiB), "--parallel", "3",
            "--out", str(out)]
    proc = cluster.lab.run(node, argv, timeout=120, check=False)
    result: dict[str, Any] = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return result


def once_on_2_1(containerd_version: str | None) -> None:
    if containerd_version != "2.1":
        pytest.skip("the client, not containerd, makes 2.1's pattern here: once is enough")


def sent_by(cluster: LabCluster, node: str) -> int:
    """Bytes `node` has sent on its link (its veth end, towards the region's bridge)."""
    return cluster.lab.link_bytes()[f"access:{node}"].b_to_a


def test_a_cri_pull_is_relayed_from_a_peer_and_arrives_byte_exact(
    cluster: LabCluster, tmp_path: Path
) -> None:
    image = build_image(tmp_path / "layout", "v1", [5 * MiB + 123, 700_000], seed=31)
    reference = cluster.push(image, "versions/relayed")
    cluster.pull("node-1", reference)  # from upstream, through node-1's lokal (a miss)
    mark = cluster.upstream_mark()
    seen = len(cluster.pull_events("node-2"))
    result = cluster.pull("node-2", reference)
    assert result.image_ref == image.configs["linux/amd64"].digest
    fetched = [image.configs["linux/amd64"], *image.layers["linux/amd64"]]
    events = cluster.wait_for_pull_events("node-2", [b.digest for b in fetched])[seen:]
    assert [g for g in cluster.upstream_gets(mark) if g.kind == "blob"] == []  # nothing from upstream
    for blob in fetched:
        lines = [e for e in events if e["digest"] == short_digest(blob.digest) and is_local_client(e)]
        assert lines and {e["result"] for e in lines if e["method"] == "GET"} == {"peer"}, lines
        assert held_file(cluster, "node-2", blob.digest).read_bytes() == blob_bytes(image, blob.digest)
    big = [e for e in events if e["digest"] == short_digest(image.layers["linux/amd64"][0].digest)]
    if cluster.containerd("node-2").version.fetches_layers_in_ranges:
        # 2.1 fetched the 5 MiB layer in 1 MiB chunks, and they shared one stream from node-1.
        assert len([e for e in big if e["method"] == "GET"]) >= 5
        gets = [e for e in big if e["method"] == "GET"]
        assert all(e.get("shared_fetch") for e in gets), [e for e in gets if not e.get("shared_fetch")]
    else:
        assert len([e for e in big if e["method"] == "GET"]) == 1


def test_a_relayed_64mib_layer_fetched_in_1mib_chunks_crosses_between_the_nodes_once(
    cluster: LabCluster, tmp_path: Path, containerd_version: str | None
) -> None:
    once_on_2_1(containerd_version)
    image = build_image(tmp_path / "layout", "v1", [64 * MiB], seed=32)
    reference = cluster.push(image, "versions/chunked")
    cluster.pull("node-1", reference)
    layer = image.layers["linux/amd64"][0]
    before = sent_by(cluster, "node-1")
    result = chunked_fetch(cluster, "node-2", "versions/chunked", layer.digest, tmp_path / "out")
    moved = sent_by(cluster, "node-1") - before
    assert result["ok"], result
    assert (tmp_path / "out").read_bytes() == blob_bytes(image, layer.digest)
    print(f"node-1 sent {moved / layer.size:.3f}x the layer for {result['requests']} chunk requests")
    assert moved <= 1.2 * layer.size  # relayed one by one, each chunk dragged the socket buffers: 11.1x


def test_a_lying_peer_never_completes_a_chunked_blob_and_is_quarantined(
    cluster: LabCluster, tmp_path: Path, containerd_version: str | None
) -> None:
    """What lokal guarantees when containerd fetches in chunks: one chunk cannot be checked, but the
    chunk that completes the blob is held until the whole blob, streamed once from the provider, matches
    its digest. A liar's blob never completes, and the liar is quarantined."""
    once_on_2_1(containerd_version)
    image = build_image(tmp_path / "layout", "v1", [6 * MiB], seed=33)
    reference = cluster.push(image, "versions/liar")
    cluster.pull("node-1", reference)
    layer = image.layers["linux/amd64"][0]
    held = held_file(cluster, "node-1", layer.digest)
    data = bytearray(held.read_bytes())
    data[len(data) // 3] ^= 0xFF  # same size, one byte wrong in the second chunk
    held.write_bytes(bytes(data))
    result = chunked_fetch(cluster, "node-2", "versions/liar", layer.digest, tmp_path / "out")
    assert not result["ok"], result  # the chunk that would complete the blob never arrived whole
    assert not (tmp_path / "out").exists()
    log = cluster.lokal_log("node-2").read_text()
    assert '"event":"peer_marked_bad"' in log and '"peer":"node-1"' in log
    assert "sha256:" + hashlib.sha256(bytes(data)).hexdigest() != layer.digest
