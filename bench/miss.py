"""bench/miss: time to the 404 for a digest nobody has, as containerd meets it on a cold pull.

    .venv/bin/python bench/miss.py            # 6-node lab, 500 requests + 10 warm-up; ~1 min
    .venv/bin/python bench/miss.py --quick    # 4-node lab, 150 requests; ~40 s

The lab (lokal_lab.cluster.LabCluster, example topology: region-a holds 4 of the 6 nodes, so the k=3
home nodes of a key are mostly other nodes) runs lokal on every node in prefer mode with cross-region
never, as deployed by default. From inside one node's namespace, a client (`_nsclient.py`) asks that
node's own lokal on 127.0.0.1:5050, as containerd does, for `/v2/<repo>/blobs/sha256:<random>?ns=...`: every
request is a new random digest, so no cache can answer, and lokal must ask the region's home nodes.

Phases (each bounded by its count and a deadline):
- `sequential_keepalive`: one connection, requests one after another (containerd reuses connections);
- `sequential_fresh`: a new connection per request;
- `concurrent_keepalive`: several connections at once, as a pull of many layers does.

Figures: client-observed p50/p90/p99/max per phase and overall, against the target p99 <= 5 ms
(docs/performance.md), plus lokal's own view from its `pull` lines (`ms` in the server, `lookup_ms` of
the index lookup), so that the time can be split: client + loopback, server, lookup.
Output: bench/results/miss.json (miss-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._harness import (  # noqa: E402
    progress,
    rounded,
    terminate,
)
from bench._lab import percentile, run_client  # noqa: E402

TARGET_P99_MS = 5.0
REPO = "bench/nobody-has-this"


@dataclass(frozen=True)
class Phase:
    name: str
    count: int  # requests per worker
    workers: int = 1
    fresh: bool = False


@dataclass(frozen=True)
class Profile:
    nodes: int
    warmup: int
    phases: tuple[Phase, ...]


FULL = Profile(
    nodes=6,
    warmup=10,
    phases=(
        Phase("sequential_keepalive", 200),
        Phase("sequential_fresh", 100, fresh=True),
        Phase("concurrent_keepalive", 50, workers=4),
    ),
)
QUICK = Profile(
    nodes=4,
    warmup=5,
    phases=(
        Phase("sequential_keepalive", 60),
        Phase("sequential_fresh", 30, fresh=True),
        Phase("concurrent_keepalive", 15, workers=4),
    ),
)


# ---- pure ---------------------------------------------------------------------------------------


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": float(len(ms)),
        "p50_ms": percentile(ms, 0.5),
        "p90_ms": percentile(ms, 0.9),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else float("nan"),
    }


def server_view(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """lokal's own timings of its misses (its `pull` lines for this benchmark's repository)."""
    mine = [e for e in events if e.get("repo") == REPO and e.get("result") == "miss"]
    served = [float(e["ms"]) for e in mine if e.get("ms") is not None]
    lookups = [float(e["lookup_ms"]) for e in mine if e.get("lookup_ms") is not None]
    return {
        "lines": len(mine),
        "server_ms": {k: percentile(served, q) for k, q in (("p50", 0.5), ("p99", 0.99))},
        "lookup_ms": {k: percentile(lookups, q) for k, q in (("p50", 0.5), ("p99", 0.99))},
        "statuses": sorted({int(e.get("status", 0)) for e in mine}),
        "miss_kinds": sorted({str(e.get("miss")) for e in mine}),
    }


# ---- shell --------------------------------------------------------------------------------------


def run_phase(cluster: Any, node: str, phase: Phase) -> list[dict[str, Any]]:
    spec = {
        "op": "miss",
        "host": "127.0.0.1",
        "port": 5050,
        "repo": REPO,
        "ns": cluster.registry_name,
        "count": phase.count,
        "workers": phase.workers,
        "fresh": phase.fresh,
        "timeout_s": 5,
    }
    answer = run_client(cluster, node, spec, timeout=60)
    rows: list[dict[str, Any]] = answer["requests"]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 nodes, 150 requests")
    parser.add_argument("--cross-region", choices=("never", "always"), default="never")
    parser.add_argument(
        "--lokal-source",
        type=Path,
        default=ROOT,
        help="directory whose `sidecar` package the lab's lokal processes run (to measure a patched copy)",
    )
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/miss[-quick].json)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    out = args.out or ROOT / "bench" / "results" / ("miss-quick.json" if args.quick else "miss.json")

    from lokal_lab.cluster import LabCluster
    from lokal_lab.network import lab_unavailable_reason
    from lokal_lab.topology import example_topology

    reason = lab_unavailable_reason()
    if reason:
        print(f"bench/miss: cannot run here: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, terminate)
    topology = example_topology(profile.nodes)
    node = topology.nodes[0].name
    started = time.monotonic()
    phases: dict[str, Any] = {}
    all_seconds: list[float] = []
    with LabCluster(
        topology, topology_mode="prefer", cross_region=args.cross_region, lokal_source=args.lokal_source
    ) as cluster:
        progress(f"lab up: {profile.nodes} nodes; asking {node}'s lokal from {node}'s namespace")
        seen = len(cluster.pull_events(node))
        warm = run_phase(cluster, node, Phase("warmup", profile.warmup))
        for phase in profile.phases:
            rows = run_phase(cluster, node, phase)
            seconds = [r["s"] for r in rows]
            statuses = sorted({int(r["status"]) for r in rows})
            phases[phase.name] = {
                "workers": phase.workers,
                "fresh_connection_per_request": phase.fresh,
                "statuses": statuses,
                **latency_summary(seconds),
            }
            all_seconds += seconds
            progress(
                f"{phase.name}: n={len(rows)} p50 {phases[phase.name]['p50_ms']:.2f} ms "
                f"p99 {phases[phase.name]['p99_ms']:.2f} ms statuses {statuses}"
            )
        time.sleep(0.5)  # lokal logs a line when the response is done
        server = server_view(cluster.pull_events(node)[seen:])
        region_nodes = [n.name for n in topology.nodes_in(topology.node(node).region)]
    overall = latency_summary(all_seconds)
    report = {
        "benchmark": "bench/miss.py",
        "profile": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()[0]},
        "setup": {
            "nodes": profile.nodes,
            "asking_node": node,
            "region_nodes": region_nodes,
            "topology_mode": "prefer",
            "cross_region": args.cross_region,
            "lokal_source": str(args.lokal_source),
            "request": f"GET http://127.0.0.1:5050/v2/{REPO}/blobs/sha256:<random>?ns=<registry>, "
            "from inside the node's namespace",
        },
        "warmup": latency_summary([r["s"] for r in warm]),
        "phases": phases,
        "overall": overall,
        "server": server,
        "target": {"p99_ms_at_most": TARGET_P99_MS},
        "verdict": "pass" if overall["p99_ms"] <= TARGET_P99_MS else "fail",
        "wall_seconds": time.monotonic() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rounded(report), indent=2) + "\n")
    print(
        f"miss: n={int(overall['count'])} p50 {overall['p50_ms']:.2f} ms p99 {overall['p99_ms']:.2f} ms "
        f"(target <= {TARGET_P99_MS} ms: {report['verdict']}); lokal's view: server p50 "
        f"{server['server_ms']['p50']:.2f} / p99 {server['server_ms']['p99']:.2f} ms, lookup p50 "
        f"{server['lookup_ms']['p50']:.2f} / p99 {server['lookup_ms']['p99']:.2f} ms"
    )
    progress(f"written {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"bench/miss: interrupted ({exc}); the lab is torn down", file=sys.stderr)
        sys.exit(130)
