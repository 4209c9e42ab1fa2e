"""`--cross-region auto` and the tier caps in the lab: real containerd pulls through shaped links, judged
by the links' own byte counters and the registry's log, never by lokal's own numbers.

One cluster for the module (3 nodes: node-1 and node-2 in region-a, node-3 in region-b), prefer mode with
auto. Each test sets the link speeds it needs (`Lab.set_rate`) and restarts node-3's lokal, so that its
learned speeds start empty, then teaches it what it needs with real pulls:
- upstream speed: node-3 pulls an image nobody holds (a miss), and lokal watches containerd's ingest;
- region speed: node-3 relays from region-a.
node-1 always pulls first, with the upstream link fast, so that region-a holds what node-3 will want.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lokal_lab.cluster import LabCluster, is_local_client, short_digest
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.netplan import interregion_link_name
from lokal_lab.topology import UPSTREAM, LabTopology, NodeSpec

from tests.lab.test_cluster import require_cluster

pytestmark = pytest.mark.lab

MB = 1_000_000
FAST = "400mbit"  # 50 MB/s: well above the 12.5 MB/s auto assumes for a region it has not measured
SLOW = "16mbit"  # 2 MB/s
SLOWER = "4mbit"  # 0.5 MB/s
INTER = interregion_link_name("region-a", "region-b")
TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a2"),
        NodeSpec("node-3", "region-b", "zone-b1"),
    ),
    upstream_rate=FAST,
    interregion_rate=FAST,
    upstream_delay_ms=5,
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LabCluster]:
    require_cluster()
    with LabCluster(TOPOLOGY, topology_mode="prefer", cross_region="auto") as lab_cluster:
        yield lab_cluster


_SEEDS = itertools.count(7000)  # one per image in the module: no two tests share a layer by accident


class Images:
    def __init__(self, cluster: LabCluster, scratch: Path) -> None:
        self.cluster, self.scratch = cluster, scratch

    def push(self, name: str, layer_sizes: list[int]) -> tuple[str, BuiltImage]:
        image = build_image(self.scratch / name, "v1", layer_sizes, seed=next(_SEEDS))
        return self.cluster.push(image, f"auto/{name}"), image


def links(cluster: LabCluster, upstream: str, interregion: str) -> None:
    cluster.lab.set_rate(UPSTREAM, upstream)
    cluster.lab.set_rate(INTER, interregion)


def fresh_node3(cluster: LabCluster, *extra: str) -> None:
    """node-3's lokal restarted: nothing learned yet."""
    cluster.stop_lokal("node-3")
    cluster.start_lokal("node-3", extra_args=extra)


def layer_lines(cluster: LabCluster, node: str, image: BuiltImage) -> list[dict[str, Any]]:
    """The node's pull lines (containerd's GETs) for the image's layers, once all are logged."""
    layers = image.layers["linux/amd64"]
    events = cluster.wait_for_pull_events(node, [layer.digest for layer in layers])
    wanted = {short_digest(layer.digest) for layer in layers}
    lines = [
        e for e in events if is_local_client(e) and e.get("method") == "GET" and e.get("digest") in wanted
    ]
    assert {e["digest"] for e in lines} == wanted, lines
    return lines


def cross_bytes(cluster: LabCluster) -> int:
    return cluster.lab.link_bytes()[INTER].total


def pull_on_node3(cluster: LabCluster, ref: str, image: BuiltImage) -> tuple[list[dict[str, Any]], int, int]:
    """node-3 pulls: its layer lines, the layer GETs upstream answered, the bytes that crossed regions."""
    mark, before = cluster.upstream_mark(), cross_bytes(cluster)
    cluster.pull("node-3", ref)
    crossed = cross_bytes(cluster) - before
    digests = {layer.digest for layer in image.layers["linux/amd64"]}
    gets = sum(1 for g in cluster.upstream_gets(mark) if g.reference in digests and g.status == 200)
    return layer_lines(cluster, "node-3", image), gets, crossed


def test_fast_upstream_slow_interregion_big_blobs_come_from_upstream(
    cluster: LabCluster, tmp_path: Path
) -> None:
    images = Images(cluster, tmp_path)
    links(cluster, upstream=FAST, interregion=SLOW)
    fresh_node3(cluster)
    warm_ref, _ = images.push("warm-fast", [8 * MB])
    cluster.pull("node-3", warm_ref)  # nobody holds it: upstream, and node-3 learns how fast that is
    ref, image = images.push("big-a", [12 * MB, 12 * MB])
    cluster.pull("node-1", ref)

    lines, upstream_gets, crossed = pull_on_node3(cluster, ref, image)
    for line in lines:
        assert line["result"] == "miss" and line["miss"] == "auto_chose_upstream", line
        assert line["auto_choice"] == "upstream" and line["auto_region"] == "region-a"
        assert line["auto_upstream_s"] < line["auto_over_region_s"], line
        assert "upstream faster" in line["reason"]
    assert upstream_gets == 2  # node-3 fetched both layers upstream
    assert crossed < 1 * MB, f"{crossed} bytes crossed regions: layer bytes went over the slow link"


def test_slow_upstream_fast_interregion_blobs_come_from_the_other_region(
    cluster: LabCluster, tmp_path: Path
) -> None:
    images = Images(cluster, tmp_path)
    ref, image = images.push("big-b", [12 * MB, 12 * MB])
    links(cluster, upstream=FAST, interregion=FAST)
    cluster.pull("node-1", ref)
    links(cluster, upstream=SLOW, interregion=FAST)
    fresh_node3(cluster)
    warm_ref, _ = images.push("warm-slow", [3 * MB])
    cluster.pull("node-3", warm_ref)  # node-3 learns that upstream is slow now

    lines, upstream_gets, crossed = pull_on_node3(cluster, ref, image)
    for line in lines:
        assert line["result"] == "peer" and line["tier"] == "other_region", line
        assert line["auto_choice"] == "peer" and line["auto_over_region_s"] < line["auto_upstream_s"]
    assert upstream_gets == 0
    assert crossed >= 24 * MB  # the layers crossed the inter-region link


def test_decisions_follow_a_change_of_link_speeds_within_two_pulls(
    cluster: LabCluster, tmp_path: Path
) -> None:
    """Named bound: after the links change, the first pull may still go the old way (that is how lokal
    measures the change); from the second pull on, every decision goes the new way. That holds when the
    way in use becomes at least 2x slower than lokal's estimate of the other way, as here: the region
    drops from 50 to 0.5 MB/s, and upstream was last measured at 2 MB/s (it is 50 MB/s again by then,
    which lokal learns only by going there)."""
    images = Images(cluster, tmp_path)
    before_ref, before_image = images.push("before", [6 * MB])
    after = [images.push(f"after-{i}", [3 * MB]) for i in range(3)]
    links(cluster, upstream=FAST, interregion=FAST)
    for ref, _ in [(before_ref, before_image), *after]:
        cluster.pull("node-1", ref)
    links(cluster, upstream=SLOW, interregion=FAST)
    fresh_node3(cluster)
    cluster.pull("node-3", images.push("learn-slow", [3 * MB])[0])
    cluster.pull("node-3", before_ref)
    assert all(line["auto_choice"] == "peer" for line in layer_lines(cluster, "node-3", before_image))

    links(cluster, upstream=FAST, interregion=SLOWER)  # the change
    choices = []
    for ref, image in after:
        cluster.pull("node-3", ref)
        (line,) = layer_lines(cluster, "node-3", image)
        choices.append(line.get("auto_choice"))
    assert choices[1:] == ["upstream", "upstream"], choices


def sample_link_rate(cluster: LabCluster, run: Any) -> list[float]:
    """Bytes per second from region-a to region-b over every 1 s window while `run()` runs, from the
    inter-region link's own tx counter (sampled every 50 ms inside the lab namespace)."""
    end = cluster.lab.plan.link(INTER).a
    argv = ["ip", "-n", end.netns, "-s", "-j", "link", "show", "dev", end.ifname]
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            asked = time.monotonic()
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
            answered = time.monotonic()
            if answered - asked < 0.03:  # a slow `ip` (busy machine) would misplace the reading in time
                samples.append(((asked + answered) / 2, int(json.loads(out)[0]["stats64"]["tx"]["bytes"])))
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        run()
    finally:
        done.set()
        thread.join(10)
    rates = []
    for i, (t0, b0) in enumerate(samples):
        for t1, b1 in samples[i + 1 :]:
            if t1 - t0 >= 1.0:
                if t1 - t0 <= 1.2:
                    rates.append((b1 - b0) / (t1 - t0))
                break
    return rates


@pytest.mark.parametrize("which", ["from_other_regions", "to_peers"])
def test_caps_hold_on_the_link_over_every_second(cluster: LabCluster, tmp_path: Path, which: str) -> None:
    cap = 3 * MB
    images = Images(cluster, tmp_path)
    ref, _ = images.push(f"capped-{which}", [18 * MB])
    links(cluster, upstream=FAST, interregion=FAST)
    cluster.pull("node-1", ref)
    if which == "from_other_regions":
        fresh_node3(cluster, "--cross-region", "always", "--cap-from-other-regions", str(cap))
    else:
        cluster.stop_lokal("node-1")
        cluster.start_lokal("node-1", extra_args=["--cap-to-peers", str(cap)])
        fresh_node3(cluster, "--cross-region", "always")

    rates = sample_link_rate(cluster, lambda: cluster.pull("node-3", ref))
    busy = [r for r in rates if r > 0.3 * cap]
    assert len(busy) >= 3, rates  # the relay ran under the cap for several seconds (the link allows 50 MB/s)
    assert max(rates) <= 1.10 * cap, [round(r / MB, 2) for r in rates]
    assert sorted(busy)[len(busy) // 2] >= 0.8 * cap  # and the cap is used, not merely respected
    if which == "to_peers":
        cluster.stop_lokal("node-1")
        cluster.start_lokal("node-1")
