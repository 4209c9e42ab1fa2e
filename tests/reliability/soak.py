"""The soak, shared by tests/reliability/test_soak.py (bounded, ~1 minute of load) and bench/soak.py (as long
as asked, JSON out): 64 clients in two node namespaces mixing local hits, relays, misses and Range requests
against their own lokal, while the membership churns through the fake API server every few seconds and one
provider's lokal is restarted in the middle. It samples every lokal's RSS and counts its file descriptors
before the load and after a settle period.

    with LabCluster(SOAK_TOPOLOGY, lokal_args=SOAK_LOKAL_ARGS) as cluster:
        report = run_soak(cluster, work_dir, SoakPlan(seconds=60))

Rules: every loop here is bounded in count and time; the load runs only inside lab namespaces; the
restarted lokal and every load generator are processes of the lab's ProcessGroup (stopped by PID).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from subprocess import Popen
from typing import Any

from lokal_lab.cluster import LOKAL_PORT, LabCluster
from lokal_lab.images import BuiltImage, build_image
from lokal_lab.topology import LabTopology, NodeSpec

from tests.reliability.labtools import (
    blob_path,
    extra_node,
    fake_api,
    lokal_pid,
    pull_checked,
    rss_bytes,
)

LOADGEN = Path(__file__).with_name("loadgen.py")

# region-a: node-1, node-2 (providers) and node-3 (load) in zone-a1, node-4 (load) in zone-a2;
# region-b: node-5, whose Node object comes and goes with the churn.
SOAK_TOPOLOGY = LabTopology(
    nodes=(
        NodeSpec("node-1", "region-a", "zone-a1"),
        NodeSpec("node-2", "region-a", "zone-a1"),
        NodeSpec("node-3", "region-a", "zone-a1"),
        NodeSpec("node-4", "region-a", "zone-a2"),
        NodeSpec("node-5", "region-b", "zone-b1"),
    ),
    upstream_rate="200mbit",
    upstream_delay_ms=5,
)
# Short idle timeout: the server's keep-alive connections are gone after the settle period, so the
# file descriptor counts before and after compare like with like.
SOAK_LOKAL_ARGS = ("--idle-timeout", "5")
LOAD_NODES = ("node-3", "node-4")
RESTARTED = "node-2"


@dataclass(frozen=True)
class SoakPlan:
    seconds: float = 60.0
    clients: int = 64  # in total, split over LOAD_NODES
    max_requests: int = 2_000_000  # a bound in count too; the time bound usually ends the run first
    churn_every_s: float = 3.0
    restart_at: float = 0.5  # fraction of `seconds`
    sample_every_s: float = 1.0
    settle_s: float = 8.0  # after the load: idle keep-alives close (--idle-timeout 5) before fds are counted
    layer_sizes: tuple[int, ...] = (3_000_000, 1_000_000, 200_000)


@dataclass
class NodeFigures:
    pid_before: int
    pid_after: int
    fds_before: dict[str, int]
    fds_after: dict[str, int]
    rss_mb: list[float] = field(default_factory=list)

    @property
    def restarted(self) -> bool:
        return self.pid_before != self.pid_after


@dataclass
class SoakReport:
    plan: dict[str, Any]
    load: dict[str, Any]  # per load node: loadgen's summary
    nodes: dict[str, NodeFigures]
    churn_events: list[str]
    restarted: str
    crashed: list[str]
    seconds: float

    def totals(self) -> dict[str, int]:
        sums: dict[str, int] = {}
        for summary in self.load.values():
            for kind, entry in summary["kinds"].items():
                for key in ("requests", "ok", "corrupt", "cut", "errors"):
                    sums[f"{kind}_{key}"] = sums.get(f"{kind}_{key}", 0) + int(entry.get(key, 0))
                sums["requests"] = sums.get("requests", 0) + int(entry["requests"])
                sums["corrupt"] = sums.get("corrupt", 0) + int(entry.get("corrupt", 0))
        return sums

    def summary(self) -> str:
        """The figures in a few lines: requests by kind and outcome, fds before/after, RSS."""
        lines = [
            f"soak: {self.seconds} s in all, churn events {len(self.churn_events)}, crashed {self.crashed}"
        ]
        for node, summary in self.load.items():
            lines.append(
                f"  load on {node}: {summary.get('requests')} requests in {summary.get('seconds')} s"
            )
            for kind, e in sorted(summary.get("kinds", {}).items()):
                lines.append(
                    f"    {kind:<6} {e['requests']:>7} ok {e['ok']:>7} corrupt {e['corrupt']} cut {e['cut']} "
                    f"errors {e['errors']} statuses {e['statuses']} p50 {e['p50_ms']} ms p99 {e['p99_ms']} ms"
                )
        for node, f in self.nodes.items():
            rss = f.rss_mb
            lines.append(
                f"  lokal {node}{' (restarted)' if f.restarted else ''}: fds {f.fds_before.get('total')} -> "
                f"{f.fds_after.get('total')} ({f.fds_before} -> {f.fds_after}); RSS MB first {rss[:1]} "
                f"peak {max(rss, default=None)} last {rss[-3:]}"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["totals"] = self.totals()
        for name, figures in self.nodes.items():
            document["nodes"][name]["peak_rss_mb"] = max(figures.rss_mb, default=None)
            document["nodes"][name]["restarted"] = figures.restarted
        return document


def fd_kinds(pid: int) -> dict[str, int]:
    """A process's open file descriptors by kind: socket, file (blob files being served), pipe, other."""
    kinds = {"socket": 0, "file": 0, "pipe": 0, "other": 0}
    directory = f"/proc/{pid}/fd"
    for name in os.listdir(directory):
        try:
            target = os.readlink(f"{directory}/{name}")
        except OSError:
            continue
        if target.startswith("socket:"):
            kinds["socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("/"):
            kinds["file"] += 1
        else:
            kinds["other"] += 1
    kinds["total"] = sum(kinds.values())
    return kinds


def rss_growth_stopped(samples: list[float], tolerance_mb: float = 8.0, tolerance_ratio: float = 0.1) -> bool:
    """RSS stops growing: the last third of the samples peaks no higher than the rest (plus tolerance)."""
    if len(samples) < 6:
        return True
    cut = len(samples) * 2 // 3
    earlier, later = max(samples[:cut]), max(samples[cut:])
    return later <= earlier + max(tolerance_mb, earlier * tolerance_ratio)


def _slice_sha(image: BuiltImage, digest: str, first: int, last: int) -> str:
    data = (image.layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    return "sha256:" + hashlib.sha256(data[first : last + 1]).hexdigest()


def _work(
    cluster: LabCluster,
    local: BuiltImage,
    relayed: list[tuple[str, BuiltImage]],
    local_repo: str,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """The request mix: per round, every local layer, every relayed layer, 2 misses and 3 ranges."""
    work: list[dict[str, Any]] = []
    for blob in local.layers["linux/amd64"]:
        work.append(
            {
                "kind": "local",
                "path": blob_path(cluster, local_repo, blob.digest),
                "digest": blob.digest,
                "size": blob.size,
            }
        )
    for repository, image in relayed:
        for blob in image.layers["linux/amd64"]:
            work.append(
                {
                    "kind": "relay",
                    "path": blob_path(cluster, repository, blob.digest),
                    "digest": blob.digest,
                    "size": blob.size,
                }
            )
    for _ in range(2):
        digest = "sha256:" + rng.randbytes(32).hex()
        work.append(
            {"kind": "miss", "path": blob_path(cluster, local_repo, digest), "digest": digest, "size": 0}
        )
    sources = [(local_repo, local), *relayed]
    for repository, image in sources:
        blob = image.layers["linux/amd64"][0]
        first = rng.randrange(0, blob.size // 2)
        last = min(blob.size - 1, first + rng.randrange(1, 1_000_000))
        work.append(
            {
                "kind": "range",
                "path": blob_path(cluster, repository, blob.digest),
                "digest": blob.digest,
                "size": blob.size,
                "range": [first, last],
                "expect_sha256": _slice_sha(image, blob.digest, first, last),
            }
        )
    rng.shuffle(work)
    return work


def prepare(cluster: LabCluster, work_dir: Path, plan: SoakPlan) -> dict[str, list[dict[str, Any]]]:
    """Images: node-1 holds "one", node-2 holds "two", the load nodes hold "own". Returns each load node's
    request mix."""
    sizes = list(plan.layer_sizes)
    built = {
        name: build_image(work_dir / name, "v1", sizes, seed=700 + i)
        for i, name in enumerate(("one", "two", "own"))
    }
    refs = {name: cluster.push(image, f"soak/{name}") for name, image in built.items()}
    pull_checked(cluster, "node-1", refs["one"], built["one"])
    pull_checked(cluster, "node-2", refs["two"], built["two"])
    for node in LOAD_NODES:
        pull_checked(cluster, node, refs["own"], built["own"])
    relayed = [("soak/one", built["one"]), ("soak/two", built["two"])]
    rng = random.Random(7)
    return {node: _work(cluster, built["own"], relayed, "soak/own", rng) for node in LOAD_NODES}


def run_soak(cluster: LabCluster, work_dir: Path, plan: SoakPlan, log: Any = None) -> SoakReport:
    """Prepare, measure, load with churn and a restart, settle, measure. Bounded by the plan's times."""
    say = log or (lambda message: None)
    started = time.monotonic()
    works = prepare(cluster, work_dir, plan)
    time.sleep(plan.settle_s)  # the pulls' keep-alives close too: the "before" count is at rest
    nodes = {
        n: NodeFigures(lokal_pid(cluster, n), 0, fd_kinds(lokal_pid(cluster, n)), {}) for n in cluster.nodes
    }
    loadgens = _start_load(cluster, work_dir, plan, works)
    say(f"load: {plan.clients} clients on {', '.join(LOAD_NODES)} for {plan.seconds:.0f} s")
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(cluster, nodes, plan.sample_every_s, stop), daemon=True)
    sampler.start()
    try:
        churn = _churn_and_restart(cluster, plan, [p for _, p, _ in loadgens], say)
        load: dict[str, Any] = {}
        for node, proc, out in loadgens:
            proc.wait(timeout=plan.seconds + 120)
            lines = [line for line in out.read_text().splitlines() if line.startswith("{")]
            load[node] = json.loads(lines[-1]) if lines else {"kinds": {}, "error": out.read_text()[-2000:]}
        say(f"settling {plan.settle_s:.0f} s")
        time.sleep(plan.settle_s)
    finally:
        stop.set()
        sampler.join(timeout=10)
    crashed = []
    for node, figures in nodes.items():
        if not cluster.lokal_running(node):
            crashed.append(f"lokal on {node}")
            continue
        figures.pid_after = lokal_pid(cluster, node)
        figures.fds_after = fd_kinds(figures.pid_after)
    for proc in cluster.processes():
        if proc.poll() is not None:
            crashed.append(
                " ".join(str(a) for a in proc.args[4:7]) if isinstance(proc.args, list) else str(proc.args)
            )
    return SoakReport(
        asdict(plan),
        load,
        nodes,
        churn,
        RESTARTED,
        sorted(set(crashed)),
        round(time.monotonic() - started, 1),
    )


def _start_load(
    cluster: LabCluster, work_dir: Path, plan: SoakPlan, works: dict[str, list[dict[str, Any]]]
) -> list[tuple[str, Popen[bytes], Path]]:
    loadgens = []
    per_node = plan.clients // len(LOAD_NODES)
    for node, work in works.items():
        spec = {
            "host": "127.0.0.1",
            "port": LOKAL_PORT,
            "clients": per_node,
            "timeout": 30,
            "max_requests": plan.max_requests // len(LOAD_NODES),
            "max_seconds": plan.seconds,
            "work": work,
        }
        spec_path = work_dir / f"load-{node}.json"
        spec_path.write_text(json.dumps(spec))
        out = work_dir / f"load-{node}.out"
        proc = cluster.lab.start(
            node, "loadgen", [sys.executable, str(LOADGEN), str(spec_path)], log_path=out
        )
        loadgens.append((node, proc, out))
    return loadgens


def _churn_and_restart(cluster: LabCluster, plan: SoakPlan, loads: list[Popen[bytes]], say: Any) -> list[str]:
    """Churn every `churn_every_s` and restart RESTARTED's lokal once, until the load ends (bounded by the
    plan's seconds); the membership is put back as it was, whatever happens."""
    churn: list[str] = []
    began = time.monotonic()
    restarted = False
    with fake_api(cluster) as api:
        node5 = api.node("node-5")
        step = 0
        try:
            while time.monotonic() - began < plan.seconds and any(p.poll() is None for p in loads):
                time.sleep(min(plan.churn_every_s, max(0.0, plan.seconds - (time.monotonic() - began))))
                churn.append(_churn_step(api, step, node5))
                step += 1
                if not restarted and time.monotonic() - began >= plan.seconds * plan.restart_at:
                    say(f"restarting lokal on {RESTARTED}")
                    cluster.stop_lokal(RESTARTED)
                    cluster.start_lokal(RESTARTED)
                    churn.append(f"restarted lokal on {RESTARTED}")
                    restarted = True
        finally:
            present = {n["metadata"]["name"] for n in api.nodes()}
            for name in present:
                if name.startswith("phantom-"):
                    api.delete(name)
            if "node-5" not in present:
                api.put(node5)
    return churn


def _churn_step(api: Any, step: int, node5: dict[str, Any]) -> str:
    """Four steps that repeat: a phantom region-a node joins (an address nobody answers, inside the lab
    range), node-5 leaves, the phantom leaves, node-5 comes back."""
    phase = step % 4
    phantom = f"phantom-{step - phase}"
    if phase == 0:
        api.put(extra_node(phantom, f"198.18.250.{(step // 4) % 250 + 1}", region="region-a", zone="zone-a2"))
        return f"+{phantom}"
    if phase == 1:
        api.delete("node-5")
        return "-node-5"
    if phase == 2:
        api.delete(phantom)
        return f"-{phantom}"
    api.put(node5)
    return "+node-5"


def _sample(cluster: LabCluster, nodes: dict[str, NodeFigures], every: float, stop: threading.Event) -> None:
    for _ in range(100_000):  # bounded; ends with `stop`
        for name, figures in nodes.items():
            with contextlib.suppress(AssertionError, OSError):  # restarting right now
                figures.rss_mb.append(round(rss_bytes(lokal_pid(cluster, name)) / 1e6, 1))
        if stop.wait(every):
            return
