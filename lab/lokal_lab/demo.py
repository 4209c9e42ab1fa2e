"""`lokal demo`: build a multi-region lab cluster, roll one image across every node, show where each
layer came from, and tear it all down.

Rules:
- Linux and root only (network namespaces); otherwise it says why and exits 1 before touching anything.
- The pure part (layer sizes, where a layer came from, totals, the table and the JSON) takes plain data
  and is tested directly; `run` is the thin shell around `LabCluster`.
- A layer's source is read from evidence, never assumed: the upstream registry's log of the node's pull
  window (pulls are sequential, so each GET belongs to exactly one node), else the requesting node's
  own lokal `pull` lines (result local/peer and tier).
- Teardown happens on every path (the cluster is a context manager), Ctrl-C included.
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

EXIT_UNSUPPORTED = 1
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2

# Where a layer came from, in the order of the table's legend; bytes_by_tier uses the tier keys.
SOURCES = ("local", "same zone", "same region", "other region", "upstream", "unknown")
TIER_OF_SOURCE = {
    "local": "same_node",
    "same zone": "same_zone",
    "same region": "same_region",
    "other region": "other_region",
    "upstream": "upstream",
    "unknown": "unknown",
}
SOURCE_OF_TIER = {tier: source for source, tier in TIER_OF_SOURCE.items()}
LAYER_SHARES = (0.35, 0.25, 0.18, 0.12, 0.10)  # of the image, per layer: several layers, unequal sizes
MIN_IMAGE_MB, MAX_IMAGE_MB = 1, 2000
MIN_NODES, MAX_NODES = 3, 30


# ---- pure: inputs and evidence ----


def layer_sizes(image_mb: int) -> list[int]:
    """Layer sizes in bytes for an image of about `image_mb` MB (10^6 bytes), largest first."""
    if not MIN_IMAGE_MB <= image_mb <= MAX_IMAGE_MB:
        raise ValueError(f"--image-mb {image_mb}: expected {MIN_IMAGE_MB}..{MAX_IMAGE_MB}")
    total = image_mb * 1_000_000
    return [max(1, int(total * share)) for share in LAYER_SHARES]


@dataclass(frozen=True)
class BlobSpec:
    """One blob a pull fetches: its role in the image ("manifest", "config", "layer 1"...) and digest."""

    name: str
    digest: str
    size: int


@dataclass(frozen=True)
class UpstreamFetch:
    """A GET the upstream registry answered in one node's pull window."""

    digest: str
    status: int
    bytes: int


@dataclass(frozen=True)
class LayerRow:
    name: str
    digest: str
    source: str  # one of SOURCES
    bytes: int
    seconds: float | None
    provider: str = ""


@dataclass(frozen=True)
class NodeRow:
    name: str
    region: str
    zone: str
    pull_seconds: float
    layers: tuple[LayerRow, ...]


def short(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:12]}"


def event_epoch(event: dict[str, Any]) -> float | None:
    """The epoch seconds of a lokal log line's `ts` ("2026-11-27T03:37:19.758Z"), or None."""
    ts = str(event.get("ts", ""))
    try:
        whole, _, fraction = ts.rstrip("Z").partition(".")
        base = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return base + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def classify_blob(
    blob: BlobSpec,
    own_events: Sequence[dict[str, Any]],
    upstream: Sequence[UpstreamFetch],
    committed_at: float | None = None,
) -> LayerRow:
    """Where `blob` came from on one node.

    `own_events`: the node's lokal `pull` lines for its own containerd (loopback client) during the pull.
    `upstream`: the registry's GETs in the node's pull window. `committed_at`: when the blob landed in
    the node's content store (epoch), to time an upstream fetch from lokal's 404 to the commit.
    """
    mine = [e for e in own_events if e.get("method") == "GET" and e.get("digest") == short(blob.digest)]
    fetched = [u for u in upstream if u.digest == blob.digest and u.status in (200, 206)]
    if fetched:
        asked = [t for t in (event_epoch(e) for e in mine) if t is not None]
        seconds = committed_at - min(asked) if committed_at is not None and asked else None
        if seconds is not None and seconds < 0:
            seconds = None
        return LayerRow(blob.name, blob.digest, "upstream", sum(u.bytes for u in fetched), seconds)
    served = [e for e in mine if e.get("result") in ("local", "peer")]
    if served:
        last = served[-1]
        tier = str(last.get("tier") or ("same_node" if last.get("result") == "local" else "unknown"))
        source = SOURCE_OF_TIER.get(tier, "unknown")
        seconds = sum(float(e.get("ms", 0.0)) for e in served) / 1000
        provider = str(last.get("provider", ""))
        return LayerRow(
            blob.name, blob.digest, source, sum(int(e.get("bytes", 0)) for e in served), seconds, provider
        )
    return LayerRow(blob.name, blob.digest, "unknown", 0, None)


# ---- pure: totals ----


def bytes_by_tier(nodes: Iterable[NodeRow]) -> dict[str, int]:
    """Bytes per tier over every node and layer; every tier key is present."""
    totals = dict.fromkeys(TIER_OF_SOURCE.values(), 0)
    for node in nodes:
        for layer in node.layers:
            totals[TIER_OF_SOURCE[layer.source]] += layer.bytes
    return totals


def summarize(
    nodes: Sequence[NodeRow],
    image_bytes: int,
    upstream_wire_bytes: int,
    cross_region_wire_bytes: int,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The demo's results as JSON-ready data (the `--json` file)."""
    tiers = bytes_by_tier(nodes)
    baseline = image_bytes * len(nodes)
    upstream = tiers["upstream"]
    return {
        "image_bytes": image_bytes,
        "baseline_upstream_bytes": baseline,
        "upstream_bytes": upstream,
        "upstream_wire_bytes": upstream_wire_bytes,
        "upstream_saved_ratio": round(1 - upstream / baseline, 4) if baseline else 0.0,
        "cross_region_bytes": tiers["other_region"],
        "cross_region_wire_bytes": cross_region_wire_bytes,
        "bytes_by_tier": tiers,
        "settings": settings or {},
        "nodes": [
            {
                "name": n.name,
                "region": n.region,
                "zone": n.zone,
                "pull_seconds": round(n.pull_seconds, 3),
                "layers": [
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(layer).items()}
                    for layer in n.layers
                ],
            }
            for n in nodes
        ],
    }


# ---- pure: text ----


def human_bytes(count: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def format_table(nodes: Sequence[NodeRow]) -> str:
    """Per node: a heading line, then one row per blob (role, digest, source, provider, bytes, time)."""
    lines = []
    for node in nodes:
        lines.append(f"{node.name}  ({node.region} / {node.zone})  pulled in {node.pull_seconds:.2f} s")
        lines.append(f"  {'blob':<10} {'digest':<19} {'source':<13} {'from':<10} {'bytes':>9} {'time':>8}")
        for layer in node.layers:
            lines.append(
                f"  {layer.name:<10} {short(layer.digest):<19} {layer.source:<13} "
                f"{layer.provider or '-':<10} {human_bytes(layer.bytes):>9} {_seconds(layer.seconds):>8}"
            )
        lines.append("")
    return "\n".join(lines)


def format_totals(summary: dict[str, Any]) -> str:
    tiers: dict[str, int] = summary["bytes_by_tier"]
    by_source = ", ".join(
        f"{SOURCE_OF_TIER[t]} {human_bytes(b)}" for t, b in tiers.items() if b or t != "unknown"
    )
    upstream, baseline = summary["upstream_bytes"], summary["baseline_upstream_bytes"]
    wire = human_bytes(summary["upstream_wire_bytes"])
    saved = f"{summary['upstream_saved_ratio'] * 100:.0f}% less" if baseline else "n/a"
    return "\n".join(
        [
            f"image: {human_bytes(summary['image_bytes'])}, {len(summary['nodes'])} nodes",
            f"upstream: {human_bytes(upstream)} fetched (wire {wire}); "
            f"without a mirror {human_bytes(baseline)} ({saved})",
            f"cross-region: {human_bytes(summary['cross_region_bytes'])} relayed by lokal; "
            f"{human_bytes(summary['cross_region_wire_bytes'])} on the inter-region links (all traffic)",
            f"by source: {by_source}",
        ]
    )


# ---- the command ----


def unsupported_reason() -> str | None:
    """Why the demo cannot run here, or None."""
    import shutil

    from lokal_lab.network import lab_unavailable_reason

    reason = lab_unavailable_reason()
    if reason:
        return reason
    for tool in ("containerd", "docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            return f"the demo needs `{tool}` (apt-get install containerd docker-registry skopeo)"
    return None


def run(args: argparse.Namespace) -> int:
    """`lokal demo`, once sidecar/cli/demo.py has parsed its arguments."""
    if not MIN_NODES <= args.nodes <= MAX_NODES:
        print(f"lokal demo: --nodes {args.nodes}: expected {MIN_NODES}..{MAX_NODES}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        sizes = layer_sizes(args.image_mb)
    except ValueError as exc:
        print(f"lokal demo: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    containerd = getattr(args, "containerd", None)
    if containerd:
        from lokal_lab.containerd_versions import ContainerdVersionError, use_version

        try:
            use_version(containerd)
        except ContainerdVersionError as exc:
            print(f"lokal demo: --containerd {containerd}: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    reason = unsupported_reason()
    if reason:
        print(f"lokal demo: cannot run here: {reason}", file=sys.stderr)
        return EXIT_UNSUPPORTED
    try:
        summary, nodes = _run_demo(args.nodes, sizes)
    except KeyboardInterrupt:
        print("lokal demo: interrupted; the lab is torn down", file=sys.stderr)
        return 130
    except Exception as exc:  # the lab is torn down; say what failed, in one line
        print(f"lokal demo: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(format_table(nodes))
    print(format_totals(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 0


def _progress(message: str) -> None:
    print(f"lokal demo: {message}", file=sys.stderr, flush=True)


def _run_demo(node_count: int, sizes: list[int]) -> tuple[dict[str, Any], list[NodeRow]]:
    from lokal_lab.cluster import LabCluster, is_local_client
    from lokal_lab.images import build_image
    from lokal_lab.topology import example_topology

    topology = example_topology(node_count, upstream_rate="100mbit", upstream_delay_ms=20)
    settings = {
        "topology_mode": "prefer",
        "cross_region": "always",
        "upstream_rate": "100mbit",
        "upstream_delay_ms": 20,
        "interregion_rate": topology.interregion_rate,
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lokal-demo-") as scratch:
        image = build_image(Path(scratch) / "layout", "v1", sizes, seed=int(time.time()))
        blobs = blob_specs(image.blobs_for("linux/amd64"), image.layers["linux/amd64"])
        image_bytes = sum(b.size for b in blobs)
        _progress(f"image: {len(sizes)} layers, {human_bytes(image_bytes)}")
        _progress(
            f"building the lab: {node_count} nodes, {len(topology.regions)} regions, "
            f"{len(topology.zones)} zones"
        )
        with LabCluster(topology, topology_mode="prefer", cross_region="always") as cluster:
            _progress(f"lab up in {time.monotonic() - started:.1f} s; rolling pull, one node after another")
            reference = cluster.push(image, "demo/app")
            wire_before = cluster.lab.upstream_bytes().b_to_a
            cross_before = cluster.lab.cross_region_bytes()
            rows = []
            for spec in topology.nodes:
                mark, seen = cluster.upstream_mark(), len(cluster.pull_events(spec.name))
                result = cluster.pull(spec.name, reference)
                events = cluster.wait_for_pull_events(spec.name, [b.digest for b in blobs])[seen:]
                own = [e for e in events if is_local_client(e)]
                fetched = [UpstreamFetch(g.reference, g.status, g.bytes) for g in cluster.upstream_gets(mark)]
                content = cluster.containerd(spec.name).content_root / "blobs"
                layers = tuple(
                    classify_blob(b, own, fetched, _mtime(content.joinpath(*b.digest.split(":", 1))))
                    for b in blobs
                )
                rows.append(NodeRow(spec.name, spec.region, spec.zone, result.seconds, layers))
                _progress(f"{spec.name} pulled in {result.seconds:.2f} s")
            upstream_wire = cluster.lab.upstream_bytes().b_to_a - wire_before
            cross_wire = cluster.lab.cross_region_bytes() - cross_before
        _progress(f"lab torn down; {time.monotonic() - started:.1f} s in all")
    return summarize(rows, image_bytes, upstream_wire, cross_wire, settings), rows


def blob_specs(blobs: Sequence[Any], layers: Sequence[Any]) -> list[BlobSpec]:
    """Name the blobs of one platform's pull (images.BuiltImage.blobs_for order: [index,] manifest, config,
    layers) by their role."""
    layer_digests = [layer.digest for layer in layers]
    specs = []
    for position, blob in enumerate(blobs):
        if blob.digest in layer_digests:
            name = f"layer {layer_digests.index(blob.digest) + 1}"
        elif "index" in blob.media_type or "manifest.list" in blob.media_type:
            name = "index"
        elif "manifest" in blob.media_type:
            name = "manifest"
        elif "config" in blob.media_type:
            name = "config"
        else:
            name = f"blob {position + 1}"
        specs.append(BlobSpec(name, blob.digest, blob.size))
    return specs


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
