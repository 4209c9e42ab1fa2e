"""Share while downloading (issue 13) in the lab: real containerd per node, real docker-registry behind the
shaped upstream link, lokal on every node. Upstream traffic is counted from the registry's own log.

One cluster (6 nodes: region-a has 4, region-b 2) serves every test; each test starts from empty content
stores and fresh lokals with its own flags, and pulls its own image (distinct seeds), so that nothing
carries over. The node cut off from the network is the last test and restores the network after itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import LabCluster, PullResult, is_local_client, short_digest
from lokal_lab.containerd_versions import default_version
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.processes import wait_for
from lokal_lab.topology import example_topology

from sidecar.containerd.ingest import STALL_TIMEOUT as INGEST_STALL
from sidecar.containerd.ingest import find_ingest, progress
from sidecar.registry.relay import FOLLOW_STALL
from tests.conftest import REAL_PARTS_MISSING, skip_or_fail
from tests.lab.conftest import require_lab

ISOLATE = ["--topology-mode", "isolate", "--cross-region", "never"]
PREFER_ALWAYS = ["--topology-mode", "prefer", "--cross-region", "always"]
PULL_TIMEOUT = 120.0
# What a follower may need beyond a plain upstream pull when its claimant fails: the follow stall bound,
# containerd's retry, and the upstream resume. Generous on a loaded 2-core machine; a follower that waited
# for ever would hit the pull timeout instead.
FAILURE_SLACK = 4 * FOLLOW_STALL + 20.0
RANGED = default_version().fetches_layers_in_ranges  # containerd 2.1: LOKAL_CONTAINERD=2.1


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCluster]:
    require_lab()
    if REAL_PARTS_MISSING:
        skip_or_fail(REAL_PARTS_MISSING)
    with LabCluster(example_topology(6), start_lokals=False) as lab_cluster:
        yield lab_cluster


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("images")


def fresh(cluster: LabCluster, flags: list[str]) -> None:
    """Empty stores, lokal restarted on every node with `flags`."""
    cluster.stop_all_lokals()
    for node in cluster.nodes:
        cluster.reset_node(node)
    cluster.start_lokal(*cluster.nodes, extra_args=flags, timeout=60)


def push(
    cluster: LabCluster, scratch: Path, name: str, sizes: list[int], seed: int
) -> tuple[str, BuiltImage]:
    image = build_image(scratch / name, "v1", sizes, seed=seed)
    return cluster.push(image, f"share/{name}"), image


def layer_digests(image: BuiltImage) -> dict[str, int]:
    blobs = image.blobs_for("linux/amd64")
    manifests = {image.target.digest, image.manifests["linux/amd64"].digest}
    return {b.digest: b.size for b in blobs if b.digest not in manifests}


class Pulls:
    """CRI pulls of one image on several nodes at once, each in its own thread; `wait()` collects them."""

    def __init__(self, cluster: LabCluster, nodes: list[str], reference: str, together: bool = False) -> None:
        barrier = threading.Barrier(len(nodes)) if together else None
        self.results: dict[str, PullResult] = {}
        self.errors: list[BaseException] = []

        def one(node: str) -> None:
            try:
                if barrier is not None:
                    barrier.wait(timeout=30)
                self.results[node] = cluster.pull(node, reference, timeout=PULL_TIMEOUT)
            except BaseException as exc:
                self.errors.append(exc)

        self.threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in nodes]
        for thread in self.threads:
            thread.start()

    def wait(self) -> dict[str, PullResult]:
        for thread in self.threads:
            thread.join(PULL_TIMEOUT + 60)
        assert not self.errors, self.errors[:1]
        assert len(self.results) == len(self.threads)
        return self.results


def pull_all(cluster: LabCluster, nodes: list[str], reference: str) -> dict[str, PullResult]:
    """Every node of `nodes` pulls at once (a barrier releases them together)."""
    return Pulls(cluster, nodes, reference, together=True).wait()


def upstream_blob_bytes(
    cluster: LabCluster, mark: int, digests: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """digest -> (GETs answered, body bytes) from the registry's own log since `mark`."""
    counts = {d: (0, 0) for d in digests}
    for get in cluster.upstream_gets(mark):
        if get.kind == "blob" and get.reference in counts and get.status in (200, 206):
            n, b = counts[get.reference]
            counts[get.reference] = (n + 1, b + get.bytes)
    return counts


def stored_digest_matches(cluster: LabCluster, node: str, digest: str) -> bool:
    path = cluster.containerd(node).content_root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    hasher = hashlib.sha256()
    with open(path, "rb") as blob:
        for chunk in iter(lambda: blob.read(1 << 20), b""):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest() == digest


def own_lines(cluster: LabCluster, node: str, digest: str) -> list[dict[str, Any]]:
    return [
        e for e in cluster.pull_events(node)
        if e.get("digest") == short_digest(digest) and e.get("method") == "GET" and is_local_client(e)
    ]


def explain(cluster: LabCluster, digest: str) -> list[tuple[str, Any, Any, Any, Any]]:
    """What each node's lokal did with `digest`: for an assertion's message."""
    return [
        (node, line.get("claim"), line.get("result"), line.get("provider"), line.get("reason"))
        for node in cluster.nodes for line in own_lines(cluster, node, digest)
    ]


def wait_growing(cluster: LabCluster, node: str, digest: str, at_least: int, timeout: float = 60.0) -> None:
    root = cluster.containerd(node).content_root

    def grown() -> bool:
        ingest = find_ingest(root, digest, "k8s.io")
        state = progress(ingest) if ingest else None
        return state is not None and state.offset >= at_least

    wait_for(grown, timeout, what=f"{node}'s download of {digest[:19]} to pass {at_least} bytes")


# ---------------------------------------------------------------------------------------------------------


TINY_BLOB = 64 * 1024  # a config or a manifest-sized blob


@pytest.mark.parametrize(
    ("flags", "scopes"), [(ISOLATE, 2), (PREFER_ALWAYS, 1)], ids=["isolate", "prefer-always"]
)
def test_a_burst_fetches_each_blob_upstream_once_per_scope(
    cluster: LabCluster, scratch: Path, flags: list[str], scopes: int
) -> None:
    fresh(cluster, flags)
    seed = 100 + scopes
    sizes = [3_000_000, 2_500_000, 2_000_000, 1_500_000]
    reference, image = push(cluster, scratch, f"burst-{scopes}", sizes, seed)
    mark, link_before = cluster.upstream_mark(), cluster.lab.upstream_bytes().b_to_a
    pull_all(cluster, list(cluster.nodes), reference)
    digests = layer_digests(image)
    fetched = upstream_blob_bytes(cluster, mark, digests)
    link = cluster.lab.upstream_bytes().b_to_a - link_before
    # Every byte over the upstream link, headers and the nodes' manifest GETs included. containerd 2.1
    # hangs up on each ranged GET after its chunk: what the registry had in flight crosses the link too.
    assert link <= (1.35 if RANGED else 1.1) * sum(digests.values()) * scopes + 100_000, (link, fetched)
    for digest, size in digests.items():
        gets, sent = fetched[digest]
        why = explain(cluster, digest)
        if RANGED:  # one fetch of a blob is one ranged GET per MiB (the lab's concurrent_layer_fetch_buffer)
            assert gets == scopes * -(-size // (1 << 20)), (digest, fetched[digest], size, why)
        elif size < TINY_BLOB:
            # A blob this small commits in milliseconds: a follower can reach the claimant between the
            # commit and containerd recording it, and fetch it upstream once more. The link bound above
            # still holds; every layer below is held to exactly one fetch per scope.
            assert scopes <= gets <= scopes + 1, (digest, fetched[digest], size, why)
        else:
            assert gets == scopes and sent <= 1.1 * size * scopes, (digest, fetched[digest], size, why)
        for node in cluster.nodes:
            assert stored_digest_matches(cluster, node, digest)
    followed = [
        line for node in cluster.nodes for d in digests for line in own_lines(cluster, node, d)
        if line.get("claim") == "follower" and line.get("result") == "peer"
    ]
    assert followed and all("follow_wait_ms" in line for line in followed)


def test_a_300mb_layer_pulled_by_every_node_at_once(cluster: LabCluster, scratch: Path) -> None:
    fresh(cluster, PREFER_ALWAYS)
    reference, image = push(cluster, scratch, "big", [300_000_000], 300)
    mark, link_before = cluster.upstream_mark(), cluster.lab.upstream_bytes().b_to_a
    pull_all(cluster, list(cluster.nodes), reference)
    digests = layer_digests(image)
    link = cluster.lab.upstream_bytes().b_to_a - link_before
    assert link <= (1.35 if RANGED else 1.1) * sum(digests.values())
    for digest, size in digests.items():
        gets, sent = upstream_blob_bytes(cluster, mark, digests)[digest]
        assert gets == -(-size // (1 << 20)) if RANGED else (gets == 1 and sent <= 1.1 * size)
        for node in cluster.nodes:
            assert stored_digest_matches(cluster, node, digest)


def claimant_fails(
    cluster: LabCluster,
    scratch: Path,
    name: str,
    seed: int,
    fail: Callable[[str], None],
    claimant_timeout: float = PULL_TIMEOUT,
) -> None:
    """node-1 starts the pull and claims the layer; the others follow; then `fail(node-1)`. Every follower
    completes within a plain upstream pull's time plus the failure bound, with a verified blob."""
    fresh(cluster, PREFER_ALWAYS)
    reference, image = push(cluster, scratch, name, [40_000_000], seed)
    digests = layer_digests(image)
    layer = max(digests, key=lambda d: digests[d])
    claimant, followers = cluster.nodes[0], list(cluster.nodes[1:])
    claimant_thread = threading.Thread(
        target=lambda: _quietly(lambda: cluster.pull(claimant, reference, timeout=claimant_timeout)),
        daemon=True,
    )
    claimant_thread.start()
    wait_growing(cluster, claimant, layer, 1)
    following = Pulls(cluster, followers, reference)
    wait_growing(cluster, followers[0], layer, 1_000_000)
    fail(claimant)
    follower_results = following.wait()
    upstream_alone = 40_000_000 * 8 / 100e6  # the layer over the shaped 100 Mbit/s link
    for node in followers:
        assert follower_results[node].seconds < upstream_alone + FAILURE_SLACK, (node, follower_results[node])
        assert stored_digest_matches(cluster, node, layer)
    fell_back = [line for node in followers for line in own_lines(cluster, node, layer)
                 if line.get("claim") in ("follow_failed", "fallback")]
    assert fell_back, "no follower noticed the claimant's failure"
    claimant_thread.join(claimant_timeout + 30)


# containerd 2.1 (concurrent_layer_fetch_buffer) reads a followed layer as many ranged requests to the
# first host that answered, and a failed chunk fails the whole pull there instead of moving on to upstream;
# the kubelet's retry then goes upstream (lokal answers it 404). Known and documented in
# docs/architecture.md; on 1.6 and 1.7 every follower completes.
claimant_failure = pytest.mark.xfail(
    RANGED, reason="containerd 2.1 fails a pull whose followed source dies mid-layer (retry goes upstream)"
)


def _quietly(call: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):  # the claimant's own pull may fail: the point of these tests
        call()


@claimant_failure
def test_followers_finish_when_the_claimants_lokal_is_killed(cluster: LabCluster, scratch: Path) -> None:
    claimant_fails(cluster, scratch, "killed", 401, lambda node: cluster.stop_lokal(node, kill=True))


@claimant_failure
def test_followers_finish_when_the_claimants_pull_is_cancelled(cluster: LabCluster, scratch: Path) -> None:
    # The claimant's CRI call has a deadline that ends mid-layer: containerd cancels that pull, and its
    # ingest stays partial and stops growing. Its lokal keeps running and must end its followers' bodies.
    claimant_fails(cluster, scratch, "cancelled", 402, lambda node: time.sleep(1.5), claimant_timeout=1.5)


def test_an_abandoned_ingest_is_never_served_whole(cluster: LabCluster, scratch: Path) -> None:
    """Upstream sends the right length but a wrong last byte: containerd writes every byte, refuses the
    commit and abandons the ingest (its lease ends and GC removes it). A peer that follows that download
    from its start must never receive the whole blob."""
    fresh(cluster, PREFER_ALWAYS)
    reference, image = push(cluster, scratch, "abandoned", [20_000_000], 403)
    digests = layer_digests(image)
    layer = max(digests, key=lambda d: digests[d])
    hex_part = layer.removeprefix("sha256:")
    registry_blobs = cluster.registry.directory / "data/docker/registry/v2/blobs/sha256"
    with open(registry_blobs / hex_part[:2] / hex_part / "data", "r+b") as blob:
        blob.seek(-1, 2)
        last = blob.read(1)
        blob.seek(-1, 2)
        blob.write(bytes([last[0] ^ 0xFF]))
    claimant = cluster.nodes[0]
    pulling = threading.Thread(
        target=lambda: _quietly(lambda: cluster.pull(claimant, reference, timeout=60)), daemon=True
    )
    pulling.start()
    wait_growing(cluster, claimant, layer, 1)
    url = f"{cluster.lokal_url(claimant)}/v2/share/abandoned/blobs/{layer}?ns={cluster.registry_name}"
    started = time.monotonic()
    status, received = _get_body(cluster, cluster.nodes[1], url)
    pulling.join(90)
    assert status == 200 and 0 < received < digests[layer], (status, received)
    assert time.monotonic() - started < digests[layer] * 8 / 100e6 + INGEST_STALL + 10


_GET_SCRIPT = """
import http.client, json, sys, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
received, status = 0, 0
try:
    connection.request("GET", url.path + "?" + url.query,
                       headers={"x-lokal-local-only": "1", "x-lokal-growing": "1"})
    response = connection.getresponse()
    status = response.status
    while True:
        chunk = response.read1(1 << 20)
        if not chunk:
            break
        received += len(chunk)
except Exception:
    pass
print(json.dumps([status, received]))
"""


def _get_body(cluster: LabCluster, from_node: str, url: str) -> tuple[int, int]:
    """GET `url` as a follower would, from inside `from_node`'s namespace: (status, body bytes received)."""
    import json
    import sys

    proc = cluster.lab.run(from_node, [sys.executable, "-c", _GET_SCRIPT, url], timeout=60)
    status, received = json.loads(proc.stdout)
    return int(status), int(received)


@claimant_failure
def test_followers_finish_when_the_claimant_is_cut_off(cluster: LabCluster, scratch: Path) -> None:
    rules = [["INPUT", "!", "-i", "lo", "-j", "DROP"], ["OUTPUT", "!", "-o", "lo", "-j", "DROP"]]
    claimant = cluster.nodes[0]

    def cut(node: str) -> None:
        for rule in rules:
            cluster.lab.run(node, ["iptables", "-I", *rule])

    try:
        claimant_fails(cluster, scratch, "cut", 404, cut, claimant_timeout=20.0)
    finally:
        for rule in rules:
            cluster.lab.run(claimant, ["iptables", "-D", *rule], check=False)
