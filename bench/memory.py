"""Memory of `lokal serve`: RSS idle in a 5-node lab, at the peak of a soak, and where it goes.

    sudo .venv/bin/python bench/memory.py                    # idle 5-node lab + import costs; ~1 min
    sudo .venv/bin/python bench/memory.py --soak-seconds 60  # plus the soak's peak (~2.5 min)

Targets (issue 8): <= 80 MB idle, <= 150 MB under load. Output: JSON to stdout and to
bench/results/memory.json (`--out`). What it reports:

- idle: per node, after the lab has been up `--settle` seconds: VmRSS, RssAnon (heap, arenas, stacks:
  this process's own), RssFile (mapped .so and .py files: shared with any other Python process on the
  node that maps the same files, but counted in RSS and in the container's memory), Pss, threads, and the
  largest mappings (smaps, grouped by file; anonymous mappings by kind).
- load: the soak's per-node RSS samples and peaks (tests/reliability/soak.py; 64 clients, churn, restart).
- imports: RSS of a fresh interpreter after each step of lokal's imports, cumulative, in subprocesses;
  and the Python heap (tracemalloc) by top-level package after importing all of lokal.

Rules (lab.md): the lab's processes are stopped by PID at the end, on error too (LabCluster's context);
every load is bounded (the soak's plan); no packet leaves the lab's namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lokal_lab.cluster import LabCluster  # noqa: E402
from lokal_lab.network import lab_unavailable_reason  # noqa: E402

from tests.reliability.labtools import lokal_pid  # noqa: E402
from tests.reliability.soak import SOAK_LOKAL_ARGS, SOAK_TOPOLOGY, SoakPlan, run_soak  # noqa: E402

IDLE_TARGET_MB = 80.0
LOAD_TARGET_MB = 150.0
MB = 1e6

# lokal's imports, cumulative: each step also runs every step before it.
IMPORT_STEPS: tuple[tuple[str, str], ...] = (
    ("python", "pass"),
    ("anyio, h11", "import anyio, h11"),
    ("ssl", "import ssl"),
    ("grpc (containerd's API)", "import grpc, grpc.aio"),
    ("protobuf stubs", "import sidecar.containerd.client"),
    ("prometheus_client", "import prometheus_client"),
    ("sidecar.serve (all of lokal but the Kubernetes client)", "import sidecar.serve"),
    (
        "kubernetes client (as KubernetesNodeApi loads it: ApiClient, no CoreV1Api)",
        "import sidecar.cluster.kube_api as k\nfor p in k._DEFERRED_PACKAGES: k._defer_package_init(p)\n"
        "import kubernetes.client.api_client, kubernetes.client.configuration\n"
        "import kubernetes.config.incluster_config",
    ),
)

_STATUS_FIELDS = ("VmRSS", "RssAnon", "RssFile", "RssShmem", "Threads")


def proc_memory(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon, RssFile (MB), threads, and Pss (MB, from smaps_rollup)."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in _STATUS_FIELDS:
            number = float(value.split()[0])
            figures[name] = number if name == "Threads" else round(number * 1024 / MB, 1)
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    if rollup.exists():
        match = re.search(r"^Pss:\s+(\d+) kB", rollup.read_text(), re.M)
        if match:
            figures["Pss"] = round(int(match[1]) * 1024 / MB, 1)
    return figures


def largest_mappings(pid: int, top: int = 15) -> list[dict[str, Any]]:
    """RSS by mapping, grouped: a file by its name; anonymous memory as [heap], [stack], [anon]."""
    by_name: dict[str, int] = defaultdict(int)
    current = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", fields[0]):
            path = fields[5] if len(fields) >= 6 else ""
            current = Path(path).name if path.startswith("/") else (path or "[anon]")
        elif fields and fields[0] == "Rss:":
            by_name[current] += int(fields[1]) * 1024
    ranked = sorted(by_name.items(), key=lambda kv: kv[1], reverse=True)[:top]
    return [{"mapping": name, "rss_mb": round(size / MB, 1)} for name, size in ranked]


def import_costs(python: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    done: list[str] = []
    for label, statement in IMPORT_STEPS:
        done.append(statement)
        script = "\n".join(done) + (
            "\nimport re\nt=open('/proc/self/status').read()\n"
            "print(' '.join(re.search(k+r':\\s+(\\d+)', t).group(1) for k in ('VmRSS','RssAnon','RssFile')))"
        )
        out = subprocess.run(
            [python, "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            check=True,
        ).stdout
        rss, anon, file = (int(x) * 1024 / MB for x in out.split())
        previous = float(rows[-1]["rss_mb"]) if rows else 0.0
        rows.append(
            {
                "step": label,
                "rss_mb": round(rss, 1),
                "added_mb": round(rss - previous, 1),
                "anon_mb": round(anon, 1),
                "file_mb": round(file, 1),
            }
        )
    return rows


def python_heap_by_package(python: str, top: int = 12) -> list[dict[str, Any]]:
    """tracemalloc after importing all of lokal and the Kubernetes client: the Python heap by package."""
    script = (
        "import tracemalloc, json, collections\n"
        "tracemalloc.start(40)\n"
        "import sidecar.serve\nimport sidecar.cluster.kube_api as k\n"
        "for p in k._DEFERRED_PACKAGES: k._defer_package_init(p)\n"
        "import kubernetes.client.api_client, kubernetes.config.incluster_config\n"
        "snap = tracemalloc.take_snapshot()\n"
        "sizes = collections.Counter()\n"
        "def owner(f):\n"
        "    if 'site-packages/' in f:\n"
        "        return f.split('site-packages/')[1].split('/')[0].removesuffix('.py')\n"
        "    if '/sidecar/' in f: return 'sidecar'\n"
        "    return None\n"
        "for stat in snap.statistics('traceback'):\n"
        "    names = [owner(fr.filename) for fr in reversed(stat.traceback)]\n"
        "    sizes[next((n for n in names if n), 'stdlib')] += stat.size\n"
        "print(json.dumps(sizes.most_common()))\n"
    )
    out = subprocess.run(
        [python, "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout
    return [{"package": name, "python_heap_mb": round(size / MB, 1)} for name, size in json.loads(out)[:top]]


def idle_figures(cluster: LabCluster) -> dict[str, Any]:
    return {
        node: {
            **proc_memory(lokal_pid(cluster, node)),
            "largest_mappings": largest_mappings(lokal_pid(cluster, node)),
        }
        for node in cluster.nodes
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--settle", type=float, default=15.0, help="seconds idle before measuring (1-600)")
    parser.add_argument(
        "--soak-seconds", type=float, default=0.0, help="also run the soak this long (0-1800)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "memory.json")
    args = parser.parse_args(argv)
    if not 1 <= args.settle <= 600:
        parser.error(f"--settle {args.settle}: must be 1-600 seconds")
    if not 0 <= args.soak_seconds <= 1800:
        parser.error(f"--soak-seconds {args.soak_seconds}: must be 0-1800")
    reason = lab_unavailable_reason()
    if reason:
        print(f"bench/memory.py cannot run here: {reason}", file=sys.stderr)
        return 2
    python = sys.executable
    result: dict[str, Any] = {"targets_mb": {"idle": IDLE_TARGET_MB, "load": LOAD_TARGET_MB}}
    with (
        tempfile.TemporaryDirectory(prefix="lokal-bench-memory-") as tmp,
        LabCluster(SOAK_TOPOLOGY, lokal_args=SOAK_LOKAL_ARGS) as cluster,
    ):
        time.sleep(args.settle)
        idle = idle_figures(cluster)
        result["idle"] = idle
        result["idle_rss_mb_max"] = max(n["VmRSS"] for n in idle.values())
        if args.soak_seconds > 0:
            report = run_soak(
                cluster,
                Path(tmp),
                SoakPlan(seconds=args.soak_seconds),
                log=lambda m: print(m, file=sys.stderr),
            )
            peaks = {n: max(f.rss_mb, default=0.0) for n, f in report.nodes.items()}
            result["load"] = {
                "peak_rss_mb": peaks,
                "peak_rss_mb_max": max(peaks.values()),
                "requests": report.totals().get("requests", 0),
                "corrupt": report.totals().get("corrupt", 0),
            }
            result["after_load"] = {n: proc_memory(lokal_pid(cluster, n)) for n in cluster.nodes}
    result["imports"] = import_costs(python)
    result["python_heap_after_imports"] = python_heap_by_package(python)
    result["idle_within_target"] = result["idle_rss_mb_max"] <= IDLE_TARGET_MB
    if "load" in result:
        result["load_within_target"] = result["load"]["peak_rss_mb_max"] <= LOAD_TARGET_MB
    text = json.dumps(result, indent=1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
