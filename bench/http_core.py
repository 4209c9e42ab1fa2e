"""Micro benchmark: lokal's HTTP core (sendfile from files) against nginx, on loopback, interleaved.

Scenarios (each run against both servers in the same round, order alternating per round):
- `1GiB_1conn`: one connection fetching a 1 GiB file again and again (throughput, server CPU s/GB);
- `100MiB_64conn`: 64 connections fetching a 100 MiB file (throughput, server CPU s/GB);
- `64KiB_64conn`: 64 connections fetching 64 KiB files (req/s, p99 latency).

Load comes from `wrk` (bounded by -d), the server's CPU from /proc/PID/stat before and after, wrk's own
CPU from getrusage (wrk shares the 2 cores: when it needs most of them, MB/s measures wrk, and server
CPU-seconds per GB is the fairer figure). Both servers are our own child processes on 127.0.0.1, stopped
by PID. Output: JSON with every round and the median per-round ratio lokal/nginx, against the targets of
docs/performance.md.

    .venv/bin/python bench/http_core.py --rounds 3 --seconds 4 --out /tmp/http_core.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BIG = 1 << 30
MEDIUM = 100 << 20
SMALL = 64 << 10
SMALL_COUNT = 64
TARGETS = {
    "1GiB_1conn": {"throughput_ratio_min": 0.95, "cpu_per_gb_ratio_max": 1.3},
    "100MiB_64conn": {"throughput_ratio_min": 0.95, "cpu_per_gb_ratio_max": 1.3},
    "64KiB_64conn": {"req_ratio_min": 0.35, "p99_ms_max": 50.0},
}
SCENARIOS = {
    # name: (path template, connections, wrk threads)
    "1GiB_1conn": ("/big", 1, 1),
    "100MiB_64conn": ("/medium", 64, 2),
    "64KiB_64conn": ("/small", 64, 2),
}
NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
WRK_SCRIPT = """
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/small/" .. (n % {count}))
end
"""


# ---- the lokal side: a tiny file handler on the core (run in a child process) ----------------------


def serve_core(root: Path, port: int) -> None:
    import anyio

    from sidecar.http import FileBody, HttpServer, Request, Response, ServerLimits

    names = {"/" + str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    base = str(root)
    not_found = Response(404, [("content-type", "text/plain")], b"not found\n")

    async def handler(request: Request) -> Response:
        if request.path not in names:
            return not_found
        fd = os.open(base + request.path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        return Response(
            200,
            [("content-type", "application/octet-stream")],
            FileBody(fd, 0, size, lambda: os.close(fd)),
        )

    server = HttpServer(handler, ServerLimits(max_connections=4096))
    anyio.run(server.serve, ("127.0.0.1", port))


# ---- the driver --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline_s}s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_wrk(text: str) -> dict[str, Any]:
    summary = re.search(r"(\d+) requests in ([\d.]+)(\w+), ([\d.]+)(\w+) read", text)
    if summary is None:
        raise RuntimeError(f"cannot read wrk output:\n{text}")
    seconds = float(summary.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[summary.group(3)]
    read_bytes = float(summary.group(4)) * _UNITS[summary.group(5)]
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)", text, re.MULTILINE)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)] if p99 else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(r"Socket errors: (.*)", text)
    return {
        "requests": int(summary.group(1)),
        "seconds": seconds,
        "bytes": read_bytes,
        "p99_ms": p99_ms,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def run_load(port: int, scenario: str, seconds: int, script: Path) -> dict[str, Any]:
    path, conns, threads = SCENARIOS[scenario]
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if scenario == "64KiB_64conn":
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    return parse_wrk(out.stdout)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # finished children only: that is wrk
    return usage.ru_utime + usage.ru_stime


def measure(pid: int, port: int, scenario: str, seconds: int, script: Path) -> dict[str, Any]:
    before, wrk_before = cpu_seconds(pid), children_cpu_seconds()
    load = run_load(port, scenario, seconds, script)
    cpu = cpu_seconds(pid) - before
    wrk_cpu = children_cpu_seconds() - wrk_before
    gigabytes = load["bytes"] / 1e9
    return {
        **load,
        "server_cpu_s": cpu,
        "wrk_cpu_s": wrk_cpu,
        "throughput_MBps": load["bytes"] / 1e6 / load["seconds"],
        "req_per_s": load["requests"] / load["seconds"],
        "cpu_s_per_GB": cpu / gigabytes if gigabytes else float("nan"),
    }


def make_files(root: Path) -> None:
    block = os.urandom(1 << 20)
    with open(root / "big", "wb") as out:
        for _ in range(BIG >> 20):
            out.write(block)
    with open(root / "medium", "wb") as out:
        for _ in range(MEDIUM >> 20):
            out.write(block)
    (root / "small").mkdir()
    for i in range(SMALL_COUNT):
        (root / "small" / str(i)).write_bytes(os.urandom(SMALL))


def warm_page_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/http_core.json"))
    parser.add_argument("--serve-core", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_core:
        serve_core(args.serve_core, args.port)
        return 0
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not Path("/usr/sbin/nginx").exists():
            print(f"{tool} is not installed", file=sys.stderr)
            return 2
    scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        print(f"--scenarios: unknown {sorted(unknown)}; choose from {sorted(SCENARIOS)}", file=sys.stderr)
        return 2
    if not 1 <= args.rounds <= 20 or not 1 <= args.seconds <= 60:
        print("--rounds must be 1..20 and --seconds 1..60", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="lokal-bench-") as tmp:
        base = Path(tmp)
        root = base / "www"
        root.mkdir()
        make_files(root)
        warm_page_cache(root)
        script = base / "small.lua"
        script.write_text(WRK_SCRIPT.format(count=SMALL_COUNT))
        prefix = base / "nginx"
        prefix.mkdir()
        nginx_port, core_port = free_port(), free_port()
        (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=nginx_port, root=root))
        nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        try:
            nginx = subprocess.Popen(
                [nginx_bin, "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs["nginx"] = (nginx, nginx_port)
            core = subprocess.Popen(
                [sys.executable, __file__, "--serve-core", str(root), "--port", str(core_port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
            procs["lokal"] = (core, core_port)
            for proc, port in procs.values():
                wait_listening(port, proc)
            results = run_rounds(procs, scenarios, args.rounds, args.seconds, script)
        finally:
            for proc, _ in procs.values():
                stop(proc)
    report = {"rounds": args.rounds, "seconds_per_run": args.seconds, "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(summarise(results), indent=2))
    print(f"full results: {args.out}", file=sys.stderr)
    return 0


def run_rounds(
    procs: dict[str, tuple[subprocess.Popen[bytes], int]],
    scenarios: list[str],
    rounds: int,
    seconds: int,
    script: Path,
) -> dict[str, object]:
    results: dict[str, object] = {}
    for scenario in scenarios:
        per_round = []
        for index in range(rounds):
            order = ["lokal", "nginx"] if index % 2 == 0 else ["nginx", "lokal"]
            row = {}
            for name in order:
                proc, port = procs[name]
                row[name] = measure(proc.pid, port, scenario, seconds, script)
            row["ratio"] = {
                "throughput": row["lokal"]["throughput_MBps"] / row["nginx"]["throughput_MBps"],
                "req_per_s": row["lokal"]["req_per_s"] / row["nginx"]["req_per_s"],
                "cpu_s_per_GB": row["lokal"]["cpu_s_per_GB"] / row["nginx"]["cpu_s_per_GB"],
            }
            per_round.append(row)
            ratios = " ".join(f"{k}={v:.2f}" for k, v in row["ratio"].items())
            p99 = " ".join(f"{n}={row[n]['p99_ms']:.1f}" for n in ("lokal", "nginx"))
            wrk = " ".join(f"{n}={row[n]['wrk_cpu_s'] / seconds:.2f}" for n in ("lokal", "nginx"))
            print(f"{scenario} round {index}: {ratios}  p99_ms {p99}  wrk_cores {wrk}", file=sys.stderr)
        results[scenario] = per_round
    return results


def summarise(results: dict[str, object]) -> dict[str, object]:
    summary: dict[str, object] = {}
    for scenario, rows in results.items():
        assert isinstance(rows, list)

        def med(server: str, key: str, rows: list[dict[str, dict[str, float]]] = rows) -> float:
            return statistics.median(r[server][key] for r in rows)

        keys = ("throughput_MBps", "req_per_s", "cpu_s_per_GB", "p99_ms", "server_cpu_s", "wrk_cpu_s")
        ratios = {
            "throughput": statistics.median(r["ratio"]["throughput"] for r in rows),
            "req_per_s": statistics.median(r["ratio"]["req_per_s"] for r in rows),
            "cpu_s_per_GB": statistics.median(r["ratio"]["cpu_s_per_GB"] for r in rows),
        }
        summary[scenario] = {
            "median_ratio_throughput": ratios["throughput"],
            "median_ratio_req_per_s": ratios["req_per_s"],
            "median_ratio_cpu_s_per_GB": ratios["cpu_s_per_GB"],
            "per_round_ratios": [{k: round(v, 3) for k, v in r["ratio"].items()} for r in rows],
            "lokal": {k: med("lokal", k) for k in keys},
            "nginx": {k: med("nginx", k) for k in keys},
            "targets": TARGETS[scenario],
            "meets": meets(TARGETS[scenario], ratios, med("lokal", "p99_ms")),
        }
    return summary


def meets(targets: dict[str, float], ratios: dict[str, float], p99_ms: float) -> dict[str, bool]:
    """Each target of the scenario against the medians: True when it is met."""
    checks = {
        "throughput_ratio_min": lambda limit: ratios["throughput"] >= limit,
        "cpu_per_gb_ratio_max": lambda limit: ratios["cpu_s_per_GB"] <= limit,
        "req_ratio_min": lambda limit: ratios["req_per_s"] >= limit,
        "p99_ms_max": lambda limit: p99_ms <= limit,
    }
    return {name: checks[name](limit) for name, limit in targets.items()}


if __name__ == "__main__":
    sys.exit(main())
