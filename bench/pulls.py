"""bench/pulls: image pulls in the lab, with real containerd, against a no-mirror baseline.

    .venv/bin/python bench/pulls.py --quick     # 4 nodes, 10 MB/1 layer + 20 MB/4 layers; ~2 min
    .venv/bin/python bench/pulls.py             # 6 nodes, 10 MB/1, 100 MB/4, 150 MB/4 layers; ~13 min

One lab (lokal_lab.cluster.LabCluster: 2 regions, 3 zones, the upstream docker-registry behind a
100 Mbit/s tbf link plus a 20 ms delay proxy, inter-region links shaped with tbf) serves every run. For
each image and scenario (rolling: nodes pull one after another; create: all nodes at once) it runs three
ways, in an order rotated per case so that the machine's noise hits all alike. Two more scenarios are the
references of share while downloading (issue 13): `alone` (one node pulls the image alone, no mirror:
the time the create rows are compared with) and `create-region` (isolate mode, every node of one region
at once: one copy over the upstream link, as prefer mode with cross-region always moves):

- `baseline`: no mirror; hosts.toml names only the upstream and no lokal runs;
- `isolate`: lokal on every node, `--topology-mode isolate`;
- `prefer`: lokal on every node, `--topology-mode prefer --cross-region always`.

Before every run, every lokal is stopped, every node's images are removed and containerd's GC run (the
content store is checked empty), hosts.toml is rewritten for the way, and the lokals are started afresh
(so no index entry survives from an earlier run). Pulls are CRI PullImage, as a kubelet's.

Per run it records: the pull seconds of every node (median and p90), upstream bytes from the registry's
access log (blob and manifest GETs) and from the upstream link's counter, bytes on the inter-region
links, and bytes by tier from each node's lokal `pull` lines (what lokal served its own containerd:
local/peer by tier; misses are fetched upstream by containerd and counted from the registry log).

Rules: pure logic (order, quantiles, tiers, verdicts, the Markdown table) is separate from the lab shell
and takes plain data. Every pull has a timeout; the run count is fixed; the lab is torn down on every path
(SIGTERM and Ctrl-C included). Traffic stays inside the lab's namespaces.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lokal_lab.images import build_image  # noqa: E402

from bench._auto import __doc__ as auto_doc  # noqa: E402
from bench._auto import markdown as auto_markdown  # noqa: E402
from bench._auto import run_auto_section  # noqa: E402
from bench._auto import verdicts as auto_verdicts  # noqa: E402
from bench._harness import progress, rotated, rounded, terminate  # noqa: E402
from bench._lab import percentile  # noqa: E402

MB = 1_000_000
WAYS = ("baseline", "isolate", "prefer")
SCENARIOS = ("rolling", "create")
ALL_SCENARIOS = ("rolling", "alone", "create", "create-region")
SCENARIO_WAYS = {"alone": ("baseline",), "create-region": ("isolate",)}
# Issue 13's figures for the create rows, against `alone` in the same run.
MAX_UPSTREAM_X = 1.1  # upstream bytes per scope, x the image
MAX_MEDIAN_X_ALONE = 1.3
MAX_P90_X_ALONE = 1.5
TIERS = ("same_node", "same_zone", "same_region", "other_region", "upstream")


# ---- pure: the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageSpec:
    name: str  # "10MB-1L"
    layer_sizes: tuple[int, ...]  # payload bytes per layer

    @property
    def payload_bytes(self) -> int:
        return sum(self.layer_sizes)


def image_spec(total_mb: int, layers: int) -> ImageSpec:
    """An image of `total_mb` MB (10^6 bytes) split evenly into `layers` layers."""
    if total_mb < 1 or not 1 <= layers <= 16:
        raise ValueError(f"image {total_mb} MB / {layers} layers: expected >= 1 MB and 1..16 layers")
    size = total_mb * MB // layers
    return ImageSpec(f"{total_mb}MB-{layers}L", tuple([size] * layers))


@dataclass(frozen=True)
class Profile:
    nodes: int
    images: tuple[ImageSpec, ...]
    upstream_rate: str = "100mbit"
    upstream_delay_ms: int = 20
    interregion_rate: str = "200mbit"
    interregion_delay_ms: int = 0
    pull_timeout_s: float = 600.0
    scaled_down: tuple[str, ...] = ()


QUICK = Profile(
    nodes=4,
    images=(image_spec(10, 1), image_spec(20, 4)),
    scaled_down=("quick smoke profile: 4 nodes (not 6); images 10 MB/1 layer and 20 MB/4 layers only",),
)
FULL = Profile(
    nodes=6,
    images=(image_spec(10, 1), image_spec(100, 4), image_spec(150, 4)),
    scaled_down=(
        "the 500 MB/4-layer image is 150 MB/4 layers: at 100 Mbit/s the no-mirror baseline alone moves "
        "6 x 500 MB per scenario (~4 min each), which does not fit one full run in 15 minutes on 2 cores",
        "6 nodes (the issue's minimum), not Spegel's 10",
        "inter-region links: tbf rate only, no added delay (the lab's delay link forwards packets in "
        "Python and would be the bottleneck of cross-region transfers)",
    ),
)


@dataclass(frozen=True)
class Case:
    image: ImageSpec
    scenario: str
    ways: tuple[str, ...]  # the order the three ways run in


def plan(images: Sequence[ImageSpec], scenarios: Sequence[str] = SCENARIOS) -> list[Case]:
    """Every image x scenario, each with the three ways in an order rotated case by case."""
    cases = []
    for index, (image, scenario) in enumerate((i, s) for i in images for s in scenarios):
        cases.append(Case(image, scenario, SCENARIO_WAYS.get(scenario) or tuple(rotated(WAYS, index))))
    return cases


def way_flags(way: str) -> list[str]:
    """lokal serve's flags for a way (the baseline runs no lokal)."""
    if way == "isolate":
        return ["--topology-mode", "isolate", "--cross-region", "never"]
    if way == "prefer":
        return ["--topology-mode", "prefer", "--cross-region", "always"]
    raise ValueError(f"way {way!r}: no lokal flags (expected isolate or prefer)")


# ---- pure: figures --------------------------------------------------------------------------------


def tier_bytes(own_events: Iterable[dict[str, Any]], upstream_bytes: int) -> dict[str, int]:
    """Bytes by tier for one run: lokal's local/peer lines for its own containerd, plus what the registry
    served (every byte containerd did not get from lokal came from upstream). `error` counts bytes of
    bodies that broke off."""
    totals = dict.fromkeys((*TIERS, "error"), 0)
    for event in own_events:
        if event.get("method") != "GET":
            continue
        result = event.get("result")
        count = int(event.get("bytes", 0) or 0)
        if result == "local":
            totals["same_node"] += count
        elif result == "peer":
            tier = str(event.get("tier") or "")
            totals[tier if tier in totals else "error"] += count
        elif result == "error":
            totals["error"] += count
    totals["upstream"] = upstream_bytes
    return totals


def upstream_counted(registry_log_bytes: int, link_bytes: int) -> int:
    """What really came from upstream. The registry's log counts what it wrote: under containerd 2.1's
    chunked fetches (a hang-up after each chunk) that includes bytes that never left its socket buffers.
    The link counter also counts headers. The smaller of the two (the log alone without a link count)."""
    return min(registry_log_bytes, link_bytes) if link_bytes else registry_log_bytes


def verdict_rolling(way: str, upstream_bytes: int, image_bytes: int, regions: int) -> dict[str, Any]:
    """Issue 9's expectation for the rolling scenario: 1x the image per region (isolate), 1x per cluster
    (prefer with cross-region always); the baseline fetches it once per node."""
    expected = {"isolate": regions, "prefer": 1}.get(way)
    ratio = upstream_bytes / image_bytes if image_bytes else math.nan
    if expected is None:
        return {"upstream_x_image": ratio}
    return {
        "upstream_x_image": ratio,
        "expected_x_image": expected,
        "verdict": "pass" if abs(ratio - expected) < 0.01 else "fail",
    }


def verdict_create(
    run: dict[str, Any], regions: int, alone_seconds: float | None
) -> dict[str, Any]:
    """Issue 13's figures for a burst: upstream bytes at most 1.1x the image per scope (a region in isolate,
    the cluster in prefer with cross-region always); where one copy crosses the upstream link (prefer, and
    isolate with one region pulling), median and p90 pull times at most 1.3x and 1.5x one node alone."""
    way, scenario = run["way"], run["scenario"]
    upstream = upstream_counted(run["upstream_bytes_registry_log"], run.get("upstream_bytes_link", 0))
    ratio = upstream / run["image_bytes"] if run["image_bytes"] else math.nan
    found: dict[str, Any] = {"upstream_x_image": ratio}
    copies = {"isolate": 1 if scenario == "create-region" else regions, "prefer": 1}.get(way)
    if copies is None:
        return found
    checks = [ratio <= MAX_UPSTREAM_X * copies]
    found["max_upstream_x_image"] = MAX_UPSTREAM_X * copies
    if copies == 1 and alone_seconds:
        found["median_x_alone"] = run["pull_seconds_median"] / alone_seconds
        found["p90_x_alone"] = run["pull_seconds_p90"] / alone_seconds
        checks += [found["median_x_alone"] <= MAX_MEDIAN_X_ALONE, found["p90_x_alone"] <= MAX_P90_X_ALONE]
    found["verdict"] = "pass" if all(checks) else "fail"
    return found


def judge_bursts(runs: Sequence[dict[str, Any]], regions: int) -> None:
    """Fill in the expectation of every create and create-region run against one node alone: the median
    of the rolling baseline's pulls (each node alone, no mirror, same link: six samples), else `alone`."""
    alone = {r["image"]: r["pull_seconds_median"] for r in runs if r["scenario"] == "alone"}
    alone.update(
        (r["image"], r["pull_seconds_median"])
        for r in runs if r["scenario"] == "rolling" and r["way"] == "baseline"
    )
    for run in runs:
        if run["scenario"] in ("create", "create-region"):
            run["expectation"] = verdict_create(run, regions, alone.get(run["image"]))


def run_summary(
    way: str,
    scenario: str,
    image: ImageSpec,
    image_bytes: int,
    regions: int,
    nodes: Sequence[dict[str, Any]],
    registry_bytes: int,
    upstream_wire_bytes: int,
    cross_region_wire_bytes: int,
    tiers: dict[str, int],
    wall_seconds: float,
) -> dict[str, Any]:
    seconds = [float(n["seconds"]) for n in nodes]
    upstream = upstream_counted(registry_bytes, upstream_wire_bytes)
    summary: dict[str, Any] = {
        "image": image.name,
        "scenario": scenario,
        "way": way,
        "image_bytes": image_bytes,
        "nodes": list(nodes),
        "pull_seconds_median": percentile(seconds, 0.5),
        "pull_seconds_p90": percentile(seconds, 0.9),
        "wall_seconds": wall_seconds,
        "upstream_bytes_registry_log": registry_bytes,
        "upstream_bytes_link": upstream_wire_bytes,
        "upstream_bytes": upstream,
        "cross_region_bytes_link": cross_region_wire_bytes,
        "bytes_by_tier": tiers,
    }
    if scenario == "rolling":
        summary["expectation"] = verdict_rolling(way, upstream, image_bytes, regions)
    else:
        summary["expectation"] = {"upstream_x_image": upstream / image_bytes if image_bytes else 0}
    return summary


def _vs_alone(expectation: dict[str, Any]) -> str:
    parts = []
    if "median_x_alone" in expectation:
        parts.append(f"{expectation['median_x_alone']:.2f} / {expectation['p90_x_alone']:.2f}")
    if "verdict" in expectation:
        parts.append(expectation["verdict"])
    return ", ".join(parts)


def human(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """One row per run, grouped by image and scenario, ways in a fixed order (baseline, isolate, prefer)."""
    header = (
        "| image | scenario | way | pull s median | pull s p90 | upstream (registry log) | x image "
        "| upstream (link) | cross-region (link) | same node | same zone | same region | other region "
        "| x alone (median / p90), verdict |\n"
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    order = {w: i for i, w in enumerate(WAYS)}
    rows = []
    for run in sorted(
        runs, key=lambda r: (r["image_bytes"], ALL_SCENARIOS.index(r["scenario"]), order[r["way"]])
    ):
        tiers = run["bytes_by_tier"]
        rows.append(
            f"| {run['image']} | {run['scenario']} | {run['way']} | {run['pull_seconds_median']:.2f} "
            f"| {run['pull_seconds_p90']:.2f} | {human(run['upstream_bytes_registry_log'])} "
            f"| {run['expectation']['upstream_x_image']:.2f} | {human(run['upstream_bytes_link'])} "
            f"| {human(run['cross_region_bytes_link'])} | {human(tiers['same_node'])} "
            f"| {human(tiers['same_zone'])} | {human(tiers['same_region'])} "
            f"| {human(tiers['other_region'])} | {_vs_alone(run['expectation'])} |"
        )
    return "\n".join([header, *rows])


# ---- I/O: the lab shell ---------------------------------------------------------------------------


@dataclass
class Pushed:
    spec: ImageSpec
    reference: str
    digests: list[str]
    image_bytes: int  # every blob of one pull: manifest, config, layers


@dataclass
class Bench:
    cluster: Any  # LabCluster
    profile: Profile
    log: list[str] = field(default_factory=list)

    def prepare(self, way: str) -> None:
        """Fresh state for one run: lokals stopped, stores emptied, hosts.toml for the way, lokals back."""
        cluster = self.cluster
        cluster.stop_all_lokals()
        for node in cluster.nodes:
            left = cluster.reset_node(node)
            if left:
                raise RuntimeError(f"{node}: {left} blobs left in containerd's store after remove + GC")
        cluster.use_mirror(way != "baseline")
        if way != "baseline":
            cluster.start_lokal(*cluster.nodes, extra_args=way_flags(way), timeout=60)

    def pullers(self, scenario: str) -> tuple[str, ...]:
        """Who pulls: one node alone, every node of the first region, or every node."""
        cluster = self.cluster
        if scenario == "alone":
            return cluster.nodes[:1]
        if scenario == "create-region":
            first = cluster.topology.regions[0]
            return tuple(n.name for n in cluster.topology.nodes_in(first))
        return cluster.nodes

    def pull_all(self, scenario: str, reference: str) -> list[tuple[str, float]]:
        cluster, timeout = self.cluster, self.profile.pull_timeout_s
        nodes = self.pullers(scenario)
        if scenario in ("rolling", "alone"):
            return [(node, cluster.pull(node, reference, timeout=timeout).seconds) for node in nodes]
        barrier = threading.Barrier(len(nodes))
        results: dict[str, float] = {}
        errors: list[BaseException] = []

        def one(node: str) -> None:
            try:
                barrier.wait(timeout=30)
                results[node] = cluster.pull(node, reference, timeout=timeout).seconds
            except BaseException as exc:  # reported after the join
                errors.append(exc)

        threads = [threading.Thread(target=one, args=(n,), daemon=True) for n in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout + 60)
        if errors or len(results) != len(threads):
            raise RuntimeError(f"create scenario: {len(results)}/{len(threads)} pulls done; {errors[:1]}")
        return [(node, results[node]) for node in nodes]

    def run(self, image: Pushed, scenario: str, way: str) -> dict[str, Any]:
        from lokal_lab.cluster import is_local_client

        cluster = self.cluster
        self.prepare(way)
        marks = {n: len(cluster.pull_events(n)) for n in cluster.nodes}
        registry_mark = cluster.upstream_mark()
        wire_before = cluster.lab.upstream_bytes().b_to_a
        cross_before = cluster.lab.cross_region_bytes()
        started = time.monotonic()
        timings = self.pull_all(scenario, image.reference)
        wall = time.monotonic() - started
        own: list[dict[str, Any]] = []
        nodes = []
        for node, seconds in timings:
            events: list[dict[str, Any]] = []
            if way != "baseline":
                events = cluster.wait_for_pull_events(node, image.digests)[marks[node] :]
            mine = [e for e in events if is_local_client(e)]
            own += mine
            spec = cluster.topology.node(node)
            nodes.append(
                {
                    "name": node,
                    "region": spec.region,
                    "zone": spec.zone,
                    "seconds": seconds,
                    "bytes_by_tier": tier_bytes(mine, 0),
                }
            )
        gets = cluster.upstream_gets(registry_mark)
        registry_bytes = sum(g.bytes for g in gets if g.status in (200, 206))
        upstream_wire = cluster.lab.upstream_bytes().b_to_a - wire_before
        cross_wire = cluster.lab.cross_region_bytes() - cross_before
        return run_summary(
            way,
            scenario,
            image.spec,
            image.image_bytes,
            len(cluster.topology.regions),
            nodes,
            registry_bytes,
            upstream_wire,
            cross_wire,
            tier_bytes(own, registry_bytes),
            wall,
        )


def push_images(cluster: Any, images: Sequence[ImageSpec], scratch: Path) -> list[Pushed]:
    pushed = []
    for index, spec in enumerate(images):
        image = build_image(scratch / spec.name, "v1", spec.layer_sizes, seed=1000 + index)
        reference = cluster.push(image, f"bench/{spec.name.lower()}")
        blobs = image.blobs_for("linux/amd64")
        pushed.append(Pushed(spec, reference, [b.digest for b in blobs], sum(b.size for b in blobs)))
        progress(f"pushed {reference} ({human(pushed[-1].image_bytes)}, {len(spec.layer_sizes)} layers)")
    return pushed


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": os.getloadavg()[0],
    }


def chosen_containerd(parser: argparse.ArgumentParser, series: str | None) -> Any:
    """--containerd, made the lab's default for this process and the ones it starts; an error names it."""
    from lokal_lab.containerd_versions import ContainerdVersionError, default_version, use_version

    try:
        return use_version(series) if series else default_version()
    except ContainerdVersionError as exc:
        parser.error(f"--containerd: {exc}")


def default_out(quick: bool, series: str) -> Path:
    suffix = "" if series == "1.6" else f"-containerd{series}"
    return ROOT / "bench" / "results" / (("pulls-quick" if quick else "pulls") + suffix + ".json")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 nodes, 2 small images (~2-3 min)")
    parser.add_argument("--out", type=Path, help="JSON file (default: bench/results/pulls[-quick].json)")
    parser.add_argument(
        "--interregion-delay-ms", type=int, default=None, help="added inter-region delay (default 0: off)"
    )
    parser.add_argument(
        "--auto-only", action="store_true",
        help="run only the auto section (rolling across regions: never / always / auto, two link regimes)",
    )
    parser.add_argument(
        "--containerd", metavar="VERSION", default=None,
        help="the lab's containerd: 1.6 (the system's), 1.7 or 2.1 (default: LOKAL_CONTAINERD or 1.6)",
    )
    args = parser.parse_args(argv)
    containerd = chosen_containerd(parser, args.containerd)
    profile = QUICK if args.quick else FULL
    if args.interregion_delay_ms is not None:
        if not 0 <= args.interregion_delay_ms <= 200:
            parser.error("--interregion-delay-ms must be 0..200")
        profile = replace(profile, interregion_delay_ms=args.interregion_delay_ms)
    out = args.out or default_out(args.quick, containerd.series)

    from lokal_lab.cluster import LabCluster
    from lokal_lab.network import lab_unavailable_reason
    from lokal_lab.topology import example_topology

    reason = lab_unavailable_reason()
    if reason:
        print(f"bench/pulls: cannot run here: {reason}", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, terminate)
    topology = example_topology(
        profile.nodes,
        upstream_rate=profile.upstream_rate,
        upstream_delay_ms=profile.upstream_delay_ms,
        interregion_rate=profile.interregion_rate,
        interregion_delay_ms=profile.interregion_delay_ms,
        mtu=9000 if profile.interregion_delay_ms else 1500,
    )
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    host = machine()
    with (
        tempfile.TemporaryDirectory(prefix="lokal-bench-pulls-") as scratch,
        LabCluster(topology, mirror=False) as cluster,
    ):
        regions, zones = len(topology.regions), len(topology.zones)
        progress(f"lab up: {profile.nodes} nodes, {regions} regions, {zones} zones")
        images = push_images(cluster, profile.images, Path(scratch))
        bench = Bench(cluster, profile)
        by_name = {p.spec.name: p for p in images}
        cases = [] if args.auto_only else plan(profile.images, ALL_SCENARIOS)
        for case in cases:
            for way in case.ways:
                result = bench.run(by_name[case.image.name], case.scenario, way)
                runs.append(result)
                progress(
                    f"{case.image.name} {case.scenario:<7} {way:<8} "
                    f"median {result['pull_seconds_median']:.2f}s p90 {result['pull_seconds_p90']:.2f}s "
                    f"upstream {result['expectation']['upstream_x_image']:.2f}x image, "
                    f"cross-region {human(result['cross_region_bytes_link'])}"
                )
        auto_runs = run_auto_section(
            cluster, Path(scratch), 2 if args.quick else 3, [6 * MB] * 2 if args.quick else [12 * MB] * 2,
            profile.pull_timeout_s, rounds=1 if args.quick else 2,
        )
    if runs:
        judge_bursts(runs, len(topology.regions))
    report = {
        "benchmark": "bench/pulls.py",
        "profile": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host,
        "containerd": containerd.series
        + (" (concurrent_layer_fetch_buffer 1 MiB)" if containerd.fetches_layers_in_ranges else ""),
        "topology": {
            "nodes": [asdict(n) for n in topology.nodes],
            "regions": list(topology.regions),
            "zones": list(topology.zones),
            "upstream": f"{profile.upstream_rate} tbf + {profile.upstream_delay_ms} ms delay proxy",
            "interregion": f"{profile.interregion_rate} tbf + {profile.interregion_delay_ms} ms delay",
        },
        "images": [{"name": i.name, "layer_payload_bytes": list(i.layer_sizes)} for i in profile.images],
        "scaled_down": list(profile.scaled_down),
        "ways": {
            "baseline": "no mirror: hosts.toml names only the upstream, no lokal runs",
            "isolate": "lokal --topology-mode isolate --cross-region never",
            "prefer": "lokal --topology-mode prefer --cross-region always",
        },
        "notes": [
            "upstream_bytes_registry_log: bytes of blob and manifest GETs the registry answered (200/206)",
            "upstream_bytes_link / cross_region_bytes_link: interface counters, all traffic incl. headers",
            "upstream_bytes (x image): the smaller of the two upstream counts; the registry log overcounts "
            "containerd 2.1's chunked fetches (it counts what it wrote before each hang-up)",
            "pull_seconds_p90: linear interpolation over the nodes' pull times",
            "create / create-region: share while downloading (issue 13): one node per scope fetches each "
            "blob upstream, the others follow its download; x alone: against the median of the rolling "
            "baseline's pulls (each node alone through the same link), else the single `alone` pull",
        ],
        "wall_seconds": time.monotonic() - started,
        "runs": runs,
        "auto": {"doc": (auto_doc or "").strip(), "runs": auto_runs, "verdicts": auto_verdicts(auto_runs)},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rounded(report), indent=2) + "\n")
    if runs:
        print(markdown_table(runs))
    print(auto_markdown(auto_runs))
    progress(f"written {out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"bench/pulls: interrupted ({exc}); the lab is torn down", file=sys.stderr)
        sys.exit(130)
