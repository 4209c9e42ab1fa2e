"""Benchmark: the real `lokal serve` against nginx and docker-registry, over the same blobs, interleaved.

Setup: one image (a large layer, a medium layer and a set of small layers, uncompressed tars of random
bytes) is pushed to a docker-registry and pulled through CRI into a private containerd. Then, on 127.0.0.1:
- lokal: `python -m sidecar serve --discovery none` over that containerd (blobs by sendfile from its store);
- nginx: one worker, `sendfile on; tcp_nopush on;`, serving the same files from containerd's blob
  directory at the same `/v2/<repo>/blobs/sha256:<hex>` paths;
- docker-registry: the registry the image was pushed to (its own copy of the same blobs).
Every server's answer is checked byte for byte (sha256) before any load.

Scenarios, each run for every server in every round (order rotated per round: A B C, B C A, C A B):
- `large_1conn`: one connection fetching the large blob again and again: MB/s and server CPU-s per GB;
- `medium_64conn`: 64 connections fetching the medium blob: MB/s and server CPU-s per GB;
- `small_64conn`: 64 connections cycling over the small blobs: req/s and p99 latency.
Load comes from wrk (bounded by -d); the server's CPU from /proc/PID/stat before and after each run. wrk
shares the 2 cores with the server, so on large blobs CPU per GB separates the servers better than MB/s.

Output: JSON (stdout and `bench/results/serve.json`, or `serve-quick.json` with --quick): every round's
figures per server, the per-round ratios lokal/nginx and lokal/docker-registry, their medians, and the
targets of docs/performance.md with pass/fail.

    .venv/bin/python bench/serve.py            # full: 1 GiB, 100 MiB, 64 x 64 KiB, 7 rounds (~5 min)
    .venv/bin/python bench/serve.py --quick    # 256 MiB, 32 MiB, 16 x 64 KiB, 2 rounds (~1.5 min)
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    REGISTRY_NAME,
    REPOSITORY,
    ROOT,
    GiB,
    MiB,
    StoreLab,
    check_target,
    children_cpu_seconds,
    cpu_seconds,
    fetch_sha256,
    load_average,
    lokal_serve_argv,
    median,
    per_round_ratios,
    prepare_store,
    progress,
    rotated,
    rounded,
    run_wrk,
    source_version,
    start_nginx,
    terminate,
    wait_listening,
    which_or_fail,
    wrk_cycle_script,
)
from lokal_lab.processes import ProcessGroup
from lokal_lab.registry import free_port

SERVERS = ("lokal", "nginx", "docker-registry")
SCENARIOS = ("large_1conn", "medium_64conn", "small_64conn")
# The figures that mean something per scenario: a 4 s run completes few large blobs (wrk counts every
# byte read, finished or not), so large blobs are judged by bytes, small objects by requests.
FIGURES = {
    "large_1conn": ("throughput_MBps", "cpu_s_per_GB"),
    "medium_64conn": ("throughput_MBps", "cpu_s_per_GB"),
    "small_64conn": ("req_per_s", "p99_ms", "cpu_us_per_request", "throughput_MBps", "cpu_s_per_GB"),
}
TARGETS = {
    # scenario: {figure: (bound kind, value)} against nginx (ratios) or absolute (p99 of lokal)
    "large_1conn": {"throughput_ratio_vs_nginx": (">=", 0.95), "cpu_per_GB_ratio_vs_nginx": ("<=", 1.3)},
    "medium_64conn": {"throughput_ratio_vs_nginx": (">=", 0.95), "cpu_per_GB_ratio_vs_nginx": ("<=", 1.3)},
    "small_64conn": {"req_per_s_ratio_vs_nginx": (">=", 0.35), "lokal_p99_ms": ("<=", 50.0)},
}


@dataclass(frozen=True)
class Profile:
    large: int
    medium: int
    small: int
    small_count: int
    rounds: int
    seconds: float


FULL = Profile(large=GiB, medium=100 * MiB, small=64 << 10, small_count=64, rounds=7, seconds=4)
QUICK = Profile(large=256 * MiB, medium=32 * MiB, small=64 << 10, small_count=16, rounds=2, seconds=2)


@dataclass
class Server:
    name: str
    pid: int
    port: int
    query: str  # appended to every blob path (lokal gets containerd's ?ns=)

    def blob_path(self, digest: str) -> str:
        return f"/v2/{REPOSITORY}/blobs/{digest}{self.query}"


# ---- starting the servers ---------------------------------------------------------------------------


def start_servers(group: ProcessGroup, base: Path, lab: StoreLab) -> dict[str, Server]:
    lokal_port = free_port()
    lokal = group.start(
        "lokal",
        lokal_serve_argv(lokal_port, lab, "--discovery", "none", "--log-level", "warning"),
        log_path=base / "lokal.log",
        cwd=ROOT,
    )
    nginx, nginx_port = start_nginx(group, base, lab)
    wait_listening(lokal_port, lokal, "lokal serve")
    wait_listening(nginx_port, nginx, "nginx")
    registry_proc = lab.registry._proc  # started by RegistryInstance through our group
    assert isinstance(registry_proc, subprocess.Popen)
    return {
        "lokal": Server("lokal", lokal.pid, lokal_port, f"?ns={REGISTRY_NAME}"),
        "nginx": Server("nginx", nginx.pid, nginx_port, ""),
        "docker-registry": Server("docker-registry", registry_proc.pid, lab.registry.port, ""),
    }


def verify(servers: dict[str, Server], lab: StoreLab, timeout: float = 30.0) -> None:
    """Every server answers every blob with exactly its bytes (this also warms the page cache).
    lokal may need a moment after start to index the store: its first answer is awaited."""
    first = lab.layers[0]
    deadline = time.monotonic() + timeout
    while fetch_sha256(servers["lokal"].port, servers["lokal"].blob_path(first.digest))[0] != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(f"lokal does not serve {first.digest} after {timeout}s (see lokal.log)")
        time.sleep(0.2)
    for server in servers.values():
        for layer in lab.layers:
            status, length, hex_digest = fetch_sha256(server.port, server.blob_path(layer.digest))
            if (status, length, f"sha256:{hex_digest}") != (200, layer.size, layer.digest):
                raise RuntimeError(
                    f"{server.name} answered {layer.digest} with status {status}, {length} bytes, "
                    f"sha256:{hex_digest}; want 200, {layer.size} bytes"
                )
    progress("every server serves every blob byte for byte")


# ---- measuring ----------------------------------------------------------------------------------------


def measure(server: Server, scenario: str, lab: StoreLab, profile: Profile, base: Path) -> dict[str, float]:
    large, medium, *small = lab.layers
    if scenario == "large_1conn":
        path, conns, threads, script = server.blob_path(large.digest), 1, 1, None
    elif scenario == "medium_64conn":
        path, conns, threads, script = server.blob_path(medium.digest), 64, 2, None
    else:
        script = base / f"small-{server.name}.lua"
        if not script.exists():
            script.write_text(wrk_cycle_script([server.blob_path(b.digest) for b in small]))
        path, conns, threads = "/", 64, 2
    client_before = children_cpu_seconds()
    before = cpu_seconds(server.pid)
    result = run_wrk(server.port, path, conns, threads, profile.seconds, script)
    cpu = cpu_seconds(server.pid) - before
    client_cpu = children_cpu_seconds() - client_before
    gigabytes = result.bytes / 1e9
    return {
        "requests": result.requests,
        "seconds": result.seconds,
        "bytes": result.bytes,
        "throughput_MBps": result.bytes / 1e6 / result.seconds,
        "req_per_s": result.requests / result.seconds,
        "p99_ms": result.p99_ms,
        "server_cpu_s": cpu,
        "cpu_s_per_GB": cpu / gigabytes if gigabytes else math.nan,
        "cpu_us_per_request": cpu * 1e6 / result.requests if result.requests else math.nan,
        "client_cpu_s": client_cpu,
        "non_2xx": result.non_2xx,
        "socket_errors": result.socket_errors,  # type: ignore[dict-item]
    }


def run_rounds(
    servers: dict[str, Server], lab: StoreLab, profile: Profile, base: Path
) -> dict[str, list[dict[str, object]]]:
    results: dict[str, list[dict[str, object]]] = {s: [] for s in SCENARIOS}
    for index in range(profile.rounds):
        for scenario in SCENARIOS:
            row: dict[str, object] = {"round": index, "order": rotated(SERVERS, index)}
            row["load_average_before"] = load_average()
            for name in rotated(SERVERS, index):
                row[name] = measure(servers[name], scenario, lab, profile, base)
            results[scenario].append(row)
            progress(f"round {index} {scenario}: " + ", ".join(_brief(scenario, row[n]) for n in SERVERS))
    return results


def _brief(scenario: str, figures: object) -> str:
    assert isinstance(figures, dict)
    if scenario == "small_64conn":
        return (
            f"{figures['req_per_s']:.0f} req/s p99 {figures['p99_ms']:.1f} ms"
            f" {figures['cpu_us_per_request']:.0f} cpu-us/req"
        )
    return f"{figures['throughput_MBps']:.0f} MB/s {figures['cpu_s_per_GB']:.3f} cpu-s/GB"


def summarise(results: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    summary: dict[str, object] = {}
    for scenario, rows in results.items():
        figures = [{n: row[n] for n in SERVERS} for row in rows]
        typed: list[dict[str, dict[str, float]]] = figures  # type: ignore[assignment]
        keys = FIGURES[scenario]
        vs_nginx = per_round_ratios(typed, "lokal", "nginx", keys)
        vs_registry = per_round_ratios(typed, "lokal", "docker-registry", keys)
        for row, a, b in zip(rows, vs_nginx, vs_registry, strict=True):
            row["ratio_lokal_vs_nginx"] = a
            row["ratio_lokal_vs_docker_registry"] = b
        medians = {n: {k: median(f[n][k] for f in typed) for k in keys} for n in SERVERS}
        median_vs_nginx = {k: median(r[k] for r in vs_nginx) for k in keys}
        median_vs_registry = {k: median(r[k] for r in vs_registry) for k in keys}
        measured = {
            "throughput_ratio_vs_nginx": median_vs_nginx.get("throughput_MBps", math.nan),
            "cpu_per_GB_ratio_vs_nginx": median_vs_nginx.get("cpu_s_per_GB", math.nan),
            "req_per_s_ratio_vs_nginx": median_vs_nginx.get("req_per_s", math.nan),
            "lokal_p99_ms": medians["lokal"].get("p99_ms", math.nan),
        }
        targets = {}
        for name, (kind, bound) in TARGETS[scenario].items():
            value = measured[name]
            verdict = (
                check_target(value, at_least=bound) if kind == ">=" else check_target(value, at_most=bound)
            )
            targets[name] = {"target": f"{kind} {bound}", "measured": value, "verdict": verdict}
        errors = sum(int(f[n]["non_2xx"]) for f in typed for n in SERVERS)
        summary[scenario] = {
            "median": medians,
            "median_ratio_lokal_vs_nginx": median_vs_nginx,
            "median_ratio_lokal_vs_docker_registry": median_vs_registry,
            "targets": targets,
            "non_2xx_responses": errors,
        }
    return summary


# ---- main -----------------------------------------------------------------------------------------



def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller blobs, 2 rounds (~1.5 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 7, or 2 with --quick)")
    parser.add_argument("--seconds", type=float, help="seconds per wrk run (default: 4, or 2 with --quick)")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/serve[-quick].json)")
    parser.add_argument("--keep-running", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    profile = QUICK if args.quick else FULL
    if args.rounds is not None:
        if not 1 <= args.rounds <= 20:
            parser.error("--rounds must be between 1 and 20")
        profile = Profile(**{**asdict(profile), "rounds": args.rounds})
    if args.seconds is not None:
        if not 1 <= args.seconds <= 30:
            parser.error("--seconds must be between 1 and 30")
        profile = Profile(**{**asdict(profile), "seconds": args.seconds})
    out = args.out or ROOT / "bench" / "results" / ("serve-quick.json" if args.quick else "serve.json")
    for tool in ("wrk", "nginx", "docker-registry", "containerd", "skopeo"):
        which_or_fail(tool)
    signal.signal(signal.SIGTERM, terminate)

    started = time.monotonic()
    sizes = [profile.large, profile.medium] + [profile.small] * profile.small_count
    with tempfile.TemporaryDirectory(prefix="lokal-bench-serve-") as tmp, ProcessGroup() as group:
        base = Path(tmp)
        lab = prepare_store(group, base, sizes, seed=7)
        servers = start_servers(group, base, lab)
        verify(servers, lab)
        results = run_rounds(servers, lab, profile, base)
        if args.keep_running:  # for profiling by hand: the servers stay up this long (bounded)
            progress(
                f"servers stay up {args.keep_running:.0f}s (wrk scripts in {base}): "
                + json.dumps({n: asdict(s) for n, s in servers.items()})
            )
            time.sleep(min(args.keep_running, 600))
    summary = summarise(results)
    report = {
        "benchmark": "bench/serve.py",
        "profile": "quick" if args.quick else "full",
        "settings": asdict(profile),
        "blobs": lab.describe(),
        "servers": {
            "lokal": "python -m sidecar serve --discovery none (sendfile from containerd's content store)",
            "nginx": "Debian nginx, worker_processes 1, sendfile on, tcp_nopush on, access_log off",
            "docker-registry": "Debian docker-registry (distribution 2.8), filesystem storage, access log on",
        },
        "load": "wrk, 1 connection/1 thread (large), 64 connections/2 threads (medium, small), "
        f"{profile.seconds:.0f}s per run; server order rotated per round",
        "source": source_version(),
        "wall_seconds": time.monotonic() - started,
        "summary": summary,
        "rounds": results,
    }
    text = json.dumps(rounded(report), indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    progress(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
