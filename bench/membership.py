"""Membership at scale against a real kube-apiserver: what Node changes cost lokal, and what serving feels.

A real `lokal serve --discovery kubernetes` (prefer mode, a real ServiceAccount token bound by the
ClusterRole of manifests/) follows a real kube-apiserver 1.20 with etcd (built once by
scripts/kube_apiserver.sh), over a private containerd holding one small image. Phases, in one run:

1. reference: nothing changes for `--window` seconds without probes, then as long with them;
2. joins: N nodes are created through the API one by one (as fast as the apiserver takes them), without
   probes; then all N leave at once (deleted straight from etcd) and join again the same way, with probes;
3. relabels_unprobed: R of them change zone, paced evenly over `--burst` seconds, without probes (the
   cleanest CPU figure);
4. relabels: the same R change zone again, the same way, with probes.

During the probed phases a prober asks lokal for `/readyz` and for a blob of the local store (a local hit)
every 20 ms each, and nginx for the same blob file (the reference, in the same run: what the machine's load
does to any server), and records the latencies. Per phase the JSON reports: how long after the last change
lokal's membership held it (from lokal's own `membership_changed` log line, whose node and zone counts must
equal the expected ones), lokal's CPU per change (its CPU over the phase less its idle rate and its
measured cost per probe request, divided by the changes), and the probes' p50/p99/max. Targets (issue 18):
relabels absorbed within 2 s of the last one, <= 1 ms of CPU per change, probe p99 <= 10 ms during the
burst.

Other nodes get 127.x.y.z addresses: lokal's pushes to the homes of its keys are refused on loopback, so
no traffic leaves the machine. Every process is stopped by PID at the end.

Usage: .venv/bin/python bench/membership.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import functools
import http.client
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lokal_lab.fake_apiserver import make_node
from lokal_lab.kube_apiserver import KubeApiServer, free_port, missing_parts, run_parallel
from lokal_lab.processes import ProcessGroup

from bench._harness import (
    REGISTRY_NAME,
    REPOSITORY,
    StoreLab,
    cpu_seconds,
    load_average,
    lokal_serve_argv,
    prepare_store,
    progress,
    rounded,
    source_version,
    start_nginx,
    terminate,
    wait_listening,
)

ROOT = Path(__file__).resolve().parent.parent
SELF = "bench-self"
REGIONS = 3
ZONES = 7
PROBE_INTERVAL_S = 0.02
ABSORB_TIMEOUT_S = 120.0


def node_address(index: int) -> str:
    return f"127.{1 + index // 62500}.{index // 250 % 250}.{index % 250 + 1}"


def bench_node(index: int) -> dict[str, Any]:
    return make_node(
        f"n{index:05d}", region=f"r{index % REGIONS}", zone=f"z{index % ZONES}", address=node_address(index)
    )


# ---- lokal's log: when its membership held what we expect -------------------------------------------


class MembershipLog:
    """Follows lokal's JSON log file; remembers every membership line with its wall-clock time."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[tuple[float, dict[str, Any]]] = []

    def poll(self) -> None:
        with contextlib.suppress(FileNotFoundError), self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
            self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        for raw in complete:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and line.get("event") in ("membership_synced", "membership_changed"):
                self.lines.append((_epoch(str(line["ts"])), line))

    def wait_for(self, expected: dict[str, Any], since: float, timeout: float) -> float:
        """The time of the first line at or after `since` whose counts equal `expected`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            for at, line in self.lines:
                if at >= since and all(line.get(key) == value for key, value in expected.items()):
                    return at
            time.sleep(0.02)
        last = self.lines[-1][1] if self.lines else {}
        raise TimeoutError(f"lokal's membership never matched {expected}; last: {last}")


def _epoch(ts: str) -> float:
    """lokal's log timestamp (RFC 3339 UTC with milliseconds) as seconds since the epoch."""
    return calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S")) + int(ts[20:23]) / 1000


def expected_counts(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `nodes` and `by_zone` fields lokal logs for exactly these nodes (self included)."""
    zones = Counter(
        f"{n['metadata']['labels']['topology.kubernetes.io/region']}/"
        f"{n['metadata']['labels']['topology.kubernetes.io/zone']}"
        for n in nodes.values()
    )
    return {"nodes": len(nodes), "by_zone": dict(sorted(zones.items()))}


# ---- the prober ---------------------------------------------------------------------------------------


class Prober:
    """Asks lokal for /readyz and for a local blob, and nginx for the same blob file (the reference: what
    the machine's load alone does to a request), every PROBE_INTERVAL_S each, on keep-alive connections."""

    def __init__(self, port: int, blob_path: str, reference_port: int, reference_path: str) -> None:
        self._targets = {
            "readyz": (port, "/readyz"),
            "local_blob": (port, blob_path),
            "nginx_blob": (reference_port, reference_path),
        }
        self._stop = threading.Event()
        self._active = threading.Event()
        self._active.set()
        self._lock = threading.Lock()
        self._samples: dict[str, list[float]] = {name: [] for name in self._targets}
        self._errors: Counter[str] = Counter()
        self._threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True) for name in self._targets
        ]

    def start(self) -> Prober:
        for thread in self._threads:
            thread.start()
        return self

    def pause(self) -> None:
        self._active.clear()
        time.sleep(2 * PROBE_INTERVAL_S)  # let the requests in flight end

    def resume(self) -> None:
        self._active.set()

    def stop(self) -> None:
        self._stop.set()
        self._active.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def take(self) -> dict[str, Any]:
        """The latencies since the last take (ms): count, p50, p99, max; and errors."""
        with self._lock:
            samples, self._samples = self._samples, {name: [] for name in self._targets}
            errors, self._errors = dict(self._errors), Counter()
        figures: dict[str, Any] = {name: latency_figures(values) for name, values in samples.items()}
        figures["errors"] = errors
        return figures

    def _run(self, name: str) -> None:
        port, path = self._targets[name]
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        next_at = time.monotonic()
        while not self._stop.is_set():
            if not self._active.is_set():
                self._active.wait()
                next_at = time.monotonic()
                continue
            started = time.monotonic()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                ok = False
            elapsed_ms = (time.monotonic() - started) * 1000
            with self._lock:
                if ok:
                    self._samples[name].append(elapsed_ms)
                else:
                    self._errors[name] += 1
            next_at += PROBE_INTERVAL_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        connection.close()


def latency_figures(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max_ms": ordered[-1],
    }


# ---- the phases ---------------------------------------------------------------------------------------


class Run:
    def __init__(self, api: KubeApiServer, lokal_pid: int, log: MembershipLog, prober: Prober) -> None:
        self.api = api
        self.pid = lokal_pid
        self.log = log
        self.prober = prober
        self.nodes: dict[str, dict[str, Any]] = {}
        self.idle_cpu_per_s = 0.0  # lokal's CPU rate with nothing to do and no probes
        self.cpu_per_probe_s = 0.0  # lokal's CPU per probe request it answers

    def reference(self, seconds: float) -> dict[str, Any]:
        """Nothing changes: lokal's idle CPU rate without probes, then its CPU per probe request."""
        self.prober.pause()
        cpu, started = cpu_seconds(self.pid), time.monotonic()
        time.sleep(seconds)
        quiet_s, quiet_cpu = time.monotonic() - started, cpu_seconds(self.pid) - cpu
        self.idle_cpu_per_s = quiet_cpu / quiet_s
        self.prober.resume()
        self.prober.take()
        cpu, started = cpu_seconds(self.pid), time.monotonic()
        time.sleep(seconds)
        elapsed, used = time.monotonic() - started, cpu_seconds(self.pid) - cpu
        probes = self.prober.take()
        answered = _lokal_requests(probes)
        self.cpu_per_probe_s = max(0.0, used - self.idle_cpu_per_s * elapsed) / max(1, answered)
        return {
            "quiet_seconds": quiet_s,
            "quiet_lokal_cpu_s": quiet_cpu,
            "probed_seconds": elapsed,
            "probed_lokal_cpu_s": used,
            "lokal_cpu_per_probe_ms": self.cpu_per_probe_s * 1000,
            "probes": probes,
        }

    def changes(
        self, what: str, jobs: list[Any], pace_s: float, workers: int, probed: bool, count: int = 0
    ) -> dict[str, Any]:
        """Send `jobs` (callables, one change each) at most one per `pace_s` (0: as fast as the API goes),
        then wait until lokal's membership holds the expected state (`count`: the changes the jobs make,
        when not one each). lokal's CPU for the changes is its
        CPU over the phase less its idle rate and (when `probed`) less its cost of the probes answered."""
        expected = expected_counts(self.nodes)
        if probed:
            self.prober.resume()
        else:
            self.prober.pause()
        self.prober.take()
        load = load_average()
        cpu, started, wall_started = cpu_seconds(self.pid), time.monotonic(), time.time()
        if pace_s > 0:
            paced = [_paced(job, started + index * pace_s) for index, job in enumerate(jobs)]
            run_parallel(paced, workers)
        else:
            run_parallel(jobs, workers)
        sent_s = time.monotonic() - started
        last_change = time.time()
        absorbed_at = self.log.wait_for(expected, wall_started, ABSORB_TIMEOUT_S)
        lag = max(0.0, absorbed_at - last_change)
        # Count lokal's CPU until it is done with the changes, then at least as long as the sending took.
        time.sleep(max(0.0, absorbed_at - time.time()) + 0.2)
        elapsed = time.monotonic() - started
        used = cpu_seconds(self.pid) - cpu
        probes = self.prober.take()
        overhead = self.idle_cpu_per_s * elapsed + self.cpu_per_probe_s * _lokal_requests(probes)
        for_changes = max(0.0, used - overhead)
        count = count or len(jobs)
        figures: dict[str, Any] = {
            "changes": count,
            "probed": probed,
            "sent_in_s": sent_s,
            "absorbed_after_last_s": lag,
            "lokal_cpu_s": used,
            "lokal_cpu_for_changes_s": for_changes,
            "cpu_per_change_ms": for_changes / count * 1000,
            "window_s": elapsed,
            "load_average_before": load,
        }
        if probed:
            figures["probes"] = probes
        progress(
            f"{what}: {count} sent in {sent_s:.1f}s, absorbed {lag:.2f}s after the last, "
            f"{figures['cpu_per_change_ms']:.2f} ms CPU per change"
            + (f", readyz p99 {probes['readyz'].get('p99_ms', float('nan')):.1f} ms" if probed else "")
        )
        return figures


def _lokal_requests(probes: dict[str, Any]) -> int:
    return int(sum(probes.get(name, {}).get("count", 0) for name in ("readyz", "local_blob")))


def _paced(job: Any, not_before: float) -> Any:
    def run() -> object:
        delay = not_before - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return job()

    return run


def relabel_job(api: KubeApiServer, nodes: dict[str, dict[str, Any]], name: str, zone: str) -> Any:
    nodes[name]["metadata"]["labels"]["topology.kubernetes.io/zone"] = zone
    return lambda: api.relabel(name, {"topology.kubernetes.io/zone": zone})


# ---- setup --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_lokal(
    group: ProcessGroup, base: Path, api: KubeApiServer, lab: StoreLab
) -> Iterator[tuple[int, int, MembershipLog]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl is needed: it applies lokal's RBAC from manifests/")
    admin = api.write_kubeconfig(base / "admin.kubeconfig", direct=True)
    subprocess.run(
        [kubectl, "--kubeconfig", str(admin), "apply", "-k", str(ROOT / "manifests/base/common")],
        check=True,
        capture_output=True,
        timeout=120,
    )
    token = api.service_account_token("lokal-system", "lokal", expiration_s=7200)
    kubeconfig = api.write_kubeconfig(base / "lokal.kubeconfig", token=token, direct=True)
    port = free_port()
    log_path = base / "lokal.log"
    proc = group.start(
        "lokal",
        lokal_serve_argv(
            port, lab,
            "--discovery", "kubernetes",
            "--kubeconfig", str(kubeconfig),
            "--node-name", SELF,
            "--topology-mode", "prefer",
            "--log-format", "json",
            "--log-level", "info",
        ),
        log_path=log_path,
        cwd=ROOT,
    )
    wait_listening(port, proc, "lokal serve", timeout=60)
    try:
        yield proc.pid, port, MembershipLog(log_path)
    finally:
        group.stop(proc)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 nodes, 200 relabels in 1 s")
    parser.add_argument("--nodes", type=int, help="nodes that join (default 5000; quick 1000)")
    parser.add_argument("--relabels", type=int, help="zone relabels (default 1000; quick 200)")
    parser.add_argument("--burst", type=float, help="seconds the relabels take (default 3; quick 1)")
    parser.add_argument("--window", type=float, default=5.0, help="seconds of the reference phase")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/membership*.json)")
    args = parser.parse_args()
    args.nodes = args.nodes or (1000 if args.quick else 5000)
    args.relabels = min(args.nodes, args.relabels or (200 if args.quick else 1000))
    args.burst = args.burst or (1.0 if args.quick else 3.0)
    if not 1 <= args.nodes <= 20000 or not 0.1 <= args.burst <= 60 or not 1 <= args.window <= 60:
        raise SystemExit("--nodes must be 1-20000, --burst 0.1-60 s, --window 1-60 s")
    return args


def phases(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Reference, joins one by one, then the relabel burst."""
    figures: dict[str, Any] = {"reference": run.reference(args.window)}
    added = [bench_node(i) for i in range(args.nodes)]
    for phase, probed in (("joins_unprobed", False), ("joins", True)):
        if phase == "joins":  # every bench node leaves at once (straight from etcd), then joins again
            for node in added:
                del run.nodes[node["metadata"]["name"]]
            wipe = functools.partial(run.api.wipe_nodes, "n")
            figures["leaves_at_once"] = run.changes("leaves", [wipe], 0.0, 1, probed=False, count=len(added))
        for node in added:
            run.nodes[node["metadata"]["name"]] = node
        jobs = [functools.partial(run.api.put_node, node) for node in added]
        figures[phase] = run.changes(phase, jobs, 0.0, workers=8, probed=probed)
    step = max(1, args.nodes // args.relabels)
    names = [f"n{i:05d}" for i in range(0, args.nodes, step)][: args.relabels]
    for phase, shift, probed in (("relabels_unprobed", 1, False), ("relabels", 2, True)):
        jobs = [relabel_job(run.api, run.nodes, n, f"z{(int(n[1:]) + shift) % ZONES}") for n in names]
        figures[phase] = run.changes(phase, jobs, args.burst / len(jobs), workers=16, probed=probed)
    return figures


def main() -> int:
    args = parse_args()
    missing = missing_parts()
    if missing:
        raise SystemExit(missing)
    out = args.out or ROOT / "bench" / "results" / f"membership{'-quick' if args.quick else ''}.json"
    signal.signal(signal.SIGTERM, terminate)
    base = Path(tempfile.mkdtemp(prefix="lokal-bench-membership-"))
    document: dict[str, Any] = {
        "benchmark": "membership",
        "source": source_version(),
        "parameters": {k: getattr(args, k) for k in ("nodes", "relabels", "burst", "window")},
    }
    try:
        with ProcessGroup() as group:
            lab = prepare_store(group, base / "store", [64 * 1024], seed=18)
            with KubeApiServer(base / "kube", group) as api:
                me = make_node(SELF, region="r0", zone="z0", address="127.0.0.1")
                api.put_node(me)
                with running_lokal(group, base, api, lab) as (pid, port, log):
                    blob_path = f"/v2/{REPOSITORY}/blobs/{lab.layers[0].digest}"
                    nginx, nginx_port = start_nginx(group, base, lab)
                    wait_listening(nginx_port, nginx, "nginx")
                    prober = Prober(port, f"{blob_path}?ns={REGISTRY_NAME}", nginx_port, blob_path)
                    run = Run(api, pid, log, prober.start())
                    run.nodes[SELF] = me
                    try:
                        log.wait_for(expected_counts(run.nodes), 0, 60)
                        document.update(phases(run, args))
                    finally:
                        run.prober.stop()
                    document["lokal_rss_mib"] = _rss_mib(pid)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    document["targets"] = targets(document)
    text = json.dumps(rounded(document), indent=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(text)
    return 0


def targets(document: dict[str, Any]) -> dict[str, Any]:
    relabels = document.get("relabels", {})
    probes = relabels.get("probes", {})
    worst_p99 = max(probes.get(name, {}).get("p99_ms", float("inf")) for name in ("readyz", "local_blob"))
    reference_p99 = probes.get("nginx_blob", {}).get("p99_ms", float("nan"))
    return {
        "worst_lokal_probe_p99_ms": worst_p99,
        "nginx_probe_p99_ms": reference_p99,
        "relabels_absorbed_within_2s": relabels.get("absorbed_after_last_s", float("inf")) <= 2.0,
        "cpu_per_change_at_most_1ms": relabels.get("cpu_per_change_ms", float("inf")) <= 1.0,
        "probe_p99_at_most_10ms_during_burst": worst_p99 <= 10.0,
    }


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    sys.exit(main())
