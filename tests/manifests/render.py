"""Rendering lokal's install two ways, offline: kustomize (kubectl kustomize) and Helm (helm-python-sdk,
Helm's own engine as a library), plus strict schema validation of what either renders."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "lokal"
MANIFESTS = REPO / "manifests"
KUBECTL = shutil.which("kubectl") or ("/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None)
VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
RELEASE = "lokal"
NAMESPACE = "lokal-system"

Resource = dict[str, Any]


def kustomize(directory: Path) -> list[Resource]:
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def kustomize_with(tmp: Path, base: str, components: list[str]) -> list[Resource]:
    """A kustomization of our own: a base of manifests/ plus some of its components."""
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes only relative paths to other kustomizations.
                "resources": [os.path.relpath(MANIFESTS / base, tmp)],
                "components": [os.path.relpath(MANIFESTS / c, tmp) for c in components],
            }
        )
    )
    return kustomize(tmp)


@functools.cache
def values_file(name: str) -> str:
    return (CHART / name).read_text()


def helm_values(*files: str, **overrides: Any) -> dict[str, Any]:
    """Values as `helm -f FILE ... --set` would give them (later wins, maps merge)."""
    import helm_python as helm

    merged: dict[str, Any] = {}
    for name in files:
        _merge(merged, helm.values_from_yaml(values_file(name)))
    _merge(merged, overrides)
    return merged


def helm_render(values: dict[str, Any] | None = None) -> list[Resource]:
    import helm_python as helm

    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return [
        doc
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def validate(resources: list[Resource], version: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    manifest = tmp / f"rendered-{version}.yaml"
    manifest.write_text(yaml.safe_dump_all(resources))
    return subprocess.run(
        [str(VALIDATE), "--strict", "--kubernetes-version", version, "--quiet", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def only(resources: list[Resource], kind: str) -> list[Resource]:
    return [r for r in resources if r["kind"] == kind]


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
