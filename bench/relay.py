"""bench/relay: relay throughput through a peer against a direct fetch from that peer, in one run.

    .venv/bin/python bench/relay.py            # 200 MB blob, 7 rounds; ~1-2 min
    .venv/bin/python bench/relay.py --quick    # 50 MB blob, 3 rounds; ~40 s

The lab (lokal_lab.cluster.LabCluster, example topology, no delay link: both nodes in one region and one
zone) runs lokal on every node. Node A pulls an image of one large layer through CRI, so A's containerd
holds the blob. Then, from inside node B's namespace (where containerd on B would ask), a client
(`_nsclient.py`, one keep-alive connection, body read into a reused buffer) fetches that blob:

- `relay`: from B's own lokal at 127.0.0.1:5050, as containerd on B does: B's lokal looks the blob up,
  GETs it from A with the local-only header, verifies the digest while relaying, and streams it on;
- `direct`: from A's lokal at A's lab address with the local-only header, as B's lokal itself does.

Each round runs both (order alternated per round), `fetches` times each; throughput is bytes / seconds of
each fetch. Reported: per-round ratio relay/direct and its median (target >= 0.8x, docs/performance.md),
MB/s medians, and the CPU seconds per GB of A's and B's lokal processes (from /proc) per way.
B's containerd is never asked, so the blob stays a relay every round (checked from B's `pull` lines).
Output: bench/results/relay.json (relay-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lokal_lab.images import build_image  # noqa: E402

from bench._harness import (  # noqa: E402
    cpu_seconds,
    progress,
    rounded,
    terminate,
)
from bench._lab import run_client  # noqa: E402

TARGET_RATIO = 0.8
MB = 1_000_000
LOCAL_ONLY_HEADER = "x-lokal-local-only"  # sidecar.registry.handler.LOCAL_ONLY_HEADER
WAYS = ("relay", "direct")


@dataclass(frozen=True)
class Profile:
    blob_mb: int
    rounds: int
    fetches: int  # per way per round


FULL = Profile(blob_mb=200, rounds=7, fetches=2)
QUICK = Profile(blob_mb=50, rounds=3, fetches=2)


# ---- pure ---------------------------------------------------------------------------------------


def order_of_round(index: int) -> tuple[str, str]:
    """relay first in even rounds, direct first in odd ones."""
    return WAYS if index % 2 == 0 else (WAYS[1], WAYS[0])


def throughput(fetches: Sequence[dict[str, Any]], size: int) -> float:
    """MB/s over the fetches that returned the whole blob with 200; NaN if none did."""
    good = [f for f in fetches if f["status"] == 200 and f["bytes"] == size]
    if not good:
        return float("nan")
    return float(sum(f["bytes"] for f in good) / sum(f["s"] for f in good) / MB)


def summarize(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["relay"]["mb_s"] / r["direct"]["mb_s"] for r in rounds if r["direct"]["mb_s"] > 0]
    ratios = [x for x in ratios if not math.isnan(x)]
    median_ratio = statistics.median(ratios) if ratios else float("nan")
    return {
        "ratio_relay_over_direct_median": median_ratio,
        "ratios": ratios,
        "relay_mb_s_median": statistics.median(r["relay"]["mb_s"] for r in rounds),
        "direct_mb_s_median": statistics.median(r["direct"]["mb_s"] for r in rounds),
        "cpu_s_per_gb_median": {
            way: {
                proc: statistics.median(r[way]["cpu_s_per_gb"][proc] for r in rounds)
                for proc in ("lokal_a", "lokal_b")
            }
            for way in WAYS
        },
        "target": {"ratio_at_least": TARGET_RATIO},
        "verdict": "pass" if median_ratio >= TARGET_RATIO else "fail",
    }


# ---- shell --------------------------------------------------------------------------------------


def measure(
    cluster: Any, way: str, node_a: str, node_b: str, path: str, size: int, fetches: int
) -> dict[str, Any]:
    if way == "relay":
        url, headers = f"http://127.0.0.1:5050{path}", {}
    else:
        url, headers = f"{cluster.lokal_url(node_a)}{path}", {LOCAL_ONLY_HEADER: "1"}
    pids = {"lokal_a": cluster._node(node_a).lokal.pid, "lokal_b": cluster._node(node_b).lokal.pid}
    before = {k: cpu_seconds(pid) for k, pid in pids.items()}
    spec = {"op": "fetch", "url": url, "headers": headers, "count": fetches, "timeout_s": 60}
    answer = run_client(cluster, node_b, spec, timeout=180)
    cpu = {k: cpu_seconds(pid) - before[k] for k, pid in pids.items()}
    moved = sum(f["bytes"] for f in answer["fetches"])
    return {
        "mb_s": throughput(answer["fetches"], size),
        "fetches": answer["fetches"],
        "cpu_s": cpu,
        "cpu_s_per_gb": {k: (v / (moved / 1e9) if moved else float("nan")) for k, v in cpu.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 MB blob, 3 rounds")
    parser.add_argument(
        "--lokal-source",
        type=Path,
        default=ROOT,
        help="directory whose `sidecar` package the lab's lokal processes run (to measure a patched copy)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/relay[-quick].json)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    out = args.out or ROOT / "bench" / "results" / ("relay-quick.json" if args.quick else "relay.json")

    from lokal_lab.cluster import LabCluster, is_local_client, short_digest
    from lokal_lab.network import lab_unavailable_reason
    from lokal_lab.topology import example_topology

    reason = lab_unavailable_reason()
    if reason:
        print(f"bench/relay: cannot run here: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, terminate)
    topology = example_topology(4)  # node-1 and node-4 share region-a / zone-a1
    node_a, node_b = "node-1", "node-4"
    started = time.monotonic()
    rounds: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="lokal-bench-relay-") as scratch,
        LabCluster(
            topology, topology_mode="prefer", cross_region="never", lokal_source=args.lokal_source
        ) as cluster,
    ):
        image = build_image(Path(scratch) / "layout", "v1", [profile.blob_mb * MB], seed=42)
        reference = cluster.push(image, "bench/relay")
        cluster.pull(node_a, reference, timeout=300)
        layer = image.layers["linux/amd64"][0]
        path = f"/v2/bench/relay/blobs/{layer.digest}?ns={cluster.registry_name}"
        progress(f"{node_a} holds {layer.digest[:19]} ({layer.size / MB:.0f} MB); fetching from {node_b}")
        seen = len(cluster.pull_events(node_b))
        # One fetch each way first: the index lookup and both page caches warm, not counted.
        for way in WAYS:
            measure(cluster, way, node_a, node_b, path, layer.size, 1)
        for index in range(profile.rounds):
            row: dict[str, Any] = {"order": list(order_of_round(index))}
            for way in order_of_round(index):
                row[way] = measure(cluster, way, node_a, node_b, path, layer.size, profile.fetches)
            rounds.append(row)
            progress(
                f"round {index + 1}: relay {row['relay']['mb_s']:.0f} MB/s, "
                f"direct {row['direct']['mb_s']:.0f} MB/s, "
                f"ratio {row['relay']['mb_s'] / row['direct']['mb_s']:.2f}"
            )
        time.sleep(0.5)
        events = [
            e
            for e in cluster.pull_events(node_b)[seen:]
            if is_local_client(e) and e.get("digest") == short_digest(layer.digest)
        ]
        results = sorted({str(e.get("result")) for e in events})
    summary = summarize(rounds)
    report = {
        "benchmark": "bench/relay.py",
        "profile": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()[0]},
        "setup": {
            "blob_bytes": layer.size,
            "provider": f"{node_a} (region-a/zone-a1)",
            "asking": f"{node_b} (region-a/zone-a1), client inside {node_b}'s namespace",
            "relay": "GET http://127.0.0.1:5050/v2/... (B's lokal relays from A)",
            "direct": f"GET http://<{node_a}>:5050/v2/... with {LOCAL_ONLY_HEADER}: 1",
            "rounds": profile.rounds,
            "fetches_per_way_per_round": profile.fetches,
            "links": "same region, no delay link, no tbf on access links",
            "lokal_source": str(args.lokal_source),
        },
        "b_lokal_results_for_the_blob": results,
        "summary": summary,
        "rounds": rounds,
        "wall_seconds": time.monotonic() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rounded(report), indent=2) + "\n")
    print(
        f"relay: {summary['relay_mb_s_median']:.0f} MB/s vs direct {summary['direct_mb_s_median']:.0f} MB/s; "
        f"median ratio {summary['ratio_relay_over_direct_median']:.2f}x (target >= {TARGET_RATIO}x: "
        f"{summary['verdict']}); B's lokal answered {results}"
    )
    progress(f"written {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"bench/relay: interrupted ({exc}); the lab is torn down", file=sys.stderr)
        sys.exit(130)
