"""The Grafana dashboard and the monitoring overlay: the JSON parses, every query names only metrics that
lokal exports, the issue's panels are there, and the overlay renders onto an install."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sidecar.containerd import MemoryStore
from sidecar.serve import running_node
from sidecar.settings import Discovery, ServeSettings

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "manifests" / "monitoring" / "grafana-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


async def exported_names() -> set[str]:
    """Every series name a real node's registry can expose (families and their sample suffixes)."""
    settings = ServeSettings(discovery=Discovery.NONE)
    async with running_node(settings, store=MemoryStore(), listen=("127.0.0.1", 0)) as node:
        pass
    names: set[str] = set()
    for family in node.observability.metrics.registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def queries() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in document["panels"] for target in panel["targets"]]


@pytest.mark.anyio
async def test_every_dashboard_query_names_only_metrics_lokal_exports() -> None:
    exported = await exported_names()
    assert all(name.startswith("lokal_") for name in exported)
    for title, expr in queries():
        named = set(re.findall(r"\blokal_[a-z_]+\b", expr))
        assert named, f"{title}: no lokal metric in {expr!r}"
        assert named <= exported, f"{title}: {named - exported} not exported"


def test_the_dashboard_has_the_panels_operators_asked_for() -> None:
    titles = " | ".join(title.lower() for title, _ in queries())
    for wanted in (
        "hit ratio per region",
        "bytes",
        "cross-region bytes",
        "time to first byte",
        "misses by registry",
    ):
        assert wanted in titles
    ttfb = [expr for title, expr in queries() if "first byte" in title.lower()]
    assert any("0.5," in e for e in ttfb) and any("0.99," in e for e in ttfb)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the kustomization")
def test_the_monitoring_component_renders_onto_an_install(tmp_path: Path) -> None:
    overlay = REPO / "manifests" / ".observability-test"
    overlay.mkdir()
    try:
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources:\n  - ../overlays/prefer\ncomponents:\n  - ../monitoring\n"
        )
        result = subprocess.run(
            ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
        )
    finally:
        shutil.rmtree(overlay)
    assert result.returncode == 0, result.stderr
    assert "kind: ServiceMonitor" in result.stdout
    assert "LOKAL_METRICS_LISTEN: 0.0.0.0:5051" in result.stdout
    assert "containerPort: 5051" in result.stdout


def test_transfer_duration_and_throughput_by_tier_and_region_with_region_and_node_filters() -> None:
    document = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["region"]["query"]["query"] == "label_values(lokal_node_info, region)"
    assert variables["node"]["query"]["query"] == 'label_values(lokal_node_info{region=~"$region"}, node)'
    assert variables["region"]["includeAll"] and variables["node"]["includeAll"]
    for title, expr in queries():  # operators look at one region, or one node, in every panel
        assert 'lokal_node_info{region=~"$region", node=~"$node"}' in expr, title
    duration = [expr for title, expr in queries() if "transfer duration" in title.lower()]
    assert any("histogram_quantile(0.5," in e for e in duration)
    assert any("histogram_quantile(0.99," in e for e in duration)
    assert all("lokal_transfer_duration_seconds_bucket" in e for e in duration)
    assert all("by (tier, region, le)" in e for e in duration)
    throughput = [expr for title, expr in queries() if "throughput" in title.lower()]
    assert throughput and all("by (tier, region)" in e and "lokal_bytes_total" in e for e in throughput)
    misses = [expr for title, expr in queries() if "misses by registry" in title.lower()]
    assert misses and all("by (registry, reason)" in e for e in misses)
