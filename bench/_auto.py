"""bench/pulls' `auto` section: rolling pulls across regions in prefer mode with `--cross-region` never,
always and auto, in two link regimes, judged by the pulls where crossing is the question.

For each regime (the upstream and inter-region tbf rates set at run time) and each way, in rotated order:
every lokal is stopped, every store emptied, lokals start with `--topology-mode prefer --cross-region
<way>`; the first node of region-b pulls a warm-up image nobody holds (upstream in every way: it gives
auto its first upstream sample, which in a real cluster the node's earlier pulls would have); then, image
by image, the first node of region-a pulls it (from upstream) and the first node of region-b pulls it
right after. Only that second pull has a choice: the other region, or upstream. The figure per way is the
median of those pulls' seconds; auto passes when it is within `MAX_AUTO_X` of the better of never and
always in that regime.

Rules: pure parts (regimes, medians, verdicts, the table) take plain data; the shell only drives the lab.
Every pull has a timeout; the run count is fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lokal_lab.images import build_image

from bench._harness import progress, rotated
from bench._lab import percentile

MB = 1_000_000
AUTO_WAYS = ("never", "always", "auto")
MAX_AUTO_X = 1.10


@dataclass(frozen=True)
class Regime:
    name: str
    upstream_rate: str
    interregion_rate: str


REGIMES = (
    Regime("fast-upstream", upstream_rate="400mbit", interregion_rate="40mbit"),
    Regime("slow-upstream", upstream_rate="40mbit", interregion_rate="400mbit"),
)


def verdicts(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per regime: each way's median cross-candidate pull (over every round), the better of never/always,
    auto's ratio to it."""
    out = []
    for regime in dict.fromkeys(r["regime"] for r in runs):
        median = {
            way: percentile([s for r in runs if r["regime"] == regime and r["way"] == way
                             for s in r["candidate_seconds"]], 0.5)
            for way in AUTO_WAYS
        }
        best_way = min(("never", "always"), key=lambda w: median[w])
        ratio = median["auto"] / median[best_way] if median[best_way] else float("nan")
        out.append({
            "regime": regime,
            "medians": median,
            "best_of_never_always": best_way,
            "auto_x_best": ratio,
            "verdict": "pass" if ratio <= MAX_AUTO_X else "fail",
        })
    return out


def markdown(runs: Sequence[dict[str, Any]]) -> str:
    header = ("| regime | round | way | median s (region-b's first pull of each image) | all pulls median s "
              "| cross-region (link) | auto decisions (peer / upstream) |\n|---|---:|---|---:|---:|---:|---|")
    rows = [
        f"| {r['regime']} | {r['round']} | {r['way']} | {r['candidate_seconds_median']:.2f} "
        f"| {r['all_seconds_median']:.2f} "
        f"| {r['cross_region_bytes_link'] / MB:.1f} MB | {r['auto_peer']} / {r['auto_upstream']} |"
        for r in sorted(runs, key=lambda r: (r["regime"], r["round"], AUTO_WAYS.index(r["way"])))
    ]
    lines = [header, *rows, ""]
    for v in verdicts(runs):
        best = v["best_of_never_always"]
        lines.append(f"- {v['regime']} (median over all rounds): auto {v['medians']['auto']:.2f} s vs {best} "
                     f"{v['medians'][best]:.2f} s = {v['auto_x_best']:.2f}x "
                     f"(<= {MAX_AUTO_X}x: {v['verdict']})")
    return "\n".join(lines)


# ---- the lab shell ----------------------------------------------------------------------------------


def run_auto_section(
    cluster: Any, scratch: Path, image_count: int, layer_sizes: list[int], timeout: float, rounds: int = 1
) -> list[dict[str, Any]]:
    from lokal_lab.cluster import is_local_client

    topology = cluster.topology
    first_a = topology.nodes_in(topology.regions[0])[0].name
    first_b = topology.nodes_in(topology.regions[1])[0].name
    inter = cluster.lab.plan.links_of(_interregion_kind())[0].name
    runs = []
    seed = 5000
    for round_index, (regime_index, regime) in ((r, x) for r in range(rounds) for x in enumerate(REGIMES)):
        for way in rotated(AUTO_WAYS, regime_index + round_index):
            seed += 1
            warm_image = build_image(scratch / f"warm-{seed}", "v1", [8 * MB], seed=seed)
            warm = cluster.push(warm_image, f"auto/w{seed}")
            images = []
            for _ in range(image_count):
                seed += 1
                built = build_image(scratch / f"img-{seed}", "v1", layer_sizes, seed=seed)
                images.append(cluster.push(built, f"auto/i{seed}"))
            cluster.stop_all_lokals()
            for node in cluster.nodes:
                cluster.reset_node(node)
            cluster.use_mirror(True)
            cluster.lab.set_rate("upstream", regime.upstream_rate)
            cluster.lab.set_rate(inter, regime.interregion_rate)
            flags = ["--topology-mode", "prefer", "--cross-region", way]
            cluster.start_lokal(*cluster.nodes, extra_args=flags, timeout=60)
            marks = len(cluster.pull_events(first_b))
            cluster.pull(first_b, warm, timeout=timeout)
            before = cluster.lab.cross_region_bytes()
            candidate, everything = [], []
            for reference in images:
                everything.append(cluster.pull(first_a, reference, timeout=timeout).seconds)
                seconds = cluster.pull(first_b, reference, timeout=timeout).seconds
                candidate.append(seconds)
                everything.append(seconds)
            crossed = cluster.lab.cross_region_bytes() - before
            lines = [e for e in cluster.pull_events(first_b)[marks:] if is_local_client(e)]
            run = {
                "round": round_index,
                "regime": regime.name,
                "upstream_rate": regime.upstream_rate,
                "interregion_rate": regime.interregion_rate,
                "way": way,
                "candidate_seconds": candidate,
                "candidate_seconds_median": percentile(candidate, 0.5),
                "all_seconds_median": percentile(everything, 0.5),
                "cross_region_bytes_link": crossed,
                "auto_peer": sum(1 for e in lines if e.get("auto_choice") == "peer"),
                "auto_upstream": sum(1 for e in lines if e.get("auto_choice") == "upstream"),
            }
            runs.append(run)
            progress(f"auto {regime.name:<13} {way:<6} median {run['candidate_seconds_median']:.2f}s "
                     f"cross-region {crossed / MB:.1f} MB, auto peer/upstream "
                     f"{run['auto_peer']}/{run['auto_upstream']}")
    return runs


def _interregion_kind() -> Any:
    from lokal_lab.netplan import LinkKind

    return LinkKind.INTERREGION
